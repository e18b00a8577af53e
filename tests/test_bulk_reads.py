"""Bulk reads of a lazy database: items(), values(), load_items() and get_items() of many keys.

They read values in the order segments store them, whichever index part a key belongs to, with
bounded waste, several requests at a time, and cache each answer in the local file as it
arrives. Requests and bytes are counted with the public ``db.stats``.
"""

from __future__ import annotations

import pathlib
import random
import threading

import booklet
import pytest

import ebooklet
from ebooklet.remote import Remote, connect
from ebooklet.remote.base import Transport
from ebooklet.sync import objects

from .faults import FaultyTransport

MIB = 1024 * 1024


def _values(n: int, size: int, seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"key-{i:07d}": rng.randbytes(size) for i in range(n)}


def _push(conn, path: pathlib.Path, data: dict[str, bytes]) -> None:
    with ebooklet.open(conn, path, "c") as db:
        db.update(data)
        db.changes().push()


def _index_cost(conn, path: pathlib.Path) -> tuple[int, int]:
    """Requests and bytes to learn every key of the remote (head and all index parts)."""
    with ebooklet.open(conn, path, "r") as db:
        sum(1 for _ in db.keys())
        return db.stats.requests, db.stats.bytes_received


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory):
    """A folder remote of 30,000 keys x 100 B, in four index parts: each part's keys are
    scattered over the whole segment."""
    root = tmp_path_factory.mktemp("many")
    conn = root / "remote" / "db"
    data = _values(30_000, 100)
    _push(conn, root / "writer.blt", data)
    return conn, data, _index_cost(conn, root / "index.blt")


def test_a_full_read_downloads_each_value_once(remote, tmp_path):
    conn = remote.conn()
    data = _values(30_000, 100)
    _push(conn, tmp_path / "w.blt", data)
    index_requests, index_bytes = _index_cost(conn, tmp_path / "i.blt")
    value_bytes = sum(map(len, data.values()))
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert db.load_items() == len(data)
        # No gap and no value twice: exactly the values and the index.
        assert db.stats.bytes_received == index_bytes + value_bytes
        assert db.stats.bytes_received <= 1.3 * value_bytes
        # Requests of about MIN_REQUEST (1 MiB) each, over the one segment.
        assert db.stats.requests - index_requests <= value_bytes // objects.MIN_REQUEST + 1
        before = db.stats.requests
        assert dict(db.items()) == data
        assert db.load_items() == 0
        assert db.stats.requests == before
    with booklet.open(tmp_path / "r.blt") as local:
        assert len(local) == len(data)


def test_items_reads_in_segment_order_and_yields_every_key_once(many, tmp_path):
    conn, data, (index_requests, index_bytes) = many
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        seen = [key for key, _ in db.items()]
        assert len(seen) == len(set(seen)) == len(data)
        assert db.stats.bytes_received == index_bytes + sum(map(len, data.values()))
        assert db.stats.requests - index_requests <= 4
        assert sorted(db.values()) == sorted(data.values())  # now from the local file
        assert set(db.local_keys()) == set(data)


def test_items_after_some_keys_are_cached_fetches_only_the_rest(many, tmp_path):
    conn, data, (index_requests, index_bytes) = many
    keys = sorted(data)
    cached = keys[:1000] + keys[-1000:]
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        db.load_items(cached)
        before = db.stats.bytes_received
        assert dict(db.items()) == data
        assert db.stats.bytes_received - before == sum(len(data[k]) for k in keys[1000:-1000])


def test_values_of_several_segments_are_each_read_once(tmp_path):
    conn = tmp_path / "remote" / "db"
    first, second = _values(3000, 200, seed=1), _values(3000, 200, seed=2)
    second = {k.replace("key", "other"): v for k, v in second.items()}
    _push(conn, tmp_path / "w.blt", first)
    _push(conn, tmp_path / "w.blt", second)
    index_requests, index_bytes = _index_cost(conn, tmp_path / "i.blt")
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert dict(db.items()) == first | second
        assert db.stats.bytes_received == index_bytes + 6000 * 200
        assert db.stats.requests == index_requests + 2  # one per segment


def test_scattered_keys_far_apart_fetch_only_their_own_bytes(tmp_path):
    conn = tmp_path / "remote" / "db"
    data = _values(30, 40_000)  # gaps of 80 KB between every third value
    _push(conn, tmp_path / "w.blt", data)
    wanted = sorted(data)[::3]
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        sum(1 for _ in db.keys())
        before_requests, before_bytes = db.stats.requests, db.stats.bytes_received
        assert dict(db.get_items(wanted)) == {k: data[k] for k in wanted}
        assert db.stats.bytes_received - before_bytes == 40_000 * len(wanted)
        assert db.stats.requests - before_requests == len(wanted)


