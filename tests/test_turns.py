"""Turns without the lease (ebooklet/sync/leasing.py, ``Turns``): a place taken in the lock
queue is always given up, and a queue a waiter cannot use costs it no wait (each mutation
named in a docstring)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any

import pytest

import ebooklet
from ebooklet.errors import RemoteUnavailableError
from ebooklet.lock import Lease
from ebooklet.lockqueue import MAX_WAITERS, WaitQueue
from ebooklet.remote import connect
from ebooklet.settings import now_us
from ebooklet.sync import leasing
from ebooklet.sync.leasing import Turns
from tests.test_writers import _contended, _queue, _racing, _seed, _until

QUEUE = "lease.queue"


#: The place of another writer without the lease (its owner carries the mark).
OTHER = f"another writer{leasing.TURN_MARK}"


def _fail_queue_reads(remote: Any, which: set[int]) -> list[str]:
    """Make the ``which``-th reads (counted from 1) of the lock queue through ``remote`` fail
    as from a server that stopped answering; return the list of queue reads, as they come."""
    transport = remote.transport
    reads: list[str] = []
    inner = transport.get_start

    def get_start(key: str, *args: Any, **kwargs: Any) -> Any:
        if key.endswith(QUEUE):
            reads.append(key)
            if len(reads) in which:
                raise RemoteUnavailableError("the server stopped answering")
        return inner(key, *args, **kwargs)

    transport.get_start = get_start
    return reads


def test_a_place_kept_when_a_later_look_at_the_queue_fails_is_given_up_with_the_push(tmp_path):
    """A push queued behind another writer whose next look at the queue fails races without
    the queue, and still gives its place up when it ends: the place would otherwise stand in
    front of every later waiter until it expires (the lease's ttl).

    Mutation: ``Turns._failed`` forgets the line without leaving it (``self._line = None``)."""
    conn = _seed(tmp_path)
    with _racing(conn, tmp_path, losses=1) as (remote, _, state), ebooklet.open(
        remote, tmp_path / "b.blt", "w", value_serializer="json", remote_lock="none", lock_wait=60
    ) as db:
        queue, _ = _queue(conn)
        queue.join(OTHER, now_us() + 600 * 10**6, now_us())
        reads = _fail_queue_reads(remote, {2})  # 1: the read that takes the place; 2: the next look
        db["x"] = 1
        result = db.changes().push()
    assert result.committed and state["lost"] == 1 and len(reads) >= 2
    assert _queue(conn)[1] == [OTHER]


def test_a_place_left_behind_by_a_failed_leave_is_given_up_by_the_next_push(tmp_path):
    """A leave that fails leaves the place for its ttl; the next push of the database that
    looks at the queue finds only its own place there and gives it up (instead of going
    ahead and leaving it in front of every later waiter).

    Mutation: ``Turns.arrive`` goes ahead without leaving our own place."""
    conn = _seed(tmp_path)
    with _racing(conn, tmp_path, losses=1) as (remote, _, state), ebooklet.open(
        remote, tmp_path / "b.blt", "w", value_serializer="json", remote_lock="none", lock_wait=60
    ) as db:
        reads = _fail_queue_reads(remote, {2})  # 1: joining after the lost race; 2: leaving
        db["x"] = 1
        assert db.changes().push().attempts == 2
        assert len(reads) == 2 and len(_queue(conn)[1]) == 1  # our place, left behind
        db["y"] = 2
        assert db.changes().push().committed  # it looks at the queue (others committed beside it)
        assert len(reads) >= 3
    assert _queue(conn)[1] == []


def test_a_huge_queue_object_on_a_folder_remote_costs_a_waiter_its_place_not_its_progress(tmp_path):
    """A queue object larger than a waiter reads has no ETag on the folder remote (only its
    start is read): it cannot be replaced conditionally. A waiter waits without a place (and
    the object is left alone) instead of trying to create the queue again and again.

    Mutation: ``WaitQueue.join`` ignores ``Waiters.replaceable`` (it loops for ever)."""
    conn = _seed(tmp_path)
    huge = conn.with_name(conn.name + ".ebooklet") / QUEUE
    huge.write_bytes(b" " * 200_000)
    joined: dict[str, Any] = {}
    joining = threading.Thread(
        target=lambda: joined.update(order=WaitQueue(connect(conn)).join("me", now_us() + 10**7, now_us())),
        daemon=True,  # the mutant never returns
    )
    joining.start()
    joining.join(60)
    assert not joining.is_alive() and joined == {"order": None}
    # A lease-less push that lost a race goes on, backing off as without a queue.
    with _racing(conn, tmp_path, losses=2) as (remote, _, state), ebooklet.open(
        remote, tmp_path / "b.blt", "w", value_serializer="json", remote_lock="none", lock_wait=60
    ) as db:
        db["x"] = 1
        pushing = threading.Thread(target=lambda: joined.update(result=db.changes().push()), daemon=True)
        pushing.start()
        pushing.join(60)
        assert not pushing.is_alive()
    assert joined["result"].committed and joined["result"].attempts == 3
    assert huge.stat().st_size == 200_000


def test_a_contended_push_that_finds_the_queue_full_races_instead_of_waiting_behind_it(tmp_path):
    """A push that looks at the queue (it committed beside others before) and finds it full of
    places (forged, or writers that are gone) has no place to wait in: it goes ahead, racing
    with backoff as without a queue, instead of waiting behind all of them until lock_wait.

    Mutation: ``Turns._wait`` waits without a place (the push reads the queue again and
    again until lock_wait)."""
    with _contended(tmp_path, lock_wait=5) as (db, remote, conn, _):
        queue, _ = _queue(conn)
        for i in range(MAX_WAITERS):
            queue.join(f"forged {i}{leasing.TURN_MARK}", now_us() + 3600 * 10**6, now_us())
        reads = _fail_queue_reads(remote, set())
        db["y"] = 2
        result = db.changes().push()
    assert result.committed and result.attempts == 1
    assert len(reads) <= 2, len(reads)


def test_a_failed_probe_of_conditional_writes_costs_a_lease_less_push_its_turn_not_the_push(tmp_path):
    """Whether the store honours conditional writes is asked (S3: probed, once a process) only
    when a push without the lease has lost a race, for its turn; a probe that fails makes
    the push race without the queue, it does not fail the push.

    Mutation: ``Turns.lost`` asks outside its ``try`` (RemoteUnavailableError from the push)."""
    conn = _seed(tmp_path)
    with _racing(conn, tmp_path, losses=2) as (remote, _, state), ebooklet.open(
        remote, tmp_path / "b.blt", "w", value_serializer="json", remote_lock="none", lock_wait=60
    ) as db:
        asked = []

        def probe(prefix: str) -> bool:
            asked.append(prefix)
            raise RemoteUnavailableError("the server stopped answering")

        remote.transport.supports_conditional_writes = probe
        db["x"] = 1
        result = db.changes().push()
        assert result.committed and result.attempts == 3 and len(asked) == 2
        db["y"] = 2
        assert db.changes().push().committed  # the next push's look at the queue fails too
        assert len(asked) == 3


@pytest.mark.parametrize("background", [True, False], ids=["beside the commit", "at the end"])
def test_a_leave_whose_join_was_interrupted_does_not_keep_the_next_push_in_the_queue(tmp_path, background):
    """An interrupt (Ctrl-C in a notebook) in the end of a push can leave the thread that gave
    its place up unjoined; the next push of the database still gives its own place up, beside
    its commit and at its end.

    Mutations: ``Turns.leave_soon`` does nothing while an old leave is unjoined; ``Turns.leave``
    only joins that old leave."""
    conn = _seed(tmp_path)
    queue, _ = _queue(conn)
    turns = Turns(connect(conn), 60)
    old = threading.Thread(target=lambda: None)
    old.start()
    old.join()
    turns._leaving = old  # as the interrupted push left it
    turns.contended = True
    queue.join(OTHER, now_us() + 600 * 10**6, now_us())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        arriving = pool.submit(turns.arrive, time.monotonic() + 60)
        placed = _until(lambda: turns.owner in _queue(conn)[1], arriving)
        queue.leave(OTHER, now_us())
        arriving.result(timeout=60)
    assert placed
    if background:
        turns.leave_soon()  # beside the commit
        turns._left()
    else:
        turns.leave()  # at the end of the push
    assert _queue(conn)[1] == []


def test_a_lease_less_push_neither_waits_for_nor_drops_a_live_waiter_for_a_held_lease(
    tmp_path, caplog, monkeypatch
):
    """Mixed writers: one holds the lease for long (``remote_lock="session"``, or a long
    push), another waits for it in the queue. A lease-less writer that lost a race neither
    waits behind that waiter (which cannot go on before the holder is done) nor drops its
    place: it waits only for the places of writers without the lease (``TURN_MARK``).

    Mutation: the mark ignored (``_turns`` returns every place): the lease-less push waits
    TURN_GRACE_S behind the lease waiter at each push, then drops its place."""
    monkeypatch.setattr(leasing, "TURN_GRACE_S", 0.5)
    conn = _seed(tmp_path)
    holder = Lease(connect(conn), ttl=60)
    holder.acquire()
    waiter = Lease(connect(conn), ttl=60, wait=60)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            taking = pool.submit(waiter.acquire)
            assert _until(lambda: waiter.owner in _queue(conn)[1], taking)
            with _racing(conn, tmp_path, losses=1) as (remote, _, state), ebooklet.open(
                remote, tmp_path / "b.blt", "w", value_serializer="json", remote_lock="none", lock_wait=60
            ) as db, caplog.at_level(logging.INFO, logger="ebooklet.sync.leasing"):
                for i in range(2):
                    db[f"k{i}"] = i
                    assert db.changes().push().committed
            drops = [m for m in caplog.messages if "dropping its place" in m]
            in_line = _queue(conn)[1]
            waiter.cancel()
            with pytest.raises(ebooklet.LeaseHeldError):
                taking.result(timeout=60)
    finally:
        holder.release()
    assert drops == [] and in_line == [waiter.owner]


def test_a_lease_less_writer_asks_the_store_its_clock_once_not_at_every_look_at_the_queue(
    moto_proxied, tmp_path
):
    """Places in the queue expire by the store's clock, which a writer asks once (on S3, a
    HEAD whose answer's Date tells it): not again before each push that looks at the queue,
    a round trip before the queue's own.

    Mutation: a new Line measures the clock again (``Turns`` does not hand it the offset)."""
    conn = moto_proxied.conn()
    proxy = moto_proxied.proxy
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="json", remote_lock="none") as db, \
            ebooklet.open(moto_proxied.direct(conn), tmp_path / "b.blt", "c", value_serializer="json",
                          remote_lock="none") as other:
        db["a"] = 0
        db.changes().push()
        first = len(proxy.requests())
        looked = 0
        for i in range(3):
            other[f"b{i}"] = i
            other.changes().push()  # a commit beside ours: the next push of ours looks at the queue
            db[f"a{i}"] = i
            before = len(proxy.requests())
            assert db.changes().push().committed
            looked += any(e.target.split("?")[0].endswith(QUEUE) for e in proxy.requests()[before:])
        clock = [e for e in proxy.requests()[first:] if "ebooklet-clock-" in e.target]
    assert looked == 2 and len(clock) == 1, (looked, [e.target for e in clock])


def test_a_push_that_fails_while_it_holds_a_place_gives_it_up(tmp_path):
    """A push that took a place after a lost race and then fails (here: its next attempt
    finds the key it changed changed remotely too) gives its place up as it ends.

    Mutation: ``Push.run`` does not leave the queue in its ``finally``."""
    conn = _seed(tmp_path)
    with _racing(conn, tmp_path, losses=1) as (remote, _, state), ebooklet.open(
        remote, tmp_path / "b.blt", "w", value_serializer="json", remote_lock="none", lock_wait=60
    ) as db:
        queue_puts = []
        inner_put = remote.transport.put

        def put(key: str, *args: Any, **kwargs: Any) -> Any:
            if key.endswith(QUEUE):
                queue_puts.append(key)
            return inner_put(key, *args, **kwargs)

        remote.transport.put = put
        db["other-1"] = "mine"  # the key the racing writer commits first
        with pytest.raises(ebooklet.ConflictError):
            db.changes().push()
    assert state["lost"] == 1 and len(queue_puts) == 2  # the place taken, and given up
    assert _queue(conn)[1] == []


@pytest.mark.parametrize("mark", [leasing.TURN_MARK, ""])
def test_forged_places_cost_a_contended_push_a_bounded_wait(tmp_path, monkeypatch, mark):
    """A hostile queue of many well-formed places (each valid for a day) that never commit:
    a push that looks at the queue gets past them within two grace periods, as the lease's
    waiters do (they skip every place ahead once a free lease lay for GRACE_S). Places of
    writers without the lease (``mark``) are dropped by a waiter behind them that is not
    right behind the first after twice TURN_GRACE_S, all at once; other places (waiters for
    the lease, as far as this writer can tell) are neither waited for nor dropped.

    Mutation: the places ahead dropped one at a time, the k-th after TURN_GRACE_S * k (with
    255 places no drop within lock_wait: the push commits out of turn, the places stay)."""
    monkeypatch.setattr(leasing, "TURN_GRACE_S", 0.1)
    with _contended(tmp_path, lock_wait=5) as (db, _, conn, _):
        queue, _ = _queue(conn)
        for i in range(MAX_WAITERS - 1):
            queue.join(f"forged {i}{mark}", now_us() + 24 * 3600 * 10**6 - 10**6, now_us())
        db["y"] = 2
        result = db.changes().push()
    assert result.committed and result.attempts == 1  # in its turn, not at lock_wait
    forged = [o for o in _queue(conn)[1] if o.startswith("forged")]
    assert len(forged) == (0 if mark else MAX_WAITERS - 1)
