"""The whole remote database: its history, compaction, retention, deletion and copies.

A base class of :class:`ebooklet.EBooklet`, kept apart so that the database class stays small;
it uses the database's lock, local store, base index and replica.
"""

from __future__ import annotations

import itertools
import threading
from datetime import datetime

from .codec import Codec
from .errors import InvalidArgumentError
from .format import DEFAULT_RETENTION
from .info import RemoteInfo
from .local import LocalStore
from .remote import RemoteConn, connect
from .results import Change, CommitInfo, ProgressCallback, PushResult
from .settings import now_us
from .sync import Replica, history
from .sync.index import BaseIndex


class WholeDatabase:
    """Operations on the whole remote database (a base class of EBooklet)."""

    # What the database provides (see EBooklet).
    _lock: threading.RLock
    _local: LocalStore
    _index: BaseIndex
    _replica: Replica
    _codec: Codec

    def log(self, limit: int | None = None) -> list[CommitInfo]:
        """The commits of the remote database that its retention keeps readable, newest first.

        Each :class:`~ebooklet.CommitInfo` gives the commit's number, time, how many keys it
        wrote and deleted, and its author where known. Costs one request for the head, and one
        more per 64 commits listed beyond the latest 64.
        """
        self._check()
        with self._lock:
            head, _ = self._replica.current()
            if head is None:
                return []
            commits = history.iter_commits(self._replica.heads, head, now_us())
            return list(itertools.islice(commits, limit))

    def diff(self, old: int | datetime, new: int | datetime | None = None) -> list[Change]:
        """What changed on the remote from commit ``old`` to commit ``new`` (default: the
        latest): one :class:`~ebooklet.Change` per key added, modified or deleted, sorted by
        key. Commits are given by number or time, as for :func:`ebooklet.open` ``at=``."""
        self._check()
        with self._lock:
            return self._replica.diff(old, new)

    def compact(self, progress: ProgressCallback | None = None) -> PushResult:
        """Rewrite the remote's segments that hold dead bytes, or are small, into new ones.

        Pushes do this on the way when it is cheap; call it after large deletes, or for a
        database whose index has many parts. It is an ordinary commit (conditional, atomic,
        safe against concurrent writers and readers) and also pushes any local change.
        Replaced segments stay readable for the database's retention window, until
        :func:`ebooklet.gc` removes them.
        """
        self._check_write("compact")
        with self._lock:
            return self._replica.push(None, progress, compact=True)

    def set_retention(self, commits: int | None = None, days: float | None = None) -> None:
        """Keep the latest ``commits`` commits, and every commit younger than ``days`` days,
        readable (with :func:`ebooklet.open` ``at=``) and safe from :func:`ebooklet.gc`.

        The setting belongs to the remote database; it is recorded with the next push.
        """
        self._check_write("set the retention")
        base = self._index.base
        current = dict(base.retention) if base is not None else dict(DEFAULT_RETENTION)
        if commits is not None:
            if not isinstance(commits, int) or isinstance(commits, bool) or commits < 1:
                raise InvalidArgumentError(f"commits must be a whole number of at least 1, not {commits!r}")
            current["commits"] = commits
        if days is not None:
            if not isinstance(days, (int, float)) or isinstance(days, bool) or days < 0:
                raise InvalidArgumentError(f"days must be a number of days of at least 0, not {days!r}")
            current["days"] = float(days)
        with self._lock:
            self._local.state.retention = current
            self._local.save_state()

    def delete_remote(self) -> int:
        """Delete the remote database: its head first (readers see it gone at once), then
        every other object under its prefix. Returns how many objects were deleted.

        The local file is kept; a later push creates the database anew from it (keys that
        were never fetched are gone with the remote: ``load_items()`` first to keep them).
        """
        self._check_write("delete the remote")
        with self._lock:
            return self._replica.delete_remote()

    def copy_remote(self, remote_conn: RemoteConn, overwrite: bool = False) -> RemoteInfo:
        """Copy the remote database (as committed now) to another location.

        Objects are copied inside the store when both locations share the endpoint and
        credentials, and streamed object by object otherwise. The copy's head is written
        last, so a reader of the target never sees half a copy. The copy gets its own uuid.
        An existing database at the target is replaced only with ``overwrite=True``.
        """
        self._check()
        target = connect(remote_conn)
        try:
            with self._lock:
                copied = self._replica.copy_to(target, overwrite)
        finally:
            target.transport.close()
        return RemoteInfo.from_head(target.location, copied)
