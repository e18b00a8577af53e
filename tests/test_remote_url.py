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


def test_an_s3_url_in_python_without_credentials_says_where_it_looked(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ValueError, match=r"no credentials for s3://my-bucket/db\.blt.*AWS_ACCESS_KEY_ID"):
        ebooklet.open("s3://my-bucket/db.blt", tmp_path / "a.blt", "c")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text, kind, fields",
    [
        ("s3://my-bucket/data/db.blt", ebooklet.S3Connection, ("my-bucket", "data/db.blt")),
        ("gs://my-bucket/data/db.blt", ebooklet.GCSConnection, ("my-bucket", "data/db.blt")),
        ("az://my-container/data/db.blt", ebooklet.AzureConnection, ("my-container", "data/db.blt")),
    ],
)
def test_each_cloud_scheme_becomes_its_connection_in_python_and_on_the_command_line(
    text: str, kind: type, fields: tuple[str, str]
) -> None:
    for conn in (parse_remote(text), parse_remote(text, s3=CLI)):
        assert isinstance(conn, kind)
        assert (getattr(conn, "bucket", None) or conn.container, conn.db_key) == fields
        assert remote_location(conn).startswith(text)


def test_gcs_takes_its_emulator_from_storage_emulator_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")
    conn = parse_remote("gs://b/db.blt")
    assert (conn.endpoint_url, conn.anonymous) == ("http://127.0.0.1:4443", True)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    conn = parse_remote("gs://b/db.blt")
    assert (conn.endpoint_url, conn.anonymous) == (None, False)  # Google itself, with credentials


def test_azure_takes_its_account_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "AccountName=dev;AccountKey=c2VjcmV0;BlobEndpoint=http://127.0.0.1:10000/dev;")
    conn = parse_remote("az://c/db.blt")
    assert conn.account_url == "http://127.0.0.1:10000/dev"
    assert "c2VjcmV0" not in repr(conn) + remote_location(conn) + str(conn.to_dict())
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "myaccount")
    assert parse_remote("az://c/db.blt").account_url == "https://myaccount.blob.core.windows.net"


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


@pytest.mark.parametrize(
    "text", ["s3://bucket", "s3://bucket/", "s3:///db", "s3://bucket/dir/", "gs://bucket", "gs:///db"]
)
def test_an_s3_or_gs_url_names_a_bucket_and_a_key(text: str) -> None:
    for options in (None, CLI):
        with pytest.raises(ebooklet.InvalidArgumentError, match="must name a bucket and an object key"):
            parse_remote(text, s3=options)


@pytest.mark.parametrize("text", ["az://container", "az://container/dir/", "az:///db"])
def test_an_az_url_names_a_container_and_a_key(text: str) -> None:
    with pytest.raises(ebooklet.InvalidArgumentError, match=r"must name a container and an object key, e\.g\. az://"):
        parse_remote(text)


@pytest.mark.parametrize("text", ["ftp://host/db.blt", "gcs://bucket/db.blt", "abfs://c/db.blt"])
def test_an_unknown_scheme_is_an_invalid_argument_listing_every_form(
    text: str, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(ebooklet.InvalidArgumentError) as info:
        ebooklet.open(text, tmp_path / "a.blt", "c")
    for form in ("s3://BUCKET/KEY", "gs://BUCKET/KEY", "az://CONTAINER/KEY", "http(s)://", "file:///PATH"):
        assert form in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_something_that_is_no_remote_is_an_argument_type_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ebooklet.ArgumentTypeError, match="GCSConnection or AzureConnection, not int"):
        ebooklet.open(42, tmp_path / "a.blt", "c")
