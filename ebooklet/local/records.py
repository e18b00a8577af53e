"""The records of the journal (:mod:`.journal`): their bytes, their checks, and reading them.

A journal is a sequence of records::

    magic b"\\xebJ" | kind u8 | flags u8 | payload length u32 | payload | checksum

(little-endian; the checksum covers everything before it: CRC-32 in 4 bytes for W records,
the one written per change, as in RocksDB's write-ahead log; blake2b-64 for the others). The
kinds are described in :mod:`.journal`. This module builds records (:func:`record`,
:func:`change`), checks one (:func:`parse`), reads a whole journal's records and finds the
next intact one after damage (:class:`Reader`), and reads the pending changes of a journal
from start to end (:func:`scan`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

MAGIC = b"\xebJ"
HEAD = struct.Struct("<2sBBI")
U32 = struct.Struct("<I")
ONE_HEAD = struct.Struct("<HQ")  # key length, timestamp: the start of a W record's payload
SUM_LEN = 8  # blake2b-64 of B, C and M records
CRC_LEN = 4  # CRC-32 of W records, as a write-ahead log's (RocksDB's): cheap per change
OVERHEAD = HEAD.size + SUM_LEN

BASE, CHANGES, META, ONE = (ord(c) for c in "BCMW")
KINDS = (BASE, CHANGES, META, ONE)
#: Flag of a delete: inferred from the data file, not asked for.
INFERRED = 1
#: Flag of a W record that deletes its key.
DELETE = 0x80
#: A batch of a rewritten journal is sealed into a record once its values reach this many
#: bytes, or it holds this many changes; :func:`scan` yields batches of the same bounds.
BATCH_BYTES = 1 << 20
BATCH_ITEMS = 1 << 16
#: Values at least this long are written with ``writev`` (head, value, checksum) rather than
#: copied into one record first (:func:`change`), and read back on their own by :func:`scan`
#: (one read into the value's own bytes, checked where they are).
BIG_VALUE = 64 << 10
#: Bytes read at a time when the journal is read from start to end: small enough that the
#: buffer comes from the heap, not from fresh pages (large values are read on their own).
SCAN_BYTES = 64 << 10
#: Bytes read at a time when a journal is opened (:class:`Reader`).
READ_WINDOW = 1 << 20

_blake2b = hashlib.blake2b
_crc32 = zlib.crc32

#: A pending change as :func:`scan` yields it: (key, timestamp, value or None, flags).
Change = tuple[str, int, "bytes | None", int]


def checksum(head: bytes, payload: bytes | memoryview) -> bytes:
    h = _blake2b(head, digest_size=SUM_LEN)
    h.update(payload)
    return h.digest()


def record(kind: int, payload: bytes, flags: int = 0) -> bytes:
    head = HEAD.pack(MAGIC, kind, flags, len(payload))
    if kind == ONE:
        body = head + payload
        return body + _crc32(body).to_bytes(CRC_LEN, "little")
    return head + payload + checksum(head, payload)


def change(key: bytes, timestamp: int, raw: bytes | None, flags: int) -> bytes | list[bytes]:
    """The W record of one change (``raw`` None: a delete). A large value is not copied: the
    record is then the pieces to write back to back (head, value, checksum)."""
    if raw is None:
        return record(ONE, ONE_HEAD.pack(len(key), timestamp) + key, flags | DELETE)
    flags &= ~DELETE
    if len(raw) < BIG_VALUE:
        return record(ONE, ONE_HEAD.pack(len(key), timestamp) + key + raw, flags)
    head = HEAD.pack(MAGIC, ONE, flags, ONE_HEAD.size + len(key) + len(raw))
    head += ONE_HEAD.pack(len(key), timestamp) + key
    return [head, raw, _crc32(raw, _crc32(head)).to_bytes(CRC_LEN, "little")]


def trailer(kind: int) -> int:
    return CRC_LEN if kind == ONE else SUM_LEN


def parse(data: memoryview, pos: int, check_items: bool = True, with_value: bool = True
          ) -> tuple[int, memoryview, Any, int] | None:
    """(kind, payload, decoded payload, flags) of an intact record at ``pos``, or None. (A W
    record's decoded payload is ``(key, timestamp, value)``; the value is None when not
    asked for, so that reading a whole journal copies no value.)"""
    if pos + HEAD.size + CRC_LEN > len(data):
        return None
    magic, kind, flags, n = HEAD.unpack_from(data, pos)
    if magic != MAGIC or kind not in KINDS:
        return None
    end = pos + HEAD.size + n
    if end + trailer(kind) > len(data):
        return None
    payload = data[pos + HEAD.size : end]
    if kind == ONE:
        if _crc32(data[pos:end]).to_bytes(CRC_LEN, "little") != data[end : end + CRC_LEN]:
            return None
        if n < ONE_HEAD.size:
            return None
        klen, ts = ONE_HEAD.unpack_from(payload)
        if ONE_HEAD.size + klen > n or (flags & DELETE and ONE_HEAD.size + klen != n):
            return None
        try:
            key = bytes(payload[ONE_HEAD.size : ONE_HEAD.size + klen]).decode("utf-8")
        except UnicodeDecodeError:
            return None
        raw = None if flags & DELETE or not with_value else bytes(payload[ONE_HEAD.size + klen :])
        return kind, payload, (key, ts, raw), flags
    head = bytes(data[pos : pos + HEAD.size])
    if checksum(head, payload) != data[end : end + SUM_LEN]:
        return None
    try:
        if kind == CHANGES:
            value = msgpack.unpackb(payload, raw=False, use_list=False)
            ok = isinstance(value, tuple) and (not check_items or all(is_change(it) for it in value))
        else:
            value = json.loads(bytes(payload))
            ok = isinstance(value, dict) if kind == BASE else isinstance(value, list) and len(value) == 2
    except (ValueError, msgpack.UnpackException, RecursionError):
        return None
    return (kind, payload, value, flags) if ok else None


def is_change(item: Any) -> bool:
    return (
        isinstance(item, tuple) and len(item) == 4 and isinstance(item[0], str)
        and isinstance(item[1], int) and isinstance(item[2], (bytes, type(None)))
        and isinstance(item[3], int)
    )


class Reader:
    """The records of a journal file of ``end`` bytes, read through windows of READ_WINDOW
    bytes: opening reads every record, and never holds the whole file, nor a large value
    (whose record is checked a window at a time)."""

    def __init__(self, fd: int, end: int) -> None:
        self.fd, self.end = fd, end
        self._buf, self._at = memoryview(b""), 0

    def _window(self, pos: int, n: int) -> int:
        """Where bytes ``pos`` to ``pos + n`` of the file start in the window (read anew when
        they are not all in it); -1 when the file has fewer."""
        if pos + n > self.end:
            return -1
        off = pos - self._at
        if off < 0 or off + n > len(self._buf):
            self._buf, self._at, off = memoryview(os.pread(self.fd, max(n, READ_WINDOW), pos)), pos, 0
            if len(self._buf) < n:
                return -1
        return off

    def record(self, pos: int) -> tuple[int, tuple[int, memoryview | None, Any, int]] | None:
        """(its length, :func:`parse`'s answer) for an intact record at ``pos``, or None; W
        records come without their value (a large one's payload is None)."""
        off = self._window(pos, HEAD.size)
        if off < 0:
            return None
        magic, kind, flags, n = HEAD.unpack_from(self._buf, off)
        if magic != MAGIC or kind not in KINDS:
            return None
        total = HEAD.size + n + trailer(kind)
        if kind == ONE and not flags & DELETE and n >= BIG_VALUE:
            got = self._big(pos, n) if pos + total <= self.end else None
            return None if got is None else (total, (ONE, None, got, flags))
        if off + total > len(self._buf):
            off = self._window(pos, total)
            if off < 0:
                return None
        rec = parse(self._buf, off, with_value=False)
        return None if rec is None else (total, rec)

    def _big(self, pos: int, n: int) -> tuple[str, int, None] | None:
        """(key, timestamp, None) of the W record of a large value at ``pos``, checked a
        window at a time."""
        got = _big_prefix(self.fd, pos, n)
        if got is None:
            return None
        prefix, key, ts = got
        crc = _crc32(prefix)
        body = HEAD.size + n
        for at in range(pos + len(prefix), pos + body, READ_WINDOW):
            chunk = os.pread(self.fd, min(READ_WINDOW, pos + body - at), at)
            if not chunk:
                return None
            crc = _crc32(chunk, crc)
        tail = os.pread(self.fd, CRC_LEN, pos + body)
        return (key, ts, None) if len(tail) == CRC_LEN and crc == U32.unpack(tail)[0] else None

    def resync(self, start: int) -> int | None:
        """The position of the next intact record at or after ``start``."""
        pos = start
        while pos < self.end:
            n = min(READ_WINDOW, self.end - pos)
            off = self._window(pos, n)
            if off < 0:
                return None
            window = self._buf[off : off + n]
            found = bytes(window).find(MAGIC)
            if found < 0:
                # A magic cut by the window's end is found again from its first byte.
                pos += max(1, len(window) - len(MAGIC) + 1)
                continue
            if self.record(pos + found) is not None:
                return pos + found
            pos += found + 1
        return None


def _big_prefix(fd: int, pos: int, n: int) -> tuple[bytes, str, int] | None:
    """(the bytes before the value, key, timestamp) of the W record of a large value at
    ``pos`` whose payload is ``n`` bytes, or None when they are short or do not fit."""
    first = os.pread(fd, HEAD.size + ONE_HEAD.size, pos)
    if len(first) < HEAD.size + ONE_HEAD.size:
        return None
    klen, ts = ONE_HEAD.unpack_from(first, HEAD.size)
    if ONE_HEAD.size + klen > n:
        return None
    prefix = first + os.pread(fd, klen, pos + len(first))
    if len(prefix) != len(first) + klen:
        return None
    try:
        return prefix, prefix[len(first) :].decode("utf-8"), ts
    except UnicodeDecodeError:
        return None


def _big_change(fd: int, pos: int, n: int) -> tuple[str, int, bytes] | None:
    """(key, timestamp, value) of the W record of a large value at ``pos``, checked, or
    None. The value is read into bytes of its own, and checked there: not copied out of a
    larger buffer."""
    got = _big_prefix(fd, pos, n)
    if got is None:
        return None
    prefix, key, ts = got
    body = HEAD.size + n
    value = os.pread(fd, body - len(prefix), pos + len(prefix))
    tail = os.pread(fd, CRC_LEN, pos + body)
    if len(value) != body - len(prefix) or len(tail) != CRC_LEN:
        return None
    if _crc32(value, _crc32(prefix)) != U32.unpack(tail)[0]:
        return None
    return key, ts, value


def scan(fd: int, stretches: list[tuple[int, int]], pending: Callable[[str], int | None],
         shift: int) -> Iterator[list[Change]]:
    """Every pending change in the ``stretches`` of the journal open as ``fd``, in the order
    they were made, about :data:`BATCH_BYTES` of values at a time, reading each stretch once
    from start to end. A change is pending when ``pending(key)`` is where it was read
    (``offset << shift``, or'ed with its index in a C record). Records are checked again:
    reading a stretch stops at a record damaged since the journal was read, and the keys from
    there on are missing from the result.

    W records, the common kind, are decoded inline: every pending change goes through this
    loop. Those of large values are read on their own (:func:`_big_change`)."""
    head_size, one_size, crc, u32 = HEAD.size, ONE_HEAD.size, _crc32, U32.unpack_from
    unpack_head, unpack_one = HEAD.unpack_from, ONE_HEAD.unpack_from
    out: list[Change] = []
    add = out.append
    size = 0
    for pos, stretch in stretches:
        while pos < stretch:
            buf = os.pread(fd, min(SCAN_BYTES, stretch - pos), pos)
            mv = memoryview(buf)
            avail, at, broken = len(buf), 0, False
            while at + head_size <= avail:
                magic, kind, flags, n = unpack_head(buf, at)
                if magic != MAGIC:
                    broken = True
                    break
                body = at + head_size + n
                stop = body + (CRC_LEN if kind == ONE else SUM_LEN)
                if kind == ONE and not flags & DELETE and n >= BIG_VALUE:
                    if pos + stop > stretch:
                        broken = True
                        break
                    big = _big_change(fd, pos + at, n)
                    if big is None:
                        broken = True
                        break
                    if pending(big[0]) == (pos + at) << shift:
                        add((big[0], big[1], big[2], flags))
                        size += n
                elif stop > avail:
                    if at == 0:  # a record larger than the window: read it whole
                        buf = os.pread(fd, stop, pos)
                        mv = memoryview(buf)
                        avail = len(buf)
                        if stop > avail:
                            broken = True
                            break
                        continue
                    break
                elif kind == ONE:
                    if n < one_size or crc(mv[at:body]) != u32(buf, body)[0]:
                        broken = True
                        break
                    klen, ts = unpack_one(buf, at + head_size)
                    start = at + head_size + one_size
                    key = buf[start : start + klen].decode("utf-8")
                    if pending(key) == (pos + at) << shift:
                        if flags & DELETE:
                            add((key, ts, None, flags & ~DELETE))
                        else:
                            add((key, ts, buf[start + klen : body], flags))
                            size += n
                else:
                    rec = parse(mv, at, check_items=False)
                    if rec is None:
                        broken = True
                        break
                    if kind == CHANGES:
                        first = (pos + at) << shift
                        items = enumerate(rec[2])
                        out.extend(item for i, item in items if pending(item[0]) == first | i)
                        size += n
                at = stop
                if size >= BATCH_BYTES or len(out) >= BATCH_ITEMS:
                    yield out
                    out, size = [], 0
                    add = out.append
            if broken or at == 0:
                break  # damage since the journal was read: the rest of this stretch is not trusted
            pos += at
    if out:
        yield out
