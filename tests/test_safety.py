"""Safety: atomic commits, concurrent writers, threads, processes and crashes."""

from __future__ import annotations

import signal
import threading

import booklet
import pytest

import ebooklet

from .faults import Gate, faulty_remote
from .subprocs import conn_code, python


def _push(conn, path, data, flag="c"):
    with ebooklet.open(conn, path, flag, value_serializer="pickle") as db:
        db.update(data)
        return db.changes().push()


# The folder remote has no wire: its faults go through a transport wrapper (tests/faults.py).
# The S3 servers get the same faults on the wire, from the proxy (the *_on_the_wire tests).
@pytest.mark.parametrize("remote", ["folder"], indirect=True)
def test_a_reader_during_a_push_sees_the_old_state_or_the_new_never_a_mix(remote, tmp_path):
    conn = remote.conn()
    old = {f"k{i}": "old" for i in range(200)}
    _push(conn, tmp_path / "w.blt", old)
    faulty, transport = faulty_remote(conn)
    db = ebooklet.open(faulty, tmp_path / "w.blt", "w")
    for i in range(0, 200, 2):
        db[f"k{i}"] = "new"
    db["added"] = "new"
    gate = Gate(faulty.db_key)
    transport.before_put = gate
    pusher = threading.Thread(target=lambda: db.changes().push())
    pusher.start()
    try:
        assert gate.reached.wait(timeout=60)
        # Segments and index parts are uploaded; the head is not replaced yet.
        with ebooklet.open(conn, tmp_path / "during.blt", "r", allow_pickle=True) as reader:
            assert dict(reader.items()) == old
    finally:
        gate.release.set()
        pusher.join()
        db.close()
    with ebooklet.open(conn, tmp_path / "during.blt", "r") as reader:
        reader.changes().pull()
        expected = {**old, **{f"k{i}": "new" for i in range(0, 200, 2)}, "added": "new"}
        assert dict(reader.items()) == expected
    with ebooklet.open(conn, tmp_path / "after.blt", "r", allow_pickle=True) as reader:
        assert dict(reader.items()) == expected


def test_a_reader_during_a_push_sees_the_old_state_or_the_new_never_a_mix_on_the_wire(proxied, tmp_path):
    conn = proxied.conn()
    old = {f"k{i}": "old" for i in range(200)}
    _push(conn, tmp_path / "w.blt", old)
    db = ebooklet.open(conn, tmp_path / "w.blt", "w")
    for i in range(0, 200, 2):
        db[f"k{i}"] = "new"
    db["added"] = "new"
    head = proxied.proxy.hold(lambda r: r.method == "PUT" and r.key == conn.db_key)
    pusher = threading.Thread(target=lambda: db.changes().push())
    pusher.start()
    try:
        assert head.reached.wait(timeout=60)
        # Segments and index parts are uploaded; the head's PUT is held before the server.
        with ebooklet.open(proxied.direct(conn), tmp_path / "during.blt", "r", allow_pickle=True) as reader:
            assert dict(reader.items()) == old
    finally:
        head.release()
        pusher.join()
        db.close()
    expected = {**old, **{f"k{i}": "new" for i in range(0, 200, 2)}, "added": "new"}
    with ebooklet.open(proxied.direct(conn), tmp_path / "after.blt", "r", allow_pickle=True) as reader:
        assert dict(reader.items()) == expected


def test_a_push_cut_off_at_its_commit_on_the_wire_changes_nothing_and_can_be_retried(proxied, tmp_path):
    conn = proxied.conn()
    _push(conn, tmp_path / "w.blt", {"a": 1})
    with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
        db["a"] = 2
        db["b"] = 3
        cut = proxied.proxy.add_rule(lambda r: r.method == "PUT" and r.key == conn.db_key, "reset",
                                     times=None)
        with pytest.raises(ConnectionError):
            db.changes().push()
        assert cut.fired.is_set()
        with ebooklet.open(proxied.direct(conn), tmp_path / "r.blt", "r", allow_pickle=True) as reader:
            assert dict(reader.items()) == {"a": 1}
        proxied.proxy.remove_rule(cut)
        assert {c.key for c in db.changes().iter_changes()} == {"a", "b"}
        assert db.changes().push().keys == ["a", "b"]
    with ebooklet.open(proxied.direct(conn), tmp_path / "r2.blt", "r", allow_pickle=True) as reader:
        assert dict(reader.items()) == {"a": 2, "b": 3}


