"""Reading values from the remote: ranged GETs checked against their content hashes.

:class:`ValueReader` turns index entries into values (:meth:`ValueReader.read`) and caches the
lazy keys of the base in the local file (:meth:`ValueReader.load`). A value whose hash does not
match is never returned or stored.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import IntegrityError
from ..format import Entry, value_hash
from ..local import LocalStore
from ..results import ProgressCallback
from .index import BaseIndex
from .objects import ObjectStore, Tracker, coalesce


class ValueReader:
    """Values of one remote database, read through its object store."""

    def __init__(self, local: LocalStore, index: BaseIndex, objects: ObjectStore) -> None:
        self.local = local
        self.index = index
        self.objects = objects

    def read(self, entries: dict[str, Entry], progress: ProgressCallback | None = None) -> dict[str, bytes]:
        """The values the ``entries`` point at, each checked against its hash."""
        by_segment: dict[str, list[tuple[int, int, str]]] = {}
        for key, e in entries.items():
            by_segment.setdefault(e.segment, []).append((e.offset, e.length, key))
        requests = coalesce(by_segment)
        tracker = Tracker(progress, "download", len(entries), sum(r.length for r in requests))
        values: dict[str, bytes] = {}
        for req, data in self.objects.get_ranges(requests):
            for offset, n, key in req.members:
                raw = data[offset - req.start : offset - req.start + n]
                if value_hash(raw) != entries[key].hash:
                    raise IntegrityError(
                        f"the value of {key!r} from {self.objects.remote.location} does not match "
                        f"its content hash: {req.name} is corrupt. Nothing was stored locally; ask "
                        "the database's writer to push that key again."
                    )
                values[key] = raw
            tracker.add(len(req.members), req.length)
        return values

    def load(self, keys: Iterable[str], progress: ProgressCallback | None = None) -> dict[str, bytes]:
        """Download base keys' values, check them, and cache them in the data file."""
        wanted = self.index.locate(keys)
        values = self.read({k: w[0] for k, w in wanted.items()}, progress)
        for key, raw in values.items():
            entry, p, row = wanted[key]
            self.local.put_raw(key, raw, entry.timestamp)
            self.local.mark_present(p, row)
        return values
