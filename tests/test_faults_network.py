"""Network faults between ebooklet and a real S3 server, injected by tests/faultproxy.py.

One test per reliability defect of issue 8 that a network fault (or a race the proxy's gates
set up) can show, plus the promises no other test exercises. Each asserts the behaviour the
issue asks for, and failed on the engine before the fix.

Writers under test reach the server through the proxy (``proxied.conn()``, urllib3 retries
set per test); the "other writers" of a scenario talk to the server directly
(``proxied.direct(conn)``), so the proxy's rules never touch them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ebooklet
from ebooklet.lock import Lease
from ebooklet.remote import connect

from .faultproxy import FaultProxy, Request, Rule

# -- helpers ---------------------------------------------------------------------------------


def head_put(conn) -> Callable[[Request], bool]:
    return lambda r: r.method == "PUT" and r.key == conn.db_key


def head_get(conn) -> Callable[[Request], bool]:
    return lambda r: r.method == "GET" and r.key == conn.db_key


def object_put(conn, kind: str) -> Callable[[Request], bool]:
    """PUTs of a database's segments (``seg``) or index parts (``index``)."""
    return lambda r: r.method == "PUT" and r.key.startswith(f"{conn.db_key}.ebooklet/{kind}/")


def lease_put(conn, renew: bool | None = None) -> Callable[[Request], bool]:
    """PUTs of the lease object: creates (If-None-Match), renewals/releases (If-Match), or all."""

    def match(r: Request) -> bool:
        if r.method != "PUT" or r.key != f"{conn.db_key}.ebooklet/lease":
            return False
        return renew is None or (r.header("if-match") is not None) == renew

    return match


def lose_the_commit_reply(proxy: FaultProxy, conn) -> Rule:
    """The next head PUT of ``conn`` is applied and its reply lost; from then on the server
    answers no read (503), so that the push cannot learn whether its commit landed (its
    writes, such as the lease's release, still go through). Returns the rule of the lost
    reply; ``proxy.clear_rules()`` brings the reads back."""
    lost = proxy.add_rule(head_put(conn), "lost_reply")
    proxy.add_rule(lambda r: lost.fired.is_set() and r.method in ("GET", "HEAD"), "503", times=None)
    return lost


def seed(conn, path, data: dict[str, Any]) -> None:
    with ebooklet.open(conn, path, "c", value_serializer="str") as db:
        db.update(data)
        assert db.changes().push().committed


def commit(conn, path, writes: dict[str, Any] | None = None, deletes: tuple[str, ...] = (),
           **open_args: Any) -> ebooklet.PushResult:
    """Another writer's commit, from its own local file."""
    with ebooklet.open(conn, path, "w", **open_args) as db:
        db.update(writes or {})
        for key in deletes:
            del db[key]
        result = db.changes().push()
        assert result.committed
        return result


def remote_items(conn, path) -> dict[str, Any]:
    """Every key and value of the remote, through a fresh local file."""
    with ebooklet.open(conn, path, "r") as reader:
        return dict(reader.items())


@contextlib.contextmanager
def writer(proxied, conn, path, flag: str = "w", **open_args: Any) -> Iterator[ebooklet.EBooklet]:
    """A database whose close() never waits on a push a rule still holds (when a test fails)."""
    db = ebooklet.open(conn, path, flag, **open_args)
    try:
        yield db
    finally:
        proxied.proxy.clear_rules()
        db.close()


def pending(db) -> list[str]:
    return sorted(c.key for c in db.changes().iter_changes() if c.local)


_pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="test-push")


def in_background(fn: Callable[[], Any]) -> concurrent.futures.Future:
    return _pool.submit(fn)


# -- commits ---------------------------------------------------------------------------------


def test_a_commit_whose_reply_was_lost_is_recognised_after_two_later_commits(proxied, tmp_path):
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"a": "a0", "b": "b0", "c": "c0"})
    with writer(proxied, conn, tmp_path / "a.blt", remote_lock="none") as a:
        a["a"] = "a1"
        rule = proxied.proxy.add_rule(head_put(conn), "lost_reply", hold="after")
        push = in_background(a.changes().push)
        assert rule.reached.wait(60)
        # A's commit is on the server, its answer held; two other writers commit on top of it.
        commit(proxied.direct(conn), tmp_path / "b.blt", {"b": "b1"})
        commit(proxied.direct(conn), tmp_path / "c.blt", {"c": "c1"})
        rule.release()  # A's answer is lost; urllib3's retry of its head PUT gets 412
        result = push.result(timeout=60)
        assert remote_items(conn, tmp_path / "r.blt") == {"a": "a1", "b": "b1", "c": "c1"}
        assert (result.committed, result.commit, result.keys) == (True, 2, ["a"])
        assert pending(a) == []


