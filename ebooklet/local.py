"""The local side: a booklet data file plus the sync state kept beside it.

This is the only module that imports booklet. For a data file ``big.blt`` the sync state lives
in the folder ``big.blt.ebooklet/``:

``state.json``       the remote head at the last sync (the *base*), the data file's
                     fingerprint at the last sync, the journal's acknowledged length, and
                     whether a session ended without syncing; with a checksum
``journal.log``      every key written or deleted through ebooklet since the last push, with
                     each written value, in checksummed records (:mod:`ebooklet.journal`)
``mirror.log``       a second copy of the base and of the pending deletes: what the data
                     file cannot tell again if the journal is lost
``parts/N``          base index part N exactly as downloaded; ``parts/N.bits`` marks which of
                     its keys have been present in the data file (see docs/sync.rst)

Values are stored in the data file already serialized by booklet's value serializer, so a
user can open it with plain ``booklet.open`` while offline; :meth:`LocalStore.fingerprint`
lets the sync layer notice such edits.

The data file is checked, not trusted. Whenever it may have changed behind ebooklet's back
(a session that ended without syncing, a fingerprint that differs, damage noticed during a
session), opening it walks booklet's layout (:func:`_inspect`): every entry must lie within
the file, every key must match the hash booklet stored with it, the hash index must reach
every live entry and only those, and the header's key count must agree. A file that fails is
rebuilt from its intact entries plus the journal, the original kept beside it. Values have no
checksum in booklet's layout; those of pending changes are checked against the journal, and
cached ones against the base's content hashes by the sync layer's scan.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import mmap
import os
import pathlib
import shutil
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import booklet
import booklet.serializers
import booklet.utils
import portalocker

from .codec import Codec
from .errors import DamagedLocalFileError, LocalFileBusyError, LocalFileError
from .journal import INFERRED, Journal, Pending, read_legacy_touched

logger = logging.getLogger(__name__)

#: Version 2: journal.log and mirror.log (checksummed records) replace touched.log, and
#: state.json carries a checksum. Version 1 (ebooklet 0.6.0) is still read, and upgraded.
STATE_VERSION = 2
#: The sync state's file name, in the folder ``{data file}.ebooklet/`` beside the data file.
STATE_FILE = "state.json"
#: What state.json shares with the journal's base record: enough to rebuild the state.
_BASE_FIELDS = ("head", "etag", "remote_uuid", "location", "replace", "codec")


def now_us() -> int:
    return time.time_ns() // 1000
#: Hash buckets of a new data file when nothing says how many keys it will hold: enough for
#: 300,000 keys (a 2 MB table, about 50 ms to create). booklet grows a table only when the
#: file is synced, so keys written past its size first lengthen every bucket's chain, then
#: are rewired one by one; measured in benchmarks/bench_local_write.py.
DEFAULT_N_BUCKETS = 360_007


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


# -- writing entries into booklet's layout ----------------------------------------------------

#: booklet's private attributes that the fast write path uses, and the layout it writes
#: (booklet 0.12, file format version 5). When either differs, every write goes through
#: booklet's public ``set``.
_FAST_ATTRS = (
    "_file", "_thread_lock", "_mutation_count", "_n_keys", "_n_buckets", "_index_offset",
    "_ts_bytes_len", "_buffer_data", "_buffer_index", "_buffer_index_set", "_write_buffer_size",
    "_n_keys_pos",
)
_FAST_LAYOUT = (13, 6, 2, 4, 7)  # key hash, file position, key length, value length, timestamp
#: What follows an entry's key hash: next pointer, key length, value length, and the
#: timestamp (7 bytes, little-endian, packed as 4 + 2 + 1).
_BLOCK_TS = struct.Struct("<6sHIIHB")
_END_OF_CHAIN = (1).to_bytes(6, "little")
#: A key hash as booklet makes it (a copy of a prepared hasher: no arguments to parse).
_key_hasher = hashlib.blake2s(digest_size=13).copy
#: Bytes of entries written and hooked into the index at a time by :func:`_write_many`.
_BULK_CHUNK = 4 << 20


def _fast_capable(db: Any) -> bool:
    """Whether the fast write path knows this open booklet file's layout and attributes."""
    u = booklet.utils
    layout = (u.key_hash_len, u.n_bytes_file, u.n_bytes_key, u.n_bytes_value, u.timestamp_bytes_len)
    try:
        # booklet's own key hash and bucket choice must be the ones this path computes.
        probe = b"ebooklet-layout-probe"
        h = _key_hasher()
        h.update(probe)
        same_hashing = (
            u.hash_key(probe) == h.digest()
            and u.get_index_bucket(h.digest(), 12007) == int.from_bytes(h.digest(), "little") % 12007
            and u.get_bucket_index_pos(5, 100) == 100 + 5 * 6
        )
    except Exception:  # noqa: BLE001 - a booklet that differs: its public set() is used
        same_hashing = False
    return (
        same_hashing and layout == _FAST_LAYOUT and hasattr(os, "pwrite")
        and getattr(db, "_ts_bytes_len", 0) == 7 and all(hasattr(db, name) for name in _FAST_ATTRS)
    )


# booklet's ``set`` appends an entry to a write buffer and, when the buffer is full, writes
# it out and hooks its entries into the hash index one seek, read and write at a time
# (``utils.update_index``). The functions below write the same bytes: an entry goes into the
# same buffer (so booklet's reads and its own ``sync`` see it as theirs), and full buffers
# are hooked in through a memory map of the file (:func:`_link`). Like :func:`_serializers`,
# they rely on booklet's private attributes (checked once by :func:`_fast_capable`); the
# layout they write is the one :func:`_inspect_map` checks.


def _put(db: Any, key: str, value: bytes, timestamp: int) -> None:
    """``db.set(key, value, timestamp, encode_value=False)`` for a writable file."""
    kb = key.encode("utf-8")
    h = _key_hasher()
    h.update(kb)
    key_hash = h.digest()
    head = _BLOCK_TS.pack(
        _END_OF_CHAIN, len(kb), len(value), timestamp & 0xFFFFFFFF, timestamp >> 32 & 0xFFFF, timestamp >> 48
    )
    with db._thread_lock:
        db._mutation_count += 1
        data = db._buffer_data
        if len(data) + 32 + len(kb) + len(value) > db._write_buffer_size and data:
            _flush(db)
        pos = db._file.seek(0, 2) + len(data)
        data += key_hash
        data += head
        data += kb
        data += value
        index = db._buffer_index
        index += key_hash
        index += pos.to_bytes(6, "little")
        db._buffer_index_set.add(key_hash)


