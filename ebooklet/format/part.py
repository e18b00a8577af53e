"""Index parts: sorted keys with their entries, encoded as ``EBKI | checksum | zlib(msgpack)``
and decoded as untrusted input (see docs/format.rst, *Index parts* and *Limits*)."""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import msgpack

from ..errors import IntegrityError, RemoteFormatError, UnsupportedFormatError
from ..limits import MAX_KEY_BYTES, MAX_TIMESTAMP, RESERVED_KEYS, key_problem
from ..phases import timed
from .names import (
    FORMAT_VERSION,
    HASH_LEN,
    MAX_PART_BYTES,
    MAX_PART_KEYS,
    PART_NAME_RE,
    SEGMENT_NAME_RE,
    checksum,
    parts_of,
)

_PART_MAGIC = b"EBKI"


def le_bytes(column: array) -> bytes:
    """A column as little-endian bytes, whatever the machine's byte order."""
    if sys.byteorder == "big":
        column = array(column.typecode, column)
        column.byteswap()
    return column.tobytes()


def le_array(typecode: str, data: bytes) -> array:
    column = array(typecode)
    column.frombytes(data)
    if sys.byteorder == "big":
        column.byteswap()
    return column


class Entry(NamedTuple):
    """Where one value lives on the remote, and what it is."""

    timestamp: int
    hash: bytes
    segment: str
    offset: int
    length: int


class Part:
    """One index part: sorted keys with their entries."""

    __slots__ = ("keys", "_rows", "_ts", "_hash", "_seg", "_segs", "_off", "_len")

    def __init__(self, entries: Iterable[tuple[str, Entry]] | dict[str, Entry] = ()) -> None:
        entries = entries if isinstance(entries, dict) else dict(entries)
        self.keys: list[str] = sorted(entries)
        # Column by column, transposed in C: this runs for every key of every push.
        columns = list(zip(*map(entries.__getitem__, self.keys), strict=True)) or [()] * 5
        ts, hashes, segs, offs, lens = columns
        self._segs: list[str] = sorted(set(segs))
        seg_index = {name: i for i, name in enumerate(self._segs)}
        self._ts = array("q", ts)
        self._hash = b"".join(hashes)
        self._seg = array("I", map(seg_index.__getitem__, segs))
        self._off = array("Q", offs)
        self._len = array("I", lens)
        self._rows = dict(zip(self.keys, range(len(self.keys)), strict=True))

    @classmethod
    def from_columns(
        cls,
        keys: list[str],
        ts: Sequence[int],
        hashes: Sequence[bytes],
        seg_ids: Sequence[int],
        seg_names: Sequence[str],
        offs: Sequence[int],
        lens: Sequence[int],
    ) -> Part:
        """A part from columns already sorted by key (unique), each entry's segment given as
        an index into ``seg_names``: no Entry per key."""
        part = cls.__new__(cls)
        part.keys = keys
        used = sorted(set(seg_ids), key=seg_names.__getitem__)
        part._segs = [seg_names[i] for i in used]
        position = {i: n for n, i in enumerate(used)}
        part._ts = array("q", ts)
        part._hash = b"".join(hashes)
        part._seg = array("I", map(position.__getitem__, seg_ids))
        part._off = array("Q", offs)
        part._len = array("I", lens)
        part._rows = dict(zip(keys, range(len(keys)), strict=True))
        return part

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def row(self, key: str) -> int | None:
        return self._rows.get(key)

    def get(self, key: str) -> Entry | None:
        i = self._rows.get(key)
        return None if i is None else self._entry(i)

    def _entry(self, i: int) -> Entry:
        return Entry(
            self._ts[i],
            self._hash[i * HASH_LEN : (i + 1) * HASH_LEN],
            self._segs[self._seg[i]],
            self._off[i],
            self._len[i],
        )

    def items(self) -> Iterator[tuple[str, Entry]]:
        for i, k in enumerate(self.keys):
            yield k, self._entry(i)

    def columns(self, rows: Sequence[int] | None = None) -> tuple[
        list[str], array, bytes, array, list[str], array, array
    ]:
        """The entries of ``rows`` (all by default) column by column: keys, timestamps,
        hashes (joined), segment numbers into the segment names, segment names, offsets and
        lengths. All rows share this part's columns themselves: the caller must not change
        them."""
        if rows is None or (isinstance(rows, range) and rows == range(len(self.keys))):
            return self.keys, self._ts, self._hash, self._seg, self._segs, self._off, self._len
        rows = array("I", rows)
        h, hashes = self._hash, []
        add = hashes.append
        for r in rows:
            add(h[r * HASH_LEN : (r + 1) * HASH_LEN])
        return (
            list(map(self.keys.__getitem__, rows)),
            array("q", map(self._ts.__getitem__, rows)),
            b"".join(hashes),
            array("I", map(self._seg.__getitem__, rows)),
            self._segs,
            array("Q", map(self._off.__getitem__, rows)),
            array("I", map(self._len.__getitem__, rows)),
        )

    def segment_bytes(self) -> dict[str, int]:
        """Bytes of values this part references, per segment."""
        out: dict[str, int] = {}
        for s, n in zip(self._seg, self._len, strict=False):
            name = self._segs[s]
            out[name] = out.get(name, 0) + n
        return out

    @timed("Part.encode")
    def encode(self) -> bytes:
        payload = msgpack.packb(
            {
                "v": FORMAT_VERSION,
                "keys": self.keys,
                "segs": self._segs,
                "ts": le_bytes(self._ts),
                "hash": self._hash,
                "seg": le_bytes(self._seg),
                "off": le_bytes(self._off),
                "len": le_bytes(self._len),
            },
            use_bin_type=True,
        )
        body = zlib.compress(payload, 1)
        return _PART_MAGIC + checksum(body) + body

    @classmethod
    def decode(cls, data: bytes, name: str = "index part") -> Part:
        """An index part from its bytes, checked as untrusted input: every key must be one the
        local file can hold and every segment name one of the format's."""
        if data[:4] != _PART_MAGIC:
            raise RemoteFormatError(f"{name} is not an ebooklet index part")
        body = data[4 + HASH_LEN :]
        if checksum(body) != data[4 : 4 + HASH_LEN]:
            raise IntegrityError(f"{name} is corrupt: its checksum does not match its content")
        try:
            inflate = zlib.decompressobj()
            payload = inflate.decompress(body, MAX_PART_BYTES)
            if inflate.unconsumed_tail:
                raise ValueError(f"it inflates to more than {MAX_PART_BYTES:,} bytes")
            # Strings in a part are keys and segment names: msgpack refuses longer ones (and
            # invalid UTF-8) itself, so every key fits the local file's key length.
            raw = msgpack.unpackb(
                payload, raw=False, max_str_len=MAX_KEY_BYTES, max_array_len=MAX_PART_KEYS,
                max_map_len=16, max_bin_len=MAX_PART_KEYS * HASH_LEN,
            )
        except (ValueError, zlib.error, msgpack.UnpackException) as exc:
            raise RemoteFormatError(f"{name} cannot be decoded: {exc}") from exc
        version = raw.get("v", 0) if isinstance(raw, dict) else None
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise UnsupportedFormatError(f"{name} uses format version {raw['v']}; upgrade ebooklet")
        part = cls.__new__(cls)
        try:
            if not isinstance(version, int):
                raise ValueError(f"no format version in {type(raw).__name__}")
            part.keys = raw["keys"]
            part._segs = raw["segs"]
            part._ts = le_array("q", raw["ts"])
            part._hash = raw["hash"]
            part._seg = le_array("I", raw["seg"])
            part._off = le_array("Q", raw["off"])
            part._len = le_array("I", raw["len"])
            problem = _part_problem(part, raw["ts"]) or _membership_problem(part.keys, name)
            if problem:
                raise ValueError(problem)
            part._rows = dict(zip(part.keys, range(len(part.keys)), strict=True))
            if len(part._rows) != len(part.keys):
                raise ValueError("a key appears twice")
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteFormatError(
                f"{name} has a malformed index: {exc}. The remote database is damaged or was not "
                "written by ebooklet; ask whoever writes it"
            ) from None
        return part


