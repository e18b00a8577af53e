"""booklet's bytes: the one module that knows the on-disk layout of a booklet file.

ebooklet relies on that layout in two places, both here and in :mod:`.fastwrite`: checking a
file that may be damaged (:func:`inspect`), and writing entries without booklet's per-entry
work. Both know booklet's file format version 5 as written by the booklet releases in
:data:`TESTED_BOOKLET`, the versions the project pins and tests; with any other booklet, or a
file of another header version, writes go through booklet's public API (:mod:`.datafile`) and
:func:`inspect` reports the file as one it cannot check.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import pathlib
import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import booklet
import booklet.serializers
import booklet.utils

#: booklet releases whose layout this module and :mod:`.fastwrite` were tested against
#: (pyproject.toml pins ``booklet>=0.12.10,<0.13``; CI runs the differential test of the
#: fast path against booklet's own ``set`` with the pinned version).
TESTED_BOOKLET = ("0.12.10",)
#: The header version of the files booklet 0.12 writes (variable-length values).
FILE_VERSION = 5
#: Widths in booklet's entries: key hash, file position, key length, value length, timestamp.
LAYOUT = (13, 6, 2, 4, 7)
#: What follows an entry's key hash: next pointer, key length, value length, and the
#: timestamp (7 bytes, little-endian, packed as 4 + 2 + 1).
BLOCK_TS = struct.Struct("<6sHIIHB")
#: The next pointer of the last entry of a bucket's chain (0 marks a replaced entry).
END_OF_CHAIN = (1).to_bytes(6, "little")
#: A key hash as booklet makes it (a copy of a prepared hasher: no arguments to parse).
key_hasher = hashlib.blake2s(digest_size=13).copy
#: Header field offsets (booklet 0.12, file version 5).
VERSION_AT = 16
SERIALIZER_AT = 29


def booklet_version() -> str:
    return getattr(booklet, "__version__", "unknown")


def header_version(fd: int) -> int | None:
    """The header version of the booklet file open at ``fd`` (None: no booklet header)."""
    head = os.pread(fd, VERSION_AT + 2, 0)
    if len(head) < VERSION_AT + 2 or head[:16] != booklet.utils.uuid_variable_blt:
        return None
    return int.from_bytes(head[VERSION_AT : VERSION_AT + 2], "little")


class Entry(NamedTuple):
    """An intact live entry of a booklet file: where it is, its key, timestamp and value."""

    pos: int
    key: bytes
    timestamp: int
    value_at: int
    value_len: int


@dataclass
class Inspection:
    """What walking a booklet file found."""

    problems: list[str] = field(default_factory=list)
    header_ok: bool = True
    n_buckets: int = booklet.utils.init_n_buckets
    value_serializer: Any = None  # the class, or None when unknown (custom or unreadable)
    entries: list[Entry] = field(default_factory=list)
    reserved: dict[bytes, Entry] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        if len(self.problems) < 5:
            self.problems.append(text)
        elif len(self.problems) == 5:
            self.problems.append("and more")


def inspect(path: pathlib.Path) -> Inspection:
    """Walk the booklet file at ``path`` (format version 5, variable-length values) and check
    its structure. Reads the whole file once; used only when the file is in doubt."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return Inspection(["the file is empty"], header_ok=False)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return inspect_map(mm)
    finally:
        mm.close()


def inspect_map(mm: Any) -> Inspection:
    u = booklet.utils
    out = Inspection()
    size = len(mm)
    hdr = u.sub_index_init_pos
    num = int.from_bytes
    if size < hdr or mm[:16] != u.uuid_variable_blt:
        return Inspection(["its header is missing or damaged"], header_ok=False)
    version = num(mm[VERSION_AT : VERSION_AT + 2], "little")
    nf, nk, nv = mm[18], mm[19], mm[20]
    n_buckets = num(mm[21:25], "little")
    widths = (u.n_bytes_file, u.n_bytes_key, u.n_bytes_value)
    if version not in (4, 5) or (nf, nk, nv) != widths or not n_buckets:
        return Inspection(["its header is damaged"], header_ok=False)
    out.n_buckets = n_buckets
    serializer_int = num(mm[SERIALIZER_AT : SERIALIZER_AT + 2], "little")
    out.value_serializer = booklet.serializers.serial_int_dict.get(serializer_int)
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
                    entry = Entry(pos, key, num(mm[pos + block : at], "little"), at + klen, vlen)
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
