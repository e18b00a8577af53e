"""A push streams its changes: values into segments as they come, records of where they went
spooled to disk past a bound, index parts built one at a time. These tests shrink the bounds
so that small pushes cross them, and check what a user sees: the data, the memory a push
holds, and what an interrupted push leaves behind."""

from __future__ import annotations

import random
import tracemalloc

import booklet
import pytest

import ebooklet
from ebooklet.format import names as fmt
from ebooklet.remote import connect
from ebooklet.settings import settings as ebooklet_settings
from ebooklet.sync import commit as sync_commit

from .test_faults_network import lose_the_commit_reply


def _objects(conn) -> set[str]:
    remote = connect(conn)
    return {k[len(remote.prefix):] for k in remote.transport.list(remote.prefix)}


@pytest.fixture
def small_bounds(monkeypatch):
    """Segments of 2 KB, a spool of 7 records, index parts of a few keys."""
    monkeypatch.setattr(ebooklet_settings, "segment_bytes", 2000)
    monkeypatch.setattr(sync_commit, "SPOOL_RECORDS", 7)
    monkeypatch.setattr(fmt, "PART_SPLIT_BYTES", 2048)
    monkeypatch.setattr(fmt, "PART_TARGET_BYTES", 1024)


def test_pushes_that_cross_every_bound_keep_every_write_and_delete(remote, tmp_path, small_bounds):
    conn = remote.conn()
    rng = random.Random(7)
    model: dict[str, bytes] = {}
    path = tmp_path / "a.blt"
    for round_ in range(4):
        with ebooklet.open(conn, path, "c") as db:
            for _ in range(150):
                key = f"k{rng.randrange(400):04d}"
                if model and rng.random() < 0.25:
                    gone = rng.choice(sorted(model))
                    del db[gone]
                    del model[gone]
                else:
                    model[key] = db[key] = rng.randbytes(rng.randrange(1, 120))
            db[f"overwritten-{round_}"] = b"first"
            db[f"overwritten-{round_}"] = model[f"overwritten-{round_}"] = b"second"
            result = db.changes().push()
            assert result.committed
        info = ebooklet.remote_info(conn)
        assert info.n_keys == len(model)
        with ebooklet.open(conn, tmp_path / f"fresh-{round_}.blt", "r") as fresh:
            assert dict(fresh.items()) == model
    assert info.n_index_parts > 4  # the index was split on the way
    assert sum(name.startswith("seg/") for name in _objects(conn)) > 10


def test_a_retried_push_reuses_its_spooled_changes(tmp_path, small_bounds):
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as a:
        a.update({f"a{i:03d}": b"A" * 50 for i in range(60)})
        a.changes().push()
    # No remote lock: the two writers race, and the compare-and-swap decides.
    with ebooklet.open(conn, tmp_path / "b.blt", "c", remote_lock="none") as b:
        b.update({f"b{i:03d}": b"B" * 50 for i in range(60)})
        calls = []

        def commit_first(progress):
            # Another writer commits while b uploads: b's first commit attempt loses.
            if not calls and progress.keys_done:
                calls.append(progress)
                with ebooklet.open(conn, tmp_path / "a.blt", "w", remote_lock="none") as a:
                    a["a000"] = b"changed by a"
                    del a["a001"]
                    a.changes().push()

        result = b.changes().push(progress=commit_first)
        assert result.committed and result.attempts == 2
        assert result.keys == sorted(f"b{i:03d}" for i in range(60))
    expected = {f"a{i:03d}": b"A" * 50 for i in range(60)} | {f"b{i:03d}": b"B" * 50 for i in range(60)}
    expected["a000"] = b"changed by a"
    del expected["a001"]
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r") as fresh:
        assert dict(fresh.items()) == expected


def test_a_push_does_not_hold_all_its_values_in_memory(tmp_path):
    conn = tmp_path / "remote" / "db"
    value = bytes(range(256)) * 16  # 4 KiB
    n = 24_000  # 94 MiB of values, pushed at once
    with ebooklet.open(conn, tmp_path / "a.blt", "n") as db:
        for i in range(n):
            db[f"k{i:06d}"] = value
        db.sync()
        tracemalloc.start()
        try:
            result = db.changes().push()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(result.keys) == n
    values = n * len(value)
    # A segment being filled and the uploads in flight, not the whole push.
    assert peak < values * 0.5, f"the push held {peak:,} bytes for {values:,} bytes of values"
    with ebooklet.open(conn, tmp_path / "b.blt", "r") as fresh:
        assert len(fresh) == n and fresh[f"k{n - 1:06d}"] == value


