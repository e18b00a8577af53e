"""The data file: a booklet file, through booklet's public API (and :mod:`.fastwrite`).

The only module that calls booklet's API. It opens and creates booklet files, turns
booklet's exceptions into ebooklet's, and offers the reads and writes the local store needs,
with values already serialized (the data file holds them as booklet's value serializer
wrote them, so that plain ``booklet.open`` reads the file). It knows nothing of the sync
state or the journal.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import pathlib
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import booklet
import booklet.serializers
import booklet.utils
import portalocker

from ..codec import Codec
from ..errors import DamagedLocalFileError, LocalFileBusyError, LocalFileError
from ..files import fsync_path
from . import fastwrite
from .layout import Inspection

fastwrite.install()

#: Hash buckets of a new data file when nothing says how many keys it will hold: enough for
#: 300,000 keys (a 2 MB table, written in a few ms: fastwrite.init_bucket_indexes). A file
#: that outgrows its table gets a larger one as soon as its keys outnumber its buckets
#: (DataFile._grow), which rewires every key once; measured in bench_local_write.py.
DEFAULT_N_BUCKETS = 360_007
INIT_N_BUCKETS = booklet.utils.init_n_buckets

#: What booklet raises when a file's bytes are not what it expects.
_DAMAGE = (TypeError, ValueError, OSError, struct.error, IndexError, KeyError)


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


def serializer_arg(serializer: Any) -> Any:
    """What ``booklet.open`` takes to create a file with ``serializer``: the name of a built-in
    serializer (booklet records the name, and refuses its own classes passed as custom), or
    a custom class itself."""
    for name, known in booklet.serializers.serial_dict.items():
        if known is serializer:
            return name
    return serializer


def builtin_serializer(name: str | None) -> Any:
    """``booklet.open``'s argument for the serializer recorded as ``name``, or raise
    LookupError when it is not one of booklet's."""
    if name == "bytes":
        return None
    if name in booklet.serializers.serial_dict:
        return name
    raise LookupError(name)


def codec_for(name: str | None, serializer: Any = None) -> Codec:
    """The codec of a remote whose head names the serializer ``name``, without a local file
    (a staged write, a worker's read). A custom serializer (``custom:...``) must be passed as
    ``serializer``, the class itself; raises ValueError when it is not, or when this
    installation of booklet lacks the named one."""
    if serializer is not None:
        if serializer_name(serializer) != (name or "bytes"):
            raise ValueError(
                f"the database stores values with serializer {name!r}, not "
                f"{serializer_name(serializer)!r}"
            )
    elif name is not None and name.startswith("custom:"):
        raise ValueError(f"the database uses a custom value serializer ({name[7:]}); pass that class")
    elif name is None or name == "bytes":
        serializer = booklet.serializers.serial_dict[None]
    elif name in booklet.serializers.serial_dict:
        serializer = booklet.serializers.serial_dict[name]
    else:
        raise ValueError(f"this installation of booklet has no serializer {name!r}; upgrade booklet")
    if isinstance(serializer, str):
        serializer = booklet.serializers.serial_dict[serializer]
    return Codec(serializer_name(serializer), serializer.dumps, serializer.loads)


def check_serializer(value_serializer: Any) -> None:
    if isinstance(value_serializer, str) and value_serializer not in booklet.available_serializers:
        raise ValueError(
            f"unknown value_serializer {value_serializer!r}; choose one of "
            f"{sorted(s for s in booklet.available_serializers if s)} or a class with dumps/loads"
        )


def busy(path: pathlib.Path) -> LocalFileBusyError:
    return LocalFileBusyError(
        f"{path} is open in another process; close it there, or open with a longer timeout"
    )


def lock_unreadable(path: pathlib.Path) -> Any:
    """Hold the OS lock of a data file booklet cannot open, while it is rebuilt; the caller
    closes what this returns."""
    handle = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    try:
        portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
    except portalocker.exceptions.LockException:
        handle.close()
        raise busy(path) from None
    return handle


