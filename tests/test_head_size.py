"""An object named like a head is read with a bounded request (issue 11, problem 10).

A 200 MB object that is not an ebooklet head used to be downloaded whole (441 MB of memory)
before being refused. Now every open reads at most the first MiB of it: the client's peak
memory stays small, and the error says the object is not an ebooklet head. The reading
process is a child, so that the server's memory (moto runs in the test process) is not
counted.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

import ebooklet
from ebooklet.format import MAX_HEAD_BYTES
from ebooklet.sync.heads import HEAD_READ_BYTES

from .conftest import RemoteKind
from .subprocs import conn_code, python
from .test_cli import ebk, error_line

BIG = 200 * 1024 * 1024


def _sparse(path: pathlib.Path, size: int) -> pathlib.Path:
    """A file of ``size`` bytes that takes no disk space and no time to write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _place_big_object(remote: RemoteKind, tmp_path: pathlib.Path) -> ebooklet.S3Connection | pathlib.Path:
    """A BIG object of zeros where a database's head would be."""
    conn = remote.conn()
    if isinstance(conn, pathlib.Path):
        _sparse(conn, BIG)
        return conn
    assert remote.server is not None
    with open(_sparse(tmp_path / "big.bin", BIG), "rb") as body:  # streamed from the sparse file
        remote.server.admin_client.put_object(Bucket=conn.bucket, Key=conn.db_key, Body=body)
    return conn


def _open_in_a_child(conn: ebooklet.S3Connection | pathlib.Path, tmp_path: pathlib.Path) -> dict:
    """Open the database in a child three times (read, write, remote_info), as every way in
    must refuse it; report each error and the child's peak traced memory."""
    proc = python(f"""
        import json, tracemalloc
        import ebooklet
        tracemalloc.start()
        conn = {conn_code(conn)}
        errors = []
        for flag in ("r", "c"):
            try:
                ebooklet.open(conn, {str(tmp_path / "local.blt")!r}, flag).close()
            except ebooklet.EbookletError as exc:
                errors.append([type(exc).__name__, str(exc)])
        try:
            ebooklet.remote_info(conn)
        except ebooklet.EbookletError as exc:
            errors.append([type(exc).__name__, str(exc)])
        print(json.dumps({{"errors": errors, "peak": tracemalloc.get_traced_memory()[1]}}))
    """)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.mark.parametrize("remote", ["folder", "moto"], indirect=True)
def test_an_oversized_object_at_the_head_key_is_refused_without_downloading_it(
    remote: RemoteKind, tmp_path: pathlib.Path
) -> None:
    conn = _place_big_object(remote, tmp_path)
    report = _open_in_a_child(conn, tmp_path)
    assert len(report["errors"]) == 3
    for name, message in report["errors"]:
        assert name == "RemoteFormatError"
        assert "is not an ebooklet head" in message and "209,715,200 bytes" in message, message
        assert "Check the db_key or URL" in message
    # Each of the three reads moved at most HEAD_READ_BYTES; the whole object was never held.
    assert report["peak"] < 4 * HEAD_READ_BYTES + 2 * 1024 * 1024, report["peak"]
    assert not (tmp_path / "local.blt").exists()  # nothing made of it either


def test_the_head_command_reads_only_the_start_of_an_oversized_object(tmp_path: pathlib.Path) -> None:
    from .httpserver import FileServer

    _sparse(tmp_path / "site" / "video.mp4", MAX_HEAD_BYTES + 1024)
    with FileServer(tmp_path / "site") as server:
        run = ebk(tmp_path, "head", server.url("video.mp4"))
        assert error_line(run) == (
            f"ebooklet: error: {server.url('video.mp4')} is not an ebooklet database: the object at its "
            "key 'video.mp4' is not an ebooklet head (it is 134,218,752 bytes, and a head is at most "
            "8,388,608 (for its index parts)); it was not downloaded. Check the db_key or URL\n"
        )
        assert [(r.method, r.range) for r in server.log] == [("GET", f"bytes=0-{HEAD_READ_BYTES - 1}")]


def test_a_large_object_that_does_not_start_like_a_head_is_refused_after_one_read(
    tmp_path: pathlib.Path,
) -> None:
    remote = tmp_path / "remote" / "data.bin"
    remote.parent.mkdir()
    remote.write_bytes(b"\x00" + os.urandom(15) + b"x" * (2 * HEAD_READ_BYTES))  # never "{"
    with pytest.raises(ebooklet.RemoteFormatError, match="does not start like a head"):
        ebooklet.open(remote, tmp_path / "local.blt", "r")


@pytest.mark.parametrize("remote", ["folder", "moto"], indirect=True)
def test_a_legitimate_head_larger_than_one_read_still_opens(
    remote: RemoteKind, tmp_path: pathlib.Path
) -> None:
    conn = remote.conn()
    metadata = {"notes": "n" * (HEAD_READ_BYTES + 1000)}  # the metadata lives in the head
    with ebooklet.open(conn, tmp_path / "a.blt", "n", value_serializer="json") as db:
        db["k"] = 1
        db.set_metadata(metadata)
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "b.blt", "r") as db:
        assert db["k"] == 1 and db.get_metadata() == metadata
        before = db.stats.requests
        assert not list(db.changes().iter_changes())
        assert db.stats.requests - before == 1  # the ETag still answers 304 in one request
