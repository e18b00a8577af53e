"""Publishing staged writes: the runs of many stages merged into the index, part by part, in
one conditional commit (docs/scaling.rst).

The runs of every token are read block by block, in index-part order (each run is sorted
that way), while :func:`~.commit.build_head` builds the next head one part at a time; memory
holds a block per run and one index part. For a key in several tokens the later token wins
(within a token, the later run). A key that someone else changed since a stage opened (the
head the stage's token names as its base) is a conflict, settled by ``on_conflict`` as a
push settles its own (:mod:`.conflicts`).
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import itertools
import logging
import operator
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import (
    CommitUnknownError,
    ConflictError,
    PushConflictError,
    RemoteFormatError,
    RemoteNotFoundError,
    SerializerMismatchError,
    SyncError,
)
from ..format import (
    SHA256_FROM,
    Entry,
    Head,
    Part,
    bits_for,
    hash_in,
    legacy_segment,
    new_commit_id,
    part_of,
    value_hash,
)
from ..format.run import Block, RunHeader, decode_block, decode_header, header_length
from ..local import codec_for
from ..lock import Lease
from ..remote import Remote
from ..results import PushResult
from ..settings import now_us, settings
from .commit import Record, SegmentWriter, build_head, next_head
from .conflicts import DELETED, Policy
from .diff import LocalChange, same
from .gc import check_uploads_kept, collect
from .heads import HeadStore
from .leasing import Backoff
from .objects import THREADS, ObjectStore, RangeRequest, Tracker, Uploader
from .stage import StageToken

logger = logging.getLogger(__name__)


#: The first read of a run: its header, which lists about 40 bytes per block of 4,096 entries.
HEADER_READ = 16 * 1024


class _Run:
    """One run, read block by block in order, the next block fetched ahead."""

    def __init__(self, objects: ObjectStore, name: str, token: StageToken, seg_base: int,
                 pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self.objects, self.name, self.token, self.seg_base, self.pool = objects, name, token, seg_base, pool
        self.header: RunHeader | None = None
        self._end = 0
        self._next = 0  # the next block to fetch
        self._ahead: concurrent.futures.Future[Block] | None = None
        self.block: Block | None = None
        self.row = 0  # the next entry of self.block

    def open(self) -> None:
        transport, key = self.objects.remote.transport, self.objects.prefix + self.name
        try:
            blob = transport.get_start(key, HEADER_READ)
            assert blob is not None
            self._end = header_length(blob.data, self.name)  # at most MAX_HEADER_BYTES
            if self._end > len(blob.data) and blob.size is not None and blob.size > len(blob.data):
                blob = transport.get_start(key, self._end)  # a header of many blocks
                assert blob is not None
        except RemoteNotFoundError:
            raise self.objects.gone(self.name) from None
        size = blob.size if blob.size is not None else len(blob.data)
        header = decode_header(blob.data, self.name, size)
        if (header.db, header.stage) != (self.token.db, self.token.stage):
            raise decode_error(self.name, "it belongs to another stage or database than its token")
        self.header = header
        self._fetch_ahead()

    def _fetch_ahead(self) -> None:
        assert self.header is not None
        if self._next < len(self.header.blocks):
            row = self.header.blocks[self._next]
            self._next += 1
            self._ahead = self.pool.submit(self._read, row)
        else:
            self._ahead = None

    def _read(self, row: tuple[int, int, int, int, int]) -> Block:
        data = self.objects.get_range(RangeRequest(self.name, self._end + row[0], row[1], ()))
        return decode_block(data, self.name, row, [size for _, size in self.token.segments])

    def take(self, p: int, shift: int) -> list[Record]:
        """The run's records of part ``p`` (parts are the top bits: ``order >> shift``);
        entries of earlier parts are skipped."""
        out: list[Record] = []
        while True:
            if self.block is None or self.row >= len(self.block.keys):
                if self._ahead is None:
                    return out
                self.block, self.row = self._ahead.result(), 0
                self._fetch_ahead()
            b = self.block
            lo = bisect.bisect_left(b.order, p << shift, self.row)
            hi = bisect.bisect_left(b.order, (p + 1) << shift, lo)
            base = self.seg_base
            segs = b.segs[lo:hi] if not base else [base + s for s in b.segs[lo:hi]]
            out += zip(b.keys[lo:hi], b.ts[lo:hi], b.hashes[lo:hi], segs, b.offs[lo:hi], b.lens[lo:hi],
                       itertools.repeat(0))
            self.row = hi
            if hi < len(b.keys):
                return out


def decode_error(name: str, why: str) -> RemoteFormatError:
    return RemoteFormatError(f"{name} cannot be committed: {why}. Stage those writes again")


class RunSpool:
    """The runs of all tokens as :func:`build_head` reads a spool: ``group(p)`` lists the
    records of part ``p`` (of ``2**bits``), the last one of a key winning; ``owner`` tells
    which token each key of the last group came from."""

    def __init__(self, objects: ObjectStore, tokens: Sequence[StageToken], bits: int) -> None:
        self.bits = bits
        self.segments: list[str] = []
        self.sizes: dict[str, int] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="ebooklet-runs")
        self.runs: list[tuple[int, _Run]] = []
        for t, token in enumerate(tokens):
            base = len(self.segments)
            for name, size in token.segments:
                self.segments.append(name)
                self.sizes[name] = size
            self.runs += [(t, _Run(objects, name, token, base, self._pool)) for name in token.runs]
        for _ in self._pool.map(lambda run: run[1].open(), self.runs):
            pass
        self.owner: dict[str, int] = {}
        self.on_group: Callable[[int, list[Record]], list[Record]] = lambda p, records: records

    def groups(self) -> set[int]:
        shift = 64 - self.bits
        out: set[int] = set()
        for _, run in self.runs:
            assert run.header is not None
            for _, _, _, lo, hi in run.header.blocks:
                out.update(range(lo >> shift, (hi >> shift) + 1))
        return out

    def group(self, p: int) -> list[Record]:
        shift = 64 - self.bits
        latest: dict[str, Record] = {}
        owner: dict[str, int] = {}
        for t, run in self.runs:
            records = run.take(p, shift)
            keys = list(map(operator.itemgetter(0), records))
            latest.update(zip(keys, records, strict=True))  # a later run wins
            owner.update(dict.fromkeys(keys, t))
        self.owner = owner
        return self.on_group(p, list(latest.values()))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Parts:
    """Index parts of heads by number, the last few kept."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self._cache: collections.OrderedDict[str, Part] = collections.OrderedDict()

    def part(self, head: Head, q: int) -> Part:
        name = head.parts[q]
        if name is None:
            return Part()
        part = self._cache.get(name)
        if part is None:
            part = self._cache[name] = Part.decode(self.objects.get(name), name)
            if len(self._cache) > 8:
                self._cache.popitem(last=False)
        return part

    def entry(self, head: Head, key: str) -> Entry | None:
        return self.part(head, part_of(key, head.part_bits)).get(key)


