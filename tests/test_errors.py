"""Bad input gets a clear error and changes nothing."""

from __future__ import annotations

import json

import booklet
import pytest

import ebooklet
from ebooklet.format import FORMAT_VERSION
from ebooklet.remote import connect


def test_a_key_that_is_not_str_is_a_type_error_naming_the_type(tmp_path):
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "c") as db:
        for bad in (1, b"bytes", None, ("t",)):
            with pytest.raises(TypeError, match=f"keys must be str, not {type(bad).__name__}"):
                db[bad] = b"v"
            with pytest.raises(TypeError):
                db[bad]
        assert len(db) == 0


def test_an_unknown_flag_is_refused_before_anything_is_created(tmp_path):
    with pytest.raises(ValueError, match="flag must be one of 'r', 'w', 'c', 'n'"):
        ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "x")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_value_serializer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown value_serializer 'pickel'"):
        ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "c", value_serializer="pickel")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["r", "w"])
def test_opening_an_existing_database_that_exists_nowhere_says_to_use_c(tmp_path, flag):
    with pytest.raises(FileNotFoundError, match="flag='c'"):
        ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", flag)
    assert list(tmp_path.iterdir()) == []


def test_a_remote_of_the_wrong_type_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="S3Connection"):
        ebooklet.open(42, tmp_path / "a.blt", "c")


def test_wrong_credentials_are_refused_by_seaweedfs_and_nothing_is_created(seaweedfs_server, tmp_path):
    bucket = seaweedfs_server.make_bucket()
    conn = ebooklet.S3Connection("AKIDWRONG", "wrong-secret", "dbs/x", bucket,
                                 endpoint_url=seaweedfs_server.endpoint_url, retries=0)
    with pytest.raises(ebooklet.RemoteAccessError, match="credentials"):
        ebooklet.open(conn, tmp_path / "a.blt", "c")
    assert list(tmp_path.iterdir()) == []
    assert "wrong-secret" not in repr(conn)


def test_an_unreachable_remote_is_reported_as_unavailable(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = ebooklet.S3Connection("id", "secret", "db", "bucket", endpoint_url=f"http://127.0.0.1:{port}",
                                 retries=0)
    with pytest.raises(ebooklet.RemoteUnavailableError, match=f"could not connect to 127.0.0.1:{port}"):
        ebooklet.open(conn, tmp_path / "a.blt", "c")
    assert list(tmp_path.iterdir()) == []


def test_a_remote_written_by_a_newer_format_is_refused_with_upgrade_advice(remote, tmp_path):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db["k"] = b"v"
        db.changes().push()
    target = connect(conn)
    head = json.loads(target.transport.get(target.db_key).data)
    head["version"] = FORMAT_VERSION + 1
    target.transport.put(target.db_key, json.dumps(head).encode())
    with pytest.raises(ebooklet.UnsupportedFormatError, match="pip install -U ebooklet"):
        ebooklet.open(conn, tmp_path / "b.blt", "r")
    assert not (tmp_path / "b.blt").exists()
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as db:  # the synced copy still opens offline
        db["k2"] = b"v2"
        with pytest.raises(ebooklet.UnsupportedFormatError):
            db.changes().push()
        assert db["k2"] == b"v2"


def test_an_object_that_is_not_an_ebooklet_database_is_named_as_such(tmp_path):
    remote = tmp_path / "remote" / "db"
    remote.parent.mkdir()
    remote.write_text("hello")
    with pytest.raises(ebooklet.RemoteFormatError, match="not an ebooklet database"):
        ebooklet.open(remote, tmp_path / "a.blt", "r")


def test_a_value_whose_hash_does_not_match_is_refused_and_not_cached(tmp_path):
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(remote, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.update({"good": "fine", "bad": "flipped"})
        db.changes().push()
    [segment] = (tmp_path / "remote" / "db.ebooklet" / "seg").iterdir()
    data = bytearray(segment.read_bytes())
    at = data.index(b"flipped")
    data[at] ^= 0xFF
    segment.write_bytes(bytes(data))
    with ebooklet.open(remote, tmp_path / "b.blt", "r") as db:
        with pytest.raises(ebooklet.IntegrityError, match="'bad'.*content hash"):
            db["bad"]
        assert db["good"] == "fine"
    with booklet.open(tmp_path / "b.blt") as local:
        assert list(local.keys()) == ["good"]


def test_a_public_url_cannot_be_opened_for_writing(tmp_path):
    with pytest.raises(ebooklet.ReadOnlyError, match="flag='r'"):
        ebooklet.open("https://example.invalid/db", tmp_path / "a.blt", "w")
    assert list(tmp_path.iterdir()) == []


def test_s3_connection_needs_a_bucket_and_key_and_hides_credentials():
    with pytest.raises(ValueError, match="db_key"):
        ebooklet.S3Connection("id", "secret", None, "bucket")
    with pytest.raises(ValueError, match="bucket"):
        ebooklet.S3Connection("id", "secret", "db", "")
    conn = ebooklet.S3Connection("id", "topsecret", "db", "bucket")
    assert "topsecret" not in repr(conn) and "topsecret" not in str(conn.to_dict())


def test_credentials_are_never_written_to_the_remote_or_the_local_state(s3_remote, tmp_path):
    conn = s3_remote.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
        db["k"] = b"v"
        db.changes().push()
    secret = conn.access_key.encode()
    target = connect(conn)
    for key in [target.db_key, *target.transport.list(target.prefix)]:
        assert secret not in target.transport.get(key).data
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
