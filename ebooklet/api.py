"""Opening a database: the entry point that binds a local file to a remote."""

from __future__ import annotations

import os
import pathlib
from datetime import datetime
from typing import Any

from .codec import runs_code
from .db import EBooklet
from .errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    LocalFolderIsAFileError,
    LocalPathIsAFolderError,
    ReadOnlyError,
    RemoteFormatError,
    RemoteNotFoundError,
    SerializerMismatchError,
    SyncError,
    UnsafeSerializerError,
)
from .format import Head
from .groups import GROUP_SERIALIZER, RemoteConnGroup
from .local import LocalStore, check_serializer, serializer_name
from .lock import DEFAULT_TTL, DEFAULT_WAIT
from .remote import Remote, RemoteConn, connect
from .settings import settings
from .sync import RemoteLock, Replica, history
from .sync.heads import HeadStore

__all__ = ["open"]

FLAGS = ("r", "w", "c", "n")
#: Seconds to wait for another process to release the local file.
DEFAULT_TIMEOUT = 60.0
#: The local hash table of a new file is sized for the remote's key count up to this many
#: keys (booklet grows it later as needed): a head cannot make a reader allocate more.
MAX_PRESIZED_KEYS = 10_000_000


def open(
    remote_conn: RemoteConn,
    file_path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    flag: str = "r",
    value_serializer: Any = None,
    n_buckets: int | None = None,
    buffer_size: int | None = None,
    remote_conn_group: bool = False,
    timeout: float | None = DEFAULT_TIMEOUT,
    remote_lock: RemoteLock = "push",
    lease_ttl: float = DEFAULT_TTL,
    lock_wait: float = DEFAULT_WAIT,
    allow_pickle: bool = False,
    at: int | datetime | None = None,
    pull: bool = False,
) -> EBooklet:
    """Open a database: a local file synced with a remote.

    Parameters
    ----------
    remote_conn : S3Connection, GCSConnection, AzureConnection, str or path
        The remote: a connection, or a remote string (``docs/stores.rst``): ``s3://``,
        ``gs://`` or ``az://BUCKET/KEY`` (credentials from each cloud's environment), a public
        ``http(s)://`` URL of the database (read-only), a ``file://`` URL or a local path
        naming the database inside a folder (a "folder remote", which needs no server).
    file_path : str, bytes or path
        The local file. Its sync state is kept beside it in ``<file_path>.ebooklet/``.
    flag : {"r", "w", "c", "n"}
        As in :mod:`dbm`: ``r`` read-only (the database must exist locally or remotely),
        ``w`` read-write (same), ``c`` read-write, created if missing, ``n`` a new empty
        database that replaces the remote one at its first push.
    value_serializer : str, class or None
        How values become bytes: a name from ``booklet.available_serializers`` (e.g.
        ``"pickle"``, ``"orjson"``, ``"str"``), a class with ``dumps``/``loads``, or None for
        raw bytes. Taken from the remote or the local file when they exist; naming it when
        reading a remote states which serializer you expect (and, for ``"pickle"``, that
        you trust the remote: see ``allow_pickle``).
    n_buckets : int or None
        Hash buckets of the local booklet file, used only when it is created: about the
        number of keys it will hold. A file that outgrows its table gets a larger one as soon
        as its keys outnumber its buckets (booklet rewires every key into it). None: 1.2 times
        the remote database's key count, or a table for about 300,000 keys for a new database.
    buffer_size : int or None
        Bytes of writes booklet buffers in memory before writing them to the file (None:
        booklet's default, 4 MiB).
    remote_conn_group : bool
        Open a remote connection group (:class:`ebooklet.RemoteConnGroup`): a database whose
        ``add(remote_conn)`` records how to reach other databases (never their credentials).
    timeout : float or None
        Seconds to wait for another process to release the local file (None: wait).
    remote_lock : {"push", "session", "none"}
        When to hold the remote lock (a lease object, see docs/sync.rst): ``"push"`` (the
        default) only while pushing, ``"session"`` from open to close (an exclusive writer,
        as in ebooklet 0.5), ``"none"`` never (commits stay safe: they are conditional
        writes, but concurrent pushers may have to rebase more often).
    lease_ttl : float
        Seconds the remote lock lasts without renewal (it is renewed while held).
    lock_wait : float
        Seconds to wait for another writer's remote lock before ``LeaseHeldError``.
    allow_pickle : bool
        Read a remote database whose values are pickled (``"pickle"``, ``"pickle_zstd"`` or
        another serializer that can run code while decoding) without naming its serializer.
        Unpickling runs code chosen by whoever can write to the remote, so the first open
        of a local file on such a remote raises :class:`~ebooklet.UnsafeSerializerError`
        unless you pass ``value_serializer="pickle"`` or ``allow_pickle=True``. The local
        file then records the serializer, and reopening it needs neither.
    at : int or datetime, optional
        Open the database as it was at a commit (its number, as :meth:`EBooklet.log` lists
        them) or at a time (the last commit made at or before that timezone-aware datetime).
        Needs ``flag="r"``; the database stays at that commit (``pull()`` does not move it).
        Commits stay readable for the database's retention window. Use a local path of its
        own for each commit you open.
    pull : bool
        Bring in what others pushed since the last sync before returning, as
        ``db.changes().pull()`` does (the remote must answer). Without it, a local file that
        exists opens as its last sync left it, with no request: a read-only copy stays at
        that commit until ``pull()``. A new local file is always at the remote's latest commit.

    Returns
    -------
    EBooklet

    Examples
    --------
    >>> import ebooklet, tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> with ebooklet.open(tmp / "remote" / "db", tmp / "db.blt", "c", "pickle") as db:
    ...     db["station-1"] = {"lat": -41.2}
    ...     db.changes().push().keys
    ['station-1']
    >>> with ebooklet.open(tmp / "remote" / "db", tmp / "copy.blt", "r", "pickle") as db:
    ...     db["station-1"]
    {'lat': -41.2}
    """
    if flag not in FLAGS:
        raise InvalidArgumentError(f"flag must be one of 'r', 'w', 'c', 'n' (as in dbm), not {flag!r}")
    if at is not None and flag != "r":
        raise InvalidArgumentError(f"at= opens a past commit read-only: use flag='r', not {flag!r}")
    if pull and (at is not None or flag == "n"):
        what = "at= stays at a past commit" if at is not None else "flag='n' starts an empty database"
        raise InvalidArgumentError(f"{what}, which pull=True would leave: give one of them")
    if remote_lock not in ("push", "session", "none"):
        raise InvalidArgumentError(f"remote_lock must be 'push', 'session' or 'none', not {remote_lock!r}")
    if not isinstance(allow_pickle, bool):
        raise ArgumentTypeError(f"allow_pickle must be True or False, not {allow_pickle!r}")
    if remote_conn_group:
        if value_serializer not in (None, GROUP_SERIALIZER):
            raise InvalidArgumentError("a remote connection group stores JSON; do not pass value_serializer")
        value_serializer = GROUP_SERIALIZER
    _check_serializer_arg(value_serializer)
    path = _local_path(file_path)
    remote = connect(remote_conn)
    if flag != "r" and not remote.writable:
        raise ReadOnlyError(
            f"{remote.location} is read-only (a public URL or no credentials); open it with "
            "flag='r', or use an S3Connection with credentials to write"
        )
    if not 0 < lease_ttl <= settings.lease_max_ttl:
        raise InvalidArgumentError(
            f"lease_ttl is seconds, more than 0 and at most {settings.lease_max_ttl:g}, not {lease_ttl!r} "
            "(a lease is renewed while it is held: a long push needs no long lease_ttl)"
        )
    lock = {"remote_lock": remote_lock, "lease_ttl": lease_ttl, "lock_wait": lock_wait}
    sizing = {"n_buckets": n_buckets, "buffer_size": buffer_size}
    local = None
    try:
        pinned = _commit_at(remote, at) if at is not None else None
        if flag == "n":
            local = LocalStore(
                path, create=True, new=True, value_serializer=value_serializer, timeout=timeout,
                **sizing,
            )
            replica = Replica(local, remote, replace=True, **lock)  # type: ignore[arg-type]
        elif LocalStore.has_state(path):
            local = LocalStore(path, create=False, timeout=timeout, read_only=flag == "r", **sizing)
            replica = Replica(local, remote, pinned=pinned, **lock)  # type: ignore[arg-type]
            if pinned is not None and local.state.pinned != pinned.commit_id:
                raise SyncError(
                    f"{path} holds another state of {remote.location} than commit {pinned.commit}; "
                    "open each past commit with a local path of its own"
                )
        else:
            local, replica = _first_open(
                remote, path, flag, value_serializer, allow_pickle, timeout, lock, sizing, pinned
            )
        if flag != "r":
            replica.start_session()
    except BaseException:
        if local is not None:
            local.close()
        remote.transport.close()
        raise
    kind = RemoteConnGroup if remote_conn_group else EBooklet
    db = kind(local, remote, replica, flag)
    if pull:
        try:
            db.changes().pull()
        except BaseException:
            db.close()
            raise
    return db


