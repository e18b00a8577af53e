"""Many writers on one database: the lease serves them in order of arrival, a forged lease is
judged by the store's clock, lease-less pushes back off until lock_wait and reuse what they
uploaded, and a one-key push waits for few round trips (each mutation named in a docstring)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ebooklet
from ebooklet.lock import Lease
from ebooklet.lockqueue import MAX_WAITERS, WaitQueue, queue_problem
from ebooklet.remote import connect
from ebooklet.settings import SkewedClock, now_us, override
from ebooklet.sync import leasing
from tests.faultproxy import sequential_depth
from tests.faults import faulty_remote
from tests.subprocs import conn_code, python

# -- round trips -----------------------------------------------------------------------------


#: The place of another writer without the lease (its owner carries the mark).
OTHER = f"another writer{leasing.TURN_MARK}"


@pytest.mark.parametrize("lock, most", [("none", 3), ("push", 4)])
def test_a_one_key_push_waits_for_few_round_trips_and_keeps_its_order(moto_proxied, tmp_path, lock, most):
    """Mutations: push reads the head only once the lease is taken (4 -> 5); the log object
    goes up after the uploads are waited for (3 -> 4); the first upload is checked after the
    others are stored (3 -> 4). The order of the safety promises is checked too: the head PUT
    goes out after every other upload and the store's answer about the first upload."""
    conn = moto_proxied.conn()
    proxy = moto_proxied.proxy
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="json", remote_lock=lock) as db:
        db["seed"] = 0
        db.changes().push()
        for i in range(2):
            db[f"k{i}"] = i
            # Every request takes at least 100 ms: requests in flight together overlap.
            rule = proxy.add_rule(lambda r: True, "delay", times=None, delay=0.1)
            first = len(proxy.requests())
            assert db.changes().push().committed
            proxy.remove_rule(rule)
            entries = proxy.requests()[first:]
            assert sequential_depth(entries) <= most, [(e.method, e.target) for e in entries]
            head_put = next(e for e in entries if e.method == "PUT" and e.target.endswith(conn.db_key))
            before = [e for e in entries if e.target.split("?")[0].split(".ebooklet/")[-1].startswith(
                ("seg/", "index/", "log/"))]
            assert {e.method for e in before} == {"PUT", "HEAD"}
            assert all(e.answered <= head_put.started for e in before)


# -- fairness --------------------------------------------------------------------------------

