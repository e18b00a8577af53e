"""The immutable objects of a remote database (segments and index parts), over its transport.

:class:`ObjectStore` reads whole objects and byte ranges, creates objects, and deletes them.
It owns how requests are shaped: neighbouring ranges are coalesced into one request and
requests run in parallel (zarr v3's ``Store.get_ranges`` is the model). What the bytes mean,
and checking their hashes, is left to the callers.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, NamedTuple, TypeVar

from ..errors import PreconditionFailed, RemoteError, RemoteNotFoundError
from ..remote import Remote
from ..results import Progress, ProgressCallback

logger = logging.getLogger(__name__)

#: Ranges closer than this are fetched with one request.
COALESCE_GAP = 64 * 1024
#: ...as long as the merged request stays under this size.
COALESCE_MAX = 8 * 1024 * 1024
#: Parallel requests for uploads and ranged reads.
THREADS = 8

T = TypeVar("T")
R = TypeVar("R")


class Tracker:
    """Counts finished work and reports it to a progress callback, from any thread."""

    def __init__(
        self,
        callback: ProgressCallback | None,
        phase: Literal["upload", "download"],
        keys_total: int = 0,
        bytes_total: int = 0,
    ) -> None:
        self.callback = callback
        self.phase = phase
        self.keys_total = keys_total
        self.bytes_total = bytes_total
        self.keys = 0
        self.bytes = 0
        self._lock = threading.Lock()
        if callback is not None:
            callback(Progress(phase, 0, keys_total, 0, bytes_total))

    def add(self, keys: int, nbytes: int) -> None:
        if self.callback is None:
            return
        with self._lock:
            self.keys += keys
            self.bytes += nbytes
            self.callback(Progress(self.phase, self.keys, self.keys_total, self.bytes, self.bytes_total))


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """``map`` over a thread pool (in the calling thread when there is only one item)."""
    if len(items) <= 1:
        yield from map(fn, items)
        return
    with concurrent.futures.ThreadPoolExecutor(min(THREADS, len(items))) as pool:
        yield from pool.map(fn, items)


class RangeRequest(NamedTuple):
    """One coalesced request: bytes ``start`` to ``start + length`` of object ``name``, which
    hold each caller's ``(offset, length, tag)`` in ``members``."""

    name: str
    start: int
    length: int
    members: list[tuple[int, int, str]]


def coalesce(ranges: dict[str, list[tuple[int, int, str]]]) -> list[RangeRequest]:
    """Group the wanted ``(offset, length, tag)`` ranges of each object into requests."""
    requests: list[RangeRequest] = []
    for name, wanted in ranges.items():
        wanted.sort()
        group = [wanted[0]]
        start, end = wanted[0][0], wanted[0][0] + wanted[0][1]
        for r in wanted[1:]:
            r_end = r[0] + r[1]
            if r[0] - end <= COALESCE_GAP and max(end, r_end) - start <= COALESCE_MAX:
                end = max(end, r_end)
                group.append(r)
            else:
                requests.append(RangeRequest(name, start, end - start, group))
                group, start, end = [r], r[0], r_end
        requests.append(RangeRequest(name, start, end - start, group))
    return requests


class ObjectStore:
    """Segments and index parts of one database; names are relative to its prefix."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.prefix = remote.prefix

    def gone(self, name: str) -> RemoteNotFoundError:
        return RemoteNotFoundError(
            f"{name} is gone from {self.remote.location}: the remote has moved on and removed "
            "old objects. Pull, then try again."
        )

    def get(self, name: str) -> bytes:
        """The whole object ``name``."""
        try:
            blob = self.remote.transport.get(self.prefix + name)
        except RemoteNotFoundError:
            raise self.gone(name) from None
        assert blob is not None
        return blob.data

    def get_many(self, names: Sequence[str]) -> dict[str, bytes]:
        """Several whole objects, fetched in parallel."""
        return dict(zip(names, parallel_map(self.get, names), strict=True))

    def get_ranges(
        self, requests: Sequence[RangeRequest]
    ) -> Iterator[tuple[RangeRequest, bytes]]:
        """The bytes of each request (see :func:`coalesce`), fetched in parallel, in order."""

        def fetch(req: RangeRequest) -> tuple[RangeRequest, bytes]:
            try:
                return req, self.remote.transport.get_range(self.prefix + req.name, req.start, req.length)
            except RemoteNotFoundError:
                raise self.gone(req.name) from None

        return parallel_map(fetch, requests)

    def put_many(
        self, objects: Sequence[tuple[str, bytes]], tracker: Tracker, keys: dict[str, int] | None = None
    ) -> None:
        """Create the objects (in parallel); ``keys`` counts the values in each, for progress."""
        counts = keys or {}

        def put(obj: tuple[str, bytes]) -> None:
            self.create(*obj)
            tracker.add(counts.get(obj[0], 0), len(obj[1]))

        for _ in parallel_map(put, objects):
            pass

    def create(self, name: str, data: bytes) -> None:
        """Create the object ``name``, which must not exist yet.

        Names are unique to the commit that writes them, so an object already there with the
        same bytes is this very write: a retried request whose first attempt was applied.
        """
        try:
            self.remote.transport.put(self.prefix + name, data, "create")
        except PreconditionFailed:
            try:
                there = self.get(name)
            except RemoteNotFoundError:
                there = None
            if there != data:
                raise RemoteError(
                    f"{name} already exists on {self.remote.location} with other content; object "
                    "names are unique to each push, so something else writes under this "
                    "database's prefix. Push again."
                ) from None

    def delete_quietly(self, names: Iterable[str]) -> None:
        """Delete unreferenced objects; a failure is logged (leftovers lose nothing)."""
        names = list(names)
        try:
            self.remote.transport.delete([self.prefix + name for name in names])
        except Exception as exc:  # noqa: BLE001 - leftovers are unreferenced; nothing is lost
            logger.warning("could not delete %d unreferenced objects: %s", len(names), exc)