def test_an_interrupted_push_takes_back_its_uploads_and_can_run_again(tmp_path, monkeypatch):
    monkeypatch.setattr(ebooklet_settings, "segment_bytes", 4000)
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db["first"] = b"1"
        db.changes().push()
    before = _objects(conn)
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        db.update({f"k{i:04d}": bytes(100) for i in range(300)})

        def interrupt(progress):
            if progress.keys_done > 50:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            db.changes().push(progress=interrupt)
        assert _objects(conn) - {"lease"} == before - {"lease"}
        # Nothing was committed: every change is still pending.
        assert len(list(db.changes().iter_changes())) == 300
        assert db.changes().push().keys == [f"k{i:04d}" for i in range(300)]
    with ebooklet.open(conn, tmp_path / "b.blt", "r") as fresh:
        assert len(fresh) == 301


def test_a_pending_write_deleted_with_plain_booklet_is_not_pushed(tmp_path):
    # The push reads the journal; a key deleted behind ebooklet's back before it was ever
    # pushed must leave the journal too (found by a Hypothesis run of tests/test_model.py).
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db["kept"] = b"1"
        db.changes().push()
        db["gone"] = b"never pushed"
    with booklet.open(tmp_path / "a.blt", "w") as raw:
        del raw["gone"]
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        assert db.changes().push().keys == []
        assert "gone" not in db
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r") as fresh:
        assert dict(fresh.items()) == {"kept": b"1"}


def test_a_change_the_remote_overruled_is_settled_after_a_lost_reply(moto_proxied, tmp_path):
    # The push keeps the remote's value of a conflicting key, its commit's reply is lost and
    # the server stops answering; the next operation learns the commit landed. The local
    # change it overruled must not survive as a pending change (found by the Hypothesis model).
    conn = moto_proxied.conn()
    with ebooklet.open(conn, tmp_path / "seed.blt", "c") as seed:
        seed["k"] = b"base"
        seed.changes().push()
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as a:
        assert a["k"] == b"base"
        a["k"] = b"mine"
        a["other"] = b"also mine"
        with ebooklet.open(conn, tmp_path / "b.blt", "w") as b:
            b["k"] = b"theirs"
            b.changes().push()
        lose_the_commit_reply(moto_proxied.proxy, conn)
        with pytest.raises(ebooklet.CommitUnknownError):
            a.changes().push(on_conflict="remote")
        moto_proxied.proxy.clear_rules()
        a.changes().pull()  # settles the commit first
        assert a["k"] == b"theirs" and a["other"] == b"also mine"
        assert list(a.changes().iter_changes()) == []
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r") as fresh:
        assert dict(fresh.items()) == {"k": b"theirs", "other": b"also mine"}


def test_a_pending_delete_undone_with_plain_booklet_is_not_pushed(tmp_path):
    # Deleted through ebooklet, then written back to the base's value with plain booklet:
    # no change is left, and the journal's delete must not be pushed (found by the model).
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db["a"] = b"0"
        db.changes().push()
        del db["a"]
    with booklet.open(tmp_path / "a.blt", "w") as raw:
        raw["a"] = b"0"
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        db.compact()
        assert db["a"] == b"0"
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r") as fresh:
        assert dict(fresh.items()) == {"a": b"0"}


def test_a_push_of_values_equal_to_the_base_neither_commits_nor_pulls(tmp_path):
    # Found by the Hypothesis model: writing back the base's value is no change, so the push
    # has nothing to do, and must not catch up with the remote behind the user's back.
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as a:
        a.update({"k": b"1", "j": b"same"})
        a.changes().push()
        with ebooklet.open(conn, tmp_path / "b.blt", "w") as b:
            b["k"] = b"2"
            b.changes().push()
        a["j"] = b"same"
        result = a.changes().push()
        assert not result and not result.committed and result.pulled == []
        assert a["k"] == b"1"  # not pulled
        assert list(a.changes().iter_changes())[0].key == "k"  # the remote's change, still to pull
        assert a.changes().pull().updated == ["k"] and a["k"] == b"2"


def test_compact_with_nothing_to_rewrite_still_catches_up_with_the_remote(tmp_path):
    # Found by the Hypothesis model: a compaction commits the remote's current state, so the
    # client that asked for it is synced with it afterwards, as after any commit.
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as a:
        a["k"] = b"1"
        a.changes().push()
    with ebooklet.open(conn, tmp_path / "b.blt", "w") as b:
        assert b["k"] == b"1"
        with ebooklet.open(conn, tmp_path / "a.blt", "w") as a:
            del a["k"]
            a.changes().push()
        b.compact()
        assert "k" not in b and dict(b.items()) == {}
