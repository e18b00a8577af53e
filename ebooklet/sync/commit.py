"""Building a commit: pure functions from the current head and the changes to write, to the
segments, index parts and head of the next commit.

Nothing here talks to the remote; index parts of the current head come through a function the
caller passes (``load_parts``), so each step can be tested alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ..format import (
    FORMAT_VERSION,
    RECENT_COMMITS,
    SEGMENT_BYTES,
    Entry,
    Head,
    Part,
    bits_for,
    log_name,
    part_name,
    parts_of,
    segment_name,
)
from .diff import LocalChange
from .index import EMPTY

#: Segments smaller than this are merged once there are COMPACT_SMALL of them...
SMALL_SEGMENT = 4 * 1024 * 1024
COMPACT_SMALL = 8
#: ...and a segment is rewritten once less than this share of its bytes is still referenced.
COMPACT_LIVE = 0.5

#: Parts of a head by number: ``load_parts(head, part_numbers)``.
PartLoader = Callable[[Head, Iterable[int]], dict[int, Part]]


@dataclass
class Segments:
    """New values packed into segment objects, ready to upload."""

    #: (name, body) of each segment.
    bodies: list[tuple[str, bytes]]
    #: Where each value landed.
    entries: dict[str, Entry]
    #: How many values each segment holds.
    counts: dict[str, int]

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(body) for name, body in self.bodies}


def pack_segments(changes: dict[str, LocalChange], commit_id: str) -> Segments:
    """Pack the values of ``changes`` into segments, in key order, each at most
    ``SEGMENT_BYTES`` (a bigger value gets one of its own)."""
    keys = sorted(k for k, c in changes.items() if c.raw is not None)
    picked = [changes[k] for k in keys]
    raws = [c.raw for c in picked]
    lengths = list(map(len, raws))  # type: ignore[arg-type]
    cuts, size = [0], 0
    for i, n in enumerate(lengths):
        if size and size + n > SEGMENT_BYTES:
            cuts.append(i)
            size = 0
        size += n
    cuts.append(len(keys))
    out = Segments([], {}, {})
    for n, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        if lo == hi:
            continue
        name = segment_name(commit_id, n)
        offsets = itertools.accumulate(lengths[lo:hi - 1], initial=0)
        out.entries.update(zip(keys[lo:hi], map(
            Entry,
            [c.timestamp for c in picked[lo:hi]],
            [c.hash for c in picked[lo:hi]],
            itertools.repeat(name),
            offsets,
            lengths[lo:hi],
        ), strict=True))
        out.bodies.append((name, b"".join(raws[lo:hi])))  # type: ignore[arg-type]
        out.counts[name] = hi - lo
    return out


@dataclass(frozen=True)
class Summary:
    """What a commit says about itself: keys written and deleted, and by whom."""

    written: int = 0
    deleted: int = 0
    author: str | None = None


def references(head: Head) -> set[str]:
    """Every object ``head`` needs, by name relative to the prefix (its log object included)."""
    names = set(head.segments) | {n for n in head.parts if n}
    if head.commit_id:
        names.add(log_name(head.commit, head.commit_id))
    return names


def plan_compaction(head: Head, force: bool = False) -> list[str]:
    """The segments of ``head`` worth rewriting into new ones.

    Mostly-dead segments (less than ``COMPACT_LIVE`` of their bytes still referenced) always
    qualify. Small segments (under ``SMALL_SEGMENT`` bytes) qualify together once there are
    ``COMPACT_SMALL`` of them, so that one-key pushes cost one new segment each but a reader
    never meets more than a few small ones. ``force`` (an explicit compaction) takes every
    segment with dead bytes, and the small ones as soon as there are two.
    """
    dead = [n for n, (size, live) in head.segments.items() if live < size * (1.0 if force else COMPACT_LIVE)]
    small = [n for n, (size, _) in head.segments.items() if size < SMALL_SEGMENT and n not in dead]
    chosen = set(dead)
    if len(small) >= (2 if force else COMPACT_SMALL):
        chosen.update(small)
    return sorted(chosen)


def build_commit(
    current: Head | None,
    to_write: dict[str, LocalChange],
    uploaded: dict[str, Entry],
    segments: dict[str, int],
    commit_id: str,
    metadata: tuple[Any, int] | None,
    *,
    codec_name: str,
    replacing: bool,
    stamp: int,
    load_parts: PartLoader,
    summary: Summary = Summary(),
    retention: dict[str, float] | None = None,
) -> tuple[Head, dict[int, tuple[str, bytes, Part]]]:
    """The next head on top of ``current``, and the index parts it needs.

    ``to_write`` are the changes this commit makes (deletes have ``raw`` None; values that
    compaction moves are writes of the same bytes), ``uploaded`` where each written value
    lives, ``segments`` the size of every segment uploaded for it. ``replacing`` starts a new
    database over ``current`` (flag 'n'); ``stamp`` is the commit time in microseconds;
    ``retention``, when given, replaces the database's retention setting. Objects the new head
    no longer references are left to garbage collection, which keeps what retained commits use.
    """
    fresh = current is None or replacing
    if fresh:
        head = Head.new(codec_name)
        if current is not None:
            head.retention = dict(current.retention)
    else:
        assert current is not None
        head = Head(**asdict(current))
    head.version = FORMAT_VERSION
    head.commit = current.commit + 1 if current is not None else 1
    head.commit_id = commit_id
    head.parent = current.commit_id if current is not None else None
    head.timestamp = stamp
    head.written, head.deleted, head.author = summary.written, summary.deleted, summary.author
    if retention is not None:
        head.retention = dict(retention)
    earlier = current.recent_entries() if current is not None and not fresh else []
    mine = [head.commit, commit_id, stamp, summary.written, summary.deleted]
    head.recent = (earlier + [mine])[-RECENT_COMMITS:]
    if metadata is not None and (head.metadata_timestamp or 0) < metadata[1]:
        head.metadata, head.metadata_timestamp = metadata

    # Choose the index layout first (an upper bound on the growth), so that a push that
    # splits the index groups its keys once.
    adds = [k for k, c in to_write.items() if c.raw is not None]
    bits = bits_for(
        head.n_keys + len(adds), head.key_bytes + sum(len(k.encode()) for k in adds), head.part_bits
    )
    split = bits != head.part_bits
    if split:
        old_parts = load_parts(current, range(len(current.parts))) if not fresh else {}  # type: ignore[arg-type]
        before = {0: Part(kv for part in old_parts.values() for kv in part.items())}
        head.part_bits, head.parts = bits, [None] * (2**bits)
        groups = {0: to_write}
    elif bits == 0:
        groups = {0: to_write}
        before = load_parts(current, groups) if not fresh else {0: EMPTY}  # type: ignore[arg-type]
    else:
        groups = {}
        for (key, change), p in zip(to_write.items(), parts_of(list(to_write), bits), strict=True):
            groups.setdefault(p, {})[key] = change
        before = load_parts(current, groups) if not fresh else {p: EMPTY for p in groups}  # type: ignore[arg-type]
    merged: dict[int, dict[str, Entry]] = {}
    removed: list[tuple[str, Entry]] = []
    added: list[tuple[str, Entry]] = []
    for p, writes in groups.items():
        if not len(before[p]):
            # Nothing to replace (e.g. a first push): the new entries are the part.
            entries = {k: uploaded[k] for k, c in writes.items() if c.raw is not None}
            added.extend(entries.items())
            merged[p] = entries
            continue
        entries = dict(before[p].items())
        for key, change in writes.items():
            old = entries.pop(key, None)
            if old is not None:
                removed.append((key, old))
            if change.raw is not None:
                new = entries[key] = uploaded[key]
                added.append((key, new))
        merged[p] = entries
    if split:
        regrouped: dict[int, dict[str, Entry]] = {}
        everything = merged[0]
        for key, p in zip(everything, parts_of(list(everything), bits), strict=True):
            regrouped.setdefault(p, {})[key] = everything[key]
        # Every part is rewritten, the ones left empty too.
        merged = {p: regrouped.get(p, {}) for p in range(2**bits)}
    # The head's counters, in bulk.
    head.n_keys += len(added) - len(removed)
    head.n_bytes += sum(e.length for _, e in added) - sum(e.length for _, e in removed)
    head.key_bytes += sum(len(k.encode()) for k, _ in added) - sum(len(k.encode()) for k, _ in removed)
    live: dict[str, int] = dict.fromkeys(segments, 0)
    for _, e in added:
        live[e.segment] += e.length
    for _, e in removed:
        live[e.segment] = live.get(e.segment, 0) - e.length
    for name, delta in live.items():
        if name in segments:
            head.segments.setdefault(name, [segments[name], 0])
        if name in head.segments:
            head.segments[name][1] += delta
    for name, (_size, used) in list(head.segments.items()):
        if used <= 0:
            del head.segments[name]
    written: dict[int, tuple[str, bytes, Part]] = {}
    for p, entries in merged.items():
        if not entries:
            head.parts[p] = None
            continue
        part = Part(entries)
        name = part_name(head.part_bits, p, commit_id)
        written[p] = (name, part.encode(), part)
        head.parts[p] = name
    return head, written