def _flush(db: Any) -> None:
    """Write booklet's buffered entries and hook them into the index (under its lock)."""
    if not db._buffer_index:
        return
    f = db._file
    booklet.utils.flush_data_buffer(f, db._buffer_data, f.seek(0, 2))
    db._n_keys += _link(f.fileno(), db._buffer_index, db._n_buckets, db._index_offset)
    db._buffer_index.clear()
    db._buffer_index_set.clear()
    os.pwrite(f.fileno(), db._n_keys.to_bytes(4, "little"), db._n_keys_pos)  # as booklet's sync()


def _write_many(db: Any, records: Iterable[tuple[str, bytes, int]]) -> None:
    """:func:`_put` for many ``(key, value, timestamp)`` records, in order, each chunk of
    them written straight to the file and hooked in at once."""
    with db._thread_lock:
        db._mutation_count += 1
        _flush(db)  # booklet's own buffered writes come first
        fd = db._file.fileno()
        n_buckets, index_offset = db._n_buckets, db._index_offset
        pieces: list[bytes] = []
        links = bytearray()
        add, hasher, block, eoc = pieces.extend, _key_hasher, _BLOCK_TS.pack, _END_OF_CHAIN
        start = pos = db._file.seek(0, 2)
        for text, value, ts in records:
            key = text.encode("utf-8")
            kl, vl = len(key), len(value)
            head = block(eoc, kl, vl, ts & 0xFFFFFFFF, ts >> 32 & 0xFFFF, ts >> 48)
            h = hasher()
            h.update(key)
            key_hash = h.digest()
            add((key_hash, head, key, value))
            links += key_hash
            links += pos.to_bytes(6, "little")
            pos += 32 + kl + vl
            if pos - start >= _BULK_CHUNK:
                start = _append(fd, b"".join(pieces), start)
                db._n_keys += _link(fd, links, n_buckets, index_offset)
                pieces.clear()
                links.clear()
        if pieces:
            _append(fd, b"".join(pieces), start)
            db._n_keys += _link(fd, links, n_buckets, index_offset)
        os.pwrite(fd, db._n_keys.to_bytes(4, "little"), db._n_keys_pos)  # as booklet's sync()


def _append(fd: int, data: bytes, at: int) -> int:
    """Write ``data`` at byte ``at`` (the end of the file); return the new end."""
    done = 0
    with memoryview(data) as view:
        while done < len(data):
            done += os.pwrite(fd, view[done:], at + done)
    return at + done


#: Chain walks after which :func:`_link` lets go of the file's pages it touched (they stay
#: in the page cache, written or not), so that a large file never becomes resident.
_WALKS_PER_RELEASE = 8192


def _link(fd: int, links: bytearray, n_buckets: int, index_offset: int) -> int:
    """Hook entries already in the file into the hash index, in order; return how many keys
    are new. ``links`` holds a key hash and a position (19 bytes) per entry, as booklet's
    index buffer does. The rules are those of booklet's ``utils.update_index``: a key
    already in its bucket's chain is replaced in place (the old entry's pointer zeroed), a
    new key goes at the chain's end."""
    mm = mmap.mmap(fd, os.fstat(fd).st_size)
    release = getattr(mmap, "MADV_DONTNEED", None)
    from_bytes = int.from_bytes
    new = walks = 0
    try:
        for i in range(0, len(links), 19):
            key_hash = links[i : i + 13]
            pos = links[i + 13 : i + 19]
            slot = index_offset + from_bytes(key_hash, "little") % n_buckets * 6
            at = from_bytes(mm[slot : slot + 6], "little")
            if at <= 1:
                mm[slot : slot + 6] = pos
                new += 1
                continue
            walks += 1
            if walks % _WALKS_PER_RELEASE == 0 and release is not None:
                mm.madvise(release)  # a shared file mapping: nothing written is lost
            prev = slot
            while True:
                nxt = from_bytes(mm[at + 13 : at + 19], "little")
                if not nxt:  # a replaced entry still in the chain: booklet hooks in here
                    mm[prev : prev + 6] = pos
                    new += 1
                    break
                if mm[at : at + 13] == key_hash:
                    mm[at + 13 : at + 19] = bytes(6)
                    mm[prev : prev + 6] = pos
                    if nxt > 1:
                        at_new = from_bytes(pos, "little")
                        mm[at_new + 13 : at_new + 19] = nxt.to_bytes(6, "little")
                    break
                if nxt == 1:
                    mm[at + 13 : at + 19] = pos
                    new += 1
                    break
                prev, at = at + 13, nxt
    finally:
        mm.close()
    return new


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