def _commit_at(remote: Remote, at: int | datetime) -> Head:
    """The head of the commit ``at`` names (a number or a time)."""
    heads = HeadStore(remote)
    latest, _ = heads.read_latest()
    if latest is None:
        raise RemoteNotFoundError(f"there is no database at {remote.location}")
    return history.find(heads, latest, at)


def _check_serializer_arg(value_serializer: Any) -> None:
    if value_serializer is None:
        return
    if isinstance(value_serializer, str):
        try:
            check_serializer(value_serializer)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        return
    if not all(callable(getattr(value_serializer, f, None)) for f in ("dumps", "loads")):
        raise ArgumentTypeError(
            "value_serializer must be a serializer name (e.g. 'pickle', 'orjson'), a class with "
            f"dumps/loads functions, or None for raw bytes; not {value_serializer!r}"
        )


def _local_path(file_path: Any) -> pathlib.Path:
    try:
        path = pathlib.Path(os.fsdecode(file_path))
    except TypeError:
        raise ArgumentTypeError(
            f"file_path must be a str, bytes or os.PathLike naming the local file, not "
            f"{type(file_path).__name__}"
        ) from None
    folder = path.absolute().parent
    if folder.exists() and not folder.is_dir():
        # booklet would report it as a file it cannot read: a damaged file, which it is not.
        raise LocalFolderIsAFileError(
            f"{folder} is a file, not a folder, so the local file cannot be in it: check the path", str(path)
        )
    if path.is_dir():
        raise LocalPathIsAFolderError(
            f"{path} is a folder: file_path names the local database file, e.g. {path / 'db.blt'}", str(path)
        )
    return path


