"""The local copy a command works on: the LOCAL file it was given, or the read cache.

:func:`open_database` opens one (waiting, with a message, for another process to close it;
bad input becomes a :class:`CliError` with advice for the shell); :func:`existing_local`
checks a LOCAL argument; :func:`reader` gives the read commands their database, through
``--local`` or through a cache file per remote, pulled before each read.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Iterator

import portalocker

from ..api import DEFAULT_TIMEOUT
from ..api import open as open_db
from ..db import EBooklet
from ..errors import (
    DamagedLocalFileError,
    EbookletError,
    LocalFileBusyError,
    LocalFileNotFoundError,
    LocalFolderIsAFileError,
    LocalPathError,
    LocalPathIsAFolderError,
    RemoteNotFoundError,
    SyncError,
    UnsafeSerializerError,
)
from ..local import synced_with
from ..lock import DEFAULT_WAIT
from .output import CliError, bad_input
from .remote_arg import RemoteArg, no_database, remote_arg, remote_for_local
from .stores import cache_dir

CACHE_HELP = """\
Without --local, the database is read through a cache file in
$XDG_CACHE_HOME/ebooklet/ (default ~/.cache/ebooklet/) named from a hash of
the remote's location. It is brought up to date with the remote first (one
small request when nothing changed), and values fetched once are reused.
"""


def state_dir(local: pathlib.Path) -> pathlib.Path:
    """Where ebooklet keeps LOCAL's sync state."""
    return local.with_name(local.name + ".ebooklet")


def _local_advice(local: pathlib.Path, remote: RemoteArg, exc: DamagedLocalFileError) -> CliError:
    """Advice for a local file that ebooklet cannot read, depending on whether it was ever synced."""
    reason = str(exc).split(" (", 1)[1].split(")", 1)[0] if " (" in str(exc) else str(exc)
    if synced_with(local) is None:
        return CliError(
            DamagedLocalFileError,
            f"{local} is not a database file ({reason}): LOCAL must be a file made by ebooklet "
            "or booklet. Check the path (the arguments are REMOTE, then LOCAL)."
        )
    return CliError(
        DamagedLocalFileError,
        f"{local} is damaged ({reason}). Move it aside (changes never pushed are in it only), "
        f"then run 'ebooklet pull {remote.text} {local}' to fetch a fresh copy from the remote."
    )


def check_folder(local: pathlib.Path) -> None:
    """LOCAL's folder must be a folder: say so plainly, before booklet reports it as a file
    it cannot read."""
    folder = local.absolute().parent
    if folder.is_dir():
        return
    what = "is a file, not a folder" if folder.exists() else "does not exist"
    raise CliError(
        LocalFolderIsAFileError if folder.exists() else LocalFileNotFoundError,
        f"cannot create {local}: the folder {folder} {what}. Check the path (LOCAL is a file "
        "in a folder that exists)"
    )


def open_database(
    remote: RemoteArg, local: pathlib.Path, flag: str, args: argparse.Namespace | None = None,
    **options: object,
) -> EBooklet:
    """:func:`ebooklet.open` for a command: waits (saying so) for another process to close
    LOCAL, up to ``--timeout``; bad input becomes a :class:`CliError`."""
    check_folder(local)
    timeout = getattr(args, "timeout", DEFAULT_TIMEOUT)
    lock_wait = getattr(args, "lock_wait", DEFAULT_WAIT)
    options.setdefault("allow_pickle", bool(getattr(args, "allow_pickle", False)))

    def attempt(wait: float) -> EBooklet:
        return open_db(remote.remote(), local, flag, timeout=wait, lock_wait=lock_wait, **options)  # type: ignore[arg-type]

    try:
        try:
            return attempt(0)
        except LocalFileBusyError:
            if not timeout:
                raise
            if not getattr(args, "quiet", False):
                print(
                    f"ebooklet: waiting for {local}: another process has it open (up to "
                    f"{timeout:g} s; --timeout SECONDS changes this)", file=sys.stderr, flush=True,
                )
            return attempt(timeout)
    except LocalFileBusyError:
        raise CliError(
            LocalFileBusyError,
            f"{local} is still open in another process (another ebooklet command or a Python "
            f"session) after {timeout:g} s: close it there, or wait longer with --timeout SECONDS"
        ) from None
    except DamagedLocalFileError as exc:
        raise _local_advice(local, remote, exc) from None
    except UnsafeSerializerError:
        raise CliError(
            UnsafeSerializerError,
            f"{remote.location} stores pickled values: reading them runs code chosen by whoever "
            "can write to it. If you trust it, run the command again with --allow-pickle"
        ) from None
    except RemoteNotFoundError as exc:
        if not local.exists() and not exc.bucket_missing:  # neither side has a database
            raise no_database(remote) from None
        raise
    except EbookletError:
        raise
    except OSError as exc:
        if exc.filename is None:  # not about a file
            raise bad_input(exc) from None
        where = exc.filename
        if not isinstance(exc, PermissionError) and exc.errno != errno.EROFS:
            raise CliError(
                LocalPathError,
                f"cannot use {where}: {exc.strerror or exc}. Check the path, and that LOCAL's folder "
                "is one you can write to"
            ) from None
        why = "permission denied" if isinstance(exc, PermissionError) else "the file system is read-only"
        raise CliError(
            LocalPathError,
            f"cannot write {where}: {why}. ebooklet keeps LOCAL's sync state beside "
            f"it (in {state_dir(local).name}/), so LOCAL's folder must be writable: copy the file "
            "to a folder you can write to, or fix the permissions"
        ) from None
    except (ValueError, TypeError) as exc:
        raise bad_input(exc) from None


