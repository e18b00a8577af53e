"""One push, streamed: rebase on the current head, stream the pending changes into segments
and a spool, build the next head part by part, commit by compare-and-swap (docs/sync.rst).

:class:`Push` runs the attempts of one push for a :class:`~ebooklet.sync.replica.Replica`;
what the attempts share (the spool, the segments uploaded, the uploader) is a
:class:`PushState`. Memory stays bounded whatever the size of the database: one segment being
filled, the uploads in flight, the spool's buffer, and one index part at a time.
"""

from __future__ import annotations

import concurrent.futures
import getpass
import itertools
import logging
import operator
import socket
import time
from typing import Any, Protocol

from ..errors import (
    CommitUnknownError,
    MassDeleteError,
    PushConflictError,
    ReadOnlyError,
    RemoteAccessError,
    RemoteError,
    RemoteUnavailableError,
    SyncError,
)
from ..format import Entry, Head, Part, bits_for, hash_in, legacy_segment, new_commit_id, parts_of, value_hash
from ..local import LocalStore
from ..lock import Lease
from ..phases import timed
from ..remote import Remote
from ..results import ProgressCallback, PushResult
from ..settings import now_us, settings
from .commit import INFERRED, MOVED, Record, SegmentWriter, Spool, build_head, next_head, plan_compaction
from .conflicts import DecodedInputs, Policy, apply_merged, resolve
from .diff import ChangeSet, LocalChange, local_changes, remote_changes, same
from .gc import check_uploads_kept, collect
from .heads import HeadStore
from .index import BaseIndex
from .inflight import InFlight
from .leasing import Backoff, LeaseUse
from .objects import ObjectStore, Tracker, Uploader, hash_ahead
from .reads import ValueReader

logger = logging.getLogger(__name__)

#: A push compacts on the way only when the index has at most this many parts (it reads them all).
CHEAP_PARTS = 4


def _author() -> str | None:
    """Who is committing, as ``user@host``, where the system knows."""
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 - an unknown user is no reason to fail a push
        return None


class PushState:
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
        self.both_changed = 0  # keys changed both here (against the base) and remotely
        self.first: concurrent.futures.Future[None] | None = None  # the first upload

    def put(self, name: str, data: bytes, keys: int = 0) -> None:
        """Upload an object in the background (the progress total grows with it)."""
        self.tracker.bytes_total += len(data)
        future = self.uploader.submit(name, data, keys)
        if self.first is None:
            self.first = future

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
            elif not local.parts.has(q, name):
                self._present = None
            else:
                part = self.index.peek_part(base, q)
                bits = local.presence.bits(q)
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


class Engine(Protocol):
    """What a push needs of the replica it runs for (see sync.replica.Replica)."""

    local: LocalStore
    remote: Remote
    index: BaseIndex
    objects: ObjectStore
    heads: HeadStore
    values: ValueReader
    inflight: InFlight

    def current(self) -> tuple[Head | None, str | None]: ...


