"""Where a database lives: connection parameters and the transport that reaches them.

:func:`connect` turns what a user passes to :func:`ebooklet.open` (an :class:`S3Connection`,
a public ``http(s)://`` URL, a ``file://`` URL or a local folder path) into a :class:`Remote`;
strings are read by :func:`~ebooklet.remote.url.parse_remote`, which the command line shares.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass
from typing import Any

from .base import Blob, PutMode, Transport, Update, check_db_key
from .connection import S3Connection, _url_name, _url_parent
from .counting import CountingTransport, Stats
from .fs import FolderTransport
from .http import HttpTransport
from .url import parse_remote, remote_location

__all__ = [
    "Blob",
    "CountingTransport",
    "PutMode",
    "Remote",
    "RemoteConn",
    "S3Connection",
    "Stats",
    "Transport",
    "Update",
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
RemoteConn = S3Connection | str | os.PathLike | Remote


def connect(remote_conn: RemoteConn) -> Remote:
    """Build the :class:`Remote` for what the user passed as ``remote_conn``.

    Accepts an :class:`S3Connection`, an ``http(s)://`` URL (read-only), a ``file://`` URL,
    a local path (str or :class:`pathlib.Path`) naming the database in a folder (strings are
    read by :func:`~ebooklet.remote.url.parse_remote`), or a :class:`Remote` built over a
    transport of the caller's own (returned as it is).
    """
    if isinstance(remote_conn, Remote):
        return remote_conn
    if isinstance(remote_conn, S3Connection):
        if remote_conn.writable:
            return Remote(remote_conn.transport(), remote_conn.db_key, remote_location(remote_conn))  # type: ignore[arg-type]
        url = remote_conn.db_url or ""
        return Remote(remote_conn.transport(), _url_name(url), url)
    if isinstance(remote_conn, (str, os.PathLike)):
        parsed = parse_remote(remote_conn)  # without S3 options: a folder path or a public URL
        if isinstance(parsed, pathlib.Path):
            check_db_key(parsed.as_posix())  # the folder too: not inside a database's objects
            return Remote(FolderTransport(parsed.parent), parsed.name, remote_location(parsed))
        return Remote(HttpTransport(_url_parent(parsed)), _url_name(parsed), remote_location(parsed))
    raise TypeError(
        "remote_conn must be an ebooklet.S3Connection, an http(s):// or file:// URL, or a "
        f"folder path, not {type(remote_conn).__name__}"
    )


def connection_params(remote_conn: RemoteConn) -> dict[str, Any]:
    """How to reach a remote again, as plain data: never includes credentials."""
    if isinstance(remote_conn, S3Connection):
        return {"kind": "s3", **remote_conn.to_dict()}
    remote = connect(remote_conn)
    remote.transport.close()
    if remote.location.startswith("file://"):
        return {"kind": "folder", "url": remote.location}
    return {"kind": "url", "url": remote.location}


def connection_from_params(
    params: dict[str, Any], access_key_id: str | None = None, access_key: str | None = None
) -> RemoteConn:
    """The inverse of :func:`connection_params`; S3 credentials are supplied by the caller
    (or the standard AWS environment variables)."""
    kind = params.get("kind")
    if kind == "s3":
        fields = {k: params.get(k) for k in ("db_key", "bucket", "endpoint_url", "db_url", "region")}
        return S3Connection(access_key_id, access_key, **fields)
    if kind in ("folder", "url"):
        return str(params["url"])
    raise ValueError(f"not the connection parameters of an ebooklet remote: {params!r}")
