"""The local side: a booklet data file plus the sync state kept beside it.

This is the only module that imports booklet. For a data file ``big.blt`` the sync state lives
in the folder ``big.blt.ebooklet/``:

``state.json``       the remote head at the last sync (the *base*), the file's fingerprint
                     at the last sync, and whether a session ended without syncing
``touched.log``      every key written or deleted through ebooklet since the last push
                     (appended and fsynced by :meth:`LocalStore.sync`)
``parts/N``          base index part N exactly as downloaded; ``parts/N.bits`` marks which of
                     its keys have been present in the data file (see docs/sync.rst)

Values are stored in the data file already serialized by booklet's value serializer, so a
user can open it with plain ``booklet.open`` while offline; :meth:`LocalStore.fingerprint`
lets the sync layer notice such edits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import booklet
import booklet.serializers
import booklet.utils

from .codec import Codec
from .errors import DamagedLocalFileError, LocalFileBusyError, LocalFileError

logger = logging.getLogger(__name__)

STATE_VERSION = 1
#: Hash buckets of a new data file when nothing says how many keys it will hold: enough for
#: 300,000 keys (a 2 MB table, about 50 ms to create). booklet grows a table only when the
#: file is synced, so keys written past its size first lengthen every bucket's chain, then
#: are rewired one by one; measured in benchmarks/bench_local_write.py.
DEFAULT_N_BUCKETS = 360_007
#: The deletion-time field of a touched.log record that marks a write (not a delete).
_WRITTEN = 0xFFFFFFFFFFFFFFFF


def serializer_name(serializer: Any) -> str:
    """A value serializer's name as recorded in the remote head.

    booklet's built-in serializers go by their booklet name (None means raw bytes and is
    called ``"bytes"``); a custom class is ``"custom:module.QualName"``.
    """
    if serializer is None:
        return "bytes"
    if isinstance(serializer, str):
        cls = booklet.serializers.serial_dict.get(serializer)
    else:
        cls = serializer
    for name, known in booklet.serializers.serial_dict.items():
        if known is cls and name is not None:
            return name
    return f"custom:{serializer.__module__}.{serializer.__qualname__}"


def _serializers(db: Any) -> tuple[Any, Any]:
    """The key and value serializer classes of an open booklet file.

    booklet does not expose them publicly: this is the one place that reads its private
    attributes, so that an upgrade of booklet that renames them breaks here only.
    """
    return db._key_serializer, db._value_serializer


def _serializer_arg(serializer: Any) -> Any:
    """What ``booklet.open`` takes to create a file with ``serializer``: the name of a built-in
    serializer (booklet records the name, and refuses its own classes passed as custom), or
    a custom class itself."""
    for name, known in booklet.serializers.serial_dict.items():
        if known is serializer:
            return name
    return serializer


def check_serializer(value_serializer: Any) -> None:
    if isinstance(value_serializer, str) and value_serializer not in booklet.available_serializers:
        raise ValueError(
            f"unknown value_serializer {value_serializer!r}; choose one of "
            f"{sorted(s for s in booklet.available_serializers if s)} or a class with dumps/loads"
        )


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_path(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """A booklet data file and its sync state, opened for one session.

    Parameters
    ----------
    path : path
        The data file.
    create : bool
        Create the data file if it does not exist.
    new : bool
        Start from an empty data file and empty sync state.
    value_serializer : str, class or None
        Used only when the data file is created.
    timeout : float or None
        Seconds to wait for another process to release the file.
    expected_keys : int
        How many keys a new data file will likely hold, to size booklet's hash index (a file
        sized too small slows down as it grows and re-indexes).
    n_buckets : int or None
        Hash buckets of a new data file (None: 1.2 times ``expected_keys``, or
        DEFAULT_N_BUCKETS when nothing is expected).
    buffer_size : int or None
        booklet's write buffer, in bytes (None: booklet's default).
    read_only : bool
        Open the data file for reading (memory-mapped, shared with other readers) and switch
        to writing only when something must be written, such as a fetched value to cache.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool,
        new: bool = False,
        value_serializer: Any = None,
        timeout: float | None = None,
        read_only: bool = False,
        expected_keys: int = 0,
        n_buckets: int | None = None,
        buffer_size: int | None = None,
    ) -> None:
        self.path = pathlib.Path(path).absolute()
        self.state_dir = self.path.with_name(self.path.name + ".ebooklet")
        self._parts_dir = self.state_dir / "parts"
        self._log_path = self.state_dir / "touched.log"
        self._state_path = self.state_dir / "state.json"
        exists = self.path.exists()
        if not exists and not (create or new):
            raise FileNotFoundError(f"the local file {self.path} does not exist")
        self.created = new or not exists
        if self.created:
            flag = "n"
        elif read_only and not self._peek_state().get("unsynced"):
            flag = "r"
        else:
            flag = "w"  # a session that ended without syncing may have left repairs to make
        if n_buckets is None and expected_keys:
            n_buckets = max(booklet.utils.init_n_buckets, int(expected_keys * 1.2))
        self._buffer = {} if buffer_size is None else {"buffer_size": buffer_size}
        self._db = self._open_booklet(flag, value_serializer, timeout, n_buckets or DEFAULT_N_BUCKETS)
        if _serializers(self._db)[0] is not booklet.serializers.Str:
            self._db.close()
            raise LocalFileError(
                f"{self.path} is a booklet file whose keys are not str; ebooklet keys are str. "
                "Use another local path."
            )
        if self.created and self.state_dir.exists():
            # Sync state left by an earlier file at this path (now held locked by us): it
            # describes data that is gone, so none of it may be reused.
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(exist_ok=True)
        self._parts_dir.mkdir(exist_ok=True)
        self.state = self._load_state()
        self.touched: dict[str, int | None] = self._read_touched()
        self._log_buffer: list[tuple[str, int | None]] = []
        self._bits: dict[int, bytearray] = {}
        self._dirty_bits: set[int] = set()
        self._unsynced = False
        self.recovered_from_crash = False
        if self.state.get("unsynced"):
            self._check_after_crash(timeout)
        if not self.created and (
            self.recovered_from_crash or self.fingerprint() != self.state.get("fingerprint")
        ):
            self.external_edits = True
        self._saved_state = json.dumps(self.state)

    def _peek_state(self) -> dict[str, Any]:
        try:
            return json.loads(self._state_path.read_bytes())
        except (OSError, ValueError):
            return {}

    def _need_write(self) -> None:
        """Switch a read-only data file to writing (waits for other readers to close it)."""
        if self._db.writable:
            return
        try:
            self._db.reopen("w")
        except booklet.LockTimeoutError as exc:
            self._db.reopen("r")  # keep reading what we have
            raise LocalFileBusyError(
                f"{self.path} must be written (to cache a value or record sync state) but other "
                "processes have it open; close them, or open with a longer timeout"
            ) from exc

    @staticmethod
    def has_state(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` has been opened through ebooklet before."""
        p = pathlib.Path(path).absolute()
        return p.exists() and (p.with_name(p.name + ".ebooklet") / "state.json").exists()

    # -- opening and crash recovery ------------------------------------------------------

    def _open_booklet(
        self, flag: str, value_serializer: Any, timeout: float | None, n_buckets: int = 12007
    ) -> Any:
        try:
            return booklet.open(
                self.path, flag, key_serializer="str", value_serializer=value_serializer,
                n_buckets=n_buckets, timeout=timeout, **self._buffer,
            )
        except booklet.LockTimeoutError as exc:
            raise LocalFileBusyError(
                f"{self.path} is open in another process (or another open database here); close "
                "it there, or open with a longer timeout"
            ) from exc
        except (TypeError, ValueError, OSError, struct.error, IndexError, KeyError) as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise
            raise DamagedLocalFileError(
                f"{self.path} is not a readable booklet file ({exc}). If it was damaged, move it "
                "aside and open again: ebooklet then fetches a fresh copy from the remote (changes "
                "that were never pushed are in the moved file only)."
            ) from exc

    def _check_after_crash(self, timeout: float | None) -> None:
        """The last session ended without syncing: make sure the data file is intact."""
        self.recovered_from_crash = True
        if self._is_consistent():
            return
        logger.warning("%s was left damaged by an interrupted session; rebuilding it", self.path)
        self._rebuild(timeout)

    def _is_consistent(self) -> bool:
        db = self._db
        try:
            count = 0
            for key, ts in db.timestamps():
                count += 1
                if db.get_timestamp(key) != ts:
                    return False
            return count == len(db)
        except Exception:  # any failure to walk the file means it is damaged
            return False

    def _rebuild(self, timeout: float | None) -> None:
        """Copy every intact entry into a fresh data file; keep the damaged one aside."""
        old = self._db
        value_serializer = _serializer_arg(_serializers(old)[1])
        tmp = self.path.with_name(self.path.name + ".rebuild")
        new = booklet.open(tmp, "n", key_serializer="str", value_serializer=value_serializer)
        try:
            for key, ts, raw in old.timestamps(include_value=True, decode_value=False):
                if not isinstance(key, str):
                    break
                new.set(key, raw, timestamp=ts, encode_value=False)
        except Exception:  # the entries after the damage are unreadable; keep what came before
            logger.warning("%s: entries after the damaged point were dropped", self.path)
        metadata = None
        try:
            metadata = old.get_metadata(include_timestamp=True)
        except Exception:
            logger.warning("%s: the local metadata was unreadable and was dropped", self.path)
        if metadata is not None:
            new.set_metadata(metadata[0], timestamp=metadata[1])
        new.close()
        old.close()
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(self.path, aside)
        os.replace(tmp, self.path)
        logger.warning("%s was rebuilt; the damaged original is kept as %s", self.path, aside)
        self._db = self._open_booklet("w", value_serializer, timeout)

    # -- sync state ------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        if self.created or not self._state_path.exists():
            return {"version": STATE_VERSION, "parts": {}}
        try:
            state = json.loads(self._state_path.read_bytes())
        except ValueError as exc:
            raise DamagedLocalFileError(
                f"the sync state {self._state_path} is unreadable ({exc}); remove the folder "
                f"{self.state_dir} and open again to re-adopt the local file"
            ) from exc
        if state.get("version", 0) > STATE_VERSION:
            raise LocalFileError(f"{self.state_dir} was written by a newer ebooklet; upgrade ebooklet")
        return state

    def save_state(self) -> None:
        self._need_write()
        text = json.dumps(self.state)
        _write_atomic(self._state_path, text.encode())
        self._saved_state = text

    @property
    def external_edits(self) -> bool:
        """True while the data file may hold changes that ``touched`` does not list.

        Set when the file changed behind ebooklet's back (plain booklet, a crash) and kept,
        across sessions, until a full comparison has recorded what changed.
        """
        # "rescan" is the key's name in state files of ebooklet 0.6.0.
        return bool(self.state.get("external_edits", self.state.get("rescan")))

    @external_edits.setter
    def external_edits(self, value: bool) -> None:
        self.state.pop("rescan", None)
        self.state["external_edits"] = value

    def fingerprint(self) -> list[int]:
        """What changes whenever anything writes to the data file."""
        st = os.stat(self.path)
        return [st.st_size, st.st_mtime_ns, len(self._db)]

    def _before_write(self) -> None:
        """Every write to the data file: make it writable, and flag the state unsynced first."""
        self._need_write()
        if not self._unsynced:
            self._mark_unsynced()

    def _mark_unsynced(self) -> None:
        self._unsynced = True
        self.state["unsynced"] = True
        self.save_state()

    def _read_touched(self) -> dict[str, int | None]:
        touched: dict[str, int | None] = {}
        if self.created or not self._log_path.exists():
            return touched
        data = self._log_path.read_bytes()
        pos = 0
        # A torn record at the end belongs to a sync that never returned: ignore it.
        while pos + 12 <= len(data):
            ts, n = struct.unpack_from("<QI", data, pos)
            if pos + 12 + n > len(data):
                break
            key = data[pos + 12 : pos + 12 + n].decode("utf-8")
            touched[key] = None if ts == _WRITTEN else ts
            pos += 12 + n
        return touched

    def touch(self, key: str, deleted_at: int | None = None) -> None:
        """Record that ``key`` was written (or deleted at ``deleted_at``) through ebooklet."""
        self._before_write()
        self.touched[key] = deleted_at
        self._log_buffer.append((key, deleted_at))

    def clear_touched(self, keys: set[str] | None = None) -> None:
        """Forget touched keys (all, or those given) once they are pushed or discarded."""
        self._need_write()
        if keys is None:
            self.touched.clear()
        else:
            for key in keys:
                self.touched.pop(key, None)
        self._log_buffer.clear()
        records = b"".join(self._encode_touched(k, v) for k, v in self.touched.items())
        _write_atomic(self._log_path, records)

    @staticmethod
    def _encode_touched(key: str, deleted_at: int | None) -> bytes:
        raw = key.encode("utf-8")
        return struct.pack("<QI", _WRITTEN if deleted_at is None else deleted_at, len(raw)) + raw

    # -- base index parts ------------------------------------------------------------------

    # A stored part and its presence bits live in files named after the part's object, so
    # that replacing a part is atomic: the new files are written first, state.json switches
    # to them, and the old files are swept after that (a crash in between keeps the old
    # pair, never the new part with the old bits).

    def _part_file(self, name: str, suffix: str = "") -> pathlib.Path:
        return self._parts_dir / (name.replace("/", "_") + suffix)

    def has_part(self, part: int, name: str) -> bool:
        return self.state["parts"].get(str(part)) == name

    def part_blob(self, part: int, name: str) -> bytes | None:
        """The stored bytes of base part ``part`` if they are the object ``name``."""
        if not self.has_part(part, name):
            return None
        try:
            return self._part_file(name).read_bytes()
        except FileNotFoundError:
            return None

    def store_part(
        self,
        part: int,
        name: str,
        blob: bytes,
        keys: list[str],
        present: set[str] | None = None,
        seen: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """Keep base part ``part`` (object ``name``, holding ``keys`` in order).

        Its presence bits are taken now: a key present in the data file at this moment has
        been seen locally, so if it disappears later it was deleted, not left unfetched.
        ``present``, the set of keys in the data file, saves a lookup per key when given;
        keys in ``seen`` (present in the part this one replaces) keep their bit.
        """
        self._need_write()
        bits = bytearray((len(keys) + 7) // 8)
        contains = present.__contains__ if present is not None else self._db.__contains__
        for row, key in enumerate(keys):
            if key in seen or contains(key):
                bits[row >> 3] |= 1 << (row & 7)
        # The blob is a cache of a remote object: no fsync (a torn copy fails its checksum
        # and is downloaded again). The bits are state: written atomically.
        tmp = self._part_file(name, f".tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(blob)
        os.replace(tmp, self._part_file(name))
        _write_atomic(self._part_file(name, ".bits"), bytes(bits))
        self._bits[part] = bits
        self._dirty_bits.discard(part)
        self.state["parts"][str(part)] = name

    def stored_parts(self) -> dict[int, str]:
        """Base parts kept locally: part number -> object name."""
        return {int(p): name for p, name in self.state["parts"].items()}

    def forget_part(self, part: int) -> None:
        """Stop using a stored part (its files are swept once the state is saved)."""
        self.state["parts"].pop(str(part), None)
        self._bits.pop(part, None)
        self._dirty_bits.discard(part)

    def forget_parts(self) -> None:
        for part in list(self.stored_parts()):
            self.forget_part(part)

    def bits(self, part: int) -> bytearray:
        """Presence bits of base part ``part``: bit i set = its i-th key was in the data file."""
        bits = self._bits.get(part)
        if bits is None:
            name = self.state["parts"].get(str(part))
            try:
                bits = bytearray(self._part_file(name, ".bits").read_bytes()) if name else bytearray()
            except FileNotFoundError:
                bits = bytearray()
            self._bits[part] = bits
        return bits

    def flush_bits(self) -> None:
        """Write changed presence bits now (before a change that relies on them)."""
        for part in sorted(self._dirty_bits):
            name = self.state["parts"].get(str(part))
            if name is not None:
                _write_atomic(self._part_file(name, ".bits"), bytes(self._bits.get(part, b"")))
        self._dirty_bits.clear()

    def _sweep_parts(self) -> None:
        """Remove part files that the saved state no longer names."""
        keep = set()
        for name in self.state["parts"].values():
            keep.add(self._part_file(name).name)
            keep.add(self._part_file(name, ".bits").name)
        for path in self._parts_dir.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def mark_present(self, part: int, row: int, present: bool = True) -> None:
        """Set (or clear) the presence bit of the ``row``-th key of base part ``part``."""
        self._need_write()
        bits = self.bits(part)
        byte = row >> 3
        if byte >= len(bits):
            bits.extend(bytes(byte + 1 - len(bits)))
        if present:
            bits[byte] |= 1 << (row & 7)
        else:
            bits[byte] &= ~(1 << (row & 7)) & 0xFF
        self._dirty_bits.add(part)

    # -- the data file ---------------------------------------------------------------------

    @property
    def codec(self) -> Codec:
        """How this file's values are encoded, by the name the remote head records."""
        serializer = _serializers(self._db)[1]
        return Codec(serializer_name(serializer), serializer.dumps, serializer.loads)

    def __len__(self) -> int:
        # booklet counts buffered writes only once they are flushed.
        self._db.sync()
        return len(self._db)

    def __contains__(self, key: str) -> bool:
        return key in self._db

    def keys(self) -> Iterator[str]:
        return self._db.keys()

    def timestamps(self) -> Iterator[tuple[str, int]]:
        return self._db.timestamps()

    def raw_items(self) -> Iterator[tuple[str, int, bytes]]:
        """(key, timestamp, serialized value) of every key in the data file."""
        return self._db.timestamps(include_value=True, decode_value=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self._db.get(key, default)

    def get_timestamp(self, key: str) -> int | None:
        return self._db.get_timestamp(key)

    def get_raw(self, key: str) -> tuple[int, bytes] | None:
        return self._db.get_timestamp(key, include_value=True, decode_value=False)

    def set(self, key: str, value: Any, timestamp: int | None = None) -> None:
        """A user write."""
        self._db.set(key, value, timestamp)
        self.touch(key)

    def set_raw(self, key: str, raw: bytes, timestamp: int) -> None:
        """A user write of an already serialized value (e.g. a merged conflict)."""
        self._db.set(key, raw, timestamp=timestamp, encode_value=False)
        self.touch(key)

    def set_timestamp(self, key: str, timestamp: int) -> None:
        self._db.set_timestamp(key, timestamp)
        self.touch(key)

    def delete(self, key: str, deleted_at: int) -> None:
        """A user delete of a key that may or may not be in the data file."""
        with contextlib.suppress(KeyError):
            del self._db[key]
        self.touch(key, deleted_at)

    def put_raw(self, key: str, raw: bytes, timestamp: int) -> None:
        """Store a value that came from the remote (not a user change)."""
        self._before_write()
        self._db.set(key, raw, timestamp=timestamp, encode_value=False)

    def drop(self, key: str) -> None:
        """Remove a cached copy (not a user change)."""
        self._before_write()
        with contextlib.suppress(KeyError):
            del self._db[key]

    def get_metadata(self) -> tuple[Any, int] | None:
        return self._db.get_metadata(include_timestamp=True)

    def set_metadata(self, data: Any, timestamp: int | None = None) -> None:
        self._before_write()
        self._db.set_metadata(data, timestamp)

    def prune(self) -> int:
        self._before_write()
        return self._db.prune()

    # -- durability ------------------------------------------------------------------------

    def sync(self) -> None:
        """Make every change so far durable, and record the state that goes with it."""
        if not self._db.writable:
            clean = not (self._log_buffer or self._dirty_bits or self._unsynced)
            if clean and json.dumps(self.state) == self._saved_state:
                return  # a reader that changed nothing writes nothing
            self._need_write()
        self._db.sync()
        _fsync_path(self.path)
        if self._log_buffer:
            with open(self._log_path, "ab") as f:
                f.write(b"".join(self._encode_touched(k, v) for k, v in self._log_buffer))
                f.flush()
                os.fsync(f.fileno())
            self._log_buffer.clear()
        self.flush_bits()
        self.state["fingerprint"] = self.fingerprint()
        self.state["unsynced"] = False
        self._unsynced = False
        self.save_state()
        self._sweep_parts()

    def close(self) -> None:
        try:
            self.sync()
        finally:
            self._db.close()

    def abandon(self) -> None:
        """Close without syncing (used when opening failed half way)."""
        self._db.close()
