"""Several clients sharing one remote: merges, conflicts, policies, pull, discard, the lease."""

from __future__ import annotations

import signal
import warnings

import booklet
import pytest

import ebooklet

from .subprocs import conn_code, python


@pytest.fixture
def clients(s3_remote, tmp_path):
    """Three clients of one database that starts as {"a": 1, "b": 2, "c": 3}."""
    conn = s3_remote.conn()
    with ebooklet.open(conn, tmp_path / "seed.blt", "c", value_serializer="pickle") as seed:
        seed.update({"a": 1, "b": 2, "c": 3})
        seed.changes().push()
    dbs = [ebooklet.open(conn, tmp_path / f"client{i}.blt", "w", allow_pickle=True) for i in range(3)]
    yield dbs
    for db in dbs:
        db.close()


def test_disjoint_edits_from_three_clients_merge(clients):
    x, y, z = clients
    x["a"] = 10
    y["b"] = 20
    del z["c"]
    z["d"] = 4
    for db in clients:
        db.changes().push()
    for db in clients:
        db.changes().pull()
        assert dict(db.items()) == {"a": 10, "b": 20, "d": 4}


def test_the_same_key_edited_on_two_sides_is_a_conflict_by_default(clients):
    x, y, _ = clients
    x["a"] = "x"
    y["a"] = "y"
    x.changes().push()
    changes = {c.key: c for c in y.changes().iter_changes()}
    assert changes["a"].side == "both" and changes["a"].conflict
    assert changes["a"].local == changes["a"].remote == "modified"
    with pytest.raises(ebooklet.ConflictError) as err:
        y.changes().push()
    assert err.value.keys == ["a"]
    with pytest.raises(ebooklet.ConflictError):
        y.changes().pull()
    assert y["a"] == "y"


def test_the_same_bytes_on_both_sides_are_not_a_conflict(clients):
    x, y, _ = clients
    x["a"] = "same"
    y["a"] = "same"
    x.changes().push()
    assert [c.conflict for c in y.changes().iter_changes()] == [False]
    assert not y.changes().push().keys


@pytest.mark.parametrize("policy, expected", [
    ("local", "y"), ("remote", "x"), ("newest", "y"),
    (lambda key, local, remote, base: f"{base}+{remote}+{local}", "1+x+y"),
])
def test_a_conflict_resolves_under_each_policy(clients, policy, expected):
    x, y, z = clients
    x.set("a", "x", timestamp=1_000)
    y.set("a", "y", timestamp=2_000)
    x.changes().push()
    y.changes().push(on_conflict=policy)
    assert y["a"] == expected
    z.changes().pull()
    assert z["a"] == expected
    x.changes().pull()
    assert x["a"] == expected


def test_newest_keeps_the_remote_side_when_it_is_newer(clients):
    x, y, _ = clients
    y.set("a", "y", timestamp=1_000)
    x.set("a", "x", timestamp=2_000)
    x.changes().push()
    y.changes().push(on_conflict="newest")
    assert y["a"] == "x"


def test_pull_resolves_conflicts_too_and_keeps_the_local_winner_pending(clients):
    x, y, _ = clients
    x["a"] = "x"
    y["a"] = "y"
    y["b"] = "y"
    x.changes().push()
    result = y.changes().pull(on_conflict="local")
    assert y["a"] == "y"
    assert {c.key: c.side for c in y.changes().iter_changes()} == {"a": "local", "b": "local"}
    assert result.updated == []


def test_a_delete_on_one_side_and_an_edit_on_the_other_is_a_conflict(clients):
    x, y, _ = clients
    del x["b"]
    y["b"] = "edited"
    x.changes().push()
    [change] = y.changes().iter_changes()
    assert (change.local, change.remote, change.conflict) == ("modified", "deleted", True)
    with pytest.raises(ebooklet.ConflictError):
        y.changes().push()
    y.changes().push(on_conflict="remote")
    assert "b" not in y


def test_a_function_policy_can_delete_with_the_deleted_marker(clients):
    x, y, _ = clients
    x["c"] = "x"
    y["c"] = "y"
    x.changes().push()
    seen = []

    def resolve(key, local, remote, base):
        seen.append((key, local, remote, base))
        return ebooklet.DELETED

    y.changes().push(on_conflict=resolve)
    assert seen == [("c", "y", "x", 3)]
    assert "c" not in y
    x.changes().pull()
    assert "c" not in x


def test_a_deleted_key_never_comes_back_after_pushes_and_pulls(clients):
    x, y, z = clients
    assert y["a"] == 1  # y has it cached
    del x["a"]
    x.changes().push()
    for db in (y, z, x):
        db.changes().pull()
        assert "a" not in db and db.get("a") is None
    y["b"] = 22
    y.changes().push()
    z.changes().pull()
    x.changes().pull()
    for db in clients:
        assert "a" not in db and sorted(db) == ["b", "c"]


