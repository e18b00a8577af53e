"""Verification: does every object the retained commits reference exist, whole?

A shallow check lists the database's objects once and compares each referenced segment's size
with the size its head records, and reads and checks every index part and log object of the
retained commits (they carry checksums). A deep check also reads every value of the latest
commit and checks its content hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import EbookletError
from ..format import Entry, Head, Part, hash_in, log_name
from ..remote import Remote
from ..settings import now_us
from ..words import counted
from .heads import HeadStore
from .history import iter_commits
from .objects import ObjectStore, RangeRequest, parallel_map
from .reads import plan_ranges


@dataclass
class VerifyReport:
    """What :func:`ebooklet.verify` checked and found."""

    location: str
    commits_checked: int = 0
    objects_checked: int = 0
    values_checked: int = 0
    deep: bool = False
    #: One line per problem, naming the object (and key) and what is wrong.
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        what = f"{counted(self.commits_checked, 'commit')}, {counted(self.objects_checked, 'object')}"
        if self.deep:
            what += f", {counted(self.values_checked, 'value')}"
        if self.ok:
            return f"{self.location}: OK ({what} checked)"
        lines = [f"{self.location}: {counted(len(self.problems), 'problem')} in {what}"]
        return "\n".join(lines + [f"  {p}" for p in self.problems])


def check(remote: Remote, heads: HeadStore, objects: ObjectStore, *, deep: bool = False) -> VerifyReport:
    report = VerifyReport(remote.location, deep=deep)
    head, _ = heads.read_latest()
    if head is None:
        report.problems.append("there is no database here (no head object)")
        return report
    kept = _retained(heads, head, report)
    segments: dict[str, int] = {}
    parts: set[str] = set()
    logs: set[str] = set()
    for h in kept:
        segments.update({name: size for name, (size, _live) in h.segments.items()})
        parts.update(n for n in h.parts if n)
        if h.version >= 2:
            logs.add(log_name(h.commit, h.commit_id))
    report.objects_checked = len(segments) + len(parts) + len(logs)
    size_of = _sizes(remote, objects, segments, parts | logs)
    for name, size in sorted(segments.items()):
        if name not in size_of:
            report.problems.append(f"{name}: missing or cut short (a segment the index uses)")
        elif size_of[name] != size:
            report.problems.append(f"{name}: {size_of[name]:,} bytes, the head records {size:,}")
    decoded: dict[str, Part] = {}

    def read(name: str) -> tuple[str, bytes | None, str | None]:
        if name not in size_of:
            return name, None, "missing"
        try:
            return name, objects.get(name), None
        except EbookletError as exc:
            return name, None, str(exc)

    # The older commits' log objects were read and checked while walking the history.
    latest_log = {log_name(head.commit, head.commit_id)} if head.version >= 2 else set()
    for name, data, error in parallel_map(read, sorted(parts | latest_log)):
        if error is not None:
            report.problems.append(f"{name}: {error}")
            continue
        assert data is not None
        try:
            if name.startswith("log/"):
                Head.decode(data, where=name)
            else:
                decoded[name] = Part.decode(data, name)
        except EbookletError as exc:
            report.problems.append(f"{name}: {exc}")
    named = [name for name in head.parts if name]
    if all(name in decoded for name in named):
        counted = sum(len(decoded[name]) for name in named)
        if counted != head.n_keys:
            report.problems.append(f"the index parts hold {counted:,} keys, the head says {head.n_keys:,}")
    if deep:
        _check_values(head, decoded, objects, size_of, report)
    return report


def _retained(heads: HeadStore, head: Head, report: VerifyReport) -> list[Head]:
    """The heads of every commit the history lists (as ``log()`` does), each read from its log
    object; one that is missing or damaged is a problem, and the walk goes on with the rest."""
    listed = []
    try:
        for info in iter_commits(heads, head, now_us()):
            listed.append(info)
    except EbookletError as exc:
        report.problems.append(f"the history cannot be listed further: {exc}")
    report.commits_checked = len(listed)
    older = [info for info in listed if info.number != head.commit]

    def read(number: int, commit_id: str) -> tuple[Head | None, str | None]:
        try:
            found = heads.read_log(number, commit_id)
        except EbookletError as exc:
            return None, str(exc)
        return found, None if found is not None else "missing"

    kept = [head]
    for info, (found, error) in zip(
        older, parallel_map(lambda i: read(i.number, i.commit_id), older), strict=True
    ):
        if found is None:
            name = log_name(info.number, info.commit_id)
            report.problems.append(
                f"{name}: {error} (the log object of commit {info.number}, which the history lists)"
            )
        else:
            kept.append(found)
    return kept


def _sizes(
    remote: Remote, objects: ObjectStore, segments: dict[str, int], others: set[str]
) -> dict[str, int]:
    """The size of every object under the prefix: one listing, or (on a read-only remote,
    which cannot list) each segment probed at its last byte, and the rest assumed present
    until read."""
    if remote.writable:
        return {key[len(remote.prefix):]: size for key, size in remote.transport.list_sizes(remote.prefix)}

    def probe(item: tuple[str, int]) -> tuple[str, int | None]:
        name, size = item
        try:
            if size:
                remote.transport.get_range(remote.prefix + name, size - 1, 1)
            return name, size
        except EbookletError:
            return name, None

    found = {name: size for name, size in parallel_map(probe, sorted(segments.items())) if size is not None}
    return {**found, **dict.fromkeys(others, 0)}


def _check_values(
    head: Head, decoded: dict[str, Part], objects: ObjectStore, size_of: dict[str, int], report: VerifyReport
) -> None:
    entries: dict[str, Entry] = {}
    for name in head.parts:
        if name is not None and name in decoded:
            entries.update(decoded[name].items())
    present = {key: e for key, e in entries.items() if e.segment in size_of}  # missing: reported

    def fetch(req: RangeRequest) -> tuple[RangeRequest, bytes | None, str | None]:
        try:
            return req, objects.get_range(req), None
        except EbookletError as exc:
            return req, None, str(exc)

    for req, data, error in parallel_map(fetch, plan_ranges(present)):
        if error is not None:
            report.problems.append(f"{req.name}: {error}")
            continue
        for offset, n, key in req.members:
            report.values_checked += 1
            raw = data[offset - req.start : offset - req.start + n]  # type: ignore[index]
            if hash_in(req.name, raw) != entries[key].hash:
                report.problems.append(f"{req.name}: the value of {key!r} does not match its content hash")
