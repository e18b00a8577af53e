"""The head: the commit point of a remote database, and the rule of each of its fields (a head
is untrusted input: whoever can write to the bucket can write it)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import RemoteFormatError, UnsupportedFormatError
from ..limits import MAX_TIMESTAMP
from ..phases import timed
from .names import (
    COMMIT_ID_RE,
    DEFAULT_RETENTION,
    ENTRY_OVERHEAD,
    FORMAT_NAME,
    FORMAT_VERSION,
    HEAD_BASE_BYTES,
    HEAD_BYTES_PER_PART,
    MAX_HEAD_BYTES,
    MAX_METADATA_BYTES,
    MAX_PART_BITS,
    N_KEYS_SLACK,
    PART_NAME_RE,
    PART_SPLIT_BYTES,
    RECENT_COMMITS,
    SEGMENT_NAME_RE,
)


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

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> Head:
        """A head as a local sync state saved it (by this or any earlier version: fields
        that earlier formats had and this one dropped, such as format 1's ``retired``, are
        left out)."""
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in saved.items() if k in known})

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

    @timed("Head.encode")
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
            return f"names {_shown(name)}, not seg/<commit id>-<n>[s]"
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

