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
import re
import sys
import time
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import msgpack

from .errors import IntegrityError, RemoteFormatError, UnsupportedFormatError
from .limits import MAX_KEY_BYTES, MAX_TIMESTAMP, RESERVED_KEYS, key_problem

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
#: Index parts decompress to at most this many bytes (a legitimate part stays near
#: PART_SPLIT_BYTES); a crafted one cannot make a reader inflate it without limit.
MAX_PART_BYTES = 16 * PART_SPLIT_BYTES
#: The largest index part object a reader downloads (compressed; parts are about half their
#: estimated size, so a legitimate one stays well under this).
MAX_PART_OBJECT_BYTES = 8 * PART_SPLIT_BYTES
#: The most index parts a head may have (2**20 parts hold tens of billions of keys).
MAX_PART_BITS = 20
#: The largest head a reader accepts. A head names each index part (about 50 bytes each, so
#: some 50 MB at MAX_PART_BITS) and each segment; anything larger is not an ebooklet head,
#: and is refused without being downloaded.
MAX_HEAD_BYTES = 128 * 1024 * 1024
#: The largest metadata value a head carries (as compact JSON).
MAX_METADATA_BYTES = 4 * 1024 * 1024
#: Bytes a head may take beyond what its index parts' names need (its own fields, the recent
#: list, the segments and the metadata).
HEAD_BASE_BYTES = 4 * 1024 * 1024 + MAX_METADATA_BYTES
#: Bytes per index part a head may take (a part's name and its quotes and comma).
HEAD_BYTES_PER_PART = 64
#: A head's key count may exceed what its index parts can hold at their split size by this
#: factor at most: it sizes local tables, so a crafted head must not make it arbitrary.
N_KEYS_SLACK = 4
#: An index part holds at most this many keys: the split rule keeps a part near
#: PART_SPLIT_BYTES / ENTRY_OVERHEAD entries, and N_KEYS_SLACK is the margin (a crafted part
#: of millions of tiny entries would cost a reader gigabytes).
MAX_PART_KEYS = N_KEYS_SLACK * PART_SPLIT_BYTES // ENTRY_OVERHEAD

#: A commit id as :func:`new_commit_id` makes it.
_COMMIT_ID = r"[0-9a-f]{1,16}-[0-9a-f]{12}"
COMMIT_ID_RE = re.compile(_COMMIT_ID)
#: The names :func:`segment_name` and :func:`part_name` make (numbers without leading zeros).
SEGMENT_NAME_RE = re.compile(rf"seg/({_COMMIT_ID})-(0|[1-9][0-9]{{0,8}})")
PART_NAME_RE = re.compile(rf"index/(0|[1-9][0-9]?)-(0|[1-9][0-9]{{0,9}})-({_COMMIT_ID})")
#: A log object's name, as :func:`log_name` makes it.
LOG_NAME_RE = re.compile(rf"log/([0-9]{{12,19}})-({_COMMIT_ID})")
_KINDS = (
    ("segment", SEGMENT_NAME_RE),
    ("part", PART_NAME_RE),
    ("log", LOG_NAME_RE),
    # The lease, and the objects of s3func's lock that stands in for it (lease.lock.<id>-<n>).
    ("lease", re.compile(r"lease|lease\.lock\.[0-9a-f]{1,32}-[0-9]")),
    ("probe", re.compile(r"probe-[0-9a-f]{32}")),
)
#: A name is always relative to the database's prefix, and these patterns keep it there: no
#: '..', no '/' at the start, no other prefix. Log objects are named from a commit number and
#: a commit id (``log_name``), which the head's rules check.


def value_hash(data: bytes) -> bytes:
    """The content hash stored for every value."""
    return hashlib.blake2b(data, digest_size=HASH_LEN).digest()


def value_hashes(values: Iterable[bytes]) -> bytes:
    """:func:`value_hash` of each value, joined (a bulk read checks thousands at once)."""
    hasher = hashlib.blake2b(digest_size=HASH_LEN).copy  # a copy: no arguments to parse
    out = bytearray()
    for data in values:
        h = hasher()
        h.update(data)
        out += h.digest()
    return bytes(out)


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
    fresh, from_bytes = _PART_HASHER.copy, int.from_bytes
    out = []
    for key in keys:
        h = fresh()  # a copy of a prepared hasher: no arguments to parse per key
        h.update(key.encode("utf-8"))
        out.append(from_bytes(h.digest(), "big") >> shift)
    return out


#: The hasher part numbers come from (see part_of), ready to copy.
_PART_HASHER = hashlib.blake2b(digest_size=8)


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


