"""Large values at wire speed: the transfer paths that only large values take.

A value longer than MAX_REQUEST is read with parallel ranged GETs (``ObjectStore.get_range``);
a bulk read cuts and hashes each answer's values in the thread that fetched it
(``BulkRead.cut``); a push hashes large values in threads ahead of the segment writer
(``hash_ahead``) and uploads several segments at once. The sizes are shrunk with
monkeypatch (MAX_REQUEST, segment_bytes) so that a few MiB exercise them; requests are
counted on the public ``db.stats`` or at the fault proxy.
"""

from __future__ import annotations

import itertools
import random
import threading

import booklet
import pytest

import ebooklet
from ebooklet.format import value_hash
from ebooklet.remote import Remote, connect
from ebooklet.remote.wrapper import WrapperTransport
from ebooklet.settings import settings as ebooklet_settings
from ebooklet.sync import objects

KIB = 1024
PIECE = 256 * KIB
BIG = 5 * PIECE + 1000  # six ranged GETs of PIECE or less


@pytest.fixture
def small_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests of at most PIECE, segments of 2 * PIECE: BIG spans several of each."""
    monkeypatch.setattr(objects, "MAX_REQUEST", PIECE)
    monkeypatch.setattr(objects, "MIN_REQUEST", 64 * KIB)
    monkeypatch.setattr(ebooklet_settings, "segment_bytes", 2 * PIECE)


def _data(seed: int = 3) -> dict[str, bytes]:
    rng = random.Random(seed)
    data = {f"small-{i:02d}": rng.randbytes(rng.randrange(1, 3000)) for i in range(20)}
    data["big"] = rng.randbytes(BIG)
    data["medium"] = rng.randbytes(PIECE + 7)
    return data


def _push(conn, path, data: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    with ebooklet.open(conn, path, "c") as db:
        db.update(data)
        assert db.changes().push().committed


# -- reads ---------------------------------------------------------------------------------


def test_a_value_larger_than_a_request_is_read_intact_with_parallel_ranged_gets(remote, tmp_path,
                                                                                small_requests):
    conn = remote.conn()
    data = _data()
    _push(conn, tmp_path / "w.blt", data)
    with ebooklet.open(conn, tmp_path / "one.blt", "r") as db:
        sum(1 for _ in db.keys())  # the index, before counting
        before = db.stats.requests
        assert db["big"] == data["big"]
        assert db.stats.requests - before == -(-BIG // PIECE)  # one GET per piece, no more
    with ebooklet.open(conn, tmp_path / "all.blt", "r") as db:
        assert dict(db.items()) == data
    with booklet.open(tmp_path / "all.blt") as local:
        assert local["big"] == data["big"]


def test_a_value_beyond_max_split_comes_with_one_get(tmp_path, small_requests, monkeypatch):
    # Held once, as a single GET's answer, rather than as pieces and their join.
    monkeypatch.setattr(objects, "MAX_SPLIT", BIG - 1)
    conn = tmp_path / "remote" / "db"
    data = _data()
    _push(conn, tmp_path / "w.blt", data)
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        sum(1 for _ in db.keys())
        before = db.stats.requests
        assert db["big"] == data["big"]
        assert db.stats.requests - before == 1
        assert db["medium"] == data["medium"]  # within MAX_SPLIT: still in pieces
        assert db.stats.requests - before == 3


def test_the_pieces_of_a_large_value_are_fetched_at_once(tmp_path, small_requests):
    # The first two pieces' requests each wait for the other: a read that fetched the
    # pieces one after the other would break the barrier (and fail).
    conn = tmp_path / "remote" / "db"
    data = _data()
    _push(conn, tmp_path / "w.blt", data)
    both_started = threading.Barrier(2, timeout=30)
    calls = itertools.count()

    class Overlapping(WrapperTransport):
        def get_range(self, key: str, start: int, length: int) -> bytes:
            if next(calls) < 2:
                both_started.wait()
            return super().get_range(key, start, length)

    real = connect(conn)
    remote = Remote(Overlapping(real.transport), real.db_key, real.location)
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert db["big"] == data["big"]  # the index comes whole: the only ranged GETs are pieces
    assert next(calls) == -(-BIG // PIECE)


def test_a_reset_in_the_middle_of_a_parallel_ranged_read_is_retried(proxied, tmp_path, small_requests):
    conn = proxied.conn()
    data = _data()
    _push(conn, tmp_path / "w.blt", data)
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        sum(1 for _ in db.keys())
        first = proxied.proxy.add_rule(lambda r: r.method == "GET" and "/seg/" in r.key, None, times=1)
        reset = proxied.proxy.add_rule(lambda r: r.method == "GET" and "/seg/" in r.key, "reset", times=1)
        assert db["big"] == data["big"]
    assert first.fired.is_set() and reset.fired.is_set()


def test_a_failing_piece_of_a_large_value_fails_the_read_and_caches_nothing(proxied, tmp_path,
                                                                            small_requests):
    conn = proxied.conn()
    data = _data()
    _push(conn, tmp_path / "w.blt", data)
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        sum(1 for _ in db.keys())
        # The second piece of the large value fails, every attempt.
        proxied.proxy.add_rule(lambda r: r.method == "GET" and "/seg/" in r.key, None, times=1)
        bad = proxied.proxy.add_rule(lambda r: r.method == "GET" and "/seg/" in r.key, "503", times=None)
        with pytest.raises(ebooklet.RemoteUnavailableError):
            db["big"]
        assert bad.fired.is_set()
        proxied.proxy.clear_rules()
    with booklet.open(tmp_path / "r.blt") as local:
        assert "big" not in local
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert db["big"] == data["big"]  # nothing half-stored: the next read fetches it whole


def test_a_damaged_large_value_is_caught_by_its_hash_and_not_cached(tmp_path, small_requests):
    conn = tmp_path / "remote" / "db"
    data = _data()
    _push(conn, tmp_path / "w.blt", data)
    big_len = len(data["big"])
    for segment in (tmp_path / "remote" / "db.ebooklet" / "seg").iterdir():
        if segment.stat().st_size >= big_len:
            body = bytearray(segment.read_bytes())
            body[3 * PIECE + 11] ^= 0x01  # one bit, in the fourth piece of the large value
            segment.write_bytes(bytes(body))
            break
    else:
        raise AssertionError("no segment holds the large value")
    with ebooklet.open(conn, tmp_path / "one.blt", "r") as db:
        with pytest.raises(ebooklet.IntegrityError, match="'big'.*content hash"):
            db["big"]
    with ebooklet.open(conn, tmp_path / "all.blt", "r") as db:
        with pytest.raises(ebooklet.IntegrityError, match="'big'.*content hash"):
            db.load_items()
    for path in ("one.blt", "all.blt"):
        with booklet.open(tmp_path / path) as local:
            assert "big" not in local


# -- pushes --------------------------------------------------------------------------------


def _batches(rng: random.Random) -> list[list[tuple[str, int, bytes | None, int]]]:
    """Batches of large values, of small ones, and of both with deletes among them."""
    out = []
    for b in range(30):
        kind = b % 3
        batch = []
        for i in range(rng.randrange(1, 6)):
            size = rng.choice([objects.BIG_VALUE, 3 * objects.BIG_VALUE]) if kind == 0 else rng.randrange(200)
            raw = None if kind == 2 and i % 2 else rng.randbytes(size)
            batch.append((f"k{b}-{i}", b, raw, 0))
        out.append(batch)
    return out


@pytest.mark.parametrize("window", [1, 2, objects.THREADS])
def test_hash_ahead_gives_each_batch_its_own_hashes_in_order(window):
    batches = _batches(random.Random(window))
    got = list(objects.hash_ahead(iter(batches), window))
    assert [batch for batch, _ in got] == batches
    for batch, hashes in got:
        assert hashes == [None if raw is None else value_hash(raw) for _, _, raw, _ in batch]


def test_hash_ahead_reads_a_bounded_number_of_batches_ahead():
    taken = 0

    def batches():  # type: ignore[no-untyped-def]
        nonlocal taken
        for i in range(50):
            taken += 1
            yield [(f"k{i}", i, bytes(objects.BIG_VALUE), 0)]

    for n, _ in enumerate(objects.hash_ahead(batches(), window=3), 1):
        assert taken <= n + 3


def test_hash_ahead_holds_a_bounded_number_of_bytes_ahead(monkeypatch):
    monkeypatch.setattr(objects, "HASH_AHEAD_BYTES", 5 * objects.BIG_VALUE)
    taken = 0

    def batches():  # type: ignore[no-untyped-def]
        nonlocal taken
        for i in range(20):
            taken += 1
            yield [(f"k{i}", i, bytes(2 * objects.BIG_VALUE), 0)]

    for n, _ in enumerate(objects.hash_ahead(batches(), window=objects.THREADS), 1):
        assert taken <= n + 2  # two batches of 2 x BIG_VALUE fit in 5 x BIG_VALUE, three do not


def test_large_values_and_deletes_pushed_across_many_segments_read_back_intact(remote, tmp_path,
                                                                               small_requests):
    conn = remote.conn()
    rng = random.Random(11)
    data = {f"v{i:02d}": rng.randbytes(rng.choice([70 * KIB, 300 * KIB, 10])) for i in range(24)}
    _push(conn, tmp_path / "w.blt", data)
    with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
        for key in list(data)[::3]:
            del db[key]
            del data[key]
        data["v00-new"] = rng.randbytes(BIG)
        db["v00-new"] = data["v00-new"]
        assert db.changes().push().committed
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert dict(db.items()) == data  # every value checked against the hash the push wrote


def test_a_failing_segment_upload_among_parallel_ones_commits_nothing(proxied, tmp_path, small_requests):
    conn = proxied.conn()
    rng = random.Random(5)
    data = {f"v{i:02d}": rng.randbytes(200 * KIB) for i in range(30)}  # about 15 segments
    puts = proxied.proxy.add_rule(lambda r: r.method == "PUT" and "/seg/" in r.key, None, times=6)
    bad = proxied.proxy.add_rule(lambda r: r.method == "PUT" and "/seg/" in r.key, "500", times=None)
    with ebooklet.open(conn, tmp_path / "w.blt", "c") as db:
        db.update(data)
        with pytest.raises(ebooklet.EbookletError):
            db.changes().push()
        assert puts.fired.is_set() and bad.fired.is_set()
        proxied.proxy.clear_rules()
        assert conn.db_key not in proxied.keys(conn.db_key)  # no head: nothing committed
        assert db.changes().push().committed  # the changes are still pending, and go through
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert dict(db.items()) == data


def test_a_push_uploads_four_full_segments_at_once(tmp_path):
    # Each of the first four uploads waits for the others: an uploader that let only two
    # segments of the default size be in flight would break the barrier.
    segment = ebooklet_settings.segment_bytes
    four_started = threading.Barrier(objects.UPLOAD_SEGMENTS, timeout=30)
    calls = itertools.count()

    class Overlapping(WrapperTransport):
        def put(self, key, data, mode="overwrite"):  # type: ignore[no-untyped-def]
            if next(calls) < objects.UPLOAD_SEGMENTS:
                four_started.wait()
            return super().put(key, data, mode)

    real = connect(tmp_path / "remote" / "db")
    store = objects.ObjectStore(Remote(Overlapping(real.transport), real.db_key, real.location))
    uploader = objects.Uploader(store, objects.Tracker(None, "upload"))
    try:
        for i in range(objects.UPLOAD_SEGMENTS + 1):
            uploader.submit(f"seg/test-{i}", bytes([i]) * segment)
        uploader.wait()
    finally:
        uploader.close()
    assert sorted(uploader.stored) == [f"seg/test-{i}" for i in range(objects.UPLOAD_SEGMENTS + 1)]


def test_a_damaged_remote_value_given_to_a_conflict_function_is_refused_and_nothing_commits(tmp_path):
    # ValueReader.read checks each value in the thread that fetched it: the damage is still
    # an IntegrityError, and the push that needed the value commits nothing.
    conn = tmp_path / "remote" / "db"
    seg_dir = tmp_path / "remote" / "db.ebooklet" / "seg"
    _push(conn, tmp_path / "a.blt", {"k": b"base" * 1000})
    with ebooklet.open(conn, tmp_path / "b.blt", "w") as b:
        b["k"] = b"mine" * 1000
        b.sync()
    before = set(seg_dir.iterdir())
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as a:
        a["k"] = b"theirs" * 1000
        assert a.changes().push().committed
    [theirs] = set(seg_dir.iterdir()) - before
    body = bytearray(theirs.read_bytes())
    body[10] ^= 0x01
    theirs.write_bytes(bytes(body))
    head = (tmp_path / "remote" / "db").read_bytes()
    seen = []
    with ebooklet.open(conn, tmp_path / "b.blt", "w") as b:
        with pytest.raises(ebooklet.IntegrityError, match="'k'.*content hash"):
            b.changes().push(on_conflict=lambda key, mine, remote, base: seen.append(key) or mine)
    assert seen == []  # the function never saw the damaged value
    assert (tmp_path / "remote" / "db").read_bytes() == head  # nothing committed
