"""Many threads on one handle behave as if they ran one at a time (issue 15).

On one handle: writer threads write new keys (and overwrite their own), reader threads read
2,000 keys that never change, a thread iterates ``keys()``/``items()`` and lists
``changes()``, one thread pushes and one pulls, while a second handle on another local file
pushes changes to other keys that the puller brings in. Every read must return exactly that
key's value (never another key's, never ``KeyError``); a writer reads back each value it
wrote; a key the puller brings in never reads as an older value than one read before.
Iterating while others write works on a snapshot or raises an ebooklet error that says so,
never a bare ``RuntimeError``. At the end the state is exact, locally and on the remote.

The run is bounded by operations, not by time: the writers, the pusher, the puller and the
other handle do a fixed amount of work; the readers and the iterator run until they are done
(and at least a minimum amount). The quick variant runs in the normal suite; the long one
(about a minute) is marked slow.
"""

from __future__ import annotations

import pathlib
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import ebooklet
from ebooklet.errors import EbookletError

STABLE = [f"s{i:04d}" for i in range(2000)]
#: Seconds to wait for a thread before calling it stuck (far above what any run needs).
JOIN_TIMEOUT = 600


def _stable(key: str) -> str:
    return f"stable-value-of-{key}"


@dataclass(frozen=True)
class Load:
    writers: int
    writes: int  # per writer
    readers: int
    min_reads: int  # per reader
    pushes: int
    pulls: int
    other_rounds: int  # the other handle: rounds of other_writes writes and a push
    other_writes: int
    #: Fetch the unchanging keys before the threads start (else the readers' first reads of
    #: them fetch from the remote, during the pushes and pulls).
    preload: bool


QUICK = Load(writers=3, writes=200, readers=3, min_reads=2000, pushes=4, pulls=4, other_rounds=3,
             other_writes=20, preload=True)
LONG = Load(writers=3, writes=6000, readers=3, min_reads=100_000, pushes=60, pulls=60, other_rounds=40,
            other_writes=50, preload=False)


@dataclass
class Outcome:
    """What the threads saw (lists and counters are only appended to: safe across threads)."""

    errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    reads: list[int] = field(default_factory=list)
    iterations: list[str] = field(default_factory=list)  # "snapshot" or "refused"


def _run(name: str, outcome: Outcome, body: Callable[[], None]) -> threading.Thread:
    def target() -> None:
        try:
            body()
        except BaseException:  # noqa: BLE001 - every failure is reported by the test thread
            outcome.errors.append(f"{name}: {traceback.format_exc()}")

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _seed(conn: Any, tmp_path: pathlib.Path) -> None:
    with ebooklet.open(conn, tmp_path / "seed.blt", "c", value_serializer="str") as db:
        db.update({k: _stable(k) for k in STABLE})
        db.changes().push()