def test_scattered_keys_close_together_share_requests_with_bounded_waste(tmp_path):
    conn = tmp_path / "remote" / "db"
    data = _values(400, 10_000)
    _push(conn, tmp_path / "w.blt", data)
    wanted = sorted(data)[::2]  # a 10 KB gap after each value
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        sum(1 for _ in db.keys())
        before_requests, before_bytes = db.stats.requests, db.stats.bytes_received
        db.load_items(wanted)
        requests = db.stats.requests - before_requests
        fetched = db.stats.bytes_received - before_bytes
        useful = 10_000 * len(wanted)
        assert requests < len(wanted) / 4
        assert fetched <= useful / (1 - objects.WASTE_FRACTION) + objects.WASTE_ALLOWANCE * requests


def test_get_items_of_many_keys_fetches_the_lazy_ones_only(many, tmp_path):
    conn, data, _ = many
    keys = sorted(data)
    with ebooklet.open(conn, tmp_path / "r.blt", "w") as db:
        db[keys[5]] = b"mine"
        del db[keys[6]]
        got = dict(db.get_items(keys[:5000] + ["no-such-key"], default=None))
    expected = {k: data[k] for k in keys[:5000]} | {keys[5]: b"mine", keys[6]: None, "no-such-key": None}
    assert got == expected


def test_a_large_read_runs_requests_in_parallel(many, tmp_path, monkeypatch):
    monkeypatch.setattr(objects, "MIN_REQUEST", 64 * 1024)  # 3 MB of values: about 8 requests
    conn, data, _ = many
    first_started, second_started = threading.Event(), threading.Event()

    class Overlapping(FaultyTransport):
        """The first ranged read waits until another one has started."""

        def __init__(self, inner: Transport) -> None:
            super().__init__(inner, lambda key: None)
            self.ranges = 0
            self.lock = threading.Lock()

        def get_range(self, key: str, start: int, length: int) -> bytes:
            with self.lock:
                self.ranges += 1
                n = self.ranges
            if n == 1:
                first_started.set()
                assert second_started.wait(30), "no second ranged read ran while the first did"
            else:
                second_started.set()
            return super().get_range(key, start, length)

    real = connect(conn)
    overlapping = Overlapping(real.transport)
    remote = Remote(overlapping, real.db_key, real.location)
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert db.load_items() == len(data)
    assert overlapping.ranges >= objects.THREADS


def test_items_caches_values_as_they_arrive_with_bounded_read_ahead(tmp_path, monkeypatch):
    monkeypatch.setattr(objects, "READ_AHEAD", 1 * MIB)
    conn = tmp_path / "remote" / "db"
    data = _values(2000, 4096)  # 8 MiB of values: eight requests of 1 MiB
    _push(conn, tmp_path / "w.blt", data)
    _, index_bytes = _index_cost(conn, tmp_path / "i.blt")
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        items = iter(db.items())
        key, value = next(items)
        assert data[key] == value
        # Only a request or two ahead of the consumer, and its values are in the file.
        assert db.stats.bytes_received - index_bytes <= 3 * MIB
        cached = len(list(db.local_keys()))
        assert 0 < cached < len(data)
        assert dict([(key, value), *items]) == data


def test_writing_while_items_reads_remote_values_raises(many, tmp_path, monkeypatch):
    monkeypatch.setattr(objects, "MIN_REQUEST", 16 * 1024)
    conn, data, _ = many
    with ebooklet.open(conn, tmp_path / "r.blt", "w") as db:
        items = iter(db.items())
        next(items)
        db["new"] = b"x"
        with pytest.raises(RuntimeError, match="written"):
            list(items)


def test_a_key_read_by_another_thread_during_items_is_still_yielded_once(many, tmp_path, monkeypatch):
    monkeypatch.setattr(objects, "MIN_REQUEST", 16 * 1024)
    conn, data, _ = many
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        items = iter(db.items())
        first = next(items)
        later = max(data)
        reader = threading.Thread(target=lambda: db[later])
        reader.start()
        reader.join()
        rest = list(items)
        keys = [first[0]] + [k for k, _ in rest]
        assert len(keys) == len(set(keys)) == len(data)
        assert dict([first, *rest]) == data


def test_load_items_reports_progress_to_the_end(many, tmp_path):
    conn, data, _ = many
    seen: list[ebooklet.Progress] = []
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert db.load_items(progress=seen.append) == len(data)
    last = seen[-1]
    assert (last.phase, last.keys_done, last.keys_total) == ("download", len(data), len(data))
    assert last.bytes_done == last.bytes_total == sum(map(len, data.values()))


