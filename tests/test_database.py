"""The database end to end: round trips, lazy reads, flags and the local-first promise."""

from __future__ import annotations

import pathlib

import booklet
import pytest

import ebooklet


def _keys(n: int) -> dict[str, dict[str, int]]:
    return {f"station-{i:05d}": {"i": i, "sq": i * i} for i in range(n)}


def test_round_trip_of_10000_keys_through_a_fresh_local_path(remote, tmp_path):
    conn = remote.conn()
    data = _keys(10_000)
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer="pickle") as db:
        db.update(data)
        result = db.changes().push()
    assert result.committed and len(result.keys) == 10_000
    assert result.requests < 20, result
    with ebooklet.open(conn, tmp_path / "reader.blt", "r", allow_pickle=True) as db:
        assert len(db) == 10_000
        assert sorted(db.keys()) == sorted(data)
        assert dict(db.items()) == data
        assert db["station-00042"] == data["station-00042"]


def test_a_fresh_open_lists_every_key_and_fetches_a_value_only_when_read(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="pickle") as db:
        db.update(_keys(300))
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "r.blt", "r", allow_pickle=True) as db:
        assert "station-00007" in db and "nope" not in db
        assert len(list(db.keys())) == 300
        stats = db.stats
        before = stats.requests
        assert db["station-00007"] == {"i": 7, "sq": 49}
        assert stats.requests == before + 1  # one ranged GET; the index part is already local
        assert db["station-00007"] == {"i": 7, "sq": 49}
        assert stats.requests == before + 1  # cached
    with booklet.open(tmp_path / "r.blt") as local:
        assert list(local.keys()) == ["station-00007"]


def test_get_items_fetches_many_values_with_coalesced_ranges(remote, tmp_path):
    conn = remote.conn()
    data = _keys(2000)
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="pickle") as db:
        db.update(data)
        db.changes().push()
    wanted = sorted(data)[::7]
    with ebooklet.open(conn, tmp_path / "r.blt", "r", allow_pickle=True) as db:
        stats = db.stats
        before = stats.requests
        got = dict(db.get_items(wanted))
        assert got == {k: data[k] for k in wanted}
        assert stats.requests - before == 2  # the index part, then one coalesced ranged GET
        assert db.load_items() == len(data) - len(wanted)
        assert dict(db.items()) == data


def test_get_items_gives_the_default_for_missing_keys(tmp_path):
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "c") as db:
        db["a"] = b"1"
        assert dict(db.get_items(["a", "b"], default=b"-")) == {"a": b"1", "b": b"-"}


def test_opening_and_local_reads_and_writes_make_no_request(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db["x"] = "1"
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:
        stats = db.stats
        db["y"] = "2"
        assert db["x"] == "1" and db["y"] == "2"
        del db["x"]
        assert sorted(db) == ["y"] and len(db) == 1
        db.sync()
        assert stats.requests == 0


def test_local_deletes_survive_closing_and_reopening_before_push(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="pickle") as db:
        db.update(_keys(10))
        db.changes().push()
    # A fresh local copy deletes a key it never fetched, and one it did.
    with ebooklet.open(conn, tmp_path / "b.blt", "w", allow_pickle=True) as db:
        assert db["station-00001"]["i"] == 1
        del db["station-00001"]
        del db["station-00002"]
    with ebooklet.open(conn, tmp_path / "b.blt", "w") as db:
        assert "station-00001" not in db and "station-00002" not in db
        assert len(db) == 8
        changes = {c.key: c for c in db.changes().iter_changes()}
        assert {k: c.local for k, c in changes.items()} == {
            "station-00001": "deleted",
            "station-00002": "deleted",
        }
        assert db.changes().push().deleted == ["station-00001", "station-00002"]
    with ebooklet.open(conn, tmp_path / "c.blt", "r", allow_pickle=True) as db:
        assert len(db) == 8 and "station-00002" not in db


def test_iter_changes_lists_added_modified_and_deleted_keys_with_timestamps(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.update({"keep": "k", "edit": "old", "drop": "d"})
        db.changes().push()
        db.set("edit", "new", timestamp=1_700_000_000_000_000)
        db["add"] = "a"
        del db["drop"]
        db["keep"] = "k"  # the same bytes again: not a change
        changes = list(db.changes().iter_changes())
    assert [(c.key, c.side, c.local) for c in changes] == [
        ("add", "local", "added"),
        ("drop", "local", "deleted"),
        ("edit", "local", "modified"),
    ]
    assert changes[2].local_timestamp == 1_700_000_000_000_000
    assert all(c.remote is None and not c.conflict for c in changes)


@pytest.mark.parametrize("remote_lock, requests", [("push", 10), ("none", 6)])
def test_a_push_reports_what_it_sent(tmp_path, remote_lock, requests):
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "c", remote_lock=remote_lock) as db:
        db.update({f"k{i}": b"x" * 100 for i in range(50)})
        result = db.changes().push()
        assert result.committed and result.commit == 1
        assert result.keys == sorted(f"k{i}" for i in range(50))
        assert result.bytes_sent > 50 * 100
        # Head read, segment, index part, the head's log object, the store's word that the
        # first upload is still there (gc), head write; with the lease: the lease and its queue
        # read, take, release.
        assert result.requests == requests
        nothing = db.changes().push()
        assert not nothing.committed and nothing.requests == 0


def test_flag_n_replaces_the_remote_at_the_first_push_not_at_open(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.update({"old-1": "a", "old-2": "b"})
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "b.blt", "n", value_serializer="str") as db:
        db["new"] = "n"
        # The remote is untouched until the push.
        with ebooklet.open(conn, tmp_path / "peek.blt", "r") as peek:
            assert sorted(peek) == ["old-1", "old-2"]
        changes = {c.key: c.local for c in db.changes().iter_changes()}
        assert changes == {"new": "added", "old-1": "deleted", "old-2": "deleted"}
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "c.blt", "r") as db:
        assert dict(db.items()) == {"new": "n"}


