"""The journal of pending changes: a write-ahead log kept beside a local data file.

Every key written or deleted through ebooklet since the last push is recorded here, with the
serialized value of each write, *before* the write or delete returns: each change is one
checksummed record handed to the operating system with one ``write`` (or, for a large value,
``writev``) call. A change that
``db[k] = v`` or ``del db[k]`` acknowledged therefore survives the interpreter ending in any
way and a SIGKILL of the process (the kernel holds the bytes); ``sync()`` and ``close()``
fsync the journal, after which it survives a power cut too (RocksDB's default, as
docs/usage.rst states). The data file is a cache of the journal plus the remote: opening
after a crash replays what the journal holds and the data file lacks, of the changes made
since the data file's last sync (the sync state's ``synced_journal``).

The file is a sequence of records (their bytes and checks are :mod:`.records`'s). Kinds:

``B`` base      JSON: the remote head at the last sync and what goes with it (so that the
                sync state can be rebuilt if ``state.json`` is lost), and the journal's id.
                The first record; written again only when the journal is rewritten.
``W`` change    one write or delete, written through: ``key length u16 | timestamp u64 |
                key | value`` (no value for a delete). Flags: :data:`INFERRED` (a delete
                found rather than asked for), :data:`DELETE`.
``C`` changes   msgpack: a list of ``[key, timestamp, value, flags]`` (value nil for a
                delete). Written when the journal is rewritten (compactly, many changes to
                a record), and by ebooklet 0.6 journals (state version 2) for every change.
``M`` metadata  JSON: ``[metadata, timestamp]``.

The last change of a key is its pending change. Reading checks every record: a bad one past
the length acknowledged by the last ``sync()`` (kept in the sync state) is a *torn tail*,
changes whose call never returned, and is cut off, so that later appends follow the last
intact record. A bad one within the acknowledged length is *damage*: reading resumes at the
next intact record and the caller is told.

The journal is rewritten (atomically: temporary file, fsync, rename, fsync of the folder)
when the base changes, after a push or pull, with only what is still pending, and compacted
when overwritten changes make up most of it.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import pathlib
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import msgpack

from ..files import fsync_dir
from .records import (
    BASE,
    BATCH_BYTES,
    BATCH_ITEMS,
    CHANGES,
    DELETE,
    HEAD,
    INFERRED,
    META,
    ONE,
    OVERHEAD,
    Change,
    Reader,
    change,
    parse,
    record,
    scan,
)

__all__ = ["INFERRED", "Damage", "Journal", "Pending", "Touched"]

#: Unpacked batches kept in memory for reading values back.
_CACHE_BYTES = 16 << 20
#: Where a pending change is: its record's offset, shifted, and its index in the record.
_SHIFT = 24
_INDEX = (1 << _SHIFT) - 1

_KEY = operator.itemgetter(0)


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


class Touched(Mapping[str, "int | None"]):
    """The keys a journal holds a pending change of: key -> None for a write, or the time of
    a delete. A view of the journal, not a copy: it changes as the journal does."""

    def __init__(self, journal: Journal) -> None:
        self._where = journal.where
        self._deletes = journal.deletes

    def __getitem__(self, key: str) -> int | None:
        if key not in self._where:
            raise KeyError(key)
        return self._deletes.get(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self._where:
            return default
        return self._deletes.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._where))

    def __len__(self) -> int:
        return len(self._where)

    @property
    def n_deletes(self) -> int:
        return len(self._deletes)


class Journal:
    """One journal file (or its mirror): the pending change of each key, and appends."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.base: dict[str, Any] | None = None
        self.meta: tuple[Any, int] | None = None
        self.damage: list[Damage] = []
        self.missing = False
        self.torn = 0  # bytes of an unacknowledged torn tail that were cut off
        #: key -> where its last change is (see _SHIFT).
        self.where: dict[str, int] = {}
        #: key -> time of its pending delete (the keys of ``where`` that are deletes).
        self.deletes: dict[str, int] = {}
        self._cache: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._cache_bytes = 0
        self._changes = 0  # changes recorded, overwritten ones included
        self._fd: int | None = None
        self._file_len = 0
        #: Bytes known to be on disk (fsynced, or found there when read).
        self.durable = 0

    @property
    def id(self) -> str | None:
        return self.base.get("id") if self.base else None

    @property
    def dirty(self) -> bool:
        """Whether changes were written since the last fsync."""
        return self._file_len > self.durable

    def touched(self) -> Touched:
        return Touched(self)

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
        reader = Reader(self._fd, os.fstat(self._fd).st_size)
        pos, end = 0, reader.end
        ack = -1  # the acknowledged length of this very journal; -1 while unknown
        torn = False
        while pos < end:
            got = reader.record(pos)  # where each change is, not its value
            if got is not None:
                self._apply(pos, got[1])
                if pos == 0 and acknowledged is not None and acknowledged[0] == self.id:
                    ack = acknowledged[1]
                pos += got[0]
                continue
            # Past the acknowledged length too, an intact record further on means damage
            # (changes written through since the last sync were acknowledged); only bad
            # bytes at the very end are a torn tail, a write whose call never returned.
            resume = reader.resync(pos + 1)
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
        elif end == 0 and acknowledged is not None and acknowledged[1] > 0:
            # Emptied: no record says which journal this was, but a journal is only ever
            # replaced whole (renamed into place), never left empty after a sync wrote to it.
            self.damage.append(Damage(0, acknowledged[1]))
        if torn:
            self.torn = end - pos
            if not self.damage:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, pos)  # later appends follow the last intact record
                    end = pos
        self._file_len = self.durable = end

    def _apply(self, pos: int, rec: tuple[int, memoryview, Any, int]) -> None:
        kind, payload, value, flags = rec
        if kind == ONE:
            key, ts, _ = value
            self.where[key] = pos << _SHIFT
            if flags & DELETE:
                self.deletes[key] = ts
            else:
                self.deletes.pop(key, None)
            self._changes += 1
        elif kind == BASE:
            self.base = value
        elif kind == META:
            self.meta = (value[0], value[1])
        elif kind == CHANGES:
            first = pos << _SHIFT
            for i, item in enumerate(value):
                self.where[item[0]] = first | i
                if item[2] is None:
                    self.deletes[item[0]] = item[1]
                else:
                    self.deletes.pop(item[0], None)
            self._changes += len(value)
            self._remember(pos, value, len(payload))

    def _remember(self, offset: int, items: Any, size: int) -> None:
        self._cache[offset] = (items, size)
        self._cache_bytes += size
        while self._cache_bytes > _CACHE_BYTES and len(self._cache) > 1:
            _, (_, old) = self._cache.popitem(last=False)
            self._cache_bytes -= old

    def _read_record(self, offset: int, check_items: bool = True) -> tuple[int, memoryview, Any, int] | None:
        if self._fd is None:
            return None
        head = os.pread(self._fd, HEAD.size, offset)
        if len(head) < HEAD.size:
            return None
        n = HEAD.unpack(head)[3]
        data = memoryview(os.pread(self._fd, OVERHEAD + n, offset))
        return parse(data, 0, check_items)

    def get(self, key: str) -> Pending | None:
        """The pending change of ``key``, checked (None: none, or unreadable since)."""
        at = self.where.get(key)
        if at is None:
            return None
        offset, index = at >> _SHIFT, at & _INDEX
        cached = self._cache.get(offset)
        if cached is not None:
            _, ts, value, flags = cached[0][index]
            return Pending(ts, value, flags)
        rec = self._read_record(offset)
        if rec is None:
            return None  # damaged since it was read
        kind, payload, items, flags = rec
        if kind == ONE:
            _, ts, value = items
            return Pending(ts, value, flags & ~DELETE)
        if kind != CHANGES or index >= len(items):
            return None
        self._remember(offset, items, len(payload))
        _, ts, value, flags = items[index]
        return Pending(ts, value, flags)

    def offset(self, key: str) -> int:
        """Where the record of ``key``'s pending change starts (-1: no pending change)."""
        at = self.where.get(key)
        return -1 if at is None else at >> _SHIFT

    def pending_batches(self) -> Iterator[list[Change]]:
        """Every key's pending change as ``(key, timestamp, value, flags)``, in the order they
        were made, about a MiB of values at a time, reading the file once from start to end
        (this is how a push streams the changes it sends), around the damage found when it was
        read (:func:`.records.scan`). Records were checked when the journal was read or
        written, and are checked again here (the checksum is what tells a record is still
        the one it was); reading a stretch stops at a record damaged since."""
        if self._fd is None or not self.where:
            return
        yield from scan(self._fd, _intact_stretches(self._file_len, self.damage), self.where.get, _SHIFT)

    # -- writing ---------------------------------------------------------------------------

    def _append(self, data: bytes | list[bytes]) -> int:
        """Hand ``data`` (bytes, or pieces written back to back with one ``writev``) to the
        operating system at the end of the file; return its offset."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        offset = self._file_len
        done = 0
        try:
            if isinstance(data, list):
                done = os.writev(self._fd, data)
                want = sum(map(len, data))
                if done < want:  # a short write (a full disk): the rest, joined
                    data = b"".join(data)
                else:
                    data = b""
            while done < len(data):
                done += os.write(self._fd, data[done:] if done else data)
        except BaseException:
            if done:  # a part of the record (a full disk): later ones must follow the last whole one
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, offset)
            raise
        self._file_len += done
        return offset

    def write(self, key: str, timestamp: int, raw: bytes, flags: int = 0) -> None:
        """Record a write of ``key`` (returns once the record is with the operating system)."""
        offset = self._append(change(key.encode("utf-8"), timestamp, raw, flags))
        self.where[key] = offset << _SHIFT
        self.deletes.pop(key, None)
        self._changes += 1

    def delete(self, key: str, deleted_at: int, flags: int = 0) -> None:
        """Record a delete of ``key`` (returns once the record is with the operating system)."""
        offset = self._append(change(key.encode("utf-8"), deleted_at, None, flags))
        self.where[key] = offset << _SHIFT
        self.deletes[key] = deleted_at
        self._changes += 1

    def set_metadata(self, data: Any, timestamp: int) -> None:
        self._append(record(META, json.dumps([data, timestamp]).encode()))
        self.meta = (data, timestamp)

    def forget(self, keys: Iterable[str] | None) -> None:
        """Stop listing the pending changes of ``keys`` (None: all)."""
        if keys is None:
            self.where.clear()
            self.deletes.clear()
            return
        for key in keys:
            self.where.pop(key, None)
            self.deletes.pop(key, None)

    def flush(self) -> None:
        """Make every change recorded so far durable (fsync)."""
        if self._fd is not None and self._file_len > self.durable:
            os.fsync(self._fd)
            self.durable = self._file_len

    @property
    def wasteful(self) -> bool:
        """Whether overwritten changes make up most of the journal."""
        return self._changes > 2 * len(self.where) + 10_000

    def rewrite(
        self, base: dict[str, Any], keys: Iterable[str], source: Journal | None = None, cut: int = -1
    ) -> None:
        """Replace the journal with a new one, atomically: ``base``, then the pending
        changes of ``keys`` (taken from ``source``, this journal by default) in batches, and
        this journal's metadata. The first ``cut`` keys end a batch of their own (so that
        their records all start before the others')."""
        src = source or self
        base = {**base, "id": uuid.uuid4().hex}
        tmp = self.path.with_name(self.path.name + ".tmp")
        where: dict[str, int] = {}
        deletes: dict[str, int] = {}
        batch: list[tuple[str, int, bytes | None, int]] = []
        size = 0
        with open(tmp, "wb") as f:
            pos = f.write(record(BASE, json.dumps(base).encode()))

            def seal() -> None:
                nonlocal pos, batch, size
                if batch:
                    pos += f.write(record(CHANGES, msgpack.packb(batch, use_bin_type=True)))
                    batch, size = [], 0

            for n, key in enumerate(keys):
                if n == cut:
                    seal()
                change = src.get(key)
                if change is None:
                    continue  # unreadable since it was read: the caller's scan finds it again
                where[key] = pos << _SHIFT | len(batch)
                if change.value is None:
                    deletes[key] = change.timestamp
                batch.append((key, change.timestamp, change.value, change.flags))
                size += len(change.value or b"")
                if size >= BATCH_BYTES or len(batch) >= BATCH_ITEMS:
                    seal()
            seal()
            if source is None and self.meta is not None:
                pos += f.write(record(META, json.dumps(list(self.meta)).encode()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        self.close()
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self.base = base
        self.meta = self.meta if source is None else None
        self.where.clear()
        self.where.update(where)  # in place: Touched views of this journal stay valid
        self.deletes.clear()
        self.deletes.update(deletes)
        self._cache.clear()
        self._cache_bytes = 0
        self._changes = len(where)
        self._file_len = self.durable = pos
        self.damage = []
        self.missing = False
        self.torn = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _intact_stretches(end: int, damage: list[Damage]) -> list[tuple[int, int]]:
    """The stretches of the first ``end`` bytes of a journal around the ``damage`` found when
    it was read (the intact records after a damaged one hold acknowledged changes too)."""
    out, start = [], 0
    for bad in sorted(damage):
        if bad.start > start:
            out.append((start, min(bad.start, end)))
        start = max(start, bad.end)
    if start < end:
        out.append((start, end))
    return out
