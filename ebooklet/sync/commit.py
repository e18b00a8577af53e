"""Building a commit: from the current head and a stream of changes, to the segments, index
parts and head of the next commit, in memory that does not grow with the database.

A push streams its changes once: each value goes into the segment being filled
(:class:`SegmentWriter`, which hands full segments to an uploader) and a compact record of
where it went goes to the spool (:class:`Spool`), grouped by index part and spilled to a
temporary file past a bound. :func:`build_head` then takes the parts one at a time: the
current part, merged with the spooled records of its keys, becomes the new part, which is
handed to the caller (to upload and keep) and dropped. Only one part's entries, one
segment's values and the spool's bounded buffer are in memory at once.

Nothing here talks to the remote: current parts come through a function the caller passes,
new segments and parts leave through others, so each step can be tested alone.
"""

from __future__ import annotations

import itertools
import tempfile
from array import array
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

from ..format import (
    FORMAT_VERSION,
    RECENT_COMMITS,
    SHA256_FROM,
    Entry,
    Head,
    Part,
    legacy_segment,
    log_name,
    part_name,
    part_of,
    parts_of,
    segment_name,
)
from ..settings import settings

#: A push cuts its values into segments of about this size (a bigger value gets one of its
#: own). Small enough that a few segments in flight bound a push's memory; large enough
#: that a request carries far more bytes than round trip.
#: Spooled records kept in memory before they are spilled to a temporary file.
SPOOL_RECORDS = 65_536
#: Flags of a spooled record.
INFERRED = 1  # a delete found rather than asked for (max_delete counts these)
MOVED = 2  # a value compaction moves: same bytes, new place; not a change

#: Segments smaller than this are merged once there are COMPACT_SMALL of them...
SMALL_SEGMENT = 4 * 1024 * 1024
COMPACT_SMALL = 8
#: ...and a segment is rewritten once less than this share of its bytes is still referenced.
COMPACT_LIVE = 0.5

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




class SegmentWriter:
    """Packs values into segments in the order they come, handing each full segment to
    ``put(name, body, n_values)``. Segment numbers count on across the attempts of a push:
    ``names`` is shared, and a record's segment is its index in it."""

    def __init__(self, commit_id: str, names: list[str], sizes: dict[str, int],
                 put: Callable[[str, bytes, int], None]) -> None:
        self.commit_id = commit_id
        self.names = names
        self.sizes = sizes
        self.put = put
        self.values = 0  # values written, all segments
        self.bytes = 0
        #: Whether the values added keep hashes of an earlier format (compaction's moves):
        #: the segments they fill are named so (format.legacy_segment).
        self.legacy = False
        self._buf: list[bytes] = []
        self._size = 0

    def add(self, raw: bytes) -> tuple[int, int]:
        """Append one value; returns (segment index, offset)."""
        n = len(raw)
        if self._size and self._size + n > settings.segment_bytes:
            self.flush()
        at = self._size
        self._buf.append(raw)
        self._size += n
        self.values += 1
        self.bytes += n
        return len(self.names), at

    def add_many(self, raws: list[bytes]) -> tuple[list[int], list[int]]:
        """Append values; returns their segment indexes and offsets."""
        lengths = list(map(len, raws))
        total = sum(lengths)
        if self._size + total <= settings.segment_bytes or not self._size and len(raws) == 1:
            # The common case: the whole batch fits in the segment being filled.
            offsets = list(itertools.accumulate(lengths[:-1], initial=self._size))
            self._buf.extend(raws)
            self._size += total
            self.values += len(raws)
            self.bytes += total
            return [len(self.names)] * len(raws), offsets
        segs, offsets = [], []
        for raw in raws:
            seg, off = self.add(raw)
            segs.append(seg)
            offsets.append(off)
        return segs, offsets

    def flush(self) -> None:
        if not self._buf:
            return
        name = segment_name(self.commit_id, len(self.names), self.legacy)
        body = b"".join(self._buf)
        self.names.append(name)
        self.sizes[name] = len(body)
        count = len(self._buf)
        self._buf, self._size = [], 0
        self.put(name, body, count)


#: A spooled record: (key, timestamp, hash or None for a delete, segment, offset, length, flags).
Record = tuple[str, int, "bytes | None", int, int, int, int]