def test_metadata_travels_with_the_push(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db.set_metadata({"units": "mm"})
        db["k"] = b"v"
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "b.blt", "r") as db:
        assert db.get_metadata() == {"units": "mm"}


def test_timestamps_are_kept_and_listed_without_fetching_values(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db.set("a", b"1", timestamp=1_600_000_000_000_000)
        db.set("b", b"2", timestamp="2024-01-02T03:04:05+00:00")
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "b.blt", "r") as db:
        stats = db.stats
        before = stats.requests
        assert dict(db.timestamps()) == {"a": 1_600_000_000_000_000, "b": 1_704_164_645_000_000}
        assert db.get_timestamp("a") == 1_600_000_000_000_000
        assert stats.requests == before + 1  # the index part only, no value
        assert db.get_timestamp("b", include_value=True) == (1_704_164_645_000_000, b"2")


def test_any_booklet_serializer_round_trips(tmp_path):
    values = {"pickle": {"a": [1, 2]}, "json": {"a": [1, 2]}, "orjson": {"a": [1, 2]}, "str": "text",
              "msgpack": {"a": [1, 2]}, None: b"raw", "int8": -5}
    for i, (serializer, value) in enumerate(values.items()):
        remote = tmp_path / "remote" / f"db{i}"
        with ebooklet.open(remote, tmp_path / f"w{i}.blt", "c", value_serializer=serializer) as db:
            db["k"] = value
            db.changes().push()
        with ebooklet.open(remote, tmp_path / f"r{i}.blt", "r", allow_pickle=True) as db:
            assert db["k"] == value, serializer


def test_pop_setdefault_and_clear_work_like_a_dict(tmp_path):
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(remote, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.update({"a": "1", "b": "2", "c": "3"})
        db.changes().push()
    with ebooklet.open(remote, tmp_path / "b.blt", "w") as db:
        assert db.pop("a") == "1" and db.pop("zz", "d") == "d"
        assert db.setdefault("b", "x") == "2" and db.setdefault("n", "x") == "x"
        db.clear()
        assert len(db) == 0 and list(db) == []
        db.changes().push()
    with ebooklet.open(remote, tmp_path / "c.blt", "r") as db:
        assert len(db) == 0


def test_a_closed_database_raises_on_use(tmp_path):
    db = ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "c")
    db.close()
    db.close()
    with pytest.raises(ebooklet.ClosedError, match="closed"):
        db["x"]
    with pytest.raises(ValueError):
        db["x"] = b"1"


def test_a_database_opened_read_only_refuses_writes(tmp_path):
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(remote, tmp_path / "a.blt", "c") as db:
        db["x"] = b"1"
        db.changes().push()
    with ebooklet.open(remote, tmp_path / "b.blt", "r") as db:
        for write in (lambda: db.__setitem__("y", b"2"), lambda: db.__delitem__("x"),
                      lambda: db.set_metadata({}), lambda: db.changes().push()):
            with pytest.raises(ebooklet.ReadOnlyError, match="flag='r'"):
                write()
        assert dict(db.items()) == {"x": b"1"}


def test_a_local_folder_remote_accepts_paths_and_file_urls(tmp_path):
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(str(remote), tmp_path / "a.blt", "c") as db:
        db["x"] = b"1"
        db.changes().push()
    with ebooklet.open(remote.as_uri(), tmp_path / "b.blt", "r") as db:
        assert db["x"] == b"1"
    assert isinstance(remote, pathlib.Path)


def test_push_and_load_items_report_progress_up_to_the_totals(tmp_path):
    remote = tmp_path / "remote" / "db"
    seen = []
    with ebooklet.open(remote, tmp_path / "a.blt", "c") as db:
        db.update({f"k{i}": b"x" * 1000 for i in range(300)})
        db.changes().push(progress=seen.append)
    assert seen[0].phase == "upload" and seen[0].keys_done == 0
    assert seen[-1].keys_done == seen[-1].keys_total == 300
    assert seen[-1].bytes_done == seen[-1].bytes_total >= 300_000
    seen.clear()
    with ebooklet.open(remote, tmp_path / "b.blt", "r") as db:
        assert db.load_items(progress=seen.append) == 300
    assert seen[-1].phase == "download"
    assert seen[-1].keys_done == seen[-1].keys_total == 300
    assert seen[-1].bytes_done == seen[-1].bytes_total == 300_000


def test_a_plain_booklet_file_is_adopted_and_pushed_whole(remote, tmp_path):
    path = tmp_path / "made-offline.blt"
    with booklet.open(path, "n", key_serializer="str", value_serializer="pickle") as raw:
        raw.update({f"k{i}": i for i in range(50)})
    conn = remote.conn()
    with ebooklet.open(conn, path, "w") as db:
        assert len(db) == 50
        assert db.changes().push().keys == sorted(f"k{i}" for i in range(50))
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as check:
        assert dict(check.items()) == {f"k{i}": i for i in range(50)}
