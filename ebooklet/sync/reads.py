"""Reading values from the remote: ranged GETs checked against their content hashes.

:class:`ValueReader` turns index entries into values (:meth:`ValueReader.read`) and caches the
lazy keys of the base in the local file (:meth:`ValueReader.load`, and :meth:`ValueReader.plan`
for many keys). A :class:`BulkRead` fetches its values in segment order, whichever index parts
they come from, so that neighbouring values share requests and no byte is fetched twice; the
requests run in parallel and each answer is checked and stored as it arrives, so memory holds
a few requests' worth of values, not the whole read. A value whose hash does not match is
never returned or stored.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, TypeVar

from ..errors import ChangedDuringIterationError, IntegrityError
from ..format import HASH_LEN, Entry, Part, hash_in, legacy_segment, value_hashes
from ..local import LocalStore
from ..results import ProgressCallback
from .index import BaseIndex
from .objects import BIG_VALUE, ObjectStore, RangeRequest, Tracker, coalesce, request_size

T = TypeVar("T")


def plan_ranges(entries: dict[str, Entry]) -> list[RangeRequest]:
    """The requests that read the values ``entries`` point at, segment by segment, with
    neighbouring ranges coalesced."""
    by_segment: dict[str, list[tuple[int, int, str]]] = {}
    for key, e in entries.items():
        by_segment.setdefault(e.segment, []).append((e.offset, e.length, key))
    requests = []
    for name, wanted in sorted(by_segment.items()):
        wanted.sort()
        offsets, lengths, _ = zip(*wanted, strict=True)
        size = request_size(sum(lengths))
        for start, length, lo, hi in coalesce(offsets, lengths, size):
            requests.append(RangeRequest(name, start, length, wanted[lo:hi]))
    return requests


class ValueReader:
    """Values of one remote database, read through its object store."""

    def __init__(self, local: LocalStore, index: BaseIndex, objects: ObjectStore) -> None:
        self.local = local
        self.index = index
        self.objects = objects

    def corrupt(self, key: str, segment: str) -> IntegrityError:
        return IntegrityError(
            f"the value of {key!r} from {self.objects.remote.location} does not match its "
            f"content hash: {segment} is corrupt. It was not stored locally; ask the "
            "database's writer to push that key again."
        )

    def read(self, entries: dict[str, Entry], progress: ProgressCallback | None = None) -> dict[str, bytes]:
        """The values the ``entries`` point at, each checked against its hash (nothing is
        cached: these are values of any head, e.g. to settle a conflict)."""
        requests = plan_ranges(entries)
        tracker = Tracker(progress, "download", len(entries), sum(r.length for r in requests))
        def check(req: RangeRequest, data: bytes) -> list[tuple[str, bytes]]:  # in the fetching thread
            out = []
            for offset, n, key in req.members:
                raw = data[offset - req.start : offset - req.start + n]
                if hash_in(req.name, raw) != entries[key].hash:
                    raise self.corrupt(key, req.name)
                out.append((key, raw))
            return out

        values: dict[str, bytes] = {}
        for req, checked in self.objects.get_ranges(requests, check):
            values.update(checked)
            tracker.add(len(req.members), req.length)
        return values

    def plan(self, keys: Iterable[str] | None = None) -> BulkRead:
        """A read of the lazy keys of the base: all of them, or those among ``keys``."""
        return BulkRead(self, self.index.lazy_selection(keys))

    def load(self, keys: Iterable[str], progress: ProgressCallback | None = None) -> dict[str, bytes]:
        """Download base keys' values, check them, and cache them in the data file."""
        bulk = BulkRead(self, self.index.rows_of(keys))
        return {key: raw for fetched in bulk.fetch(progress) for key, raw in bulk.store(*fetched)}


class Answer(NamedTuple):
    """One request's bytes; when its values are large, the values cut from them and their
    hashes (joined), computed in the thread that fetched them (None: left to the caller)."""

    data: bytes  # empty when the values are cut
    raws: list[bytes] | None
    hashes: bytes


#: Entries put in request order at a time by a bulk read's plan.
_TAKE_CHUNK = 1 << 16


def _taker(order: Sequence[int]) -> Callable[[Sequence[T]], Sequence[T]]:
    """A function that picks the items at ``order`` from a sequence (itemgetter, in C)."""
    if len(order) > 1:
        return operator.itemgetter(*order)
    return lambda seq: [seq[i] for i in order]


