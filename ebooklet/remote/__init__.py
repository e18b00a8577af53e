"""Where a database lives: connection parameters and the transport that reaches them.

:func:`connect` turns what a user passes to :func:`ebooklet.open` (an :class:`S3Connection`,
a :class:`GCSConnection`, an :class:`AzureConnection`, or a remote string: ``s3://``,
``gs://``, ``az://``, a public ``http(s)://`` URL, a ``file://`` URL or a local folder path)
into a :class:`Remote`; strings are read by :func:`~ebooklet.remote.url.parse_remote`, which
the command line shares.
"""

from __future__ import annotations

import os
import pathlib
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..errors import ArgumentTypeError, InvalidArgumentError
from .base import Blob, PutMode, Transport, Update, check_db_key
from .clouds import AzureConnection, GCSConnection
from .connection import S3Connection, _url_name, _url_parent
from .counting import CountingTransport, Stats
from .fs import FolderTransport
from .http import HttpTransport
from .url import FORMS, parse_remote, remote_location
from .wrapper import WrapperTransport

__all__ = [
    "AzureConnection",
    "Blob",
    "CountingTransport",
    "GCSConnection",
    "PutMode",
    "Remote",
    "RemoteConn",
    "S3Connection",
    "Stats",
    "Transport",
    "Update",
    "WrapperTransport",
    "connect",
    "connection_from_params",
    "connection_params",
]


@dataclass
class Remote:
    """A database's location: a transport and the key of its head object.

    Parameters
    ----------
    transport : Transport
        How to reach the objects. It is wrapped in a :class:`CountingTransport` (unless it is
        one already), so ``remote.transport.stats`` counts every request made through it.
    db_key : str
        The key of the database's head object.
    location : str
        Where the database lives, for messages; never contains credentials.

    Examples
    --------
    >>> import tempfile
    >>> from ebooklet.remote.fs import FolderTransport
    >>> remote = Remote(FolderTransport(tempfile.mkdtemp()), "db", "a folder")
    >>> remote.transport.stats
    Stats(requests=0, bytes_sent=0, bytes_received=0)
    >>> remote.prefix
    'db.ebooklet/'
    """

    transport: Transport
    db_key: str
    location: str

    def __post_init__(self) -> None:
        check_db_key(self.db_key)
        if not isinstance(self.transport, CountingTransport):
            self.transport = CountingTransport(self.transport)

    @property
    def prefix(self) -> str:
        """The key prefix of every object of this database except the head."""
        return self.db_key + ".ebooklet/"

    @property
    def writable(self) -> bool:
        """False when the transport is read-only."""
        return self.transport.writable


#: What :func:`ebooklet.open` accepts as a remote.
RemoteConn = S3Connection | GCSConnection | AzureConnection | str | os.PathLike | Remote


def connect(remote_conn: RemoteConn) -> Remote:
    """Build the :class:`Remote` for what the user passed as ``remote_conn``.

    Accepts a connection (:class:`S3Connection`, :class:`GCSConnection`,
    :class:`AzureConnection`), a remote string or path (read by
    :func:`~ebooklet.remote.url.parse_remote`: ``s3://``, ``gs://``, ``az://``, ``http(s)://``
    read-only, ``file://`` or a folder path), or a :class:`Remote` built over a transport of
    the caller's own (returned as it is).

    Raises
    ------
    InvalidArgumentError
        A string that is none of the accepted forms (the message lists them).
    ArgumentTypeError
        Something that is neither a connection, a string nor a path.
    """
    if isinstance(remote_conn, Remote):
        return remote_conn
    if isinstance(remote_conn, S3Connection):
        if remote_conn.writable:
            return Remote(remote_conn.transport(), remote_conn.db_key, remote_location(remote_conn))  # type: ignore[arg-type]
        url = remote_conn.db_url or ""
        return Remote(remote_conn.transport(), _url_name(url), url)
    if isinstance(remote_conn, (GCSConnection, AzureConnection)):
        return Remote(remote_conn.transport(), remote_conn.db_key, remote_conn.location)
    if isinstance(remote_conn, (str, os.PathLike)):
        parsed = parse_remote(remote_conn)
        if isinstance(parsed, pathlib.Path):
            check_db_key(parsed.as_posix())  # the folder too: not inside a database's objects
            if parsed.is_dir():
                # A database is a file in its folder; a folder there could never become one.
                raise InvalidArgumentError(folder_message(parsed))
            return Remote(FolderTransport(parsed.parent), parsed.name, remote_location(parsed))
        if isinstance(parsed, str):
            return Remote(HttpTransport(_url_parent(parsed)), _url_name(parsed), remote_location(parsed))
        return connect(parsed)
    raise ArgumentTypeError(
        f"remote_conn must be {FORMS}, or an S3Connection, GCSConnection or AzureConnection, "
        f"not {type(remote_conn).__name__}"
    )


def folder_message(path: pathlib.Path) -> str:
    """What to say when a folder remote names an existing folder instead of a database."""
    return (f"no ebooklet database at {remote_location(path)} ({path} is a folder; a folder remote names "
            f"the database inside it, e.g. {path / 'db.blt'})")


def connection_params(remote_conn: RemoteConn) -> dict[str, Any]:
    """How to reach a remote again, as plain data: never includes credentials."""
    if isinstance(remote_conn, S3Connection):
        return {"kind": "s3", **remote_conn.to_dict()}
    if isinstance(remote_conn, GCSConnection):
        return {"kind": "gcs", **remote_conn.to_dict()}
    if isinstance(remote_conn, AzureConnection):
        return {"kind": "azure", **remote_conn.to_dict()}
    if isinstance(remote_conn, str) and urllib.parse.urlsplit(remote_conn).scheme in ("s3", "gs", "az"):
        return connection_params(parse_remote(remote_conn))  # type: ignore[arg-type]
    remote = connect(remote_conn)
    remote.transport.close()
    if remote.location.startswith("file://"):
        return {"kind": "folder", "url": remote.location}
    return {"kind": "url", "url": remote.location}


def connection_from_params(
    params: dict[str, Any], access_key_id: str | None = None, access_key: str | None = None
) -> RemoteConn:
    """The inverse of :func:`connection_params`. S3 credentials are supplied by the caller (or
    the AWS chain); Google's and Azure's come from their own chains (see :mod:`.clouds`)."""
    kind = params.get("kind")
    if kind == "s3":
        fields = {k: params.get(k) for k in ("db_key", "bucket", "endpoint_url", "db_url", "region")}
        return S3Connection(access_key_id, access_key, **fields)
    if kind == "gcs":
        return GCSConnection(params["bucket"], params["db_key"], endpoint_url=params.get("endpoint_url"))
    if kind == "azure":
        return AzureConnection(params["container"], params["db_key"], account_url=params.get("account_url"))
    if kind in ("folder", "url"):
        return str(params["url"])
    raise InvalidArgumentError(f"not the connection parameters of an ebooklet remote: {params!r}")
