"""The REMOTE argument: which database a command works on.

REMOTE (``s3://``, ``http(s)://``, ``file://`` or a folder path) becomes a connection, with the
S3 options and credentials from the command line's flags and the environment, and the hints
its messages give.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import urllib.parse

from ..remote import RemoteConn, S3Connection
from .output import CliError

REMOTE_HELP = """\
REMOTE is where the database lives:
  s3://BUCKET/KEY     an S3 object. The endpoint comes from --endpoint-url,
                      $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL (default: AWS),
                      the credentials from $AWS_ACCESS_KEY_ID (or
                      --access-key-id) and $AWS_SECRET_ACCESS_KEY
  https://HOST/PATH   a public URL of the database (read-only)
  file:///PATH, PATH  a database named inside a local folder (no server needed)
"""


@dataclasses.dataclass
class RemoteArg:
    """A REMOTE argument, resolved."""

    conn: RemoteConn
    #: Shown in messages (never includes credentials).
    location: str
    #: Identifies the database for the read cache.
    cache_key: str
    writable: bool
    #: A folder path given as REMOTE (for hints when it names a folder, not a database).
    path: pathlib.Path | None = None


def parse_remote(text: str, args: argparse.Namespace) -> RemoteArg:
    """Turn REMOTE (``s3://``, ``http(s)://``, ``file://`` or a folder path) into a connection."""
    if not text:
        raise CliError("REMOTE is empty: give s3://BUCKET/KEY, an https:// URL, or a path")
    scheme = urllib.parse.urlsplit(text).scheme.lower()
    if scheme == "s3":
        return _s3_remote(text, args)
    if scheme in ("http", "https"):
        if not urllib.parse.urlsplit(text).path.rsplit("/", 1)[-1]:
            raise CliError(f"{text} must be the URL of the database object, not end with '/'")
        return RemoteArg(text, text, text, writable=False)
    if scheme == "file":
        parts = urllib.parse.urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise CliError(f"{text} must be a local file URL (file:///path/to/db)")
        path = pathlib.Path(urllib.parse.unquote(parts.path)).absolute()
    elif len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        raise CliError(
            f"unsupported remote {text!r}: use s3://BUCKET/KEY, an http(s):// URL, file:///PATH "
            "or a folder path"
        )
    else:
        path = pathlib.Path(text).absolute()
    if not path.name or text.endswith(("/", os.sep)):
        raise CliError(f"the remote path {text!r} must name the database inside a folder, e.g. {text}db.blt")
    return RemoteArg(path, path.as_uri(), path.as_uri(), writable=True, path=path)


def _s3_remote(text: str, args: argparse.Namespace) -> RemoteArg:
    bucket, _, key = text[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise CliError(f"{text!r} must name a bucket and an object key, e.g. s3://my-bucket/data/db.blt")
    key_id = args.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (key_id and secret):
        needed = (("AWS_ACCESS_KEY_ID (or --access-key-id)", key_id), ("AWS_SECRET_ACCESS_KEY", secret))
        missing = " and ".join(name for name, value in needed if not value)
        raise CliError(
            f"no credentials for {text}: set {missing} in the environment; to read a public "
            "database without credentials, give its https:// URL instead"
        )
    env = os.environ
    endpoint = args.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint and urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        raise CliError(f"the endpoint {endpoint!r} must be an http:// or https:// URL")
    region = args.region or env.get("AWS_REGION")
    conn = S3Connection(
        key_id, secret, key, bucket, endpoint_url=endpoint, region=region, retries=args.retries
    )
    return RemoteArg(
        conn,
        f"s3://{bucket}/{key} ({endpoint or 'aws'})",
        f"s3://{bucket}/{key}@{endpoint or 'aws'}",
        writable=True,
    )


def remote_arg(args: argparse.Namespace) -> RemoteArg:
    """``args.remote``, resolved."""
    return parse_remote(args.remote, args)


def no_database(remote: RemoteArg) -> CliError:
    """There is no database at REMOTE, with a hint when REMOTE names a folder."""
    hint = ""
    if remote.path is not None and remote.path.is_dir():
        example = remote.path / "db.blt"
        hint = f" ({remote.path} is a folder; a folder remote names the database inside it, e.g. {example})"
    return CliError(f"no ebooklet database at {remote.location}{hint}")