_WRITER = """
import sys, ebooklet
conn = {conn}
commits, attempts, arrived = [], [], []
with ebooklet.open(conn, {path!r}, "c", value_serializer="json", lock_wait=120, remote_lock={lock!r}) as db:
    db.changes().pull()
    print("ready", flush=True)
    sys.stdin.readline()
    for n in range({pushes}):
        db["{me}-%d" % n] = n
        arrived.append(db.log(limit=1)[0].number)  # the last commit when this push arrives
        result = db.changes().push()
        commits.append(result.commit)
        attempts.append(result.attempts)
print(" ".join(map(str, commits)), flush=True)
print(" ".join(map(str, attempts)), flush=True)
print(" ".join(map(str, arrived)), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("lock", ["push", "none"])
def test_writer_processes_are_served_in_order_of_arrival(seaweedfs_proxied, tmp_path, lock):
    """Each of several writer processes, pushing one key at a time, commits within a bounded
    number of the others' commits (no writer starves), with the lease and without it.

    With the lease, pushes rarely need a second attempt: a writer that waited reads the
    head again beside the write that takes the lease. Without it, writers whose pushes
    collided take turns through the same queue.

    Mutations: Lease waits without a place in the queue (``line = None``): whoever polls at
    the right moment wins, and a writer waits through many of the others' commits; the head
    is not read again after waiting (the attempt built on it loses its commit). Without the
    lease: no turns (``Turns.arrive`` and ``Turns.lost`` doing nothing: pushes race with
    backoff, as before); a push arriving after lost races not looking at the queue."""
    conn = seaweedfs_proxied.conn(direct=True)
    with ebooklet.open(conn, tmp_path / "seed.blt", "c", value_serializer="json") as db:
        db["seed"] = 0
        start = db.changes().push().commit
    writers, pushes = 5, 10
    procs = [python(_WRITER.format(conn=conn_code(conn), path=str(tmp_path / f"w{i}.blt"), me=f"w{i}",
                                   pushes=pushes, lock=lock)) for i in range(writers)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    mine, attempts, arrivals = [], [], []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        commits_line, attempts_line, arrived_line = out.strip().splitlines()[-3:]
        mine.append([int(n) for n in commits_line.split()])
        attempts += [int(n) for n in attempts_line.split()]
        arrivals.append([int(n) for n in arrived_line.split()])
    if lock == "push":
        # A writer whose write of a free lease loses to another's builds its attempt again
        # (rare: the writers arriving together); one that waited its turn never does.
        assert sum(a - 1 for a in attempts) <= writers, attempts
    assert sorted(n for m in mine for n in m) == list(range(start + 1, start + 1 + writers * pushes))
    # In order of arrival, a push waits for each other writer at most about once between its
    # arrival (the last commit it saw as it started) and its commit; twice the number of
    # writers leaves room for the races of arrival. Counted from its arrival, not from its
    # writer's previous commit: a process the machine did not run for a while after a commit
    # (a loaded machine, an fsync that waits for the disk) arrives late, and owes nobody.
    # Each writer's first push is left out: the writers all arrive at once and race to
    # create the queue (and take the lease). SeaweedFS holds the loser of two conditional
    # writes of one key for about a second before its 412 (S3 answers at once), and a
    # writer held for a second misses some 25 commits.
    bound = 2 * writers
    for commits, arrived in zip(mine, arrivals, strict=True):
        waits = [commit - seen - 1 for commit, seen in zip(commits, arrived, strict=True)]
        assert max(waits[1:]) <= bound, (mine, arrivals, waits)


# -- the queue as untrusted input ------------------------------------------------------------

NOW = 1_800_000_000 * 10**6
HOSTILE_QUEUES = {
    "not a mapping": [["a", NOW]],
    "extra field": {"waiters": [], "x": 1},
    "waiter not a pair": {"waiters": [["a"]]},
    "owner with escapes": {"waiters": [["\x1b[2Jroot", NOW + 10**6]]},
    "owner too long": {"waiters": [["a" * 257, NOW + 10**6]]},
    "empty owner": {"waiters": [["", NOW + 10**6]]},
    "owner twice": {"waiters": [["a", NOW + 10**6], ["a", NOW + 2 * 10**6]]},
    "until far ahead": {"waiters": [["a", NOW + 2 * 86_400 * 10**6]]},
    "until negative": {"waiters": [["a", -1]]},
    "until a float": {"waiters": [["a", 1.5]]},
    "until a bool": {"waiters": [["a", True]]},
    "too many waiters": {"waiters": [[f"w{i}", NOW + 10**6] for i in range(MAX_WAITERS + 1)]},
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_QUEUES))
def test_each_rule_of_the_queue_refuses_its_hostile_value(kind):
    """Mutation: drop any one rule of queue_problem."""
    assert queue_problem(HOSTILE_QUEUES[kind], NOW) is not None
    assert queue_problem({"waiters": [["host:1:ab", NOW + 10**6], ["b", NOW]]}, NOW) is None


def _seed(tmp_path: pathlib.Path) -> pathlib.Path:
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="json") as db:
        db["a"] = 1
        db.changes().push()
    return conn


@pytest.mark.parametrize("kind", ["not JSON", "owner with escapes", "until far ahead", "too many waiters"])
def test_a_hostile_queue_is_read_as_empty_and_rewritten(tmp_path, kind, caplog):
    """Mutation: WaitQueue.read trusts the queue object (no queue_problem check)."""
    conn = _seed(tmp_path)
    queue = conn.with_name(conn.name + ".ebooklet") / "lease.queue"
    now = int(time.time() * 1e6)
    value = {**HOSTILE_QUEUES, "not JSON": None}[kind]
    text = "[[\xff" if value is None else json.dumps(value).replace(str(NOW), str(now))
    queue.write_text(text, "utf-8", "surrogateescape")
    with caplog.at_level(logging.WARNING, logger="ebooklet"):
        assert WaitQueue(connect(conn)).read(now).entries == []
    assert any("read as empty" in r.getMessage() for r in caplog.records)
    assert not any("\x1b" in r.getMessage() for r in caplog.records)
    # A waiter replaces it with a queue of its own.
    assert WaitQueue(connect(conn)).join("me", now + 10**6, now) == ["me"]


def test_a_forged_first_place_costs_one_grace_period_not_the_lease(tmp_path):
    """A forged place at the head of the queue, whose owner never takes the free lease, is
    skipped once the lease has lain free for the grace period, and dropped from the queue.

    Mutation: Line.may_take never lets a waiter behind the first take the lease."""
    conn = _seed(tmp_path)
    remote = connect(conn)
    now = int(time.time() * 1e6)
    WaitQueue(remote).join("ghost", now + 3600 * 10**6, now)
    with ebooklet.open(conn, tmp_path / "a.blt", "w", value_serializer="json", lock_wait=30) as db:
        db["b"] = 2
        assert db.changes().push().committed
    assert WaitQueue(remote).read(int(time.time() * 1e6)).entries == []


def test_a_waiter_holds_its_place_while_the_lease_is_held_and_gives_it_up_when_served(tmp_path):
    """Mutation: Lease.acquire never joins the queue (``line.keep_place()`` dropped)."""
    conn = _seed(tmp_path)
    remote = connect(conn)
    holder = Lease(remote, ttl=30)
    holder.acquire()
    placed = threading.Event()
    seen, transport = faulty_remote(conn)
    transport.after_put = lambda key: placed.set() if key.endswith("lease.queue") else None
    waiter = Lease(seen, ttl=30, wait=30)
    queue = WaitQueue(remote)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        taking = pool.submit(waiter.acquire)
        assert placed.wait(30) and not taking.done()
        # The waiter's place is in the queue object, where every writer sees it.
        assert [o for o, _ in queue.read(int(time.time() * 1e6)).entries] == [waiter.owner]
        holder.release()
        taking.result(timeout=30)
    assert waiter.held
    waiter.release()  # after giving its place up
    assert queue.read(int(time.time() * 1e6)).entries == []


# -- a forged or abandoned lease, judged by the store's clock ------------------------------


def test_a_forged_far_future_lease_not_rewritten_for_long_is_expired_by_the_store_clock(tmp_path, caplog):
    """Mutation: Lease.acquire judges expiry by ``expires`` alone (``_stale`` dropped)."""
    conn = _seed(tmp_path)
    lease = conn.with_name(conn.name + ".ebooklet") / "lease"
    ahead = int(time.time() * 1e6) + 20 * 3600 * 10**6  # within the day a lease may claim
    lease.write_text(json.dumps({"owner": "forger", "expires": ahead, "token": 7}))
    # Written an hour ago by the store's clock (a folder's clock is its files' mtimes).
    old = time.time() - 3600
    os.utime(lease, (old, old))
    with caplog.at_level(logging.WARNING, logger="ebooklet"), ebooklet.open(
        conn, tmp_path / "a.blt", "w", value_serializer="json", lock_wait=5
    ) as db:
        db["b"] = 2
        assert db.changes().push().committed
    assert any("by the store's clock" in r.getMessage() for r in caplog.records)


def test_a_far_future_lease_written_just_now_is_still_respected(tmp_path):
    """The store's clock shortens a lease's claim, it does not ignore the lease.

    Mutation: ``_stale`` calls every far-future lease stale."""
    conn = _seed(tmp_path)
    lease = conn.with_name(conn.name + ".ebooklet") / "lease"
    ahead = int(time.time() * 1e6) + 20 * 3600 * 10**6
    lease.write_text(json.dumps({"owner": "other", "expires": ahead, "token": 7}))
    with ebooklet.open(conn, tmp_path / "a.blt", "w", value_serializer="json", lock_wait=0.5) as db:
        db["b"] = 2
        with pytest.raises(ebooklet.LeaseHeldError):
            db.changes().push()


@pytest.mark.slow
def test_the_lease_of_a_holder_whose_clock_runs_hours_ahead_expires_by_the_store_clock(
    moto_proxied, tmp_path
):
    """A holder whose clock is 3 hours ahead wrote a lease that says it lasts 3 hours; it
    stopped renewing. Another writer takes it once the store has not seen it rewritten for
    1.25 lease_max_ttl.

    Mutation: ``_stale`` dropped (the push waits out lock_wait: LeaseHeldError)."""
    conn = moto_proxied.conn(direct=True)
    with ebooklet.open(conn, tmp_path / "seed.blt", "c", value_serializer="json") as db:
        db["a"] = 1
        db.changes().push()
    with override(clock=SkewedClock(3 * 3600)):
        gone = Lease(connect(conn), ttl=2)
        gone.acquire()  # and never renewed: its process died
    with override(lease_max_ttl=3):
        with ebooklet.open(conn, tmp_path / "a.blt", "w", value_serializer="json", lease_ttl=2,
                           lock_wait=60) as db:
            db["b"] = 2
            result = db.changes().push()
    assert result.committed


# -- without the lease: backoff until lock_wait, and uploads reused --------------------------


@contextlib.contextmanager
def _racing(conn: pathlib.Path, tmp_path: pathlib.Path, losses: int | None) -> Iterator[tuple]:
    """A remote whose head is committed by another writer just before each of our head
    writes (the first ``losses`` ones, or ``state["losses"]`` as changed since; None: every
    one), and what was put through it."""
    puts: list[str] = []
    state = {"lost": 0, "losses": losses}
    head: list[str] = []
    other_path = tmp_path / "other.blt"
    with ebooklet.open(conn, other_path, "c", value_serializer="json", remote_lock="none") as other:

        def before_put(key: str) -> None:
            puts.append(key)
            if key == head[0] and (state["losses"] is None or state["lost"] < state["losses"]):
                state["lost"] += 1
                other[f"other-{state['lost']}"] = state["lost"]
                other.changes().push()

        remote, _ = faulty_remote(conn, before_put)
        head.append(remote.db_key)
        yield remote, puts, state


@contextlib.contextmanager
def _contended(tmp_path: pathlib.Path, lock_wait: float) -> Iterator[tuple[Any, Any, pathlib.Path, Any]]:
    """A writer without the lease whose first push lost one race to another writer (so its
    next push looks at the queue first): its database, its remote, the database's folder
    and that first push's result."""
    conn = _seed(tmp_path)
    with _racing(conn, tmp_path, losses=1) as (remote, _, state), ebooklet.open(
        remote, tmp_path / "b.blt", "w", value_serializer="json", remote_lock="none", lock_wait=lock_wait
    ) as db:
        db["x"] = 1
        first = db.changes().push()
        assert first.attempts == 2 and state["lost"] == 1
        yield db, remote, conn, first


