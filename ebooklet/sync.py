"""Keeping a local file and a remote database in step: lazy reads, changes, push and pull.

The protocol is described in docs/sync.rst. In short: the *base* is the remote head at the
last sync, kept in the local sync state. ``changes()`` compares three states key by key: the
local file, the base and the current remote head. ``push()`` uploads new values into fresh
segments, rewrites the index parts that hold changed keys on top of the *current* remote
parts (a rebase), and commits by replacing the head with a conditional write.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import hashlib
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

from .errors import (
    ConflictError,
    IntegrityError,
    LeaseLostError,
    PreconditionFailed,
    PushConflictError,
    ReadOnlyError,
    RemoteFormatError,
    RemoteNotFoundError,
    SyncError,
)
from .format import (
    HASH_LEN,
    SEGMENT_BYTES,
    Entry,
    Head,
    Part,
    bits_for,
    new_commit_id,
    part_name,
    part_of,
    parts_of,
    segment_name,
    value_hash,
)
from .local import LocalStore, serializer_name
from .lock import DEFAULT_TTL, DEFAULT_WAIT, Lease
from .remote import Remote, Update

logger = logging.getLogger(__name__)

#: Ranges closer than this are fetched with one request.
COALESCE_GAP = 64 * 1024
#: ...as long as the merged request stays under this size.
COALESCE_MAX = 8 * 1024 * 1024
#: Old objects are deleted this long after a commit stopped referencing them, so that
#: readers holding an older head can finish their reads.
RETIRE_AFTER_S = 3600.0
#: How many times a push rebases over concurrent commits before giving up.
PUSH_ATTEMPTS = 8
#: Decoded index parts kept in memory.
PART_CACHE = 64
#: Parallel requests for uploads and ranged reads.
THREADS = 8
#: Find local changes with one scan of the data file once more than 1/SCAN_FRACTION of its
#: keys are candidates (a lookup per key costs about ten times a scanned key).
SCAN_FRACTION = 8


class _Deleted:
    """The marker a conflict function returns to delete a key."""

    _instance: _Deleted | None = None

    def __new__(cls) -> _Deleted:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ebooklet.DELETED"


#: Returned by a conflict function to delete the key; also the value side of a deletion.
DELETED: Any = _Deleted()

Resolver = Callable[[str, Any, Any, Any], Any]
RemoteLock = Literal["push", "session", "none"]
Policy = Literal["local", "remote", "newest"] | Resolver | None

ChangeKind = Literal["added", "modified", "deleted"]


def now_us() -> int:
    return time.time_ns() // 1000


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


@dataclass(frozen=True)
class Change:
    """One key that differs between the local file, the base and the remote.

    Attributes
    ----------
    key : str
    side : {"local", "remote", "both"}
        Which side changed it since the last sync.
    local, remote : {"added", "modified", "deleted"} or None
        How each side changed it (None: unchanged on that side).
    local_timestamp, remote_timestamp : int or None
        Microseconds since the epoch of each side's version (of the deletion for deletes,
        when known).
    conflict : bool
        Changed on both sides to different bytes.
    """

    key: str
    side: Literal["local", "remote", "both"]
    local: ChangeKind | None
    remote: ChangeKind | None
    local_timestamp: int | None
    remote_timestamp: int | None
    conflict: bool = False

    def __str__(self) -> str:
        parts = []
        if self.local:
            parts.append(f"local {self.local}")
        if self.remote:
            parts.append(f"remote {self.remote}")
        flag = " CONFLICT" if self.conflict else ""
        return f"{self.key!r}: {', '.join(parts)}{flag}"


@dataclass(frozen=True)
class Progress:
    """How far a transfer has got; passed to ``progress`` callbacks.

    ``phase`` is ``"upload"`` (push) or ``"download"`` (pull, ``load_items``, ``get_items``).
    """

    phase: Literal["upload", "download"]
    keys_done: int
    keys_total: int
    bytes_done: int
    bytes_total: int


ProgressCallback = Callable[[Progress], None]


class _Tracker:
    """Counts finished work and reports it, from any thread."""

    def __init__(self, callback: ProgressCallback | None, phase: Literal["upload", "download"],
                 keys_total: int, bytes_total: int) -> None:
        self.callback = callback
        self.phase = phase
        self.keys_total = keys_total
        self.bytes_total = bytes_total
        self.keys = 0
        self.bytes = 0
        self._lock = threading.Lock()
        if callback is not None:
            callback(Progress(phase, 0, keys_total, 0, bytes_total))

    def add(self, keys: int, nbytes: int) -> None:
        if self.callback is None:
            return
        with self._lock:
            self.keys += keys
            self.bytes += nbytes
            self.callback(Progress(self.phase, self.keys, self.keys_total, self.bytes, self.bytes_total))


@dataclass
class PushResult:
    """What a push did."""

    committed: bool = False
    commit: int | None = None
    keys: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    requests: int = 0
    attempts: int = 0
    pulled: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.committed:
            return "nothing to push"
        return (
            f"commit {self.commit}: {len(self.keys)} key(s) written, {len(self.deleted)} deleted, "
            f"{self.bytes_sent} bytes in {self.requests} requests"
        )


@dataclass
class PullResult:
    """What a pull did."""

    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    requests: int = 0
    commit: int | None = None

    def __str__(self) -> str:
        return f"{len(self.updated)} key(s) updated, {len(self.deleted)} deleted from the remote"


class _LocalChange(NamedTuple):
    raw: bytes | None  # None for a delete
    timestamp: int | None
    hash: bytes | None


_EMPTY = Part()


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
    ) -> None:
        self.local = local
        self.remote = remote
        self.remote_lock = remote_lock
        self._lease_args = (lease_ttl, lock_wait)
        self._session_lease: Lease | None = None
        #: Called with a Progress as values and index parts are transferred.
        self.progress: ProgressCallback | None = None
        self._tracker = _Tracker(None, "upload", 0, 0)
        self._parts: OrderedDict[str, Part] = OrderedDict()
        # Parts of non-base heads downloaded during this operation, kept until the head
        # they belong to becomes the base (so presence bits can be stored with them).
        self._fresh: dict[str, bytes] = {}
        # The keys of the data file as of the last full scan in this operation, if any.
        self._scanned: set[str] | None = None
        if replace:
            local.state["replace"] = True
        head = local.state.get("head")
        self._base: Head | None = Head(**head) if head else None

    # -- the base --------------------------------------------------------------------------

    @property
    def replace(self) -> bool:
        """True until the first push of a database opened with flag='n'."""
        return bool(self.local.state.get("replace"))

    @property
    def base(self) -> Head | None:
        """The remote head at the last sync (None: there was no remote database)."""
        return self._base

    @property
    def base_known(self) -> bool:
        return "etag" in self.local.state

    def set_base(self, head: Head | None, etag: str | None) -> None:
        state = self.local.state
        known = state.get("remote_uuid")
        if head is not None and known not in (None, head.uuid) and not self.replace:
            self._refuse_other_database(head)
        old = self._base
        if head is None or old is None or old.uuid != head.uuid or old.part_bits != head.part_bits:
            self.local.forget_parts()
        state["head"] = asdict(head) if head else None
        state["etag"] = etag
        state["remote_uuid"] = head.uuid if head else None
        state["location"] = self.remote.location
        self._base = head

    @staticmethod
    def probe(remote: Remote) -> tuple[Head | None, str | None]:
        """The remote head of a database no local file has synced with yet."""
        try:
            blob = remote.transport.get(remote.db_key)
        except RemoteNotFoundError:
            return None, None
        assert blob is not None
        return Head.decode(blob.data, where=remote.location), blob.etag

    def fetch_head(self, if_none_match: str | None = None) -> tuple[Head | None, str | None]:
        """The remote head and its ETag; (None, None) when there is no database.

        With ``if_none_match`` (the base ETag), an unchanged head costs one small request
        and the base is returned.
        """
        try:
            blob = self.remote.transport.get(self.remote.db_key, if_none_match=if_none_match)
        except RemoteNotFoundError:
            return None, None
        if blob is None:
            return self._base, if_none_match
        return Head.decode(blob.data, where=self.remote.location), blob.etag

    def current(self) -> tuple[Head | None, str | None]:
        """The current remote head, asked for conditionally on the base.

        Refuses a head of another database than the base's: the local file was synced with
        a different remote (or the database was deleted and created again).
        """
        base = self._base
        etag = self.local.state.get("etag") if base is not None else None
        head, etag = self.fetch_head(if_none_match=etag)
        if head is not None and base is not None and head.uuid != base.uuid and not self.replace:
            self._refuse_other_database(head)
        return head, etag

    def _refuse_other_database(self, head: Head) -> None:
        advice = " Open a new local path for it"
        if self.remote.writable:
            advice += (
                "; or, to replace that database with this file's data, call delete_remote() "
                "and then push()"
            )
        synced = self.local.state.get("location", "another remote")
        raise SyncError(
            f"{self.remote.location} holds another database (uuid {head.uuid}) than the one "
            f"{self.local.path} was synced with ({synced}, uuid {self.local.state.get('remote_uuid')})."
            f"{advice}."
        )

    # -- index parts -----------------------------------------------------------------------

    def _is_base(self, head: Head) -> bool:
        base = self._base
        if base is None or self.replace:
            return False
        return head.commit_id == base.commit_id and head.uuid == base.uuid

    def _gone(self, name: str) -> RemoteNotFoundError:
        return RemoteNotFoundError(
            f"{name} is gone from {self.remote.location}: the remote has moved on and removed "
            "old objects. Pull, then try again."
        )

    def _download(self, name: str) -> bytes:
        try:
            blob = self.remote.transport.get(self.remote.prefix + name)
        except RemoteNotFoundError:
            raise self._gone(name) from None
        assert blob is not None
        return blob.data

    def part(self, head: Head, p: int) -> Part:
        """Index part ``p`` of ``head``: from memory, the local state, or the remote.

        A part of the base is always stored locally (with its presence bits) once used,
        whichever way it arrived.
        """
        name = head.parts[p]
        if name is None:
            return _EMPTY
        is_base = self._is_base(head)
        stored = is_base and self.local.has_part(p, name)
        part = self._parts.get(name)
        blob = None
        if part is None:
            blob = self.local.part_blob(p, name) if stored else None
            if blob is not None:
                try:
                    part = Part.decode(blob, name)
                except (IntegrityError, RemoteFormatError):
                    # The local copy was torn (e.g. by a crash): fetch it again.
                    blob, stored = None, False
            if blob is None:
                blob = self._fresh.get(name)
            if blob is None:
                blob = self._download(name)
                if not is_base:
                    self._fresh[name] = blob
            if part is None:
                part = Part.decode(blob, name)
            self._parts[name] = part
            if len(self._parts) > PART_CACHE:
                self._parts.popitem(last=False)
        else:
            self._parts.move_to_end(name)
        if is_base and not stored:
            self.local.store_part(p, name, blob or self._fresh.get(name) or part.encode(), part.keys)
            self._fresh.pop(name, None)
        return part

    def parts(self, head: Head, indexes: Iterable[int]) -> dict[int, Part]:
        """Several parts of ``head``, downloading the missing ones in parallel."""
        indexes = list(indexes)
        is_base = self._is_base(head)
        missing = []
        for p in indexes:
            name = head.parts[p]
            if name is None or name in self._parts or name in self._fresh:
                continue
            if is_base and self.local.part_blob(p, name) is not None:
                continue
            missing.append(name)
        if len(missing) > 1:
            with concurrent.futures.ThreadPoolExecutor(min(THREADS, len(missing))) as pool:
                self._fresh.update(zip(missing, pool.map(self._download, missing), strict=False))
        return {p: self.part(head, p) for p in indexes}

    def all_parts(self, head: Head) -> dict[int, Part]:
        return self.parts(head, range(len(head.parts)))

    def base_entry(self, key: str) -> tuple[Entry, bool] | None:
        """The base entry of ``key``, and whether the key has been in the data file."""
        base = self._base
        if base is None or self.replace:
            return None
        p = part_of(key, base.part_bits)
        part = self.part(base, p)
        row = part.row(key)
        if row is None:
            return None
        return part.get(key), self._present(p, row)  # type: ignore[return-value]

    def metadata(self) -> tuple[Any, int] | None:
        """The newer of the local metadata and the base's."""
        mine = self.local.get_metadata()
        base = None if self.replace else self._base
        if base is not None and base.metadata_timestamp is not None:
            if mine is None or mine[1] < base.metadata_timestamp:
                return base.metadata, base.metadata_timestamp
        return mine

    def _present(self, p: int, row: int) -> bool:
        bits = self.local.bits(p)
        return (row >> 3) < len(bits) and bool(bits[row >> 3] & (1 << (row & 7)))

    def lazy_keys(self) -> Iterator[tuple[str, Entry]]:
        """Base keys not fetched yet (absent from the data file, never deleted)."""
        base = self._base
        if base is None or self.replace:
            return
        touched = self.local.touched
        for p, part in self.all_parts(base).items():
            for row, (key, entry) in enumerate(part.items()):
                if key not in touched and not self._present(p, row) and key not in self.local:
                    yield key, entry

    # -- lazy reads ------------------------------------------------------------------------

    def fetch(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Download lazy keys' values, check them, and cache them in the data file."""
        base = self._base
        if base is None or self.replace:
            return {}
        by_part: dict[int, list[str]] = {}
        for key in keys:
            by_part.setdefault(part_of(key, base.part_bits), []).append(key)
        parts = self.parts(base, by_part)
        wanted: dict[str, tuple[Entry, int, int]] = {}
        for p, ks in by_part.items():
            for key in ks:
                row = parts[p].row(key)
                if row is not None:
                    wanted[key] = (parts[p].get(key), p, row)  # type: ignore[assignment]
        values = self.read_values({k: w[0] for k, w in wanted.items()})
        for key, raw in values.items():
            entry, p, row = wanted[key]
            self.local.put_raw(key, raw, entry.timestamp)
            self.local.mark_present(p, row)
        return values

    def read_values(self, entries: dict[str, Entry]) -> dict[str, bytes]:
        """Fetch values with ranged GETs, coalescing neighbours, and check their hashes."""
        by_segment: dict[str, list[tuple[int, int, str]]] = {}
        for key, e in entries.items():
            by_segment.setdefault(e.segment, []).append((e.offset, e.length, key))
        requests: list[tuple[str, int, int, list[tuple[int, int, str]]]] = []
        for segment, ranges in by_segment.items():
            ranges.sort()
            group = [ranges[0]]
            start, end = ranges[0][0], ranges[0][0] + ranges[0][1]
            for r in ranges[1:]:
                r_end = r[0] + r[1]
                if r[0] - end <= COALESCE_GAP and max(end, r_end) - start <= COALESCE_MAX:
                    end = max(end, r_end)
                    group.append(r)
                else:
                    requests.append((segment, start, end - start, group))
                    group, start, end = [r], r[0], r_end
            requests.append((segment, start, end - start, group))

        tracker = _Tracker(self.progress, "download", len(entries), sum(r[2] for r in requests))

        def get(req: tuple[str, int, int, list[tuple[int, int, str]]]) -> list[tuple[str, bytes]]:
            segment, start, length, group = req
            try:
                data = self.remote.transport.get_range(self.remote.prefix + segment, start, length)
            except RemoteNotFoundError:
                raise self._gone(segment) from None
            out = []
            for offset, n, key in group:
                raw = data[offset - start : offset - start + n]
                if value_hash(raw) != entries[key].hash:
                    raise IntegrityError(
                        f"the value of {key!r} from {self.remote.location} does not match its "
                        f"content hash: {segment} is corrupt. Nothing was stored locally; ask "
                        "the database's writer to push that key again."
                    )
                out.append((key, raw))
            tracker.add(len(group), length)
            return out

        values: dict[str, bytes] = {}
        if len(requests) == 1:
            values.update(get(requests[0]))
        elif requests:
            with concurrent.futures.ThreadPoolExecutor(min(THREADS, len(requests))) as pool:
                for chunk in pool.map(get, requests):
                    values.update(chunk)
        return values

    # -- change detection ------------------------------------------------------------------

    def local_changes(self) -> dict[str, _LocalChange]:
        """Keys whose local state differs from the base."""
        local = self.local
        base = None if self.replace else self._base
        external = local.external_edits
        # Something wrote to the file behind ebooklet's back (plain booklet, or a session that
        # ended without syncing): every key is a candidate. A linear scan reads the whole file
        # faster than a lookup per key once many keys are candidates.
        scan = external or len(local.touched) * SCAN_FRACTION > len(local)
        changes: dict[str, _LocalChange] = {}
        self._scanned = None
        if scan:
            # One pass: read, compare with the base, hash what may have changed.
            parts = self.all_parts(base) if base is not None else {}
            bits = base.part_bits if base is not None else 0
            touched = local.touched
            wanted = None if external else touched
            scanned = []
            blake2b, new = hashlib.blake2b, _LocalChange
            for key, ts, raw in local.raw_items():
                scanned.append(key)
                if wanted is not None and key not in wanted:
                    continue
                entry = parts[part_of(key, bits)].get(key) if parts else None
                if entry is not None and ts == entry.timestamp and key not in touched:
                    continue
                h = blake2b(raw, digest_size=HASH_LEN).digest()  # value_hash, inlined
                if entry is None or h != entry.hash:
                    changes[key] = new(raw, ts, h)
            # Every key in the data file: a push reuses it for the presence bits.
            self._scanned = set(scanned)
            rest = [key for key in touched if key not in self._scanned]
        else:
            rest = list(local.touched)
        # Touched keys the scan did not see (deleted ones), or all of them without a scan.
        by_part: dict[int, list[str]] = {}
        for key in rest:
            by_part.setdefault(part_of(key, base.part_bits) if base else 0, []).append(key)
        parts = self.parts(base, by_part) if base else {}
        for p, keys in by_part.items():
            part = parts.get(p, _EMPTY)
            for key in keys:
                got = None if scan else local.get_raw(key)
                change = self._compare(key, got, part.get(key))
                if change is not None:
                    changes[key] = change
        if external and base is not None:
            # Keys deleted with plain booklet: seen in the data file once, absent now.
            for p in local.stored_parts():
                if not any(local.bits(p)):
                    continue
                for row, key in enumerate(self.part(base, p).keys):
                    if self._present(p, row) and key not in self._scanned and key not in local.touched:
                        changes[key] = _LocalChange(None, None, None)
        if external:
            # Record what the scan found, so the next sync needs no scan to know it.
            for key, change in changes.items():
                if key not in local.touched:
                    local.touch(key, None if change.raw is not None else now_us())
            local.external_edits = False
            local.sync()
        return changes

    def _compare(self, key: str, got: tuple[int, bytes] | None, entry: Entry | None) -> _LocalChange | None:
        touched = key in self.local.touched
        if got is None:
            if entry is not None and touched:
                return _LocalChange(None, self.local.touched[key], None)
            return None
        ts, raw = got
        if entry is not None and ts == entry.timestamp and not touched:
            return None
        h = value_hash(raw)
        if entry is not None and h == entry.hash:
            return None
        return _LocalChange(raw, ts, h)

    def remote_changes(self, base: Head | None, current: Head | None) -> dict[str, Entry | None]:
        """Keys whose entry differs from ``base`` to ``current`` (None: deleted)."""
        if current is None:
            return {}
        if base is not None and base.uuid != current.uuid:
            base = None
        if base is not None and base.commit_id == current.commit_id:
            return {}
        if base is not None and base.part_bits == current.part_bits:
            changed = [p for p in range(len(current.parts)) if current.parts[p] != base.parts[p]]
            old, new = self.parts(base, changed), self.parts(current, changed)
            pairs = [(old[p], new[p]) for p in changed]
        else:
            new_all = self.all_parts(current)
            old_all = self.all_parts(base) if base is not None else {}
            pairs = [
                (Part(kv for part in old_all.values() for kv in part.items()),
                 Part(kv for part in new_all.values() for kv in part.items()))
            ]
        out: dict[str, Entry | None] = {}
        for old_part, new_part in pairs:
            for key, entry in new_part.items():
                before = old_part.get(key)
                # Content decides, as for local changes: new timestamps on the same bytes are
                # not a change.
                if before is None or before.hash != entry.hash:
                    out[key] = entry
            for key in old_part.keys:
                if key not in new_part:
                    out[key] = None
        return out

    def changes(self) -> list[Change]:
        """The three-way comparison of the local file, the base and the current remote."""
        head, _ = self.current()
        local = self.local_changes()
        self._scanned = None
        if self.replace:
            # The first push replaces the remote: everything there that is not local goes.
            remote_keys: set[str] = set()
            if head is not None:
                remote_keys = {k for part in self.all_parts(head).values() for k in part.keys}
            out = [Change(k, "local", "added", None, c.timestamp, None) for k, c in local.items() if c.raw]
            out += [Change(k, "local", "deleted", None, None, None) for k in remote_keys - set(local)]
            return sorted(out, key=lambda c: c.key)
        remote = self.remote_changes(self._base, head)
        base = self._base
        out = []
        for key in sorted(set(local) | set(remote)):
            in_base = base is not None and key in self.part(base, part_of(key, base.part_bits))
            lc = local.get(key)
            rc = remote.get(key)
            lkind = _kind(in_base, lc.raw is not None) if lc is not None else None
            rkind = _kind(in_base, rc is not None) if key in remote else None
            rts = rc.timestamp if rc is not None else None
            if lc is not None and key in remote:
                out.append(Change(key, "both", lkind, rkind, lc.timestamp, rts, not _same(lc, rc)))
            elif lc is not None:
                out.append(Change(key, "local", lkind, None, lc.timestamp, None))
            else:
                out.append(Change(key, "remote", None, rkind, None, rts))
        return out

    # -- push ------------------------------------------------------------------------------

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

    def push(self, policy: Policy = None) -> PushResult:
        """Commit local changes, rebasing over what others committed meanwhile."""
        _check_policy(policy)
        stats = self.remote.transport.stats
        start = stats.snapshot()
        # Whatever happens to this push, the local changes it carries are durable first.
        self.local.sync()
        if self._session_lease is not None and not self._session_lease.held:
            self.end_session()  # the session's lease was lost: take a new one
            self.start_session()
        try:
            with _gc_paused():
                if self.remote_lock == "push" and self.remote.writable and self._has_changes():
                    with Lease(self.remote, *self._lease_args) as lease:
                        result = self._push(policy, lease)
                else:
                    result = self._push(policy, self._session_lease)
        finally:
            self._scanned = None
        result.requests = stats.requests - start[0]
        result.bytes_sent = stats.bytes_sent - start[1]
        return result

    def _has_changes(self) -> bool:
        """A cheap look for anything a push would send (no lease is taken for nothing)."""
        meta = self.local.get_metadata()
        base = self._base
        return bool(
            self.local.touched or self.local.external_edits or self.replace or base is None
            or (meta is not None and meta[1] > (base.metadata_timestamp or 0))
        )

    def _push(self, policy: Policy, lease: Lease | None) -> PushResult:
        if not self.remote.writable:
            raise ReadOnlyError(
                f"cannot push to {self.remote.location}: it is read-only (a public URL or a "
                "connection without credentials); push through an S3Connection with credentials"
            )
        changes = self.local_changes()
        metadata = self.local.get_metadata()
        base = self._base
        meta_changed = metadata is not None and (base is None or metadata[1] > (base.metadata_timestamp or 0))
        result = PushResult()
        if not changes and not meta_changed and not self.replace and base is not None:
            return result
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ebooklet-upload") as background:
            return self._push_attempts(policy, lease, changes, metadata, result, background)

    def _push_attempts(
        self,
        policy: Policy,
        lease: Lease | None,
        changes: dict[str, _LocalChange],
        metadata: tuple[Any, int] | None,
        result: PushResult,
        background: concurrent.futures.Executor,
    ) -> PushResult:
        segments: dict[str, int] = {}
        uploaded: dict[str, Entry] = {}
        uploads: list[concurrent.futures.Future[None]] = []
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            current, etag = self.current()
            self._check_pushable(current)
            remote = {} if self.replace else self.remote_changes(self._base, current)
            try:
                to_write, dropped = self._rebase(changes, remote, policy)
            except ConflictError:
                concurrent.futures.wait(uploads)
                self._delete_quietly(list(segments))
                raise
            meta_new = metadata is not None and (
                current is None or metadata[1] > (current.metadata_timestamp or 0)
            )
            if not to_write and not meta_new and not self.replace and current is not None:
                # Every local change was already made remotely (or lost to the remote side):
                # nothing to commit, only the remote to catch up with.
                concurrent.futures.wait(uploads)
                self._delete_quietly(list(segments))
                result.pulled = sorted(dropped)
                self._adopt(current, etag, {}, dropped)
                return result
            # Values go up once; a retry uploads only what its rebase newly decided to write.
            pending = {
                k: c for k, c in to_write.items()
                if c.raw is not None and (k not in uploaded or uploaded[k].hash != c.hash)
            }
            # Segments upload in the background while the index is built.
            more_segments, more, upload = self._upload(pending, background)
            segments.update(more_segments)
            uploaded.update(more)
            uploads.append(upload)
            commit_id = new_commit_id()
            head, written, expired = self._build_commit(
                current, to_write, uploaded, segments, commit_id, metadata
            )
            self._tracker.bytes_total += sum(len(blob) for _, blob, _ in written.values())
            self._put_many([(name, blob) for name, blob, _ in written.values()])
            for upload in uploads:
                upload.result()  # every value is up before the head may point at it
            if lease is not None:
                # Fencing: a writer whose lease was taken over must not commit.
                if current is not None and current.lease_token > lease.token:
                    raise LeaseLostError(self.remote.location)
                # Nobody can take a lease over before it expires: one written within the last
                # third of its ttl is still ours (allowing for clock skew between writers).
                lease.renew(if_older_than=1 / 3)
                head.lease_token = lease.token
            try:
                new_etag = self.remote.transport.put(
                    self.remote.db_key, head.encode(), Update(etag) if current is not None else "create"
                )
            except PreconditionFailed:
                # A retried request may have committed already: check before rebasing.
                winner, winner_etag = self.fetch_head()
                landed = winner is not None and commit_id in (winner.commit_id, winner.parent)
                if not landed:
                    self._delete_quietly([name for name, _, _ in written.values()])
                    logger.info("push: another writer committed first; rebasing (attempt %d)", attempt)
                    continue
                # Committed (and maybe built on already): the ETag is known only if ours is
                # still the head; otherwise the next request simply reads the head in full.
                new_etag = winner_etag if winner.commit_id == commit_id else None  # type: ignore[union-attr]
            result.committed = True
            result.commit = head.commit
            result.attempts = attempt
            result.keys = sorted(k for k, c in to_write.items() if c.raw is not None)
            result.deleted = sorted(k for k, c in to_write.items() if c.raw is None)
            result.pulled = sorted(dropped)
            self._adopt(head, new_etag, written, dropped)
            if expired:
                # Retired over RETIRE_AFTER_S ago and now out of the head: no reader needs them.
                self._delete_quietly(expired)
            return result
        raise PushConflictError(
            f"{self.remote.location} kept changing while pushing ({PUSH_ATTEMPTS} attempts); "
            "nothing was committed. Push again."
        )

    def _check_pushable(self, current: Head | None) -> None:
        base = self._base
        if current is None and base is not None and not self.replace:
            synced = self.local.state.get("location")
            elsewhere = f" (this file was synced with {synced})" if synced != self.remote.location else ""
            raise SyncError(
                f"there is no database at {self.remote.location}{elsewhere}: it was deleted since "
                "the last sync. To create it again from this file's data, call delete_remote() "
                "(which forgets the old database) and then push()."
            )
        mine = serializer_name(self.local.value_serializer)
        if current is not None and not self.replace and current.value_serializer != mine:
            raise SyncError(
                f"{self.remote.location} stores values serialized with {current.value_serializer!r} "
                f"but this local file uses {mine!r}; they cannot be mixed"
            )

    def _upload(
        self, changes: dict[str, _LocalChange], background: concurrent.futures.Executor
    ) -> tuple[dict[str, int], dict[str, Entry], concurrent.futures.Future[None]]:
        """Pack new values into segments (in key order) and start uploading them.

        Returns each segment's size, where each value landed, and the upload's future.
        """
        commit_id = new_commit_id()
        keys = sorted(k for k, c in changes.items() if c.raw is not None)
        picked = [changes[k] for k in keys]
        raws = [c.raw for c in picked]
        lengths = list(map(len, raws))  # type: ignore[arg-type]
        # Cut into segments of at most SEGMENT_BYTES (a bigger value gets one of its own).
        cuts, size = [0], 0
        for i, n in enumerate(lengths):
            if size and size + n > SEGMENT_BYTES:
                cuts.append(i)
                size = 0
            size += n
        cuts.append(len(keys))
        entries: dict[str, Entry] = {}
        bodies: list[tuple[str, bytes]] = []
        counts: dict[str, int] = {}
        for n, (lo, hi) in enumerate(itertools.pairwise(cuts)):
            if lo == hi:
                continue
            name = segment_name(commit_id, n)
            offsets = itertools.accumulate(lengths[lo:hi - 1], initial=0)
            entries.update(zip(keys[lo:hi], map(
                Entry,
                [c.timestamp for c in picked[lo:hi]],
                [c.hash for c in picked[lo:hi]],
                itertools.repeat(name),
                offsets,
                lengths[lo:hi],
            ), strict=True))
            bodies.append((name, b"".join(raws[lo:hi])))  # type: ignore[arg-type]
            counts[name] = hi - lo
        self._tracker = _Tracker(self.progress, "upload", len(entries), sum(len(b) for _, b in bodies))
        upload = background.submit(self._put_many, bodies, counts)
        return {name: len(body) for name, body in bodies}, entries, upload

    def _put_many(self, objects: list[tuple[str, bytes]], keys: dict[str, int] | None = None) -> None:
        """Create the objects (in parallel), reporting progress; ``keys`` counts values in each."""
        keys = keys or {}

        def put(obj: tuple[str, bytes]) -> None:
            self.remote.transport.put(self.remote.prefix + obj[0], obj[1], "create")
            self._tracker.add(keys.get(obj[0], 0), len(obj[1]))

        if len(objects) <= 1:
            for obj in objects:
                put(obj)
            return
        with concurrent.futures.ThreadPoolExecutor(min(THREADS, len(objects))) as pool:
            list(pool.map(put, objects))

    def _delete_quietly(self, names: list[str]) -> None:
        try:
            self.remote.transport.delete([self.remote.prefix + name for name in names])
        except Exception as exc:  # leftovers are unreferenced; a failure here loses nothing
            logger.warning("could not delete %d unreferenced objects: %s", len(names), exc)

    def _rebase(
        self, changes: dict[str, _LocalChange], remote: dict[str, Entry | None], policy: Policy
    ) -> tuple[dict[str, _LocalChange], set[str]]:
        """What this push writes, and which cached keys it drops, given others' commits."""
        to_write = dict(changes)
        dropped = set(remote)
        conflicts = []
        for key in set(changes) & set(remote):
            if _same(changes[key], remote[key]):
                del to_write[key]
            else:
                conflicts.append(key)
        if conflicts and policy is None:
            raise ConflictError(conflicts)
        for key in conflicts:
            winner = self._resolve(key, changes[key], remote[key], policy)
            if winner == "remote":
                del to_write[key]
                continue
            dropped.discard(key)
            if winner != "local":
                to_write[key] = winner
                if winner.raw is not None:
                    self.local.set_raw(key, winner.raw, winner.timestamp)
                else:
                    self.local.delete(key, winner.timestamp)
        return to_write, dropped

    def _resolve(self, key: str, lc: _LocalChange, rc: Entry | None, policy: Policy) -> Any:
        """Apply a conflict policy: "local", "remote", or a merged _LocalChange."""
        if policy in ("local", "remote"):
            return policy
        if policy == "newest":
            remote_ts = rc.timestamp if rc is not None else 0
            local_ts = lc.timestamp if lc.timestamp is not None else now_us()
            return "local" if local_ts >= remote_ts else "remote"
        assert callable(policy)
        local_value = DELETED if lc.raw is None else self.local.decode(lc.raw)
        remote_value = DELETED if rc is None else self.local.decode(self.read_values({key: rc})[key])
        base_entry = self.base_entry(key)
        base_value = DELETED
        if base_entry is not None:
            base_value = self.local.decode(self.read_values({key: base_entry[0]})[key])
        chosen = policy(key, local_value, remote_value, base_value)
        if chosen is DELETED:
            return _LocalChange(None, now_us(), None)
        raw = self.local.encode(chosen)
        return _LocalChange(raw, now_us(), value_hash(raw))

    def _build_commit(
        self,
        current: Head | None,
        to_write: dict[str, _LocalChange],
        uploaded: dict[str, Entry],
        segments: dict[str, int],
        commit_id: str,
        metadata: tuple[Any, int] | None,
    ) -> tuple[Head, dict[int, tuple[str, bytes, Part]], list[str]]:
        """The new head, the index parts it needs on top of ``current``, and the retired
        objects old enough to delete once it is committed."""
        stamp = now_us()
        fresh = current is None or self.replace
        if fresh:
            head = Head.new(serializer_name(self.local.value_serializer))
            if current is not None:
                # Replacing: everything the old database referenced is retired.
                head.retired = [list(r) for r in current.retired]
                head.retired += [[n, stamp] for n in current.parts if n]
                head.retired += [[n, stamp] for n in current.segments]
        else:
            assert current is not None
            head = Head(**asdict(current))
        head.commit = current.commit + 1 if current is not None else 1
        head.commit_id = commit_id
        head.parent = current.commit_id if current is not None else None
        head.timestamp = stamp
        if metadata is not None and (head.metadata_timestamp or 0) < metadata[1]:
            head.metadata, head.metadata_timestamp = metadata

        # Choose the index layout first (an upper bound on the growth), so that a push that
        # splits the index groups its keys once.
        adds = [k for k, c in to_write.items() if c.raw is not None]
        bits = bits_for(
            head.n_keys + len(adds), head.key_bytes + sum(len(k.encode()) for k in adds), head.part_bits
        )
        split = bits != head.part_bits
        if split:
            old_parts = self.all_parts(current) if current is not None and not fresh else {}
            before = {0: Part(kv for part in old_parts.values() for kv in part.items())}
            head.retired += [[n, stamp] for n in head.parts if n]
            head.part_bits, head.parts = bits, [None] * (2**bits)
            groups = {0: to_write}
        elif bits == 0:
            groups = {0: to_write}
            before = self.parts(current, groups) if not fresh else {0: _EMPTY}  # type: ignore[arg-type]
        else:
            groups = {}
            for (key, change), p in zip(to_write.items(), parts_of(list(to_write), bits), strict=True):
                groups.setdefault(p, {})[key] = change
            before = self.parts(current, groups) if not fresh else {p: _EMPTY for p in groups}  # type: ignore[arg-type]
        merged: dict[int, dict[str, Entry]] = {}
        removed: list[tuple[str, Entry]] = []
        added: list[tuple[str, Entry]] = []
        for p, writes in groups.items():
            if not len(before[p]):
                # Nothing to replace (e.g. a first push): the new entries are the part.
                entries = {k: uploaded[k] for k, c in writes.items() if c.raw is not None}
                added.extend(entries.items())
                merged[p] = entries
                continue
            entries = dict(before[p].items())
            for key, change in writes.items():
                old = entries.pop(key, None)
                if old is not None:
                    removed.append((key, old))
                if change.raw is not None:
                    new = entries[key] = uploaded[key]
                    added.append((key, new))
            merged[p] = entries
        if split:
            regrouped: dict[int, dict[str, Entry]] = {}
            everything = merged[0]
            for key, p in zip(everything, parts_of(list(everything), bits), strict=True):
                regrouped.setdefault(p, {})[key] = everything[key]
            # Every part is rewritten, the ones left empty too.
            merged = {p: regrouped.get(p, {}) for p in range(2**bits)}
        # The head's counters, in bulk.
        head.n_keys += len(added) - len(removed)
        head.n_bytes += sum(e.length for _, e in added) - sum(e.length for _, e in removed)
        head.key_bytes += sum(len(k.encode()) for k, _ in added) - sum(len(k.encode()) for k, _ in removed)
        live: dict[str, int] = dict.fromkeys(segments, 0)
        for _, e in added:
            live[e.segment] += e.length
        for _, e in removed:
            live[e.segment] = live.get(e.segment, 0) - e.length
        for name, delta in live.items():
            if name in segments:
                head.segments.setdefault(name, [segments[name], 0])
            if name in head.segments:
                head.segments[name][1] += delta
        for name, (_size, used) in list(head.segments.items()):
            if used <= 0:
                del head.segments[name]
                head.retired.append([name, stamp])
        written: dict[int, tuple[str, bytes, Part]] = {}
        for p, entries in merged.items():
            if head.parts[p] is not None:
                head.retired.append([head.parts[p], stamp])
            if not entries:
                head.parts[p] = None
                continue
            part = Part(entries)
            name = part_name(head.part_bits, p, commit_id)
            written[p] = (name, part.encode(), part)
            head.parts[p] = name
        # Objects retired long ago leave the list now and are deleted after the commit.
        cutoff = stamp - int(RETIRE_AFTER_S * 1e6)
        head.retired = _unreferenced(head, head.retired)
        expired = [r[0] for r in head.retired if r[1] <= cutoff]
        head.retired = [r for r in head.retired if r[1] > cutoff]
        return head, written, expired


    def _adopt(
        self,
        head: Head,
        etag: str | None,
        written: dict[int, tuple[str, bytes, Part]],
        dropped: set[str],
        still_pending: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """Make ``head`` the base: drop stale cached values, keep its parts and presence bits.

        ``still_pending`` are the touched keys that remain local changes against ``head``.
        """
        local = self.local
        base = self._base
        if dropped and base is not None and not self.replace:
            # Cached values are about to go; their presence bits go first, durably, so that a
            # crash in between cannot make a dropped key look deleted by the user.
            for key in dropped:
                p = part_of(key, base.part_bits)
                name = base.parts[p] if p < len(base.parts) else None
                if name is not None and local.has_part(p, name):
                    row = self.part(base, p).row(key)
                    if row is not None:
                        local.mark_present(p, row, present=False)
            local.flush_bits()
        for key in dropped:
            local.drop(key)
        local.state.pop("replace", None)
        stored = local.stored_parts()
        # Keys seen in the data file stay seen when their part is replaced: recomputing that
        # from the file alone would forget keys deleted since (and bring them back).
        carried: set[str] = set()
        if base is not None and not self.replace:
            for p, name in stored.items():
                if p >= len(head.parts) or head.parts[p] != name:
                    rows = enumerate(self.part(base, p).keys)
                    carried.update(key for row, key in rows if self._present(p, row))
        carried -= dropped
        self.set_base(head, etag)
        if local.stored_parts() != stored:
            stored = {}  # the layout changed and the stored parts were forgotten
        # Stored parts that this head replaced are kept up to date (with their presence
        # bits) when their new version was downloaded on the way; otherwise forgotten.
        renewed: dict[int, tuple[str, bytes, Part]] = dict(written)
        for p, name in stored.items():
            new_name = head.parts[p]
            if p in written or new_name == name:
                continue
            blob = self._fresh.get(new_name) if new_name else None
            if blob is None:
                local.forget_part(p)
            else:
                part = self._parts.get(new_name) or Part.decode(blob, new_name)  # type: ignore[arg-type]
                renewed[p] = (new_name, blob, part)  # type: ignore[assignment]
        n_keys = sum(len(part) for _, _, part in renewed.values())
        present = None
        if n_keys * SCAN_FRACTION > len(local):
            # Many presence bits to take: one pass over the keys beats a lookup per key, and
            # the push that led here has usually just made that pass.
            present = self._scanned - dropped if self._scanned is not None else set(local.keys())
        for p, (name, blob, part) in renewed.items():
            local.store_part(p, name, blob, part.keys, present, carried)
            self._parts[name] = part
        self._fresh.clear()
        self._scanned = None
        local.clear_touched(set(local.touched) - still_pending)
        local.sync()

    # -- whole-database operations -------------------------------------------------------

    def _require_writable(self, remote: Remote, what: str) -> None:
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
        self.local.state["replace"] = True
        self.set_base(None, None)
        self.local.external_edits = True
        self.local.save_state()
        return len(names) + 1

    def copy_to(self, target: Remote, overwrite: bool = False) -> Head:
        """Copy the current remote database to ``target``; its head is written last."""
        self._require_writable(target, "copy to")
        head, _ = self.fetch_head()
        if head is None:
            raise RemoteNotFoundError(f"there is no database at {self.remote.location} to copy")
        try:
            existing = target.transport.get(target.db_key)
        except RemoteNotFoundError:
            existing = None
        old: Head | None = None
        if existing is not None:
            if not overwrite:
                raise SyncError(
                    f"{target.location} already holds a database; pass overwrite=True to replace it"
                )
            old = Head.decode(existing.data, where=target.location)
        names = [n for n in head.parts if n] + list(head.segments)

        def copy(name: str) -> None:
            src, dst = self.remote.prefix + name, target.prefix + name
            if not self.remote.transport.copy(src, target.transport, dst):
                # One object at a time: at most one segment (64 MiB) is ever in memory.
                blob = self.remote.transport.get(src)
                target.transport.put(dst, blob.data, "overwrite")  # type: ignore[union-attr]

        if names:
            with concurrent.futures.ThreadPoolExecutor(min(THREADS, len(names))) as pool:
                list(pool.map(copy, names))
        copied = Head(**asdict(head))
        copied.uuid = Head.new(None).uuid
        copied.retired = []
        copied.lease_token = 0
        if old is not None:
            stamp = now_us()
            copied.retired = [list(r) for r in old.retired]
            copied.retired += [[n, stamp] for n in old.parts if n] + [[n, stamp] for n in old.segments]
            # A target that was an earlier copy shares object names with this one.
            copied.retired = _unreferenced(copied, copied.retired)
        mode: Any = Update(existing.etag) if existing is not None else "create"
        try:
            target.transport.put(target.db_key, copied.encode(), mode)
        except PreconditionFailed:
            raise SyncError(f"{target.location} changed while copying to it; nothing was replaced") from None
        return copied

    # -- discard ---------------------------------------------------------------------------

    def discard(self, keys: Iterable[str] | None = None) -> list[str]:
        """Revert local changes (all, or those to ``keys``) to the base; return their keys."""
        changes = self.local_changes()
        self._scanned = None
        chosen = sorted(changes if keys is None else set(keys) & set(changes))
        base = None if self.replace else self._base
        for key in chosen:
            self.local.drop(key)
            if base is not None:
                p = part_of(key, base.part_bits)
                row = self.part(base, p).row(key)
                if row is not None:
                    # Back to "not fetched": the next read brings the base value.
                    self.local.mark_present(p, row, present=False)
        self.local.clear_touched(set(chosen))
        self.local.sync()
        return chosen

    # -- pull ------------------------------------------------------------------------------

    def pull(self, policy: Policy = None) -> PullResult:
        """Bring in what others committed since the last sync."""
        _check_policy(policy)
        try:
            return self._pull(policy)
        finally:
            self._scanned = None

    def _pull(self, policy: Policy) -> PullResult:
        start = self.remote.transport.stats.requests
        result = PullResult()
        head, etag = self.current()
        base = self._base
        if head is None:
            if base is not None and not self.replace:
                advice = "; the local file keeps what it had fetched"
                if self.remote.writable:
                    advice = (
                        "; to create it again from this file's data, call delete_remote() and "
                        "then push()"
                    )
                raise RemoteNotFoundError(
                    f"the remote database {self.remote.location} no longer exists{advice}"
                )
        elif base is None or self.replace or head.commit_id != base.commit_id:
            remote = {} if self.replace else self.remote_changes(base, head)
            # Edits made behind ebooklet's back are recorded before any part is re-stored.
            local = self.local_changes() if remote or self.local.external_edits else {}
            conflicts = [k for k in set(local) & set(remote) if not _same(local[k], remote[k])]
            if conflicts and policy is None:
                raise ConflictError(conflicts)
            kept = {k for k in set(local) & set(remote) if k not in conflicts}
            for key in conflicts:
                winner = self._resolve(key, local[key], remote[key], policy)
                if winner == "remote":
                    continue
                kept.add(key)
                if winner != "local":
                    if winner.raw is None:
                        self.local.delete(key, winner.timestamp)
                    else:
                        self.local.set_raw(key, winner.raw, winner.timestamp)
            dropped = set(remote) - kept
            for key in sorted(dropped):
                (result.updated if remote[key] is not None else result.deleted).append(key)
            # Local changes survive a pull, except those now identical to the remote.
            pending = set(self.local.touched) - dropped - {k for k in kept if k not in conflicts}
            if not self.replace:
                self._adopt(head, etag, {}, dropped, pending)
        result.commit = head.commit if head is not None else None
        result.requests = self.remote.transport.stats.requests - start
        return result


def _unreferenced(head: Head, retired: list[list[Any]]) -> list[list[Any]]:
    """The retired entries that ``head`` does not reference (those may be deleted)."""
    live = set(head.segments) | {n for n in head.parts if n}
    return [r for r in retired if r[0] not in live]


def _same(lc: _LocalChange, rc: Entry | None) -> bool:
    """Both sides made the same change (same bytes, or both deleted)."""
    if lc.raw is None:
        return rc is None
    return rc is not None and lc.hash == rc.hash


def _kind(in_base: bool, present: bool) -> ChangeKind:
    if not present:
        return "deleted"
    return "modified" if in_base else "added"


def _check_policy(policy: Policy) -> None:
    if policy is None or policy in ("local", "remote", "newest") or callable(policy):
        return
    raise ValueError(
        f"on_conflict must be 'local', 'remote', 'newest', a function (key, local, remote, base) "
        f"-> value or ebooklet.DELETED, or None; not {policy!r}"
    )