def test_a_push_whose_replies_were_all_lost_does_not_undo_a_later_delete(proxied, tmp_path):
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"k": "k0", "other": "o0"})
    with writer(proxied, conn, tmp_path / "a.blt", remote_lock="none") as a:
        a["k"] = "k1"
        lost = proxied.proxy.add_rule(head_put(conn), "lost_reply", times=None)
        try:
            a.changes().push()
        except ebooklet.EbookletError:
            pass  # the outcome is unknown to the writer; that is allowed
        proxied.proxy.remove_rule(lost)
        assert ebooklet.remote_info(proxied.direct(conn)).commit == 2  # A's commit did land
        commit(proxied.direct(conn), tmp_path / "b.blt", deletes=("k",))  # acknowledged
        a.changes().push(on_conflict="local")
    assert remote_items(conn, tmp_path / "r.blt") == {"other": "o0"}


def test_a_push_that_may_have_landed_never_says_nothing_was_changed(proxied, tmp_path):
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"k": "k0"})
    with ebooklet.open(conn, tmp_path / "a.blt", "w", remote_lock="none") as a:
        a["k"] = "k1"
        proxied.proxy.add_rule(head_put(conn), "lost_reply", times=None)
        try:
            result = a.changes().push()
        except ebooklet.EbookletError as exc:
            assert "nothing was changed" not in str(exc), str(exc)
        else:
            assert result.committed  # it found out that its commit landed: also right


def test_newest_lets_a_later_remote_delete_beat_an_earlier_local_write(proxied, tmp_path):
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"k": "k0", "other": "o0"})
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as a:
        a["k"] = "written before the delete"
        commit(proxied.direct(conn), tmp_path / "b.blt", deletes=("k",))  # later in time
        a.changes().push(on_conflict="newest")
        assert "k" not in a
    assert remote_items(conn, tmp_path / "r.blt") == {"other": "o0"}


def test_a_conflict_functions_merged_value_is_what_gets_committed_after_a_lost_race(proxied, tmp_path):
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"k": "base", "x": "x0"})
    with writer(proxied, conn, tmp_path / "a.blt", remote_lock="none") as a:
        a["k"] = "mine"
        commit(proxied.direct(conn), tmp_path / "b.blt", {"k": "theirs"})  # a conflict

        def merge(key, local, remote, base):
            return f"merged({local},{remote})"

        gate = proxied.proxy.hold(head_put(conn))
        push = in_background(lambda: a.changes().push(on_conflict=merge))
        assert gate.reached.wait(60)
        # Another writer puts k back to the base's bytes: by the retry the conflict is gone.
        commit(proxied.direct(conn), tmp_path / "c.blt", {"k": "base"}, remote_lock="none")
        gate.release()
        assert push.result(timeout=60).committed
        local = a["k"]
        assert pending(a) == []
    remote = remote_items(conn, tmp_path / "r.blt")
    assert (local, remote["k"]) == ("merged(mine,theirs)", "merged(mine,theirs)")


@pytest.mark.parametrize("kind", ["seg", "index"])
def test_a_lost_reply_to_a_create_only_put_is_recognised_as_the_writers_own(proxied, tmp_path, kind):
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"k": "k0"})
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as a:
        a["k"] = "k1"
        a["new"] = "n1"
        rule = proxied.proxy.add_rule(object_put(conn, kind), "lost_reply")
        try:
            result = a.changes().push()
        except Exception as exc:  # noqa: BLE001 - shown in the failure
            pytest.fail(f"push raised {type(exc).__module__}.{type(exc).__name__}: {exc}")
        assert rule.hits == 1 and result.committed
    assert remote_items(conn, tmp_path / "r.blt") == {"k": "k1", "new": "n1"}


# -- the lease and the probe -----------------------------------------------------------------


