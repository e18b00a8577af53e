"""Regressions around crashes, stale state and concurrent readers."""

from __future__ import annotations

import signal
import threading

import pytest

import ebooklet
from ebooklet.remote import connect

from .subprocs import python


def _make(conn, path, data):
    with ebooklet.open(conn, path, "c", value_serializer="pickle") as db:
        db.update(data)
        db.changes().push()


def test_a_kill_between_dropping_cached_values_and_saving_the_new_base_deletes_nothing(tmp_path):
    conn = tmp_path / "remote" / "db"
    _make(conn, tmp_path / "w.blt", {"a": 1, "b": 2})
    reader = tmp_path / "r.blt"
    with ebooklet.open(conn, reader, "w", allow_pickle=True) as db:
        assert db["a"] == 1  # cached
    with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
        db["a"] = 10
        db.changes().push()
    proc = python(f"""
        import sys, ebooklet
        from ebooklet import local
        drop = local.LocalStore.drop
        def drop_then_stall(self, key):
            drop(self, key)
            self.data.flush()
            print("dropped", flush=True)
            sys.stdin.readline()
        local.LocalStore.drop = drop_then_stall
        db = ebooklet.open({str(conn)!r}, {str(reader)!r}, "w")
        db.changes().pull()
    """)
    assert proc.stdout.readline().strip() == "dropped", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with ebooklet.open(conn, reader, "w") as db:
        assert [c for c in db.changes().iter_changes() if c.local] == []
        db.changes().pull()
        assert dict(db.items()) == {"a": 10, "b": 2}


def test_copying_twice_over_the_same_target_keeps_every_object_the_target_uses(tmp_path):
    source, target = tmp_path / "remote" / "src", tmp_path / "remote" / "dst"
    _make(source, tmp_path / "a.blt", {"k1": 1, "k2": 2})
    with ebooklet.open(source, tmp_path / "a.blt", "w") as db:
        db.copy_remote(target)
        db.copy_remote(target, overwrite=True)
    with ebooklet.open(target, tmp_path / "t.blt", "w", allow_pickle=True) as db:
        db.set_retention(commits=1, days=0)
        db["k3"] = 3
        db.changes().push()
    ebooklet.gc(target, min_age=0)  # collects whatever the copies left behind
    with ebooklet.open(target, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert dict(check.items()) == {"k1": 1, "k2": 2, "k3": 3}


def test_flag_n_on_a_file_held_elsewhere_fails_without_touching_its_state(tmp_path):
    conn = tmp_path / "remote" / "db"
    holder = ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="str")
    try:
        holder["pending"] = "p"
        holder.sync()
        with pytest.raises(ebooklet.LocalFileBusyError):
            ebooklet.open(conn, tmp_path / "a.blt", "n", timeout=0.2)
        holder["more"] = "m"
        assert {c.key for c in holder.changes().iter_changes()} == {"pending", "more"}
    finally:
        holder.close()


def test_a_data_file_moved_away_keeps_its_pending_changes_from_the_journal(tmp_path, caplog):
    conn = tmp_path / "remote" / "db"
    _make(conn, tmp_path / "a.blt", {"x": 1, "y": 2})
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        db["x"] = 99  # pending, never pushed
        del db["y"]
    (tmp_path / "a.blt").rename(tmp_path / "aside.blt")  # the data file only, not its state
    with caplog.at_level("WARNING", logger="ebooklet.local"):
        db = ebooklet.open(conn, tmp_path / "a.blt", "w", allow_pickle=True)
    assert "the data file was missing" in caplog.text
    with db:
        db["z"] = 3
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        changes = [(c.key, c.local) for c in db.changes().iter_changes()]
        assert changes == [("x", "modified"), ("y", "deleted"), ("z", "added")]
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert dict(check.items()) == {"x": 99, "z": 3}


def test_threads_listing_keys_while_another_reads_lazily(tmp_path, monkeypatch):
    from ebooklet.format import names as fmt

    monkeypatch.setattr(fmt, "PART_SPLIT_BYTES", 2048)
    monkeypatch.setattr(fmt, "PART_TARGET_BYTES", 1024)
    conn = tmp_path / "remote" / "db"
    data = {f"k{i:04d}": i for i in range(2000)}
    _make(conn, tmp_path / "w.blt", data)
    assert ebooklet.remote_info(conn).n_index_parts > 16
    errors: list[BaseException] = []
    with ebooklet.open(conn, tmp_path / "r.blt", "r", allow_pickle=True) as db:
        start = threading.Barrier(3)

        def list_keys() -> None:
            try:
                start.wait()
                for _ in range(3):
                    assert sorted(db.keys()) == sorted(data)
            except BaseException as exc:  # reported below
                errors.append(exc)

        def read() -> None:
            try:
                start.wait()
                for key in list(data)[::7]:
                    assert db[key] == data[key]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=f) for f in (list_keys, list_keys, read)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert connect(conn).transport.get(connect(conn).db_key)


def _offline(db, conn, path, edit):
    """Close ``db``, edit its file with plain booklet, open it again."""
    import booklet

    db.close()
    with booklet.open(path, "w") as raw:
        edit(raw)
    return ebooklet.open(conn, path, "w")


def test_a_plain_booklet_delete_survives_later_pushes_and_pulls(tmp_path):
    # The state machine's sequence: the deleted key came back as "not fetched yet".
    conn = tmp_path / "remote" / "db"
    _make(conn, tmp_path / "seed.blt", {"a": 0})
    one_path, two_path = tmp_path / "one.blt", tmp_path / "two.blt"
    one = ebooklet.open(conn, one_path, "w", allow_pickle=True)
    two = ebooklet.open(conn, two_path, "w", allow_pickle=True)
    try:
        assert one["a"] == 0  # cached, so plain booklet can delete it
        one = _offline(one, conn, one_path, lambda raw: raw.__delitem__("a"))
        del two["a"]
        two = _offline(two, conn, two_path, lambda raw: raw.__setitem__("b", 0))
        two.changes().push()
        two = _offline(two, conn, two_path, lambda raw: raw.__delitem__("b"))
        one.changes().push()  # its delete of "a" is already on the remote
        two.changes().pull()
        assert "b" not in two and list(two) == []
        assert [(c.key, c.local) for c in two.changes().iter_changes()] == [("b", "deleted")]
    finally:
        one.close()
        two.close()


def test_a_push_whose_changes_the_remote_already_has_commits_nothing(tmp_path):
    conn = tmp_path / "remote" / "db"
    _make(conn, tmp_path / "seed.blt", {"a": 0})
    with ebooklet.open(conn, tmp_path / "one.blt", "w", allow_pickle=True) as one, \
            ebooklet.open(conn, tmp_path / "two.blt", "w", allow_pickle=True) as two:
        one["a"] = 5
        two["a"] = 5
        one.changes().push()
        commit = ebooklet.remote_info(conn).commit
        result = two.changes().push()
        assert not result.committed and ebooklet.remote_info(conn).commit == commit
        assert list(two.changes().iter_changes()) == []