class BulkRead:
    """Values of many base keys, to fetch in segment order and cache in the local file.

    Made by :meth:`ValueReader.plan` under the database's lock, as a snapshot of the keys to
    read. :meth:`fetch` only talks to the remote; each answer it yields goes to :meth:`store`
    (under the lock), which checks and caches its values and returns them. The entries are
    kept in columns (about 50 bytes a key), in the order of the requests, so that each
    request's members are one slice of them; the values only a few requests at a time.
    """

    def __init__(self, reader: ValueReader, selection: Iterable[tuple[int, Part, Sequence[int]]]) -> None:
        self._reader = reader
        keys: list[str] = []
        ts, hashes, part_no, row_no = array("q"), bytearray(), array("I"), array("I")
        offs, lens = array("Q"), array("I")
        by_segment: dict[str, list[int]] = {}
        for p, part, rows in selection:
            k, t, h, segs, names, o, n = part.columns(rows)
            first = len(keys)
            keys += k
            ts += t
            hashes += h
            part_no += array("I", [p]) * len(k)
            row_no += rows if isinstance(rows, array) else array("I", rows)
            offs += o
            lens += n
            if k and segs.count(segs[0]) == len(segs):  # all in one segment (often)
                by_segment.setdefault(names[segs[0]], []).extend(range(first, first + len(k)))
                continue
            groups: list[list[int]] = [[] for _ in names]
            for i, s in enumerate(segs, first):
                groups[s].append(i)
            for name, members in zip(names, groups, strict=True):
                if members:
                    by_segment.setdefault(name, []).extend(members)
        # The columns are put in request order (segment, then offset) in one C pass each.
        segments = sorted(by_segment.items())
        order = array("I")
        for _, members in segments:
            members.sort(key=offs.__getitem__)
            order += array("I", members)
        self.keys: list[str] = []
        self._ts, self._part, self._row = array("q"), array("I"), array("I")
        self._off, self._len = array("Q"), array("I")
        hash_chunks = []
        h = HASH_LEN
        for i in range(0, len(order), _TAKE_CHUNK):  # in chunks: a getter holds its indexes
            chunk = order[i : i + _TAKE_CHUNK]
            take = _taker(chunk)
            self.keys += take(keys)
            self._ts.extend(take(ts))
            hash_chunks.append(b"".join([hashes[j * h : j * h + h] for j in chunk]))
            self._part.extend(take(part_no))
            self._row.extend(take(row_no))
            self._off.extend(take(offs))
            self._len.extend(take(lens))
        self._hash = b"".join(hash_chunks)
        self.requests: list[RangeRequest] = []
        size = request_size(sum(lens))
        first = 0
        for name, members in segments:
            end = first + len(members)
            for start, length, lo, hi in coalesce(self._off[first:end], self._len[first:end], size):
                self.requests.append(RangeRequest(name, start, length, range(first + lo, first + hi)))
            first = end
        self._base = reader.index.base
        self._n_touched = len(reader.local.touched)
        self._tracker: Tracker | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def bytes_total(self) -> int:
        """Bytes the requests fetch (the values plus the gaps coalescing bridges)."""
        return sum(r.length for r in self.requests)

    def fetch(self, progress: ProgressCallback | None = None) -> Iterator[tuple[RangeRequest, Answer]]:
        """Each request with its answer, fetched in parallel, in segment order."""
        self._tracker = Tracker(progress, "download", len(self.keys), self.bytes_total)
        return self._reader.objects.get_ranges(self.requests, self.cut)

    def cut(self, req: RangeRequest, data: bytes) -> Answer:
        """The values of one request's bytes, and their hashes as computed (not yet checked).

        It runs in the thread that fetched them when the values are large: hashing releases
        the GIL for them, so it runs beside the other requests and the caller's writes to the
        local file. Small values hold the GIL while they are cut and hashed, and are left to
        :meth:`store` (threads taking turns at the GIL would only slow them down)."""
        lo, hi = req.members.start, req.members.stop
        if len(data) < BIG_VALUE * (hi - lo):
            return Answer(data, None, b"")
        return Answer(b"", *self._cut(req, data))  # the values only: not their bytes twice

    def _cut(self, req: RangeRequest, data: bytes) -> tuple[list[bytes], bytes]:
        lo, hi = req.members.start, req.members.stop
        start = req.start
        if hi - lo == 1 and self._len[lo] == len(data):
            raws = [data]  # the answer is the value: no slice
        else:
            raws = [
                data[o - start : o - start + n]
                for o, n in zip(self._off[lo:hi], self._len[lo:hi], strict=True)
            ]
        return raws, value_hashes(raws, legacy_segment(req.name))

    def store(self, req: RangeRequest, answer: Answer) -> list[tuple[str, bytes]]:
        """Check the values of one answer, cache them, and return them as (key, value)."""
        reader = self._reader
        local, index = reader.local, reader.index
        if index.base is not self._base or len(local.touched) != self._n_touched:
            raise ChangedDuringIterationError(
                "the database was written (or synced) while items() or values() iterated over "
                "its remote values; iterate over list(db.keys()) and read each key to write "
                "while iterating"
            )
        lo, hi = req.members.start, req.members.stop
        raws, got = answer.raws, answer.hashes
        if raws is None:
            raws, got = self._cut(req, answer.data)
        else:
            raws = list(raws)
        want = self._hash[lo * HASH_LEN : hi * HASH_LEN]
        bad = None
        if got != want:
            h = HASH_LEN
            bad = next(i for i in range(hi - lo) if got[i * h : (i + 1) * h] != want[i * h : (i + 1) * h])
            del raws[bad:]  # the values before it are kept
        # The values that passed go into the data file in one write, with their presence
        # bits. A key another thread has read (and cached) since the plan is cached again:
        # the same bytes, rarely, rather than a presence lookup for every key.
        n = len(raws)
        keys = self.keys[lo : lo + n]
        local.put_raw_many(zip(keys, raws, self._ts[lo : lo + n], strict=True), req.length)
        local.presence.mark_rows(self._part[lo : lo + n], self._row[lo : lo + n])
        if bad is not None:
            raise reader.corrupt(self.keys[lo + bad], req.name)
        if self._tracker is not None:
            self._tracker.add(hi - lo, req.length)
        return list(zip(keys, raws, strict=True))
