"""Remote strings mean the same database, and are refused the same way, in Python and on the
command line: both go through :func:`ebooklet.remote.url.parse_remote`."""

from __future__ import annotations

import pathlib

import pytest

import ebooklet
from ebooklet.remote import connect
from ebooklet.remote.url import S3Options, parse_remote, remote_location

CLI = S3Options()  # what the command line passes: s3:// strings accepted


def test_each_form_names_a_database(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_remote("https://cdn.example.com/data/db.blt") == "https://cdn.example.com/data/db.blt"
    assert parse_remote("bucket/db.blt") == tmp_path / "bucket" / "db.blt"
    assert parse_remote(pathlib.Path("bucket/db.blt")) == tmp_path / "bucket" / "db.blt"
    assert parse_remote((tmp_path / "db.blt").as_uri()) == tmp_path / "db.blt"
    assert parse_remote("file://localhost/srv/my%20db.blt") == pathlib.Path("/srv/my db.blt")


def test_python_and_the_command_line_locate_a_string_alike(tmp_path: pathlib.Path) -> None:
    for text in ["https://cdn.example.com/db.blt", str(tmp_path / "bucket" / "db.blt")]:
        remote = connect(text)
        assert remote.location == remote_location(parse_remote(text, s3=CLI))
        remote.transport.close()


def test_an_s3_url_becomes_a_connection_with_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    options = S3Options("AKID", "topsecret", endpoint_url="http://127.0.0.1:9000", region="nz", retries=7)
    conn = parse_remote("s3://my-bucket/data/db.blt", s3=options)
    assert isinstance(conn, ebooklet.S3Connection)
    assert (conn.bucket, conn.db_key, conn.endpoint_url) == ("my-bucket", "data/db.blt", "http://127.0.0.1:9000")
    assert (conn.region, conn.retries, conn.has_credentials) == ("nz", 7, True)
    assert remote_location(conn) == "s3://my-bucket/data/db.blt (http://127.0.0.1:9000)"
    assert "topsecret" not in remote_location(conn) + repr(conn)


def test_an_s3_url_in_python_points_to_s3connection(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"use ebooklet\.S3Connection"):
        ebooklet.open("s3://my-bucket/db.blt", tmp_path / "a.blt", "c")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the remote is empty"),
        ("ftp://host/db", "unsupported remote 'ftp://host/db'"),
        ("https://cdn.example.com/", "must be the URL of the database object"),
        ("file://host/db", "must be a local file URL"),
        ("bucket/", "the remote path 'bucket/' must name the database inside a folder, e.g. bucket/db.blt"),
        ("file:///srv/", "e.g. file:///srv/db.blt"),
        (".", "e.g. ./db.blt"),
        ("/", "e.g. /db.blt"),
    ],
)
def test_a_string_naming_no_database_is_refused_alike(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        connect(text)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        parse_remote(text, s3=CLI)


@pytest.mark.parametrize("text", ["s3://bucket", "s3://bucket/", "s3:///db", "s3://bucket/dir/"])
def test_an_s3_url_names_a_bucket_and_a_key(text: str) -> None:
    with pytest.raises(ValueError, match="must name a bucket and an object key"):
        parse_remote(text, s3=CLI)