def test_a_lease_less_push_outlasts_many_lost_races_and_uploads_its_values_once(tmp_path):
    """Twelve lost races (more than the 8 attempts pushes used to make) and the push still
    commits, having uploaded its segment once: a rebase reuses what it uploaded.

    Mutations: a fixed number of attempts again; the changes streamed (segments uploaded)
    in every attempt instead of once."""
    conn = _seed(tmp_path)
    with _racing(conn, tmp_path, losses=12) as (remote, puts, state), ebooklet.open(
        remote, tmp_path / "a.blt", "w", value_serializer="json", remote_lock="none", lock_wait=60
    ) as db:
        db["mine"] = "x"
        result = db.changes().push()
    assert result.committed and result.attempts == 13 and state["lost"] == 12
    segments = [k for k in puts if "/seg/" in k]
    assert len(segments) == 1  # the other writer's go straight to the store
    with ebooklet.open(conn, tmp_path / "check.blt", "r") as db:
        assert db["mine"] == "x" and len(db) == 1 + 1 + 12


def test_a_lease_less_staged_commit_outlasts_many_lost_races_and_gives_up_at_lock_wait(tmp_path):
    """A staged commit retries as a push does: past the 8 attempts of old while other writers
    keep committing first, and until lock_wait, not forever.

    Mutations: one attempt only (the deadline ignored); no deadline (the commit never ends)."""
    conn = _seed(tmp_path)
    with ebooklet.stage(conn) as stage:
        stage["staged"] = "s"
    with _racing(conn, tmp_path, losses=12) as (remote, _, state):
        result = ebooklet.commit(remote, [stage.token], remote_lock=False, lock_wait=60)
    assert result.committed and state["lost"] == 12
    with ebooklet.open(conn, tmp_path / "check.blt", "r") as db:
        assert db["staged"] == "s" and len(db) == 1 + 1 + 12
    (tmp_path / "again").mkdir()  # a new database, where the racing writer's keys are new again
    conn = _seed(tmp_path / "again")
    with ebooklet.stage(conn) as stage:
        stage["late"] = "l"
    with _racing(conn, tmp_path / "again", losses=None) as (remote, _, state):
        with pytest.raises(ebooklet.PushConflictError, match="lock_wait"):
            ebooklet.commit(remote, [stage.token], remote_lock=False, lock_wait=1.0)
    assert state["lost"] >= 2


