"""Runs: the sorted index entries of a staged write (``run/<stage id>-<n>``), encoded as
``EBKR | header length | header | blocks`` and decoded as untrusted input (docs/format.rst,
*Runs*).

A run lists entries sorted by the 64-bit hash their index part comes from, then by key, so a
run is in index-part order for any number of parts, and a commit reads runs block by block
while it builds the parts in order. Each block is checksummed and compressed on its own and
read with a ranged GET; the header lists the blocks.
"""

from __future__ import annotations

import operator
import struct
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from ..errors import RemoteFormatError, UnsupportedFormatError
from ..limits import MAX_KEY_BYTES, MAX_TIMESTAMP, RESERVED_KEYS
from .names import HASH_LEN, checksum, parts_of
from .part import le_array, le_bytes

RUN_MAGIC = b"EBKR"
#: Version 2 (format 3) hashes values of SHA256_FROM bytes or more with SHA-256; version 1
#: runs, staged by earlier ebooklet, are still committed (their entries keep their hashes).
RUN_VERSION = 2
#: Entries per block: a commit holds one decoded block per run at a time.
BLOCK_ENTRIES = 4096
#: The most blocks a run header lists (a run holds at most RUN_MAX_ENTRIES entries).
MAX_BLOCKS = 4096
RUN_MAX_ENTRIES = BLOCK_ENTRIES * MAX_BLOCKS
#: The largest header (its block list) and block a reader accepts, compressed.
MAX_HEADER_BYTES = 64 + 64 * MAX_BLOCKS
MAX_BLOCK_BYTES = BLOCK_ENTRIES * (MAX_KEY_BYTES // 64 + 64)
#: A block inflates to at most this many bytes.
MAX_BLOCK_INFLATED = BLOCK_ENTRIES * (MAX_KEY_BYTES + 64)
_PREFIX = struct.Struct(">4sI")


def key_order(keys: Sequence[str]) -> list[int]:
    """The 64-bit part hash of each key (:func:`~ebooklet.format.part_of` with 64 bits): a
    run is sorted by it, then by key."""
    return parts_of(keys, 64)


@dataclass(frozen=True)
class RunHeader:
    """What a run's header says: its database and stage, and where its blocks are (offset,
    length, entries, lowest and highest part hash)."""

    db: str
    stage: str
    number: int
    entries: int
    blocks: tuple[tuple[int, int, int, int, int], ...]


@dataclass
class Block:
    """Decoded entries of a block, column by column, in run order. ``hashes`` of deletes are
    None; ``order`` is each key's 64-bit part hash; ``segs`` index the stage's segments."""

    keys: list[str]
    order: list[int]
    ts: array
    hashes: list[bytes | None]
    segs: array
    offs: array
    lens: array


def encode_run(db: str, stage: str, number: int, keys: list[str], order: list[int], ts: Sequence[int],
               hashes: Sequence[bytes | None], segs: Sequence[int], offs: Sequence[int],
               lens: Sequence[int]) -> bytes:
    """A run object from columns already sorted by (order, key), keys unique."""
    blocks, table = [], []
    at = 0
    for lo in range(0, len(keys), BLOCK_ENTRIES):
        hi = min(len(keys), lo + BLOCK_ENTRIES)
        hs = hashes[lo:hi]
        body = zlib.compress(msgpack.packb([
            keys[lo:hi], le_bytes(array("q", ts[lo:hi])),
            b"".join(h if h is not None else bytes(HASH_LEN) for h in hs),
            bytes(h is None for h in hs), le_bytes(array("I", segs[lo:hi])),
            le_bytes(array("Q", offs[lo:hi])), le_bytes(array("I", lens[lo:hi])),
        ], use_bin_type=True), 1)
        blob = checksum(body) + body
        blocks.append(blob)
        table.append([at, len(blob), hi - lo, order[lo], order[hi - 1]])
        at += len(blob)
    # Block offsets count from the end of the header.
    body = msgpack.packb({"v": RUN_VERSION, "db": db, "stage": stage, "n": number,
                          "entries": len(keys), "blocks": table}, use_bin_type=True)
    header = checksum(body) + body
    return _PREFIX.pack(RUN_MAGIC, len(header)) + header + b"".join(blocks)


def _bad(name: str, why: str) -> RemoteFormatError:
    return RemoteFormatError(
        f"{name} is not a readable ebooklet run ({why}). It was uploaded by a staged write: "
        "stage those writes again, or ask whoever writes this database"
    )


def header_length(start: bytes, name: str) -> int:
    """Bytes from the object's start to the end of its header, from its first bytes."""
    if len(start) < _PREFIX.size:
        raise _bad(name, f"it is {len(start)} bytes long")
    magic, n = _PREFIX.unpack_from(start)
    if magic != RUN_MAGIC:
        raise _bad(name, "it does not start like a run")
    if n > MAX_HEADER_BYTES:
        raise _bad(name, f"its header claims {n:,} bytes")
    return _PREFIX.size + n


def decode_header(data: bytes, name: str, size: int) -> RunHeader:
    """The header of a run of ``size`` bytes, from the object's first bytes. Block offsets
    in it count from the end of the header (:func:`header_length`)."""
    end = header_length(data, name)
    if len(data) < end:
        raise _bad(name, "it is cut short inside its header")
    blob = data[_PREFIX.size:end]
    body = blob[HASH_LEN:]
    if checksum(body) != blob[:HASH_LEN]:
        raise _bad(name, "its header does not match its checksum")
    try:
        raw = msgpack.unpackb(body, raw=False, max_array_len=MAX_BLOCKS, max_map_len=16, max_str_len=256)
    except (ValueError, msgpack.UnpackException) as exc:
        raise _bad(name, f"its header cannot be decoded: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("v"), int) and raw["v"] > RUN_VERSION:
        raise UnsupportedFormatError(f"{name} uses run format version {raw['v']}; upgrade ebooklet")
    try:
        blocks = tuple(tuple(int(x) for x in row) for row in raw["blocks"])
        header = RunHeader(str(raw["db"]), str(raw["stage"]), int(raw["n"]), int(raw["entries"]), blocks)
        if raw["v"] not in (1, RUN_VERSION):
            raise ValueError(f"version {raw['v']!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(name, f"its header is malformed: {exc}") from None
    at, total, last = 0, 0, -1
    for offset, length, count, lo, hi in header.blocks:
        if offset != at or not 0 < length <= MAX_BLOCK_BYTES or not 0 < count <= BLOCK_ENTRIES:
            raise _bad(name, "its block list is malformed")
        if not last <= lo <= hi < 2**64:
            raise _bad(name, "its blocks are not in order")
        at, total, last = at + length, total + count, hi
    if end + at != size:
        raise _bad(name, f"it is {size:,} bytes, and its blocks end at {end + at:,}")
    if total != header.entries:
        raise _bad(name, "its blocks do not hold the entries it lists")
    return header


def decode_block(data: bytes, name: str, row: tuple[int, int, int, int, int],
                 segments: Sequence[int]) -> Block:
    """The entries of one block (``row`` from the header), checked: keys the local file can
    hold, in run order within the hashes the header gave, locations within the stage's
    segments (``segments``: their sizes, by number)."""
    _, length, count, lo, hi = row
    if len(data) != length:
        raise _bad(name, f"a block is {len(data):,} bytes, not {length:,}")
    body = data[HASH_LEN:]
    if checksum(body) != data[:HASH_LEN]:
        raise _bad(name, "a block does not match its checksum")
    try:
        inflate = zlib.decompressobj()
        payload = inflate.decompress(body, MAX_BLOCK_INFLATED)
        if inflate.unconsumed_tail:
            raise ValueError("it inflates too far")
        keys, ts, hashes, dels, segs, offs, lens = msgpack.unpackb(
            payload, raw=False, max_str_len=MAX_KEY_BYTES, max_array_len=max(BLOCK_ENTRIES, 7), max_map_len=0,
            max_bin_len=BLOCK_ENTRIES * HASH_LEN,
        )
        block = Block(keys, [], le_array("q", ts), [], le_array("I", segs), le_array("Q", offs),
                      le_array("I", lens))
        if not isinstance(keys, list) or not all(type(k) is str for k in keys):
            raise ValueError("its keys are not strings")
        n = len(keys)
        if {len(block.ts), len(block.segs), len(block.offs), len(block.lens), len(dels), n} != {count}:
            raise ValueError(f"its columns do not all hold {count} entries")
        if len(hashes) != n * HASH_LEN:
            raise ValueError("its hashes are cut short")
        block.hashes = [None if d else hashes[i * HASH_LEN:(i + 1) * HASH_LEN] for i, d in enumerate(dels)]
    except (ValueError, TypeError, zlib.error, msgpack.UnpackException) as exc:
        raise _bad(name, f"a block cannot be decoded: {exc}") from None
    problem = _block_problem(block, lo, hi, segments)
    if problem:
        raise _bad(name, problem)
    return block


def _block_problem(block: Block, lo: int, hi: int, segments: Sequence[int]) -> str | None:
    keys = block.keys
    if not RESERVED_KEYS.isdisjoint(keys):
        return "it holds a reserved key"
    try:
        block.order = key_order(keys)
    except UnicodeEncodeError:
        return "it holds a key that is not valid text"
    order = block.order
    if order and (order[0] != lo or order[-1] != hi):
        return "a block's keys are not in the hash range its header gives"
    pairs = list(zip(order, keys, strict=True))
    if any(a >= b for a, b in zip(pairs, pairs[1:], strict=False)):
        return "its keys are not sorted (or one appears twice)"
    if block.ts.tobytes() and max(block.ts) > MAX_TIMESTAMP or block.ts and min(block.ts) < 0:
        return f"a timestamp is outside 0..{MAX_TIMESTAMP}"
    if block.segs and max(block.segs) >= len(segments):
        return "an entry refers to a segment the stage did not upload"
    ends = zip(map(operator.add, block.offs, block.lens), block.segs, block.hashes, strict=True)
    if any(end > segments[s] for end, s, h in ends if h is not None):
        return "an entry points past the end of its segment"
    return None
