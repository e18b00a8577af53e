"""Whole-database operations: delete_remote and copy_remote."""

from __future__ import annotations

import threading

import pytest

import ebooklet
from ebooklet.remote import connect

from .test_faults_network import head_put


def _make(conn, path, data):
    with ebooklet.open(conn, path, "c", value_serializer="pickle") as db:
        db.update(data)
        db.changes().push()


def _objects(conn) -> list[str]:
    remote = connect(conn)
    keys = list(remote.transport.list(remote.prefix))
    try:
        remote.transport.get(remote.db_key)
        keys.append(remote.db_key)
    except ebooklet.RemoteNotFoundError:
        pass
    return sorted(keys)


def test_delete_remote_removes_exactly_this_databases_objects(remote, tmp_path):
    a, ab = remote.conn("data-a"), remote.conn("data-ab")
    _make(a, tmp_path / "a.blt", {"x": 1})
    _make(ab, tmp_path / "ab.blt", {"y": 2})
    before_ab = _objects(ab)
    with ebooklet.open(a, tmp_path / "a.blt", "w") as db:
        assert db.delete_remote() >= 3
        assert db["x"] == 1  # the local file is kept
    assert _objects(a) == []
    assert ebooklet.remote_info(a) is None
    assert _objects(ab) == before_ab
    with ebooklet.open(ab, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert check["y"] == 2


def test_after_delete_remote_a_push_creates_the_database_again_from_the_local_file(remote, tmp_path):
    conn = remote.conn()
    _make(conn, tmp_path / "a.blt", {"x": 1, "y": 2})
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        db.delete_remote()
        result = db.changes().push()
        assert result.keys == ["x", "y"]
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert dict(check.items()) == {"x": 1, "y": 2}


def test_a_reader_synced_before_delete_remote_is_told_the_database_is_gone(tmp_path):
    conn = tmp_path / "remote" / "db"
    _make(conn, tmp_path / "a.blt", {"x": 1})
    with ebooklet.open(conn, tmp_path / "reader.blt", "r", allow_pickle=True) as reader:
        assert "x" in reader
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        db.delete_remote()
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as reader:
        with pytest.raises(ebooklet.RemoteNotFoundError, match="no longer exists"):
            reader.changes().pull()


def test_delete_remote_on_a_read_only_database_is_refused(tmp_path):
    conn = tmp_path / "remote" / "db"
    _make(conn, tmp_path / "a.blt", {"x": 1})
    with ebooklet.open(conn, tmp_path / "r.blt", "r", allow_pickle=True) as db:
        with pytest.raises(ebooklet.ReadOnlyError):
            db.delete_remote()
    assert ebooklet.remote_info(conn) is not None


def test_copy_remote_within_one_store_copies_every_value(remote, tmp_path):
    source, target = remote.conn(), remote.conn()
    data = {f"k{i}": i for i in range(500)}
    _make(source, tmp_path / "a.blt", data)
    with ebooklet.open(source, tmp_path / "a.blt", "w") as db:
        info = db.copy_remote(target)
    assert info.n_keys == 500 and info.uuid != ebooklet.remote_info(source).uuid
    with ebooklet.open(target, tmp_path / "copy.blt", "r", allow_pickle=True) as copy:
        assert dict(copy.items()) == data


@pytest.mark.parametrize("direction", ["moto->seaweedfs", "seaweedfs->moto"])
def test_copy_remote_between_moto_and_seaweedfs_streams_the_objects(request, tmp_path, direction):
    from .conftest import RemoteKind, _buckets

    kinds = {}
    for name in ("moto", "seaweedfs"):
        server = request.getfixturevalue(f"{name}_server")
        if name not in _buckets:
            _buckets[name] = server.make_bucket()
        kinds[name] = RemoteKind(name, tmp_path, server, _buckets[name])
    src_name, dst_name = direction.split("->")
    source, target = kinds[src_name].conn(), kinds[dst_name].conn()
    data = {f"k{i}": "v" * i for i in range(300)}
    _make(source, tmp_path / "a.blt", data)
    with ebooklet.open(source, tmp_path / "a.blt", "w") as db:
        db.copy_remote(target)
    with ebooklet.open(target, tmp_path / "copy.blt", "r", allow_pickle=True) as copy:
        assert dict(copy.items()) == data


def test_copy_remote_refuses_to_replace_an_existing_database_unless_asked(tmp_path):
    source, target = tmp_path / "remote" / "src", tmp_path / "remote" / "dst"
    _make(source, tmp_path / "a.blt", {"new": 1})
    _make(target, tmp_path / "b.blt", {"old": 1})
    with ebooklet.open(source, tmp_path / "a.blt", "w") as db:
        with pytest.raises(ebooklet.SyncError, match="overwrite=True"):
            db.copy_remote(target)
        db.copy_remote(target, overwrite=True)
    with ebooklet.open(target, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert dict(check.items()) == {"new": 1}


def test_a_reader_of_the_target_never_sees_half_a_copy(moto_proxied, tmp_path):
    source, target = moto_proxied.conn(), moto_proxied.conn()
    _make(source, tmp_path / "a.blt", {f"k{i}": i for i in range(100)})
    db = ebooklet.open(source, tmp_path / "a.blt", "w")
    held = moto_proxied.proxy.hold(head_put(target))  # the copy's head waits on the wire
    try:
        copier = threading.Thread(target=lambda: db.copy_remote(target))
        copier.start()
        assert held.reached.wait(timeout=60)
        # The head is written last: every object it names is on the server before it.
        head = moto_proxied.get_json(source.db_key)
        names = {target.db_key + ".ebooklet/" + n for n in [*head["parts"], *head["segments"]] if n}
        assert names <= set(moto_proxied.keys(target.db_key + ".ebooklet/"))
        direct = moto_proxied.direct(target)
        assert ebooklet.remote_info(direct) is None  # all objects copied, no head yet
        with pytest.raises(FileNotFoundError):
            ebooklet.open(direct, tmp_path / "early.blt", "r")
        held.release()
        copier.join()
    finally:
        db.close()
    with ebooklet.open(target, tmp_path / "late.blt", "r", allow_pickle=True) as copy:
        assert len(copy) == 100


def test_after_someone_else_deleted_the_remote_the_advice_recreates_it_from_local_data(tmp_path):
    conn = tmp_path / "remote" / "db"
    _make(conn, tmp_path / "a.blt", {"x": 1})
    with ebooklet.open(conn, tmp_path / "other.blt", "w", allow_pickle=True) as other:
        other.delete_remote()
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        db["y"] = 2
        with pytest.raises(ebooklet.SyncError, match=r"call delete_remote\(\).*push\(\)"):
            db.changes().push()
        db.delete_remote()
        assert db.changes().push().keys == ["x", "y"]
        assert dict(db.items()) == {"x": 1, "y": 2}
