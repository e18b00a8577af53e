"""Running ebooklet in a child process, for tests that kill it or race it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import ebooklet
import ebooklet.remote

ROOT = str(pathlib.Path(__file__).resolve().parent.parent)


def python(code: str) -> subprocess.Popen:
    """Start ``python -c code`` (dedented) with the repository importable and pipes open."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


def conn_code(conn: ebooklet.remote.RemoteConn) -> str:
    """A Python expression that rebuilds ``conn`` in a child process."""
    if isinstance(conn, ebooklet.GCSConnection):
        return (f"ebooklet.GCSConnection({conn.bucket!r}, {conn.db_key!r}, "
                f"endpoint_url={conn.endpoint_url!r}, anonymous={conn.anonymous!r})")
    if isinstance(conn, ebooklet.AzureConnection):
        return (f"ebooklet.AzureConnection({conn.container!r}, {conn.db_key!r}, "
                f"connection_string={conn._connection_string!r})")
    if not isinstance(conn, ebooklet.S3Connection):
        return repr(str(conn))
    return (
        f"ebooklet.S3Connection({conn.access_key_id!r}, {conn.access_key!r}, {conn.db_key!r}, "
        f"{conn.bucket!r}, endpoint_url={conn.endpoint_url!r})"
    )
