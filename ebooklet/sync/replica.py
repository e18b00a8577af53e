"""The orchestrator: a local file bound to its remote, and the operations that sync them.

:class:`Replica` composes the units of the engine and runs the protocol of docs/sync.rst:
``changes()`` (a three-way comparison), ``push()`` (the lease around a
:class:`~ebooklet.sync.push.Push`, whose attempts each rebase on the current head, stream,
and commit by compare-and-swap), ``pull()``,
``discard()``, and the whole-database operations ``delete_remote()`` and ``copy_to()``.
It holds no state of its own beyond the lease of a session; what an operation learns travels
in return values.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from ..errors import (
    InvalidArgumentError,
    PreconditionFailed,
    ReadOnlyError,
    RemoteNotFoundError,
    SyncError,
)
from ..format import Head, object_kind
from ..local import LocalStore
from ..lock import DEFAULT_TTL, DEFAULT_WAIT, Lease
from ..phases import timed
from ..remote import Remote, Update
from ..results import Change, ProgressCallback, PullResult, PushResult
from ..settings import settings
from .conflicts import DecodedInputs, Policy, apply_merged, check_policy, resolve
from .diff import ChangeSet, LocalDiff, local_changes, remote_changes, three_way
from .heads import HeadStore
from .history import find
from .index import BaseIndex
from .inflight import InFlight
from .leasing import Turns
from .objects import ObjectStore, parallel_map
from .push import Push
from .reads import ValueReader

RemoteLock = Literal["push", "session", "none"]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building per-key structures in bulk.

    Bulk work allocates an object or more per key; without the pause the collector runs
    hundreds of times over them for nothing (they hold no cycles).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Replica:
    """A local store bound to its remote: the base, lazy reads, changes, push and pull."""

    def __init__(
        self,
        local: LocalStore,
        remote: Remote,
        *,
        replace: bool = False,
        remote_lock: RemoteLock = "push",
        lease_ttl: float = DEFAULT_TTL,
        lock_wait: float = DEFAULT_WAIT,
        pinned: Head | None = None,
    ) -> None:
        self.local = local
        #: A past commit this replica stays at (opened with ``at=``), or None to follow the remote.
        self.pinned = pinned
        self.remote = remote
        self.remote_lock = remote_lock
        self._lease_args = (lease_ttl, lock_wait)
        self._session_lease: Lease | None = None
        #: Without the lease: the turns of writers whose pushes collide, kept from push to push.
        self.turns = Turns(remote, lease_ttl)
        self.objects = ObjectStore(remote)
        self.heads = HeadStore(remote, self.objects)
        self.index = BaseIndex(local, remote, self.objects)
        self.values = ValueReader(local, self.index, self.objects)
        self.inflight = InFlight(local, self.index, self.heads)
        if replace:
            self.index.start_replacing()

    @timed("Replica.current")
    def current(self) -> tuple[Head | None, str | None]:
        """The current remote head, asked for conditionally on the base, and its ETag."""
        if self.pinned is not None:
            return self.pinned, None
        # A base whose metadata was lost locally is read in full again (a push copies it).
        known = None if self.index.metadata_lost else self.index.etag
        head, etag, changed = self.heads.read(if_none_match=known)
        if not changed:
            return self.index.synced_head, etag
        if head is not None:
            self.index.check_same_database(head)
        return head, etag

    def changes(self) -> list[Change]:
        """The three-way comparison of the local file, the base and the current remote."""
        self.inflight.settle()
        head, _ = self.current()
        return three_way(self.index, head, local_changes(self.index).changes)

    def pending(self) -> list[Change]:
        """The local changes the journal lists, without a request: a key written is "added"
        unless a locally stored index part of the base shows it there ("modified")."""
        touched = self.local.touched
        out = []
        for key in sorted(touched):
            deleted_at = touched.get(key)
            if deleted_at is not None:
                out.append(Change(key, "local", "deleted", None, deleted_at, None))
                continue
            entry = self.local.pending_change(key)
            kind: Any = "modified" if self.index.stored_entry(key) is not None else "added"
            out.append(Change(key, "local", kind, None, entry.timestamp if entry else None, None))
        return out

    def diff(self, old: int | datetime, new: int | datetime | None = None) -> list[Change]:
        """The keys that differ from commit ``old`` to commit ``new`` (default: the latest),
        as :class:`Change` values seen from the remote side."""
        latest, _ = self.current()
        if latest is None:
            raise RemoteNotFoundError(f"there is no database at {self.remote.location}")
        before = find(self.heads, latest, old)
        after = latest if new is None else find(self.heads, latest, new)
        changed = remote_changes(self.index, before, after)
        was = self.index.merged(before) if changed else None
        out = []
        for key in sorted(changed):
            entry = changed[key]
            kind: Any = "deleted" if entry is None else ("modified" if key in was else "added")  # type: ignore[operator]
            out.append(Change(key, "remote", None, kind, None, entry.timestamp if entry else None))
        return out

    # -- the remote lock -------------------------------------------------------------------

    def start_session(self) -> None:
        """Take the remote lock until :meth:`end_session` (``remote_lock="session"``)."""
        if self.remote_lock == "session" and self.remote.writable and self._session_lease is None:
            lease = Lease(self.remote, *self._lease_args)
            lease.__enter__()
            self._session_lease = lease

    def end_session(self) -> None:
        if self._session_lease is not None:
            self._session_lease.release()
            self._session_lease = None

    # -- push ------------------------------------------------------------------------------

    @timed("Replica.push")
    def push(
        self,
        policy: Policy = None,
        progress: ProgressCallback | None = None,
        compact: bool = False,
        max_delete: float | None = settings.max_delete,
    ) -> PushResult:
        """Commit local changes, rebasing over what others committed meanwhile.

        Segments worth merging are rewritten on the way when that is cheap (a small index);
        ``compact`` rewrites every segment with dead bytes, and commits even with no local
        change. ``max_delete`` (a percentage, None for no limit) stops a push that would delete
        more of the remote's keys than that without anyone asking (see MassDeleteError).
        """
        check_policy(policy)
        if max_delete is not None and not 0 <= max_delete <= 100:
            raise InvalidArgumentError(
                f"max_delete is a percentage from 0 to 100 (or None), not {max_delete!r}"
            )
        stats = self.remote.transport.stats
        start = stats.snapshot()
        # The local changes it carries go to the disk while the push reads and uploads them;
        # they are durable before anything commits them (Push.run syncs).
        self.local.write_back()
        if self._session_lease is not None and not self._session_lease.held:
            self.end_session()  # the session's lease was lost: take a new one
            self.start_session()
        with _gc_paused():
            if self.remote_lock == "push" and self.remote.writable and (compact or self._has_changes()):
                # Taken by the push while it streams its changes (see Push.run).
                lease = Lease(self.remote, *self._lease_args)
                result = Push(self).run(policy, lease, progress, compact, max_delete, take_lease=True,
                                        wait=self._lease_args[1])
            else:
                result = Push(self).run(policy, self._session_lease, progress, compact, max_delete,
                                        wait=self._lease_args[1])
        result.requests = stats.requests - start[0]
        result.bytes_sent = stats.bytes_sent - start[1]
        return result

    def _has_changes(self) -> bool:
        """A cheap look for anything a push would send (no lease is taken for nothing)."""
        meta = self.local.get_metadata()
        base = self.index.base
        return bool(
            self.local.touched or self.local.external_edits or base is None
            or (meta is not None and meta[1] > (base.metadata_timestamp or 0))
            or self.local.state.retention is not None
        )

    # -- pull ------------------------------------------------------------------------------

    def pull(self, policy: Policy = None) -> PullResult:
        """Bring in what others committed since the last sync."""
        check_policy(policy)
        start = self.remote.transport.stats.requests
        result = PullResult()
        self.inflight.settle()
        head, etag = self.current()
        base = self.index.base
        if head is None:
            if base is not None:
                advice = "; the local file keeps what it had fetched"
                if self.remote.writable:
                    advice = (
                        "; to create it again from this file's data, call delete_remote() and "
                        "then push()"
                    )
                raise RemoteNotFoundError(
                    f"the remote database {self.remote.location} no longer exists{advice}"
                )
        elif not self.index.replacing and (base is None or head.commit_id != base.commit_id):
            remote = remote_changes(self.index, base, head)
            # Edits made behind ebooklet's back are recorded before any part is re-stored.
            diff = local_changes(self.index) if remote or self.local.external_edits else LocalDiff()
            inputs = DecodedInputs(self.local.codec, self.index, self.values)
            resolution = resolve(ChangeSet(diff.changes, remote), policy, inputs, head.timestamp)
            apply_merged(self.local, resolution)
            kept = resolution.same | resolution.local | set(resolution.merged)
            dropped = set(remote) - kept
            for key in sorted(dropped):
                (result.updated if remote[key] is not None else result.deleted).append(key)
            # Local changes survive a pull, except those now identical to the remote.
            pending = set(self.local.touched) - dropped - resolution.same
            self.index.adopt(head, etag, {}, dropped, pending, scanned=diff.scanned)
        result.commit = head.commit if head is not None else None
        result.requests = self.remote.transport.stats.requests - start
        return result

    # -- discard ---------------------------------------------------------------------------

    def discard(self, keys: Iterable[str] | None = None) -> list[str]:
        """Revert local changes (all, or those to ``keys``) to the base; return their keys."""
        changes = local_changes(self.index).changes
        chosen = sorted(changes if keys is None else set(keys) & set(changes))
        for key in chosen:
            self.local.drop(key)
        # Back to "not fetched": the next read brings the base value.
        self.index.forget_present(chosen)
        self.local.clear_touched(set(chosen))
        self.local.sync()
        return chosen

    # -- whole-database operations -------------------------------------------------------

    def load(self, keys: Iterable[str], progress: ProgressCallback | None = None) -> dict[str, bytes]:
        """Fetch lazy keys' values into the local file."""
        return self.values.load(keys, progress)

    @staticmethod
    def _require_writable(remote: Remote, what: str) -> None:
        if not remote.writable:
            raise ReadOnlyError(
                f"cannot {what} {remote.location}: it is read-only (a public URL or a connection "
                "without credentials)"
            )

    def delete_remote(self) -> int:
        """Delete the remote database (head first), keeping the local file; return objects deleted."""
        self._require_writable(self.remote, "delete")
        transport = self.remote.transport
        self.end_session()  # a session's lease object is deleted with the rest
        lease = Lease(self.remote, *self._lease_args) if self.remote_lock != "none" else None
        if lease is not None:
            lease.__enter__()
        try:
            # The head goes first: from then on every reader sees no database.
            transport.delete([self.remote.db_key])
            # Only the format's names: whatever else lies under the prefix (a file of the
            # user's, another database whose key runs through this prefix) is not ours.
            prefix = self.remote.prefix
            names = [
                k for k in transport.list(prefix)
                if object_kind(k[len(prefix):]) is not None and (lease is None or k != lease.key)
            ]
            transport.delete(names)
            # Uploads in parts a dead push left unfinished hold parts that no listing shows.
            for upload in transport.uploads(prefix):
                if object_kind(upload.key[len(prefix):]) is not None:
                    transport.abort_upload(upload)
        finally:
            if lease is not None:
                lease.release()
                transport.delete([lease.key])
        self.start_session()
        # The local file stays; its next push creates the database again from it.
        self.index.start_replacing()
        self.index.set_base(None, None)
        self.local.external_edits = True
        self.local.save_state()
        return len(names) + 1

    def copy_to(self, target: Remote, overwrite: bool = False) -> Head:
        """Copy the current remote database to ``target``; its head is written last."""
        self._require_writable(target, "copy to")
        head, _ = self.heads.read_latest()
        if head is None:
            raise RemoteNotFoundError(f"there is no database at {self.remote.location} to copy")
        target_heads = HeadStore(target)
        old, old_etag = target_heads.read_latest()
        if old is not None and not overwrite:
            raise SyncError(f"{target.location} already holds a database; pass overwrite=True to replace it")
        names = [n for n in head.parts if n] + list(head.segments)

        def copy(name: str) -> None:
            src, dst = self.remote.prefix + name, target.prefix + name
            if not self.remote.transport.copy(src, target.transport, dst):
                # One object at a time: at most one segment (64 MiB) is ever in memory.
                blob = self.remote.transport.get(src)
                target.transport.put(dst, blob.data, "overwrite")  # type: ignore[union-attr]

        for _ in parallel_map(copy, names):
            pass
        copied = Head(**asdict(head))
        copied.uuid = Head.new(None).uuid
        copied.lease_token = 0
        # The copy's history starts with itself: its log object is written before its head.
        copied.recent = [[copied.commit, copied.commit_id, copied.timestamp, copied.written, copied.deleted]]
        name, blob = HeadStore.log_entry(copied)
        target.transport.put(target.prefix + name, blob, "overwrite")
        mode: Any = Update(old_etag) if old_etag is not None else "create"
        try:
            target.transport.put(target.db_key, copied.encode(), mode)
        except PreconditionFailed:
            raise SyncError(f"{target.location} changed while copying to it; nothing was replaced") from None
        return copied
