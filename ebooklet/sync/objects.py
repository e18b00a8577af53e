"""The immutable objects of a remote database (segments and index parts), over its transport.

:class:`ObjectStore` reads whole objects and byte ranges, creates objects, and deletes them.
It owns how requests are shaped: neighbouring ranges are coalesced into one request while
the bytes nobody asked for stay a small share of it, large reads are cut into requests that
run in parallel, and a bounded amount is read ahead of the caller (zarr v3's
``Store.get_ranges`` is the model). What the bytes mean, and checking their hashes, is left
to the callers.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, NamedTuple, TypeVar, overload

from ..errors import PreconditionFailed, RemoteError, RemoteFormatError, RemoteNotFoundError
from ..format import MAX_PART_OBJECT_BYTES, value_hash
from ..phases import timed
from ..remote import Remote
from ..results import Progress, ProgressCallback
from ..settings import settings

logger = logging.getLogger(__name__)

#: Parallel requests for uploads and ranged reads.
THREADS = 8
#: A request may carry bytes nobody asked for (the gaps between wanted ranges) up to this
#: share of its length...
WASTE_FRACTION = 0.25
#: ...or up to this many bytes, whichever is more: a request costs a round trip, which is
#: worth more than a few KiB of transfer, and this keeps scattered small values together.
WASTE_ALLOWANCE = 64 * 1024
#: A coalesced request grows up to this size; one value longer than that gets a request of
#: its own.
MAX_REQUEST = 8 * 1024 * 1024
#: A value up to this long is fetched as parallel pieces; its bytes are held twice for a
#: moment (the pieces, then the value they are joined into). A longer one comes with one
#: GET, held once.
MAX_SPLIT = 256 * 1024 * 1024
#: Large reads are cut into requests of at least this size (so that they are not all
#: round trip) and of at most MAX_REQUEST, about THREADS of them per read.
MIN_REQUEST = 1024 * 1024
#: A whole-object read fetches this much first; only a larger object that may be genuine
#: takes a second request.
FIRST_READ = 1024 * 1024
#: At most this many bytes of ranged reads are in flight or waiting to be used at once.
READ_AHEAD = 64 * 1024 * 1024
#: Segments of a push that may upload at once (see :func:`in_flight_bytes`).
UPLOAD_SEGMENTS = 4

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


#: Values at least this long on average are hashed in threads (:func:`hash_ahead`): hashing
#: releases the GIL only for long inputs, and short ones are quicker hashed where they are.
BIG_VALUE = 64 * 1024
#: A batch of more values than this (a MiB of them, at most, comes at a time) holds small ones.
BIG_BATCH = 16
#: Bytes of large values :func:`hash_ahead` holds ahead of its caller, beyond the batch it
#: waits for (a single larger value is hashed alone).
HASH_AHEAD_BYTES = 16 * 1024 * 1024


def hash_ahead(
    batches: Iterable[list[tuple[str, int, bytes | None, int]]], window: int = THREADS
) -> Iterator[tuple[list[tuple[str, int, bytes | None, int]], list[bytes | None]]]:
    """Each batch of changes ``(key, timestamp, value or None, flags)`` with the content
    hash of each value (None for a delete), in order.

    Batches of large values are hashed in threads, up to ``window`` batches and
    HASH_AHEAD_BYTES ahead of the caller, so that their hashing runs beside the caller's
    reading and uploading; the batches read ahead are the only extra memory.
    """
    def hashes(batch: list[tuple[str, int, bytes | None, int]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for _, _, raw, _ in batch:
            if raw is None:
                out.append(None)
                continue
            out.append(value_hash(raw))
        return out

    pool: concurrent.futures.ThreadPoolExecutor | None = None
    pending: collections.deque[tuple[list, concurrent.futures.Future[list[bytes | None]] | None, int]]
    pending = collections.deque()
    held = 0
    try:
        for batch in batches:
            size = 0
            if len(batch) <= BIG_BATCH:
                size = sum(len(raw) for _, _, raw, _ in batch if raw is not None)
            big = size > 0 and size >= BIG_VALUE * len(batch)
            if big and pool is None:
                pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="ebooklet-hash")
            pending.append((batch, pool.submit(hashes, batch) if big and pool is not None else None, size))
            held += size
            while pending and (len(pending) > window or held > HASH_AHEAD_BYTES or pending[0][1] is None):
                done, future, size = pending.popleft()
                held -= size
                yield done, hashes(done) if future is None else future.result()
        while pending:
            done, future, _ = pending.popleft()
            yield done, hashes(done) if future is None else future.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class RangeRequest(NamedTuple):
    """One coalesced request: bytes ``start`` to ``start + length`` of object ``name``, which
    hold the ranges of ``members`` (whatever the caller attached to them, in offset order)."""

    name: str
    start: int
    length: int
    members: Sequence


def request_size(total: int) -> int:
    """The size to cut a read of ``total`` wanted bytes into: about one request per thread,
    within MIN_REQUEST and MAX_REQUEST."""
    return max(MIN_REQUEST, min(MAX_REQUEST, total // THREADS + 1))


def coalesce(
    offsets: Sequence[int], lengths: Sequence[int], max_request: int = MAX_REQUEST
) -> Iterator[tuple[int, int, int, int]]:
    """Group ranges of one object, sorted by offset, into requests with bounded waste.

    Yields ``(start, length, lo, hi)``: one request that covers ranges ``lo`` to ``hi - 1``.
    A range joins the request before it while the request stays within ``max_request`` and
    the gaps it carries stay within WASTE_FRACTION of its length (or WASTE_ALLOWANCE bytes).
    Overlapping ranges cost nothing.
    """
    n = len(offsets)
    if n == 0:
        return
    lo, start, end, waste = 0, offsets[0], offsets[0] + lengths[0], 0
    fraction, allowance = WASTE_FRACTION, WASTE_ALLOWANCE
    for i in range(1, n):  # one step per value of a bulk read: kept to plain comparisons
        o = offsets[i]
        e = o + lengths[i]
        gap = o - end
        merged = (e if e > end else end) - start
        if merged <= max_request:
            if gap <= 0:
                if e > end:
                    end = e
                continue
            if waste + gap <= allowance or waste + gap <= fraction * merged:
                waste += gap
                end = e
                continue
        yield start, end - start, lo, i
        lo, start, end, waste = i, o, e, 0
    yield start, end - start, lo, n


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

    def get(self, name: str, limit: int = MAX_PART_OBJECT_BYTES) -> bytes:
        """The whole object ``name``, which must be at most ``limit`` bytes: a larger one is
        refused after reading its first MiB (it is not one of the format's)."""
        transport, key = self.remote.transport, self.prefix + name
        try:
            blob = transport.get_start(key, min(limit, FIRST_READ))
            assert blob is not None
            if blob.size is not None and blob.size > len(blob.data):
                if blob.size <= limit:
                    blob = transport.get_start(key, limit)
                    assert blob is not None
                if blob.size is not None and blob.size > len(blob.data):
                    raise RemoteFormatError(
                        f"{name} on {self.remote.location} is {blob.size:,} bytes, more than such an "
                        f"object may be ({limit:,}); it was not downloaded. The remote database is "
                        "damaged or was not written by ebooklet; ask whoever writes it"
                    )
        except RemoteNotFoundError:
            raise self.gone(name) from None
        return blob.data

    def get_many(self, names: Sequence[str]) -> dict[str, bytes]:
        """Several whole objects, fetched in parallel."""
        return dict(zip(names, parallel_map(self.get, names), strict=True))

    def get_range(self, req: RangeRequest) -> bytes:
        """The bytes of one request; one longer than MAX_REQUEST (a value larger than that)
        is fetched as parallel ranged GETs of about MAX_REQUEST each, joined in order, up to
        MAX_SPLIT bytes."""
        if MAX_REQUEST < req.length <= MAX_SPLIT:
            n = -(-req.length // MAX_REQUEST)
            size = -(-req.length // n)
            pieces = [
                RangeRequest(req.name, start, min(size, req.start + req.length - start), ())
                for start in range(req.start, req.start + req.length, size)
            ]
            return b"".join(parallel_map(self.get_range, pieces))
        try:
            return self.remote.transport.get_range(self.prefix + req.name, req.start, req.length)
        except RemoteNotFoundError:
            raise self.gone(req.name) from None

    @overload
    def get_ranges(self, requests: Iterable[RangeRequest]) -> Iterator[tuple[RangeRequest, bytes]]: ...

    @overload
    def get_ranges(
        self, requests: Iterable[RangeRequest], prepare: Callable[[RangeRequest, bytes], T]
    ) -> Iterator[tuple[RangeRequest, T]]: ...

    def get_ranges(
        self, requests: Iterable[RangeRequest], prepare: Callable[[RangeRequest, bytes], object] | None = None
    ) -> Iterator[tuple[RangeRequest, object]]:
        """The bytes of each request, fetched in parallel and yielded in order.

        ``requests`` is consumed as the fetching goes: at most THREADS requests run at once and
        at most READ_AHEAD bytes are in flight or waiting to be taken, so a read of any size
        holds a bounded amount of it in memory. Closing the iterator early cancels what has
        not started. ``prepare(request, data)``, when given, runs in the fetching thread and
        its result is yielded instead of the bytes: work on large answers (slicing values,
        hashing them) then runs beside the other requests, not after them.
        """
        fetch = self.get_range if prepare is None else lambda req: prepare(req, self.get_range(req))
        requests = iter(requests)
        first = next(requests, None)
        if first is None:
            return
        second = next(requests, None)
        if second is None:
            yield first, fetch(first)  # one request: no thread
            return
        pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="ebooklet-read")
        pending: collections.deque[tuple[RangeRequest, concurrent.futures.Future[object]]]
        pending = collections.deque()
        queued = itertools.chain((first, second), requests)
        in_flight = 0
        try:
            while True:
                for req in queued:
                    pending.append((req, pool.submit(fetch, req)))
                    in_flight += req.length
                    if in_flight >= READ_AHEAD or len(pending) >= 2 * THREADS:
                        break
                if not pending:
                    return
                req, future = pending.popleft()
                data = future.result()
                in_flight -= req.length
                yield req, data
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

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
                there = self.get(name, limit=len(data))
            except (RemoteNotFoundError, RemoteFormatError):
                there = None  # gone, or larger than ours: not this write
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


def in_flight_bytes() -> int:
    """How many bytes of a push may be waiting or in flight: UPLOAD_SEGMENTS segments (at
    least 16 MiB), so that several segments upload at once; on a store far away each
    connection carries a share of the bandwidth, and two uploads at a time leave most of it
    unused."""
    return max(16 * 1024 * 1024, UPLOAD_SEGMENTS * settings.segment_bytes)


class Uploader:
    """Creates objects in parallel while the caller goes on producing them, with at most
    ``max_bytes`` of them waiting or in flight (the caller blocks past that). ``names`` lists
    every object submitted, for cleaning up after a push that does not commit; the first
    failure is raised by the next :meth:`submit` or by :meth:`wait`."""

    def __init__(self, store: ObjectStore, tracker: Tracker, max_bytes: int | None = None) -> None:
        self.store = store
        self.tracker = tracker
        self.max_bytes = max_bytes if max_bytes is not None else in_flight_bytes()
        self.names: list[str] = []
        #: The objects known to be stored (their upload returned).
        self.stored: list[str] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="ebooklet-upload")
        self._pending: collections.deque[tuple[concurrent.futures.Future[None], int]] = collections.deque()
        self._bytes = 0

    def _put(self, name: str, data: bytes, keys: int) -> None:
        self.store.create(name, data)
        self.stored.append(name)  # list.append is atomic: no lock needed
        self.tracker.add(keys, len(data))

    def submit(self, name: str, data: bytes, keys: int = 0) -> concurrent.futures.Future[None]:
        self._reap(len(data))
        self.names.append(name)
        future = self._pool.submit(self._put, name, data, keys)
        self._pending.append((future, len(data)))
        self._bytes += len(data)
        return future

    def forget(self, names: Iterable[str] | None = None) -> None:
        """Stop listing objects (all, or ``names``) as this uploader's: they were deleted."""
        if names is None:
            self.names.clear()
            self.stored.clear()
            return
        gone = set(names)
        self.names[:] = [n for n in self.names if n not in gone]
        self.stored[:] = [n for n in self.stored if n not in gone]

    def call(self, fn: Callable[..., object], *args: object) -> None:
        """Run other work that must be done before :meth:`wait` returns, in the background."""
        self._reap(0)
        self._pending.append((self._pool.submit(fn, *args), 0))

    def _reap(self, need: int) -> None:
        pending = self._pending
        while pending and (pending[0][0].done() or self._bytes + need > self.max_bytes):
            future, n = pending.popleft()
            self._bytes -= n
            future.result()

    @timed("Uploader.wait")
    def wait(self) -> None:
        """Return once every object submitted is stored (raising the first failure)."""
        while self._pending:
            future, n = self._pending.popleft()
            self._bytes -= n
            future.result()

    def close(self) -> None:
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