class Push:
    """The attempts of one push of ``replica``'s local changes."""

    def __init__(self, replica: Engine) -> None:
        self.replica = replica
        self.local = replica.local
        self.remote = replica.remote
        self.index = replica.index
        self.objects = replica.objects
        self.heads = replica.heads
        self.values = replica.values
        self._lease = LeaseUse(None, False)

    @timed("Push.run")
    def run(
        self,
        policy: Policy,
        lease: Lease | None,
        progress: ProgressCallback | None,
        compact: bool,
        max_delete: float | None,
        take_lease: bool = False,
        wait: float = 300.0,
    ) -> PushResult:
        """Push, holding ``lease`` for the commit; with ``take_lease``, the lease is taken (and
        given up at the end) here, in the background while the changes are streamed and the
        head is read: taking it costs round trips, streaming costs CPU, and uploads need no
        lease (their names are new, and only the commit makes them part of the database).
        While other writers keep committing first, attempts go on for ``wait`` seconds."""
        local = self.local
        if not self.remote.writable:
            local.sync()
            raise ReadOnlyError(
                f"cannot push to {self.remote.location}: it is read-only (a public URL or a "
                "connection without credentials); push through an S3Connection with credentials"
            )
        self.replica.inflight.settle()
        local.refuse_if_damaged()
        if local.external_edits:
            # Something wrote to the file behind ebooklet's back: a full comparison records
            # what changed in the journal first, which is then what the push reads.
            local_changes(self.index)
        metadata = local.get_metadata()
        base = self.index.base
        meta_changed = metadata is not None and (base is None or metadata[1] > (base.metadata_timestamp or 0))
        retention = local.state.retention
        if not local.touched and not meta_changed and retention is None and base is not None and not compact:
            local.sync()
            return PushResult()
        writes = len(local.touched) - local.touched.n_deletes
        state = PushState(self.objects, Tracker(progress, "upload", writes, 0))
        self._lease = LeaseUse(lease, take_lease)
        deadline = time.monotonic() + wait
        pause = Backoff(most=min(2.0, max(0.05, wait / 8)))
        turns = self.replica.turns
        try:
            # The layout of the index is estimated from the base; the commit refines it.
            base = self.index.base
            self._stream(state, base, base is None)
            # The changes it carries are durable before anything commits them (their pages
            # went to the disk while they streamed: Replica.push).
            local.sync()
            if lease is None:
                turns.arrive(deadline)
            for attempt in itertools.count(1):
                result = self._push_once(policy, lease, state, metadata, attempt, compact, max_delete)
                if result is not None:
                    if result.commit and base is not None:
                        turns.landed(result.commit - base.commit - 1)
                    return result
                logger.info("push: another writer committed first; rebasing (attempt %d)", attempt)
                if time.monotonic() >= deadline:
                    break
                if lease is None and not turns.lost(deadline):
                    # First in line, or without a queue: writers that collided back off,
                    # each for a random while, so that one of them gets through next time.
                    waited = pause.sleep(deadline - time.monotonic())
                    logger.info("push: backed off %.6f s before attempt %d", waited, attempt + 1)
        except BaseException as exc:
            state.uploader.close()
            unanswered = isinstance(exc, (RemoteUnavailableError, RemoteAccessError))
            if not state.sent and not unanswered and state.uploader.stored:
                # Nothing was committed, and the store answers: take back what was uploaded
                # (when it does not answer, or refuses us, garbage collection takes it later).
                self.objects.delete_quietly(state.uploader.stored)
            raise
        finally:
            state.close()
            self._lease.close()
            turns.leave()
        self.objects.delete_quietly(state.uploader.names)
        raise PushConflictError(
            f"{self.remote.location} kept changing while pushing ({attempt} attempts in "
            f"{wait:g} s); nothing was committed. Push again, or give a longer lock_wait."
        )

    @timed("Push.attempt")
    def _push_once(
        self,
        policy: Policy,
        lease: Lease | None,
        state: PushState,
        metadata: tuple[Any, int] | None,
        attempt: int,
        compact: bool = False,
        max_delete: float | None = None,
    ) -> PushResult | None:
        """One attempt: rebase on the current head, upload, commit. Returns None when another
        writer committed first (the caller tries again)."""
        current, etag = self._lease.read_head(self.replica.current)
        self._check_pushable(current)
        replacing = self.index.replacing
        fresh = current is None or replacing
        remote = {} if replacing else remote_changes(self.index, self.index.base, current)
        keep_remote, dropped = self._rebase(remote, policy, current, state)
        if not fresh and attempt == 1:
            self._compaction(current, state, compact)
        meta_new = metadata is not None and (
            current is None or metadata[1] > (current.metadata_timestamp or 0)
        )
        retention = self.local.state.retention
        assert state.spool is not None
        bits = max(state.spool.bits, bits_for(
            (0 if fresh else current.n_keys) + state.adds,  # type: ignore[union-attr]
            (0 if fresh else current.key_bytes) + state.add_key_bytes,  # type: ignore[union-attr]
            0 if fresh else current.part_bits,  # type: ignore[union-attr]
        ))
        head = next_head(current, fresh, new_commit_id(), now_us(), bits, metadata,
                         self.local.codec.name, retention)
        staged: dict[int, tuple[str, bytes]] = {}
        mine: list[str] = []  # this attempt's parts and log object
        presence = _Presence(self.index, dropped, bits)

        def emit(p: int, name: str, part: Part, local_keys: set[str] | None) -> None:
            blob = part.encode()
            bits_ = presence.bits(p, part, local_keys)
            state.uploader.call(self.local.presence.stage, name, blob, bits_)  # written in the background
            staged[p] = (name, bits_)
            mine.append(name)
            state.put(name, blob)

        old_parts = _Prefetch(self.index, current) if current is not None and not fresh else None
        try:
            built = build_head(
                current, head, state.spool, state.segments, state.sizes, keep_remote,
                old_parts, emit, fresh, _author(), self._same_bytes,  # type: ignore[arg-type]
            )
        finally:
            if old_parts is not None:
                old_parts.close()
        self._check_deletes(built.inferred, current, max_delete)
        nothing = not (built.written or built.deleted or built.moved or meta_new or retention is not None)
        if nothing and not replacing and current is not None:
            state.uploader.wait()
            self.objects.delete_quietly(state.uploader.names)
            state.uploader.forget()
            if not state.both_changed and not compact:
                # Every pending change put back the base's value: there was nothing to push,
                # and a push with nothing to push does not pull either.
                self.local.clear_touched()
                self.local.sync()
                return PushResult()
            # Every local change was already made remotely (or lost to the remote side):
            # nothing to commit, only the remote to catch up with.
            self.index.adopt(current, etag, {}, dropped)
            return PushResult(pulled=sorted(dropped))
        if lease is not None:
            head.lease_token = self._lease.token(current)
        # The head's log object goes up with the index parts, after the values.
        log = self.heads.log_entry(head)
        mine.append(log[0])
        state.put(*log)
        # Garbage collection may take uploads this old for leftovers: never commit them. The
        # store is asked about the first upload as soon as it is stored, beside the others.
        state.uploader.call(self._check_kept, state)
        state.uploader.wait()  # every value is up before the head may point at it
        if lease is not None:
            if not self._lease.settle(current, head.lease_token):
                # Taken with another token than expected: build the head again.
                self.objects.delete_quietly(mine)
                state.uploader.forget(mine)
                return None
            # Nobody can take a lease over before it expires: one written within the last
            # third of its ttl is still ours (allowing for clock skew between writers).
            lease.renew(if_older_than=1 / 3)
        # Recorded durably first: if the outcome is lost with the reply (or the process), the
        # next operation settles it (see InFlight.settle).
        self.replica.inflight.record(head, dropped, keep_remote)
        state.sent = True
        if lease is None:
            self.replica.turns.leave_soon()
        try:
            committed = self.heads.commit(head, etag if current is not None else None)
        except CommitUnknownError:
            raise  # the record stays; nothing the commit references is deleted
        except RemoteError:
            self.replica.inflight.forget()  # known not to have landed
            state.sent = False
            raise
        if committed is None:
            state.sent = False
            self.replica.inflight.forget()
            self.objects.delete_quietly(mine)
            state.uploader.forget(mine)
            return None
        result = PushResult(
            committed=True,
            commit=head.commit,
            attempts=attempt,
            keys=built.written,
            deleted=built.deleted,
            pulled=sorted(dropped),
        )
        self._lease.landed()
        self.replica.inflight.forget(durably=False)  # saved with the new base
        self.local.state.retention = None
        self.index.adopt(head, committed.etag, {}, dropped, staged=staged)
        result.compacted = built.moved
        unused = [name for name in state.sizes if name not in head.segments]
        if unused:
            self.objects.delete_quietly(unused)  # values that turned out not to be changes
        if head.commit % settings.gc_every == 0:
            # Now and then a push collects what no retained commit needs any more.
            try:
                collect(self.remote, self.heads, head)
            except Exception as exc:  # noqa: BLE001 - garbage waits for the next collection
                logger.warning("collecting garbage on %s failed: %s", self.remote.location, exc)
        return result

    def _same_bytes(self, rec: Record, was: Entry) -> bool:
        """Whether the local value of a spooled write is the bytes of ``was``, an entry whose
        hash is of the other kind (build_head asks only for values of the same size)."""
        got = self.local.get_raw(rec[0])
        return got is not None and hash_in(was.segment, got[1]) == was.hash

    def _check_kept(self, state: PushState) -> None:
        if state.first is not None:
            state.first.result()
        check_uploads_kept(self.remote, next(iter(state.uploader.names), None), state.started)

    @timed("Push.stream")
    def _stream(self, state: PushState, current: Head | None, fresh: bool) -> None:
        """Read every pending change once, from the journal: values into segments (uploading
        as they fill), records of where they went into the spool, grouped by index part."""
        local = self.local
        touched = local.touched
        # Upper bounds of what the commit adds, to choose the index layout once (characters
        # for bytes: the layout needs an estimate, the head's counts are exact).
        state.adds = len(touched) - touched.n_deletes
        state.add_key_bytes = sum(map(len, touched))
        state.spool = spool = Spool(bits_for(
            (0 if fresh else current.n_keys) + state.adds,  # type: ignore[union-attr]
            (0 if fresh else current.key_bytes) + state.add_key_bytes,  # type: ignore[union-attr]
            0 if fresh else current.part_bits,  # type: ignore[union-attr]
        ))
        writer, bits = state.writer, spool.bits
        seen = 0
        key_of, ts_of, raw_of = (operator.itemgetter(i) for i in range(3))
        for batch, hashes in hash_ahead(local.pending_batches()):
            seen += len(batch)
            keys = list(map(key_of, batch))
            raws = list(map(raw_of, batch))
            if None in raws:
                # Deletes among the writes: one at a time.
                records = []
                for (key, ts, raw, flags), h in zip(batch, hashes, strict=True):
                    if raw is None:
                        records.append((key, ts, None, 0, 0, 0, flags & INFERRED))
                    else:
                        seg, off = writer.add(raw)
                        records.append((key, ts, h, seg, off, len(raw), 0))
            else:
                segs, offsets = writer.add_many(raws)  # type: ignore[arg-type]
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

    @timed("Push.compaction")
    def _compaction(self, current: Head, state: PushState, force: bool) -> None:
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
        # Moved values keep their hashes: those of an earlier format go to segments named so.
        writer = state.writer
        writer.flush()
        for legacy in (True, False):
            writer.legacy = legacy
            for key, e in entries.items():
                if legacy_segment(e.segment) == legacy:
                    seg, off = writer.add(values[key])
                    state.spool.add(key, e.timestamp, e.hash, seg, off, e.length, MOVED)
            writer.flush()
        writer.legacy = False

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
            synced = self.local.state.location
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

    @timed("Push.rebase")
    def _rebase(
        self, remote: dict[str, Entry | None], policy: Policy, current: Head | None, state: PushState
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
            pending = self.local.pending_change(key)
            if pending is None:
                continue
            raw = pending.value
            change = LocalChange(raw, pending.timestamp, None if raw is None else value_hash(raw))
            found = self.index.entry(key)
            if not same(change, found[0] if found else None):
                mine[key] = change  # a change against the base: in conflict or the same change
        state.both_changed = len(mine)
        inputs = DecodedInputs(self.local.codec, self.index, self.values)
        resolution = resolve(ChangeSet(mine, remote), policy, inputs, current.timestamp if current else 0)
        apply_merged(self.local, resolution)
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
