"""A database that lasts: a small head, compaction, garbage collection, verification, history."""

from __future__ import annotations

import pathlib
import threading
from datetime import datetime, timedelta, timezone

import pytest

import ebooklet
from ebooklet.sync.commit import COMPACT_SMALL

from .faults import faulty_remote
from .test_faults_network import head_put


def _objects(conn: pathlib.Path) -> set[str]:
    prefix = conn.with_name(conn.name + ".ebooklet")
    return {p.relative_to(prefix).as_posix() for p in prefix.rglob("*") if p.is_file()}


def _head_bytes(conn: pathlib.Path) -> int:
    return len(conn.read_bytes())


@pytest.mark.slow
def test_one_key_pushes_keep_the_head_small_and_the_segments_few(tmp_path):
    conn = tmp_path / "remote" / "db"
    sizes = {}
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="orjson") as db:
        db.update({f"k{i:05d}": i for i in range(2000)})
        db.changes().push()
        for n in range(1, 151):
            db[f"k{n:05d}"] = -n
            db.changes().push()
            if n in (10, 150):
                sizes[n] = _head_bytes(conn)
    head = ebooklet.remote_info(conn)
    assert head.commit == 151
    assert sizes[150] <= max(2 * sizes[10], 16 * 1024), sizes
    assert head.n_segments <= COMPACT_SMALL + 1, head.n_segments
    # A fresh reader pays for the live data, not for the number of pushes.
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r", allow_pickle=True) as fresh:
        assert fresh.load_items() == 2000
        assert fresh.stats.requests <= 2 + 1 + head.n_segments
        assert fresh["k00150"] == -150 and fresh["k01999"] == 1999


def test_compact_rewrites_dead_segments_and_readers_of_older_commits_keep_reading(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="pickle") as db:
        db.update({f"k{i}": i for i in range(300)})
        db.changes().push()
        for i in range(0, 300, 3):
            del db[f"k{i}"]
        db.changes().push()
    # A reader that holds the pre-compaction head.
    old_reader = ebooklet.open(conn, tmp_path / "old.blt", "r", allow_pickle=True)
    try:
        before = ebooklet.remote_info(conn)
        with ebooklet.open(conn, tmp_path / "w.blt", "w", allow_pickle=True) as db:
            result = db.compact()
        assert result.committed and result.compacted == 200 and result.keys == []
        after = ebooklet.remote_info(conn)
        assert after.segment_bytes < before.segment_bytes
        expected = {f"k{i}": i for i in range(300) if i % 3}
        # Replaced segments stay readable for the retention window.
        assert dict(old_reader.items()) == expected
    finally:
        old_reader.close()
    with ebooklet.open(conn, tmp_path / "new.blt", "r", allow_pickle=True) as reader:
        assert dict(reader.items()) == expected
    assert ebooklet.verify(conn, deep=True)


def test_compaction_and_a_concurrent_writer_both_commit_and_nothing_is_lost(wire, tmp_path):
    conn = wire.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="pickle") as db:
        db.update({f"k{i}": i for i in range(200)})
        db.changes().push()
        for i in range(100):
            db[f"k{i}"] = -i
        db.changes().push()
    held = wire.proxy.hold(wire.head_write(conn))  # the compactor's first commit waits on the wire
    compactor = ebooklet.open(conn, tmp_path / "c.blt", "w", remote_lock="none", allow_pickle=True)
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", compactor.compact()))
    thread.start()
    try:
        assert held.reached.wait(timeout=60)  # its new segments are up; its head is not
        with ebooklet.open(wire.direct(conn), tmp_path / "b.blt", "w", remote_lock="none",
                           allow_pickle=True) as other:
            other["k150"] = "other"
            del other["k199"]
            assert other.changes().push().committed
    finally:
        held.release()
        thread.join()
        compactor.close()
    assert outcome["result"].committed and outcome["result"].attempts == 2
    expected = {f"k{i}": (-i if i < 100 else i) for i in range(199)}
    expected["k150"] = "other"
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert dict(check.items()) == expected
    assert ebooklet.verify(conn, deep=True)


