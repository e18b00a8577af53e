"""keys() of a database whose keys are not all local walks the index parts one at a time:
the first key costs one request, memory holds about one part, a lazy read meanwhile moves no
key out of the listing, and a walk that reaches the end checks the head's key count."""

from __future__ import annotations

import json
import pathlib
import shutil
import threading
import tracemalloc

import pytest

import ebooklet
from ebooklet.format import Part
from ebooklet.format import names as fmt
from ebooklet.sync import listing

N_KEYS = 100_000


def _key(i: int) -> str:
    return f"station-{i:08d}-temperature"


@pytest.fixture(scope="module")
def many_parts(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A folder remote of 100,000 keys in 128 index parts (parts split at 128 KiB)."""
    folder = tmp_path_factory.mktemp("many-parts")
    conn = folder / "remote" / "db.blt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fmt, "PART_SPLIT_BYTES", 128 * 1024)
        mp.setattr(fmt, "PART_TARGET_BYTES", 64 * 1024)
        with ebooklet.open(conn, folder / "writer.blt", "n") as db:
            db.update({_key(i): b"v" for i in range(N_KEYS)})
            db.changes().push()
    assert ebooklet.remote_info(conn).n_index_parts == 128
    return conn


def _requests(db: ebooklet.EBooklet) -> int:
    return db.stats.snapshot()[0]


def test_the_first_key_costs_one_request_and_a_full_walk_one_per_part(many_parts, tmp_path):
    with ebooklet.open(many_parts, tmp_path / "reader.blt", "r") as db:
        before = _requests(db)
        keys = db.keys()
        first = next(iter(keys))
        assert _requests(db) - before == 1  # one index part, not 128
        assert first in db
        before = _requests(db)
        listed = list(keys)
        assert _requests(db) - before == 127  # the first part was stored locally
        assert len(listed) == len(set(listed)) == N_KEYS
        before = _requests(db)
        assert sorted(db.keys()) == sorted(listed)
        assert _requests(db) == before


def _one_part_bytes(conn: pathlib.Path) -> int:
    """Memory one decoded index part of ``conn`` holds."""
    name = json.loads(conn.read_bytes())["parts"][0]
    blob = (conn.with_name(conn.name + ".ebooklet") / name).read_bytes()
    tracemalloc.start()
    try:
        part = Part.decode(blob, name)
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(part) > 500
    return size


def test_listing_every_key_holds_about_one_index_part_in_memory(many_parts, tmp_path):
    one_part = _one_part_bytes(many_parts)
    with ebooklet.open(many_parts, tmp_path / "reader.blt", "r") as db:
        tracemalloc.start()
        try:
            n = sum(1 for _ in db.keys())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert n == N_KEYS
    # The part being listed and the few downloaded ahead (each download reads up to 1 MiB
    # at first), far below the 128 parts (some 16 MB) a listing holding them all takes.
    bound = (listing.AHEAD + 2) * one_part + (listing.AHEAD + 1) * 1024 * 1024
    assert 128 * one_part > 2 * bound
    assert peak < bound, (peak, bound, one_part)


def test_keys_read_or_written_while_keys_are_listed(many_parts, tmp_path):
    """A lazy read moves a key into the local file: it is listed once all the same. Writes
    and deletes meanwhile do not stop the listing."""
    with ebooklet.open(many_parts, tmp_path / "reader.blt", "w") as db:
        it = iter(db.keys())
        seen = [next(it)]
        later = [_key(i) for i in range(0, N_KEYS, 997)]
        worker = threading.Thread(target=lambda: [db[k] for k in later])  # lazy reads
        worker.start()
        worker.join()
        db["new-key"] = b"n"
        seen += it
    assert len(seen) == len(set(seen))
    assert set(seen) == {_key(i) for i in range(N_KEYS)}


@pytest.mark.parametrize("action", ["pull", "push"])
def test_a_push_or_pull_while_keys_are_listed_stops_the_listing(many_parts, tmp_path, action):
    conn = tmp_path / "remote" / "db.blt"
    shutil.copytree(many_parts.parent, conn.parent)
    with ebooklet.open(conn, tmp_path / "reader.blt", "w") as db:
        it = iter(db.keys())
        next(it)
        with ebooklet.open(conn, tmp_path / "other.blt", "w") as other:
            other["other-key"] = b"o"
            other.changes().push()
        if action == "push":
            db["mine"] = b"m"
            db.changes().push()
        else:
            db.changes().pull()
        with pytest.raises(ebooklet.ChangedDuringIterationError, match="keys.. was iterating"):
            list(it)
        assert "other-key" in set(db.keys())


def _lie_about_n_keys(conn: pathlib.Path, by: int) -> None:
    """Make the head of ``conn`` say it holds ``by`` more keys than its parts do."""
    head = json.loads(conn.read_bytes())
    head["n_keys"] += by
    conn.write_bytes(json.dumps(head, separators=(",", ":")).encode())


def _seed_small(tmp_path: pathlib.Path) -> pathlib.Path:
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer="json") as db:
        db.update({f"k{i}": i for i in range(20)})
        db.changes().push()
    return conn


@pytest.mark.parametrize("by", [1, -1])
@pytest.mark.parametrize("read", ["keys", "items", "load_items", "timestamps"])
def test_a_head_whose_key_count_disagrees_with_its_parts_is_refused_by_a_full_read(tmp_path, read, by):
    conn = _seed_small(tmp_path)
    _lie_about_n_keys(conn, by)
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        with pytest.raises(ebooklet.RemoteFormatError, match=f"hold 20 keys, and its head says {20 + by}"):
            if read == "load_items":
                db.load_items()
            else:
                list(getattr(db, read)())
        assert db["k3"] == 3  # a single read needs no count


def test_a_pull_of_a_head_whose_key_count_disagrees_with_its_parts_is_refused(tmp_path):
    conn = _seed_small(tmp_path)
    with ebooklet.open(conn, tmp_path / "reader.blt", "w") as db:
        assert db["k1"] == 1
    with ebooklet.open(conn, tmp_path / "writer.blt", "w") as writer:
        writer["k99"] = 99
        writer.changes().push()
    _lie_about_n_keys(conn, 1)
    with ebooklet.open(conn, tmp_path / "reader.blt", "w") as db:
        with pytest.raises(ebooklet.RemoteFormatError, match="hold 21 keys, and its head says 22"):
            db.changes().pull()
        assert "k99" not in db  # nothing adopted
