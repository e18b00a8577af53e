"""Remote connection groups."""

from __future__ import annotations

import pytest

import ebooklet


def _make(conn, path, data, metadata):
    with ebooklet.open(conn, path, "c", value_serializer="pickle") as db:
        db.update(data)
        db.set_metadata(metadata)
        db.changes().push()


def test_a_group_round_trip_add_push_open_elsewhere_open_each_member(s3_remote, tmp_path):
    members = {}
    for name in ("rain", "flow"):
        conn = s3_remote.conn(f"member-{name}-{tmp_path.name}")
        _make(conn, tmp_path / f"{name}.blt", {f"{name}-1": 1.5}, {"variable": name})
        members[name] = conn
    group_conn = s3_remote.conn()
    with ebooklet.open(group_conn, tmp_path / "group.blt", "n", remote_conn_group=True) as group:
        uuids = {name: group.add(conn) for name, conn in members.items()}
        group.changes().push()
    with ebooklet.open(group_conn, tmp_path / "group-copy.blt", "r", remote_conn_group=True) as group:
        assert sorted(group) == sorted(uuids.values())
        for name, uuid in uuids.items():
            entry = group[uuid]
            assert entry["metadata"] == {"variable": name}
            assert entry["n_keys"] == 1
            assert "access_key" not in str(entry) and members[name].access_key not in str(entry)
            conn = group.connection(uuid, members[name].access_key_id, members[name].access_key)
            with ebooklet.open(conn, tmp_path / f"{name}-again.blt", "r", allow_pickle=True) as member:
                assert member[f"{name}-1"] == 1.5


def test_a_group_refuses_set_and_members_that_do_not_exist(tmp_path):
    group_conn = tmp_path / "remote" / "group"
    with ebooklet.open(group_conn, tmp_path / "g.blt", "c", remote_conn_group=True) as group:
        with pytest.raises(TypeError, match="add"):
            group["x"] = {}
        with pytest.raises(TypeError, match="add"):
            group.update({"x": {}})
        with pytest.raises(ebooklet.RemoteNotFoundError, match="push it before adding"):
            group.add(tmp_path / "remote" / "missing")
        assert len(group) == 0


def test_a_folder_member_round_trips_through_its_entry(tmp_path):
    member = tmp_path / "remote" / "member"
    _make(member, tmp_path / "m.blt", {"k": 1}, None)
    group_conn = tmp_path / "remote" / "group"
    with ebooklet.open(group_conn, tmp_path / "g.blt", "c", remote_conn_group=True) as group:
        uuid = group.add(member)
        with ebooklet.open(group.connection(uuid), tmp_path / "m2.blt", "r", allow_pickle=True) as db:
            assert db["k"] == 1