@pytest.mark.parametrize("lease", ["created", "taken over after a release"])
def test_a_writer_whose_lease_reply_was_lost_recognises_the_lease_as_its_own(proxied, tmp_path, lease):
    conn = proxied.conn()
    if lease != "created":
        seed(conn, tmp_path / "seed.blt", {"k": "k0"})  # leaves a released lease object
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="str", lease_ttl=60,
                       lock_wait=2) as a:
        a["k"] = "k1"
        rule = proxied.proxy.add_rule(lease_put(conn), "lost_reply")
        result = a.changes().push()
        assert rule.hits == 1 and result.committed
    assert remote_items(conn, tmp_path / "r.blt") == {"k": "k1"}


@pytest.mark.parametrize("lease", ["created", "taken over after a release"])
def test_a_lease_whose_write_lost_its_reply_is_given_back_when_taking_it_fails(proxied, tmp_path, lease):
    """A write of the lease whose reply was lost, then a failure before the next look tells
    whether it landed (here the end of the wait: ``wait=0``, and no retry): the lease may be
    ours, unknown to us. It is given back, not left held until it expires, which every other
    writer would wait out (found by the fault campaign on SeaweedFS).

    Mutation: no give-back after a failed acquire (the lease stays ours for its ttl)."""
    conn = proxied.conn(retries=0)
    if lease != "created":
        seed(conn, tmp_path / "seed.blt", {"k": "k0"})  # leaves a released lease object
    rule = proxied.proxy.add_rule(lease_put(conn), "lost_reply")
    taking = Lease(connect(conn), ttl=60, wait=0)
    with pytest.raises(ebooklet.RemoteUnavailableError):
        taking.acquire()
    assert rule.hits == 1
    assert proxied.get_json(f"{conn.db_key}.ebooklet/lease")["owner"] == ""
    other = Lease(connect(conn), ttl=60, wait=0)
    other.acquire()  # free at once, not in 60 s
    other.release()


def test_a_lost_reply_to_a_lease_renewal_keeps_the_lease(proxied, tmp_path, caplog):
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"k": "k0"})
    with writer(proxied, conn, tmp_path / "a.blt", lease_ttl=1.5) as a:
        a["k"] = "k1"
        # The push stops at its segment upload, lease held and renewed every ttl/3 meanwhile.
        gate = proxied.proxy.hold(object_put(conn, "seg"))
        push = in_background(a.changes().push)
        assert gate.reached.wait(60)
        lost = proxied.proxy.add_rule(lease_put(conn, renew=True), "lost_reply")
        retried = proxied.proxy.add_rule(lease_put(conn, renew=True))
        assert lost.wait(60) and retried.wait(60)  # a renewal landed, its reply was lost, retried
        gate.release()
        with caplog.at_level(logging.WARNING):
            assert push.result(timeout=60).committed
    assert proxied.get_json(f"{conn.db_key}.ebooklet/lease")["owner"] == ""  # released
    assert "could not release" not in caplog.text
    assert remote_items(conn, tmp_path / "r.blt") == {"k": "k1"}


def test_a_fault_in_the_probes_cleanup_does_not_fail_the_first_push(proxied, tmp_path):
    # A bucket of its own: the probe's answer is remembered per bucket and endpoint.
    bucket = proxied.server.make_bucket()
    conn = proxied.conn()
    conn.bucket = bucket
    proxied.proxy.add_rule(lambda r: r.method == "POST" and "delete" in r.query, "503")
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="str") as a:
        a["k"] = "k1"
        assert a.changes().push().committed
    assert remote_items(conn, tmp_path / "r.blt") == {"k": "k1"}


def test_a_push_to_a_missing_bucket_reports_the_missing_bucket(proxied, tmp_path):
    conn = proxied.conn()
    conn.bucket = f"ebk-missing-{time.time_ns()}"
    # flag='c' reads the head to copy the database: a missing bucket is not a database to create.
    with pytest.raises(ebooklet.RemoteNotFoundError, match="the bucket does not exist"):
        ebooklet.open(conn, tmp_path / "c.blt", "c", value_serializer="str")
    assert not (tmp_path / "c.blt").exists()
    with ebooklet.open(conn, tmp_path / "a.blt", "n", value_serializer="str") as a:
        a["k"] = "k1"
        with pytest.raises(ebooklet.RemoteError) as err:
            a.changes().push()
    message = str(err.value)
    assert isinstance(err.value, ebooklet.RemoteNotFoundError), message
    assert "the bucket does not exist" in message and "delet" not in message.lower(), message


