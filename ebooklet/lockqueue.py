"""The queue of writers waiting for the remote lock, so that they are served in order of
arrival (docs/sync.rst, *The remote lock*).

The queue is a small JSON object beside the lease, ``{db_key}.ebooklet/lease.queue``:
``{"waiters": [[owner, until_us], ...]}``, oldest first. A writer that finds the lease held
appends itself with a conditional write (``If-Match`` on the queue's ETag, or
``If-None-Match: *`` when there is none), and renews its place while it waits; a free lease
goes to the first live waiter only. ``until_us`` is the store's clock (each waiter measures
its offset to the store once), so waiters whose clocks disagree still agree on who is live.

It lives in an object of its own, not in the lease, because ebooklet 0.6.0 refuses a lease
with any field but ``owner``, ``expires`` and ``token`` as malformed and takes it over: a
queue inside the lease would let an older writer take a lease that a newer one holds. Older
writers ignore the queue: they take a free lease without queueing, and mutual exclusion still
holds, since every holder takes the lease with a conditional write of the lease itself.

The queue only orders; it never grants. A hostile or broken queue (see :func:`queue_problem`)
is read as empty, with a warning, so it can cost fairness, never exclusion or progress.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from .errors import PreconditionFailed, RemoteError, RemoteFormatError, RemoteNotFoundError
from .remote import Remote, Update
from .settings import now_us

logger = logging.getLogger(__name__)

#: Most waiters a queue holds; a writer that finds it full waits without a place.
MAX_WAITERS = 256
#: The largest queue object read (256 waiters of 256-character names fit).
MAX_QUEUE_BYTES = 96 * 1024
#: A place expiring further ahead than this (in the store's clock) is not believed.
MAX_AHEAD_US = 24 * 3600 * 10**6
MAX_OWNER_CHARS = 256


def queue_problem(raw: Any, now_us: int) -> str | None:
    """What is wrong with a decoded queue object, or None: the rule of each field."""
    if not isinstance(raw, dict) or set(raw) != {"waiters"} or not isinstance(raw["waiters"], list):
        return "is not {waiters: [[owner, until], ...]}"
    waiters = raw["waiters"]
    if len(waiters) > MAX_WAITERS:
        return f"lists {len(waiters):,} waiters, more than {MAX_WAITERS}"
    seen = set()
    for entry in waiters:
        if not isinstance(entry, list) or len(entry) != 2:
            return "has a waiter that is not [owner, until]"
        owner, until = entry
        if not isinstance(owner, str) or not 0 < len(owner) <= MAX_OWNER_CHARS or not owner.isprintable():
            return f"has a waiter that is not a printable name of at most {MAX_OWNER_CHARS} characters"
        if owner in seen:
            return "lists a waiter twice"
        seen.add(owner)
        if not isinstance(until, int) or isinstance(until, bool) or not 0 <= until <= now_us + MAX_AHEAD_US:
            return "has a waiter whose place expires outside 0 .. a day from now"
    return None


@dataclass
class Waiters:
    """The queue as read: ``entries`` oldest first, and the ETag to update it with (None:
    there is no queue object, unless ``replaceable`` is False: there is one, too large to
    read whole, whose store gave no ETag for it, so it cannot be replaced conditionally)."""

    entries: list[tuple[str, int]]
    etag: str | None
    replaceable: bool = True

    def live(self, now_us: int) -> list[str]:
        """The owners whose place has not expired, in order."""
        return [owner for owner, until in self.entries if until > now_us]


class WaitQueue:
    """The queue of one database's lease (see the module's docstring)."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.key = f"{remote.prefix}lease.queue"

    def read(self, now_us: int) -> Waiters:
        """The queue now; a malformed one reads as empty (with a warning)."""
        transport = self.remote.transport
        try:
            blob = transport.get_start(self.key, MAX_QUEUE_BYTES)
        except RemoteNotFoundError:
            return Waiters([], None)
        assert blob is not None
        try:
            if blob.size is not None and blob.size > len(blob.data):
                raise RemoteFormatError(f"is {blob.size:,} bytes, more than {MAX_QUEUE_BYTES:,}")
            try:
                raw = json.loads(blob.data)
            except (ValueError, RecursionError):
                raise RemoteFormatError("is not JSON") from None
            problem = queue_problem(raw, now_us)
            if problem:
                raise RemoteFormatError(problem)
        except RemoteFormatError as exc:
            logger.warning("the lock queue of %s %s; it is read as empty", self.remote.location, exc)
            # Only its start was read: a store that hashes content for ETags (the folder)
            # gives none, and the object can then be neither created nor updated.
            return Waiters([], blob.etag or None, replaceable=bool(blob.etag))
        return Waiters([(owner, until) for owner, until in raw["waiters"]], blob.etag or None)

    def _write(self, waiters: Waiters, entries: list[tuple[str, int]]) -> bool:
        """Replace the queue read as ``waiters`` with ``entries``; False when it changed since."""
        data = json.dumps({"waiters": [list(e) for e in entries]}).encode()
        mode: Any = "create" if waiters.etag is None else Update(waiters.etag)
        try:
            self.remote.transport.put(self.key, data, mode)
        except PreconditionFailed:
            return False
        return True

    def join(self, owner: str, until_us: int, now_us: int) -> list[str] | None:
        """Take a place at the end (or renew ours where it is) until ``until_us``; return the
        live waiters in order, or None when the queue is full (or cannot be replaced, see
        Waiters). Places that expired are dropped on the way."""
        while True:
            waiters = self.read(now_us)
            if not waiters.replaceable:
                return None  # waits without a place (the object is left alone)
            entries = [(o, u) for o, u in waiters.entries if u > now_us and o != owner]
            mine = next((i for i, (o, _) in enumerate(waiters.entries) if o == owner), None)
            if mine is not None and waiters.entries[mine][1] > now_us:
                # Renewed where it stands: its place is its order of arrival.
                ahead = [o for o, u in waiters.entries[:mine] if u > now_us]
                entries.insert(len(ahead), (owner, until_us))
            elif len(entries) >= MAX_WAITERS:
                return None
            else:
                entries.append((owner, until_us))
            if self._write(waiters, entries):
                return [o for o, _ in entries]

    def leave(self, owner: str, now_us: int, skipped: frozenset[str] = frozenset()) -> None:
        """Remove ``owner`` (and the ``skipped`` waiters, which did not take the lease when it
        was theirs, and expired places) from the queue."""
        while True:
            waiters = self.read(now_us)
            gone = skipped | {owner}
            entries = [(o, u) for o, u in waiters.entries if u > now_us and o not in gone]
            if entries == waiters.entries or self._write(waiters, entries):
                return