def test_a_lease_less_push_that_keeps_losing_backs_off_and_gives_up_at_lock_wait(tmp_path, caplog):
    """Mutations: no pause between attempts; no deadline (the push never ends)."""
    conn = _seed(tmp_path)
    with caplog.at_level(logging.INFO, logger="ebooklet.sync.push"), _racing(
        conn, tmp_path, losses=None
    ) as (remote, puts, state), ebooklet.open(
        remote, tmp_path / "a.blt", "w", value_serializer="json", remote_lock="none", lock_wait=1.0
    ) as db:
        db["mine"] = "x"
        with pytest.raises(ebooklet.PushConflictError, match="lock_wait") as err:
            db.changes().push()
    attempts = state["lost"]
    assert f"({attempts} attempts" in str(err.value)
    pauses = [float(m.split()[3]) for m in caplog.messages if m.startswith("push: backed off")]
    assert len(pauses) == attempts - 1 >= 2
    # Full jitter: each pause is random below a bound that doubles from 50 ms, up to 1/8 of
    # lock_wait.
    bounds = [min(0.05 * 2**i, 1.0 / 8) for i in range(len(pauses))]
    assert all(0 <= p <= b for p, b in zip(pauses, bounds, strict=True)), pauses
    assert len(set(pauses)) == len(pauses)


