"""The fast write path against booklet's own ``set``: the same sessions make the same files.

The fast path (ebooklet/local/fastwrite.py) writes entries into booklet's layout by hand. It
runs only with the booklet releases the project tested and files of the header version those
write; these tests pin both rules and compare the two paths on random sessions with the
booklet the project pins.
"""

from __future__ import annotations

import os
import pathlib
import random

import booklet
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ebooklet
from ebooklet.local import fastwrite, layout
from ebooklet.local.datafile import DataFile

KEYS = st.sampled_from([f"k{i}" for i in range(60)] + ["ключ", "a" * 300, ""])
VALUES = st.binary(max_size=300)
STAMPS = st.integers(min_value=0, max_value=2**56 - 1)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, VALUES, STAMPS),
        st.tuples(st.just("many"), st.lists(st.tuples(KEYS, VALUES, STAMPS), max_size=40)),
        st.tuples(st.just("drop"), KEYS),
        st.tuples(st.just("flush")),
    ),
    max_size=60,
)


def _session(path: pathlib.Path, steps: list, n_buckets: int, fast: bool) -> dict[str, tuple[int, bytes]]:
    data = DataFile(path, "n", None, n_buckets, buffer_size=1024)
    data._fast = fast and fastwrite.capable(data._db)
    assert data.fast == fast
    for step in steps:
        if step[0] == "put":
            data.put(step[1], step[2], step[3])
        elif step[0] == "many":
            data.put_many(step[1])
        elif step[0] == "drop":
            data.delete(step[1])
        else:
            data.flush()
    data.sync()
    data.close()
    with booklet.open(path) as db:
        return {k: (ts, v) for k, ts, v in db.timestamps(include_value=True, decode_value=False)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, n_buckets=st.sampled_from([1, 7, 12007]))
def test_the_fast_path_and_booklets_set_make_the_same_file(tmp_path, steps, n_buckets):
    fast = tmp_path / f"fast-{os.urandom(4).hex()}.blt"
    plain = tmp_path / f"plain-{os.urandom(4).hex()}.blt"
    got_fast = _session(fast, steps, n_buckets, fast=True)
    got_plain = _session(plain, steps, n_buckets, fast=False)
    assert got_fast == got_plain
    assert layout.inspect(fast).problems == []
    assert layout.inspect(plain).problems == []


def test_the_fast_path_runs_only_with_a_tested_booklet(tmp_path, monkeypatch):
    data = DataFile(tmp_path / "a.blt", "n")
    try:
        assert layout.booklet_version() in layout.TESTED_BOOKLET
        assert fastwrite.capable(data._db)
        monkeypatch.setattr(booklet, "__version__", "0.13.0")
        assert not fastwrite.capable(data._db)
    finally:
        data.close()


def test_the_fast_path_runs_only_on_files_of_the_known_header_version(tmp_path):
    path = tmp_path / "a.blt"
    DataFile(path, "n").close()
    with open(path, "r+b") as f:
        f.seek(layout.VERSION_AT)
        f.write((layout.FILE_VERSION - 1).to_bytes(2, "little"))  # a version-4 header
    data = DataFile(path, "w")
    try:
        assert not data.fast
        data.put("k", b"v", 1)  # booklet's own set
        assert data.get_raw("k") == (1, b"v")
    finally:
        data.close()