@pytest.mark.parametrize("remote", ["folder"], indirect=True)
def test_a_push_that_dies_before_its_commit_changes_nothing_and_can_be_retried(remote, tmp_path):
    conn = remote.conn()
    _push(conn, tmp_path / "w.blt", {"a": 1})

    remote, faulty = faulty_remote(conn)

    def fail_at_head(key: str) -> None:
        if key == remote.db_key:
            raise ConnectionError("cut off before the commit")

    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        db["a"] = 2
        db["b"] = 3
        faulty.before_put = fail_at_head
        with pytest.raises(ConnectionError):
            db.changes().push()
        with ebooklet.open(conn, tmp_path / "r.blt", "r", allow_pickle=True) as reader:
            assert dict(reader.items()) == {"a": 1}
        faulty.before_put = lambda key: None
        assert {c.key for c in db.changes().iter_changes()} == {"a", "b"}
        assert db.changes().push().keys == ["a", "b"]
    with ebooklet.open(conn, tmp_path / "r2.blt", "r", allow_pickle=True) as reader:
        assert dict(reader.items()) == {"a": 2, "b": 3}


def test_two_clients_pushing_the_same_key_from_one_base_the_second_is_refused(remote, tmp_path):
    conn = remote.conn()
    _push(conn, tmp_path / "seed.blt", {"shared": 0, "other": 0})
    a = ebooklet.open(conn, tmp_path / "a.blt", "w", allow_pickle=True)
    b = ebooklet.open(conn, tmp_path / "b.blt", "w", allow_pickle=True)
    try:
        a["shared"] = "from a"
        b["shared"] = "from b"
        assert a.changes().push().committed
        with pytest.raises(ebooklet.ConflictError) as err:
            b.changes().push()
        assert err.value.keys == ["shared"]
        assert "shared" in str(err.value) and "on_conflict" in str(err.value)
        with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
            assert check["shared"] == "from a"
        assert b["shared"] == "from b"  # the refused change is still pending locally
    finally:
        a.close()
        b.close()


def test_two_clients_pushing_different_keys_from_one_base_both_land(remote, tmp_path):
    conn = remote.conn()
    _push(conn, tmp_path / "seed.blt", {"x": 0, "y": 0})
    with ebooklet.open(conn, tmp_path / "a.blt", "w", allow_pickle=True) as a, \
            ebooklet.open(conn, tmp_path / "b.blt", "w", allow_pickle=True) as b:
        a["x"] = "a"
        b["y"] = "b"
        b["z"] = "b"
        a.changes().push()
        result = b.changes().push()
        assert result.committed and result.pulled == ["x"]
        assert a["x"] == "a" and b["x"] == "a"
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert dict(check.items()) == {"x": "a", "y": "b", "z": "b"}


def test_writes_from_four_threads_all_land(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="pickle") as db:
        def work(t: int) -> None:
            for i in range(500):
                db[f"t{t}-{i}"] = (t, i)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(db) == 2000
        assert db.changes().push().keys.__len__() == 2000
    with ebooklet.open(conn, tmp_path / "b.blt", "r", allow_pickle=True) as db:
        assert dict(db.items()) == {f"t{t}-{i}": (t, i) for t in range(4) for i in range(500)}