# -- without the lease: turns through the queue ----------------------------------------------


def _queue(conn: pathlib.Path) -> tuple[WaitQueue, list[str]]:
    queue = WaitQueue(connect(conn))
    return queue, queue.read(now_us()).live(now_us())


def _until(done: Callable[[], bool], also: concurrent.futures.Future) -> bool:
    """Poll ``done`` (a state of the store) until it holds or ``also`` has finished; which."""
    never = threading.Event()
    deadline = time.monotonic() + 60
    while not done():
        if also.done() or time.monotonic() > deadline:
            return False
        never.wait(0.01)
    return True


def test_a_lease_less_writer_alone_never_reads_the_queue_and_stops_after_finding_it_empty(tmp_path):
    """A writer that never lost a race sends no request for the queue; after a lost race it
    queues (and leaves after its commit), its next push looks at the queue, and once it found
    nobody waiting, the pushes after it do not look.

    Mutations: the queue read before every push (``contended`` ignored); a lost race not
    remembered; ``contended`` not cleared on an empty queue."""
    conn = _seed(tmp_path)
    with _racing(conn, tmp_path, losses=0) as (remote, _, state):
        faulty = remote.transport
        asked: list[str] = []
        inner_get_start = faulty.get_start

        def get_start(key: str, *args: Any, **kwargs: Any) -> Any:
            asked.append(key)
            return inner_get_start(key, *args, **kwargs)

        faulty.get_start = get_start  # type: ignore[method-assign]
        with ebooklet.open(remote, tmp_path / "b.blt", "w", value_serializer="json",
                           remote_lock="none") as db:
            looked = []
            for i in range(5):
                if i == 1:
                    state["losses"] = 1  # the next push loses one race
                db[f"k{i}"] = i
                asked.clear()
                result = db.changes().push()
                looked.append(sum(k.endswith("lease.queue") for k in asked))
                if i == 1:
                    assert result.attempts == 2
    # alone; lost a race (queued: read while joining and leaving); looked, found it empty; alone
    assert looked[0] == 0 and looked[1] >= 1 and looked[2] == 1 and looked[3:] == [0, 0], looked
    assert _queue(conn)[1] == []


