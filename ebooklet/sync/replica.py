"""The orchestrator: a local file bound to its remote, and the operations that sync them.

:class:`Replica` composes the units of the engine and runs the protocol of docs/sync.rst:
``changes()`` (a three-way comparison), ``push()`` (a loop over one attempt, each of which
rebases on the current head, uploads, and commits by compare-and-swap), ``pull()``,
``discard()``, and the whole-database operations ``delete_remote()`` and ``copy_to()``.
It holds no state of its own beyond the lease of a session; what an operation learns travels
in return values.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import getpass
import hashlib
import itertools
import logging
import operator
import socket
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from ..errors import (
    CommitUnknownError,
    InvalidArgumentError,
    MassDeleteError,
    PreconditionFailed,
    PushConflictError,
    ReadOnlyError,
    RemoteError,
    RemoteNotFoundError,
    SyncError,
)
from ..format import HASH_LEN, Entry, Head, Part, bits_for, new_commit_id, parts_of, value_hash
from ..local import LocalStore
from ..lock import DEFAULT_TTL, DEFAULT_WAIT, Lease
from ..remote import Remote, Update
from ..results import Change, ProgressCallback, PullResult, PushResult
from .commit import INFERRED, MOVED, SegmentWriter, Spool, build_head, next_head, plan_compaction
from .conflicts import DELETED, Policy, Resolution, check_policy, resolve
from .diff import ChangeSet, LocalChange, LocalDiff, local_changes, now_us, remote_changes, same, three_way
from .gc import MIN_AGE_S, collect
from .heads import HeadStore
from .history import find
from .index import BaseIndex
from .objects import ObjectStore, Tracker, Uploader, parallel_map
from .reads import ValueReader

logger = logging.getLogger(__name__)

#: How many times a push rebases over concurrent commits before giving up.
PUSH_ATTEMPTS = 8
#: The share (percent) of the remote's keys a push may delete without asking, counting only
#: deletes inferred from keys missing in the local file (rclone bisync's --max-delete).
MAX_DELETE = 50
#: A push compacts on the way only when the index has at most this many parts (it reads them all).
CHEAP_PARTS = 4
#: Every GC_EVERY-th commit collects garbage after committing.
GC_EVERY = 64


def _author() -> str | None:
    """Who is committing, as ``user@host``, where the system knows."""
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 - an unknown user is no reason to fail a push
        return None

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


class _PushState:
    """What the attempts of one push share: the changes are streamed (values uploaded,
    records spooled) once, whichever attempt commits."""

    def __init__(self, objects: ObjectStore, tracker: Tracker) -> None:
        self.tracker = tracker
        self.uploader = Uploader(objects, tracker)
        self.started = now_us()
        self.segments: list[str] = []  # segment names, by the index records use
        self.sizes: dict[str, int] = {}
        self.writer = SegmentWriter(new_commit_id(), self.segments, self.sizes, self.put)
        self.spool: Spool | None = None
        self.adds = 0  # keys written (an upper bound on the keys a commit adds)
        self.add_key_bytes = 0
        self.sent = False  # a commit request went out: its objects may be referenced

    def put(self, name: str, data: bytes, keys: int = 0) -> None:
        """Upload an object in the background (the progress total grows with it)."""
        self.tracker.bytes_total += len(data)
        self.uploader.submit(name, data, keys)

    def close(self) -> None:
        self.uploader.close()
        if self.spool is not None:
            self.spool.close()


class _Prefetch:
    """Parts of a head, read one at a time in order, with the next few fetched ahead in
    parallel (a push over a large index reads them all, but holds only a few)."""

    AHEAD = 8

    def __init__(self, index: BaseIndex, head: Head) -> None:
        self.index = index
        self.head = head
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="ebooklet-parts")
        self._futures: dict[int, concurrent.futures.Future[Part]] = {}

    def __call__(self, q: int) -> list[tuple[str, Entry]]:
        n = len(self.head.parts)
        for ahead in range(q, min(n, q + self.AHEAD)):
            if ahead not in self._futures and self.head.parts[ahead] is not None:
                self._futures[ahead] = self._pool.submit(self.index.peek_part, self.head, ahead)
        future = self._futures.pop(q, None)
        return [] if future is None else list(future.result().items())

    def close(self) -> None:
        self._futures.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Presence:
    """Presence bits of the parts a push writes: a key is present when its value is in the
    local file now (written here), or when it was marked present in the base and this push
    does not drop it; for a base part never stored locally, the data file is asked."""

    def __init__(self, index: BaseIndex, dropped: set[str], bits: int) -> None:
        self.index = index
        self.dropped = dropped
        self.bits_ = bits
        base = index.base
        self.base = base if base is not None and base.part_bits <= bits else None
        self._q: int | None = None
        self._present: set[str] | None = None

    def _base_present(self, p: int) -> set[str] | None:
        base = self.base
        if base is None:
            return None
        q = p >> (self.bits_ - base.part_bits)
        if q != self._q:
            self._q = q
            name = base.parts[q]
            local = self.index.local
            if name is None:
                self._present = set()
            elif not local.has_part(q, name):
                self._present = None
            else:
                part = self.index.peek_part(base, q)
                bits = local.bits(q)
                self._present = {
                    key for row, key in enumerate(part.keys)
                    if (row >> 3) < len(bits) and bits[row >> 3] & (1 << (row & 7))
                }
        return self._present

    def bits(self, p: int, part: Part, local_keys: set[str] | None) -> bytes:
        """The presence bits of new part ``p``; ``local_keys`` are its keys written locally
        (None: all of them)."""
        n = len(part)
        if local_keys is None or len(local_keys) == n:
            return bytes([0xFF] * (n >> 3)) + (bytes([(1 << (n & 7)) - 1]) if n & 7 else b"")
        out = bytearray((n + 7) // 8)
        carried = self._base_present(p)
        dropped, local = self.dropped, self.index.local
        for row, key in enumerate(part.keys):
            if key in local_keys:
                pass
            elif key in dropped:
                continue
            elif carried is not None:
                if key not in carried:
                    continue
            elif key not in local:
                continue
            out[row >> 3] |= 1 << (row & 7)
        return bytes(out)


class _Inputs:
    """The decoded values a conflict function is given."""

    def __init__(self, replica: Replica) -> None:
        self.codec = replica.local.codec
        self.index = replica.index
        self.values = replica.values

    def encode(self, value: Any) -> bytes:
        return self.codec.encode(value)

    def local_value(self, change: LocalChange) -> Any:
        return DELETED if change.raw is None else self.codec.decode(change.raw)

    def remote_value(self, key: str, entry: Entry | None) -> Any:
        return DELETED if entry is None else self.codec.decode(self.values.read({key: entry})[key])

    def base_value(self, key: str) -> Any:
        found = self.index.entry(key)
        if found is None:
            return DELETED
        return self.codec.decode(self.values.read({key: found[0]})[key])


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
        self.objects = ObjectStore(remote)
        self.heads = HeadStore(remote, self.objects)
        self.index = BaseIndex(local, remote, self.objects)
        self.values = ValueReader(local, self.index, self.objects)
        if replace:
            self.index.start_replacing()

    def current(self) -> tuple[Head | None, str | None]:
        """The current remote head, asked for conditionally on the base, and its ETag."""
        if self.pinned is not None:
            return self.pinned, None
        head, etag, changed = self.heads.read(if_none_match=self.index.etag)
        if not changed:
            return self.index.synced_head, etag
        if head is not None:
            self.index.check_same_database(head)
        return head, etag

    def changes(self) -> list[Change]:
        """The three-way comparison of the local file, the base and the current remote."""
        self._settle_inflight()
        head, _ = self.current()
        return three_way(self.index, head, local_changes(self.index).changes)

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

    # -- a commit whose outcome was not known ----------------------------------------------

    def _settle_inflight(self) -> None:
        """Learn whether the last push's commit landed, if that push never found out (its
        reply was lost, or the process was killed), and make the local state agree.

        A commit that landed becomes the base: what it carried stops being a local change, so
        it can never be pushed a second time over what others committed since.
        """
        intent = self.local.state.get("inflight")
        if not intent:
            return
        head = Head(**intent["head"])
        latest, _ = self.heads.read_latest()
        landed = self.heads.landed(head, latest)
        if landed is None:
            logger.warning(
                "could not tell whether commit %d on %s landed: the log of commits that would "
                "tell is gone; its changes stay pending", head.commit, self.remote.location,
            )
        if not landed:
            self._forget_inflight()
            return
        touched = set(self.local.touched)
        # Keys written since are kept whatever the commit pulled in; the next sync compares them.
        stale = set(intent["pulled"]) - touched
        self.local.state.pop("inflight", None)
        self.index.adopt(head, None, {}, stale, still_pending=touched)
        settled = touched - set(local_changes(self.index).changes)
        self.local.clear_touched(settled)
        self.local.sync()
        logger.info("commit %d on %s had landed; %d change(s) settled", head.commit,
                    self.remote.location, len(settled))

    def _forget_inflight(self) -> None:
        if self.local.state.pop("inflight", None) is not None:
            self.local.save_state()

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

    def push(
        self,
        policy: Policy = None,
        progress: ProgressCallback | None = None,
        compact: bool = False,
        max_delete: float | None = MAX_DELETE,
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
        # Whatever happens to this push, the local changes it carries are durable first.
        self.local.sync()
        if self._session_lease is not None and not self._session_lease.held:
            self.end_session()  # the session's lease was lost: take a new one
            self.start_session()
        with _gc_paused():
            if self.remote_lock == "push" and self.remote.writable and (compact or self._has_changes()):
                with Lease(self.remote, *self._lease_args) as lease:
                    result = self._push(policy, lease, progress, compact, max_delete)
            else:
                result = self._push(policy, self._session_lease, progress, compact, max_delete)
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
            or self.local.state.get("retention") is not None
        )

    def _push(
        self,
        policy: Policy,
        lease: Lease | None,
        progress: ProgressCallback | None,
        compact: bool,
        max_delete: float | None,
    ) -> PushResult:
        if not self.remote.writable:
            raise ReadOnlyError(
                f"cannot push to {self.remote.location}: it is read-only (a public URL or a "
                "connection without credentials); push through an S3Connection with credentials"
            )
        self._settle_inflight()
        local = self.local
        local.refuse_if_damaged()
        if local.external_edits:
            # Something wrote to the file behind ebooklet's back: a full comparison records
            # what changed in the journal first, which is then what the push reads.
            local_changes(self.index)
        metadata = local.get_metadata()
        base = self.index.base
        meta_changed = metadata is not None and (base is None or metadata[1] > (base.metadata_timestamp or 0))
        settings = local.state.get("retention")
        if not local.touched and not meta_changed and settings is None and base is not None and not compact:
            return PushResult()
        writes = list(local.touched.values()).count(None)
        state = _PushState(self.objects, Tracker(progress, "upload", writes, 0))
        try:
            for attempt in range(1, PUSH_ATTEMPTS + 1):
                result = self._push_once(policy, lease, state, metadata, attempt, compact, max_delete)
                if result is not None:
                    return result
                logger.info("push: another writer committed first; rebasing (attempt %d)", attempt)
        except BaseException as exc:
            state.uploader.close()
            if not state.sent and not isinstance(exc, RemoteError):
                # Nothing was committed, and the store answers: take back what was uploaded
                # (after a network failure, garbage collection takes it later).
                self.objects.delete_quietly(state.uploader.names)
            raise
        finally:
            state.close()
        self.objects.delete_quietly(state.uploader.names)
        raise PushConflictError(
            f"{self.remote.location} kept changing while pushing ({PUSH_ATTEMPTS} attempts); "
            "nothing was committed. Push again."
        )

    def _push_once(
        self,
        policy: Policy,
        lease: Lease | None,
        state: _PushState,
        metadata: tuple[Any, int] | None,
        attempt: int,
        compact: bool = False,
        max_delete: float | None = None,
    ) -> PushResult | None:
        """One attempt: rebase on the current head, upload, commit. Returns None when another
        writer committed first (the caller tries again)."""
        current, etag = self.current()
        self._check_pushable(current)
        replacing = self.index.replacing
        fresh = current is None or replacing
        remote = {} if replacing else remote_changes(self.index, self.index.base, current)
        keep_remote, dropped = self._rebase(remote, policy, current, state)
        if state.spool is None:
            self._stream(state, current, fresh)
            if not fresh and attempt == 1:
                self._compaction(current, state, compact)
        meta_new = metadata is not None and (
            current is None or metadata[1] > (current.metadata_timestamp or 0)
        )
        settings = self.local.state.get("retention")
        assert state.spool is not None
        bits = max(state.spool.bits, bits_for(
            (0 if fresh else current.n_keys) + state.adds,  # type: ignore[union-attr]
            (0 if fresh else current.key_bytes) + state.add_key_bytes,  # type: ignore[union-attr]
            0 if fresh else current.part_bits,  # type: ignore[union-attr]
        ))
        head = next_head(current, fresh, new_commit_id(), now_us(), bits, metadata,
                         self.local.codec.name, settings)
        staged: dict[int, tuple[str, bytes]] = {}
        mine: list[str] = []  # this attempt's parts and log object
        presence = _Presence(self.index, dropped, bits)

        def emit(p: int, name: str, part: Part, local_keys: set[str] | None) -> None:
            blob = part.encode()
            bits_ = presence.bits(p, part, local_keys)
            state.uploader.call(self.local.stage_part, name, blob, bits_)  # written in the background
            staged[p] = (name, bits_)
            mine.append(name)
            state.put(name, blob)

        old_parts = _Prefetch(self.index, current) if current is not None and not fresh else None
        try:
            built = build_head(
                current, head, state.spool, state.segments, state.sizes, keep_remote,
                old_parts, emit, fresh, _author(),  # type: ignore[arg-type]
            )
        finally:
            if old_parts is not None:
                old_parts.close()
        self._check_deletes(built.inferred, current, max_delete)
        nothing = not (built.written or built.deleted or built.moved or meta_new or settings is not None)
        if nothing and not replacing and current is not None:
            # Every local change was already made remotely (or lost to the remote side):
            # nothing to commit, only the remote to catch up with.
            state.uploader.wait()
            self.objects.delete_quietly(state.uploader.names)
            state.uploader.names.clear()
            self.index.adopt(current, etag, {}, dropped)
            return PushResult(pulled=sorted(dropped))
        if lease is not None:
            HeadStore.check_fence(current, lease)
            head.lease_token = lease.token
        # The head's log object goes up with the index parts, after the values.
        log = self.heads.log_entry(head)
        mine.append(log[0])
        state.put(*log)
        state.uploader.wait()  # every value is up before the head may point at it
        if lease is not None:
            # Nobody can take a lease over before it expires: one written within the last
            # third of its ttl is still ours (allowing for clock skew between writers).
            lease.renew(if_older_than=1 / 3)
        if now_us() - state.started > (MIN_AGE_S - 600) * 1e6:
            # Garbage collection may take uploads this old for leftovers: never commit them.
            raise SyncError(
                f"this push took longer than {MIN_AGE_S / 3600:.0f} hours, so its uploads may "
                "have been collected as garbage; nothing was committed. Push again."
            )
        # Recorded durably first: if the outcome is lost with the reply (or the process), the
        # next operation settles it (see _settle_inflight).
        self.local.state["inflight"] = {"head": asdict(head), "pulled": sorted(dropped)}
        self.local.save_state()
        state.sent = True
        try:
            committed = self.heads.commit(head, etag if current is not None else None)
        except CommitUnknownError:
            raise  # the record stays; nothing the commit references is deleted
        except RemoteError:
            self._forget_inflight()  # known not to have landed
            state.sent = False
            raise
        if committed is None:
            state.sent = False
            self._forget_inflight()
            self.objects.delete_quietly(mine)
            state.uploader.names[:] = [n for n in state.uploader.names if n not in set(mine)]
            return None
        result = PushResult(
            committed=True,
            commit=head.commit,
            attempts=attempt,
            keys=built.written,
            deleted=built.deleted,
            pulled=sorted(dropped),
        )
        self.local.state.pop("inflight", None)  # saved with the new base
        self.local.state.pop("retention", None)
        self.index.adopt(head, committed.etag, {}, dropped, staged=staged)
        result.compacted = built.moved
        unused = [name for name in state.sizes if name not in head.segments]
        if unused:
            self.objects.delete_quietly(unused)  # values that turned out not to be changes
        if head.commit % GC_EVERY == 0:
            # Now and then a push collects what no retained commit needs any more.
            try:
                collect(self.remote, self.heads, head)
            except Exception as exc:  # noqa: BLE001 - garbage waits for the next collection
                logger.warning("collecting garbage on %s failed: %s", self.remote.location, exc)
        return result

    def _stream(self, state: _PushState, current: Head | None, fresh: bool) -> None:
        """Read every pending change once, from the journal: values into segments (uploading
        as they fill), records of where they went into the spool, grouped by index part."""
        local = self.local
        touched = local.touched
        # Upper bounds of what the commit adds, to choose the index layout once (characters
        # for bytes: the layout needs an estimate, the head's counts are exact).
        state.adds = list(touched.values()).count(None)
        state.add_key_bytes = sum(map(len, touched))
        state.spool = spool = Spool(bits_for(
            (0 if fresh else current.n_keys) + state.adds,  # type: ignore[union-attr]
            (0 if fresh else current.key_bytes) + state.add_key_bytes,  # type: ignore[union-attr]
            0 if fresh else current.part_bits,  # type: ignore[union-attr]
        ))
        writer, bits = state.writer, spool.bits
        blake2b = hashlib.blake2b
        seen = 0
        key_of, ts_of, raw_of = (operator.itemgetter(i) for i in range(3))
        for batch in local.pending_batches():
            seen += len(batch)
            keys = list(map(key_of, batch))
            raws = list(map(raw_of, batch))
            if None in raws:
                # Deletes among the writes: one at a time.
                records = []
                for key, ts, raw, flags in batch:
                    if raw is None:
                        records.append((key, ts, None, 0, 0, 0, flags & INFERRED))
                    else:
                        seg, off = writer.add(raw)
                        h = blake2b(raw, digest_size=HASH_LEN).digest()
                        records.append((key, ts, h, seg, off, len(raw), 0))
            else:
                segs, offsets = writer.add_many(raws)  # type: ignore[arg-type]
                hashes = [blake2b(raw, digest_size=HASH_LEN).digest() for raw in raws]  # type: ignore[arg-type]
                records = list(zip(
                    keys, map(ts_of, batch), hashes, segs, offsets,
                    map(len, raws), itertools.repeat(0), strict=False,  # type: ignore[arg-type]
                ))
            spool.extend(parts_of(keys, bits), records)
        writer.flush()
        if seen != len(touched):
            # A batch of the journal could not be read back since it was opened.
            local.external_edits = True
            local.save_state()
            raise SyncError(
                f"the journal of {local.path} was damaged while this push read it; nothing was "
                "committed. Push again: the next push compares the data file with the remote."
            )

    def _compaction(self, current: Head, state: _PushState, force: bool) -> None:
        """Move values out of segments worth rewriting (same bytes, same timestamps), when
        that is cheap (a small index) or asked for."""
        names = set(plan_compaction(current, force))
        if not names or (not force and sum(1 for p in current.parts if p) > CHEAP_PARTS):
            return
        touched = self.local.touched
        entries = {
            key: entry
            for part in self.index.all_parts(current).values()
            for key, entry in part.items()
            if entry.segment in names and key not in touched
        }
        values = self.values.read(entries)
        assert state.spool is not None
        state.tracker.keys_total += len(entries)
        for key, e in entries.items():
            seg, off = state.writer.add(values[key])
            state.spool.add(key, e.timestamp, e.hash, seg, off, e.length, MOVED)
        state.writer.flush()

    def _check_deletes(self, inferred: list[str], current: Head | None, max_delete: float | None) -> None:
        """The second line of defence against reading damage as deletes: stop a push that
        would delete more than ``max_delete`` percent of the remote's keys when nobody asked
        for those deletes (keys found missing from the local file, not ``del``-eted)."""
        if max_delete is None or current is None or self.index.replacing or not current.n_keys:
            return
        if len(inferred) * 100 > max_delete * current.n_keys:
            raise MassDeleteError(sorted(inferred), current.n_keys, max_delete, str(self.local.path))

    def _check_pushable(self, current: Head | None) -> None:
        if current is None and self.index.base is not None:
            synced = self.local.state.get("location")
            elsewhere = f" (this file was synced with {synced})" if synced != self.remote.location else ""
            raise SyncError(
                f"there is no database at {self.remote.location}{elsewhere}: it was deleted since "
                "the last sync. To create it again from this file's data, call delete_remote() "
                "(which forgets the old database) and then push()."
            )
        mine = self.local.codec.name
        if current is not None and not self.index.replacing and current.value_serializer != mine:
            raise SyncError(
                f"{self.remote.location} stores values serialized with {current.value_serializer!r} "
                f"but this local file uses {mine!r}; they cannot be mixed"
            )

    def _rebase(
        self, remote: dict[str, Entry | None], policy: Policy, current: Head | None, state: _PushState
    ) -> tuple[set[str], set[str]]:
        """Settle the keys both sides changed: which keep the remote's entry, and which cached
        keys this push drops.

        A conflict function's result is written to the local file (and, once the changes are
        streamed, to the spool), so that whichever attempt commits carries it.
        """
        touched = self.local.touched
        mine: dict[str, LocalChange] = {}
        for key in remote:
            if key not in touched:
                continue
            pending = self.local.pending(key)
            if pending is None:
                continue
            raw = pending.value
            change = LocalChange(raw, pending.timestamp, None if raw is None else value_hash(raw))
            found = self.index.entry(key)
            if not same(change, found[0] if found else None):
                mine[key] = change  # a change against the base: in conflict or the same change
        resolution = resolve(
            ChangeSet(mine, remote), policy, _Inputs(self), current.timestamp if current else 0
        )
        self._apply_merged(resolution)
        if state.spool is not None and resolution.merged:
            for key, change in resolution.merged.items():
                if change.raw is None:
                    state.spool.add(key, change.timestamp, None, 0, 0, 0, 0)  # type: ignore[arg-type]
                else:
                    state.tracker.keys_total += 1
                    seg, off = state.writer.add(change.raw)
                    state.spool.add(key, change.timestamp, change.hash, seg, off, len(change.raw), 0)  # type: ignore[arg-type]
            state.writer.flush()
        settled = resolution.local | set(resolution.merged)
        keep_remote = {key for key in remote if key in touched} - settled
        dropped = set(remote) - settled
        return keep_remote, dropped

    def _apply_merged(self, resolution: Resolution) -> None:
        for key, change in resolution.merged.items():
            if change.raw is None:
                self.local.delete(key, change.timestamp)  # type: ignore[arg-type]
            else:
                self.local.set_raw(key, change.raw, change.timestamp)  # type: ignore[arg-type]

    # -- pull ------------------------------------------------------------------------------

    def pull(self, policy: Policy = None) -> PullResult:
        """Bring in what others committed since the last sync."""
        check_policy(policy)
        start = self.remote.transport.stats.requests
        result = PullResult()
        self._settle_inflight()
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
            resolution = resolve(ChangeSet(diff.changes, remote), policy, _Inputs(self), head.timestamp)
            self._apply_merged(resolution)
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
            names = [k for k in transport.list(self.remote.prefix) if lease is None or k != lease.key]
            transport.delete(names)
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
