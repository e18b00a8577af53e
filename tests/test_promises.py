"""Promises that only an incidental check defended: each test here fails when its promise is
broken in the code (the mutation is named in each docstring)."""

from __future__ import annotations

import os
import pathlib
import threading
import time

import pytest

import ebooklet
from ebooklet.sync import objects as sync_objects
from tests.faults import Gate, faulty_remote

DAY_NS = 86_400 * 10**9


def _prefix(conn: pathlib.Path) -> pathlib.Path:
    return conn.with_name(conn.name + ".ebooklet")


def _objects(conn: pathlib.Path) -> set[str]:
    root = _prefix(conn)
    return {
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and p.name != "lease" and not p.name.startswith(".")
    }


def test_the_first_commit_is_a_create_so_a_second_creator_rebases_instead_of_overwriting(tmp_path):
    """Mutation: HeadStore.commit writes the first head with "overwrite" instead of "create"."""
    conn = tmp_path / "remote" / "db.blt"
    gate = Gate(conn.name)
    held, _ = faulty_remote(conn, gate)
    errors: list[BaseException] = []

    def first_creator() -> None:
        try:
            with ebooklet.open(held, tmp_path / "a.blt", "c", value_serializer="json",
                               remote_lock="none") as db:
                db["from-a"] = 1
                db.changes().push()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=first_creator)
    thread.start()
    assert gate.reached.wait(60)  # A built commit 1 and is at its head PUT
    with ebooklet.open(conn, tmp_path / "b.blt", "c", value_serializer="json", remote_lock="none") as db:
        db["from-b"] = 2
        assert db.changes().push().commit == 1  # B creates the database first
    gate.release.set()
    thread.join(60)
    assert not errors, errors
    with ebooklet.open(conn, tmp_path / "check.blt", "r") as db:
        assert dict(db.items()) == {"from-a": 1, "from-b": 2}  # B's acknowledged commit survives
        assert [c.number for c in db.log()] == [2, 1]


def test_every_value_is_stored_before_the_head_that_points_at_it(tmp_path, monkeypatch):
    """Mutation: push drops ``state.uploader.wait()`` before the head write."""
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db["seed"] = b"0"
        db.changes().push()
    # Each segment upload is held until the push either waits for its uploads or writes its
    # head; the head write then finds out whether every segment it names is stored.
    moved_on = threading.Event()
    real_wait = sync_objects.Uploader.wait

    def waiting(self: sync_objects.Uploader) -> None:
        moved_on.set()
        real_wait(self)

    monkeypatch.setattr(sync_objects.Uploader, "wait", waiting)
    missing: list[str] = []

    def before_put(key: str) -> None:
        if "/seg/" in key or "/index/" in key:
            assert moved_on.wait(60)

    def after_put(key: str) -> None:
        if key == remote.db_key:  # the new head is in place: is everything it names?
            head = ebooklet.format.Head.decode(conn.read_bytes())
            names = [*head.segments, *(p for p in head.parts if p)]
            missing.extend(n for n in names if not (_prefix(conn) / n).is_file())
            moved_on.set()

    remote, transport = faulty_remote(conn, before_put)
    transport.after_put = after_put  # type: ignore[assignment]
    with ebooklet.open(remote, tmp_path / "a.blt", "w", value_serializer="bytes") as db:
        db.update({f"k{i}": os.urandom(1000) for i in range(100)})
        moved_on.clear()
        assert db.changes().push().committed
    assert missing == []


def test_gc_min_age_is_in_seconds(tmp_path):
    """Mutation: gc reads ``min_age`` as milliseconds (or ignores it)."""
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db.set_retention(commits=1, days=0)
        db["a"] = b"1"
        db.changes().push()
        db["a"] = b"2"
        db.changes().push()
    two_hours_ago = time.time() - 2 * 3600
    for path in _prefix(conn).rglob("*"):
        if path.is_file():
            os.utime(path, (two_hours_ago, two_hours_ago))
    assert ebooklet.gc(conn, min_age=3 * 3600).removed == []
    assert ebooklet.gc(conn, min_age=3 * 3600).too_young > 0
    assert ebooklet.gc(conn, min_age=1 * 3600).removed


def test_gc_removes_log_objects_last(tmp_path, monkeypatch):
    """Mutation: gc deletes in listing order (the log objects among the rest)."""
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db.set_retention(commits=1, days=0)
        for i in range(4):
            db[f"k{i}"] = b"x" * 100
            db["k0"] = bytes([i]) * 100
            db.changes().push()
    deleted: list[list[str]] = []
    real_delete = ebooklet.remote.fs.FolderTransport.delete

    def recording(self: ebooklet.remote.fs.FolderTransport, keys: list[str]) -> None:
        deleted.append(list(keys))
        real_delete(self, keys)

    monkeypatch.setattr(ebooklet.remote.fs.FolderTransport, "delete", recording)
    report = ebooklet.gc(conn, min_age=0)
    kinds = [key.split(".ebooklet/")[1].split("/")[0] for batch in deleted for key in batch]
    assert "log" in kinds and {"seg", "index"} & set(kinds)
    first_log = kinds.index("log")
    assert all(kind == "log" for kind in kinds[first_log:]), kinds
    assert report.removed


def test_compaction_keeps_each_moved_values_timestamp(tmp_path):
    """Mutation: the compaction's moved entries take the commit's time."""
    conn = tmp_path / "remote" / "db.blt"
    stamps = {}
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        for i in range(6):
            key = f"k{i}"
            db.set(key, b"v" * 1000, 1_600_000_000_000_000 + i)
            stamps[key] = 1_600_000_000_000_000 + i
            db.changes().push()
        db.set("k0", b"w" * 1000, 1_650_000_000_000_000)  # leaves dead bytes behind
        stamps["k0"] = 1_650_000_000_000_000
        db.changes().push()
        result = db.compact()
        assert result.compacted
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r", value_serializer="bytes") as db:
        assert {k: db.get_timestamp(k) for k in stamps} == stamps


def test_retention_days_keeps_commits_younger_than_that(tmp_path, monkeypatch):
    """Mutation: retention ignores ``days`` (or reads it in another unit)."""
    conn = tmp_path / "remote" / "db.blt"
    real = time.time_ns
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db.set_retention(commits=1, days=2)
        for age_days in (5, 1, 0):
            monkeypatch.setattr(time, "time_ns", lambda age=age_days: real() - age * DAY_NS)
            db[f"k{age_days}"] = b"1"
            db.changes().push()
        monkeypatch.setattr(time, "time_ns", real)
        # Commit 1 is five days old: past the window; commit 2 (a day old) is within it.
        assert [c.number for c in db.log()] == [3, 2]
    with pytest.raises(ebooklet.RemoteNotFoundError, match="not kept"):
        ebooklet.open(conn, tmp_path / "old.blt", "r", at=1)
    with ebooklet.open(conn, tmp_path / "kept.blt", "r", at=2, value_serializer="bytes") as old:
        assert sorted(old) == ["k1", "k5"]


def test_a_push_that_ends_in_a_conflict_deletes_its_own_uploads(tmp_path):
    """Mutation: the push leaves its uploads behind when it raises ConflictError."""
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db["k"] = b"0"
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "b.blt", "c", value_serializer="bytes") as other:
        other["k"] = b"b"
        other.changes().push()
    before = _objects(conn)
    with ebooklet.open(conn, tmp_path / "a.blt", "w", value_serializer="bytes") as db:
        db["k"] = b"a" * 5000
        db["other"] = b"o" * 5000
        with pytest.raises(ebooklet.ConflictError):
            db.changes().push()
    assert _objects(conn) == before