#: Seconds a free lease is left to the first waiter before the next waiters may take it (a
#: first waiter that is gone, or a forged place, costs this once).
GRACE_S = 3.0
#: How often the first waiter looks at the lease, and the pause per place further back with
#: which the others look at the queue (at most MAX_POLL_S). The second waiter becomes first
#: when the first takes the lease, and must look again within about one push of the holder's
#: for the lease to change hands without a pause (docs/sync.rst, *The remote lock*).
FRONT_POLL_S = 0.01
POLL_PER_PLACE_S = 0.02
MAX_POLL_S = 1.0


class Line:
    """One writer's place in the queue while it waits for the lease: when to look, whether
    it may take a free lease, and its place kept while it waits (renewed every ``ttl / 3``)."""

    def __init__(self, remote: Remote, owner: str, ttl: float, offset_us: int | None = None) -> None:
        self.queue = WaitQueue(remote)
        self.owner = owner
        self.ttl_us = int(ttl * 1e6)
        self.transport = remote.transport
        #: The store's clock less ours (None: not measured yet; given: measured by an earlier line).
        self.offset_us: int | None = offset_us
        #: The live waiters as last read (empty: nobody waits, or not read yet).
        self.order: list[str] = []
        self._placed_at: float | None = None  # time.monotonic() of our last write of our place
        self._free: tuple[str | None, float] | None = None  # a free lease's ETag, first seen when
        self._lease_looked = 0.0
        self._queue_looked = time.monotonic()

    def store_now(self) -> int:
        """The store's clock now, in microseconds (measured once; our clock where the store
        cannot tell)."""
        if self.offset_us is None:
            self.offset_us = 0
            if self.transport.knows_ages:
                try:
                    self.offset_us = int(self.transport.store_time() * 1e6) - now_us()
                except RemoteError:
                    pass
        return now_us() + self.offset_us

    def seen(self, waiters: Waiters) -> None:
        """Take note of the queue as read."""
        self.order = waiters.live(self.store_now()) if waiters.entries else []

    def refresh(self) -> None:
        self.seen(self.queue.read(self.store_now()))

    @property
    def first(self) -> bool:
        return not self.order or self.order[0] == self.owner

    @property
    def placed(self) -> bool:
        return self._placed_at is not None

    def may_take(self, lease_etag: str | None) -> frozenset[str] | None:
        """Whether a free lease (of ``lease_etag``) is ours to take: None when not, else the
        waiters ahead that it skips (they let it lie for GRACE_S)."""
        if self.first:
            return frozenset()
        now = time.monotonic()
        if self._free is None or self._free[0] != lease_etag:
            self._free = (lease_etag, now)
        if now - self._free[1] < GRACE_S:
            return None
        mine = self.order.index(self.owner) if self.owner in self.order else len(self.order)
        return frozenset(self.order[:mine])

    def keep_place(self) -> None:
        """Take a place, or renew ours once a third of its time has passed (or at once, when
        it is gone: we were skipped)."""
        now = time.monotonic()
        if (self._placed_at is not None and now - self._placed_at < self.ttl_us / 3e6
                and self.owner in self.order):
            return
        store_now = self.store_now()
        order = self.queue.join(self.owner, store_now + self.ttl_us, store_now)
        if order is not None:
            self.order = order
            self._placed_at = now

    def pause(self) -> float:
        """Seconds until the next look: the first waiter looks often, the others less."""
        if self.first:
            return FRONT_POLL_S
        place = self.order.index(self.owner) if self.owner in self.order else len(self.order)
        return min(MAX_POLL_S, POLL_PER_PLACE_S * place)

    def recheck_due(self) -> bool:
        """Whether the first waiter should read the queue again (about every GRACE_S / 2: to
        find that it was skipped)."""
        now = time.monotonic()
        if now - self._queue_looked >= GRACE_S / 2:
            self._queue_looked = now
            return True
        return False

    def lease_due(self) -> bool:
        """Whether a waiter behind the first should look at the lease now (about every
        GRACE_S / 2: to find a lease the first waiter left lying)."""
        now = time.monotonic()
        if self.first or now - self._lease_looked >= GRACE_S / 2:
            self._lease_looked = now
            return True
        return False

    def leave(self, skipped: frozenset[str] = frozenset()) -> None:
        """Give our place up (and drop the ``skipped`` waiters'), if we hold one."""
        if self._placed_at is None and not skipped:
            return
        self._placed_at = None
        self.queue.leave(self.owner, self.store_now(), skipped)

    def leave_in_background(self, skipped: frozenset[str]) -> threading.Thread | None:
        """:meth:`leave` in a thread of its own (returned, to join), when there is anything
        to leave."""
        if self._placed_at is None and not skipped:
            return None

        def leave() -> None:
            try:
                self.leave(skipped)
            except Exception as exc:  # noqa: BLE001 - the place expires by itself
                logger.info("leaving the lock queue of %s failed (%s)", self.queue.remote.location, exc)

        thread = threading.Thread(target=leave, name="ebooklet-lease-queue", daemon=True)
        thread.start()
        return thread