def test_gc_never_removes_what_a_push_in_flight_has_uploaded(moto_proxied, tmp_path):
    conn = moto_proxied.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db.update({"a": b"1"})
        db.changes().push()
    held = moto_proxied.proxy.hold(head_put(conn))  # the commit waits on the wire
    db = ebooklet.open(conn, tmp_path / "a.blt", "w", allow_pickle=True)
    db.update({f"k{i}": b"x" * 100 for i in range(100)})
    pusher = threading.Thread(target=lambda: db.changes().push())
    pusher.start()
    prefix = conn.db_key + ".ebooklet/"
    try:
        assert held.reached.wait(timeout=60)
        uploaded = set(moto_proxied.keys(prefix))
        report = ebooklet.gc(moto_proxied.direct(conn))  # the default safe age
        assert report.removed == [] and report.too_young > 0
        assert set(moto_proxied.keys(prefix)) == uploaded
    finally:
        held.release()
        pusher.join()
        db.close()
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert len(check) == 101
    assert ebooklet.verify(conn, deep=True)


def _seeded(conn, tmp_path) -> None:
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db.update({"a": b"1", "b": b"2"})
        db.changes().push()


def _push_cut_off_before_its_commit(conn, tmp_path) -> None:
    with ebooklet.open(conn, tmp_path / "a.blt", "w", allow_pickle=True) as db:
        db["c"] = b"3" * 1000
        with pytest.raises(ebooklet.RemoteUnavailableError):
            db.changes().push()


def _gc_removes_the_leftovers_and_nothing_else(conn, tmp_path) -> None:
    assert ebooklet.gc(conn).removed == []  # too recent: it might be a push in flight
    report = ebooklet.gc(conn, min_age=0)
    assert report.removed and report.bytes_removed >= 1000
    assert {name.split("/")[0] for name in report.removed} <= {"seg", "index", "log"}
    assert ebooklet.gc(conn, min_age=0).removed == []
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert dict(check.items()) == {"a": b"1", "b": b"2"}
    assert ebooklet.verify(conn, deep=True)


def test_gc_removes_the_leftovers_of_a_failed_push_and_never_what_commits_use(wire, tmp_path):
    conn = wire.conn()
    _seeded(conn, tmp_path)
    wire.proxy.add_rule(wire.head_write(conn), "503", times=None)  # every try of the commit
    _push_cut_off_before_its_commit(conn, tmp_path)
    wire.proxy.clear_rules()
    _gc_removes_the_leftovers_and_nothing_else(conn, tmp_path)


def test_gc_removes_the_leftovers_of_a_failed_push_on_a_folder(tmp_path):
    # The folder remote has no wire: its fault goes through a transport wrapper.
    conn = tmp_path / "remote" / "db"
    _seeded(conn, tmp_path)
    failing, transport = faulty_remote(conn)

    def cut_off(key: str) -> None:
        if key == failing.db_key:
            raise ebooklet.RemoteUnavailableError("cut off before the commit")

    transport.before_put = cut_off
    _push_cut_off_before_its_commit(failing, tmp_path)
    _gc_removes_the_leftovers_and_nothing_else(conn, tmp_path)


def test_gc_dry_run_removes_nothing(tmp_path):
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db.set_retention(commits=1, days=0)
        db["a"] = b"1"
        db.changes().push()
        db["a"] = b"2"
        db.changes().push()
    before = _objects(conn)
    report = ebooklet.gc(conn, min_age=0, dry_run=True)
    assert report.removed and report.dry_run and _objects(conn) == before
    assert "would remove" in str(report)


def _damage(conn: pathlib.Path, kind: str) -> str:
    prefix = conn.with_name(conn.name + ".ebooklet")
    if kind == "deleted segment":
        victim = next((prefix / "seg").iterdir())
        victim.unlink()
    elif kind == "truncated part":
        victim = next((prefix / "index").iterdir())
        victim.write_bytes(victim.read_bytes()[:-10])
    else:
        victim = next((prefix / "seg").iterdir())
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    return victim.relative_to(prefix).as_posix()


@pytest.mark.parametrize("kind", ["deleted segment", "truncated part", "flipped value"])
def test_verify_finds_damage(tmp_path, kind):
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db.update({f"k{i}": bytes([i]) * 50 for i in range(40)})
        db.changes().push()
    assert ebooklet.verify(conn, deep=True)
    name = _damage(conn, kind)
    deep = ebooklet.verify(conn, deep=True)
    assert not deep and any(p.startswith(name) for p in deep.problems), deep.problems
    shallow = ebooklet.verify(conn)
    # A flipped byte inside a value is found only by reading the value.
    assert bool(shallow) is (kind == "flipped value")
    assert str(deep).startswith(f"{conn.as_uri()}: ")


