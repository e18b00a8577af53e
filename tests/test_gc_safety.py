"""Garbage collection never deletes live data: ages by the store's clock, only the format's
names, only under the database's own prefix, and never through a link on a folder remote."""

from __future__ import annotations

import os
import pathlib
import shutil
import threading
import time

import pytest

import ebooklet
from ebooklet.remote.fs import FolderTransport
from tests.faults import Gate, faulty_remote
from tests.subprocs import conn_code, python

SEVEN_HOURS_NS = 7 * 3600 * 10**9


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.name != ".ebooklet.lock"
    }


def test_gc_on_another_machine_spares_the_uploads_of_a_writer_whose_clock_is_hours_behind(
    seaweedfs_server, tmp_path, monkeypatch
):
    bucket = seaweedfs_server.make_bucket()
    conn = ebooklet.S3Connection(
        seaweedfs_server.access_key_id, seaweedfs_server.access_key, "dbs/skew.blt", bucket,
        endpoint_url=seaweedfs_server.endpoint_url, retries=1,
    )
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db["first"] = b"1"
        db.changes().push()
    collected: list[str] = []

    def gc_elsewhere(key: str) -> None:
        # Another machine, whose clock is right, collects garbage (the default min_age) while
        # this push is between its uploads and its head write.
        if key == remote.db_key and not collected:
            child = python(f"""
                import ebooklet
                print(len(ebooklet.gc({conn_code(conn)}).removed))
            """)
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            collected.append(out.strip())

    remote, _ = faulty_remote(conn, gc_elsewhere)
    real_time_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() - SEVEN_HOURS_NS)
    with ebooklet.open(remote, tmp_path / "a.blt", "w", value_serializer="bytes") as db:
        db.update({f"k{i}": b"v" * 100 for i in range(50)})
        assert db.changes().push().committed
    monkeypatch.undo()
    assert collected == ["0"]
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r", value_serializer="bytes") as fresh:
        assert len(fresh) == 51 and fresh["k49"] == b"v" * 100
    assert ebooklet.verify(conn)


def test_a_push_whose_uploads_were_collected_does_not_commit(tmp_path):
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db["a"] = b"1"
        db.changes().push()
    prefix = conn.with_name("db.blt.ebooklet")

    committed_segments = {p.name for p in (prefix / "seg").iterdir()}
    remote, transport = faulty_remote(conn)

    def collected_then_stat(key: str) -> ebooklet.remote.base.ObjectStat:
        # As if a gc had judged the push's uploads old just before the push's check.
        for seg in (prefix / "seg").iterdir():
            if seg.name not in committed_segments:
                seg.unlink()
        return transport.inner.stat(key)

    transport.stat = collected_then_stat  # type: ignore[method-assign]
    with ebooklet.open(remote, tmp_path / "a.blt", "w", value_serializer="bytes") as db:
        db["b"] = b"2" * 1000
        with pytest.raises(ebooklet.SyncError, match="gone"):
            db.changes().push()
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r", value_serializer="bytes") as fresh:
        assert dict(fresh.items()) == {"a": b"1"}  # nothing was committed


def test_a_push_whose_first_upload_is_old_by_the_stores_clock_does_not_commit(tmp_path):
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db["a"] = b"1"
        db.changes().push()
    prefix = conn.with_name("db.blt.ebooklet")
    before = {p.name for p in (prefix / "seg").iterdir()}

    remote, transport = faulty_remote(conn)

    def suspended_then_stat(key: str) -> ebooklet.remote.base.ObjectStat:
        # As if the writer had been suspended for 7 hours: the store's clock moved on.
        old = time.time() - 7 * 3600
        for seg in (prefix / "seg").iterdir():
            if seg.name not in before:
                os.utime(seg, (old, old))
        return transport.inner.stat(key)

    transport.stat = suspended_then_stat  # type: ignore[method-assign]
    with ebooklet.open(remote, tmp_path / "a.blt", "w", value_serializer="bytes") as db:
        db["b"] = b"2"
        with pytest.raises(ebooklet.SyncError, match="hours old by the store's clock"):
            db.changes().push()
        assert "b" in db  # the change stays pending


def test_gc_and_delete_remote_remove_only_the_formats_names(tmp_path):
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db["a"] = b"1"
        db.changes().push()
    prefix = conn.with_name("db.blt.ebooklet")
    strangers = {
        "seg/notes.txt": b"mine",
        "seg/0-000000000000-1/inner": b"looks like a segment folder",
        "seg/1-000000000000-1.bak": b"a copy",
        "index/README": b"x",
        "log/000000000001-zzz": b"x",
        "user/data": b"x",
    }
    for name, data in strangers.items():
        (prefix / name).parent.mkdir(parents=True, exist_ok=True)
        (prefix / name).write_bytes(data)
        old = time.time() - 30 * 86400
        os.utime(prefix / name, (old, old))
    report = ebooklet.gc(conn, min_age=0)
    assert not set(report.removed) & set(strangers)
    with ebooklet.open(conn, tmp_path / "a.blt", "w", value_serializer="bytes") as db:
        db.delete_remote()
    assert _files(prefix) == strangers


