"""What users of ebooklet 0.5, booklet and dbm rely on (see docs/from-0.5.rst)."""

from __future__ import annotations

import pathlib
from datetime import datetime, timezone

import booklet
import pytest

import ebooklet
from ebooklet.remote import connect

from .httpserver import FileServer


@pytest.fixture
def pushed(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder remote ``remote/db`` with three str values, pushed from ``a.blt``."""
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.update({"a": "1", "b": "2", "c": "3"})
        db.set_metadata({"units": "mm"})
        db.changes().push()
    return tmp_path


def test_keys_values_and_items_are_views(pushed: pathlib.Path) -> None:
    with ebooklet.open(pushed / "remote" / "db", pushed / "fresh.blt", "r") as db:
        keys = db.keys()
        assert len(keys) == 3 and "a" in keys and "a" in keys and "z" not in keys
        assert sorted(keys) == sorted(keys) == ["a", "b", "c"]  # iterable again
        assert sorted(db.values()) == ["1", "2", "3"] and len(db.values()) == 3
        assert ("b", "2") in db.items() and ("b", "9") not in db.items()
        assert dict(db.items()) == {"a": "1", "b": "2", "c": "3"}
        assert keys == {"a", "b", "c"}  # a set-like view


class Keyed:
    """Like a dbm object: keys() and [], but not a Mapping."""

    def keys(self) -> list[str]:
        return ["y", "z"]

    def __getitem__(self, key: str) -> str:
        return key * 2


def test_update_takes_any_object_with_keys(pushed: pathlib.Path) -> None:
    with ebooklet.open(pushed / "remote" / "db", pushed / "a.blt", "w") as db:
        db.update(Keyed(), w="w")
        assert (db["y"], db["z"], db["w"]) == ("yy", "zz", "w")
        db.update([("v", "pairs")])
        assert db["v"] == "pairs"


def test_push_is_false_when_nothing_was_pushed(pushed: pathlib.Path) -> None:
    with ebooklet.open(pushed / "remote" / "db", pushed / "a.blt", "w") as db:
        assert not db.changes().push()
        db["d"] = "4"
        result = db.changes().push()
        assert result and result.committed


def test_prune_takes_a_timestamp_and_reindex(pushed: pathlib.Path) -> None:
    with ebooklet.open(pushed / "remote" / "db", pushed / "a.blt", "w") as db:
        db["a"] = "one"  # an unpushed change
        cutoff = datetime.now(timezone.utc)
        db.set("d", "4")  # newer than the cutoff
        assert db.prune(reindex=True) >= 0
        dropped = db.prune(cutoff)
        assert dropped >= 2  # b and c: unchanged and older, their local copies dropped
        assert sorted(db.local_keys()) == ["a", "d"]
        assert [str(c) for c in db.changes().iter_changes()] == ["'a': local modified", "'d': local added"]
        assert db["b"] == "2"  # fetched again
    with booklet.open(pushed / "a.blt") as local:
        assert sorted(local.keys()) == ["a", "b", "d"]


def test_clear_clears_the_metadata_too(pushed: pathlib.Path) -> None:
    with ebooklet.open(pushed / "remote" / "db", pushed / "a.blt", "w") as db:
        db.clear()
        assert len(db) == 0 and db.get_metadata() is None
        db.changes().push()
    info = ebooklet.remote_info(pushed / "remote" / "db")
    assert info is not None and info.n_keys == 0 and info.metadata is None


def test_bytes_paths_as_in_dbm(pushed: pathlib.Path) -> None:
    path = bytes(pushed / "b.blt")
    with ebooklet.open(pushed / "remote" / "db", path, "r") as db:
        assert db["a"] == "1"
    assert (pushed / "b.blt").exists()


def test_the_05_class_name(pushed: pathlib.Path) -> None:
    with ebooklet.open(pushed / "remote" / "db", pushed / "a.blt", "r") as db:
        assert isinstance(db, ebooklet.EVariableLengthValue)
    assert ebooklet.EVariableLengthValue is ebooklet.EBooklet


def test_an_s3_connection_with_only_a_public_url_reads(pushed: pathlib.Path) -> None:
    with FileServer(pushed / "remote") as server:
        conn = ebooklet.S3Connection(db_url=server.url("db"))
        assert not conn.writable and repr(conn) == f"S3Connection(db_url={server.url('db')!r})"
        with ebooklet.open(conn, pushed / "url.blt", "r") as db:
            assert dict(db.items()) == {"a": "1", "b": "2", "c": "3"}
            with pytest.raises(ebooklet.ReadOnlyError, match="is read-only .* S3Connection with credentials"):
                db["x"] = "y"
        with pytest.raises(ebooklet.ReadOnlyError, match="flag='r'"):
            ebooklet.open(conn, pushed / "url2.blt", "w")
        assert connect(conn).location == server.url("db")
    with pytest.raises(ValueError, match="or only db_url for a read-only connection"):
        ebooklet.S3Connection(bucket="b")


def test_load_items_returns_how_many_values_it_fetched(pushed: pathlib.Path) -> None:
    # 0.5 returned a dict of failures (empty on success); failures now raise instead.
    with ebooklet.open(pushed / "remote" / "db", pushed / "c.blt", "r") as db:
        assert db.load_items() == 3
        assert db.load_items() == 0