def _stress(conn: Any, tmp_path: pathlib.Path, load: Load, seed: int) -> None:
    _seed(conn, tmp_path)
    outcome = Outcome()
    db = ebooklet.open(conn, tmp_path / "a.blt", "w", value_serializer="str")
    other = ebooklet.open(conn, tmp_path / "b.blt", "w", value_serializer="str")
    if load.preload:
        db.load_items()
    drivers_done = threading.Event()
    start = threading.Barrier(load.writers + load.readers + 4)
    expected: dict[str, str] = {k: _stable(k) for k in STABLE}
    written: list[dict[str, str]] = [{} for _ in range(load.writers)]

    def writer(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        start.wait()
        mine = written[n]
        for i in range(load.writes):
            # Mostly new keys; sometimes an overwrite of one of this writer's own keys.
            key = f"w{n}-{rng.randrange(i)}" if i and rng.random() < 0.2 else f"w{n}-{i}"
            value = f"{key}-written-at-{i}"
            db[key] = value
            mine[key] = value
            got = db[key]  # read your own write, whatever the pusher and the puller do
            if got != value:
                outcome.wrong.append(f"db[{key!r}] returned {got!r} just after {value!r} was written")

    def reader(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        start.wait()
        count = 0
        rounds_seen: dict[str, int] = {}
        while count < load.min_reads or not drivers_done.is_set():
            key = rng.choice(STABLE)
            got = db[key]  # a KeyError here is a failure
            if got != _stable(key):
                outcome.wrong.append(f"db[{key!r}] returned {got!r}")
            count += 1
            if count % 50 == 0:
                # A key the other handle rewrites each round, pulled in by the puller: once a
                # round is seen, no later read goes back to an older one.
                pulled = f"b-{rng.randrange(load.other_writes)}"
                value = db.get(pulled)
                if value is not None:
                    seen = int(value.rsplit("-", 1)[1])
                    if seen < rounds_seen.get(pulled, -1):
                        outcome.wrong.append(f"db[{pulled!r}] went back to {value!r}")
                    rounds_seen[pulled] = seen
        outcome.reads.append(count)

    def iterator() -> None:
        start.wait()
        while not drivers_done.is_set() or not outcome.iterations:
            try:
                keys = list(db.keys())
                items = dict(db.items())
            except EbookletError as exc:  # allowed: an ebooklet error that says so
                assert "iterat" in str(exc), f"an iteration refused without saying so: {exc}"
                outcome.iterations.append("refused")
                continue
            outcome.iterations.append("snapshot")
            missing = set(STABLE) - set(keys)
            assert not missing, f"iteration missed {len(missing)} unchanging key(s)"
            bad = [k for k in STABLE if items.get(k) != _stable(k)]
            assert not bad, f"items() gave wrong values for {bad[:5]}"
            list(db.changes().iter_changes())

    def pusher() -> None:
        start.wait()
        for _ in range(load.pushes):
            db.changes().push()

    def puller() -> None:
        start.wait()
        for _ in range(load.pulls):
            db.changes().pull()

    def other_handle() -> None:
        start.wait()
        for r in range(load.other_rounds):
            for i in range(load.other_writes):
                key = f"b-{i}"  # the other handle overwrites its own keys round after round
                other[key] = f"{key}-round-{r}"
                expected[key] = f"{key}-round-{r}"
            other.changes().push()

    threads = [_run(f"writer{n}", outcome, lambda n=n: writer(n)) for n in range(load.writers)]
    drivers = list(threads)
    drivers += [_run("pusher", outcome, pusher), _run("puller", outcome, puller),
                _run("other", outcome, other_handle)]
    threads = drivers + [_run(f"reader{n}", outcome, lambda n=n: reader(n)) for n in range(load.readers)]
    threads.append(_run("iterator", outcome, iterator))
    try:
        for thread in drivers:
            thread.join(timeout=JOIN_TIMEOUT)
        drivers_done.set()
        for thread in threads:
            thread.join(timeout=JOIN_TIMEOUT)
        stuck = [t.name for t in threads if t.is_alive()]
        assert not stuck, f"threads still running (a deadlock?): {stuck}"
        assert not outcome.errors, "\n".join(outcome.errors[:5])
        assert not outcome.wrong, f"{len(outcome.wrong)} wrong read(s): {outcome.wrong[:5]}"
        assert len(outcome.reads) == load.readers and min(outcome.reads) >= load.min_reads
        assert outcome.iterations
        for mine in written:
            expected.update(mine)
        db.changes().push()
        db.changes().pull()
        assert len(db) == len(expected)
        assert dict(db.items()) == expected, "the final local state is not exact"
        assert [c for c in db.changes().iter_changes()] == []
    finally:
        other.close()
        db.close()
    check_path = tmp_path / f"check-{time.monotonic_ns()}.blt"
    with ebooklet.open(conn, check_path, "r", value_serializer="str") as check:
        assert dict(check.items()) == expected, "the remote's final state is not exact"


@pytest.mark.parametrize("remote", ["moto", "folder"], indirect=True)
def test_threads_on_one_handle_behave_as_if_one_at_a_time(tmp_path, remote):
    _stress(remote.conn(), tmp_path, QUICK, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("remote", ["moto", "folder"], indirect=True)
def test_threads_on_one_handle_behave_as_if_one_at_a_time_for_a_minute(tmp_path, remote):
    _stress(remote.conn(), tmp_path, LONG, seed=2)


def test_a_write_while_remote_values_are_read_is_an_ebooklet_error(tmp_path):
    """The iteration the stress test's iterator may meet, made deterministic: a write between
    two batches of fetched values stops the iteration with an ebooklet error that says so."""
    remote = tmp_path / "remote"
    with ebooklet.open(remote, tmp_path / "w.blt", "c", value_serializer="str") as db:
        db.update({f"k{i:05d}": "x" * 20_000 for i in range(400)})
        db.changes().push()
    with ebooklet.open(remote, tmp_path / "a.blt", "w") as db:
        with pytest.raises(ebooklet.errors.ChangedDuringIterationError, match="while iterating"):
            for i, _ in enumerate(db.items()):
                if i == 0:
                    db["new"] = "written"