def test_a_push_with_a_wrong_secret_reports_refused_credentials(seaweedfs_proxied, tmp_path):
    good = seaweedfs_proxied.conn()
    conn = ebooklet.S3Connection(good.access_key_id, "not-the-secret", good.db_key, good.bucket,
                                 endpoint_url=good.endpoint_url, retries=1)
    with ebooklet.open(conn, tmp_path / "a.blt", "n", value_serializer="str") as a:
        a["k"] = "k1"
        with pytest.raises(ebooklet.RemoteError) as err:
            a.changes().push()
    message = str(err.value)
    assert isinstance(err.value, ebooklet.RemoteAccessError), message
    assert "delet" not in message.lower(), message


# -- promises no other test exercised --------------------------------------------------------


def test_two_writers_without_a_lease_the_one_held_at_its_head_write_rebases_and_commits(
    proxied, tmp_path
):
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"a": "a0", "b": "b0"})
    with writer(proxied, conn, tmp_path / "a.blt", remote_lock="none") as a:
        a["a"] = "a1"
        gate = proxied.proxy.hold(head_put(conn))
        push = in_background(a.changes().push)
        assert gate.reached.wait(60)
        # A has read the head and built its commit; B commits in between.
        commit(proxied.direct(conn), tmp_path / "b.blt", {"b": "b1"}, remote_lock="none")
        gate.release()
        result = push.result(timeout=60)
        assert (result.committed, result.commit, result.attempts) == (True, 3, 2)
        assert (result.keys, result.pulled) == (["a"], ["b"])
        assert a["b"] == "b1" and pending(a) == []
    # A's first head write was refused, not applied over B's commit.
    statuses = [e.status for e in proxied.proxy.log if e.method == "PUT" and e.target.endswith(conn.db_key)]
    assert statuses[-2:] == [412, 200]
    assert remote_items(conn, tmp_path / "r.blt") == {"a": "a1", "b": "b1"}


def test_a_lease_holder_facing_a_head_with_a_higher_fencing_token_refuses_to_commit(proxied, tmp_path):
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"a": "a0"})
    with writer(proxied, conn, tmp_path / "a.blt") as a:
        a["a"] = "a1"
        gate = proxied.proxy.hold(head_get(conn))
        # The head is read while the lease is taken: hold the lease's answer until it is
        # replaced below.
        taken = proxied.proxy.hold(
            lambda r: r.method == "PUT" and r.key == f"{conn.db_key}.ebooklet/lease", where="after"
        )
        push = in_background(a.changes().push)
        assert gate.reached.wait(60) and taken.reached.wait(60)
        # A holds the lease with token t. Behind its back the lease is taken over (token t + 1),
        # as after A's lease expired, and the head replaced by one committed under it.
        lease = proxied.get_json(f"{conn.db_key}.ebooklet/lease")
        token = lease["token"]
        head = proxied.get_json(conn.db_key)
        assert head["lease_token"] < token
        proxied.put_json(f"{conn.db_key}.ebooklet/lease", {**lease, "owner": "b", "token": token + 1})
        head["lease_token"] = token + 1
        proxied.put_json(conn.db_key, head)
        taken.release()
        gate.release()
        with pytest.raises(ebooklet.LeaseLostError):
            push.result(timeout=60)
    assert proxied.get_json(conn.db_key)["lease_token"] == token + 1  # not overwritten
    assert remote_items(conn, tmp_path / "r.blt") == {"a": "a0"}


def test_a_coalesced_ranged_read_ending_before_the_segment_end_returns_exact_values(proxied, tmp_path):
    conn = proxied.conn()
    data = {f"k{i:03d}": f"value-{i:03d}-" + "x" * (i % 7) for i in range(100)}
    seed(conn, tmp_path / "seed.blt", data)
    head = proxied.get_json(conn.db_key)
    [(segment, (size, _live))] = head["segments"].items()
    seen = proxied.proxy.add_rule(lambda r: r.method == "GET" and "/seg/" in r.key, times=None)
    wanted = ["k010", "k011", "k013", "k020"]
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as reader:
        assert dict(reader.get_items(wanted)) == {k: data[k] for k in wanted}
        assert reader["k099"] == data["k099"]  # the segment's last value, on its own
    first, last = seen.requests
    start, end = (int(n) for n in first.header("range").removeprefix("bytes=").split("-"))
    assert first.key.endswith(segment)
    assert 0 < start and end + 1 < size  # one range, inside the object: it ends before its end
    end_start, end_end = (int(n) for n in last.header("range").removeprefix("bytes=").split("-"))
    assert end_end + 1 == size
