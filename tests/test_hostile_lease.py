"""The lease object is untrusted input: a forged or damaged one never blocks, breaks or
corrupts a database; it is treated as expired (with a warning), or broken on request."""

from __future__ import annotations

import json
import logging
import os
import pathlib

import pytest

import ebooklet
from ebooklet.format import Head

from .test_cli import ebk

HOSTILE = {
    "token at the top": {"owner": "x", "expires": 0, "token": 2**63 - 1},
    "negative token": {"owner": "x", "expires": 10**18, "token": -5},
    "expiry far ahead": {"owner": "x", "expires": 2**62, "token": 3},
    "expiry past any date": {"owner": "x", "expires": 10**30, "token": 3},
    "owner with terminal escapes": {"owner": "\x1b[2Jroot\nforged", "expires": 2**40 * 10**6, "token": 3},
    "not a mapping": [1, 2, 3],
    "deeply nested": "[" * 4000,
    "not JSON": "\xff\x00garbage",
}


def _seed(tmp_path: pathlib.Path) -> pathlib.Path:
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="json") as db:
        db["a"] = 1
        db.changes().push()
        db["b"] = 2
        db.changes().push()  # the head now carries a lease token of 2
    return conn


def _lease(conn: pathlib.Path) -> pathlib.Path:
    return conn.with_name(conn.name + ".ebooklet") / "lease"


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_forged_lease_is_treated_as_expired_and_the_next_commit_is_readable(tmp_path, kind, caplog):
    conn = _seed(tmp_path)
    value = HOSTILE[kind]
    _lease(conn).write_bytes(value.encode("utf-8", "surrogateescape") if isinstance(value, str)
                             else json.dumps(value).encode())
    with caplog.at_level(logging.WARNING, logger="ebooklet"), ebooklet.open(
        conn, tmp_path / "a.blt", "w", value_serializer="json", lock_wait=5
    ) as db:
        db["c"] = 3
        assert db.changes().push().committed
    assert any("treated as expired" in r.getMessage() for r in caplog.records)
    assert not any("\x1b" in r.getMessage() for r in caplog.records)
    head = Head.decode(conn.read_bytes())
    assert 0 < head.lease_token < 2**63 - 1
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r") as fresh:
        assert dict(fresh.items()) == {"a": 1, "b": 2, "c": 3}
    with ebooklet.open(conn, tmp_path / "a.blt", "w", value_serializer="json", lock_wait=5) as db:
        db["d"] = 4
        assert db.changes().push().committed  # and the one after


def test_an_oversized_lease_is_refused_unread_and_broken_on_request(tmp_path):
    conn = _seed(tmp_path)
    with open(_lease(conn), "wb") as f:
        f.truncate(3 * 1024**3)  # sparse: costs its writer nothing
    with ebooklet.open(conn, tmp_path / "a.blt", "w", value_serializer="json", lock_wait=5) as db:
        db["c"] = 3
        with pytest.raises(ebooklet.RemoteFormatError, match="--break-lease"):
            db.changes().push()
    run = ebk(tmp_path, "push", str(conn), str(tmp_path / "a.blt"), "--break-lease")
    assert run.code == 0, run.err
    assert "broke the lock" in run.err
    assert os.path.getsize(_lease(conn)) < 1024
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r") as fresh:
        assert fresh["c"] == 3


def test_a_writer_whose_lease_was_taken_over_still_cannot_commit(tmp_path):
    # The fence moves past a lost token only with a write conditional on our own lease.
    from ebooklet.lock import Lease
    from ebooklet.remote import connect

    conn = _seed(tmp_path)
    remote = connect(conn)
    stale = Lease(remote, ttl=60)
    stale.acquire()
    Lease(remote).break_lease()
    thief = Lease(remote, ttl=60)
    thief.acquire()
    with pytest.raises(ebooklet.LeaseLostError):
        stale.advance(10)
    thief.release()


def test_ebooklet_never_writes_a_head_it_would_refuse(tmp_path):
    from ebooklet.remote import connect
    from ebooklet.sync.heads import HeadStore

    conn = _seed(tmp_path)
    before = conn.read_bytes()
    heads = HeadStore(connect(conn))
    head, etag = heads.read_latest()
    assert head is not None
    head.lease_token = 2**63  # what taking over a lease of token 2**63 - 1 used to record
    with pytest.raises(ebooklet.RemoteFormatError, match="'lease_token'"):
        heads.commit(head, etag)
    assert conn.read_bytes() == before
