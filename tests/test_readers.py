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


def test_a_local_path_that_cannot_be_a_file_is_an_ebooklet_error(tmp_path: pathlib.Path) -> None:
    remote = tmp_path / "bucket" / "db.blt"
    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(ebooklet.LocalPathIsAFolderError) as is_folder:
        ebooklet.open(remote, folder, "c", value_serializer="orjson")
    assert isinstance(is_folder.value, IsADirectoryError)
    assert isinstance(is_folder.value, ebooklet.LocalFileError)
    assert str(is_folder.value) == (f"{folder} is a folder: file_path names the local database file, e.g. "
                                    f"{folder / 'db.blt'}")
    assert is_folder.value.filename == str(folder) and list(folder.iterdir()) == []
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ebooklet.LocalFolderIsAFileError) as in_a_file:
        ebooklet.open(remote, tmp_path / "notes.txt" / "db.blt", "c", value_serializer="orjson")
    assert isinstance(in_a_file.value, NotADirectoryError)
    assert isinstance(in_a_file.value, ebooklet.EbookletError)
    assert ebooklet.remote_info(remote) is None


def test_a_db_key_ending_in_a_slash_is_an_ebooklet_error_with_an_example() -> None:
    with pytest.raises(ebooklet.InvalidArgumentError) as refused:
        ebooklet.S3Connection("id", "secret", "data/", "bucket")
    assert isinstance(refused.value, ValueError)
    assert str(refused.value) == (
        "db_key 'data/' must name the database's object, not end with '/': e.g. data/db.blt")


def test_get_items_gives_pairs_in_order_with_the_default_for_missing_keys(tmp_path: pathlib.Path) -> None:
    remote = tmp_path / "bucket" / "db.blt"
    with ebooklet.open(remote, tmp_path / "w.blt", "c", value_serializer="orjson") as db:
        db.update({"a": 1, "b": 2})
        db.changes().push()
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert list(db.get_items(["b", "nope", "a"], default=-1)) == [("b", 2), ("nope", -1), ("a", 1)]
