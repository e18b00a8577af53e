"""The REMOTE argument: which database a command works on.

The string is read by :func:`ebooklet.remote.url.parse_remote`, the parser the Python API
uses too; this module adds what only the command line has: the S3 options from its flags,
the remote a LOCAL file remembers (so ``ebooklet push big.blt`` is enough), the check that a
REMOTE given with a LOCAL is the database that file is synced with, and the hints its
messages give.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pathlib
import re
import threading
import urllib.parse
from collections.abc import Iterator

from ..errors import EbookletError, InvalidArgumentError, RemoteNotFoundError, SyncError
from ..info import remote_info
from ..local import synced_with
from ..remote import (
    AzureConnection,
    Blob,
    CountingTransport,
    GCSConnection,
    PutMode,
    Remote,
    RemoteConn,
    S3Connection,
    Transport,
    connect,
    folder_message,
)
from ..remote.base import FallbackLock, ObjectStat
from ..remote.credentials import NoCredentialsError
from ..remote.url import S3Options, parse_remote, remote_location
from . import stores
from .interrupt import StoppableTransport
from .output import CliError

REMOTE_HELP = """\
REMOTE is where the database lives:
  s3://BUCKET/KEY     an S3 object. Credentials, region and endpoint come from
                      the options below, else the AWS environment variables
                      ($AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY,
                      $AWS_SESSION_TOKEN, $AWS_PROFILE, $AWS_REGION,
                      $AWS_ENDPOINT_URL_S3, ...), else ~/.aws/credentials and
                      ~/.aws/config (default: AWS itself)
  gs://BUCKET/KEY     a Google Cloud Storage object. Credentials come from
                      $GOOGLE_APPLICATION_CREDENTIALS or gcloud's application
                      default login; $STORAGE_EMULATOR_HOST names an emulator
  az://CONTAINER/KEY  an Azure blob. The account and credentials come from
                      $AZURE_STORAGE_CONNECTION_STRING, else the account in
                      $AZURE_STORAGE_ACCOUNT_NAME with its key
                      ($AZURE_STORAGE_ACCOUNT_KEY), $AZURE_STORAGE_SAS_TOKEN or
                      the login DefaultAzureCredential finds
  https://HOST/PATH   a public URL of the database (read-only)
  file:///PATH, PATH  a database named inside a local folder (no server needed)