def _part_problem(part: Part, ts_bytes: bytes) -> str | None:
    """What is wrong with a decoded index part, or None (each check is one pass in C: this
    runs for every part a reader downloads)."""
    keys, n = part.keys, len(part.keys) if isinstance(part.keys, list) else -1
    try:
        "".join(keys)
    except TypeError:
        n = -1
    if n < 0:
        return "its keys are not a list of str"
    lengths = {len(part._ts), len(part._seg), len(part._off), len(part._len), n}
    if lengths != {n} or not isinstance(part._hash, bytes) or len(part._hash) != n * HASH_LEN:
        return f"its columns do not all hold {n} entries"
    if not RESERVED_KEYS.isdisjoint(keys):
        reserved = sorted(RESERVED_KEYS.intersection(keys))[0]
        return f"it holds a key that cannot be stored locally: {key_problem(reserved)}"
    segs = part._segs
    named = isinstance(segs, list) and all(isinstance(s, str) and SEGMENT_NAME_RE.fullmatch(s) for s in segs)
    if not named:
        return "its segment names are not the format's (seg/<commit id>-<n>)"
    if n and max(part._seg) >= len(segs):
        return "an entry refers to a segment it does not name"
    # 0 <= ts <= MAX_TIMESTAMP (2**56 - 1) exactly when the top byte of each 8 is zero.
    if ts_bytes[7::8].strip(b"\0"):
        return f"a timestamp is outside 0..{MAX_TIMESTAMP}"
    return None


def _membership_problem(keys: list[str], name: str) -> str | None:
    """Every key of a part must belong to it (a misplaced key could be listed but neither
    read nor deleted); the part's number comes from its name, when it is one of the format's."""
    match = PART_NAME_RE.fullmatch(name)
    if match is None:
        return None
    bits, p = int(match[1]), int(match[2])
    if any(q != p for q in parts_of(keys, bits)):
        return f"it holds a key that belongs to another index part than {p} of {2**bits}"
    return None


