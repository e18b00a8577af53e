"""The journal of pending changes, kept beside a local data file.

Every key written or deleted through ebooklet since the last push is recorded here, with the
serialized value of each write. The journal is what makes a change acknowledged by
``sync()``/``close()`` survive damage to the data file: the data file is a plain booklet file
(no checksums, updated in place), the journal is append-only and checked when read.

The file is a sequence of records::

    magic b"\\xebJ" | kind u8 | flags u8 | payload length u32 | payload | checksum (8 bytes)

(little-endian; the checksum is blake2b-64 of everything before it). Kinds:

``B`` base      JSON: the remote head at the last sync and what goes with it (so that the
                sync state can be rebuilt if ``state.json`` is lost), and the journal's id.
                The first record; written again only when the journal is rewritten.
``C`` changes   msgpack: a list of ``[key, timestamp, value, flags]``, one per write or
                delete (value nil), in the order they were made. Flag 1 marks a delete
                *inferred* from a key missing in the data file, not asked for with ``del``.
                One record per ``sync()`` (and per MiB of changes between syncs): a
                checksum per batch costs a fraction of one per change.
``M`` metadata  JSON: ``[metadata, timestamp]``.

The last change of a key is its pending change. Reading checks every record: a bad one past
the length acknowledged by the last ``sync()`` (kept in the sync state) is a *torn tail*,
changes that were never acknowledged, and is dropped. A bad one within the acknowledged
length is *damage*: reading resumes at the next intact record and the caller is told.

The journal is rewritten (atomically: temporary file, fsync, rename) when the base changes,
after a push or pull, with only what is still pending, and compacted when overwritten
changes make up most of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import pathlib
import struct
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import msgpack

MAGIC = b"\xebJ"
_HEAD = struct.Struct("<2sBBI")
_SUM_LEN = 8
_OVERHEAD = _HEAD.size + _SUM_LEN

BASE, CHANGES, META = (ord(c) for c in "BCM")
#: Flag of a delete: inferred from the data file, not asked for.
INFERRED = 1
#: A batch of changes is sealed into a record once its values reach this many bytes.
_BATCH_BYTES = 1 << 20
#: Unpacked batches kept in memory for reading values back.
_CACHE_BYTES = 16 << 20

_blake2b = hashlib.blake2b
_KEY = operator.itemgetter(0)


def _checksum(head: bytes, payload: bytes | memoryview) -> bytes:
    h = _blake2b(head, digest_size=_SUM_LEN)
    h.update(payload)
    return h.digest()


def _record(kind: int, payload: bytes) -> bytes:
    head = _HEAD.pack(MAGIC, kind, 0, len(payload))
    return head + payload + _checksum(head, payload)


class Pending(NamedTuple):
    """A key's pending change: a write (``value`` set) or a delete (``value`` None)."""

    timestamp: int
    value: bytes | None
    flags: int

    @property
    def deleted(self) -> bool:
        return self.value is None

    @property
    def inferred(self) -> bool:
        return bool(self.flags & INFERRED)


class Damage(NamedTuple):
    """Bytes of the journal that failed their check within its acknowledged length."""

    start: int
    end: int