class Conflicts:
    """Keys staged against a base that someone else changed since, settled part by part."""

    def __init__(self, objects: ObjectStore, heads: HeadStore, current: Head, tokens: Sequence[StageToken],
                 spool: RunSpool, policy: Policy, keep_remote: set[str], writer: SegmentWriter) -> None:
        self.objects, self.current, self.tokens, self.spool = objects, current, tokens, spool
        self.policy, self.keep_remote, self.writer = policy, keep_remote, writer
        self.parts = _Parts(objects)
        self.unsettled: list[str] = []
        self.bases: dict[int, Head] = {}
        for t, token in enumerate(tokens):
            if token.base[1] == current.commit_id:
                continue
            base = heads.read_log(*token.base)
            if base is None:
                raise SyncError(
                    f"{objects.remote.location}: the commit a stage started from ({token.base[0]}) "
                    "is no longer kept, so changes made since cannot be told from the stage's; "
                    "stage those writes again"
                )
            self.bases[t] = base
        self.codec = None
        if callable(policy):
            try:
                self.codec = codec_for(current.value_serializer)
            except ValueError as exc:
                raise SerializerMismatchError(
                    f"{objects.remote.location}: {exc}; a conflict function needs the values "
                    "decoded: settle the conflicts with 'local', 'remote' or 'newest' instead"
                ) from None

    def settle(self, p: int, records: list[Record]) -> list[Record]:
        if not self.bases:
            return records
        out = []
        for rec in records:
            t = self.spool.owner[rec[0]]
            base = self.bases.get(t)
            if base is not None:
                rec = self._settle_one(rec, base)
            if rec is not None:
                out.append(rec)
        return out

    def _settle_one(self, rec: Record, base: Head) -> Record | None:
        key = rec[0]
        now = self.parts.entry(self.current, key)
        was = self.parts.entry(base, key)
        if (now.hash if now else None) == (was.hash if was else None):
            return rec  # not changed remotely since the stage opened
        if rec[2] is not None and now is not None and self._two_kinds(rec, now):
            # A hash of an earlier format beside one of format 3: the bytes tell whether both
            # sides made the same change (one ranged GET, for values of the same size only).
            if hash_in(now.segment, self._raw_at(self._entry(rec))) == now.hash:
                return rec
        change = LocalChange(None if rec[2] is None else b"", rec[1], rec[2])
        if same(change, now):
            return rec
        policy = self.policy
        if policy is None:
            self.unsettled.append(key)
            return rec
        remote_ts = now.timestamp if now is not None else self.current.timestamp
        if policy == "remote" or policy == "newest" and remote_ts > rec[1]:
            self.keep_remote.add(key)
            return rec
        if policy in ("local", "newest"):
            return rec
        assert callable(policy) and self.codec is not None
        chosen = policy(key, self._value(rec), self._value_at(now), self._value_at(was))
        if chosen is DELETED:
            return (key, now_us(), None, 0, 0, 0, 0)
        raw = self.codec.encode(chosen, key)
        seg, off = self.writer.add(raw)
        self.writer.flush()
        return (key, now_us(), value_hash(raw), seg, off, len(raw), 0)

    def _two_kinds(self, rec: Record, entry: Entry) -> bool:
        """Whether a staged write and ``entry`` may hold the same bytes under hashes of two
        kinds (see format.legacy_segment)."""
        mine = self.spool.segments[rec[3]]
        return rec[5] == entry.length >= SHA256_FROM and legacy_segment(mine) != legacy_segment(entry.segment)

    def same_bytes(self, rec: Record, was: Entry) -> bool:
        """Whether a staged write is the bytes of ``was``, an entry whose hash is of the other
        kind (asked by build_head for values of the same size only)."""
        return hash_in(was.segment, self._raw_at(self._entry(rec))) == was.hash

    def _entry(self, rec: Record) -> Entry:
        return Entry(rec[1], rec[2], self.spool.segments[rec[3]], rec[4], rec[5])  # type: ignore[arg-type]

    def _value(self, rec: Record) -> Any:
        if rec[2] is None:
            return DELETED
        return self._value_at(self._entry(rec))

    def _raw_at(self, entry: Entry) -> bytes:
        """The value ``entry`` points at, checked against its hash."""
        data = self.objects.get_range(RangeRequest(entry.segment, entry.offset, entry.length, ()))
        if hash_in(entry.segment, data) != entry.hash:
            raise decode_error(entry.segment, "a value does not match its content hash")
        return data

    def _value_at(self, entry: Entry | None) -> Any:
        if entry is None:
            return DELETED
        assert self.codec is not None
        return self.codec.decode(self._raw_at(entry))