def test_booklet_is_pinned_to_the_tested_minor_release():
    text = (pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"booklet>=0.12.10,<0.13"' in text
    assert all(v.startswith("0.12.") for v in layout.TESTED_BOOKLET)


@pytest.mark.parametrize("version", ["0.12.9", "0.12.11", "1.0"])
def test_an_untested_booklet_writes_through_its_public_api(tmp_path, monkeypatch, version):
    monkeypatch.setattr(booklet, "__version__", version)
    data = DataFile(tmp_path / "a.blt", "n")
    try:
        assert not data.fast
        data.put_many([("a", b"1", 5), ("b", b"2", 6)])
        assert data.get_raw("b") == (6, b"2")
    finally:
        data.close()


def _short_writes(real):  # type: ignore[no-untyped-def]
    """``os.pwritev`` that writes at most 5,000 bytes a call, as a kernel may."""
    calls = []

    def pwritev(fd: int, buffers: list, offset: int) -> int:
        calls.append(len(buffers))
        joined = b"".join(buffers)[:5000]
        return real(fd, [joined], offset)

    return pwritev, calls


@pytest.mark.parametrize("short", [False, True])
def test_large_values_are_written_from_where_they_are_and_make_the_same_file(tmp_path, monkeypatch, short):
    # Values of 0 to 300 KB in chunks of several buffers (pwritev), some written short.
    rng = random.Random(7)
    sizes = [0, 5, 4096, 70_000, 300_000]
    records = [(f"big-{i % 40}", rng.randbytes(rng.choice(sizes)), i) for i in range(120)]
    steps = [("many", records[:50]), ("put", "small", b"x", 1), ("many", records[50:])]
    monkeypatch.setattr(fastwrite, "_IOV_MAX", 7)  # several pwritev calls a chunk
    calls: list[int] = []
    if short:
        pwritev, calls = _short_writes(os.pwritev)
        monkeypatch.setattr(fastwrite.os, "pwritev", pwritev)
    got_fast = _session(tmp_path / "fast.blt", steps, 12007, fast=True)
    got_plain = _session(tmp_path / "plain.blt", steps, 12007, fast=False)
    assert got_fast == got_plain
    assert layout.inspect(tmp_path / "fast.blt").problems == []
    if short:
        assert calls and max(calls) <= 7


@pytest.mark.parametrize("n_buckets", [1, 7, 12007, 360_007])
@pytest.mark.parametrize("buffer", [6, 100, 2**21])
def test_new_bucket_tables_have_booklets_bytes(n_buckets, buffer):
    """fastwrite.install replaces booklet's bucket-table writer (one bucket per Python step)
    with one that writes a buffer at a time: the same bytes, at the same place, leaving the
    file at the same position."""
    import io

    assert booklet.utils.write_init_bucket_indexes is fastwrite.init_bucket_indexes
    theirs, ours = io.BytesIO(b"h" * 300), io.BytesIO(b"h" * 300)
    fastwrite.booklets_init_bucket_indexes(theirs, n_buckets, 200, buffer)
    fastwrite.init_bucket_indexes(ours, n_buckets, 200, buffer)
    assert ours.getvalue() == theirs.getvalue()
    assert ours.tell() == theirs.tell() == 200 + 6 * n_buckets


def test_a_new_file_is_the_file_booklet_makes(tmp_path, monkeypatch):
    with booklet.open(tmp_path / "ours.blt", "n", n_buckets=360_007):
        pass
    monkeypatch.setattr(booklet.utils, "write_init_bucket_indexes", fastwrite.booklets_init_bucket_indexes)
    with booklet.open(tmp_path / "theirs.blt", "n", n_buckets=360_007):
        pass
    ours, theirs = (tmp_path / "ours.blt").read_bytes(), (tmp_path / "theirs.blt").read_bytes()
    assert len(ours) == len(theirs)
    # The header holds a creation time and the file's uuid: the rest is the same.
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same > len(ours) - 64


def test_the_hash_table_grows_while_keys_are_written_not_at_the_next_push(tmp_path):
    """booklet grows a file's table only when the file is synced. A file made for a small
    remote (12,007 buckets) that then takes many keys grows as soon as its keys outnumber its
    buckets, as a sync would, instead of every write walking longer chains until the push."""
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(remote, tmp_path / "seed.blt", "n") as db:
        db["seed"] = b"s"
        db.changes().push()
    local = tmp_path / "bulk.blt"
    with ebooklet.open(remote, local, "w", buffer_size=64 * 1024) as db:
        assert layout.inspect(local).n_buckets == 12007
        for i in range(13_000):
            db[f"station-{i:06d}"] = b"v" * 10
        assert layout.inspect(local).n_buckets == 144013  # before any push or close
        assert db.changes().push().keys[:1] == ["station-000000"]
    with ebooklet.open(remote, tmp_path / "check.blt", "r") as db:
        assert len(db) == 13_001 and db["station-012999"] == b"v" * 10
