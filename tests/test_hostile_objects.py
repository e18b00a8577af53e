"""Every object a remote holds is untrusted input: index parts, values, heads, a serializer
switched under the same uuid, redirects, and keys printed on a terminal."""

from __future__ import annotations

import json
import pathlib
import tracemalloc
import zlib

import msgpack
import pytest

import ebooklet
from ebooklet import format
from ebooklet.format import Part, checksum, part_of

from .httpserver import FileServer
from .subprocs import conn_code, python
from .test_cli import ebk

CID = "18c0ffee000000-0123456789ab"


def _part_blob(payload: dict) -> bytes:
    body = zlib.compress(msgpack.packb(payload, use_bin_type=True), 9)
    return b"EBKI" + checksum(body) + body


def _payload(keys: list[str]) -> dict:
    n = len(keys)
    return {"v": 2, "keys": keys, "segs": [f"seg/{CID}-0"], "ts": b"\x00" * 8 * n,
            "hash": b"\x00" * 16 * n, "seg": b"\x00" * 4 * n, "off": b"\x00" * 8 * n,
            "len": b"\x00" * 4 * n}


def test_a_part_claiming_more_keys_than_the_split_rule_allows_is_refused_before_it_is_built():
    keys = [f"{i:x}" for i in range(200_000)]  # twice the most a part may hold, from ~1 MB
    blob = _part_blob(_payload(keys))
    del keys
    tracemalloc.start()
    try:
        with pytest.raises(ebooklet.RemoteFormatError, match="max_array_len"):
            Part.decode(blob, f"index/0-0-{CID}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, peak


def test_a_key_in_the_wrong_part_is_refused():
    keys = sorted(f"k{i}" for i in range(20))
    assert {part_of(k, 1) for k in keys} == {0, 1}
    with pytest.raises(ebooklet.RemoteFormatError, match="belongs to another index part than 0 of 2"):
        Part.decode(_part_blob(_payload(keys)), f"index/1-0-{CID}")
    mine = [k for k in keys if part_of(k, 1) == 0]
    assert Part.decode(_part_blob(_payload(mine)), f"index/1-0-{CID}").keys == mine


def _seed(tmp_path: pathlib.Path, serializer: str = "json") -> pathlib.Path:
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer=serializer) as db:
        db["a"] = 1 if serializer == "json" else b"1"
        db.changes().push()
    return conn


