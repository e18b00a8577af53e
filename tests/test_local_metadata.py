"""The base head's metadata (up to 4 MiB) is kept once beside the sync state, not copied into
the files rewritten at every sync (state.json, the journals' base records); a lost copy is
read again from the remote; a state of version 3 (metadata inside the head) is upgraded."""

from __future__ import annotations

import json
import pathlib

import pytest

import ebooklet
from ebooklet.local.state import STATE_VERSION

from .test_inflight import _landed_with_its_outcome_unknown
from .test_local_upgrade import _export, _first_adding, _git, _has_history, run_old_code

#: 3 MiB of metadata, as JSON (the head's limit is 4 MiB).
BIG = {"stations": ["x" * 1024] * 3 * 1024}
SMALL_FILE = 64 * 1024


def _folder(local: pathlib.Path) -> pathlib.Path:
    return local.with_name(local.name + ".ebooklet")


def _side_files(local: pathlib.Path) -> dict[str, int]:
    """Sizes of the files rewritten at a sync."""
    folder = _folder(local)
    return {name: (folder / name).stat().st_size for name in ("state.json", "journal.log", "mirror.log")}


def _metadata_files(local: pathlib.Path) -> list[pathlib.Path]:
    return sorted(_folder(local).glob("metadata-*.json"))


def _seed(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    conn, local = tmp_path / "remote" / "db.blt", tmp_path / "writer.blt"
    with ebooklet.open(conn, local, "c", value_serializer="json") as db:
        db["a"] = 1
        db.set_metadata(BIG)
        db.changes().push()
    assert len(conn.read_bytes()) > 3 * 1024 * 1024
    return conn, local


@pytest.mark.parametrize("who", ["writer", "reader"])
def test_a_large_base_metadata_is_written_once_not_at_every_sync(tmp_path, who):
    conn, local = _seed(tmp_path)
    if who == "reader":
        local = tmp_path / "reader.blt"
        with ebooklet.open(conn, local, "w") as db:
            assert db.get_metadata() == BIG
    [meta_file] = _metadata_files(local)
    first = meta_file.stat()
    assert first.st_size > 3 * 1024 * 1024
    with ebooklet.open(conn, local, "w") as db:
        for i in range(5):
            db[f"k{i}"] = i
            before = (_folder(local) / "state.json").stat().st_ino
            db.sync()
            assert (_folder(local) / "state.json").stat().st_ino != before  # rewritten
            sizes = _side_files(local)
            assert max(sizes.values()) < SMALL_FILE, sizes
        db.changes().push()  # a new base, with the same metadata
        assert max(_side_files(local).values()) < SMALL_FILE
        assert db.get_metadata() == BIG
    [again] = _metadata_files(local)
    assert (again.stat().st_ino, again.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    with ebooklet.open(conn, local, "r") as db:
        assert db.get_metadata() == BIG


def test_new_metadata_replaces_the_old_file(tmp_path):
    conn, local = _seed(tmp_path)
    [old] = _metadata_files(local)
    with ebooklet.open(conn, local, "w") as db:
        db.set_metadata({"v": 2})
        db.changes().push()
    [new] = _metadata_files(local)
    assert new != old and json.loads(new.read_bytes()) == {"v": 2}
    reader = tmp_path / "reader.blt"
    with ebooklet.open(conn, reader, "r") as db:
        assert db.get_metadata() == {"v": 2}


@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_a_lost_metadata_file_is_read_again_from_the_remote(tmp_path, damage, caplog):
    conn, _ = _seed(tmp_path)
    local = tmp_path / "reader.blt"
    with ebooklet.open(conn, local, "w") as db:
        assert db["a"] == 1
    [meta_file] = _metadata_files(local)
    if damage == "missing":
        meta_file.unlink()
    else:
        meta_file.write_bytes(meta_file.read_bytes()[:-10] + b"0123456789")
    with ebooklet.open(conn, local, "w") as db:
        before = db.stats.requests
        assert db.get_metadata() == BIG
        assert db.stats.requests == before + 2  # the head: its first MiB, then the rest
        db["b"] = 2
        assert db.changes().push().keys == ["b"]
    assert "read again from the remote" in caplog.text
    assert json.loads(conn.read_bytes())["metadata"] == BIG
    with ebooklet.open(conn, local, "r") as db:
        assert db.get_metadata() == BIG


def test_a_push_after_the_metadata_file_was_lost_keeps_the_remote_metadata(tmp_path):
    conn, local = _seed(tmp_path)
    _metadata_files(local)[0].unlink()
    with ebooklet.open(conn, local, "w") as db:
        db["b"] = 2
        assert db.changes().push().keys == ["b"]
    assert json.loads(conn.read_bytes())["metadata"] == BIG
    with ebooklet.open(conn, local, "r") as db:
        assert db.get_metadata() == BIG


def test_a_push_in_flight_records_its_head_without_the_metadata(moto_proxied, tmp_path):
    conn, local = moto_proxied.conn(), tmp_path / "writer.blt"
    with ebooklet.open(conn, local, "c", value_serializer="json") as db:
        db["a"] = 1
        db.set_metadata(BIG)
        db.changes().push()
    with ebooklet.open(conn, local, "w", remote_lock="none") as db:
        db["b"] = 2
        _landed_with_its_outcome_unknown(moto_proxied, conn, db)
        state = json.loads((_folder(local) / "state.json").read_bytes().partition(b"\n")[0])
        assert state["inflight"] is not None
        assert max(_side_files(local).values()) < SMALL_FILE
    with ebooklet.open(conn, local, "w") as db:  # settles the commit: it landed
        assert db.changes().push().keys == []
        assert db.get_metadata() == BIG


def _state(local: pathlib.Path) -> dict:
    return json.loads((_folder(local) / "state.json").read_bytes().partition(b"\n")[0])


def test_a_sync_state_of_version_3_with_its_metadata_inside_is_upgraded(tmp_path):
    """A local file left by the last code with state version 3 (found in the project's git
    history) opens read-only, then for writing, which moves the metadata out of state.json."""
    if not _has_history():
        pytest.skip("no git history: the earlier version cannot be exported")
    commit = _git("rev-parse", _first_adding("STATE_VERSION = 4", "ebooklet/local/state.py") + "^")
    code_dir = _export(commit, tmp_path / "old-code")
    conn, local = tmp_path / "remote" / "db.blt", tmp_path / "old.blt"
    run_old_code(code_dir, f"""
        db = ebooklet.open({str(conn)!r}, {str(local)!r}, "c", value_serializer="json")
        db["a"] = 1
        db.set_metadata({{"stations": ["x" * 1024] * 3 * 1024}})  # BIG
        db.changes().push()
        db["pending"] = 2
        db.close()
    """)
    old = _state(local)
    assert old["version"] == 3 and old["head"]["metadata"] == BIG
    with ebooklet.open(conn, local, "r") as db:
        assert db.get_metadata() == BIG
        assert db["pending"] == 2
    assert _state(local)["version"] == 3  # a reader leaves it as it was
    with ebooklet.open(conn, local, "w") as db:
        assert db.get_metadata() == BIG
        assert [c.key for c in db.changes().iter_changes()] == ["pending"]
    assert _state(local)["version"] == STATE_VERSION
    assert max(_side_files(local).values()) < SMALL_FILE
    assert len(_metadata_files(local)) == 1
    with ebooklet.open(conn, local, "w") as db:
        assert db.get_metadata() == BIG
        assert db.changes().push().keys == ["pending"]
