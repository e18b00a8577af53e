"""Reading many values at once: iteration over items and values, get_items, load_items.

A base class of :class:`ebooklet.EBooklet`, kept apart so that the database class stays small;
it uses the database's lock, local store, base index and codec.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from .codec import Codec
from .errors import ChangedDuringIterationError
from .local import LocalStore
from .results import ProgressCallback
from .sync import Replica
from .sync.index import BaseIndex
from .sync.listing import lazy_rows

#: Entries of the local file read at a time, under the database's lock, by items() and values().
_LOCAL_CHUNK = 1024


class BulkReads:
    """Reading many values at once (a base class of EBooklet)."""

    # What the database provides (see EBooklet).
    _lock: threading.RLock
    _local: LocalStore
    _index: BaseIndex
    _replica: Replica
    _codec: Codec

    def _iter_items(self) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs: local ones, then remote ones not fetched yet.

        Remote values are downloaded in the order they are stored on the remote, several
        requests at a time, and cached in the local file as they arrive; memory holds a few
        requests' worth of them, however large the database. The keys are a snapshot taken
        when iteration starts. As with booklet, writing to the database while
        iterating (from this thread or another) raises ChangedDuringIterationError;
        ``list(db.keys())`` is a list to iterate over instead.
        """
        return self._iter_pairs(with_keys=True)

    def _iter_values(self) -> Iterator[Any]:
        return self._iter_pairs(with_keys=False)

    def _iter_pairs(self, with_keys: bool) -> Iterator[Any]:
        self._check()
        with self._lock:
            # Planned before the local keys are listed: a key another thread fetches in
            # between is then still read once (a write that moves it raises ChangedDuringIterationError).
            bulk = self._replica.values.plan()
        for pair in self._local_items():
            yield pair if with_keys else pair[1]
        decode, loads = self._codec.decode, self._codec.loads
        if self._codec.bounds_inflation:
            loads = decode  # each value's inflated size is checked before it is inflated
        for fetched in bulk.fetch():
            with self._lock:
                self._check()
                pairs = bulk.store(*fetched)
            if not pairs:
                continue
            keys, raws = zip(*pairs, strict=True)
            try:
                values = list(map(loads, raws))  # the values of a whole answer at once...
            except Exception:  # noqa: BLE001 - ...and one by one to name the key that fails
                for key, raw in pairs:
                    yield (key, decode(raw, key)) if with_keys else decode(raw, key)
                continue
            if with_keys:
                yield from zip(keys, values, strict=True)
            else:
                yield from values

    def _local_items(self) -> Iterator[tuple[str, Any]]:
        # The file is read a chunk at a time under the database's lock, so that no write of
        # another thread lands in the middle of a read; a write between two chunks makes
        # booklet's iteration refuse to go on.
        items = self._local.raw_items()
        try:
            while True:
                with self._lock:
                    chunk = list(itertools.islice(items, _LOCAL_CHUNK))
                if not chunk:
                    return
                for key, _ts, raw in chunk:
                    yield key, self._decode_local(key, raw)
        except ChangedDuringIterationError:
            raise
        except RuntimeError as exc:  # booklet's "mutated during iteration"
            raise ChangedDuringIterationError(
                "the database was written (by this thread or another) while items() or values() "
                "iterated over it; iterate over list(db.keys()) and read each key, or hold off "
                "writes until the iteration ends"
            ) from exc

    def get_items(self, keys: Iterable[str], default: Any = None) -> Iterator[tuple[str, Any]]:
        """(key, value) for each key, fetching all missing remote values first (as
        :meth:`load_items` does)."""
        self._check()
        keys = list(keys)
        self.load_items(keys)
        for key in keys:
            with self._lock:
                found = self._local.get_raw(key)
                value = default if found is None else self._decode_local(key, found[1])
            yield key, value

    def load_items(self, keys: Iterable[str] | None = None, progress: ProgressCallback | None = None) -> int:
        """Fetch remote values into the local file (all when ``keys`` is None).

        Values are downloaded in the order they are stored on the remote, with coalesced
        ranged GETs (never fetching much more than was asked for) over a thread pool, and
        written to the local file as they arrive. ``progress`` is called with an
        :class:`ebooklet.Progress` as they do. Returns how many values were downloaded.
        """
        self._check()
        if keys is not None:
            keys = list(keys)
            for key in keys:
                self._check_key(key)
        with self._lock:
            bulk = self._replica.values.plan(keys)
            if not bulk:
                return 0
            for fetched in bulk.fetch(progress):
                bulk.store(*fetched)
            return len(bulk)

    def timestamps(self, include_value: bool = False) -> Iterator[tuple[Any, ...]]:
        """(key, timestamp) for every key, or (key, timestamp, value)."""
        self._check()
        if include_value:
            for key, value in self.items():
                yield key, self.get_timestamp(key), value
            return
        with self._lock:
            stamps = list(self._local.timestamps())
            listed = {key for key, _ in stamps}
            for part, rows in lazy_rows(self._index, self._index.base, listed):
                keys, ts = part.columns(rows)[:2]
                stamps += zip(keys, ts, strict=True)
        yield from stamps

