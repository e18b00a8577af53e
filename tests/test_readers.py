"""Opening for everyday use (issue 19): a read-only copy refreshed at open with pull=True,
and a folder given where a folder remote names a database, refused before anything happens."""

from __future__ import annotations

import pathlib

import pytest

import ebooklet
from ebooklet.errors import InvalidArgumentError


def test_a_read_only_copy_refreshes_at_open_only_when_asked(remote, tmp_path: pathlib.Path) -> None:
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer="orjson") as db:
        db["a"] = 1
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        assert db["a"] == 1
    with ebooklet.open(conn, tmp_path / "writer.blt", "w") as db:
        db.update({"a": 2, "b": 3})
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        assert dict(db.items()) == {"a": 1} and db.stats.requests == 0  # offline, as last synced
    with ebooklet.open(conn, tmp_path / "reader.blt", "r", pull=True) as db:
        assert dict(db.items()) == {"a": 2, "b": 3}
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        assert dict(db.items()) == {"a": 2, "b": 3}  # the pull was recorded


def test_pull_at_open_is_refused_with_a_past_commit_or_a_new_database(tmp_path: pathlib.Path) -> None:
    conn = tmp_path / "bucket" / "db.blt"
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="orjson") as db:
        db["a"] = 1
        db.changes().push()
    with pytest.raises(InvalidArgumentError, match="at= stays at a past commit, which pull=True would leave"):
        ebooklet.open(conn, tmp_path / "old.blt", "r", at=1, pull=True)
    with pytest.raises(InvalidArgumentError, match="flag='n' starts an empty database"):
        ebooklet.open(conn, tmp_path / "new.blt", "n", pull=True)
    assert not (tmp_path / "old.blt").exists() and not (tmp_path / "new.blt").exists()


@pytest.mark.parametrize("flag", ["r", "w", "c", "n"])
def test_an_existing_folder_is_refused_as_a_folder_remote_at_once(tmp_path: pathlib.Path, flag: str) -> None:
    folder = tmp_path / "emptyfolder"
    folder.mkdir()
    with pytest.raises(InvalidArgumentError) as refused:
        ebooklet.open(folder, tmp_path / "x.blt", flag, value_serializer="orjson")
    assert str(refused.value) == (f"no ebooklet database at {folder.as_uri()} ({folder} is a folder; a "
                                  f"folder remote names the database inside it, e.g. {folder / 'db.blt'})")
    assert isinstance(refused.value, ValueError)
    assert not (tmp_path / "x.blt").exists() and list(folder.iterdir()) == []
    # The database inside it, as the message says, works.
    with ebooklet.open(folder / "db.blt", tmp_path / "y.blt", "c", value_serializer="orjson") as db:
        db["k"] = 1
        assert db.changes().push()