def commit_staged(remote: Remote, tokens: Sequence[StageToken], policy: Policy,
                  lease: Lease | None, wait: float) -> PushResult:
    """Publish ``tokens`` in one commit on ``remote``, holding ``lease`` (when given). While
    other writers keep committing first, attempts go on for ``wait`` seconds (without a lease,
    with jittered pauses between them, as a push does)."""
    objects = ObjectStore(remote)
    heads = HeadStore(remote, objects)
    deadline = time.monotonic() + wait
    pause = Backoff(most=min(2.0, max(0.05, wait / 8)))
    for attempt in itertools.count(1):
        result = _commit_once(remote, objects, heads, tokens, policy, lease, attempt)
        if result is not None:
            if result.committed:
                objects.delete_quietly([name for token in tokens for name in token.runs])
            return result
        if time.monotonic() >= deadline:
            break
        if lease is None:
            pause.sleep(deadline - time.monotonic())
    raise PushConflictError(
        f"{remote.location} kept changing while committing staged writes ({attempt} attempts in "
        f"{wait:g} s); nothing was committed. Commit again, or give a longer lock_wait."
    )


def _check_tokens(current: Head | None, remote: Remote, tokens: Sequence[StageToken]) -> Head:
    if current is None:
        raise RemoteNotFoundError(
            f"there is no database at {remote.location} now: it was deleted since the writes "
            "were staged; create it again and stage them again"
        )
    for token in tokens:
        if token.db != current.uuid:
            raise SyncError(
                f"stage {token.stage} was made for another database than the one now at "
                f"{remote.location} (it was replaced since); stage those writes again"
            )
    return current