def test_a_pull_with_nothing_new_costs_one_conditional_request(clients):
    x, _, _ = clients
    stats = x.stats
    before = stats.requests
    result = x.changes().pull()
    assert result.requests == 1 and stats.requests == before + 1
    assert list(x.changes().iter_changes()) == []
    assert stats.requests == before + 2


def test_discard_reverts_local_changes_to_the_last_sync(clients):
    x, _, _ = clients
    x["a"] = "changed"
    del x["b"]
    x["new"] = "n"
    assert x.changes().discard(["a"]) == ["a"]
    assert x["a"] == 1
    assert x.changes().discard() == ["b", "new"]
    assert dict(x.items()) == {"a": 1, "b": 2, "c": 3}
    assert list(x.changes().iter_changes()) == []


def test_edits_made_with_plain_booklet_offline_are_found_and_pushed(s3_remote, tmp_path):
    conn = s3_remote.conn()
    path = tmp_path / "a.blt"
    with ebooklet.open(conn, path, "c", value_serializer="pickle") as db:
        db.update({"keep": 1, "edit": 2, "drop": 3})
        db.changes().push()
    with booklet.open(path, "w") as raw:
        raw["edit"] = 20
        raw["add"] = 4
        del raw["drop"]
    with ebooklet.open(conn, path, "w") as db:
        assert {c.key: c.local for c in db.changes().iter_changes()} == {
            "add": "added", "drop": "deleted", "edit": "modified"
        }
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert dict(check.items()) == {"keep": 1, "edit": 20, "add": 4}


def test_a_booklet_delete_of_a_fetched_key_is_a_delete_not_an_unfetched_key(s3_remote, tmp_path):
    conn = s3_remote.conn()
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="pickle") as db:
        db.update({"fetched": 1, "lazy": 2})
        db.changes().push()
    path = tmp_path / "r.blt"
    with ebooklet.open(conn, path, "w", allow_pickle=True) as db:
        assert db["fetched"] == 1
    with booklet.open(path, "w") as raw:
        del raw["fetched"]
    with ebooklet.open(conn, path, "w") as db:
        assert "fetched" not in db and db["lazy"] == 2
        assert [(c.key, c.local) for c in db.changes().iter_changes()] == [("fetched", "deleted")]


# -- the lease ---------------------------------------------------------------------------------


def test_a_held_lease_makes_other_pushers_wait_then_fail_naming_the_holder(s3_remote, tmp_path):
    conn = s3_remote.conn()
    holder = ebooklet.open(conn, tmp_path / "a.blt", "c", remote_lock="session", lease_ttl=30)
    try:
        holder["k"] = b"1"
        holder.changes().push()
        with ebooklet.open(conn, tmp_path / "b.blt", "w", lock_wait=0.3) as other:
            other["k2"] = b"2"
            with pytest.raises(ebooklet.LeaseHeldError, match=r"locked by .*:\d+:.* until") as err:
                other.changes().push()
            assert isinstance(err.value, TimeoutError)
            assert other["k2"] == b"2"
    finally:
        holder.close()
    with ebooklet.open(conn, tmp_path / "b.blt", "w", lock_wait=5) as other:
        assert other.changes().push().keys == ["k2"]


def test_a_writer_whose_lease_was_taken_over_cannot_commit(wire, tmp_path):
    from ebooklet.lock import Lease
    from ebooklet.remote import connect

    conn = wire.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c", remote_lock="session", lease_ttl=0.2) as slow:
        slow["k"] = b"slow"
        # It stalls: its next renewal hangs on the network, holding the lease's lock, until the
        # push is under way (its first upload); the push must then find the lease lost.
        stalled = wire.proxy.hold(wire.writes(conn.db_key + ".ebooklet/lease"))
        uploads = wire.writes(".ebooklet/seg/")
        wire.proxy.add_rule(lambda r: uploads(r) and (stalled.release() or True), times=None)
        assert stalled.reached.wait(timeout=60)
        thief = Lease(connect(wire.direct(conn)), ttl=30, wait=10)
        thief.acquire()  # waits for the stalled lease to expire, then takes it over
        with pytest.raises(ebooklet.LeaseLostError, match="Push again"):
            slow.changes().push()
        thief.release()
    with ebooklet.open(wire.direct(conn), tmp_path / "check.blt", "c") as check:
        assert "k" not in check




