"""What a remote written as text means: the one parser of remote strings.

:func:`parse_remote` is shared by :func:`ebooklet.remote.connect` (what Python callers pass to
:func:`ebooklet.open`) and the command line (its REMOTE argument), so that a string names the
same database, and is refused with the same message, wherever it is given:

``http(s)://HOST/PATH``
    the public URL of a database's head object (read-only); returned as the string.
``file:///PATH`` or a path
    a database named inside a local folder; returned as an absolute :class:`pathlib.Path`.
``s3://BUCKET/KEY``
    an object in an S3 bucket; returned as an :class:`~ebooklet.S3Connection` built with
    :class:`S3Options`. Without them the string is refused: in Python an S3 remote is an
    ``S3Connection``, which says where its credentials come from.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import urllib.parse
from typing import TypeAlias

from .connection import S3Connection

#: What :func:`parse_remote` returns: an S3 connection, a public URL, or a folder remote's path.
ParsedRemote: TypeAlias = "S3Connection | str | pathlib.Path"


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
        ``s3://BUCKET/KEY``, ``http(s)://HOST/PATH``, ``file:///PATH`` or a path naming the
        database inside a folder. A path object is always a folder remote.
    s3 : S3Options, optional
        Accept ``s3://`` strings and build their connections with these options. Without
        them, an ``s3://`` string raises ValueError.

    Raises
    ------
    ValueError
        With a one-line message saying what is wrong and what to give instead.

    Examples
    --------
    >>> parse_remote("https://cdn.example.com/data/big.blt")
    'https://cdn.example.com/data/big.blt'
    >>> parse_remote("file:///srv/bucket/big.blt")
    PosixPath('/srv/bucket/big.blt')
    >>> parse_remote("s3://my-bucket/data/big.blt",
    ...              s3=S3Options("AKID", "SECRET", endpoint_url="http://127.0.0.1:9000"))
    S3Connection(bucket='my-bucket', db_key='data/big.blt', endpoint_url='http://127.0.0.1:9000')
    >>> parse_remote("bucket/")
    Traceback (most recent call last):
    ...
    ValueError: the remote path 'bucket/' must name the database inside a folder, e.g. bucket/db.blt
    """
    forms = (
        "an S3Connection, an http(s):// URL, file:///PATH or a folder path"
        if s3 is None
        else "s3://BUCKET/KEY, an http(s):// URL, file:///PATH or a folder path"
    )
    if isinstance(text, os.PathLike):
        return _folder(pathlib.Path(text), os.fspath(text))
    if not text:
        raise ValueError(f"the remote is empty: give {forms}")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme == "s3":
        return _s3(text, s3)
    if parts.scheme in ("http", "https"):
        if not parts.path.rsplit("/", 1)[-1]:
            raise ValueError(f"{text} must be the URL of the database object, not end with '/'")
        return text
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{text} must be a local file URL (file:///path/to/db)")
        return _folder(pathlib.Path(urllib.parse.unquote(parts.path)), text)
    if len(parts.scheme) > 1:  # a one-letter "scheme" is a Windows drive
        raise ValueError(f"unsupported remote {text!r}: use {forms}")
    return _folder(pathlib.Path(text), text)


def remote_location(conn: ParsedRemote) -> str:
    """Where a parsed remote lives, as shown in messages: never includes credentials."""
    if isinstance(conn, pathlib.Path):
        return conn.as_uri()
    if isinstance(conn, str):
        return conn
    return f"s3://{conn.bucket}/{conn.db_key} ({conn.endpoint_url or 'aws'})"


def _folder(path: pathlib.Path, text: str) -> pathlib.Path:
    # "bucket/" would otherwise name a database called "bucket" beside the folder meant.
    if not path.name or text.endswith(("/", os.sep)):
        example = text + ("db.blt" if text.endswith(("/", os.sep)) else "/db.blt")
        raise ValueError(f"the remote path {text!r} must name the database inside a folder, e.g. {example}")
    return path.absolute()


def _s3(text: str, options: S3Options | None) -> S3Connection:
    if options is None:
        raise ValueError(
            f"{text!r}: use ebooklet.S3Connection(...) for S3 remotes in Python "
            "(s3:// URLs are for the command line)"
        )
    bucket, _, key = text[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ValueError(f"{text!r} must name a bucket and an object key, e.g. s3://my-bucket/data/db.blt")
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