"""

logger = logging.getLogger("ebooklet.cli")

_S3_LOCATION = re.compile(r"^(s3://\S+) \((.*)\)$")
#: A remembered location of a cloud store: its URL, then where it was (from the environment).
_CLOUD_LOCATION = re.compile(r"^((?:gs|az)://\S+)(?: \(.*\))?$")


@dataclasses.dataclass
class RemoteArg:
    """A REMOTE argument, resolved."""

    conn: RemoteConn
    #: REMOTE as it can be typed again, for advice in messages.
    text: str
    #: Shown in messages (never includes credentials).
    location: str
    #: Identifies the database for the read cache.
    cache_key: str
    writable: bool
    #: A folder path given as REMOTE (for hints when it names a folder, not a database).
    path: pathlib.Path | None = None
    #: The transport of the last :meth:`remote`, for Ctrl-C (see :mod:`.interrupt`).
    transport: StoppableTransport | None = None
    #: S3 credentials are looked up at the first request, not before: a command that may
    #: not talk to the remote at all (put and del without --push) needs none.
    deferred: bool = False

    def fields(self) -> dict[str, str | None]:
        """Where the database lives, for ``--json``: see :func:`location_fields`."""
        return location_fields(self.location)

    def remote(self) -> Remote:
        """A new :class:`ebooklet.Remote` for this database, whose requests stop at Ctrl-C."""
        if isinstance(self.conn, S3Connection) and self.deferred:
            stores.recall()
            deferred = DeferredTransport(self.text, self.conn, self.location)
            self.transport = StoppableTransport(deferred, self.conn.db_key or "")
            return Remote(self.transport, self.conn.db_key or "", self.location)
        if isinstance(self.conn, S3Connection) and self.conn.writable:
            stores.recall()
        base = connect(self.conn)
        inner = base.transport.inner if isinstance(base.transport, CountingTransport) else base.transport
        self.transport = StoppableTransport(inner, base.db_key)
        return Remote(self.transport, base.db_key, base.location)


class DeferredTransport(Transport):
    """The S3 transport of ``conn``, made at its first request: only then are its credentials
    looked up (and their absence reported as :func:`check_credentials` does)."""

    delete_batch_size = 1000  # S3's, as S3Transport declares it
    knows_ages = True  # as S3Transport declares it

    def __init__(self, text: str, conn: S3Connection, location: str) -> None:
        self.text, self.conn = text, conn
        self.description = location
        self._inner: Transport | None = None
        self._lock = threading.Lock()

    def _real(self) -> Transport:
        with self._lock:
            if self._inner is None:
                check_credentials(self.text, self.conn)
                self._inner = self.conn.transport()
            return self._inner

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        return self._real().get(key, if_none_match)

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        return self._real().get_start(key, length, if_none_match)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._real().get_range(key, start, length)

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        return self._real().put(key, data, mode)

    def delete(self, keys: list[str]) -> None:
        if keys:
            self._real().delete(keys)

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        return self._real().list_sizes(prefix)

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        return self._real().list_stats(prefix)

    def stat(self, key: str) -> ObjectStat:
        return self._real().stat(key)

    def store_time(self) -> float:
        return self._real().store_time()

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        return self._real().copy(key, target, target_key)

    def supports_conditional_writes(self, scratch_prefix: str) -> bool:
        return self._real().supports_conditional_writes(scratch_prefix)

    def fallback_lock(self, key: str) -> FallbackLock:
        return self._real().fallback_lock(key)

    def close(self) -> None:
        with self._lock:
            if self._inner is not None:
                self._inner.close()


def s3_options(args: argparse.Namespace, endpoint_url: str | None = None) -> S3Options:
    """The S3 options of the command line; ``endpoint_url`` unless ``--endpoint-url`` is given."""
    # The secret has no flag: it would show in `ps` and in the shell's history.
    return S3Options(
        access_key_id=getattr(args, "access_key_id", None),
        endpoint_url=getattr(args, "endpoint_url", None) or endpoint_url,
        region=getattr(args, "region", None),
        retries=getattr(args, "retries", 3),
        profile=getattr(args, "profile", None),
    )


def remote_arg(
    args: argparse.Namespace, text: str | None = None, endpoint_url: str | None = None,
    deferred: bool = False,
) -> RemoteArg:
    """``args.remote`` (or ``text``: ``s3://``, ``http(s)://``, ``file://`` or a folder path),
    resolved; ``endpoint_url`` is the S3 endpoint unless ``--endpoint-url`` says otherwise.
    ``deferred``: S3 credentials are looked up at the first request (see RemoteArg)."""
    text = text if text is not None else args.remote
    try:
        conn = parse_remote(text, s3=s3_options(args, endpoint_url))
    except ValueError as exc:
        raise CliError(_error_class(exc), str(exc)) from None
    location = remote_location(conn)
    if isinstance(conn, pathlib.Path):
        _refuse_local_file(args, conn)
        return RemoteArg(conn, text, location, location, writable=True, path=conn)
    if isinstance(conn, str):
        return RemoteArg(conn, text, location, location, writable=False)
    if isinstance(conn, (GCSConnection, AzureConnection)):
        # Their credentials are looked up when the transport is made, at the first request.
        return RemoteArg(conn, text, location, location, writable=True)
    if not deferred:
        check_credentials(text, conn)
    cache_key = f"s3://{conn.bucket}/{conn.db_key}@{conn.endpoint_url or 'aws'}"
    return RemoteArg(conn, text, location, cache_key, writable=True, deferred=deferred)


def _error_class(exc: Exception) -> type[Exception]:
    return type(exc) if isinstance(exc, EbookletError) else InvalidArgumentError


def _refuse_local_file(args: argparse.Namespace, path: pathlib.Path) -> None:
    """A REMOTE that is a synced local file: the arguments are probably the wrong way round."""
    synced = synced_with(path)
    if synced is None or not path.is_file():
        return
    local = getattr(args, "local", None)
    hint = ""
    if isinstance(local, str) and synced_with(pathlib.Path(local)) is None:
        hint = f": did you mean 'ebooklet {args.command} {local} {args.remote}'"
    raise CliError(
        InvalidArgumentError,
        f"{args.remote} is a local database file (its sync state is in {path.name}.ebooklet/), not a "
        f"remote. The arguments are REMOTE, then LOCAL{hint}? {args.remote} was last synced with "
        f"{synced.location}."
    )


def check_credentials(text: str, conn: S3Connection) -> None:
    """Refuse an S3 remote without credentials, or with a bad endpoint, before any request."""
    try:
        _ = conn.credentials
    except NoCredentialsError as exc:
        raise CliError(
            NoCredentialsError,
            f"no credentials for {text}: {exc}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(the key id may be --access-key-id), or name a profile with --profile or "
            "AWS_PROFILE; to read a public database without credentials, give its https:// URL "
            "instead"
        ) from None
    except ValueError as exc:
        # The API's words for the option are not the command line's.
        message = f"{text}: {exc}".replace("the profile argument", "--profile")
        raise CliError(_error_class(exc), message) from None
    endpoint = conn.endpoint_url
    if endpoint and urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        raise CliError(InvalidArgumentError, f"the endpoint {endpoint!r} must be an http:// or https:// URL")


def location_fields(location: str) -> dict[str, str | None]:
    """A location as two ``--json`` fields: ``remote``, the URL (``s3://BUCKET/KEY``,
    ``https://...``, ``file:///...``), and ``endpoint``, the S3 endpoint (None for AWS itself
    and for remotes that are not S3)."""
    text, endpoint = _typed(location)
    return {"remote": text, "endpoint": endpoint}


def _typed(location: str) -> tuple[str, str | None]:
    """A remembered location as REMOTE text, and the S3 endpoint it names (if any)."""
    s3 = _S3_LOCATION.match(location)
    if s3:
        return s3[1], None if s3[2] == "aws" else s3[2]
    cloud = _CLOUD_LOCATION.match(location)
    if cloud:
        return cloud[1], None
    return location, None


def remote_for_local(args: argparse.Namespace, local: pathlib.Path, deferred: bool = False) -> RemoteArg:
    """The REMOTE of a command that works on LOCAL: as given, or the one LOCAL remembers
    (``deferred`` as for :func:`remote_arg`).

    A REMOTE given for a LOCAL that was synced with a database elsewhere is refused unless it
    holds the same database (the same uuid: a folder that moved, an endpoint written another
    way).
    """
    synced = synced_with(local) if local.exists() else None
    if args.remote is None:
        if synced is None:
            raise CliError(
                InvalidArgumentError,
                f"{local} has never been synced, so there is no remote to remember: give it, as in "
                f"'ebooklet {args.command} REMOTE {local}'"
            )
        text, endpoint = _typed(synced.location)
        _warn_if_moved(args, local, endpoint)
        return remote_arg(args, text, endpoint, deferred)
    remote = remote_arg(args, deferred=deferred)
    if synced is None or synced.uuid is None or synced.location.rstrip("/") == remote.location.rstrip("/"):
        return remote  # never synced with a database (or with this one): any REMOTE will do
    info = remote_info(remote.remote())
    if info is not None and info.uuid == synced.uuid:
        return remote  # the same database, reached another way
    what = "another database" if info is not None else "no database"
    raise CliError(
        SyncError,
        f"{local} is synced with {synced.location}, and {remote.location} holds {what}. Leave "
        f"REMOTE out to use the remote {local} remembers ('ebooklet {args.command} {local}'), or "
        f"pull {args.remote} into another file ('ebooklet pull {args.remote} OTHER.blt')."
    )


def _warn_if_moved(args: argparse.Namespace, local: pathlib.Path, remembered: str | None) -> None:
    """The endpoint a LOCAL file remembers wins over the environment's (docs/cli.rst,
    "Endpoints"): when the two differ, say which one is used, and how to use the other."""
    if remembered is None or getattr(args, "endpoint_url", None):
        return
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        given = os.environ.get(name)
        if given:
            if given.rstrip("/") != remembered.rstrip("/"):
                logger.warning(
                    "%s remembers the endpoint %s, and %s is %s: using %s (give --endpoint-url %s to "
                    "use that one)", local, remembered, name, given, remembered, given,
                )
            return


def no_database(remote: RemoteArg) -> CliError:
    """There is no database at REMOTE, with a hint when REMOTE names a folder, or else where
    to look for the databases that are there."""
    if remote.path is not None and remote.path.is_dir():
        return CliError(InvalidArgumentError, folder_message(remote.path))
    if remote.path is not None:
        hint = f"check the path; 'ebooklet ls {remote.path.parent}' lists the databases in its folder"
    elif isinstance(remote.conn, S3Connection):
        folder = (remote.conn.db_key or "").rpartition("/")[0]
        listing = f"s3://{remote.conn.bucket}/{folder + '/' if folder else ''}"
        hint = f"check the bucket and key; 'ebooklet ls {listing}' lists the databases there"
    elif isinstance(remote.conn, (GCSConnection, AzureConnection)):
        hint = "check the bucket (or container) and the key"
    else:
        hint = "check the URL: it names the database's head object (docs/s3.rst, 'Forming the URL')"
    return CliError(RemoteNotFoundError, f"no ebooklet database at {remote.location}: {hint}")
