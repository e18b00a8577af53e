"""Staged commits: many processes or machines write, one commit publishes (docs/scaling.rst).

:func:`stage` gives a write-only mapping whose values and index entries are uploaded as they
come; its ``close()`` returns a small picklable token. :func:`commit` publishes any number of
tokens in one conditional commit of the database's head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import ArgumentTypeError, ReadOnlyError, RemoteNotFoundError, SyncError
from .lock import DEFAULT_TTL, DEFAULT_WAIT, Lease
from .remote import Remote, RemoteConn, connect
from .results import PushResult
from .sync.conflicts import Policy, check_policy
from .sync.stage import Stage, StageToken
from .sync.staged import commit_staged

__all__ = ["Stage", "StageToken", "commit", "stage"]


def stage(remote_conn: RemoteConn, value_serializer: Any = None) -> Stage:
    """Stage writes to a remote database, to publish later with :func:`commit`.

    The stage reads the database's head once (for its serializer and identity) and takes
    writes like a write-only mapping: ``stage[key] = value``, ``del stage[key]``,
    ``stage.update(...)``, each value checked and encoded as ``db[key] = value`` would.
    Values are packed into segments sorted by index part and uploaded in the background,
    in bounded memory. ``close()`` uploads the rest and returns a :class:`StageToken`; as a
    context manager the stage closes at the end of the block (the token is then
    ``stage.token``), and an exception inside the block discards its uploads instead.
    Nothing staged is visible to readers before :func:`commit`; uploads never committed
    are removed by :func:`ebooklet.gc` once older than its ``min_age``.

    Parameters
    ----------
    remote_conn : S3Connection, GCSConnection, AzureConnection, str or path
        A writable remote, as :func:`ebooklet.open` takes it. The database must exist.
    value_serializer : class, optional
        Only for a database with a custom serializer: that class.

    Examples
    --------
    >>> import ebooklet, tempfile, pathlib
    >>> remote = pathlib.Path(tempfile.mkdtemp()) / "db"
    >>> with ebooklet.open(remote, remote.with_suffix(".blt"), "c", "orjson") as db:
    ...     db.changes().push().committed
    True
    >>> with ebooklet.stage(remote) as s:
    ...     s["a"] = [1, 2]
    ...     s.update({"b": 3})
    >>> ebooklet.commit(remote, [s.token]).keys
    ['a', 'b']
    """
    return Stage(remote_conn, value_serializer)


def commit(
    remote_conn: RemoteConn,
    tokens: Sequence[StageToken],
    on_conflict: Policy = None,
    *,
    remote_lock: bool = True,
    lease_ttl: float = DEFAULT_TTL,
    lock_wait: float = DEFAULT_WAIT,
) -> PushResult:
    """Publish staged writes in one conditional commit.

    The tokens' runs are merged into the index part by part (memory: a block of each run and
    one index part). A key staged in several tokens takes the value of the latest token in
    ``tokens`` (within a stage, the latest write). A key that another writer changed since a
    stage opened (between the commit the stage's token names as its base and the head now) is
    a conflict, settled by ``on_conflict``:

    - ``None`` (the default): raise :class:`~ebooklet.ConflictError` naming the keys; nothing
      is committed.
    - ``"local"``: the staged value wins; ``"remote"``: the other writer's change stays;
      ``"newest"``: the later timestamp wins (a remote delete is dated by its commit).
    - a function ``(key, staged, remote, base) -> value or ebooklet.DELETED``, given decoded
      values (``ebooklet.DELETED`` for a side that deleted the key).

    The commit takes the remote lock as a push does (``remote_lock=False``: none; the commit
    stays conditional), rebases and retries when another writer commits first, and refuses to
    commit uploads that garbage collection removed or may remove (older than its safe age by
    the store's clock): stage them again then.

    Returns
    -------
    PushResult
        The commit's number, the keys written and deleted (a staged value identical to the
        remote's is not a change), requests and bytes sent.
    """
    check_policy(on_conflict)
    tokens = list(tokens)
    if not all(isinstance(t, StageToken) for t in tokens):
        raise ArgumentTypeError("tokens must be what Stage.close() returned (StageToken values)")
    own = not isinstance(remote_conn, Remote)
    remote = connect(remote_conn)
    try:
        if not remote.writable:
            raise ReadOnlyError(f"cannot commit to {remote.location}: it is read-only")
        if not tokens:
            return PushResult()
        start = remote.transport.stats.snapshot()
        if not remote_lock:
            result = commit_staged(remote, tokens, on_conflict, None, lock_wait)
        else:
            with Lease(remote, lease_ttl, lock_wait) as lease:
                result = commit_staged(remote, tokens, on_conflict, lease, lock_wait)
        # Counted here: the lease's requests (taken and released) are the commit's too.
        end = remote.transport.stats.snapshot()
        result.requests, result.bytes_sent = end[0] - start[0], end[1] - start[1]
        return result
    except RemoteNotFoundError as exc:
        if "is gone from" not in str(exc):
            raise
        raise SyncError(
            f"{remote.location}: an upload of these stages is gone (garbage collection removes "
            "stages left uncommitted longer than its min_age); nothing was committed. Stage those "
            "writes again"
        ) from exc
    finally:
        if own:
            remote.transport.close()