def _write_atomic(path: pathlib.Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (fsynced first unless not ``durable``)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_atomic_many(files: list[tuple[pathlib.Path, bytes]]) -> None:
    """:func:`_write_atomic` for several files, their fsyncs run side by side (a file
    system commits concurrent fsyncs together: several cost about one)."""
    if len(files) <= 1:
        for path, data in files:
            _write_atomic(path, data)
        return
    with concurrent.futures.ThreadPoolExecutor(min(8, len(files))) as pool:
        for _ in pool.map(lambda item: _write_atomic(*item), files):
            pass


def _fsync_path(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _aside(path: pathlib.Path, what: str) -> pathlib.Path:
    """A free name beside ``path`` for keeping a damaged original: ``<name>.<what>-<time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{what}-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.{what}-{stamp}-{n}")
    return aside


# -- state.json ------------------------------------------------------------------------------


def _encode_state(state: dict[str, Any]) -> bytes:
    """JSON, then a line with its blake2b-128 checksum."""
    body = json.dumps(state).encode()
    return body + b"\n" + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b"\n"


def _decode_state(data: bytes) -> dict[str, Any]:
    """The state in ``data``; ValueError when it fails its checksum or does not parse."""
    body, _, checksum = data.partition(b"\n")
    if checksum.strip():
        if hashlib.blake2b(body, digest_size=16).hexdigest().encode() != checksum.strip():
            raise ValueError("its checksum does not match its content")
        state = json.loads(body)
    else:
        state = json.loads(data)
        # Version-1 files (ebooklet 0.6.0) were written without a checksum; this version's
        # never are (a newer version's are refused by the caller, whatever their form).
        if isinstance(state, dict) and 1 < state.get("version", 1) <= STATE_VERSION:
            raise ValueError("its checksum line is missing")
    if not isinstance(state, dict) or not isinstance(state.get("parts", {}), dict):
        raise ValueError("it is not a sync state")
    return state


@dataclass(frozen=True)
class Synced:
    """The remote a local file was last synced with, as its sync state records it.

    Attributes
    ----------
    location : str
        Where the remote is, as shown in messages (never with credentials).
    uuid : str or None
        The remote database's uuid (None when the state does not say).
    """

    location: str
    uuid: str | None


def synced_with(path: str | os.PathLike[str]) -> Synced | None:
    """The remote the local file at ``path`` was last synced with, or None when it never was.

    Read-only and lock-free: it reads ``state.json`` beside the file and nothing else, and
    never opens the data file. A state that is missing, fails its checksum or records no
    location gives None: opening the file finds out (and says) what is wrong with it.
    """
    p = pathlib.Path(path)
    try:
        state = _decode_state((p.with_name(p.name + ".ebooklet") / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    location = state.get("location")
    if not isinstance(location, str) or not location:
        return None
    uuid = state.get("remote_uuid")
    return Synced(location, uuid if isinstance(uuid, str) else None)


# -- checking the data file ------------------------------------------------------------------


class _Entry(NamedTuple):
    """An intact live entry of a booklet file: where it is, its key, timestamp and value."""

    pos: int
    key: bytes
    timestamp: int
    value_at: int
    value_len: int


@dataclass
class _Inspection:
    """What walking a booklet file found."""

    problems: list[str] = field(default_factory=list)
    header_ok: bool = True
    n_buckets: int = booklet.utils.init_n_buckets
    value_serializer: Any = None  # the class, or None when unknown (custom or unreadable)
    entries: list[_Entry] = field(default_factory=list)
    reserved: dict[bytes, _Entry] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        if len(self.problems) < 5:
            self.problems.append(text)
        elif len(self.problems) == 5:
            self.problems.append("and more")


def _inspect(path: pathlib.Path) -> _Inspection:
    """Walk the booklet file at ``path`` (format version 5, variable-length values) and check
    its structure. Reads the whole file once; used only when the file is in doubt."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return _Inspection(["the file is empty"], header_ok=False)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _inspect_map(mm)
    finally:
        mm.close()


def _inspect_map(mm: Any) -> _Inspection:
    u = booklet.utils
    out = _Inspection()
    size = len(mm)
    hdr = u.sub_index_init_pos
    num = int.from_bytes
    if size < hdr or mm[:16] != u.uuid_variable_blt:
        return _Inspection(["its header is missing or damaged"], header_ok=False)
    version = num(mm[16:18], "little")
    nf, nk, nv = mm[18], mm[19], mm[20]
    n_buckets = num(mm[21:25], "little")
    widths = (u.n_bytes_file, u.n_bytes_key, u.n_bytes_value)
    if version not in (4, 5) or (nf, nk, nv) != widths or not n_buckets:
        return _Inspection(["its header is damaged"], header_ok=False)
    out.n_buckets = n_buckets
    out.value_serializer = booklet.serializers.serial_int_dict.get(num(mm[29:31], "little"))
    n_keys = num(mm[u.n_keys_pos : u.n_keys_pos + 4], "little")
    ts_len = u.timestamp_bytes_len if mm[41] else 0
    raw_index = num(mm[u.index_offset_pos : u.index_offset_pos + nf], "little")
    raw_first = num(mm[u.first_data_block_pos_pos : u.first_data_block_pos_pos + nf], "little")
    unset = (0, 52983525027888)  # as booklet reads them
    index_at = hdr if raw_index in unset else raw_index
    first = hdr + n_buckets * nf if raw_first in unset else raw_first
    index_end = index_at + n_buckets * nf
    if index_end > size:
        out.problem(f"it is cut short: its hash index ends at byte {index_end}, the file at {size}")
    regions = [(first, index_at), (index_end, size)] if index_at != hdr else [(first, size)]
    kh = u.key_hash_len
    block = kh + nf + nk + nv
    reserved_keys = u.reserved_key_bytes
    blake2s = hashlib.blake2s
    live: dict[int, tuple[int, int]] = {}  # position -> (bucket, next pointer)
    for start, end in regions:
        end = min(end, size)
        pos = start
        while pos < end:
            if pos + block > end:
                out.problem(f"the entry at byte {pos} is cut short")
                break
            nxt = num(mm[pos + kh : pos + kh + nf], "little")
            klen = num(mm[pos + kh + nf : pos + kh + nf + nk], "little")
            vlen = num(mm[pos + kh + nf + nk : pos + block], "little")
            total = block + ts_len + klen + vlen
            if pos + total > end:
                out.problem(f"the entry at byte {pos} runs past the end of the file (torn or cut short)")
                break
            if nxt:
                at = pos + block + ts_len
                key = mm[at : at + klen]
                key_hash = mm[pos : pos + kh]
                if blake2s(key, digest_size=kh).digest() != key_hash:
                    out.problem(f"the key of the entry at byte {pos} is damaged")
                else:
                    entry = _Entry(pos, key, num(mm[pos + block : at], "little"), at + klen, vlen)
                    live[pos] = (num(key_hash, "little") % n_buckets, nxt)
                    if key in reserved_keys:
                        out.reserved[key] = entry
                    else:
                        try:
                            key.decode("utf-8")
                        except UnicodeDecodeError:
                            out.problem(f"the key of the entry at byte {pos} is not text")
                        else:
                            out.entries.append(entry)
            pos += total
    if index_end <= size:
        index = mm[index_at:index_end]
        empty = (1).to_bytes(nf, "little")
        reached: set[int] = set()
        for bucket in range(n_buckets):
            head = index[bucket * nf : bucket * nf + nf]
            if head == empty:
                continue
            pos = num(head, "little")
            while pos > 1:
                info = live.get(pos)
                if info is None:
                    out.problem(f"the hash index points at byte {pos}, where no intact entry is")
                    break
                if info[0] != bucket or pos in reached:
                    out.problem(f"the hash index is damaged around the entry at byte {pos}")
                    break
                reached.add(pos)
                pos = info[1]
        if len(reached) < len(live):
            out.problem(f"{len(live) - len(reached)} entries cannot be reached through the hash index")
    if n_keys != u.n_keys_crash and n_keys != len(out.entries):
        out.problem(f"its header counts {n_keys} keys but it holds {len(out.entries)}")
    return out


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

    Opening checks what may have been damaged and repairs it (see the module docstring);
    :attr:`repairs` lists what was found, one sentence each, and each is logged as a warning.
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
        self._state_path = self.state_dir / STATE_FILE
        exists = self.path.exists()
        if not exists and not (create or new):
            raise FileNotFoundError(f"the local file {self.path} does not exist")
        self.created = new or not exists
        self._timeout = timeout
        self._db: Any = None
        self._journal = Journal(self.state_dir / "journal.log")
        self._mirror = Journal(self.state_dir / "mirror.log")
        self._journal_base = ""
        self._journal_aside: pathlib.Path | None = None
        self.state: dict[str, Any] = {}
        self.touched: dict[str, int | None] = {}
        self._n_buckets = n_buckets
        self._buffer = {} if buffer_size is None else {"buffer_size": buffer_size}
        self._bits: dict[int, bytearray] = {}
        self._dirty_bits: set[int] = set()
        self._unsynced = False
        self._legacy: dict[str, int | None] | None = None
        self._adopting = False
        self.recovered_from_crash = False
        #: What opening found damaged and repaired, one sentence each.
        self.repairs: list[str] = []
        try:
            if self.created:
                self._create(value_serializer, expected_keys)
            else:
                self._open_existing(read_only)
        except BaseException:
            self.abandon()
            raise
        self._saved_state = json.dumps(self.state)

    @staticmethod
    def has_state(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` has been opened through ebooklet before."""
        p = pathlib.Path(path).absolute()
        folder = p.with_name(p.name + ".ebooklet")
        names = ("state.json", "journal.log", "mirror.log", "touched.log")
        return p.exists() and any((folder / name).exists() for name in names)

    # -- opening ---------------------------------------------------------------------------

    def _create(self, value_serializer: Any, expected_keys: int) -> None:
        n_buckets = self._n_buckets
        if n_buckets is None:
            n_buckets = (
                max(booklet.utils.init_n_buckets, int(expected_keys * 1.2)) if expected_keys
                else DEFAULT_N_BUCKETS
            )
        self._bind(self._open_booklet("n", value_serializer, n_buckets))
        if self.state_dir.exists():
            # Sync state left by an earlier file at this path (now held locked by us): it
            # describes data that is gone, so none of it may be reused.
            shutil.rmtree(self.state_dir)
        self._make_dirs()
        self.state = {"version": STATE_VERSION, "parts": {}, "codec": self.codec.name}
        self.save_state()

    def _make_dirs(self) -> None:
        self.state_dir.mkdir(exist_ok=True)
        self._parts_dir.mkdir(exist_ok=True)

    def _open_existing(self, read_only: bool) -> None:
        self._make_dirs()
        peek, _ = self._read_state()
        calm = peek is not None and not (peek.get("unsynced") or peek.get("damaged"))
        lock = None
        unreadable = None
        try:
            try:
                self._bind(self._open_booklet("r" if read_only and calm else "w"))
            except DamagedLocalFileError as exc:
                if read_only and calm:
                    # e.g. booklet's mark of a file closed without close(): reading needs 'w'
                    with contextlib.suppress(DamagedLocalFileError):
                        self._bind(self._open_booklet("w"))
                if self._db is None:
                    unreadable = exc
                    lock = self._lock_unreadable()
            self._load_sync_state()
            if unreadable is not None:
                self._refuse_if_unmanaged(str(unreadable.__cause__ or unreadable))
                found = _inspect(self.path)  # booklet could not open it: what is still intact?
                reason = "; ".join([str(unreadable.__cause__ or unreadable), *found.problems])
                self._rebuild(found, reason, lock)
                lock = None
            else:
                self.state["codec"] = self.codec.name
                self._check_data_file()
        finally:
            if lock is not None:
                lock.close()
        if self._legacy is not None and self._db.writable:
            self._migrate()
        if self.repairs or (self._db.writable and not self._journal_base):
            self.save_state()

    def _bind(self, db: Any) -> None:
        self._db = db
        key_serializer, value_serializer = _serializers(db)
        if key_serializer is not booklet.serializers.Str:
            raise LocalFileError(
                f"{self.path} is a booklet file whose keys are not str; ebooklet keys are str. "
                "Use another local path."
            )
        self._dumps = value_serializer.dumps
        self._fast = _fast_capable(db)

    def _open_booklet(self, flag: str, value_serializer: Any = None, n_buckets: int = 12007) -> Any:
        try:
            return booklet.open(
                self.path, flag, key_serializer="str", value_serializer=value_serializer,
                n_buckets=n_buckets, timeout=self._timeout, **self._buffer,
            )
        except booklet.LockTimeoutError as exc:
            raise LocalFileBusyError(
                f"{self.path} is open in another process (or another open database here); close "
                "it there, or open with a longer timeout"
            ) from exc
        except (TypeError, ValueError, OSError, struct.error, IndexError, KeyError) as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise
            # booklet's frames in the traceback hold its file, and with it the file lock.
            exc.__traceback__ = None
            raise DamagedLocalFileError(f"{self.path} is not a readable booklet file ({exc})") from exc

    def _lock_unreadable(self) -> Any:
        """Hold the OS lock of a data file booklet cannot open, while it is rebuilt."""
        handle = open(self.path, "rb")  # noqa: SIM115 (closed by the caller)
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            try:
                portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
                return handle
            except portalocker.exceptions.LockException:
                if deadline is not None and time.monotonic() >= deadline:
                    handle.close()
                    raise LocalFileBusyError(
                        f"{self.path} is open in another process (or another open database "
                        "here); close it there, or open with a longer timeout"
                    ) from None
                time.sleep(0.05)  # polling an OS lock, as booklet does

    def _note(self, text: str) -> None:
        logger.warning("%s: %s", self.path, text)
        self.repairs.append(text)

    # -- the sync state and the journal, read and checked ---------------------------------

    def _read_state(self) -> tuple[dict[str, Any] | None, str | None]:
        """The saved state, or None and what is wrong with it (None: there is none)."""
        try:
            data = self._state_path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, str(exc)
        try:
            return _decode_state(data), None
        except ValueError as exc:
            return None, str(exc)

    @staticmethod
    def _acknowledged(state: dict[str, Any] | None, name: str) -> tuple[str, int] | None:
        value = state.get(name) if state else None
        if isinstance(value, list) and len(value) == 2:
            return str(value[0]), int(value[1])
        return None

    def _load_sync_state(self) -> None:
        """Read state.json and the journals (under the data file's lock), rebuilding what
        is missing or damaged from the others."""
        state, problem = self._read_state()
        if state is not None and state.get("version", 1) > STATE_VERSION:
            raise LocalFileError(f"{self.state_dir} was written by a newer ebooklet; upgrade ebooklet")
        journal, mirror = self._journal, self._mirror
        journal.load(self._acknowledged(state, "journal"))
        mirror.load(self._acknowledged(state, "mirror"))
        rebuilt = False
        self._adopting = state is None and problem is None and journal.missing and mirror.missing
        if state is None:
            if self._adopting:
                state = {"version": STATE_VERSION, "parts": {}}  # a plain booklet file, adopted
            else:
                state = self._state_from_journal(problem)
                rebuilt = True
        self.state = state
        if state.get("version", 1) < 2:
            self._legacy, complete = read_legacy_touched(self.state_dir / "touched.log")
            self.touched = dict(self._legacy)
            if not complete:
                self._note(
                    f"{self.state_dir / 'touched.log'} is damaged; the changes it listed are found "
                    "again by comparing the data file with the remote"
                )
                self.external_edits = True
            return
        problems = []
        if journal.missing and "journal" in state:
            problems.append("is missing")
        if journal.damage:
            problems.append(f"has {sum(d.end - d.start for d in journal.damage)} damaged bytes")
        if problems or rebuilt:
            # Deletes the journal lost are in the mirror; writes are in the data file, which
            # the next comparison with the remote scans in full.
            for key in list(mirror.where):
                entry = mirror.get(key)
                if entry is not None and entry.deleted and key not in journal.where:
                    journal.delete(key, entry.timestamp, entry.flags)
            self.external_edits = True
        if problems:
            where = ""
            if journal.damage:
                # Moved aside when the journal is rewritten (at the end of this open).
                self._journal_aside = _aside(journal.path, "damaged")
                where = f" (kept as {self._journal_aside})"
            self._note(
                f"the journal {journal.path} {' and '.join(problems)}{where}; pending deletes were "
                f"recovered from {mirror.path}, and pending writes are found again by comparing "
                "the data file with the remote"
            )
        elif mirror.damage or (mirror.missing and not journal.missing):
            self._note(f"{mirror.path} was missing or damaged; rewritten from the journal")
        if journal.base is not None:
            self._journal_base = self._base_text(journal.base)
        self.touched = {}
        for key in list(journal.where):
            entry = journal.get(key)
            if entry is not None:
                self.touched[key] = entry.timestamp if entry.deleted else None
        if problems or rebuilt or mirror.damage or mirror.missing:
            self._journal_base = ""  # rewrite both at the next save

    def _state_from_journal(self, problem: str | None) -> dict[str, Any]:
        """A sync state rebuilt from the base the journal (or its mirror) records."""
        what = f"the sync state {self._state_path} is " + (
            "missing" if problem is None else f"damaged ({problem})"
        )
        base = self._journal.base or self._mirror.base
        if base is None:
            raise DamagedLocalFileError(
                f"{what}, and the journal that could rebuild it ({self._journal.path}) is damaged "
                f"too. Move the folder {self.state_dir} aside and open again: the data file is then "
                "compared with the remote as it is now and every difference becomes a local change "
                "(check changes() before pushing). Deletes made since the last push cannot be "
                "recovered that way; they are listed in mirror.log of the moved folder if it is "
                "intact."
            )
        state: dict[str, Any] = {"version": STATE_VERSION, "parts": {}}
        for name in _BASE_FIELDS:
            if base.get(name) is not None:
                state[name] = base[name]
        head = state.get("head") or {}
        for p, name in enumerate(head.get("parts") or []):
            if name and self._part_file(name).exists() and self._part_file(name, ".bits").exists():
                state["parts"][str(p)] = name
        if problem is not None:
            aside = _aside(self._state_path, "damaged")
            os.replace(self._state_path, aside)
            what += f" (kept as {aside})"
        source = self._journal.path if self._journal.base else self._mirror.path
        self._note(f"{what}; rebuilt it from {source}")
        return state

    def _migrate(self) -> None:
        """Turn the touched.log of a version-1 state into a journal."""
        legacy, self._legacy = self._legacy or {}, None
        for key, deleted_at in legacy.items():
            if key in self._journal.where:
                continue
            if deleted_at is None:
                got = self.get_raw(key)
                if got is not None:
                    self._journal.write(key, got[0], got[1])
            else:
                self._journal.delete(key, deleted_at)
                self._mirror.delete(key, deleted_at)
        self.state["version"] = STATE_VERSION
        self._journal_base = ""
        self.save_state()
        (self.state_dir / "touched.log").unlink(missing_ok=True)

    # -- the data file, checked ------------------------------------------------------------

    def _check_data_file(self) -> None:
        """Check the data file if it may have changed behind ebooklet's back; repair it."""
        state = self.state
        crashed = bool(state.get("unsynced"))
        if not (crashed or state.get("damaged")) and self.fingerprint() == state.get("fingerprint"):
            return
        self.recovered_from_crash = crashed
        self.external_edits = True
        found = _inspect(self.path)
        if found.problems:
            self._refuse_if_unmanaged("; ".join(found.problems))
            what = "; ".join(found.problems)
            if crashed:
                what = f"left inconsistent by an interrupted session: {what}"
            self._rebuild(found, what)
            return
        restored = []
        for key in list(self._journal.where):
            entry = self._journal.get(key)
            got = self._db.get_timestamp(key, include_value=True, decode_value=False)
            if entry is not None and self._restore_if_needed(key, entry, got, crashed):
                restored.append(key)
        dropped = [k for k in state.pop("damaged_keys", []) if k not in self._journal.where]
        for key in dropped:
            if key in self._db:
                self._before_write()
                del self._db[key]
                restored.append(key)
        if dropped:
            self._zero_bits()
        state.pop("damaged", None)
        if restored:
            shown = ", ".join(repr(k) for k in restored[:10])
            self._note(
                f"{len(restored)} value(s) did not match what was written ({shown}); pending ones "
                "were restored from the journal, cached ones are fetched again"
            )

    def _refuse_if_unmanaged(self, reason: str) -> None:
        """A damaged booklet file that ebooklet never synced is the user's to deal with."""
        if self._adopting:
            raise DamagedLocalFileError(
                f"{self.path} is not a readable booklet file ({reason}). If it was damaged, move "
                "it aside and open again: ebooklet then fetches a fresh copy from the remote "
                "(changes that were never pushed are in the moved file only)."
            )

    def _restore_if_needed(
        self, key: str, entry: Pending, got: tuple[int, bytes] | None, crashed: bool
    ) -> bool:
        """Bring the data file in line with the journal's record of ``key`` where the file
        lost it (``got`` is what the file holds). Later edits with plain booklet stay."""
        if entry.deleted:
            if crashed and got is not None and got[0] <= entry.timestamp:
                self._before_write()
                del self._db[key]
                return True
            return False
        if got is None:
            if not crashed:
                return False  # deleted with plain booklet since
        elif not self._disagrees(entry, *got):
            return False
        return self._restore(key)

    @staticmethod
    def _disagrees(entry: Pending, timestamp: int, raw: bytes) -> bool:
        """Whether a value the data file holds for a pending write is not the one written:
        older, or other bytes under the same timestamp. A newer one is a later edit made with
        plain booklet."""
        if timestamp != entry.timestamp:
            return timestamp < entry.timestamp
        return raw != entry.value

    def _restore(self, key: str) -> bool:
        got = self._journal.get(key)
        if got is None or got.value is None:
            self._note(f"the pending value of {key!r} is damaged in the journal too; it is lost")
            return False
        self._before_write()
        self._db.set(key, got.value, timestamp=got.timestamp, encode_value=False)
        return True

    def _rebuild(self, found: _Inspection | None, reason: str, lock: Any = None) -> None:
        """Replace the data file by its intact entries plus the journal's pending changes;
        keep the damaged original beside it."""
        header = found is not None and found.header_ok
        serializer = found.value_serializer if header else None  # type: ignore[union-attr]
        if serializer is not None:
            arg = _serializer_arg(serializer)
        else:
            name = self.state.get("codec") or (self.state.get("head") or {}).get("value_serializer")
            if name == "bytes":
                arg = None
            elif name in booklet.serializers.serial_dict:
                arg = name
            else:
                raise DamagedLocalFileError(
                    f"{self.path} is damaged ({reason}) and cannot be rebuilt here: its value "
                    f"serializer ({name or 'unknown'}) is not one of booklet's. Move it aside and "
                    f"open again to fetch a fresh copy; its pending changes stay in {self.state_dir}."
                )
        n_buckets = found.n_buckets if header else booklet.utils.init_n_buckets  # type: ignore[union-attr]
        tmp = self.path.with_name(self.path.name + ".rebuild")
        new = booklet.open(tmp, "n", key_serializer="str", value_serializer=arg, n_buckets=n_buckets)
        try:
            if header:
                self._copy_intact(found, new)  # type: ignore[arg-type]
            self._replay_journal(new)
        finally:
            new.close()
        if self._db is not None:
            self._db.close()
            self._db = None
        if lock is not None:
            lock.close()
        aside = _aside(self.path, "damaged")
        os.replace(self.path, aside)
        os.replace(tmp, self.path)
        self._bind(self._open_booklet("w"))
        self._zero_bits()
        self.external_edits = True
        self.state.pop("damaged", None)
        self.state.pop("damaged_keys", None)
        self._mark_unsynced()
        self._note(
            f"the data file was damaged ({reason}); it was rebuilt from its intact entries and the "
            f"journal of pending changes (keys it lost are fetched again from the remote); the "
            f"original is kept as {aside}"
        )

    def _copy_intact(self, found: _Inspection, new: Any) -> None:
        slots = {key: slot for slot, key in booklet.utils.reserved_slot_key_bytes.items()}
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for e in found.entries:
                new.set(e.key.decode(), mm[e.value_at : e.value_at + e.value_len], e.timestamp, False)
            for key, e in found.reserved.items():
                value = mm[e.value_at : e.value_at + e.value_len]
                if key in slots:
                    new.set_reserved(slots[key], value, e.timestamp)
                    continue
                try:
                    new.set_metadata(json.loads(value), e.timestamp)
                except ValueError:
                    self._note("the local metadata was damaged and was dropped")

    def _replay_journal(self, new: Any) -> None:
        lost = []
        for key in self._journal.where:
            entry = self._journal.get(key)
            if entry is None:
                lost.append(key)
                continue
            got = new.get_timestamp(key, include_value=not entry.deleted, decode_value=False)
            if entry.deleted:
                if got is not None and got <= entry.timestamp:
                    del new[key]
                continue
            if got is None or self._disagrees(entry, *got):
                new.set(key, entry.value, entry.timestamp, False)
        meta = self._journal.meta
        if meta is not None:
            mine = new.get_metadata(include_timestamp=True)
            if mine is None or mine[1] < meta[1]:
                new.set_metadata(meta[0], meta[1])
        if lost:
            self._note(
                f"the pending values of {len(lost)} key(s) were damaged in both the data file and "
                f"the journal and are lost: {', '.join(repr(k) for k in lost[:10])}"
            )

    def _zero_bits(self) -> None:
        """Forget which keys were seen in the data file: after a repair, a key missing from it
        may have been lost, not deleted. The next scan sets the bits of the keys present."""
        for p, name in self.stored_parts().items():
            bits = self._part_file(name, ".bits")
            with contextlib.suppress(FileNotFoundError):
                _write_atomic(bits, bytes(bits.stat().st_size))
            self._bits.pop(p, None)
            self._dirty_bits.discard(p)
        self.state["presence_reset"] = True

    def refuse_if_damaged(self) -> None:
        """Refuse to compare a file found damaged in this session: reopening repairs it."""
        if self.state.get("damaged"):
            raise DamagedLocalFileError(
                f"{self.path} was found damaged in this session; close the database and open it "
                "again to repair it before comparing it with the remote"
            )

    def _found_damaged(self, exc: BaseException, key: str | None = None) -> DamagedLocalFileError:
        """Record damage noticed during a session (checked and repaired at the next open)."""
        self.state["damaged"] = True
        if key is not None:
            self.state.setdefault("damaged_keys", []).append(key)
        with contextlib.suppress(Exception):
            self.save_state()
        return DamagedLocalFileError(
            f"{self.path} is damaged ({type(exc).__name__}: {exc}). Close the database and open it "
            "again: opening checks the file and rebuilds it from its intact entries, the journal "
            "of your pending changes, and the remote."
        )

    # -- sync state ------------------------------------------------------------------------

    @staticmethod
    def _base_text(base: dict[str, Any]) -> str:
        return json.dumps({name: base.get(name) for name in _BASE_FIELDS}, sort_keys=True)

    def save_state(self) -> None:
        self._need_write()
        if self._legacy is not None:
            self._migrate()
            return
        if self._base_text(self.state) != self._journal_base:
            self._rewrite_journal()
        self.state["journal"] = [self._journal.id, self._journal.durable]
        self.state["mirror"] = [self._mirror.id, self._mirror.durable]
        text = json.dumps(self.state)
        _write_atomic(self._state_path, _encode_state(self.state))
        self._saved_state = text

    def _rewrite_journal(self) -> None:
        """Write the journal and its mirror anew: the base, then what is still pending."""
        base = {name: self.state.get(name) for name in _BASE_FIELDS}
        journal = self._journal
        if self._journal_aside is not None:
            # The damaged journal is kept; rewriting reads its intact records through the
            # descriptor it still holds.
            os.replace(journal.path, self._journal_aside)
            self._journal_aside = None
        journal.rewrite(base, list(journal.where))
        deletes = [k for k in journal.where if self.touched.get(k) is not None]
        self._mirror.rewrite(base, deletes, source=journal)
        self._journal_base = self._base_text(base)

    @property
    def external_edits(self) -> bool:
        """True while the data file may hold changes that ``touched`` does not list.

        Set when the file changed behind ebooklet's back (plain booklet, a crash, a repair)
        and kept, across sessions, until a full comparison has recorded what changed.
        """
        # "rescan" is the key's name in state files of ebooklet 0.6.0.
        return bool(self.state.get("external_edits", self.state.get("rescan")))

    @external_edits.setter
    def external_edits(self, value: bool) -> None:
        self.state.pop("rescan", None)
        self.state["external_edits"] = value

    @property
    def presence_reset(self) -> bool:
        """True after a repair forgot the presence bits (see :meth:`_zero_bits`), until the
        next full scan has set them again for the keys in the data file."""
        return bool(self.state.get("presence_reset"))

    def presence_restored(self) -> None:
        self.state.pop("presence_reset", None)

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

    # -- the journal of pending changes ----------------------------------------------------

    def pending(self, key: str) -> Pending | None:
        """The journal's record of a pending change to ``key``."""
        return self._journal.get(key)

    def pending_batches(self) -> Iterator[list[tuple[str, int, bytes | None, int]]]:
        """Every pending change as ``(key, timestamp, value, flags)`` (value None for a
        delete; flag INFERRED for a delete found rather than asked for), streamed from the
        journal in one sequential read, a batch at a time. The journal is the record of what
        was acknowledged; the data file holds the same bytes unless it was damaged or edited
        behind ebooklet's back, which a full comparison settles first (see
        sync.diff.local_changes)."""
        # The journal lists exactly the touched keys (they are recorded and forgotten together).
        return self._journal.pending_batches()

    def inferred_delete(self, key: str) -> bool:
        """Whether ``key`` is pending as a delete that no one asked ebooklet for: the key was
        found missing from the data file (deleted with plain booklet, or lost)."""
        entry = self._journal.get(key) if self.touched.get(key) is not None else None
        return entry is not None and entry.deleted and entry.inferred

    def disagrees(self, key: str, timestamp: int, raw: bytes) -> bool:
        """Whether the data file's value of a pending write is damaged: not the bytes the
        journal recorded, nor a later edit."""
        if key not in self.touched or self.touched[key] is not None:
            return False
        entry = self._journal.get(key)
        return entry is not None and not entry.deleted and self._disagrees(entry, timestamp, raw)

    def restore(self, key: str) -> tuple[int, bytes] | None:
        """Put the journal's value of a pending write back into the data file; return its
        (timestamp, value), or None when the journal's copy is damaged too."""
        if not self._restore(key):
            return None
        logger.warning("%s: the value of %r was damaged; restored it from the journal", self.path, key)
        entry = self._journal.get(key)
        return (entry.timestamp, entry.value) if entry is not None and entry.value is not None else None

    def record_write(self, key: str, timestamp: int, raw: bytes) -> None:
        """Record a change found in the data file (an edit made behind ebooklet's back)."""
        self._need_write()
        self._journal.write(key, timestamp, raw)
        self.touched[key] = None

    def record_delete(self, key: str, deleted_at: int) -> None:
        """Record a key found missing from the data file: an inferred delete."""
        self._need_write()
        self._journal.delete(key, deleted_at, INFERRED)
        self._mirror.delete(key, deleted_at, INFERRED)
        self.touched[key] = deleted_at

    def clear_touched(self, keys: Iterable[str] | None = None) -> None:
        """Forget touched keys (all, or those given) once they are pushed or discarded."""
        self._need_write()
        if keys is None:
            self.touched.clear()
            self._journal.forget(None)
        else:
            chosen = list(keys)
            for key in chosen:
                self.touched.pop(key, None)
            self._journal.forget(chosen)
        self._rewrite_journal()

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
        if present or present is None or seen:  # else no key can be present: all bits clear
            for row, key in enumerate(keys):
                if key in seen or contains(key):
                    bits[row >> 3] |= 1 << (row & 7)
        # The blob is a cache of a remote object: no fsync (a torn copy fails its checksum
        # and is downloaded again). The bits are state: written atomically.
        tmp = self._part_file(name, f".tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(blob)
        os.replace(tmp, self._part_file(name))
        # Bits all clear say what a missing or empty file says (no key seen): no fsync.
        _write_atomic(self._part_file(name, ".bits"), bytes(bits), durable=bits.count(0) != len(bits))
        self._bits[part] = bits
        self._dirty_bits.discard(part)
        self.state["parts"][str(part)] = name

    def stage_part(self, name: str, blob: bytes, bits: bytes) -> None:
        """Write the files of a part a push is building, before its commit: they are used
        only once :meth:`use_staged_part` names them (and swept at the next sync if the
        commit never happens). Safe from another thread: it touches no shared state (the
        file is open for writing already, as a push has synced it)."""
        tmp = self._part_file(name, f".tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(blob)
        os.replace(tmp, self._part_file(name))
        _write_atomic(self._part_file(name, ".bits"), bits)

    def use_staged_part(self, part: int, name: str, bits: bytes) -> bool:
        """Make a staged part base part ``part`` (False if its files are gone since)."""
        if not (self._part_file(name).exists() and self._part_file(name, ".bits").exists()):
            return False
        self._bits[part] = bytearray(bits)
        self._dirty_bits.discard(part)
        self.state["parts"][str(part)] = name
        return True

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
        files = []
        for part in sorted(self._dirty_bits):
            name = self.state["parts"].get(str(part))
            if name is not None:
                files.append((self._part_file(name, ".bits"), bytes(self._bits.get(part, b""))))
        _write_atomic_many(files)
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

    def mark_rows_present(self, parts: Sequence[int], rows: Sequence[int]) -> None:
        """:meth:`mark_present` for many keys: the ``rows[i]``-th key of base part ``parts[i]``."""
        self._need_write()
        bits_of = {p: self.bits(p) for p in set(parts)}
        for p, row in zip(parts, rows, strict=True):
            bits = bits_of[p]
            try:
                bits[row >> 3] |= 1 << (row & 7)
            except IndexError:
                bits.extend(bytes((row >> 3) + 1 - len(bits)))
                bits[row >> 3] |= 1 << (row & 7)
        self._dirty_bits.update(bits_of)

    # -- the data file ---------------------------------------------------------------------

    @property
    def codec(self) -> Codec:
        """How this file's values are encoded, by the name the remote head records."""
        serializer = _serializers(self._db)[1]
        return Codec(serializer_name(serializer), serializer.dumps, serializer.loads)

    def _flush(self) -> None:
        """Write booklet's buffered entries out (through the fast path when it can)."""
        db = self._db
        if self._fast and db.writable and db._buffer_index:
            with db._thread_lock:
                _flush(db)
        db.sync()

    def __len__(self) -> int:
        # booklet counts buffered writes only once they are flushed.
        self._flush()
        return len(self._db)

    def __contains__(self, key: str) -> bool:
        return key in self._db

    def _checked(self, items: Iterator[Any]) -> Iterator[Any]:
        """booklet's iteration, with what damage makes it raise turned into an ebooklet error."""
        try:
            yield from items
        except (ValueError, IndexError, OverflowError, struct.error) as exc:  # UnicodeDecodeError too
            raise self._found_damaged(exc) from exc

    def keys(self) -> Iterator[str]:
        return self._checked(self._db.keys())

    def timestamps(self) -> Iterator[tuple[str, int]]:
        return self._checked(self._db.timestamps())

    def raw_items(self) -> Iterator[tuple[str, int, bytes]]:
        """(key, timestamp, serialized value) of every key in the data file."""
        return self._checked(self._db.timestamps(include_value=True, decode_value=False))

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self._db.get(key, default)
        except (KeyError, UnicodeEncodeError):
            raise
        except Exception as exc:
            # The stored bytes did not decode: check them against the journal when the key
            # is pending (and restore them); otherwise they are damaged or foreign.
            got = self.get_raw(key)
            if got is not None and self.disagrees(key, *got) and self.restore(key):
                return self._db.get(key, default)
            if got is not None and key in self._journal.where:
                raise  # the bytes are the ones written: the serializer's own failure
            raise self._found_damaged(exc, key) from exc

    def get_timestamp(self, key: str) -> int | None:
        return self._db.get_timestamp(key)

    def get_raw(self, key: str) -> tuple[int, bytes] | None:
        return self._db.get_timestamp(key, include_value=True, decode_value=False)

    def set(self, key: str, value: Any, timestamp: int | None = None) -> None:
        """A user write."""
        # The hot path of local writes: kept to what each write must do.
        raw = self._dumps(value)
        if type(raw) is not bytes and isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        if timestamp is None:
            timestamp = time.time_ns() // 1000
        self.set_raw(key, raw, timestamp)

    def set_raw(self, key: str, raw: bytes, timestamp: int) -> None:
        """A user write of an already serialized value."""
        # The hot path of local writes: kept to what each write must do.
        db = self._db
        if not self._unsynced or not db.writable:
            self._before_write()
        if self._fast:
            _put(db, key, raw, timestamp)
        else:
            db.set(key, raw, timestamp, False)
        self._journal.write(key, timestamp, raw)
        self.touched[key] = None

    def set_timestamp(self, key: str, timestamp: int) -> None:
        self._before_write()
        self._db.set_timestamp(key, timestamp)
        got = self.get_raw(key)
        if got is not None:
            self._journal.write(key, timestamp, got[1])
            self.touched[key] = None

    def delete(self, key: str, deleted_at: int) -> None:
        """A user delete of a key that may or may not be in the data file."""
        self._before_write()
        with contextlib.suppress(KeyError):
            del self._db[key]
        self._journal.delete(key, deleted_at)
        self._mirror.delete(key, deleted_at)
        self.touched[key] = deleted_at

    def put_raw(self, key: str, raw: bytes, timestamp: int) -> None:
        """Store a value that came from the remote (not a user change)."""
        self._before_write()
        if self._fast:
            _put(self._db, key, raw, timestamp)
        else:
            self._db.set(key, raw, timestamp=timestamp, encode_value=False)

    def put_raw_many(self, items: Iterable[tuple[str, bytes, int]]) -> None:
        """:meth:`put_raw` for many ``(key, value, timestamp)``, in order: written straight
        into the data file's layout (:func:`_write_many`) when booklet's is the one known."""
        self._before_write()
        db = self._db
        if self._fast:
            _write_many(db, items)
        else:
            for key, raw, ts in items:
                db.set(key, raw, ts, False)

    def drop(self, key: str) -> None:
        """Remove a cached copy (not a user change)."""
        self._before_write()
        with contextlib.suppress(KeyError):
            del self._db[key]

    def get_metadata(self) -> tuple[Any, int] | None:
        return self._db.get_metadata(include_timestamp=True)

    def set_metadata(self, data: Any, timestamp: int | None = None) -> None:
        self._before_write()
        timestamp = now_us() if timestamp is None else timestamp
        self._db.set_metadata(data, timestamp)
        stored = self._db.get_metadata()  # as booklet encoded it: plain JSON
        self._journal.set_metadata(stored, timestamp)

    def prune(self) -> int:
        self._before_write()
        return self._db.prune()

    # -- durability ------------------------------------------------------------------------

    def sync(self) -> None:
        """Make every change so far durable, and record the state that goes with it."""
        if not self._db.writable:
            clean = not (self._journal.dirty or self._mirror.dirty or self._dirty_bits or self._unsynced)
            if clean and json.dumps(self.state) == self._saved_state:
                return  # a reader that changed nothing writes nothing
            self._need_write()
        self._flush()
        _fsync_path(self.path)
        self._journal.flush()
        self._mirror.flush()
        if self._journal.wasteful:
            self._rewrite_journal()
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
            self.abandon()

    def abandon(self) -> None:
        """Close without syncing (used when opening failed half way)."""
        try:
            if self._db is not None:
                self._db.close()
        finally:
            self._journal.close()
            self._mirror.close()
