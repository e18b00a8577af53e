"""The local copy a command works on: the LOCAL file it was given, or the read cache.

:func:`open_database` opens one (bad input becomes a :class:`CliError`); :func:`existing_local`
checks a LOCAL argument; :func:`reader` gives the read commands their database, through
``--local`` or through a cache file per remote, pulled before each read.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pathlib
import shutil
from collections.abc import Iterator

import portalocker

from ..api import open as open_db
from ..db import EBooklet
from ..errors import EbookletError, RemoteNotFoundError, SyncError, UnsafeSerializerError
from .output import CliError, bad_input
from .remote_arg import RemoteArg, no_database, remote_arg

CACHE_HELP = """\
Without --local, the database is read through a cache file in
$XDG_CACHE_HOME/ebooklet/ (default ~/.cache/ebooklet/) named from a hash of
the remote's location. It is brought up to date with the remote first (one
small request when nothing changed), and values fetched once are reused.
"""


def open_database(remote: RemoteArg, local: pathlib.Path, flag: str, allow_pickle: bool = False) -> EBooklet:
    """:func:`ebooklet.open`, with bad input turned into :class:`CliError`."""
    try:
        return open_db(remote.conn, local, flag, allow_pickle=allow_pickle)
    except UnsafeSerializerError:
        raise CliError(
            f"{remote.location} stores pickled values: reading them runs code chosen by whoever "
            "can write to it. If you trust it, run the command again with --allow-pickle"
        ) from None
    except RemoteNotFoundError:
        if not local.exists():  # neither side has a database
            raise no_database(remote) from None
        raise
    except EbookletError:
        raise
    except (ValueError, TypeError, OSError) as exc:
        raise bad_input(exc) from None


def existing_local(path: str, why: str) -> pathlib.Path:
    """LOCAL, which must be a file; ``why`` ends the message when it does not exist."""
    local = pathlib.Path(path)
    if local.is_dir():
        raise CliError(f"the local file {local} is a folder; LOCAL names a database file in it")
    if not local.exists():
        raise CliError(f"the local file {local} does not exist; {why}")
    return local


def cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/ebooklet`` (``~/.cache/ebooklet`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = pathlib.Path(base) if os.path.isabs(base) else pathlib.Path.home() / ".cache"
    return root / "ebooklet"


def cache_path(remote: RemoteArg) -> pathlib.Path:
    """The cache file of a remote: named from a hash of where the database lives."""
    digest = hashlib.sha256(remote.cache_key.encode()).hexdigest()[:32]
    return cache_dir() / f"{digest}.blt"


def _drop_cache(path: pathlib.Path) -> None:
    path.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".ebooklet"), ignore_errors=True)


@contextlib.contextmanager
def reader(args: argparse.Namespace) -> Iterator[EBooklet]:
    """The database for a read command: through ``--local``, or the cache (pulled first)."""
    remote = remote_arg(args)
    if args.local:
        with open_database(remote, pathlib.Path(args.local), "r", args.allow_pickle) as db:
            yield db
        return
    path = cache_path(remote)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")
    except OSError as exc:
        raise CliError(f"cannot use the cache folder {path.parent}: {exc.strerror or exc}") from None
    # One command at a time per cache file: two could otherwise both create it.
    with lock:
        portalocker.lock(lock, portalocker.LOCK_EX)
        with _cached(remote, path, args.allow_pickle) as db:
            yield db


@contextlib.contextmanager
def _cached(remote: RemoteArg, path: pathlib.Path, allow_pickle: bool) -> Iterator[EBooklet]:
    db = open_database(remote, path, "r", allow_pickle)
    try:
        db.changes().pull()
    except (SyncError, RemoteNotFoundError):
        # The database was deleted or replaced since the cache was filled: start afresh.
        db.close()
        _drop_cache(path)
        db = open_database(remote, path, "r", allow_pickle)
    except BaseException:
        db.close()
        raise
    with db:
        yield db