def test_history_opens_each_retained_commit_with_exactly_its_values(remote, tmp_path):
    conn = remote.conn()
    snapshots = []
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="pickle") as db:
        for n in range(5):
            db[f"k{n}"] = n
            if n:
                del db[f"k{n - 1}"]
            db["always"] = n
            db.changes().push()
            snapshots.append(dict(db.items()))
        log = db.log()
        assert [c.number for c in log] == [5, 4, 3, 2, 1]
        assert (log[0].written, log[0].deleted) == (2, 1)
        assert [(c.key, c.remote) for c in db.diff(4)] == [
            ("always", "modified"), ("k3", "deleted"), ("k4", "added")
        ]
        assert [(c.key, c.remote) for c in db.diff(1, 3)] == [
            ("always", "modified"), ("k0", "deleted"), ("k2", "added")
        ]
    for n, expected in enumerate(snapshots, start=1):
        with ebooklet.open(conn, tmp_path / f"at{n}.blt", "r", at=n, allow_pickle=True) as old:
            assert dict(old.items()) == expected
            assert old.changes().pull().commit == n  # a past commit stays where it is
    when = log[2].committed_at + timedelta(microseconds=1)
    with ebooklet.open(conn, tmp_path / "at-time.blt", "r", at=when, allow_pickle=True) as old:
        assert dict(old.items()) == snapshots[2]
    with pytest.raises(ebooklet.RemoteNotFoundError, match="no commit .* was made at or before"):
        ebooklet.open(conn, tmp_path / "before.blt", "r", at=datetime(2000, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match="flag='r'"):
        ebooklet.open(conn, tmp_path / "w2.blt", "w", at=1, allow_pickle=True)


def test_retention_decides_which_commits_stay_readable(tmp_path):
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "w.blt", "c") as db:
        db.set_retention(commits=2, days=0)
        for n in range(5):
            db["k"] = bytes([n])
            db.changes().push()
    report = ebooklet.gc(conn, min_age=0)
    assert report.commits_kept == 2
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as db:
        assert [c.number for c in db.log()] == [5, 4]
    for n in (4, 5):
        with ebooklet.open(conn, tmp_path / f"at{n}.blt", "r", at=n, allow_pickle=True) as old:
            assert old["k"] == bytes([n - 1])
    with pytest.raises(ebooklet.RemoteNotFoundError, match="not kept"):
        ebooklet.open(conn, tmp_path / "at3.blt", "r", at=3, allow_pickle=True)
    assert ebooklet.verify(conn, deep=True)


def test_the_command_line_lists_diffs_compacts_collects_and_verifies(tmp_path):
    from .test_cli import ebk

    remote = tmp_path / "bucket" / "db"
    with ebooklet.open(remote, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.set_retention(commits=1, days=0)
        db.update({f"k{i}": "v" for i in range(20)})
        db.changes().push()
        for i in range(3):
            db[f"k{i}"] = "w"
            del db[f"k{19 - i}"]
            db.changes().push()
    log = ebk(tmp_path, "log", "bucket/db", "--json")
    assert log.code == 0 and [c["number"] for c in log.json()] == [4]  # retention: one commit
    diff = ebk(tmp_path, "diff", "bucket/db", "4", "--json")
    assert diff.code == 0 and diff.json() == []
    dry = ebk(tmp_path, "gc", "bucket/db", "--min-age", "0", "--dry-run", "--json")
    assert dry.code == 0 and dry.json()["removed"] and dry.json()["dry_run"]
    collected = ebk(tmp_path, "gc", "bucket/db", "--min-age", "0", "--json")
    assert collected.code == 0 and collected.json()["removed"] == dry.json()["removed"]
    assert ebk(tmp_path, "verify", "bucket/db", "--deep").code == 0
    compacted = ebk(tmp_path, "compact", "bucket/db", "a.blt", "--json")
    assert compacted.code == 0 and compacted.json()["compacted"] > 0
    assert ebk(tmp_path, "gc", "bucket/db", "--min-age", "0").code == 0  # only what is used is left
    _damage(remote, "deleted segment")
    broken = ebk(tmp_path, "verify", "bucket/db", "--json")
    assert broken.code == 1 and not broken.json()["ok"] and broken.json()["problems"]
