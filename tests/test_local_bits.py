"""Damage to the presence bits (``PATH.ebooklet/parts/*.bits``) is never pushed as deletes
(issue 15): a damaged bits file makes its keys read as not fetched, never as deleted.

A presence bit says "this remote key was in the data file": a key whose bit is set and that
the data file lacks was deleted with plain booklet, and the next push deletes it. Bits set by
damage would turn keys never fetched into such deletes. Every test here: a remote with many
keys, a local file that fetched some of them and holds one pending write, its bits files
damaged by hand, then a push (which must commit the write and delete nothing), the remote
checked key by key, and every key read back locally (fetched again where needed).
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import booklet
import pytest

import ebooklet

N_KEYS = 1200
KEYS = [f"k{i:05d}" for i in range(N_KEYS)]
#: The keys the local file fetched before the damage (the others were never read).
FETCHED = KEYS[: N_KEYS // 4]


def _value(key: str) -> str:
    return f"value-of-{key}"


def _remote_items(conn: Any, tmp_path: pathlib.Path) -> dict[str, Any]:
    check = tmp_path / f"check-{time.monotonic_ns()}.blt"
    with ebooklet.open(conn, check, "r", value_serializer="str") as db:
        return dict(db.items())


def _fetched_copy(conn: Any, tmp_path: pathlib.Path) -> pathlib.Path:
    """A remote of N_KEYS keys, and a local file that pulled it, fetched FETCHED and holds one
    pending write."""
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer="str") as db:
        db.update({k: _value(k) for k in KEYS})
        db.changes().push()
    local = tmp_path / "reader.blt"
    with ebooklet.open(conn, local, "w", value_serializer="str") as db:
        assert db.changes().pull() is not None
        assert [db[k] for k in FETCHED] == [_value(k) for k in FETCHED]
        db["added-locally"] = "local value"
    return local


def _bits_files(local: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(local.with_name(local.name + ".ebooklet").glob("parts/*.bits"))
    assert files, "the local file keeps presence bits"
    return files


def _flip(path: pathlib.Path) -> None:
    """Invert a stretch of a fifth of the bits in the middle: keys never fetched there look
    present, so missing from the data file they would look deleted (under max_delete's 50 %,
    so nothing but the bits themselves can catch it)."""
    data = bytearray(path.read_bytes())
    start, stop = len(data) * 2 // 5, len(data) * 3 // 5
    data[start:stop] = bytes(b ^ 0xFF for b in data[start:stop])
    path.write_bytes(bytes(data))


def _set_all(path: pathlib.Path) -> None:
    path.write_bytes(b"\xff" * path.stat().st_size)


def _zero(path: pathlib.Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def _truncate(path: pathlib.Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


DAMAGE = {
    "flipped": _flip, "all-set": _set_all, "zeroed": _zero, "truncated": _truncate,
    "removed": pathlib.Path.unlink,
}


def _check_nothing_deleted(conn: Any, local: pathlib.Path, tmp_path: pathlib.Path) -> None:
    expected = {k: _value(k) for k in KEYS} | {"added-locally": "local value"}
    with ebooklet.open(conn, local, "w") as db:
        local_changes = [(c.key, c.local) for c in db.changes().iter_changes() if c.local]
        assert local_changes == [("added-locally", "added")]
        result = db.changes().push()
        assert (result.keys, result.deleted) == (["added-locally"], [])
    assert _remote_items(conn, tmp_path) == expected
    with ebooklet.open(conn, local, "r") as db:
        assert len(db) == len(expected)
        assert dict(db.items()) == expected


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_bits_files_are_never_pushed_as_deletes(tmp_path, damage):
    conn = tmp_path / "remote" / "db"
    local = _fetched_copy(conn, tmp_path)
    for path in _bits_files(local):
        DAMAGE[damage](path)
    _check_nothing_deleted(conn, local, tmp_path)


def test_flipped_bits_are_never_pushed_as_deletes_on_every_remote(tmp_path, remote):
    conn = remote.conn()
    local = _fetched_copy(conn, tmp_path)
    for path in _bits_files(local):
        _flip(path)
    _check_nothing_deleted(conn, local, tmp_path)


def test_bits_damaged_after_a_pull_of_new_commits_are_never_pushed_as_deletes(tmp_path):
    """The bits of parts brought in by a pull (another writer's commit) are checked too."""
    conn = tmp_path / "remote" / "db"
    local = _fetched_copy(conn, tmp_path)
    with ebooklet.open(conn, tmp_path / "writer.blt", "w") as db:
        db.update({k: _value(k) + "-v2" for k in KEYS[::7]})
        db.changes().push()
    with ebooklet.open(conn, local, "w") as db:
        assert sorted(db.changes().pull().updated) == sorted(KEYS[::7])
        assert [db[k] for k in KEYS[::7][:50]] == [_value(k) + "-v2" for k in KEYS[::7][:50]]
    for path in _bits_files(local):
        _flip(path)
    expected = {k: _value(k) for k in KEYS} | {k: _value(k) + "-v2" for k in KEYS[::7]}
    expected["added-locally"] = "local value"
    with ebooklet.open(conn, local, "w") as db:
        result = db.changes().push()
        assert (result.keys, result.deleted) == (["added-locally"], [])
        assert dict(db.items()) == expected
    assert _remote_items(conn, tmp_path) == expected


def test_after_damaged_bits_the_keys_in_the_data_file_are_seen_again(tmp_path):
    """Damaged bits read as all clear, which forgets that the fetched keys were seen: the next
    full comparison sets their bits again, so a fetched key deleted afterwards with plain
    booklet is still a delete to push, not a key never fetched."""
    conn = tmp_path / "remote" / "db"
    local = _fetched_copy(conn, tmp_path)
    for path in _bits_files(local):
        _zero(path)
    with ebooklet.open(conn, local, "w") as db:
        assert db.changes().push().keys == ["added-locally"]
    with ebooklet.open(conn, local, "w") as db:
        assert list(db.changes().iter_changes()) == []
    with booklet.open(local, "w") as raw:
        del raw[FETCHED[0]]
    with ebooklet.open(conn, local, "w") as db:
        local_changes = [(c.key, c.local) for c in db.changes().iter_changes() if c.local]
        assert local_changes == [(FETCHED[0], "deleted")]


def test_after_a_removed_bits_file_the_keys_in_the_data_file_are_seen_again(tmp_path):
    """A removed bits file is read as damaged bits are (all clear, noted), so the next
    comparison sets the bits of the keys in the data file again and a key deleted afterwards
    with plain booklet is a delete, not a key never fetched (found by the model test)."""
    conn = tmp_path / "remote" / "db"
    local = _fetched_copy(conn, tmp_path)
    for path in _bits_files(local):
        path.unlink()
    with ebooklet.open(conn, local, "w") as db:
        assert FETCHED[0] in dict(db.items())  # reading finds the bits file missing
        assert [(c.key, c.local) for c in db.changes().iter_changes()] == [("added-locally", "added")]
    with booklet.open(local, "w") as raw:
        del raw[FETCHED[0]]
    with ebooklet.open(conn, local, "w") as db:
        local_changes = [(c.key, c.local) for c in db.changes().iter_changes() if c.local]
        assert sorted(local_changes) == sorted([("added-locally", "added"), (FETCHED[0], "deleted")])
        assert FETCHED[0] not in db


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_bits_are_rebuilt_from_the_data_file_as_soon_as_they_are_read(tmp_path, damage):
    """Damaged bits are rebuilt from the keys in the data file when first read, not at the
    next comparison: a fetched key deleted with plain booklet after a session that only read
    stays deleted, and is not read back from the remote (found by the model test)."""
    conn = tmp_path / "remote" / "db"
    local = _fetched_copy(conn, tmp_path)
    for path in _bits_files(local):
        DAMAGE[damage](path)
    with ebooklet.open(conn, local, "r") as db:
        assert db.get(FETCHED[0]) == _value(FETCHED[0])  # reads the damaged bits; no comparison
        assert db.get(KEYS[-1]) == _value(KEYS[-1])  # a key never fetched is fetched
    with booklet.open(local, "w") as raw:
        del raw[FETCHED[0]]
    with ebooklet.open(conn, local, "w") as db:
        assert FETCHED[0] not in db
        assert db.get(FETCHED[0]) is None
        local_changes = [(c.key, c.local) for c in db.changes().iter_changes() if c.local]
        assert sorted(local_changes) == sorted([("added-locally", "added"), (FETCHED[0], "deleted")])