def object_kind(name: str) -> str | None:
    """Which of the format's objects ``name`` (relative to the database's prefix) is:
    ``"segment"``, ``"part"``, ``"log"``, ``"lease"`` (the lease and the fallback lock's
    objects) or ``"probe"`` (a store's conditional-write probe); None for any other name.

    The whole name must match: garbage collection and ``delete_remote`` remove nothing
    else, so whatever else lies under the prefix (another database whose key runs through
    this one's prefix, a user's file) is left alone.
    """
    for kind, pattern in _KINDS:
        if pattern.fullmatch(name):
            return kind
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
        """An index part from its bytes, checked as untrusted input: every key must be one the
        local file can hold and every segment name one of the format's."""
        if data[:4] != _PART_MAGIC:
            raise RemoteFormatError(f"{name} is not an ebooklet index part")
        body = data[4 + HASH_LEN :]
        if value_hash(body) != data[4 : 4 + HASH_LEN]:
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
            part._ts = _le_array("q", raw["ts"])
            part._hash = raw["hash"]
            part._seg = _le_array("I", raw["seg"])
            part._off = _le_array("Q", raw["off"])
            part._len = _le_array("I", raw["len"])
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
        problem = _head_bytes_problem(data)
        if problem:
            raise RemoteFormatError(
                f"{where} is not an ebooklet head ({problem}); check the db_key or URL, or ask "
                "whoever writes this database"
            )
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
                raise ValueError("no ebooklet format marker")
        except RecursionError:
            raise RemoteFormatError(
                f"{where} is not an ebooklet head: its JSON is nested too deeply to read. Check the "
                "db_key or URL, or ask whoever writes this database"
            ) from None
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
            head = cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as exc:
            raise RemoteFormatError(f"{where} has a malformed head: {exc}") from None
        check_head(head, where)
        return head


# -- checking a head as untrusted input ---------------------------------------------------
#
# A head comes from whoever can write to the bucket (or from a damaged object). Each field has
# a rule here: a function of the field's value and the whole head that returns what is wrong,
# or None. A new field of Head needs a rule (tests/test_trust.py checks that every field has
# one).

HeadRule = Callable[[Any, "Head"], "str | None"]


def _int_in(lo: int, hi: int) -> HeadRule:
    def rule(value: Any, head: Head) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"is {type(value).__name__}, not an int"
        if not lo <= value <= hi:
            return f"is {value}, outside {lo}..{hi}"
        return None

    return rule


def _optional(rule: HeadRule) -> HeadRule:
    return lambda value, head: None if value is None else rule(value, head)


def _matches(pattern: re.Pattern[str], what: str) -> HeadRule:
    def rule(value: Any, head: Head) -> str | None:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            return f"is {_shown(value)}, not {what}"
        return None

    return rule


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "..."


_I64 = 2**63 - 1
_UUID_RE = re.compile(r"[0-9A-Za-z_-]{1,64}")
_SERIALIZER_RE = re.compile(r"[a-z0-9_]{1,40}|custom:[A-Za-z_][A-Za-z0-9_.]{0,200}")
_commit_id = _matches(COMMIT_ID_RE, "a commit id")
_timestamp = _int_in(0, MAX_TIMESTAMP)


def _commit_id_or_empty(value: Any, head: Head) -> str | None:
    return None if value == "" else _commit_id(value, head)


def _parts(value: Any, head: Head) -> str | None:
    if not isinstance(value, list):
        return f"is {type(value).__name__}, not a list"
    bits = head.part_bits
    if len(value) != 2**bits:
        return f"holds {len(value)} entries, not 2**part_bits = {2**bits}"
    for p, name in enumerate(value):
        if name is None:
            continue
        match = PART_NAME_RE.fullmatch(name) if isinstance(name, str) else None
        if match is None or (int(match[1]), int(match[2])) != (bits, p):
            return f"entry {p} is {_shown(name)}, not None or index/{bits}-{p}-<commit id>"
    return None