def test_a_lease_less_push_after_lost_races_waits_behind_a_queued_writer(tmp_path):
    """A writer whose push lost a race finds another writer queued at its next push: it
    queues behind it and commits only once that writer has left the queue; then it leaves.

    Mutations: ``Turns.arrive`` does nothing (the push goes straight ahead); the waiter not
    waiting for its turn (``_wait`` returns at once); the place not given up after the commit."""
    with _contended(tmp_path, lock_wait=60) as (db, _, conn, first):
        queue, waiting = _queue(conn)
        assert waiting == []  # left after its commit
        queue.join(OTHER, now_us() + 60 * 10**6, now_us())
        db["y"] = 2
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pushing = pool.submit(db.changes().push)
            behind = _until(lambda: len(_queue(conn)[1]) == 2, pushing)
            assert behind, "the push did not queue behind the waiting writer"
            assert not pushing.done()
            assert _queue(conn)[1][0] == OTHER
            queue.leave(OTHER, now_us())
            result = pushing.result(timeout=60)
    assert result.committed and result.commit == first.commit + 1
    assert _queue(conn)[1] == []


@pytest.mark.parametrize("gone", [1, 2])
def test_a_lease_less_writer_drops_first_waiters_that_never_commit(tmp_path, caplog, monkeypatch, gone):
    """Places at the head of the queue whose writers never commit (gone, or forged) cost a
    queued push a grace period: the waiter right behind the first drops its place, a waiter
    further back every place ahead of it after two.

    Mutation: no dropping (the push waits until lock_wait, and the places stay)."""
    monkeypatch.setattr(leasing, "TURN_GRACE_S", 0.5)
    with _contended(tmp_path, lock_wait=30) as (db, _, conn, _):
        queue, _ = _queue(conn)
        for i in range(gone):
            queue.join(f"a writer that is gone {i}{leasing.TURN_MARK}", now_us() + 600 * 10**6, now_us())
        db["y"] = 2
        with caplog.at_level(logging.INFO, logger="ebooklet.sync.leasing"):
            result = db.changes().push()
    assert result.committed
    # one drop: the first place by the waiter right behind it; both by one further back
    assert sum("dropping" in m for m in caplog.messages) == 1
    assert _queue(conn)[1] == []


def test_a_lease_less_push_whose_commit_loses_after_leaving_the_queue_queues_again(tmp_path):
    """The place is given up beside the commit; a commit that then loses takes a place
    again, and gives it up once it lands.

    Mutation: the place not taken again after a lost commit (``Turns.lost`` keeps the
    old line, given up already): the push does not queue for its next attempt."""
    conn = _seed(tmp_path)
    with _racing(conn, tmp_path, losses=3) as (remote, puts, state), ebooklet.open(
        remote, tmp_path / "b.blt", "w", value_serializer="json", remote_lock="none", lock_wait=60
    ) as db:
        db["x"] = 1
        result = db.changes().push()
    assert result.committed and result.attempts == 4
    queue_puts = [k for k in puts if k.endswith("lease.queue")]
    # a place taken after each lost race, and given up beside each later commit
    assert len(queue_puts) >= 2 * 3 - 1, queue_puts
    assert _queue(conn)[1] == []


