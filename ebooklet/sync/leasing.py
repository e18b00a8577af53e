"""The remote lock as one push uses it: taken in the background beside the push's first
requests, checked before the commit, given up as soon as the commit lands; and the pauses
between the attempts of a push without it (docs/sync.rst, *Round trips of a push*)."""

from __future__ import annotations

import concurrent.futures
import random
import threading
from collections.abc import Callable
from typing import Any

from ..format import Head
from ..lock import Lease
from .heads import HeadStore

Current = tuple[Head | None, str | None]


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