def test_an_oversized_index_part_is_refused_without_downloading_it(tmp_path):
    conn = _seed(tmp_path)
    [name] = json.loads(conn.read_bytes())["parts"]
    with open(conn.with_name("db.blt.ebooklet") / name, "r+b") as f:
        f.truncate(3 * 1024**3)  # sparse
    tracemalloc.start()
    try:
        with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
            with pytest.raises(ebooklet.RemoteFormatError, match="it was not downloaded"):
                db["a"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak


def test_a_head_nested_too_deeply_or_with_oversized_metadata_is_a_remote_format_error(tmp_path):
    conn = _seed(tmp_path)
    head = json.loads(conn.read_bytes())
    conn.write_bytes(conn.read_bytes()[:-1] + b',"metadata":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(ebooklet.RemoteFormatError, match="nested too deeply"):
        ebooklet.open(conn, tmp_path / "r1.blt", "r")
    head["metadata"] = "m" * (format.MAX_METADATA_BYTES + 1)
    conn.write_bytes(json.dumps(head).encode())
    with pytest.raises(ebooklet.RemoteFormatError, match="'metadata' is .* bytes of JSON, more than"):
        ebooklet.open(conn, tmp_path / "r2.blt", "r")


@pytest.mark.parametrize("bits", [0, 20])
def test_a_head_padded_beyond_its_index_parts_is_refused_without_parsing_it(tmp_path, bits):
    conn = _seed(tmp_path)
    head = conn.read_bytes().replace(b'"part_bits":0', b'"part_bits":%d' % bits)
    padded = head[:-1] + b',"pad":"' + b"x" * (format.HEAD_BASE_BYTES + 10) + b'"}'
    conn.write_bytes(padded)
    # Small part_bits: too large for a head at all; many: only its part names may be that large.
    why = "for its index parts" if bits == 0 else "are not index part names|not a list of index part"
    with pytest.raises(ebooklet.RemoteFormatError, match=why):
        ebooklet.open(conn, tmp_path / "r.blt", "r")


def test_a_remote_that_switches_its_serializer_under_the_same_uuid_is_refused(tmp_path):
    conn = _seed(tmp_path)
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        assert db["a"] == 1
    with ebooklet.open(conn, tmp_path / "writer.blt", "w") as db:
        db["b"] = 2
        db.changes().push()
    head = json.loads(conn.read_bytes())
    head["value_serializer"] = "msgpack"
    conn.write_bytes(json.dumps(head).encode())
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        with pytest.raises(ebooklet.SerializerMismatchError, match="now stores values with serializer"):
            db.changes().pull()
        with pytest.raises(ebooklet.SerializerMismatchError):
            list(db.changes().iter_changes())
        assert db["a"] == 1  # the local copy is intact, and not "damaged"


def test_a_public_url_follows_redirects_only_within_its_host_and_scheme(tmp_path):
    conn = tmp_path / "site" / "data" / "db.blt"
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="json") as db:
        db["a"] = 1
        db.changes().push()
    with FileServer(tmp_path / "site") as server:
        server.redirects["/moved/"] = "/data/"
        with ebooklet.open(server.url("moved/db.blt"), tmp_path / "r1.blt", "r") as db:
            assert db["a"] == 1
        server.redirects.clear()
        server.redirects["/data/"] = "http://127.0.0.2:9/data/"
        with pytest.raises(ebooklet.RemoteAccessError, match="another host or scheme"):
            ebooklet.open(server.url("data/db.blt"), tmp_path / "r2.blt", "r")
        assert [r.path for r in server.log][-1] == "/data/db.blt"  # nothing went elsewhere


def test_keys_are_escaped_on_the_terminal_unless_raw_or_json(tmp_path):
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="json") as db:
        db.update({"\x1b[2Jclear": 1, "two\nlines": 2, "plain": 3})
        db.changes().push()
    run = ebk(tmp_path, "keys", str(conn))
    assert run.code == 0, run.err
    assert run.out.splitlines() == ["'\\x1b[2Jclear'", "plain", "'two\\nlines'"]
    raw = ebk(tmp_path, "keys", str(conn), "--raw")
    assert raw.out == "\x1b[2Jclear\nplain\ntwo\nlines\n"
    as_json = ebk(tmp_path, "keys", str(conn), "--json")
    assert json.loads(as_json.out) == ["\x1b[2Jclear", "plain", "two\nlines"]


@pytest.mark.parametrize("target", ["part", "log", "lease"])
def test_reading_a_hostile_object_of_any_size_stays_under_256_mb_in_a_child(tmp_path, target):
    conn = _seed(tmp_path)
    with ebooklet.open(conn, tmp_path / "writer.blt", "w") as db:
        db["b"] = 2
        db.changes().push()
    prefix = conn.with_name("db.blt.ebooklet")
    head = json.loads(conn.read_bytes())
    path = {
        "part": prefix / head["parts"][0],
        "log": sorted((prefix / "log").iterdir())[0],
        "lease": prefix / "lease",
    }[target]
    with open(path, "wb") as f:
        f.truncate(3 * 1024**3)  # sparse: costs its writer nothing
    child = python(f"""
        import json, tracemalloc
        import ebooklet
        tracemalloc.start()
        conn = {conn_code(conn)}
        errors = []
        def attempt(fn):
            try:
                fn()
            except ebooklet.EbookletError as exc:
                errors.append(type(exc).__name__)
        def read():
            with ebooklet.open(conn, {str(tmp_path / "reader.blt")!r}, "r") as db:
                dict(db.items())
                db.log()
        def push():
            with ebooklet.open(conn, {str(tmp_path / "writer.blt")!r}, "w", lock_wait=2) as db:
                db["c"] = 3
                db.changes().push()
        attempt(read)
        attempt(push)
        attempt(lambda: ebooklet.verify(conn))
        attempt(lambda: ebooklet.gc(conn, min_age=0))
        attempt(lambda: ebooklet.open(conn, {str(tmp_path / "at.blt")!r}, "r", at=1).close())
        print(json.dumps({{"errors": errors, "peak": tracemalloc.get_traced_memory()[1]}}))
    """)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    report = json.loads(out)
    assert report["peak"] < 256 * 1024 * 1024, report
    assert report["errors"], report  # the object is refused somewhere, with an ebooklet error
