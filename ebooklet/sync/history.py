"""The commits of a remote database, newest first, read from the head and its log objects.

Each head names its latest commits (number, id, time, keys written and deleted); older ones are
reached through the log objects those entries point at (see :mod:`.heads`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

from ..errors import ArgumentTypeError, RemoteNotFoundError
from ..format import Head
from ..results import CommitInfo
from .heads import HeadStore
from .objects import parallel_map


def commit_info(head: Head) -> CommitInfo:
    return CommitInfo(
        number=head.commit,
        commit_id=head.commit_id,
        committed_at=datetime.fromtimestamp(head.timestamp / 1e6, tz=timezone.utc),
        written=head.written,
        deleted=head.deleted,
        author=head.author,
    )


def iter_heads(heads: HeadStore, head: Head) -> Iterator[Head]:
    """``head``, then the head of every earlier commit whose log object is kept, newest first."""
    while True:
        yield head
        if head.parent is None or head.commit <= 1:
            return
        older = heads.read_log(head.commit - 1, head.parent)
        if older is None:
            return
        head = older


def retained_heads(heads: HeadStore, head: Head, now_us: int) -> list[Head]:
    """The heads of every commit the retention of ``head`` keeps, newest first.

    The log objects are fetched in parallel, a head's worth of recent commits at a time.
    """
    keep_commits = max(1, int(head.retention.get("commits", 0)))
    cutoff = now_us - int(float(head.retention.get("days", 0.0)) * 86_400e6)

    def kept(i: int, stamp: int | None) -> bool:
        return i < keep_commits or (stamp is not None and stamp >= cutoff)

    out = [head]
    newest = head
    while True:
        wanted = [
            (n, c) for n, c, stamp, _w, _d in sorted(newest.recent_entries(), key=lambda e: -e[0])
            if n < out[-1].commit and kept(len(out) + (out[-1].commit - 1 - n), stamp)
        ]
        if not wanted:
            return out
        found = dict(zip(wanted, parallel_map(lambda nc: heads.read_log(*nc), wanted), strict=True))
        for nc in wanted:
            older = found[nc]
            if older is None or older.commit != out[-1].commit - 1 or not kept(len(out), older.timestamp):
                return out
            out.append(older)
        newest = out[-1]


def find(heads: HeadStore, head: Head, at: int | datetime) -> Head:
    """The head of commit number ``at``, or of the last commit made at or before the time
    ``at``, from the chain that leads to ``head``."""
    for h in iter_heads(heads, head):
        if isinstance(at, int) and not isinstance(at, bool):
            if h.commit == at:
                return h
            if h.commit < at:
                break
        elif isinstance(at, datetime):
            if h.timestamp <= at.timestamp() * 1e6:
                return h
        else:
            raise ArgumentTypeError(
                f"at must be a commit number (int) or a timezone-aware datetime, not {at!r}"
            )
    raise RemoteNotFoundError(
        f"commit {at} of {heads.remote.location} is not kept (commits stay readable for the "
        "database's retention window); list the kept ones with db.log() or `ebooklet log`"
    )


def iter_commits(heads: HeadStore, head: Head, now_us: int) -> Iterator[CommitInfo]:
    """Every commit the retention of ``head`` keeps, newest first: from the latest commits
    each head names, then from the log objects of older ones (one request per head's worth)."""
    keep_commits = max(1, int(head.retention.get("commits", 0)))
    cutoff = now_us - int(float(head.retention.get("days", 0.0)) * 86_400e6)
    for i, info in enumerate(_iter_commits(heads, head)):
        if i >= keep_commits and info.committed_at.timestamp() * 1e6 < cutoff:
            return
        yield info


def _iter_commits(heads: HeadStore, head: Head) -> Iterator[CommitInfo]:
    seen: set[int] = set()
    while True:
        entries = sorted(head.recent_entries(), key=lambda e: -e[0])
        for number, commit_id, stamp, written, deleted in entries:
            if number in seen:
                continue
            seen.add(number)
            when = stamp if stamp is not None else head.timestamp
            yield CommitInfo(
                number=number,
                commit_id=commit_id,
                committed_at=datetime.fromtimestamp(when / 1e6, tz=timezone.utc),
                written=written,
                deleted=deleted,
                author=head.author if number == head.commit else None,
            )
        oldest_number, oldest_id = entries[-1][0], entries[-1][1]
        if oldest_number <= 1 or oldest_number == head.commit and head.parent is None:
            return
        older = heads.read_log(oldest_number, oldest_id)
        if older is None or older.commit != oldest_number or min(older.known_commits()) >= oldest_number:
            return
        head = older