class Spool:
    """The records of a push, grouped by index part (``2**bits`` groups), kept as lists until
    SPOOL_RECORDS are held, then packed with msgpack into a temporary file; read back group
    by group."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.lists: dict[int, list[Record]] = {}
        self.records = 0  # all records added
        self._held = 0
        self._chunks: dict[int, list[tuple[int, int]]] = {}
        self._file: Any = None

    def add(self, key: str, ts: int, h: bytes | None, seg: int, off: int, length: int, flags: int) -> None:
        self.extend([part_of(key, self.bits)], [(key, ts, h, seg, off, length, flags)])

    def extend(self, parts: Iterable[int], records: Iterable[Record]) -> None:
        """Add records, each to the group of its part number."""
        lists = self.lists
        n = 0
        for p, rec in zip(parts, records, strict=True):
            group = lists.get(p)
            if group is None:
                group = lists[p] = []
            group.append(rec)
            n += 1
        self.records += n
        self._held += n
        if self._held >= SPOOL_RECORDS:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="ebooklet-push-")
        f = self._file
        f.seek(0, 2)
        for p, group in self.lists.items():
            # Column by column (C loops): keys and hashes as lists, numbers as arrays.
            keys, ts, hashes, segs, offs, lens, flags = zip(*group, strict=True)
            data = msgpack.packb([
                keys, array("q", ts).tobytes(), hashes, array("Q", segs).tobytes(),
                array("Q", offs).tobytes(), array("Q", lens).tobytes(), bytes(flags),
            ], use_bin_type=True)
            self._chunks.setdefault(p, []).append((f.tell(), len(data)))
            f.write(data)
        self.lists.clear()
        self._held = 0

    def group(self, p: int) -> list[Record]:
        """The records of group ``p``, in the order they were added."""
        out: list[Record] = []
        for offset, length in self._chunks.get(p, ()):
            self._file.seek(offset)
            keys, ts, hashes, segs, offs, lens, flags = msgpack.unpackb(
                self._file.read(length), raw=False, use_list=False
            )
            out.extend(zip(keys, _array("q", ts), hashes, _array("Q", segs), _array("Q", offs),
                           _array("Q", lens), flags, strict=True))
        out.extend(self.lists.get(p, ()))
        return out

    def groups(self) -> set[int]:
        return set(self.lists) | set(self._chunks)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.lists.clear()
        self._chunks.clear()


def _array(kind: str, data: bytes) -> array:
    out = array(kind)
    out.frombytes(data)
    return out


def regrouped(fetch: Callable[[int], list[tuple[str, Any]]], coarse: int, fine: int) -> Callable[[int], list]:
    """``fetch(q)`` lists the items of group q of ``2**coarse`` (keyed by their first field);
    the result lists those of group p of ``2**fine`` (fine >= coarse), fetching each coarse
    group once when asked for the fine groups in order."""
    if fine == coarse:
        return fetch
    shift = fine - coarse
    cache: dict[str, Any] = {"q": None, "split": {}}

    def get(p: int) -> list:
        q = p >> shift
        if cache["q"] != q:
            items = fetch(q)
            split: dict[int, list] = {}
            for item, child in zip(items, parts_of([it[0] for it in items], fine), strict=True):
                split.setdefault(child, []).append(item)
            cache["q"], cache["split"] = q, split
        return cache["split"].get(p, [])

    return get


@dataclass
class Built:
    """What :func:`build_head` found while building: the keys it wrote and deleted (the
    inferred deletes among them also listed apart), and the parts it rewrote."""

    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    inferred: list[str] = field(default_factory=list)
    moved: int = 0
    parts: dict[int, str] = field(default_factory=dict)


def next_head(current: Head | None, fresh: bool, commit_id: str, stamp: int, bits: int,
              metadata: tuple[Any, int] | None, codec_name: str,
              retention: dict[str, float] | None) -> Head:
    """The next head's fields other than its index and counts (see :func:`build_head`)."""
    if fresh:
        head = Head.new(codec_name)
        if current is not None:
            head.retention = dict(current.retention)
    else:
        assert current is not None
        head = Head(**asdict(current))
        head.segments = {name: list(v) for name, v in current.segments.items()}
        head.parts = list(current.parts)
    head.version = FORMAT_VERSION
    head.commit = current.commit + 1 if current is not None else 1
    head.commit_id = commit_id
    head.parent = current.commit_id if current is not None else None
    head.timestamp = stamp
    if retention is not None:
        head.retention = dict(retention)
    if metadata is not None and (head.metadata_timestamp or 0) < metadata[1]:
        head.metadata, head.metadata_timestamp = metadata
    if bits != head.part_bits:
        head.part_bits, head.parts = bits, [None] * (2**bits)
    return head


