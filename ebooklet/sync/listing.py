"""The keys of the base that are on the remote only, listed one index part at a time.

Listing the keys of a database whose keys are not all local walks the base's index parts.
The walk holds one decoded part at a time, plus the next few downloaded ahead of time (the
window widens part by part, so that the first key costs one request); each part of the base
is stored locally on the way, as any use of it is (see :meth:`BaseIndex.part`). A walk that
reaches the end checks that the parts hold as many keys as the head says.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence

from ..errors import ChangedDuringIterationError
from ..format import Head, Part
from .index import BaseIndex, check_count

#: Index parts downloaded ahead of the one being listed, at most.
AHEAD = 4


class PartWalk:
    """The parts of one head in order, each read once, the next few downloaded ahead."""

    def __init__(self, index: BaseIndex, head: Head) -> None:
        self.index = index
        self.head = head
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._ahead: dict[int, concurrent.futures.Future[bytes]] = {}

    def part(self, p: int) -> Part:
        """Part ``p`` (the caller holds the database's lock), not kept in memory."""
        self._download_ahead(p)
        future = self._ahead.pop(p, None)
        blob = future.result() if future is not None else None
        return self.index.part(self.head, p, keep=False, blob=blob)

    def _download_ahead(self, p: int) -> None:
        head, index = self.head, self.index
        # As many parts ahead as have been read, up to AHEAD: a walk that stops after its
        # first key has downloaded one part.
        for q in range(p + 1, min(len(head.parts), p + 1 + min(p, AHEAD))):
            if q in self._ahead or index.at_hand(head, q):
                continue
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(AHEAD, thread_name_prefix="ebooklet-keys")
            self._ahead[q] = self._pool.submit(index.objects.get, head.parts[q])  # type: ignore[arg-type]

    def close(self) -> None:
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def lazy_rows(
    index: BaseIndex,
    head: Head | None,
    listed: Collection[str],
    guard: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> Iterator[tuple[Part, Sequence[int]]]:
    """The keys of the base ``head`` that are on the remote only, as ``(part, rows)``, part
    by part.

    ``listed`` are the keys of the data file when the listing started (listed already, or
    to be listed, by the caller). ``guard`` is entered around the work on each part (the
    database's lock): between parts, other threads may use the database. A key that moves
    from the remote to the data file meanwhile (a lazy read) is listed once; a key written
    or deleted meanwhile may or may not be; a push or pull meanwhile (a new base) raises
    ChangedDuringIterationError. A walk that reaches the end raises RemoteFormatError when
    the parts hold another number of keys than the head says.
    """
    if head is None:
        return
    walk = PartWalk(index, head)
    try:
        counted = 0
        for p in range(len(head.parts)):
            with guard():
                if not index.is_base(head):
                    raise ChangedDuringIterationError(
                        "the database was pushed or pulled while keys() was iterating over it; "
                        "iterate again (and finish the iteration before a push or pull)"
                    )
                part = walk.part(p)
                counted += len(part)
                rows = _lazy(index, p, part, listed)
            if rows:
                yield part, rows
        check_count(head, counted, index.remote.location)
    finally:
        walk.close()


def _lazy(index: BaseIndex, p: int, part: Part, listed: Collection[str]) -> Sequence[int]:
    """The rows of base part ``p`` that are on the remote only: the rule of
    :meth:`BaseIndex.lazy_entry`, with ``listed`` standing for the data file when it was
    listed (a key read into the file since then is still lazy here, since it was not listed)."""
    local, touched = index.local, index.local.touched
    bits = local.presence.bits(p)
    if not listed and not touched and bits.count(0) == len(bits):
        return range(len(part))  # nothing here yet (a fresh copy): every row is lazy
    rows = []
    for row, key in enumerate(part.keys):
        if key in listed:
            continue
        if key in touched or (row >> 3) < len(bits) and bits[row >> 3] & (1 << (row & 7)):
            # Written or deleted here, deleted with plain booklet, or read into the data
            # file since the listing started (the only case where it is there now).
            if key in local:
                rows.append(row)
            continue
        rows.append(row)
    return rows
