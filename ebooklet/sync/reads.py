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

from array import array
from collections.abc import Iterable, Iterator, Sequence

from ..errors import IntegrityError
from ..format import HASH_LEN, Entry, Part, value_hash
from ..local import LocalStore
from ..results import ProgressCallback
from .index import BaseIndex
from .objects import ObjectStore, RangeRequest, Tracker, coalesce, request_size


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
        values: dict[str, bytes] = {}
        for req, data in self.objects.get_ranges(requests):
            for offset, n, key in req.members:
                raw = data[offset - req.start : offset - req.start + n]
                if value_hash(raw) != entries[key].hash:
                    raise self.corrupt(key, req.name)
                values[key] = raw
            tracker.add(len(req.members), req.length)
        return values

    def plan(self, keys: Iterable[str] | None = None) -> BulkRead:
        """A read of the lazy keys of the base: all of them, or those among ``keys``."""
        return BulkRead(self, self.index.lazy_selection(keys))

    def load(self, keys: Iterable[str], progress: ProgressCallback | None = None) -> dict[str, bytes]:
        """Download base keys' values, check them, and cache them in the data file."""
        bulk = BulkRead(self, self.index.rows_of(keys))
        return {key: raw for fetched in bulk.fetch(progress) for key, raw in bulk.store(*fetched)}


class BulkRead:
    """Values of many base keys, to fetch in segment order and cache in the local file.

    Made by :meth:`ValueReader.plan` under the database's lock, as a snapshot of the keys to
    read. :meth:`fetch` only talks to the remote; each answer it yields goes to :meth:`store`
    (under the lock), which checks and caches its values and returns them. The entries are
    kept in columns (about 50 bytes a key), the values only a few requests at a time.
    """

    def __init__(self, reader: ValueReader, selection: Iterable[tuple[int, Part, Sequence[int]]]) -> None:
        self._reader = reader
        self.keys: list[str] = []
        self._ts = array("q")
        self._hash = bytearray()
        self._part = array("I")
        self._row = array("I")
        self._off = array("Q")
        self._len = array("I")
        by_segment: dict[str, list[int]] = {}
        for p, part, rows in selection:
            keys, ts, hashes, segs, names, offs, lens = part.columns(rows)
            first = len(self.keys)
            self.keys += keys
            self._ts += ts
            self._hash += hashes
            self._part += array("I", [p]) * len(keys)
            self._row += rows if isinstance(rows, array) else array("I", rows)
            self._off += offs
            self._len += lens
            groups: list[list[int]] = [[] for _ in names]
            for i, s in enumerate(segs, first):
                groups[s].append(i)
            for name, members in zip(names, groups, strict=True):
                if members:
                    by_segment.setdefault(name, []).extend(members)
        self.requests: list[RangeRequest] = []
        size = request_size(sum(self._len))
        for name, members in sorted(by_segment.items()):
            members.sort(key=self._off.__getitem__)
            order = array("I", members)
            offsets = array("Q", map(self._off.__getitem__, order))
            lengths = array("I", map(self._len.__getitem__, order))
            for start, length, lo, hi in coalesce(offsets, lengths, size):
                self.requests.append(RangeRequest(name, start, length, order[lo:hi]))
        self._base = reader.index.base
        self._n_touched = len(reader.local.touched)
        self._tracker: Tracker | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def bytes_total(self) -> int:
        """Bytes the requests fetch (the values plus the gaps coalescing bridges)."""
        return sum(r.length for r in self.requests)

    def fetch(self, progress: ProgressCallback | None = None) -> Iterator[tuple[RangeRequest, bytes]]:
        """Each request with its bytes, fetched in parallel, in segment order."""
        self._tracker = Tracker(progress, "download", len(self.keys), self.bytes_total)
        return self._reader.objects.get_ranges(self.requests)

    def store(self, req: RangeRequest, data: bytes) -> list[tuple[str, bytes]]:
        """Check the values of one answer, cache them, and return them as (key, value)."""
        reader = self._reader
        local, index = reader.local, reader.index
        if index.base is not self._base or len(local.touched) != self._n_touched:
            raise RuntimeError(
                "the database was written (or synced) while its remote values were being read; "
                "collect the keys first (list(db.keys())) to write while iterating"
            )
        start, keys, offs, lens, ts = req.start, self.keys, self._off, self._len, self._ts
        hashes = self._hash
        out: list[tuple[str, bytes]] = []
        add = out.append
        bad = None
        for i in req.members:
            at = offs[i] - start
            raw = data[at : at + lens[i]]
            if value_hash(raw) != hashes[i * HASH_LEN : (i + 1) * HASH_LEN]:
                bad = i
                break
            add((keys[i], raw))
        # The values that passed go into the data file in one write, with their presence
        # bits. A key another thread has read (and cached) since the plan is cached again:
        # the same bytes, rarely, rather than a presence lookup for every key.
        members = req.members[: len(out)]
        local.put_raw_many((k, raw, ts[i]) for (k, raw), i in zip(out, members, strict=True))
        parts, rows = self._part, self._row
        by_part: dict[int, list[int]] = {}
        for i in members:
            p = parts[i]
            got = by_part.get(p)
            if got is None:
                got = by_part[p] = []
            got.append(rows[i])
        for p, got in by_part.items():
            local.mark_rows_present(p, got)
        if bad is not None:
            raise reader.corrupt(keys[bad], req.name)
        if self._tracker is not None:
            self._tracker.add(len(req.members), req.length)
        return out