def test_a_holder_killed_mid_push_leaves_the_remote_consistent_and_its_changes_pending(wire, tmp_path):
    conn = wire.conn()
    with ebooklet.open(conn, tmp_path / "seed.blt", "c", value_serializer="pickle") as seed:
        seed.update({"a": 1})
        seed.changes().push()
    victim = tmp_path / "victim.blt"
    # The victim's commit is held on the wire, never to reach the store: the proxy resets it
    # once released (the victim is dead by then).
    held = wire.proxy.add_rule(wire.head_write(conn), "reset", hold="before")
    proc = python(f"""
        import ebooklet
        db = ebooklet.open({conn_code(conn)}, {str(victim)!r}, "w", lease_ttl=1.0, allow_pickle=True)
        db["a"] = "victim"
        db["v"] = "victim"
        db.changes().push()
    """)
    assert held.reached.wait(60), proc.stderr.read() if proc.poll() is not None else "no commit"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with ebooklet.open(conn, tmp_path / "reader.blt", "r", allow_pickle=True) as reader:
        assert dict(reader.items()) == {"a": 1}
    with ebooklet.open(conn, tmp_path / "next.blt", "w", lock_wait=30, allow_pickle=True) as other:
        other["b"] = "other"
        assert other.changes().push().committed  # took the lease over once it expired
    with ebooklet.open(conn, victim, "w", lock_wait=30) as db:
        assert {c.key for c in db.changes().iter_changes() if c.local} == {"a", "v"}
        assert db.changes().push().keys == ["a", "v"]
    with ebooklet.open(conn, tmp_path / "final.blt", "r", allow_pickle=True) as reader:
        assert dict(reader.items()) == {"a": "victim", "b": "other", "v": "victim"}


@pytest.mark.slow
def test_concurrent_pushes_from_four_processes_lose_nothing_and_apply_nothing_twice(s3_remote, tmp_path):
    conn = s3_remote.conn()
    with ebooklet.open(conn, tmp_path / "seed.blt", "c", value_serializer="pickle") as seed:
        seed["log"] = []
        seed.changes().push()
    procs = [
        python(f"""
            import ebooklet
            def merge(key, local, remote, base):
                # Keep every entry either side added since the base, once.
                return remote + [e for e in local if e not in base and e not in remote]
            with ebooklet.open({conn_code(conn)}, {str(tmp_path / f"p{p}.blt")!r}, "w",
                               lock_wait=120, allow_pickle=True) as db:
                for i in range(25):
                    db[f"p{p}-{{i}}"] = i
                    db["log"] = db["log"] + [({p}, i)]
                    db.changes().push(on_conflict=merge)
                    print("pushed", i, flush=True)
        """)
        for p in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert out.count("pushed") == 25
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        data = dict(check.items())
    expected = {f"p{p}-{i}": i for p in range(4) for i in range(25)}
    assert {k: v for k, v in data.items() if k != "log"} == expected
    assert sorted(data["log"]) == sorted((p, i) for p in range(4) for i in range(25))


def test_a_store_without_conditional_writes_falls_back_to_s3funcs_lock_and_warns_once(moto_server, tmp_path):
    from .faults import UnconditionalS3Transport

    bucket = moto_server.make_bucket()
    conn = ebooklet.S3Connection(moto_server.access_key_id, moto_server.access_key, "dbs/fallback", bucket,
                                 endpoint_url=moto_server.endpoint_url)
    ignoring = UnconditionalS3Transport(moto_server.access_key_id, moto_server.access_key, bucket,
                                        endpoint_url=moto_server.endpoint_url)
    remote = ebooklet.Remote(ignoring, conn.db_key, "a store that ignores conditional writes")
    with ebooklet.open(remote, tmp_path / "a.blt", "c") as db:
        db["k"] = b"1"
        with pytest.warns(RuntimeWarning, match="ignores conditional writes"):
            assert db.changes().push().committed
        db["k2"] = b"2"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the probe's answer is remembered: no second warning
            assert db.changes().push().committed
        assert remote.transport.supports_conditional_writes(remote.prefix) is False
    with ebooklet.open(conn, tmp_path / "check.blt", "r") as check:
        assert dict(check.items()) == {"k": b"1", "k2": b"2"}


def test_a_local_file_refuses_to_sync_with_another_database(tmp_path):
    one, other = tmp_path / "remote" / "one", tmp_path / "remote" / "other"
    with ebooklet.open(one, tmp_path / "a.blt", "c") as db:
        db["k"] = b"1"
        db.changes().push()
    with ebooklet.open(other, tmp_path / "b.blt", "c") as db:
        db["theirs"] = b"2"
        db.changes().push()
    with ebooklet.open(other, tmp_path / "a.blt", "w") as db:
        db["k"] = b"changed"
        for action in (lambda: db.changes().push(), lambda: db.changes().pull(),
                       lambda: list(db.changes().iter_changes())):
            with pytest.raises(ebooklet.SyncError, match="holds another database"):
                action()
    with ebooklet.open(other, tmp_path / "check.blt", "r") as check:
        assert dict(check.items()) == {"theirs": b"2"}