def test_a_database_key_inside_another_databases_prefix_is_refused(tmp_path):
    with pytest.raises(ebooklet.InvalidArgumentError, match=r"\.ebooklet"):
        ebooklet.open(tmp_path / "remote" / "a.blt.ebooklet" / "seg" / "b", tmp_path / "b.blt", "c")
    with pytest.raises(ebooklet.InvalidArgumentError, match=r"\.ebooklet"):
        ebooklet.S3Connection("id", "secret", "data/a.blt.ebooklet/x", "bucket")
    with pytest.raises(ValueError, match=r"\.ebooklet"):
        ebooklet.open(f"file://{tmp_path}/a.ebooklet/b", tmp_path / "c.blt", "c")


def _two_databases(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    root = tmp_path / "remote"
    for name in ("a.blt", "b.blt"):
        with ebooklet.open(root / name, tmp_path / name, "c", value_serializer="bytes") as db:
            db.set_retention(commits=1, days=0)
            db["x"] = b"1"
            db.changes().push()
            db["x"] = b"2"
            db.changes().push()
    return root / "a.blt", root / "b.blt"


def test_gc_of_a_database_whose_folder_is_a_link_to_another_touches_neither(tmp_path):
    a, b = _two_databases(tmp_path)
    a_prefix = a.with_name("a.blt.ebooklet")
    b_prefix = b.with_name("b.blt.ebooklet")
    before = _files(b_prefix)
    shutil.rmtree(a_prefix)
    a_prefix.symlink_to(b_prefix)
    with pytest.raises(ebooklet.RemoteFormatError, match="symbolic link"):
        ebooklet.gc(a, min_age=0)  # it cannot even take a's lease through the link
    month_ago = time.time() - 30 * 86400
    for path in b_prefix.rglob("*"):
        os.utime(path, (month_ago, month_ago), follow_symlinks=False)
    assert ebooklet.gc(a).removed == []  # at the safe age (no lease taken): the link is not walked
    assert _files(b_prefix) == before


def test_rm_through_a_link_outside_the_root_deletes_nothing_there(tmp_path):
    a, _ = _two_databases(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_bytes(b"keep me")
    (outside / "seg").mkdir()
    (outside / "seg" / "0-000000000000-0").write_bytes(b"keep me too")
    a_prefix = a.with_name("a.blt.ebooklet")
    shutil.rmtree(a_prefix)
    a_prefix.symlink_to(outside)
    with ebooklet.open(a, tmp_path / "a.blt", "w", value_serializer="bytes") as db:
        with pytest.raises(ebooklet.RemoteFormatError, match="symbolic link"):
            db.delete_remote()
    assert _files(outside) == {"precious.txt": b"keep me", "seg/0-000000000000-0": b"keep me too"}
    assert a_prefix.is_symlink()


def test_a_push_through_a_linked_folder_writes_nothing_outside_the_root(tmp_path):
    a, _ = _two_databases(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    seg = a.with_name("a.blt.ebooklet") / "seg"
    shutil.rmtree(seg)
    seg.symlink_to(outside)
    with ebooklet.open(a, tmp_path / "a.blt", "w", value_serializer="bytes") as db:
        db["y"] = b"3"
        with pytest.raises(ebooklet.RemoteFormatError, match="symbolic link"):
            db.changes().push()
    assert list(outside.iterdir()) == []


def test_folder_transport_refuses_links_and_special_files_below_its_root(tmp_path):
    root = tmp_path / "root"
    transport = FolderTransport(root)
    transport.put("db/x", b"data")
    (root / "db" / "link").symlink_to(root / "db" / "x")
    os.mkfifo(root / "db" / "fifo")
    for key in ("db/link", "db/fifo"):
        with pytest.raises(ebooklet.RemoteFormatError):
            transport.get(key)  # a FIFO does not hang the read
        with pytest.raises(ebooklet.RemoteFormatError):
            transport.get_start(key, 10)
    assert [s.key for s in transport.list_stats("db/")] == ["db/x"]
    with pytest.raises(ebooklet.errors.PreconditionFailed):
        transport.put("db/link", b"new", "create")
    assert (root / "db" / "x").read_bytes() == b"data"
    transport.delete(["db/link"])  # removes the link itself, not what it points at
    assert (root / "db" / "x").read_bytes() == b"data" and not (root / "db" / "link").is_symlink()


def test_folder_transport_deleting_objects_whose_folders_are_already_gone_is_no_error(tmp_path):
    root = tmp_path / "root"
    transport = FolderTransport(root)
    transport.put("db/a/b/1", b"1")
    transport.put("db/a/c/2", b"2")
    shutil.rmtree(root / "db" / "a" / "b")
    transport.delete(["db/a/b/1", "db/a/c/2", "db/zzz/3"])
    assert not (root / "db").exists()


def test_gc_below_the_safe_age_keeps_the_uploads_of_a_push_that_holds_the_lease(tmp_path):
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db["a"] = b"1"
        db.changes().push()
    remote, transport = faulty_remote(conn)
    gate = Gate(remote.db_key)
    transport.before_put = gate
    reports = []
    with ebooklet.open(remote, tmp_path / "a.blt", "w", value_serializer="bytes") as db:
        db["b"] = b"2" * 1000
        pusher = threading.Thread(target=db.changes().push)
        pusher.start()
        assert gate.reached.wait(60)  # uploads checked, lease held, head write next
        reports.append(ebooklet.gc(conn, min_age=0))
        gate.release.set()
        pusher.join(60)
    assert reports[0].lease_held and reports[0].removed == []
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r", value_serializer="bytes") as fresh:
        assert dict(fresh.items()) == {"a": b"1", "b": b"2" * 1000}
    assert ebooklet.verify(conn, deep=True)
    assert ebooklet.gc(conn, min_age=0).lease_held is False  # no push now: the lease is free
