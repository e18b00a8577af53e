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
from collections.abc import Iterable, Iterator

from ..errors import IntegrityError
from ..format import HASH_LEN, Entry, value_hash
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
        return BulkRead(self, self.index.lazy_rows(keys))

    def load(self, keys: Iterable[str], progress: ProgressCallback | None = None) -> dict[str, bytes]:
        """Download base keys' values, check them, and cache them in the data file."""
        located = self.index.locate(keys)
        bulk = BulkRead(self, ((k, e, p, row) for k, (e, p, row) in located.items()))
        return {key: raw for fetched in bulk.fetch(progress) for key, raw in bulk.store(*fetched)}


class BulkRead:
    """Values of many base keys, to fetch in segment order and cache in the local file.

    Made by :meth:`ValueReader.plan` under the database's lock, as a snapshot of the keys to
    read. :meth:`fetch` only talks to the remote; each answer it yields goes to :meth:`store`
    (under the lock), which checks and caches its values and returns them. The entries are
    kept in columns (about 50 bytes a key), the values only a few requests at a time.
    """

    def __init__(self, reader: ValueReader, rows: Iterable[tuple[str, Entry, int, int]]) -> None:
        self._reader = reader
        self.keys: list[str] = []
        self._ts = array("q")
        self._hash = bytearray()
        self._part = array("I")
        self._row = array("I")
        self._off = array("Q")
        self._len = array("I")
        by_segment: dict[str, list[int]] = {}
        add_key, add_ts, add_part = self.keys.append, self._ts.append, self._part.append
        add_row, add_off, add_len = self._row.append, self._off.append, self._len.append
        hashes = self._hash
        for i, (key, entry, p, row) in enumerate(rows):
            ts, h, segment, offset, length = entry
            add_key(key)
            add_ts(ts)
            hashes += h
            add_part(p)
            add_row(row)
            add_off(offset)
            add_len(length)
            members = by_segment.get(segment)
            if members is None:
                members = by_segment[segment] = []
            members.append(i)
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
        out = []
        start, keys, offs, lens, ts, parts, rows = (
            req.start, self.keys, self._off, self._len, self._ts, self._part, self._row
        )
        hashes, put_raw, mark_present = self._hash, local.put_raw, local.mark_present
        # A key another thread has read (and cached) since the plan is cached again: the same
        # bytes, rarely, rather than a presence lookup for every key.
        for i in req.members:
            at = offs[i] - start
            raw = data[at : at + lens[i]]
            key = keys[i]
            if value_hash(raw) != hashes[i * HASH_LEN : (i + 1) * HASH_LEN]:
                raise reader.corrupt(key, req.name)
            put_raw(key, raw, ts[i])
            mark_present(parts[i], rows[i])
            out.append((key, raw))
        if self._tracker is not None:
            self._tracker.add(len(req.members), req.length)
        return out