def _check_kept(remote: Remote, tokens: Sequence[StageToken]) -> None:
    """Every token's oldest upload is still there, and young enough by the store's clock
    that garbage collection will not take it before the head is written (gc.py)."""
    for token in tokens:
        try:
            check_uploads_kept(remote, token.first_upload, token.started)
        except SyncError as exc:
            raise SyncError(
                f"{str(exc).removesuffix(' Push again.')} (stage {token.stage}). Stage those writes "
                "again: uploads left uncommitted are garbage once older than gc's min_age"
            ) from None


def _commit_once(remote: Remote, objects: ObjectStore, heads: HeadStore, tokens: Sequence[StageToken],
                 policy: Policy, lease: Lease | None, attempt: int) -> PushResult | None:
    current, etag = heads.read_latest()
    current = _check_tokens(current, remote, tokens)
    if attempt == 1:
        _check_kept(remote, tokens)  # early, before reading runs that may be gone
    adds = sum(t.written for t in tokens)
    bits = bits_for(current.n_keys + adds, current.key_bytes + sum(t.key_bytes for t in tokens),
                    current.part_bits)
    head = next_head(current, False, new_commit_id(), now_us(), bits, None,
                     current.value_serializer or "bytes", None)
    uploader = Uploader(objects, Tracker(None, "upload"))
    spool = RunSpool(objects, tokens, bits)
    keep_remote: set[str] = set()
    merges = SegmentWriter(head.commit_id, spool.segments, spool.sizes, uploader.submit)
    conflicts = Conflicts(objects, heads, current, tokens, spool, policy, keep_remote, merges)
    spool.on_group = conflicts.settle
    parts = _Parts(objects)
    sent = False
    try:
        built = build_head(
            current, head, spool, spool.segments, spool.sizes, keep_remote,
            lambda q: list(parts.part(current, q).items()),
            lambda p, name, part, local: uploader.submit(name, part.encode()), False, None,
            conflicts.same_bytes,
        )
        if conflicts.unsettled:
            raise ConflictError(sorted(conflicts.unsettled))
        if lease is not None:
            HeadStore.check_fence(current, lease)
            head.lease_token = lease.token
        uploader.submit(*heads.log_entry(head))
        uploader.wait()
        if lease is not None:
            lease.renew(if_older_than=1 / 3)
        # A gc between the stages and now must not leave the head pointing at removed objects.
        _check_kept(remote, tokens)
        sent = True
        committed = heads.commit(head, etag)
    except BaseException as exc:
        uploader.close()
        if not (sent and isinstance(exc, CommitUnknownError)):
            objects.delete_quietly(uploader.names)
        raise
    finally:
        spool.close()
    uploader.close()
    if committed is None:
        objects.delete_quietly(uploader.names)  # another writer committed first: try again
        return None
    unused = [name for name in spool.sizes if name not in head.segments]
    if unused:
        objects.delete_quietly(unused)  # values later tokens replaced
    if head.commit % settings.gc_every == 0:
        try:
            collect(remote, heads, head)
        except Exception as exc:  # noqa: BLE001 - garbage waits for the next collection
            logger.warning("collecting garbage on %s failed: %s", remote.location, exc)
    return PushResult(committed=True, commit=head.commit, keys=built.written, deleted=built.deleted,
                      attempts=attempt)
