"""The format's constants and names: versions, sizes and limits, object names and the
patterns that recognise them, content hashes, and which index part a key belongs to."""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Iterable

from ..settings import now_us

FORMAT_NAME = "ebooklet"
FORMAT_VERSION = 3
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

#: Bytes of the content hash of every value.
HASH_LEN = 16
#: Values of this many bytes or more are hashed with SHA-256 (cut to HASH_LEN bytes), smaller
#: ones with blake2b-128: each is the faster of the two at its sizes on CPUs with SHA
#: instructions (x86-64 since AMD Zen and Intel Ice Lake, ARMv8 with the crypto extension).
#: Before format 3 every value was hashed with blake2b-128; a segment's name says which way
#: its values are hashed (see :func:`legacy_segment`).
SHA256_FROM = 1024
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
SEGMENT_NAME_RE = re.compile(rf"seg/({_COMMIT_ID})-(0|[1-9][0-9]{{0,8}})(s?)")
#: The end of the name of a segment of format 3 (see :func:`legacy_segment`).
SHA256_SUFFIX = "s"
#: A piece of a large segment uploaded apart and composed into it (Google Cloud Storage): gone
#: once composed; one a killed push left is garbage (see remote/gcs.py).
PIECE_NAME_RE = re.compile(rf"{SEGMENT_NAME_RE.pattern}\.piece-[0-9a-f]{{8}}-(0|[1-9][0-9]?)")
PART_NAME_RE = re.compile(rf"index/(0|[1-9][0-9]?)-(0|[1-9][0-9]{{0,9}})-({_COMMIT_ID})")
#: A log object's name, as :func:`log_name` makes it.
LOG_NAME_RE = re.compile(rf"log/([0-9]{{12,19}})-({_COMMIT_ID})")
#: A run of staged index entries (see format/run.py): ``run/<stage id>-<n>``.
RUN_NAME_RE = re.compile(rf"run/({_COMMIT_ID})-(0|[1-9][0-9]{{0,8}})")
_KINDS = (
    ("segment", SEGMENT_NAME_RE),
    ("piece", PIECE_NAME_RE),
    ("part", PART_NAME_RE),
    ("log", LOG_NAME_RE),
    ("run", RUN_NAME_RE),
    # The lease, and the objects of s3func's lock that stands in for it (lease.lock.<id>-<n>).
    ("lease", re.compile(r"lease|lease\.queue|lease\.lock\.[0-9a-f]{1,32}-[0-9]")),
    ("probe", re.compile(r"probe-[0-9a-f]{32}")),
)
#: A name is always relative to the database's prefix, and these patterns keep it there: no
#: '..', no '/' at the start, no other prefix. Log objects are named from a commit number and
#: a commit id (``log_name``), which the head's rules check.


def checksum(data: bytes) -> bytes:
    """blake2b-128: the checksum of index parts and runs, and the content hash of small values
    (of every value before format 3)."""
    return hashlib.blake2b(data, digest_size=HASH_LEN).digest()


_BLAKE2B = hashlib.blake2b(digest_size=HASH_LEN).copy  # a copy: no arguments to parse
_SHA256 = hashlib.sha256


def value_hash(data: bytes, legacy: bool = False) -> bytes:
    """The content hash of a value stored in a segment of format 3 (or, with ``legacy``, in a
    segment of an earlier format: blake2b-128 whatever its size; see :func:`legacy_segment`)."""
    if legacy or len(data) < SHA256_FROM:
        h = _BLAKE2B()
        h.update(data)
        return h.digest()
    return _SHA256(data).digest()[:HASH_LEN]


def value_hashes(values: Iterable[bytes], legacy: bool = False) -> bytes:
    """:func:`value_hash` of each value, joined (a bulk read checks thousands at once)."""
    out = bytearray()
    small = 1 << 62 if legacy else SHA256_FROM
    fresh, sha256 = _BLAKE2B, _SHA256
    for data in values:
        if len(data) < small:
            h = fresh()
            h.update(data)
            out += h.digest()
        else:
            out += sha256(data).digest()[:HASH_LEN]
    return bytes(out)


def legacy_segment(name: str) -> bool:
    """Whether the values in segment ``name`` are hashed as before format 3 (blake2b-128
    whatever their size): its name lacks the ``s`` that :func:`segment_name` gives segments
    of format 3."""
    return not name.endswith(SHA256_SUFFIX)


def hash_in(segment: str, data: bytes) -> bytes:
    """The content hash of ``data`` as stored in an entry whose value is in ``segment``."""
    return value_hash(data, legacy_segment(segment))


def same_value(data: bytes, hash_now: bytes, want: bytes, segment: str) -> bool:
    """Whether ``data`` (whose hash in a new segment is ``hash_now``) is the value of an entry
    with hash ``want`` in ``segment``: a value of SHA256_FROM bytes or more in a segment of an
    earlier format has the other kind of hash, and is hashed again that way to tell."""
    if hash_now == want:
        return True
    return len(data) >= SHA256_FROM and legacy_segment(segment) and checksum(data) == want


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
    return f"{now_us():x}-{uuid.uuid4().hex[:12]}"


def segment_name(commit_id: str, n: int, legacy: bool = False) -> str:
    """A segment's name, relative to the database's object prefix: ``seg/<commit id>-<n>s``,
    or without the ``s`` for a segment whose values keep the hashes of an earlier format
    (compaction moves them without hashing them again)."""
    return f"seg/{commit_id}-{n}" + ("" if legacy else SHA256_SUFFIX)


def part_name(bits: int, part: int, commit_id: str) -> str:
    """An index part's name, relative to the database's object prefix."""
    return f"index/{bits}-{part}-{commit_id}"


def object_kind(name: str) -> str | None:
    """Which of the format's objects ``name`` (relative to the database's prefix) is:
    ``"segment"``, ``"part"``, ``"log"``, ``"run"`` (staged index entries), ``"lease"`` (the
    lease, its queue and the fallback lock's objects) or ``"probe"`` (a store's
    conditional-write probe); None for any other name.

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