def _n_keys(value: Any, head: Head) -> str | None:
    # Index parts split at PART_SPLIT_BYTES and an empty part is None, so a real head's key
    # count is bounded by its number of named parts; the count sizes local tables, so a
    # crafted one must not be arbitrary.
    named = sum(name is not None for name in head.parts)
    return _int_in(0, N_KEYS_SLACK * named * (PART_SPLIT_BYTES // ENTRY_OVERHEAD))(value, head)


def _segments(value: Any, head: Head) -> str | None:
    if not isinstance(value, dict):
        return f"is {type(value).__name__}, not a mapping of segment names to [size, live]"
    for name, sizes in value.items():
        if not SEGMENT_NAME_RE.fullmatch(name):
            return f"names {_shown(name)}, not seg/<commit id>-<n>"
        if (
            not isinstance(sizes, list)
            or len(sizes) != 2
            or any(_int_in(0, _I64)(n, head) for n in sizes)
        ):
            return f"gives {_shown(sizes)} for {name}, not [size, live bytes]"
    return None


def _recent(value: Any, head: Head) -> str | None:
    if not isinstance(value, list) or len(value) > RECENT_COMMITS:
        return f"is {_shown(value)}, not a list of at most {RECENT_COMMITS} commits"
    for entry in value:
        if (
            not isinstance(entry, list)
            or not 2 <= len(entry) <= 5
            or _int_in(0, _I64)(entry[0], head)
            or _commit_id(entry[1], head)
            or any(x is not None and _int_in(0, _I64)(x, head) for x in entry[2:])
        ):
            return f"holds {_shown(entry)}, not [number, commit id, time, written, deleted]"
    return None


def _retention(value: Any, head: Head) -> str | None:
    if not isinstance(value, dict) or set(value) - {"commits", "days"}:
        return f"is {_shown(value)}, not {{'commits': N, 'days': D}}"
    commits, days = value.get("commits", 1), value.get("days", 0)
    if _int_in(1, _I64)(commits, head) or not isinstance(days, (int, float)) or isinstance(days, bool):
        return f"is {_shown(value)}, not {{'commits': N >= 1, 'days': D >= 0}}"
    if not 0 <= days <= 1e6:
        return f"gives {days!r} days, outside 0..1000000"
    return None


def _author(value: Any, head: Head) -> str | None:
    # The command line prints it as it is: no control characters (terminal escapes).
    if value is None or isinstance(value, str) and len(value) <= 256 and value.isprintable():
        return None
    return f"is {_shown(value)}, not a printable name of at most 256 characters"


def _metadata(value: Any, head: Head) -> str | None:
    # The user's JSON, whatever it is, up to a size: every reader parses it with the head.
    size = len(json.dumps(value, separators=(",", ":")))
    if size > MAX_METADATA_BYTES:
        return f"is {size:,} bytes of JSON, more than {MAX_METADATA_BYTES:,}"
    return None


def _format(value: Any, head: Head) -> str | None:
    return None if value == FORMAT_NAME else f"is {_shown(value)}, not {FORMAT_NAME!r}"


#: The rule of each field of :class:`Head`, in the order they are checked (``parts`` relies
#: on ``part_bits``, ``n_keys`` on ``parts``).
HEAD_RULES: dict[str, HeadRule] = {
    "format": _format,
    "version": _int_in(0, FORMAT_VERSION),
    "uuid": _matches(_UUID_RE, "a database uuid"),
    "commit": _int_in(0, _I64),
    "commit_id": _commit_id_or_empty,
    "parent": _optional(_commit_id),
    "timestamp": _timestamp,
    "part_bits": _int_in(0, MAX_PART_BITS),
    "parts": _parts,
    "n_keys": _n_keys,
    "n_bytes": _int_in(0, _I64),
    "key_bytes": _int_in(0, _I64),
    "segments": _segments,
    "value_serializer": _optional(_matches(_SERIALIZER_RE, "a serializer name")),
    "metadata": _metadata,
    "metadata_timestamp": _optional(_timestamp),
    "lease_token": _int_in(0, _I64),
    "recent": _recent,
    "written": _int_in(0, _I64),
    "deleted": _int_in(0, _I64),
    "author": _author,
    "retention": _retention,
}


def head_size_limit(data: bytes) -> int:
    """The largest size a head that starts with ``data`` may have: it names one index part per
    ``2**part_bits``, so its size is bounded by its ``part_bits`` (read from its start, where
    ebooklet writes it; MAX_HEAD_BYTES when the start does not say)."""
    found = _PART_BITS_RE.search(data)
    if found is None:
        return HEAD_BASE_BYTES
    bits = min(int(found[1]), MAX_PART_BITS)
    return min(MAX_HEAD_BYTES, HEAD_BASE_BYTES + HEAD_BYTES_PER_PART * 2**bits)


def _head_bytes_problem(data: bytes) -> str | None:
    """Why ``data`` cannot be a head, judged before it is parsed (parsing crafted JSON costs
    ten times its size in memory), or None. Beyond HEAD_BASE_BYTES, a head may only grow by
    its list of index part names, which must then be exactly that."""
    if len(data) <= HEAD_BASE_BYTES:
        return None
    if len(data) > head_size_limit(data):
        return f"{len(data):,} bytes, more than its part_bits allow"
    start = data.find(b'"parts":[')
    end = data.find(b"]", start)
    if start < 0 or end < 0 or not _PART_LIST_RE.fullmatch(data, start + 9, end):
        return f"{len(data):,} bytes, and not a list of index part names"
    if len(data) - (end - start) > HEAD_BASE_BYTES:
        return f"{len(data):,} bytes, of which more than {HEAD_BASE_BYTES:,} are not index part names"
    return None


_PART_ENTRY = rb'(?:null|"index/[0-9]{1,2}-[0-9]{1,10}-[0-9a-f]{1,16}-[0-9a-f]{12}")'
_PART_LIST_RE = re.compile(rb"%s(?:,%s)*" % (_PART_ENTRY, _PART_ENTRY))
_PART_BITS_RE = re.compile(rb'"part_bits":\s*([0-9]{1,2})[,}\s]')


def check_head(head: Head, where: str = "remote") -> None:
    """Raise :class:`~ebooklet.RemoteFormatError`, naming ``where`` and the field, unless
    every field of ``head`` follows its rule in :data:`HEAD_RULES`."""
    for name, rule in HEAD_RULES.items():
        problem = rule(getattr(head, name), head)
        if problem:
            raise RemoteFormatError(
                f"{where} has a malformed head: its field {name!r} {problem}. It was not written "
                "by ebooklet, or was damaged; check the db_key or URL, or ask whoever writes "
                "this database"
            )