class Journal:
    """One journal file (or its mirror): the pending change of each key, and appends."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.base: dict[str, Any] | None = None
        self.meta: tuple[Any, int] | None = None
        self.damage: list[Damage] = []
        self.missing = False
        self.torn = 0  # bytes of an unacknowledged torn tail that were dropped
        #: key -> where its last change is: batch number << 32 | index in the batch.
        self.where: dict[str, int] = {}
        self._batches: list[int] = []  # record offset of each sealed batch
        self._batch: list[tuple[str, int, bytes | None, int]] = []  # the open batch
        self._batch_bytes = 0
        self._cache: OrderedDict[int, list[Any]] = OrderedDict()
        self._cache_bytes = 0
        self._changes = 0  # changes recorded, overwritten ones included
        self._fd: int | None = None
        self._file_len = 0
        self._buf = bytearray()
        #: Bytes known to be on disk (fsynced, or found there when read).
        self.durable = 0

    @property
    def id(self) -> str | None:
        return self.base.get("id") if self.base else None

    @property
    def dirty(self) -> bool:
        return bool(self._batch or self._buf)

    # -- reading ---------------------------------------------------------------------------

    def load(self, acknowledged: tuple[str, int] | None) -> None:
        """Read and check every record. ``acknowledged`` is (journal id, length) as recorded
        at the last sync: the records within it must be intact."""
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
                self._apply(pos, rec[0], rec[2], len(rec[1]))
                if pos == 0 and acknowledged is not None and acknowledged[0] == self.id:
                    ack = acknowledged[1]
                pos += _OVERHEAD + len(rec[1])
                continue
            if pos >= ack >= 0:
                torn = True  # changes that were never acknowledged: a torn tail
                break
            resume = _resync(data, pos + 1)
            if resume is None:
                if pos < ack or (pos == 0 and acknowledged is not None):
                    self.damage.append(Damage(pos, end))  # acknowledged changes are lost
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

    def _apply(self, pos: int, kind: int, value: Any, size: int) -> None:
        if kind == BASE:
            self.base = value
        elif kind == META:
            self.meta = (value[0], value[1])
        elif kind == CHANGES:
            bno = len(self._batches)
            self._batches.append(pos)
            first = bno << 32
            for i, item in enumerate(value):
                self.where[item[0]] = first | i
            self._changes += len(value)
            self._remember(bno, value, size)

    def _remember(self, bno: int, items: Any, size: int) -> None:
        self._cache[bno] = (items, size)
        self._cache_bytes += size
        while self._cache_bytes > _CACHE_BYTES and len(self._cache) > 1:
            _, (_, old) = self._cache.popitem(last=False)
            self._cache_bytes -= old

    def _items(self, bno: int) -> Any:
        if bno == len(self._batches):
            return self._batch
        cached = self._cache.get(bno)
        if cached is not None:
            return cached[0]
        rec = self._read_record(self._batches[bno])
        if rec is None:
            return None  # damaged since it was read
        self._remember(bno, rec[2], len(rec[1]))
        return rec[2]

    def _read_record(self, offset: int, check_items: bool = True) -> tuple[int, memoryview, Any] | None:
        if offset >= self._file_len:
            data = memoryview(bytes(self._buf[offset - self._file_len :]))
        else:
            assert self._fd is not None
            head = os.pread(self._fd, _HEAD.size, offset)
            if len(head) < _HEAD.size:
                return None
            n = _HEAD.unpack(head)[3]
            data = memoryview(os.pread(self._fd, _OVERHEAD + n, offset))
        return _parse(data, 0, check_items)

    def get(self, key: str) -> Pending | None:
        """The pending change of ``key``, checked (None: none, or unreadable since)."""
        at = self.where.get(key)
        if at is None:
            return None
        items = self._items(at >> 32)
        if items is None:
            return None
        _, ts, value, flags = items[at & 0xFFFFFFFF]
        return Pending(ts, value, flags)

    def pending_batches(self) -> Iterator[list[tuple[str, int, bytes | None, int]]]:
        """Every key's pending change as ``(key, timestamp, value, flags)``, in the order they
        were made, a batch at a time, reading the file once from start to end (this is how a
        push streams the changes it sends; one batch is in memory at a time). A batch damaged
        since it was read is skipped: its keys are missing from the result."""
        where = self.where
        for bno in range(len(self._batches) + 1):
            if bno == len(self._batches):
                items: Any = self._batch
            else:
                cached = self._cache.get(bno)
                if cached is not None:
                    items = cached[0]
                else:
                    # Checked when the journal was read (or written by this process): the
                    # checksum is what tells the batch is still the one it was.
                    rec = self._read_record(self._batches[bno], check_items=False)
                    if rec is None:
                        continue
                    items = rec[2]
            first = bno << 32
            at = list(map(where.get, map(_KEY, items)))
            if at == list(range(first, first + len(items))):
                yield list(items)  # no change of this batch was overwritten since
            else:
                out = [item for i, item in enumerate(items) if at[i] == first | i]
                if out:
                    yield out

    # -- writing ---------------------------------------------------------------------------

    def write(self, key: str, timestamp: int, raw: bytes, flags: int = 0) -> None:
        batch = self._batch
        self.where[key] = len(self._batches) << 32 | len(batch)
        batch.append((key, timestamp, raw, flags))
        self._batch_bytes += len(raw)
        if self._batch_bytes >= _BATCH_BYTES:
            self._seal()

    def delete(self, key: str, deleted_at: int, flags: int = 0) -> None:
        batch = self._batch
        self.where[key] = len(self._batches) << 32 | len(batch)
        batch.append((key, deleted_at, None, flags))

    def set_metadata(self, data: Any, timestamp: int) -> None:
        self._seal()
        self._buf += _record(META, json.dumps([data, timestamp]).encode())
        self.meta = (data, timestamp)

    def forget(self, keys: Iterable[str] | None) -> None:
        """Stop listing the pending changes of ``keys`` (None: all)."""
        if keys is None:
            self.where.clear()
            return
        for key in keys:
            self.where.pop(key, None)

    def _seal(self) -> None:
        """Close the open batch into a record (written to the file, not yet fsynced)."""
        batch = self._batch
        if not batch:
            return
        payload = msgpack.packb(batch, use_bin_type=True)
        offset = self._file_len + len(self._buf)
        self._buf += _record(CHANGES, payload)
        self._batches.append(offset)
        self._changes += len(batch)
        self._batch = []
        self._batch_bytes = 0
        if len(self._buf) >= _BATCH_BYTES:
            self._write_buffer()

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
        """Make every change recorded so far durable."""
        self._seal()
        if self._buf:
            self._write_buffer()
            assert self._fd is not None
            os.fsync(self._fd)
            self.durable = self._file_len

    @property
    def wasteful(self) -> bool:
        """Whether overwritten changes make up most of the journal."""
        return self._changes > 2 * len(self.where) + 10_000

    def rewrite(self, base: dict[str, Any], keys: Iterable[str], source: Journal | None = None) -> None:
        """Replace the journal with a new one, atomically: ``base``, then the pending
        changes of ``keys`` (taken from ``source``, this journal by default) in batches, and
        this journal's metadata."""
        src = source or self
        base = {**base, "id": uuid.uuid4().hex}
        tmp = self.path.with_name(self.path.name + ".tmp")
        where: dict[str, int] = {}
        batches: list[int] = []
        batch: list[tuple[str, int, bytes | None, int]] = []
        size = 0
        with open(tmp, "wb") as f:
            pos = f.write(_record(BASE, json.dumps(base).encode()))

            def seal() -> None:
                nonlocal pos, batch, size
                if batch:
                    batches.append(pos)
                    pos += f.write(_record(CHANGES, msgpack.packb(batch, use_bin_type=True)))
                    batch, size = [], 0

            for key in keys:
                change = src.get(key)
                if change is None:
                    continue  # unreadable since it was read: the caller's scan finds it again
                where[key] = len(batches) << 32 | len(batch)
                batch.append((key, change.timestamp, change.value, change.flags))
                size += len(change.value or b"")
                if size >= _BATCH_BYTES:
                    seal()
            seal()
            if source is None and self.meta is not None:
                pos += f.write(_record(META, json.dumps(list(self.meta)).encode()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.close()
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self.base = base
        self.meta = self.meta if source is None else None
        self.where = where
        self._batches = batches
        self._batch = []
        self._batch_bytes = 0
        self._cache.clear()
        self._cache_bytes = 0
        self._changes = len(where)
        self._buf.clear()
        self._file_len = self.durable = pos
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


def _parse(data: memoryview, pos: int, check_items: bool = True) -> tuple[int, memoryview, Any] | None:
    """(kind, payload, decoded payload) of an intact record at ``pos``, or None."""
    if pos + _OVERHEAD > len(data):
        return None
    magic, kind, _flags, n = _HEAD.unpack_from(data, pos)
    if magic != MAGIC or kind not in (BASE, CHANGES, META):
        return None
    end = pos + _HEAD.size + n
    if end + _SUM_LEN > len(data):
        return None
    head = bytes(data[pos : pos + _HEAD.size])
    payload = data[pos + _HEAD.size : end]
    if _checksum(head, payload) != data[end : end + _SUM_LEN]:
        return None
    try:
        if kind == CHANGES:
            value = msgpack.unpackb(payload, raw=False, use_list=False)
            ok = isinstance(value, tuple) and (not check_items or all(_is_change(it) for it in value))
        else:
            value = json.loads(bytes(payload))
            ok = isinstance(value, dict) if kind == BASE else isinstance(value, list) and len(value) == 2
    except (ValueError, msgpack.UnpackException):
        return None
    return (kind, payload, value) if ok else None


def _is_change(item: Any) -> bool:
    return (
        isinstance(item, tuple) and len(item) == 4 and isinstance(item[0], str)
        and isinstance(item[1], int) and isinstance(item[2], (bytes, type(None)))
        and isinstance(item[3], int)
    )


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
