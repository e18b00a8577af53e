"""The commits of a remote database, newest first, read from the head and its log objects.

Each head names its latest commits (number, id, time, keys written and deleted); older ones are
reached through the log objects those entries point at (see :mod:`.heads`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from ..errors import ArgumentTypeError, EbookletError, RemoteNotFoundError
from ..format import Head
from ..results import CommitInfo
from ..settings import now_us as clock_now_us
from .heads import HeadStore
from .objects import parallel_map


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


def find(heads: HeadStore, head: Head, at: int | datetime, now_us: int | None = None) -> Head:
    """The head of commit number ``at``, or of the last commit made at or before the time
    ``at``: exactly the commits :func:`iter_commits` lists are found (the retention window of
    ``head``), so a reader never opens a commit that garbage collection may remove."""
    by_number = isinstance(at, int) and not isinstance(at, bool)
    if not by_number and not isinstance(at, datetime):
        raise ArgumentTypeError(
            f"at must be a commit number (int) or a timezone-aware datetime, not {at!r}"
        )
    if by_number and not 1 <= at <= head.commit:  # type: ignore[operator]
        raise RemoteNotFoundError(
            f"commit {at} of {heads.remote.location} does not exist: the latest is {head.commit}"
        )
    now_us = now_us if now_us is not None else clock_now_us()
    oldest = None
    for info in iter_commits(heads, head, now_us):
        oldest = info
        stamp = int(info.committed_at.timestamp() * 1e6)
        if info.number == at if by_number else stamp <= at.timestamp() * 1e6:  # type: ignore[union-attr]
            if info.number == head.commit:
                return head
            found = heads.read_log(info.number, info.commit_id)
            if found is None:
                raise RemoteNotFoundError(
                    f"commit {info.number} of {heads.remote.location} is listed but its log object "
                    "is missing: the history is damaged (`ebooklet verify` reports it)"
                )
            return found
        if by_number and info.number < at:  # type: ignore[operator]
            break
    if not by_number and oldest is not None and oldest.number == 1:
        raise RemoteNotFoundError(
            f"no commit of {heads.remote.location} was made at or before {at} (the first was "
            f"made {oldest.committed_at})"
        )
    raise RemoteNotFoundError(
        f"commit {at} of {heads.remote.location} is not kept any more (commits stay readable for "
        "the database's retention window); list the kept ones with db.log() or `ebooklet log`"
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
        entries = [e for e in sorted(head.recent_entries(), key=lambda e: -e[0]) if e[0] not in seen]
        authors = _authors(heads, head, entries)
        for number, commit_id, stamp, written, deleted in entries:
            seen.add(number)
            when = stamp if stamp is not None else head.timestamp
            yield CommitInfo(
                number=number,
                commit_id=commit_id,
                committed_at=datetime.fromtimestamp(when / 1e6, tz=timezone.utc),
                written=written,
                deleted=deleted,
                author=authors.get(number),
            )
        if not entries:
            return
        oldest_number, oldest_id = entries[-1][0], entries[-1][1]
        if oldest_number <= 1 or oldest_number == head.commit and head.parent is None:
            return
        older = heads.read_log(oldest_number, oldest_id)
        if older is None or min(older.known_commits()) >= oldest_number:
            return
        head = older


def _authors(heads: HeadStore, head: Head, entries: list[list[Any]]) -> dict[int, str | None]:
    """Who made each commit of ``entries``: the head names only its own author, so the others
    come from their log objects (fetched in parallel; a missing or damaged one: unknown)."""

    def author(entry: list[Any]) -> str | None:
        if entry[0] == head.commit:
            return head.author
        try:
            older = heads.read_log(entry[0], entry[1])
        except EbookletError:
            return None
        return None if older is None else older.author

    return dict(zip((e[0] for e in entries), parallel_map(author, entries), strict=True))
