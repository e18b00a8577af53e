"""The remote layout under growth and churn: index splits, many segments, garbage."""

from __future__ import annotations

import pytest

import ebooklet
from ebooklet.format import names as fmt
from ebooklet.remote import connect
from ebooklet.settings import settings as ebooklet_settings


def _objects(conn) -> set[str]:
    remote = connect(conn)
    return {k[len(remote.prefix):] for k in remote.transport.list(remote.prefix)}


def test_an_index_that_outgrows_its_parts_is_split_and_clients_follow(remote, tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "PART_SPLIT_BYTES", 4096)
    monkeypatch.setattr(fmt, "PART_TARGET_BYTES", 2048)
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="pickle") as db:
        db.update({f"k{i:04d}": i for i in range(20)})
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "old-base.blt", "r", allow_pickle=True) as reader:
        assert reader["k0003"] == 3  # synced while the index is one part
    assert ebooklet.remote_info(conn).n_index_parts == 1
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        db.update({f"k{i:04d}": i for i in range(20, 1000)})
        del db["k0007"]
        db.changes().push()
    info = ebooklet.remote_info(conn)
    assert info.n_index_parts > 8 and info.n_keys == 999
    expected = {f"k{i:04d}": i for i in range(1000) if i != 7}
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r", allow_pickle=True) as fresh:
        assert dict(fresh.items()) == expected
    with ebooklet.open(conn, tmp_path / "old-base.blt", "r") as reader:
        result = reader.changes().pull()
        assert result.deleted == ["k0007"] and len(result.updated) == 980
        assert dict(reader.items()) == expected


def test_a_push_larger_than_a_segment_spreads_over_several(tmp_path, monkeypatch):
    monkeypatch.setattr(ebooklet_settings, "segment_bytes", 10_000)
    conn = tmp_path / "remote" / "db"
    data = {f"k{i}": bytes([i % 256]) * 3000 for i in range(20)}
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db.update(data)
        db.changes().push()
    assert sum(name.startswith("seg/") for name in _objects(conn)) >= 6
    with ebooklet.open(conn, tmp_path / "b.blt", "r") as db:
        assert dict(db.items()) == data


def test_replaced_objects_stay_while_their_commit_is_retained_then_gc_removes_them(tmp_path):
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db.update({"a": b"1", "b": b"2"})
        db.changes().push()
    first = _objects(conn) - {"lease"}
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as reader:
        reader.load_items([])  # a reader that holds the first head
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        db.update({"a": b"10", "b": b"20"})
        db.changes().push()
    # While the first commit is retained, everything it references is still there.
    assert ebooklet.gc(conn, min_age=0).removed == []
    assert first <= _objects(conn)
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as reader:
        assert reader["a"] == b"1"
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        db.set_retention(commits=1, days=0)
        db["c"] = b"3"
        db.changes().push()
    report = ebooklet.gc(conn, min_age=0)
    assert first <= set(report.removed) and report.bytes_removed > 0
    assert not first & _objects(conn), "the first commit's objects are gone"
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as reader:
        with pytest.raises(ebooklet.RemoteNotFoundError, match="Pull, then try again"):
            reader["b"]
        reader.changes().pull()
        assert dict(reader.items()) == {"a": b"10", "b": b"20", "c": b"3"}
