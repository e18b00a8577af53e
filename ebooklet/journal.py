"""The journal of pending changes, kept beside a local data file.

Every key written or deleted through ebooklet since the last push is appended here, with the
serialized value of each write, in records that each carry their own checksum. The journal
is what makes a change acknowledged by ``sync()``/``close()`` survive damage to the data file:
the data file is a plain booklet file (no checksums, updated in place), the journal is
append-only and checked record by record when read.

A record::

    magic b"\\xebJ" | kind u8 | flags u8 | payload length u32 | payload | checksum (8 bytes)

(little-endian; the checksum is blake2b-64 of everything before it). Kinds:

``B`` base      JSON: the remote head at the last sync and what goes with it (so that the
                sync state can be rebuilt if ``state.json`` is lost), and the journal's id.
                The first record of a journal; written again only when the journal is
                rewritten.
``W`` write     timestamp u64 | blake2b-128 content hash | key length u32 | key | value
``D`` delete    deletion time u64 | key length u32 | key  (flag 1: inferred by a scan of
                the data file, not a ``del`` through ebooklet)
``M`` metadata  timestamp u64 | JSON

Reading stops trusting a record when its checksum fails. A bad record past the length
acknowledged by the last ``sync()`` (recorded in the sync state) is a *torn tail*: a write
that was never acknowledged; it is dropped. A bad record within the acknowledged length is
*damage*: reading resumes at the next intact record, and the caller is told.

The journal is rewritten (atomically: temporary file, fsync, rename) when the base changes
(after a push or pull) with only what is still pending, and compacted when overwritten
records make up most of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import struct
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

from .format import HASH_LEN, value_hash

MAGIC = b"\xebJ"
_HEAD = struct.Struct("<2sBBI")
_SUM_LEN = 8
_OVERHEAD = _HEAD.size + _SUM_LEN
_WRITE = struct.Struct(f"<Q{HASH_LEN}sI")
_DELETE = struct.Struct("<QI")
_META = struct.Struct("<Q")

BASE, WRITE, DELETE, META = (ord(c) for c in "BWDM")
#: Flag of a delete record: the delete was inferred from the data file, not asked for.
INFERRED = 1
#: Appended records are written to the file once this many bytes are buffered.
_BUFFER = 1 << 20


def _checksum(head: bytes, payload: bytes | memoryview) -> bytes:
    h = hashlib.blake2b(head, digest_size=_SUM_LEN)
    h.update(payload)
    return h.digest()


def _record(kind: int, flags: int, payload: bytes) -> bytes:
    head = _HEAD.pack(MAGIC, kind, flags, len(payload))
    return head + payload + _checksum(head, payload)


class Pending(NamedTuple):
    """The last record of a key: a write (``hash`` set) or a delete (``hash`` None)."""

    timestamp: int
    hash: bytes | None
    flags: int
    offset: int  # of the record in the journal
    size: int

    @property
    def deleted(self) -> bool:
        return self.hash is None

    @property
    def inferred(self) -> bool:
        return bool(self.flags & INFERRED)


class Damage(NamedTuple):
    """Bytes of the journal that failed their check within its acknowledged length."""

    start: int
    end: int


class Journal:
    """One journal file (or its mirror): its records indexed by key, and appends to it."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.base: dict[str, Any] | None = None
        self.entries: dict[str, Pending] = {}
        self.meta: Pending | None = None
        self.damage: list[Damage] = []
        self.missing = False
        self.torn = 0  # bytes of an unacknowledged torn tail that were dropped
        self._fd: int | None = None
        self._file_len = 0
        self._buf = bytearray()
        self._live = 0
        #: Bytes known to be on disk (fsynced, or found there when read).
        self.durable = 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def id(self) -> str | None:
        return self.base.get("id") if self.base else None

    @property
    def size(self) -> int:
        return self._file_len + len(self._buf)

    @property
    def dirty(self) -> bool:
        return bool(self._buf)

    def load(self, acknowledged: tuple[str, int] | None) -> None:
        """Read and check every record. ``acknowledged`` is (journal id, length) as recorded
        at the last sync: records within it must be intact."""
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            self.missing = True
            return
        except PermissionError:
            self._fd = os.open(self.path, os.O_RDONLY)  # a reader without write access
        data = _read_all(self._fd)
        pos, end = 0, len(data)
        ack = -1  # the acknowledged length of this very journal; -1 while unknown
        torn = False
        while pos < end:
            rec = _parse(data, pos)
            if rec is not None:
                self._apply(data, pos, *rec)
                if pos == 0 and acknowledged is not None and acknowledged[0] == self.id:
                    ack = acknowledged[1]
                pos += _OVERHEAD + rec[2]
                continue
            if pos >= ack >= 0:
                torn = True  # records that were never acknowledged: a torn tail
                break
            resume = _resync(data, pos + 1)
            if resume is None:
                if pos < ack or (pos == 0 and acknowledged is not None):
                    self.damage.append(Damage(pos, end))  # acknowledged records are lost
                else:
                    torn = True  # nothing says these bytes were ever acknowledged
                break
            self.damage.append(Damage(pos, resume))
            pos = resume
        if ack > end:
            self.damage.append(Damage(end, ack))  # cut short
        if torn:
            self.torn = end - pos
            if not self.damage:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, pos)  # later appends follow the last intact record
                end = pos
        self._file_len = self.durable = end

    def _apply(self, data: memoryview, pos: int, kind: int, flags: int, n: int) -> None:
        body = pos + _HEAD.size
        size = _OVERHEAD + n
        if kind == BASE:
            self.base = json.loads(bytes(data[body : body + n]))
            self._live = size + sum(e.size for e in self.entries.values())
        elif kind == WRITE:
            ts, h, klen = _WRITE.unpack_from(data, body)
            key = bytes(data[body + _WRITE.size : body + _WRITE.size + klen]).decode("utf-8")
            self._set(key, Pending(ts, h, flags, pos, size))
        elif kind == DELETE:
            ts, klen = _DELETE.unpack_from(data, body)
            key = bytes(data[body + _DELETE.size : body + _DELETE.size + klen]).decode("utf-8")
            self._set(key, Pending(ts, None, flags, pos, size))
        elif kind == META:
            (ts,) = _META.unpack_from(data, body)
            if self.meta is not None:
                self._live -= self.meta.size
            self.meta = Pending(ts, None, flags, pos, size)
            self._live += size

    def _set(self, key: str, entry: Pending) -> None:
        old = self.entries.get(key)
        if old is not None:
            self._live -= old.size
        self.entries[key] = entry
        self._live += entry.size

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            entry = self.entries.pop(key, None)
            if entry is not None:
                self._live -= entry.size

    def record(self, entry: Pending) -> bytes:
        """The bytes of a record of this journal."""
        start = entry.offset
        if start >= self._file_len:
            return bytes(self._buf[start - self._file_len : start - self._file_len + entry.size])
        assert self._fd is not None
        return os.pread(self._fd, entry.size, start)

    def value(self, key: str) -> tuple[int, bytes] | None:
        """(timestamp, serialized value) of the pending write of ``key``, checked."""
        entry = self.entries.get(key)
        if entry is None or entry.deleted:
            return None
        rec = self.record(entry)
        parsed = _parse(memoryview(rec), 0)
        if parsed is None:
            return None  # damaged since it was read: the caller treats the value as lost
        klen = _WRITE.unpack_from(rec, _HEAD.size)[2]
        raw = rec[_HEAD.size + _WRITE.size + klen : _HEAD.size + parsed[2]]
        return entry.timestamp, raw

    def metadata(self) -> tuple[Any, int] | None:
        if self.meta is None:
            return None
        rec = self.record(self.meta)
        parsed = _parse(memoryview(rec), 0)
        if parsed is None:
            return None
        return json.loads(rec[_HEAD.size + _META.size : _HEAD.size + parsed[2]]), self.meta.timestamp

    # -- writing ---------------------------------------------------------------------------

    def _append(self, kind: int, flags: int, payload: bytes) -> Pending:
        rec = _record(kind, flags, payload)
        offset = self.size
        self._buf += rec
        if len(self._buf) >= _BUFFER:
            self._write_buffer()
        return Pending(0, None, flags, offset, len(rec))

    def write(self, key: str, timestamp: int, raw: bytes, flags: int = 0) -> None:
        k = key.encode("utf-8")
        h = value_hash(raw)
        at = self._append(WRITE, flags, _WRITE.pack(timestamp, h, len(k)) + k + raw)
        self._set(key, at._replace(timestamp=timestamp, hash=h))

    def delete(self, key: str, deleted_at: int, flags: int = 0) -> None:
        k = key.encode("utf-8")
        at = self._append(DELETE, flags, _DELETE.pack(deleted_at, len(k)) + k)
        self._set(key, at._replace(timestamp=deleted_at))

    def set_metadata(self, data: Any, timestamp: int) -> None:
        at = self._append(META, 0, _META.pack(timestamp) + json.dumps(data).encode())
        if self.meta is not None:
            self._live -= self.meta.size
        self.meta = at._replace(timestamp=timestamp)
        self._live += at.size

    def _write_buffer(self) -> None:
        if not self._buf:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        done, size = 0, len(self._buf)
        with memoryview(self._buf) as view:
            while done < size:
                with view[done:] as rest:
                    done += os.write(self._fd, rest)
        self._file_len += size
        self._buf.clear()

    def flush(self) -> None:
        """Make every appended record durable."""
        if self._buf:
            self._write_buffer()
            assert self._fd is not None
            os.fsync(self._fd)
            self.durable = self._file_len

    @property
    def wasteful(self) -> bool:
        """Whether overwritten records make up most of the journal."""
        return self.size > 2 * self._live + (8 << 20)

    def rewrite(self, base: dict[str, Any], keys: Iterable[str], source: Journal | None = None) -> None:
        """Replace the journal with a new one, atomically: ``base``, then the records of
        ``keys`` (taken from ``source``, this journal by default) and this journal's metadata."""
        src = source or self
        base = {**base, "id": uuid.uuid4().hex}
        tmp = self.path.with_name(self.path.name + ".tmp")
        entries: dict[str, Pending] = {}
        meta = None
        with open(tmp, "wb") as f:
            first = _record(BASE, 0, json.dumps(base).encode())
            f.write(first)
            pos = len(first)
            kept = [(key, src.entries[key]) for key in keys if key in src.entries]
            if source is None and self.meta is not None:
                kept.append(("", self.meta))
            for key, entry in kept:
                rec = src.record(entry)
                if _parse(memoryview(rec), 0) is None:
                    continue  # damaged since it was read: the caller's scan finds the change again
                f.write(rec)
                if key:
                    entries[key] = entry._replace(offset=pos)
                else:
                    meta = entry._replace(offset=pos)
                pos += len(rec)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.close()
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self.base = base
        self.entries = entries
        self.meta = meta
        self._buf.clear()
        self._file_len = self._live = self.durable = pos
        self.damage = []
        self.missing = False
        self.torn = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_all(fd: int) -> memoryview:
    size = os.fstat(fd).st_size
    chunks = []
    pos = 0
    while pos < size:
        chunk = os.pread(fd, size - pos, pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return memoryview(b"".join(chunks))


def _parse(data: memoryview, pos: int) -> tuple[int, int, int] | None:
    """(kind, flags, payload length) of an intact record at ``pos``, or None."""
    if pos + _OVERHEAD > len(data):
        return None
    magic, kind, flags, n = _HEAD.unpack_from(data, pos)
    if magic != MAGIC or kind not in (BASE, WRITE, DELETE, META):
        return None
    end = pos + _HEAD.size + n
    if end + _SUM_LEN > len(data):
        return None
    head = bytes(data[pos : pos + _HEAD.size])
    if _checksum(head, data[pos + _HEAD.size : end]) != data[end : end + _SUM_LEN]:
        return None
    try:
        if kind == WRITE:
            klen = _WRITE.unpack_from(data, pos + _HEAD.size)[2]
            bytes(data[pos + _HEAD.size + _WRITE.size : pos + _HEAD.size + _WRITE.size + klen]).decode()
        elif kind == DELETE:
            klen = _DELETE.unpack_from(data, pos + _HEAD.size)[1]
            bytes(data[pos + _HEAD.size + _DELETE.size : pos + _HEAD.size + _DELETE.size + klen]).decode()
    except (struct.error, UnicodeDecodeError):
        return None
    return kind, flags, n


def _resync(data: memoryview, start: int) -> int | None:
    """The position of the next intact record at or after ``start``."""
    raw = data.obj if isinstance(data.obj, bytes) else bytes(data)
    pos = start
    while True:
        pos = raw.find(MAGIC, pos)
        if pos < 0:
            return None
        if _parse(data, pos) is not None:
            return pos
        pos += 1


# -- the touched.log of ebooklet 0.6.0 (state version 1) ---------------------------------

#: The deletion-time field of a touched.log record that marks a write (not a delete).
LEGACY_WRITTEN = 0xFFFFFFFFFFFFFFFF


def read_legacy_touched(path: pathlib.Path) -> tuple[dict[str, int | None], bool]:
    """The keys of a version-1 ``touched.log`` (key -> deletion time, None for a write), and
    whether all of it could be read (it has no checksums: undecodable keys mean damage)."""
    touched: dict[str, int | None] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return touched, True
    pos = 0
    # A torn record at the end belongs to a sync that never returned: ignore it.
    while pos + 12 <= len(data):
        ts, n = struct.unpack_from("<QI", data, pos)
        if pos + 12 + n > len(data):
            break
        try:
            key = data[pos + 12 : pos + 12 + n].decode("utf-8")
        except UnicodeDecodeError:
            return touched, False
        touched[key] = None if ts == LEGACY_WRITTEN else ts
        pos += 12 + n
    return touched, True
