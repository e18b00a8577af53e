"""The REMOTE argument: which database a command works on.

The string is read by :func:`ebooklet.remote.url.parse_remote`, the parser the Python API
uses too; this module adds what only the command line has: the S3 options and credentials
from its flags and the environment, and the hints its messages give.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import urllib.parse

from ..remote import RemoteConn, S3Connection
from ..remote.credentials import NoCredentialsError
from ..remote.url import S3Options, parse_remote, remote_location
from .output import CliError

REMOTE_HELP = """\
REMOTE is where the database lives:
  s3://BUCKET/KEY     an S3 object. Credentials, region and endpoint come from
                      the options below, else the AWS environment variables
                      ($AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY,
                      $AWS_SESSION_TOKEN, $AWS_PROFILE, $AWS_REGION,
                      $AWS_ENDPOINT_URL_S3, ...), else ~/.aws/credentials and
                      ~/.aws/config (default: AWS itself)
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


def remote_arg(args: argparse.Namespace) -> RemoteArg:
    """``args.remote`` (``s3://``, ``http(s)://``, ``file://`` or a folder path), resolved."""
    # The secret has no flag: it would show in `ps` and in the shell's history.
    options = S3Options(
        access_key_id=args.access_key_id,
        endpoint_url=args.endpoint_url,
        region=args.region,
        retries=args.retries,
        profile=args.profile,
    )
    try:
        conn = parse_remote(args.remote, s3=options)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    location = remote_location(conn)
    if isinstance(conn, pathlib.Path):
        return RemoteArg(conn, location, location, writable=True, path=conn)
    if isinstance(conn, str):
        return RemoteArg(conn, location, location, writable=False)
    _check_s3(args.remote, conn)
    cache_key = f"s3://{conn.bucket}/{conn.db_key}@{conn.endpoint_url or 'aws'}"
    return RemoteArg(conn, location, cache_key, writable=True)


def _check_s3(text: str, conn: S3Connection) -> None:
    try:
        _ = conn.credentials
    except NoCredentialsError as exc:
        raise CliError(
            f"no credentials for {text}: {exc}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(the key id may be --access-key-id), or name a profile with --profile or "
            "AWS_PROFILE; to read a public database without credentials, give its https:// URL "
            "instead"
        ) from None
    except ValueError as exc:
        raise CliError(f"{text}: {exc}") from None
    endpoint = conn.endpoint_url
    if endpoint and urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        raise CliError(f"the endpoint {endpoint!r} must be an http:// or https:// URL")


def no_database(remote: RemoteArg) -> CliError:
    """There is no database at REMOTE, with a hint when REMOTE names a folder."""
    hint = ""
    if remote.path is not None and remote.path.is_dir():
        example = remote.path / "db.blt"
        hint = f" ({remote.path} is a folder; a folder remote names the database inside it, e.g. {example})"
    return CliError(f"no ebooklet database at {remote.location}{hint}")