def test_a_second_process_opening_the_same_local_file_gets_a_clear_error_after_its_timeout(tmp_path):
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(remote, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db["k"] = "v"
        db.sync()
        proc = python(f"""
            import ebooklet
            try:
                ebooklet.open({str(remote)!r}, {str(tmp_path / 'a.blt')!r}, "w", timeout=0.5)
            except ebooklet.LocalFileBusyError as exc:
                print("busy:", exc)
        """)
        out, err = proc.communicate(timeout=60)
        assert "busy:" in out and "open in another process" in out, err
        db["k2"] = "v2"
    with booklet.open(tmp_path / "a.blt") as raw:
        assert dict(raw.items()) == {"k": "v", "k2": "v2"}


def test_a_process_killed_after_sync_loses_none_of_the_synced_changes(remote, tmp_path):
    conn = remote.conn()
    _push(conn, tmp_path / "a.blt", {"pushed": 0})
    local = tmp_path / "a.blt"
    proc = python(f"""
        import sys, ebooklet
        db = ebooklet.open({conn_code(conn)}, {str(local)!r}, "w")
        for i in range(1000):
            db[f"k{{i}}"] = i
        del db["pushed"]
        db.sync()
        print("synced", flush=True)
        sys.stdin.readline()
    """)
    assert proc.stdout.readline().strip() == "synced", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with ebooklet.open(conn, local, "w") as db:
        assert {k: db[k] for k in db} == {f"k{i}": i for i in range(1000)}
        changes = list(db.changes().iter_changes())
        assert len(changes) == 1001
        assert {c.local for c in changes} == {"added", "deleted"}
        result = db.changes().push()
        assert len(result.keys) == 1000 and result.deleted == ["pushed"]
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert len(check) == 1000



def test_a_local_file_torn_by_a_kill_mid_write_is_rebuilt_keeping_every_synced_change(tmp_path, caplog):
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    proc = python(f"""
        import sys, ebooklet
        db = ebooklet.open({str(remote)!r}, {str(local)!r}, "c", value_serializer="pickle")
        for i in range(500):
            db[f"synced{{i}}"] = i
        db.sync()
        # Unsynced writes big enough to flush booklet's buffer to the file.
        for i in range(3000):
            db[f"unsynced{{i}}"] = "x" * 2000
        print("dirty", flush=True)
        sys.stdin.readline()
    """)
    assert proc.stdout.readline().strip() == "dirty", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # Tear the last write: cut the file in the middle of its last block.
    size = local.stat().st_size
    with open(local, "r+b") as f:
        f.truncate(size - 1500)
    with caplog.at_level("WARNING", logger="ebooklet"):
        db = ebooklet.open(remote, local, "w")
    with db:
        assert "rebuilt" in caplog.text
        for i in range(500):
            assert db[f"synced{i}"] == i
        assert db.changes().push().committed
    assert list(tmp_path.glob("a.blt.damaged-*")), "the damaged original is kept aside"
    with ebooklet.open(remote, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert all(check[f"synced{i}"] == i for i in range(500))


def test_a_local_file_with_a_destroyed_header_is_rebuilt_from_the_remote_and_the_journal(tmp_path):
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "c") as db:
        db["k"] = b"v"
        db.changes().push()
        db["pending"] = b"p"
    with open(local, "r+b") as f:
        f.write(b"\0" * 64)
    with ebooklet.open(remote, local, "w") as db:
        assert db["k"] == b"v"  # fetched again
        assert [(c.key, c.local) for c in db.changes().iter_changes()] == [("pending", "added")]
    assert list(tmp_path.glob("a.blt.damaged-*")), "the damaged original is kept aside"


def test_readers_share_a_local_copy_and_a_fetch_waits_for_the_others(tmp_path):
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(remote, tmp_path / "w.blt", "c", value_serializer="str") as db:
        db.update({"cached": "c", "lazy": "l"})
        db.changes().push()
    with ebooklet.open(remote, tmp_path / "copy.blt", "r") as db:
        assert db["cached"] == "c"
    one = ebooklet.open(remote, tmp_path / "copy.blt", "r", timeout=0.2)
    two = ebooklet.open(remote, tmp_path / "copy.blt", "r", timeout=0.2)
    try:
        assert one["cached"] == two["cached"] == "c"
        with pytest.raises(ebooklet.LocalFileBusyError, match="another database object of this process"):
            one["lazy"]  # caching it needs the file to itself: refused at once, not after the timeout
        two.close()
        assert one["lazy"] == "l"
    finally:
        one.close()
        two.close()


def test_a_torn_local_copy_of_an_index_part_is_fetched_again(tmp_path):
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(remote, tmp_path / "w.blt", "c", value_serializer="str") as db:
        db.update({"a": "1", "b": "2"})
        db.changes().push()
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert db["a"] == "1"
    [part] = [p for p in (tmp_path / "r.blt.ebooklet" / "parts").iterdir() if p.suffix != ".bits"]
    part.write_bytes(part.read_bytes()[:-10])
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert db["b"] == "2"