def build_head(
    current: Head | None,
    head: Head,
    spool: Spool,
    segments: list[str],
    sizes: dict[str, int],
    keep_remote: set[str],
    old_part: Callable[[int], list[tuple[str, Entry]]],
    emit: Callable[[int, str, Part, set[str] | None], None],
    fresh: bool,
    author: str | None = None,
    same_bytes: Callable[[Record, Entry], bool] | None = None,
) -> Built:
    """Fill in ``head`` (from :func:`next_head`): its index parts, counts and segments.

    Each part with spooled records (every part, when the layout changed) is the current one
    (``old_part(q)``, the entries of current part q) with the records applied, the last
    record of a key winning. A write replaces the entry unless the bytes are the same (the
    same hash; for a value of the same size whose hash is of the other kind, see
    format.legacy_segment, ``same_bytes(record, entry)`` tells, when given); a
    delete removes it; a MOVED record relocates an entry whose bytes it still matches. Keys in
    ``keep_remote`` keep the current entry (the remote's side of a settled conflict).
    Each new part goes to ``emit(p, name, part, local)`` (``local``: its keys whose value is
    now in the local file, for presence bits; None when that is all of them) and is dropped;
    ``segments``/``sizes`` name the segments records point to (their index in ``segments``)
    and their sizes.
    """
    bits = head.part_bits
    cur_bits = current.part_bits if current is not None and not fresh else bits
    split = not fresh and current is not None and cur_bits != bits
    old_of = (lambda q: []) if fresh or current is None else regrouped(old_part, cur_bits, bits)
    records_of = regrouped(spool.group, spool.bits, bits)
    wanted = {g for s in spool.groups() for g in _children(s, spool.bits, bits)}
    out = Built()
    live: dict[str, int] = {}
    n_keys = n_bytes = key_bytes = 0
    for p in range(2**bits):
        if not (fresh or split or p in wanted):
            continue
        before = old_of(p)
        records = records_of(p)
        latest: dict[str, Record] = {rec[0]: rec for rec in records}
        if not before and not keep_remote:
            # New keys only (a first push, a new part): each last record is an entry. Built
            # column by column, without an object per key.
            recs = sorted(latest.values()) if len(latest) != len(records) else sorted(records)
            keys, ts, hashes, seg_ids, offs, lens, flags = (
                list(col) for col in (zip(*recs, strict=True) if recs else [()] * 7)
            )
            if None not in hashes and not any(flags):
                out.written.extend(keys)
                n_keys += len(keys)
                key_bytes += sum(map(len, map(str.encode, keys)))
                n_bytes += sum(lens)
                distinct = set(seg_ids)
                for seg in distinct:
                    name = segments[seg]
                    used = sum(lens) if len(distinct) == 1 else sum(
                        itertools.compress(lens, map(seg.__eq__, seg_ids))
                    )
                    live[name] = live.get(name, 0) + used
                if not keys:
                    head.parts[p] = None
                    continue
                part = Part.from_columns(keys, ts, hashes, seg_ids, segments, offs, lens)
                name = part_name(bits, p, head.commit_id)
                head.parts[p] = name
                out.parts[p] = name
                emit(p, name, part, None)
                continue
        entries = dict(before)
        local: set[str] = set()
        for key, rec in latest.items():
            if key in keep_remote:
                continue
            _, ts, h, seg, off, length, flags = rec
            was = entries.get(key)
            if flags & MOVED:
                if was is None or was.hash != h:
                    continue  # changed since compaction chose it: the change stands
                out.moved += 1
            elif h is None:
                if was is None:
                    continue  # deleting what is not there
                del entries[key]
                (out.inferred if flags & INFERRED else out.deleted).append(key)
                n_keys -= 1
                n_bytes -= was.length
                key_bytes -= len(key.encode())
                live[was.segment] = live.get(was.segment, 0) - was.length
                continue
            else:
                local.add(key)
                if was is not None and (
                    was.hash == h
                    or same_bytes is not None
                    and length == was.length >= SHA256_FROM
                    and legacy_segment(was.segment) != legacy_segment(segments[seg])
                    and same_bytes(rec, was)
                ):
                    continue  # the same bytes: not a change
                out.written.append(key)
            new = entries[key] = Entry(ts, h, segments[seg], off, length)
            live[new.segment] = live.get(new.segment, 0) + length
            if was is None:
                n_keys += 1
                key_bytes += len(key.encode())
                n_bytes += length
            else:
                n_bytes += length - was.length
                live[was.segment] = live.get(was.segment, 0) - was.length
        if not entries:
            head.parts[p] = None
            continue
        if not (split or fresh) and not _changed(entries, before, latest, keep_remote):
            continue  # nothing applied: the current part stays
        part = Part(entries)
        name = part_name(bits, p, head.commit_id)
        head.parts[p] = name
        out.parts[p] = name
        emit(p, name, part, local)
    head.n_keys = (0 if fresh else head.n_keys) + n_keys
    head.n_bytes = (0 if fresh else head.n_bytes) + n_bytes
    head.key_bytes = (0 if fresh else head.key_bytes) + key_bytes
    if fresh:
        head.segments = {}
    for name, delta in live.items():
        if name in sizes and name not in head.segments:
            head.segments[name] = [sizes[name], 0]
        if name in head.segments:
            head.segments[name][1] += delta
    for name, (_size, used) in list(head.segments.items()):
        if used <= 0:
            del head.segments[name]
    written, deleted = len(out.written), len(out.deleted) + len(out.inferred)
    head.written, head.deleted, head.author = written, deleted, author
    earlier = current.recent_entries() if current is not None and not fresh else []
    mine = [head.commit, head.commit_id, head.timestamp, written, deleted]
    head.recent = (earlier + [mine])[-RECENT_COMMITS:]
    out.written.sort()
    out.deleted = sorted(out.deleted + out.inferred)
    return out


def _children(group: int, coarse: int, fine: int) -> range:
    shift = fine - coarse
    return range(group << shift, (group + 1) << shift)


def _changed(entries: dict[str, Entry], before: list[tuple[str, Entry]], latest: dict[str, Record],
             keep_remote: set[str]) -> bool:
    """Whether applying the records changed the part (cheap: only the records' keys)."""
    if len(entries) != len(before):
        return True
    old = dict(before)
    return any(k not in keep_remote and entries.get(k) != old.get(k) for k in latest)
