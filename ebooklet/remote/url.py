"""What a remote written as text means: the one parser of remote strings.

:func:`parse_remote` is shared by :func:`ebooklet.remote.connect` (what Python callers pass to
:func:`ebooklet.open`, :func:`ebooklet.remote_info`, :func:`ebooklet.gc`, ...) and the
command line (its REMOTE argument), so that a string names the same database, with
credentials and endpoints from the same places, and is refused with the same message,
wherever it is given:

``s3://BUCKET/KEY``
    an object in an S3 bucket; an :class:`~ebooklet.S3Connection` whose credentials, region
    and endpoint come from :class:`S3Options`, else the standard AWS chain.
``gs://BUCKET/KEY``
    an object in a Google Cloud Storage bucket; a :class:`~ebooklet.GCSConnection` (Google's
    standard credentials, ``STORAGE_EMULATOR_HOST``).
``az://CONTAINER/KEY``
    a blob in an Azure Blob Storage container; an :class:`~ebooklet.AzureConnection` (the
    ``AZURE_STORAGE_*`` variables, ``DefaultAzureCredential``).
``http(s)://HOST/PATH``
    the public URL of a database's head object (read-only); returned as the string.
``file:///PATH`` or a path
    a database named inside a local folder; returned as an absolute :class:`pathlib.Path`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import urllib.parse
from typing import TypeAlias

from ..errors import InvalidArgumentError
from .clouds import AzureConnection, GCSConnection
from .connection import S3Connection

#: What :func:`parse_remote` returns: a connection to a cloud store, a public URL, or a folder
#: remote's path.
ParsedRemote: TypeAlias = "S3Connection | GCSConnection | AzureConnection | str | pathlib.Path"

#: The accepted forms, as every refusal lists them.
FORMS = (
    "s3://BUCKET/KEY, gs://BUCKET/KEY, az://CONTAINER/KEY, an http(s):// URL (read-only), "
    "file:///PATH or a folder path"
)
_CLOUDS = {"s3": ("a bucket", "BUCKET"), "gs": ("a bucket", "BUCKET"), "az": ("a container", "CONTAINER")}


@dataclasses.dataclass(frozen=True)
class S3Options:
    """What an ``s3://BUCKET/KEY`` string does not say. Unset fields fall back to the standard
    AWS environment variables, as :class:`~ebooklet.S3Connection` documents."""

    access_key_id: str | None = None
    access_key: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    db_url: str | None = None
    retries: int = 3
    profile: str | None = None


def parse_remote(text: str | os.PathLike[str], *, s3: S3Options | None = None) -> ParsedRemote:
    """Turn a remote given as text (or a path object) into a connection.

    Parameters
    ----------
    text : str or os.PathLike
        One of :data:`FORMS`. A path object is always a folder remote.
    s3 : S3Options, optional
        What an ``s3://`` string's connection is built with (the command line's options);
        by default, everything comes from the AWS environment.

    Raises
    ------
    InvalidArgumentError
        A ValueError with a one-line message saying what is wrong and what to give instead.

    Examples
    --------
    >>> parse_remote("https://cdn.example.com/data/big.blt")
    'https://cdn.example.com/data/big.blt'
    >>> parse_remote("file:///srv/bucket/big.blt")
    PosixPath('/srv/bucket/big.blt')
    >>> parse_remote("s3://my-bucket/data/big.blt",
    ...              s3=S3Options("AKID", "SECRET", endpoint_url="http://127.0.0.1:9000"))
    S3Connection(bucket='my-bucket', db_key='data/big.blt', endpoint_url='http://127.0.0.1:9000')
    >>> parse_remote("az://my-container/data/big.blt").db_key
    'data/big.blt'
    >>> parse_remote("ftp://host/db.blt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ebooklet.errors.InvalidArgumentError: unsupported remote 'ftp://host/db.blt': use s3://BUCKET/KEY, ...
    """
    if isinstance(text, os.PathLike):
        return _folder(pathlib.Path(text), os.fspath(text))
    if not isinstance(text, str):
        raise InvalidArgumentError(f"a remote must be a str or a path, not {type(text).__name__}: "
                                   f"give {FORMS}")
    if not text:
        raise InvalidArgumentError(f"the remote is empty: give {FORMS}")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme in _CLOUDS:
        return _cloud(text, parts.scheme, s3 or S3Options())
    if parts.scheme in ("http", "https"):
        if not parts.path.rsplit("/", 1)[-1]:
            raise InvalidArgumentError(f"{text} must be the URL of the database object, not end with '/'")
        return text
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidArgumentError(f"{text} must be a local file URL (file:///path/to/db)")
        return _folder(pathlib.Path(urllib.parse.unquote(parts.path)), text)
    if len(parts.scheme) > 1:  # a one-letter "scheme" is a Windows drive
        raise InvalidArgumentError(f"unsupported remote {text!r}: use {FORMS}")
    return _folder(pathlib.Path(text), text)


def remote_location(conn: ParsedRemote) -> str:
    """Where a parsed remote lives, as shown in messages: never includes credentials."""
    if isinstance(conn, pathlib.Path):
        return conn.as_uri()
    if isinstance(conn, str):
        return conn
    if isinstance(conn, (GCSConnection, AzureConnection)):
        return conn.location
    return f"s3://{conn.bucket}/{conn.db_key} ({conn.endpoint_url or 'aws'})"


def _folder(path: pathlib.Path, text: str) -> pathlib.Path:
    # "bucket/" would otherwise name a database called "bucket" beside the folder meant.
    if not path.name or text.endswith(("/", os.sep)):
        example = text + ("db.blt" if text.endswith(("/", os.sep)) else "/db.blt")
        raise InvalidArgumentError(
            f"the remote path {text!r} must name the database inside a folder, e.g. {example}"
        )
    return path.absolute()


def _cloud(text: str, scheme: str, options: S3Options) -> S3Connection | GCSConnection | AzureConnection:
    what, name = _CLOUDS[scheme]
    bucket, _, key = text[len(scheme) + 3 :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise InvalidArgumentError(
            f"{text!r} must name {what} and an object key, e.g. {scheme}://my-{name.lower()}/data/db.blt"
        )
    if scheme == "gs":
        return GCSConnection(bucket, key)
    if scheme == "az":
        return AzureConnection(bucket, key)
    return S3Connection(
        options.access_key_id,
        options.access_key,
        key,
        bucket,
        endpoint_url=options.endpoint_url,
        db_url=options.db_url,
        region=options.region,
        retries=options.retries,
        profile=options.profile,
    )
