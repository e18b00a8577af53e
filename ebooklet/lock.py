"""The remote lock: a lease object that serialises pushes to one database.

The lease is a small JSON object at ``{db_key}.ebooklet/lease`` holding its owner, its expiry
and a fencing token. It is created with ``If-None-Match: *``, renewed and released with
``If-Match`` on its own ETag, and taken over with ``If-Match`` once it has expired, so two
writers can never both believe they hold it. The token grows by one with every new holder and
is recorded in each commit's head.

Writers that find the lease held wait in a queue beside it (:mod:`.lockqueue`) and are served
in order of arrival. A lease that claims to last longer than any writer may ask
(``settings.lease_max_ttl``) is also judged by the store's clock: once the store has not seen it
rewritten for 1.25 times that, it has expired, whatever it says.

The lease keeps writers from wasting work on pushes that would have to rebase; correctness
does not depend on it: every commit is a conditional write of the head, so even a writer that
lost its lease cannot overwrite another's commit. A writer checks its lease just before
committing and gives up (``LeaseLostError``) when it is gone.

Whether a store honours conditional writes is its transport's to say
(:meth:`~ebooklet.remote.Transport.supports_conditional_writes`; the S3 transport probes each
bucket once and warns when it does not). Where it does not, the lease falls back to the
transport's :meth:`~ebooklet.remote.Transport.fallback_lock` (s3func's listing-based lock on
S3), because the head's conditional write cannot be trusted either.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import (
    LeaseHeldError,
    LeaseLostError,
    PreconditionFailed,
    RemoteError,
    RemoteFormatError,
    RemoteNotFoundError,
    RemoteUnavailableError,
)
from .lockqueue import Line
from .remote import Remote, Update
from .settings import now_us, settings

logger = logging.getLogger(__name__)

#: Seconds a lease lasts unless renewed.
DEFAULT_TTL = 60.0
#: Seconds to wait for another writer's lease before giving up.
DEFAULT_WAIT = 300.0
#: The largest lease object read; a lease is about 100 bytes.
MAX_LEASE_BYTES = 4096
#: Fencing tokens stay in 0..MAX_TOKEN: the next holder's token, recorded in a head, must
#: still fit a head's 63-bit field.
MAX_TOKEN = 2**63 - 2
#: A lease expiring further ahead than this is not believed (a holder renews every ttl / 3;
#: this leaves room for clocks hours apart, and bounds how long a forged lease can block).
MAX_LEASE_AHEAD_US = 24 * 3600 * 10**6
#: The longest owner name (host:pid:id as ebooklet writes it is well under this).
MAX_OWNER_CHARS = 256


def _now_us() -> int:
    return now_us()


@dataclass(frozen=True)
class LeaseInfo:
    """What the lease object says."""

    owner: str
    expires: int
    token: int

    def encode(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": self.expires, "token": self.token}).encode()

    @classmethod
    def decode(cls, data: bytes, now_us: int) -> LeaseInfo:
        """The lease in ``data``, checked as untrusted input (anyone who can write to the
        bucket can write it); RemoteFormatError says what is wrong."""
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise RemoteFormatError(f"the lease object is not JSON ({exc.__class__.__name__})") from None
        problem = lease_problem(raw, now_us)
        if problem:
            raise RemoteFormatError(f"the lease object {problem}")
        return cls(raw["owner"], raw["expires"], raw["token"])


def lease_problem(raw: Any, now_us: int) -> str | None:
    """What is wrong with a decoded lease object, or None: the rule of each field."""
    if not isinstance(raw, dict) or set(raw) != {"owner", "expires", "token"}:
        return "is not {owner, expires, token}"
    owner, expires, token = raw["owner"], raw["expires"], raw["token"]
    if not isinstance(owner, str) or len(owner) > MAX_OWNER_CHARS or not owner.isprintable():
        return f"has an owner that is not a printable name of at most {MAX_OWNER_CHARS} characters"
    for name, value, hi in (("token", token, MAX_TOKEN), ("expires", expires, now_us + MAX_LEASE_AHEAD_US)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hi:
            return f"has {name} {_shown(value)}, outside 0..{hi}"
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:30] + "..."


class Lease:
    """The lease on one remote database.

    Parameters
    ----------
    remote : Remote
    ttl : float
        Seconds the lease lasts without renewal; while held as a context manager it is
        renewed in the background every ``ttl / 3`` seconds.
    wait : float
        Seconds :meth:`acquire` waits for another holder before raising LeaseHeldError.
    """

    def __init__(self, remote: Remote, ttl: float = DEFAULT_TTL, wait: float = DEFAULT_WAIT) -> None:
        self.remote = remote
        self.key = f"{remote.prefix}lease"
        self.ttl = ttl
        self.wait = wait
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.token = 0
        self._etag: str | None = None
        self._lost: BaseException | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._fallback: Any = None
        self._io = threading.Lock()
        self._renewed_at = 0.0  # time.monotonic() of the last successful write of the lease
        self._cancelled = threading.Event()
        #: Set when :meth:`acquire` is about to write the lease as ours (or has ended), with
        #: ``expected_token`` the token it writes (None: it ended without the lease): a
        #: caller may then read what the lease guards, beside the write.
        self.taking = threading.Event()
        self.expected_token: int | None = None
        #: Whether :meth:`acquire` had to wait for another writer before its write.
        self.waited = False
        self._leaving: threading.Thread | None = None  # giving up our place in the queue
        self._stale_at: tuple[str | None, float] | None = None  # see _stale
        self._maybe_taken = False  # a write of the lease as ours whose reply was lost

    @property
    def held(self) -> bool:
        return self._etag is not None or self._fallback is not None

    def read(self) -> tuple[LeaseInfo | None, str | None]:
        """The lease as stored now, and its ETag. A malformed lease (see :func:`lease_problem`)
        reads as one that has expired, with token 0, and a warning: it was not written by an
        ebooklet that holds it."""
        try:
            blob = self.remote.transport.get_start(self.key, MAX_LEASE_BYTES)
        except RemoteNotFoundError:
            return None, None
        assert blob is not None
        try:
            if blob.size is not None and blob.size > len(blob.data):
                raise RemoteFormatError(f"is {blob.size:,} bytes, more than {MAX_LEASE_BYTES:,}")
            return LeaseInfo.decode(blob.data, _now_us()), blob.etag
        except RemoteFormatError as exc:
            why = str(exc).removeprefix("the lease object ")
            if not blob.etag:
                raise RemoteFormatError(
                    f"the lease object of {self.remote.location} {why}, and cannot be taken over; "
                    "push with --break-lease (see docs/operations.rst)"
                ) from None
            logger.warning("the lease object of %s %s; it is treated as expired", self.remote.location, why)
            return LeaseInfo("", 0, 0), blob.etag

    def acquire(self) -> None:
        """Take the lease, waiting up to ``wait`` seconds for another holder."""
        self.taking.clear()
        self.expected_token = None
        self.waited = False
        self._maybe_taken = False
        try:
            self._acquire()
        except BaseException:
            self.expected_token = None
            self._give_back()
            raise
        finally:
            self.taking.set()  # whatever happened, nobody waits for it any longer

    def _give_back(self) -> None:
        """After an acquire that failed: a write of the lease whose reply was lost may have
        made it ours, unknown to us; give it back rather than leave it held until it expires
        (every other writer would wait that long)."""
        if not self._maybe_taken or self._etag is not None:
            return
        self._maybe_taken = False
        try:
            info, etag = self.read()
            if info is not None and info.owner == self.owner and etag:
                self.remote.transport.put(self.key, LeaseInfo("", 0, info.token).encode(), Update(etag))
        except Exception as exc:  # noqa: BLE001 - the lease expires by itself
            logger.info("could not give back the lease on %s that a lost reply may have made ours "
                        "(%s); it frees itself within %.0f s", self.remote.location, exc, self.ttl)

    def _looked(self, token: int | None) -> None:
        self.expected_token = token
        self.taking.set()

    def _acquire(self) -> None:
        if not self.remote.transport.supports_conditional_writes(self.remote.prefix):
            self._looked(0)
            self._acquire_fallback()
            return
        deadline = time.monotonic() + self.wait
        # A writer that waits takes a place in the queue (docs/sync.rst); one that would not
        # wait (garbage collection's look) never queues.
        line = Line(self.remote, self.owner, self.ttl) if self.wait > 0 else None
        delay = 0.05
        info: LeaseInfo | None = None
        looked = False
        while True:
            if line is not None and looked and (not line.first or line.recheck_due()):
                # Behind another waiter: watch the queue for our turn, and now and then the
                # lease (the waiter before us may be gone, see Line.may_take). The first
                # waiter looks at the queue now and then too: one that was too slow to take
                # the lease was skipped, and queues again.
                line.refresh()
                if not line.first and not line.lease_due():
                    line.keep_place()
                    self._pause(line.pause(), deadline, info, line)
                    continue
            waiters = None
            if line is not None and not looked:
                # The first look reads the lease and the queue together.
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    queued = pool.submit(line.queue.read, _now_us())
                    info, etag = self.read()
                    waiters = queued.result()
            else:
                info, etag = self.read()
            looked = True
            now = _now_us()
            if info is not None and info.owner == self.owner and info.expires > now:
                # Ours: an earlier attempt of this loop was applied but its reply was lost.
                self._looked(info.token)
                self._adopt(info, etag)
                self._leave(line, frozenset())
                return
            if info is None or info.expires <= now or self._stale(info, etag, now):
                skipped: frozenset[str] | None = frozenset()
                if line is not None:
                    if waiters is not None:
                        line.seen(waiters)
                    skipped = line.may_take(etag)
                if skipped is not None and self._take(info, etag, now, deadline):
                    self._leave(line, skipped)
                    return
                if skipped is not None:
                    continue  # someone else took it first, or our write's reply was lost: look again
            if line is not None:
                line.keep_place()
                pause = line.pause()
            else:
                # Poll with backoff, never past the holder's expiry.
                pause = min(delay, max(0.01, ((info.expires if info else 0) - now) / 1e6))
                delay = min(delay * 2, 2.0)
            self._pause(pause, deadline, info, line)

    def _take(self, info: LeaseInfo | None, etag: str | None, now: int, deadline: float) -> bool:
        """Write the lease as ours over the free or expired ``info``; False when another writer
        wrote it first (or the reply was lost: the next look tells)."""
        token = (info.token if info else 0) + 1
        self._looked(token)
        mine = LeaseInfo(self.owner, now + int(self.ttl * 1e6), token)
        mode: Any = "create" if etag is None else Update(etag)
        try:
            self._etag = self.remote.transport.put(self.key, mine.encode(), mode)
        except PreconditionFailed:
            return False
        except RemoteUnavailableError:
            self._maybe_taken = True  # the write may have been applied: the next look tells
            if time.monotonic() > deadline:
                raise
            return False
        self.token = token
        self._renewed_at = time.monotonic()
        if info is not None and info.owner != "" and info.expires > 0:
            logger.warning("took over the expired lease of %s on %s", info.owner, self.remote.location)
        return True

    def _pause(self, pause: float, deadline: float, info: LeaseInfo | None, line: Line | None) -> None:
        """Wait ``pause`` seconds (jittered) before the next look; give up (and our place) at
        the deadline or when cancelled."""
        self.waited = True
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self._cancelled.wait(min(pause, remaining) * (1 + random.random() / 4)):
            if line is not None:
                try:
                    line.leave()
                except RemoteError as exc:
                    logger.info("leaving the lock queue of %s failed (%s); the place expires",
                                self.remote.location, exc)
            holder = info or LeaseInfo("another writer", 0, 0)
            raise LeaseHeldError(holder.owner, holder.expires, self.remote.location)

    def _leave(self, line: Line | None, skipped: frozenset[str]) -> None:
        """Give our place in the queue up in the background (the lease is ours now); the
        release waits for it, so that the next waiter is first by then."""
        if line is not None:
            self._leaving = line.leave_in_background(skipped)

    def _stale(self, info: LeaseInfo, etag: str | None, now: int) -> bool:
        """Whether a lease that claims to last longer than any holder may ask for
        (settings.lease_max_ttl, with a quarter more for margin) has gone without renewal that
        long by the store's clock: it is then expired, whatever its ``expires`` says (a forged
        lease, or a holder whose clock runs ahead, that stopped renewing)."""
        limit = settings.lease_max_ttl * 1.25
        transport = self.remote.transport
        if info.expires - now <= limit * 1e6 or not transport.knows_ages:
            return False
        if self._stale_at is None or self._stale_at[0] != etag:
            try:
                stat = transport.stat(self.key)
                store_now = stat.now if stat.now is not None else transport.store_time()
            except RemoteError:
                return False  # gone (the next look tells) or cannot tell: go by its expiry
            self._stale_at = (etag, time.monotonic() + limit - max(0.0, store_now - stat.modified))
        if time.monotonic() < self._stale_at[1]:
            return False
        logger.warning(
            "the lease of %s on %s was not renewed for %.0f s by the store's clock; it is treated "
            "as expired", info.owner, self.remote.location, limit,
        )
        return True

    def _adopt(self, info: LeaseInfo, etag: str | None) -> None:
        """Hold the stored lease ``info``, which a write of ours put there."""
        self._etag = etag
        self.token = info.token
        written_ago = max(0.0, (_now_us() - (info.expires - int(self.ttl * 1e6))) / 1e6)
        self._renewed_at = time.monotonic() - written_ago

    def renew(self, if_older_than: float = 0.0) -> None:
        """Extend the lease; raise LeaseLostError if it is no longer ours.

        With ``if_older_than`` (a fraction of the ttl), a lease written more recently than
        that is known to be still ours and is left alone (no request).
        """
        if self._fallback is not None:
            return
        with self._io:
            if self._lost is None and self._etag is not None:
                if time.monotonic() - self._renewed_at < if_older_than * self.ttl:
                    return
            if self._lost is not None:
                raise LeaseLostError(self.remote.location) from self._lost
            if self._etag is None:
                raise LeaseLostError(self.remote.location)
            mine = LeaseInfo(self.owner, _now_us() + int(self.ttl * 1e6), self.token)
            try:
                self._etag = self.remote.transport.put(self.key, mine.encode(), Update(self._etag))
                self._renewed_at = time.monotonic()
            except (PreconditionFailed, RemoteUnavailableError) as exc:
                # A retried request whose first attempt was applied fails its condition: look
                # at what is stored before deciding the lease is lost.
                info, etag = self.read()
                if info == mine:
                    self._adopt(info, etag)
                    return
                if isinstance(exc, RemoteUnavailableError):
                    raise
                self._lost = exc
                self._etag = None
                raise LeaseLostError(self.remote.location) from exc

    def advance(self, token: int) -> None:
        """Hold the lease under ``token`` from now on (a token the lease's history lost, when a
        malformed lease was taken over or the lease was broken): a conditional write on our own
        lease, so it fails with LeaseLostError when the lease is no longer ours."""
        if self._fallback is not None or token <= self.token:
            return
        if token > MAX_TOKEN + 1:
            raise LeaseLostError(self.remote.location)
        with self._io:
            if self._etag is None:
                raise LeaseLostError(self.remote.location)
            mine = LeaseInfo(self.owner, _now_us() + int(self.ttl * 1e6), token)
            try:
                self._etag = self.remote.transport.put(self.key, mine.encode(), Update(self._etag))
            except PreconditionFailed as exc:
                self._etag = None
                self._lost = exc
                raise LeaseLostError(self.remote.location) from exc
            self.token = token
            self._renewed_at = time.monotonic()

    def break_lease(self) -> LeaseInfo | None:
        """Remove the lease object whoever holds it, and return what it said (None: there was
        none). A writer that still held it loses it: it cannot commit (fencing), and its push
        fails with LeaseLostError."""
        try:
            info, _ = self.read()
        except RemoteFormatError:
            info = None  # unreadable: that is why it is being broken
        self.remote.transport.delete([self.key])
        holder = info.owner if info else "?"
        logger.warning("broke the lease on %s (held by %s)", self.remote.location, holder)
        return info

    def cancel(self) -> None:
        """Stop an :meth:`acquire` that waits for another holder (from another thread)."""
        self._cancelled.set()

    def release(self) -> None:
        """Give the lease up (best effort: an expired lease frees itself)."""
        self._stop_renewing()
        if self._leaving is not None:
            self._leaving.join()
            self._leaving = None
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None
            return
        with self._io:
            if self._etag is None:
                return
            released = LeaseInfo("", 0, self.token)
            try:
                self.remote.transport.put(self.key, released.encode(), Update(self._etag))
            except Exception as exc:  # noqa: BLE001 - the lease expires by itself
                try:
                    stored = self.read()[0]
                    # Released by a retry whose first attempt was applied, or no longer ours.
                    done = stored is None or stored == released or stored.owner != self.owner
                except Exception:  # noqa: BLE001
                    done = False
                if not done:
                    logger.warning(
                        "could not release the lock on %s (%s); it frees itself within %.0f s",
                        self.remote.location, exc, self.ttl,
                    )
            self._etag = None

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except LeaseLostError:
                return
            except Exception as exc:  # noqa: BLE001 - a failed renewal is retried next tick
                logger.warning("renewing the lease on %s failed: %s", self.remote.location, exc)

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        self._renewer = None

    def __enter__(self) -> Lease:
        self.acquire()
        if self._fallback is None:
            self._stop.clear()
            self._renewer = threading.Thread(target=self._renew_loop, name="ebooklet-lease", daemon=True)
            self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _acquire_fallback(self) -> None:
        lock = self.remote.transport.fallback_lock(self.key)
        if not lock.acquire(timeout=self.wait):
            raise LeaseHeldError("another writer (s3func lock)", 0, self.remote.location)
        self._fallback = lock
