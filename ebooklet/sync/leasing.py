"""The remote lock as one push uses it: taken in the background beside the push's first
requests, checked before the commit, given up as soon as the commit lands; and the pauses
between the attempts of a push without it (docs/sync.rst, *Round trips of a push*)."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import RemoteError
from ..format import Head
from ..lock import Lease
from ..lockqueue import MAX_POLL_S, POLL_PER_PLACE_S, Line
from ..remote import Remote
from .heads import HeadStore

Current = tuple[Head | None, str | None]
logger = logging.getLogger(__name__)
#: How often the writer next in line looks at the queue, without the lease (see Turns).
TURN_POLL_S = 0.005
#: Seconds a first waiter without the lease may take to commit before the waiter behind it
#: drops its place (longer than the lease's GRACE_S: a waiter's turn is a whole attempt,
#: a rebase on a large index included, not only the write of a free lease). Waiters further
#: back drop every place ahead of them after twice as long.
TURN_GRACE_S = 10.0
#: How the places of writers without the lease end, in the queue they share with writers
#: waiting for the lease: these wait for their turn to commit, the others for the lease.
TURN_MARK = ":turn"
#: Seconds the store's clock, measured by one look at the queue, serves the next ones.
CLOCK_REUSE_S = 600.0


class LeaseUse:
    """``lease`` for one push: with ``take``, taken here in the background (and given up by
    :meth:`close`); otherwise held already (a session's lease) or None (no lock)."""

    def __init__(self, lease: Lease | None, take: bool) -> None:
        self.lease = lease
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # The lease being taken in the background; None once it is held.
        self._taking: concurrent.futures.Future[Any] | None = None
        if take and lease is not None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ebooklet-lease")
            self._taking = self._pool.submit(lease.__enter__)

    def read_head(self, current: Callable[[], Current]) -> Current:
        """The current head, read beside the lease's first look; when the lease was not free
        then, read again beside the write that takes it (once it is free, the writer before
        us has committed). :meth:`settle` checks that the lease was taken with the token
        expected."""
        taking = self._taking
        if taking is not None and taking.done():
            taking.result()  # held (or why not): the head read now is read under it
            taking = self._taking = None
        head = current()
        if taking is not None:
            lease = self.lease
            assert lease is not None
            lease.taking.wait()
            if lease.expected_token is None:
                taking.result()  # why it could not be taken
            if lease.waited:
                head = current()
        return head

    def token(self, current: Head | None) -> int:
        """The token the commit records: the lease's (past the head's, see
        HeadStore.check_fence), or the one it is being taken with."""
        lease = self.lease
        assert lease is not None
        if self._taking is None:
            HeadStore.check_fence(current, lease)
            return lease.token
        return lease.expected_token if lease.expected_token is not None else -1

    def settle(self, current: Head | None, token: int) -> bool:
        """Once the uploads are stored: the lease held (or the error that says why not);
        False when it was taken with another token than the head records (another writer
        held it between our look and our write): the attempt's head is stale."""
        lease = self.lease
        assert lease is not None
        if self._taking is not None:
            self._taking.result()
            self._taking = None
            HeadStore.check_fence(current, lease)
        return lease.token == token

    def landed(self) -> None:
        """The commit landed: give a lease taken here up now, in the background, so the next
        writer may go on while this one adopts its commit locally."""
        if self._pool is not None and self.lease is not None:
            self._pool.submit(self.lease.release)

    def close(self) -> None:
        """Stop waiting for the lease, and give it up if it was taken here."""
        if self._pool is None or self.lease is None:
            return
        self.lease.cancel()  # stop waiting for another writer, if still waiting
        self._pool.shutdown(wait=True)
        self.lease.__exit__()  # give up the lease if it was taken


class Backoff:
    """Jittered exponential pauses between attempts ("full jitter": a random pause up to a
    bound that doubles each time, from ``first`` to ``most``)."""

    def __init__(self, first: float = 0.05, most: float = 2.0) -> None:
        self.bound = first
        self.most = most
        self._never = threading.Event()

    def sleep(self, remaining: float) -> float:
        """Pause (never past ``remaining`` seconds); return the pause."""
        pause = max(0.0, min(random.uniform(0, self.bound), remaining))
        self._never.wait(pause)
        self.bound = min(self.bound * 2, self.most)
        return pause


class Turns:
    """Without the lease, writers whose pushes collide take turns: they queue in the lock
    queue (:mod:`..lockqueue`, the lease's own; it only orders) and try again when they are
    first, instead of racing each time the head changes, which the quickest writer wins
    again and again (docs/sync.rst, *Without the lease*).

    One per database opened. A push that loses a race takes a place in the queue and waits
    for its turn. A push that committed after other writers' commits (since its base) makes
    the next push look at the queue before its first attempt, and queue behind the writers
    waiting there; a push that finds nobody waiting goes straight ahead, and the next ones
    do not look until others commit beside them again: a writer alone never reads the
    queue. Not the lease: nothing here keeps a writer out, a commit is still only safe by
    the head's conditional write, and a first waiter that does not commit within
    TURN_GRACE_S loses its place."""

    def __init__(self, remote: Remote, ttl: float) -> None:
        self.remote = remote
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}{TURN_MARK}"
        self.contended = False  # others committed beside us since the queue was found empty
        self._line: Line | None = None
        self._clock: tuple[int, float] | None = None  # the store's clock less ours, and when measured
        self._leaving: threading.Thread | None = None
        self._never = threading.Event()

    def _usable(self) -> bool:
        return self.remote.transport.supports_conditional_writes(self.remote.prefix)

    def _new_line(self) -> Line:
        """A line that goes by the store's clock as an earlier one measured it (a request, on
        S3, that each push looking at the queue would otherwise send first)."""
        now = time.monotonic()
        known = self._clock
        line = Line(self.remote, self.owner, self.ttl,
                    known[0] if known is not None and now - known[1] < CLOCK_REUSE_S else None)
        if line.offset_us is None:
            line.store_now()
            assert line.offset_us is not None
            self._clock = (line.offset_us, now)
        return line

    def arrive(self, deadline: float) -> None:
        """Before a push's first attempt: when races were lost lately, queue behind the
        writers waiting, if any, and wait for our turn."""
        if not self.contended:
            return
        try:
            if not self._usable():
                return
            line = self._new_line()
            line.refresh()
            if not [o for o in _turns(line.order) if o != self.owner]:
                self.contended = False  # nobody waits: go ahead, and stop looking
                if self.owner in line.order:
                    # Our own place, which a leave that failed left behind: give it up,
                    # or it stands in front of every later waiter until it expires.
                    line.queue.leave(self.owner, line.store_now())
                return
            self._line = line
            line.keep_place()
            self._wait(line, deadline)
        except RemoteError as exc:
            self._failed(exc)

    def lost(self, deadline: float) -> bool:
        """After a lost race: take a place in the queue (once) and wait for our turn. True
        when this waited behind others; False when we are first already (the caller pauses:
        a writer that does not queue beat us)."""
        self._left()
        try:
            if not self._usable():
                return False
            line = self._line
            if line is None:
                line = self._line = self._new_line()
                line.keep_place()
            else:
                line.refresh()
                line.keep_place()  # at once if a writer behind skipped us
            return self._wait(line, deadline)
        except RemoteError as exc:
            self._failed(exc)
            return False

    def landed(self, others: int) -> None:
        """A push committed, ``others`` commits of other writers after its base: when there
        were any, the next push looks at the queue before its first attempt."""
        if others:
            self.contended = True

    def _wait(self, line: Line, deadline: float) -> bool:
        """Wait until we are the first writer without the lease in ``line``, or until
        ``deadline``; True when it waited. Writers waiting for the lease are not waited for
        (they wait for its holder, not for the head) and never dropped.

        A first waiter that stays first for TURN_GRACE_S (it is gone, or its place was
        forged) is dropped by the waiter right behind it; should that one be gone too, a
        waiter further back drops every place ahead of it after twice as long."""
        waited = False
        ahead: tuple[str | None, float] = (None, 0.0)
        while True:
            turns = _turns(line.order)
            if self.owner not in turns:
                # No place (the queue is full, or cannot be replaced): nothing to wait in
                # turn for; the caller races, as without a queue.
                return waited
            place = turns.index(self.owner)
            if place == 0:
                return waited
            now = time.monotonic()
            if turns[0] != ahead[0]:
                ahead = (turns[0], now)
            elif now - ahead[1] >= TURN_GRACE_S * min(place, 2):
                logger.info("push: the first writer in the lock queue of %s has not committed for "
                            "%g s; dropping %s", self.remote.location, now - ahead[1],
                            "its place" if place == 1 else f"the {place} places ahead")
                line.queue.leave(turns[0], line.store_now(), frozenset(turns[1:place]))
                line.refresh()
                line.keep_place()
                continue
            remaining = deadline - now
            if remaining <= 0:
                return waited
            waited = True
            # The waiter next in line looks every 5 ms: it is first as soon as the writer
            # before it has committed and left.
            pause = TURN_POLL_S if place <= 1 else min(MAX_POLL_S, POLL_PER_PLACE_S * place)
            self._never.wait(min(pause, remaining) * (1 + random.random() / 4))
            line.refresh()
            line.keep_place()

    def _failed(self, exc: RemoteError) -> None:
        # The line is kept: a place it holds is given up beside the commit, or at the end.
        logger.info("the lock queue of %s failed (%s); racing without it", self.remote.location, exc)

    def leave_soon(self) -> None:
        """Give our place up in the background, beside the commit: the next waiter looks
        again about when the commit lands. (Should the commit lose, we queue again, at the
        end: a first waiter that kept losing to a writer that does not queue would hold
        everyone behind it through its backoff.)"""
        if self._line is None:
            return
        self._left()  # an earlier leave whose join was interrupted
        self._leaving = threading.Thread(target=self.leave, name="ebooklet-turns", daemon=True)
        self._leaving.start()

    def _left(self) -> None:
        if self._leaving is not None:
            self._leaving.join()
            self._leaving = None

    def leave(self) -> None:
        """Give our place up (the push committed, or gave up)."""
        if self._leaving is not None and threading.current_thread() is not self._leaving:
            self._left()  # and then our line, should one have been taken since
        line, self._line = self._line, None
        if line is None:
            return
        try:
            line.leave()
        except RemoteError as exc:
            logger.info("leaving the lock queue of %s failed (%s); the place expires",
                        self.remote.location, exc)


def _turns(order: list[str]) -> list[str]:
    """The places of writers without the lease in a queue's ``order``."""
    return [owner for owner in order if owner.endswith(TURN_MARK)]