def test_a_corrupt_value_stops_a_bulk_read_and_is_not_cached(tmp_path):
    conn = tmp_path / "remote" / "db"
    data = _values(500, 100)
    _push(conn, tmp_path / "w.blt", data)
    [segment] = (tmp_path / "remote" / "db.ebooklet" / "seg").iterdir()
    body = bytearray(segment.read_bytes())
    body[250 * 100] ^= 0xFF  # the first byte of the 251st value (values go in key order)
    segment.write_bytes(bytes(body))
    bad = sorted(data)[250]
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        with pytest.raises(ebooklet.IntegrityError, match=f"{bad!r}.*content hash"):
            db.load_items()
    with booklet.open(tmp_path / "r.blt") as local:
        assert bad not in local
        assert sorted(data)[249] in local  # what was fetched and checked before it is kept


# -- fetched values go into the local file in bulk -------------------------------------------


def _bulk_session(path: pathlib.Path, n_buckets: int, seed: int) -> dict[str, tuple[int, bytes]]:
    """Mixed one-by-one and bulk writes (overwrites, repeats within a batch, dropped keys
    written again, a small write buffer), returning what each key should hold."""
    from ebooklet.local import LocalStore

    rng = random.Random(seed)
    store = LocalStore(path, create=True, n_buckets=n_buckets, buffer_size=2048)  # flushes often
    expect: dict[str, tuple[int, bytes]] = {}

    def one(key: str) -> None:
        ts, raw = rng.randrange(1, 2**55), rng.randbytes(rng.randrange(0, 300))
        store.put_raw(key, raw, ts)  # stays in booklet's buffer until the next bulk write
        expect[key] = (ts, raw)

    def bulk(n: int) -> None:
        batch = [
            (f"k{rng.randrange(400)}", rng.randbytes(rng.randrange(0, 300)), rng.randrange(1, 2**55))
            for _ in range(n)
        ]
        store.put_raw_many(batch)
        expect.update((k, (ts, raw)) for k, raw, ts in batch)

    for _ in range(300):
        one(f"k{rng.randrange(400)}")
    bulk(500)
    len(store)  # a sync: a small table is re-indexed here, and later writes use the new one
    for i in range(0, 400, 7):
        store.drop(f"k{i}")
        expect.pop(f"k{i}", None)
    one("k7")
    bulk(800)
    for key, want in expect.items():
        assert store.get_raw(key) == want, key
    assert len(store) == len(expect)
    store.close()
    return expect


@pytest.mark.parametrize("n_buckets", [5, 12007])
def test_entries_written_past_booklet_make_the_file_booklet_makes(tmp_path, monkeypatch, n_buckets):
    from ebooklet.local import fastwrite, layout

    monkeypatch.setattr(fastwrite, "_BULK_CHUNK", 4096)  # several chunks per batch
    expect = _bulk_session(tmp_path / "bulk.blt", n_buckets, seed=3)
    monkeypatch.setattr(fastwrite, "capable", lambda db: False)
    assert _bulk_session(tmp_path / "plain.blt", n_buckets, seed=3) == expect
    for name in ("bulk.blt", "plain.blt"):
        assert layout.inspect(tmp_path / name).problems == []
        with booklet.open(tmp_path / name) as db:
            got = {k: (ts, v) for k, ts, v in db.timestamps(include_value=True, decode_value=False)}
            assert got == expect
            assert len(db) == len(expect)


# -- large new databases: the local file's hash table ----------------------------------------


def _buckets(path: pathlib.Path) -> int:
    """About how many hash buckets an empty booklet file has (6 bytes each after its header)."""
    return path.stat().st_size // 6


def test_a_new_database_has_a_table_for_300_000_keys(tmp_path):
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "n"):
        pass
    assert 300_000 <= _buckets(tmp_path / "a.blt") < 500_000


def test_n_buckets_sizes_a_new_local_file(tmp_path):
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "n", n_buckets=1_000_003):
        pass
    assert _buckets(tmp_path / "a.blt") == pytest.approx(1_000_003, rel=0.01)


def test_a_copy_of_a_remote_is_sized_for_its_keys(many, tmp_path):
    conn, data, _ = many
    with ebooklet.open(conn, tmp_path / "r.blt", "r"):
        pass
    assert len(data) <= _buckets(tmp_path / "r.blt") <= 1.3 * len(data)


def test_buffer_size_sets_how_much_booklet_holds_before_writing(tmp_path):
    values = _values(200, 1000)
    sizes = {}
    for buffer_size in (None, 4096):
        path = tmp_path / f"{buffer_size}.blt"
        with ebooklet.open(tmp_path / "remote" / f"{buffer_size}", path, "n", buffer_size=buffer_size) as db:
            empty = path.stat().st_size
            db.update(values)
            sizes[buffer_size] = path.stat().st_size - empty
    assert sizes[None] == 0  # 200 KB fit in booklet's default 4 MiB buffer
    assert sizes[4096] >= 190_000