def existing_local(path: str, why: str) -> pathlib.Path:
    """LOCAL, which must be a file; ``why`` ends the message when it does not exist."""
    local = pathlib.Path(path)
    if local.is_dir():
        raise CliError(
            LocalPathIsAFolderError,
            f"the local file {local} is a folder; LOCAL names a database file in it"
        )
    if not local.exists():
        raise CliError(LocalFileNotFoundError, f"the local file {local} does not exist; {why}")
    return local


def cache_path(remote: RemoteArg) -> pathlib.Path:
    """The cache file of a remote: named from a hash of where the database lives."""
    digest = hashlib.sha256(remote.cache_key.encode()).hexdigest()[:32]
    return cache_dir() / f"{digest}.blt"


def _drop_cache(path: pathlib.Path) -> None:
    path.unlink(missing_ok=True)
    shutil.rmtree(state_dir(path), ignore_errors=True)


def given_local(args: argparse.Namespace) -> pathlib.Path | None:
    """REMOTE, when it names a local file that ebooklet has synced (and no --local is given):
    read commands then read that file, through the remote it remembers."""
    path = pathlib.Path(args.remote)
    if getattr(args, "local", None) or not path.is_file() or synced_with(path) is None:
        return None
    return path


@contextlib.contextmanager
def reader(args: argparse.Namespace) -> Iterator[EBooklet]:
    """The database for a read command: a local file given as REMOTE or with ``--local``
    (read as it is, with its unpushed changes), the remote as at ``--at``, or the cache
    (pulled first)."""
    local = given_local(args)
    if local is not None:
        remote = remote_for_local(argparse.Namespace(**{**vars(args), "remote": None}), local)
    else:
        remote = remote_arg(args)
        local = pathlib.Path(args.local) if args.local else None
    at = getattr(args, "at", None)
    if at is not None:
        # A past commit is read into a file of its own, which goes when the command ends.
        with tempfile.TemporaryDirectory(prefix="ebooklet-at-") as tmp, \
                open_database(remote, pathlib.Path(tmp) / "at.blt", "r", args, at=at) as db:
            yield db
        return
    if local is not None:
        with open_database(remote, local, "r", args) as db:
            yield db
        return
    path = cache_path(remote)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")
    except OSError as exc:
        raise CliError(
            LocalPathError,
            f"cannot use the cache folder {path.parent}: {exc.strerror or exc}"
        ) from None
    # One command at a time per cache file: two could otherwise both create it.
    with lock:
        portalocker.lock(lock, portalocker.LOCK_EX)
        with _cached(remote, path, args) as db:
            yield db


@contextlib.contextmanager
def _cached(remote: RemoteArg, path: pathlib.Path, args: argparse.Namespace) -> Iterator[EBooklet]:
    db = open_database(remote, path, "r", args)
    try:
        db.changes().pull()
    except (SyncError, RemoteNotFoundError) as exc:
        if isinstance(exc, RemoteNotFoundError) and exc.bucket_missing:
            db.close()
            raise
        # The database was deleted or replaced since the cache was filled: start afresh.
        db.close()
        _drop_cache(path)
        db = open_database(remote, path, "r", args)
    except BaseException:
        db.close()
        raise
    with db:
        yield db