class DataFile:
    """An open booklet data file.

    Parameters
    ----------
    path : path
        The file.
    flag : str
        booklet's flag: "r", "w" or "n".
    value_serializer : any
        For a new file: booklet's name of the serializer, or a custom class.
    n_buckets : int
        For a new file: the hash index's size.
    timeout : float or None
        Seconds to wait for another process to release the file.
    buffer_size : int or None
        booklet's write buffer, in bytes (None: booklet's default).
    """

    def __init__(
        self,
        path: pathlib.Path,
        flag: str,
        value_serializer: Any = None,
        n_buckets: int = 12007,
        timeout: float | None = None,
        buffer_size: int | None = None,
    ) -> None:
        self.path = path
        self._timeout = timeout
        extra = {} if buffer_size is None else {"buffer_size": buffer_size}
        try:
            db = booklet.open(
                path, flag, key_serializer="str", value_serializer=value_serializer,
                n_buckets=n_buckets, timeout=timeout, **extra,
            )
        except booklet.LockTimeoutError as exc:
            raise busy(path) from exc
        except _DAMAGE as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
                raise
            # booklet's frames in the traceback hold its file, and with it the file lock.
            exc.__traceback__ = None
            raise DamagedLocalFileError(f"{path} is not a readable booklet file ({exc})") from exc
        self._db = db
        # booklet does not expose its serializers publicly: the one place that reads them.
        key_serializer, value_cls = db._key_serializer, db._value_serializer
        if key_serializer is not booklet.serializers.Str:
            db.close()
            raise LocalFileError(
                f"{path} is a booklet file whose keys are not str; ebooklet keys are str. "
                "Use another local path."
            )
        self.value_serializer = value_cls
        self.dumps = value_cls.dumps
        self._fast = fastwrite.capable(db)
        self._grow_at = self._next_growth()

    @property
    def fast(self) -> bool:
        """Whether writes go straight into booklet's layout (see :mod:`.fastwrite`)."""
        return self._fast

    @property
    def codec(self) -> Codec:
        """How this file's values are encoded, by the name the remote head records."""
        s = self.value_serializer
        return Codec(serializer_name(s), s.dumps, s.loads)

    @property
    def writable(self) -> bool:
        return bool(self._db.writable)

    def reopen(self, flag: str) -> None:
        """Switch between reading and writing (waits for other readers to close it)."""
        try:
            self._db.reopen(flag)
        except booklet.LockTimeoutError as exc:
            self._db.reopen("r")  # keep reading what we have
            raise LocalFileBusyError(
                f"{self.path} must be written (to cache a value or record sync state) but other "
                "processes have it open; close them, or open with a longer timeout"
            ) from exc
        self._fast = fastwrite.capable(self._db)
        self._grow_at = self._next_growth()

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        # booklet counts buffered writes only once they are flushed.
        self.flush()
        return len(self._db)

    def __contains__(self, key: str) -> bool:
        return key in self._db

    def get(self, key: str, default: Any = None) -> Any:
        return self._db.get(key, default)

    def get_raw(self, key: str) -> tuple[int, bytes] | None:
        return self._db.get_timestamp(key, include_value=True, decode_value=False)

    def get_timestamp(self, key: str) -> int | None:
        return self._db.get_timestamp(key)

    def keys(self) -> Iterator[str]:
        return self._db.keys()

    def timestamps(self) -> Iterator[tuple[str, int]]:
        return self._db.timestamps()

    def raw_items(self) -> Iterator[tuple[str, int, bytes]]:
        return self._db.timestamps(include_value=True, decode_value=False)

    def get_metadata(self) -> tuple[Any, int] | None:
        return self._db.get_metadata(include_timestamp=True)

    def n_keys(self) -> int:
        """booklet's count of keys, without flushing."""
        return len(self._db)

    # -- writing ---------------------------------------------------------------------------

    def put(self, key: str, raw: bytes, timestamp: int) -> None:
        if self._fast:
            fastwrite.put(self._db, key, raw, timestamp)
        else:
            self._db.set(key, raw, timestamp, False)
        if self._grow_at < math.inf and self._db._n_keys > self._grow_at:
            self._grow()

    def put_many(self, items: Iterable[tuple[str, bytes, int]]) -> None:
        """:meth:`put` for many ``(key, value, timestamp)``, in order."""
        if self._fast:
            fastwrite.write_many(self._db, items)
        else:
            for key, raw, ts in items:
                self._db.set(key, raw, ts, False)
        if self._grow_at < math.inf and self._db._n_keys > self._grow_at:
            self._grow()

    def _next_growth(self) -> float:
        """The key count past which the hash table grows at once (see :meth:`_grow`)."""
        db = self._db
        if not (db.writable and hasattr(db, "_n_keys") and hasattr(db, "_n_buckets")):
            return math.inf  # (a booklet without these: it grows the table when synced)
        if booklet.utils.get_new_n_buckets(db._n_buckets) is None:
            return math.inf
        return float(db._n_buckets)

    def _grow(self) -> None:
        """Grow booklet's hash table now that it holds more keys than buckets.

        booklet grows it only when the file is synced (by a push, or when closed); until
        then every write walks longer chains of entries, so that writing 1,000,000 keys into
        the 12,007 buckets of a file made for a small remote took minutes. A sync grows the
        table when the keys outnumber the buckets (its ``_check_auto_reindex``), as it would
        at the next push; no fsync.
        """
        self.flush()
        self._grow_at = self._next_growth()

    def delete(self, key: str) -> bool:
        """Remove ``key``; False when it was not there."""
        try:
            del self._db[key]
        except KeyError:
            return False
        return True

    def set_timestamp(self, key: str, timestamp: int) -> None:
        self._db.set_timestamp(key, timestamp)

    def set_metadata(self, data: Any, timestamp: int) -> Any:
        """Set the metadata; return it as booklet stored it (plain JSON)."""
        self._db.set_metadata(data, timestamp)
        return self._db.get_metadata()

    def prune(self) -> int:
        return self._db.prune()

    def flush(self) -> None:
        """Write booklet's buffered entries out (through the fast path when it can)."""
        db = self._db
        if db.writable and (db._file is None or db._file.closed):
            # booklet's finalizer closed it (at interpreter exit) with writes still in its
            # buffer, and its sync() would skip it silently: never report them as flushed.
            raise LocalFileError(f"{self.path} was closed by booklet; its buffered writes are lost")
        if self._fast and db.writable and db._buffer_index:
            with db._thread_lock:
                fastwrite.flush(db)
        db.sync()

    def sync(self) -> None:
        """Flush, then fsync the file."""
        self.flush()
        fsync_path(self.path)

    def fingerprint(self) -> list[int]:
        """What changes whenever anything writes to the data file."""
        st = os.stat(self.path)
        return [st.st_size, st.st_mtime_ns, len(self._db)]

    def close(self) -> None:
        self._db.close()


def build(path: pathlib.Path, serializer: Any, n_buckets: int, found: Inspection | None,
          source: pathlib.Path, note: Callable[[str], None]) -> DataFile:
    """A new booklet file at ``path`` holding the intact entries ``found`` in ``source``
    (none when None), still open for the caller to add to."""
    new = DataFile(path, "n", serializer, n_buckets)
    if found is None:
        return new
    db = new._db
    slots = {key: slot for slot, key in booklet.utils.reserved_slot_key_bytes.items()}
    with open(source, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        new.put_many(
            (e.key.decode(), mm[e.value_at : e.value_at + e.value_len], e.timestamp) for e in found.entries
        )
        for key, e in found.reserved.items():
            value = mm[e.value_at : e.value_at + e.value_len]
            if key in slots:
                db.set_reserved(slots[key], value, e.timestamp)
                continue
            try:
                db.set_metadata(json.loads(value), e.timestamp)
            except ValueError:
                note("the local metadata was damaged and was dropped")
    return new
