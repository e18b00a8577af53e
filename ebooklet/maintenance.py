"""Looking after a remote database: garbage collection and verification.

Both work on the remote alone, without a local file: pass what :func:`ebooklet.open` accepts.
"""

from __future__ import annotations

from .errors import ReadOnlyError
from .remote import RemoteConn, connect
from .sync import gc as _gc
from .sync import verify as _verify
from .sync.heads import HeadStore
from .sync.objects import ObjectStore

__all__ = ["GcReport", "VerifyReport", "gc", "verify"]

GcReport = _gc.GcReport
VerifyReport = _verify.VerifyReport


def gc(remote_conn: RemoteConn, *, min_age: float | None = None, dry_run: bool = False) -> GcReport:
    """Remove the objects of a remote database that no retained commit references.

    Commits stay readable for the database's retention window (see
    :meth:`ebooklet.EBooklet.set_retention`); objects none of them uses go: those replaced by
    later commits, leftovers of failed or interrupted pushes, and log objects of commits past
    retention. Objects younger than ``min_age`` seconds, by the store's clock, are kept, because
    they may belong to a push in flight (a push refuses to commit once its first upload is
    older than the default, by the store's clock). Below the default, gc holds the
    database's lock while it collects, and keeps to the default while a push holds it.

    Parameters
    ----------
    remote_conn : S3Connection, str or path
        The remote database (it must be writable).
    min_age : float or None
        Seconds an unreferenced object must have existed before it is removed.
    dry_run : bool
        Report what would be removed, and remove nothing.

    Returns
    -------
    GcReport
        What was removed (``removed``, ``bytes_removed``) and what was kept.
    """
    remote = connect(remote_conn)
    try:
        if not remote.writable:
            raise ReadOnlyError(f"cannot collect garbage on {remote.location}: it is read-only")
        objects = ObjectStore(remote)
        return _gc.collect(remote, HeadStore(remote, objects), min_age=min_age, dry_run=dry_run)
    finally:
        remote.transport.close()


def verify(remote_conn: RemoteConn, *, deep: bool = False) -> VerifyReport:
    """Check that every object the retained commits of a remote database reference exists,
    whole; with ``deep``, also read every value of the latest commit and check its hash.

    Returns a :class:`VerifyReport`: true when nothing is wrong, else its ``problems`` name
    each damaged or missing object.

    Examples
    --------
    >>> import ebooklet, tempfile, pathlib
    >>> remote = pathlib.Path(tempfile.mkdtemp()) / "db"
    >>> with ebooklet.open(remote, remote.with_suffix(".blt"), "c") as db:
    ...     db["a"] = b"1"
    ...     _ = db.changes().push()
    >>> bool(ebooklet.verify(remote, deep=True))
    True
    """
    remote = connect(remote_conn)
    try:
        objects = ObjectStore(remote)
        return _verify.check(remote, HeadStore(remote, objects), objects, deep=deep)
    finally:
        remote.transport.close()