def test_a_push_whose_lease_was_taken_with_another_token_than_expected_records_the_right_one(
    moto_proxied, tmp_path
):
    """The head is built beside the lease's write with the token that write would give; when
    another writer took and gave up the lease in between, the lease comes with a later
    token, and the commit records that one (the attempt is built again).

    Mutation: LeaseUse.settle does not compare the tokens."""
    conn = moto_proxied.conn()
    lease_key = f"{conn.db_key}.ebooklet/lease"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="json") as db:
        db["a"] = 1
        db.changes().push()
        gate = moto_proxied.proxy.hold(lambda r: r.method == "PUT" and r.key == lease_key)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            db["b"] = 2
            push = pool.submit(db.changes().push)
            assert gate.reached.wait(60)
            # Another writer takes the lease and gives it up while ours is on its way.
            other = Lease(connect(moto_proxied.direct(conn)), wait=0)
            other.acquire()
            other.release()
            gate.release()
            assert push.result(timeout=60).committed
    head = moto_proxied.get_json(conn.db_key)
    assert head["lease_token"] == other.token + 1


def test_a_lease_ttl_beyond_the_longest_a_store_clock_allows_is_refused(tmp_path):
    """A lease_ttl past settings.lease_max_ttl would let a live holder's lease look
    abandoned by the store's clock. Mutation: api.open does not check lease_ttl."""
    with pytest.raises(ebooklet.InvalidArgumentError, match="lease_ttl"):
        ebooklet.open(tmp_path / "remote" / "db.blt", tmp_path / "a.blt", "c", lease_ttl=301)
    with pytest.raises(ebooklet.InvalidArgumentError, match="lease_ttl"):
        ebooklet.open(tmp_path / "remote" / "db.blt", tmp_path / "a.blt", "c", lease_ttl=0)


def test_the_queue_is_an_object_of_the_format_that_gc_never_removes():
    """Mutation: ``lease.queue`` left out of the format's names (delete_remote would leave
    it behind), or made collectable."""
    from ebooklet.format import object_kind
    from ebooklet.sync.gc import COLLECTABLE

    assert object_kind("lease.queue") == "lease" not in COLLECTABLE
    assert object_kind("lease.queue2") is None


def test_a_first_waiter_that_was_skipped_queues_again(tmp_path):
    """A first waiter too slow to take a free lease is skipped by those behind it (its place
    dropped); it finds out at its next look at the queue and queues again.

    Mutation: Line.keep_place renews only by the clock (``self.owner in self.order`` dropped)."""
    conn = _seed(tmp_path)
    remote = connect(conn)
    holder = Lease(remote, ttl=30)
    holder.acquire()
    writes = [threading.Event(), threading.Event()]
    count = itertools.count()
    seen, transport = faulty_remote(conn)
    transport.after_put = lambda key: key.endswith("lease.queue") and writes[min(next(count), 1)].set()
    # Its place would be renewed by the clock only after ttl / 3 = 60 s: it queues again
    # well before, at its next look at the queue.
    waiter = Lease(seen, ttl=180, wait=60)
    queue = WaitQueue(remote)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        taking = pool.submit(waiter.acquire)
        assert writes[0].wait(30)
        queue.leave(waiter.owner, int(time.time() * 1e6))  # as a waiter behind it would
        assert writes[1].wait(30) and not taking.done()
        assert [o for o, _ in queue.read(int(time.time() * 1e6)).entries] == [waiter.owner]
        holder.release()
        taking.result(timeout=30)
    waiter.release()
