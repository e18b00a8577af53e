"""Changes: what differs between a local file and its remote, and the means to settle it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from .errors import ReadOnlyError
from .results import Change, ProgressCallback, PullResult, PushResult
from .settings import settings
from .sync import Policy, Replica

#: Checks that the database may be used: with an action's name, that it may be written.
Guard = Callable[[str | None], None]

__all__ = ["Changes"]


class Changes:
    """The differences between a local file and its remote, and the means to settle them.

    Returned by :meth:`EBooklet.changes`.
    """

    def __init__(
        self, replica: Replica, lock: threading.RLock, guard: Guard, writable: bool, offline: bool = False
    ) -> None:
        self._replica = replica
        self._lock = lock
        self._guard = guard
        self._writable = writable
        #: True when the remote is not checked: only the journal's local changes are listed.
        self.offline = offline

    def iter_changes(self) -> Iterator[Change]:
        """One :class:`~ebooklet.Change` per key that differs, sorted by key.

        Costs one conditional request when the remote has not moved, none when
        ``offline``.
        """
        self._guard(None)
        with self._lock:
            changes = self._replica.pending() if self.offline else self._replica.changes()
        yield from changes

    def push(
        self,
        on_conflict: Policy = None,
        progress: ProgressCallback | None = None,
        max_delete: float | None = settings.max_delete,
    ) -> PushResult:
        """Commit local changes to the remote, atomically.

        If others committed meanwhile, their changes to other keys are merged (and pulled
        into this file). Keys changed on both sides raise :class:`~ebooklet.ConflictError`
        unless ``on_conflict`` is ``"local"``, ``"remote"``, ``"newest"`` or a function
        ``(key, local, remote, base) -> value`` (return ``ebooklet.DELETED`` to delete).
        ``progress`` is called with an :class:`ebooklet.Progress` as values go up.
        ``max_delete`` (percent, None for no limit) stops a push that would delete more than
        that share of the remote's keys found missing from the local file rather than deleted
        through ebooklet, with :class:`~ebooklet.MassDeleteError`.
        """
        self._guard("push")
        with self._lock:
            return self._replica.push(on_conflict, progress, max_delete=max_delete)

    def discard(self, keys: Iterable[str] | None = None) -> list[str]:
        """Throw away local changes (all, or those to ``keys``), back to the last sync.

        Discarded keys read as the remote had them at the last sync (fetched again when
        read). Returns the keys whose changes were discarded.
        """
        self._guard("discard changes")
        with self._lock:
            return self._replica.discard(keys)

    def pull(self, on_conflict: Policy = None) -> PullResult:
        """Bring in what others committed: refresh or drop cached values, list new keys."""
        self._guard(None)
        with self._lock:
            if not self._writable and on_conflict not in (None, "remote"):
                raise ReadOnlyError("a database opened with flag='r' can only take the remote's side")
            return self._replica.pull(on_conflict)