def _remote_serializer(remote: Remote, name: str | None, asked: Any, allow_pickle: bool) -> Any:
    """The serializer of a new local file for a remote whose head names ``name``, given what
    the caller asked for: refuse a mismatch, and a serializer that runs code without consent."""
    if asked is not None:
        if serializer_name(asked) != name:
            raise SerializerMismatchError(
                f"{remote.location} stores values with serializer {name!r}, not "
                f"{serializer_name(asked)!r}; open it without value_serializer, or with "
                f"value_serializer={name!r}"
            )
        return asked
    if name is not None and name.startswith("custom:"):
        raise SerializerMismatchError(
            f"{remote.location} uses a custom value serializer ({name[7:]}); pass that class "
            "as value_serializer"
        )
    if runs_code(name) and not allow_pickle:
        raise UnsafeSerializerError(
            f"{remote.location} stores values with serializer {name!r}, and decoding them runs "
            "code chosen by whoever can write to that remote (a pickle can call any function). "
            f"If you trust it, open it with value_serializer={name!r} or allow_pickle=True"
        )
    if name is not None and name != "bytes":
        try:
            check_serializer(name)
        except ValueError:
            raise RemoteFormatError(
                f"{remote.location} stores values with serializer {name!r}, which this "
                "installation of booklet does not have; upgrade booklet (and install what that "
                "serializer needs)"
            ) from None
    return name


def _first_open(
    remote: Remote,
    path: pathlib.Path,
    flag: str,
    value_serializer: Any,
    allow_pickle: bool,
    timeout: float | None,
    lock: dict[str, Any],
    sizing: dict[str, int | None],
    pinned: Head | None = None,
) -> tuple[LocalStore, Replica]:
    """A local file that has never been synced: learn the remote head once (or take the past
    commit it is ``pinned`` to)."""
    head, etag = (pinned, None) if pinned is not None else HeadStore(remote).read_latest()
    if head is None and flag in ("r", "w") and not path.exists():
        advice = "; use flag='c' to create it" if remote.writable else "; check the URL"
        raise RemoteNotFoundError(
            f"flag={flag!r} opens an existing database, but neither the local file {path} nor "
            f"the remote {remote.location} exists{advice}"
        )
    if head is not None:
        value_serializer = _remote_serializer(remote, head.value_serializer, value_serializer, allow_pickle)
    local = LocalStore(
        path, create=True, value_serializer=value_serializer, timeout=timeout,
        expected_keys=min(head.n_keys, MAX_PRESIZED_KEYS) if head is not None else 0, **sizing,
    )
    try:
        if head is not None and local.codec.name != head.value_serializer:
            raise SerializerMismatchError(
                f"the local file {path} stores values with serializer "
                f"{local.codec.name!r} but the remote uses "
                f"{head.value_serializer!r}; use another local path"
            )
        replica = Replica(local, remote, pinned=pinned, **lock)
        replica.index.set_base(head, etag)
        if pinned is not None:
            local.state.pinned = pinned.commit_id
        if len(local) > 0:
            local.external_edits = True  # an existing booklet file: compare all of it once
        local.sync()
    except BaseException:
        local.abandon()
        raise
    return local, replica
