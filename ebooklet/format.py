"""The remote format: head, index parts and segments (see docs/format.rst).

All objects but the head are immutable and named uniquely by the commit that wrote them
(names inside the head and the index are relative to ``{db_key}.ebooklet/``):

``{db_key}``                           the head: JSON, the single commit point
``{db_key}.ebooklet/seg/{commit}-{n}``  a segment: values packed back to back
``{db_key}.ebooklet/index/{bits}-{part}-{commit}``  one index part
``{db_key}.ebooklet/log/{number}-{commit}``  the head of each commit, kept immutable

A key belongs to index part ``blake2b(key)[:8] >> (64 - bits)``; there are ``2**bits`` parts.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import uuid
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import msgpack

from .errors import IntegrityError, RemoteFormatError, UnsupportedFormatError

FORMAT_NAME = "ebooklet"
FORMAT_VERSION = 2
#: How many recent commits a head names (number and id): a writer that lost the reply to its
#: commit finds its commit among them, or walks back through the log objects they name.
RECENT_COMMITS = 64
#: Commits kept readable (with every object they reference) unless the database says otherwise.
DEFAULT_RETENTION = {"commits": 10, "days": 7.0}

#: Index parts are split further when their estimated size would pass this many bytes...
PART_SPLIT_BYTES = 1024 * 1024
#: ...into parts of about this estimated size. Encoded parts come out near half the
#: estimate (measured: ~27 bytes per entry with short keys), so a part stays well under
#: 1 MB even just before a split.
PART_TARGET_BYTES = 512 * 1024
#: The estimated size of one index entry beyond its key (timestamp, hash, location).
ENTRY_OVERHEAD = 40
#: A new segment is started once the current one reaches this size.
SEGMENT_BYTES = 64 * 1024 * 1024

_PART_MAGIC = b"EBKI"
#: Bytes of the blake2b content hash of every value.
HASH_LEN = 16


def value_hash(data: bytes) -> bytes:
    """The content hash stored for every value."""
    return hashlib.blake2b(data, digest_size=HASH_LEN).digest()


def part_of(key: str, bits: int) -> int:
    """The index part that holds ``key`` when there are ``2**bits`` parts."""
    if bits == 0:
        return 0
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - bits)


def parts_of(keys: Iterable[str], bits: int) -> list[int]:
    """:func:`part_of` for many keys at once (the same numbers, without a call per key)."""
    if bits == 0:
        return [0] * len(keys) if isinstance(keys, list) else [0 for _ in keys]
    shift = 64 - bits
    b2, from_bytes = hashlib.blake2b, int.from_bytes
    return [from_bytes(b2(k.encode("utf-8"), digest_size=8).digest(), "big") >> shift for k in keys]


def bits_for(n_keys: int, key_bytes: int, current_bits: int = 0) -> int:
    """How many part bits an index of this size needs (never fewer than ``current_bits``)."""
    size = n_keys * ENTRY_OVERHEAD + key_bytes
    if size <= PART_SPLIT_BYTES * 2**current_bits:
        return current_bits
    return max(current_bits, math.ceil(math.log2(size / PART_TARGET_BYTES)))


def new_commit_id() -> str:
    """A unique, roughly time-ordered commit id."""
    return f"{time.time_ns() // 1000:x}-{uuid.uuid4().hex[:12]}"


def segment_name(commit_id: str, n: int) -> str:
    """A segment's name, relative to the database's object prefix."""
    return f"seg/{commit_id}-{n}"


def part_name(bits: int, part: int, commit_id: str) -> str:
    """An index part's name, relative to the database's object prefix."""
    return f"index/{bits}-{part}-{commit_id}"


def created_at(name: str) -> int | None:
    """When an object of the format was created (microseconds), read from its name: every
    segment, index part and log object is named after the commit id that wrote it, and a
    commit id starts with its time. None for other names."""
    base = name.rsplit("/", 1)[-1]
    if name.startswith("seg/"):
        stamp = base.split("-", 1)[0]
    elif name.startswith("index/"):
        stamp = base.split("-")[2] if base.count("-") >= 3 else ""
    elif name.startswith("log/"):
        stamp = base.split("-")[1] if base.count("-") >= 2 else ""
    else:
        return None
    try:
        return int(stamp, 16)
    except ValueError:
        return None


def log_name(commit: int, commit_id: str) -> str:
    """The name of commit ``commit``'s immutable copy of its head, relative to the prefix."""
    return f"log/{commit:012d}-{commit_id}"


def _le_bytes(column: array) -> bytes:
    """A column as little-endian bytes, whatever the machine's byte order."""
    if sys.byteorder == "big":
        column = array(column.typecode, column)
        column.byteswap()
    return column.tobytes()


def _le_array(typecode: str, data: bytes) -> array:
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

    def segment_bytes(self) -> dict[str, int]:
        """Bytes of values this part references, per segment."""
        out: dict[str, int] = {}
        for s, n in zip(self._seg, self._len, strict=False):
            name = self._segs[s]
            out[name] = out.get(name, 0) + n
        return out

    def encode(self) -> bytes:
        payload = msgpack.packb(
            {
                "v": FORMAT_VERSION,
                "keys": self.keys,
                "segs": self._segs,
                "ts": _le_bytes(self._ts),
                "hash": self._hash,
                "seg": _le_bytes(self._seg),
                "off": _le_bytes(self._off),
                "len": _le_bytes(self._len),
            },
            use_bin_type=True,
        )
        body = zlib.compress(payload, 1)
        return _PART_MAGIC + value_hash(body) + body

    @classmethod
    def decode(cls, data: bytes, name: str = "index part") -> Part:
        if data[:4] != _PART_MAGIC:
            raise RemoteFormatError(f"{name} is not an ebooklet index part")
        body = data[4 + HASH_LEN :]
        if value_hash(body) != data[4 : 4 + HASH_LEN]:
            raise IntegrityError(f"{name} is corrupt: its checksum does not match its content")
        try:
            raw = msgpack.unpackb(zlib.decompress(body), raw=False)
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
            part._ts = _le_array("q", raw["ts"])
            part._hash = raw["hash"]
            part._seg = _le_array("I", raw["seg"])
            part._off = _le_array("Q", raw["off"])
            part._len = _le_array("I", raw["len"])
            n = len(part.keys)
            lengths = {len(part._ts), len(part._seg), len(part._off), len(part._len), n}
            if lengths != {n} or len(part._hash) != n * HASH_LEN:
                raise ValueError(f"its columns do not all hold {n} entries")
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteFormatError(f"{name} has a malformed index: {exc!r}") from None
        part._rows = {k: i for i, k in enumerate(part.keys)}
        return part


@dataclass
class Head:
    """The commit point of a remote database."""

    uuid: str
    commit: int = 0
    commit_id: str = ""
    parent: str | None = None
    timestamp: int = 0
    n_keys: int = 0
    n_bytes: int = 0
    key_bytes: int = 0
    part_bits: int = 0
    parts: list[str | None] = field(default_factory=lambda: [None])
    #: segment name -> [size in bytes, bytes still referenced by the index]
    segments: dict[str, list[int]] = field(default_factory=dict)
    value_serializer: str | None = None
    metadata: Any = None
    metadata_timestamp: int | None = None
    #: Fencing token of the remote lock held by the writer of this commit (0: none).
    lease_token: int = 0
    #: [number, commit id, time, keys written, keys deleted] of the latest commits, oldest
    #: first, this one last (format 2).
    recent: list[list[Any]] = field(default_factory=list)
    #: Keys this commit wrote and deleted (not counting values only moved by compaction).
    written: int = 0
    deleted: int = 0
    #: Who made the commit, where known (``user@host``).
    author: str | None = None
    #: How long commits stay readable: the latest ``commits`` commits, and every commit
    #: younger than ``days`` days (format 2).
    retention: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RETENTION))
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    @classmethod
    def new(cls, value_serializer: str | None) -> Head:
        return cls(uuid=uuid.uuid4().hex, value_serializer=value_serializer)

    def recent_entries(self) -> list[list[Any]]:
        """The recent list in its format-2 shape, [number, id, time, written, deleted] each;
        a format-1 head names only itself (and its parent, with what it is known by)."""
        if self.recent:
            return [list(entry) + [None] * (5 - len(entry)) for entry in self.recent]
        entries = []
        if self.parent is not None and self.commit > 1:
            entries.append([self.commit - 1, self.parent, None, None, None])
        entries.append([self.commit, self.commit_id, self.timestamp, None, None])
        return entries

    def known_commits(self) -> dict[int, str]:
        """Commit number -> id of the commits this head names: its recent list (format 2),
        or itself and its parent (format 1)."""
        known = {int(entry[0]): str(entry[1]) for entry in self.recent}
        known[self.commit] = self.commit_id
        if self.parent is not None and self.commit > 1:
            known.setdefault(self.commit - 1, self.parent)
        return known

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, where: str = "remote") -> Head:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
                raise ValueError("no ebooklet format marker")
        except ValueError as exc:
            raise RemoteFormatError(
                f"{where} is not an ebooklet database ({exc}); check the db_key or URL"
            ) from None
        version = raw.get("version")
        if not isinstance(version, int):
            raise RemoteFormatError(f"{where} has a malformed head: format version {version!r}")
        if version > FORMAT_VERSION:
            raise UnsupportedFormatError(
                f"{where} was written by a newer ebooklet (format version {version}; this "
                f"ebooklet reads up to {FORMAT_VERSION}). Upgrade ebooklet: pip install -U ebooklet"
            )
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as exc:
            raise RemoteFormatError(f"{where} has a malformed head: {exc}") from None
