"""Staged writes: values and index entries uploaded from any machine, published later by one
commit (:mod:`.staged`) as Delta Lake and Iceberg writers do.

A :class:`Stage` takes writes like a write-only mapping. It keeps them in a bounded buffer;
when the buffer fills (and at :meth:`Stage.close`) it sorts them by index part, packs their
values in that order into segments (so that a reader of a group of index parts finds its
values side by side) and writes a run of their index entries (:mod:`ebooklet.format.run`),
all uploaded in the background. Nothing is visible to readers until
:func:`~ebooklet.sync.staged.commit_staged` publishes the token that ``close`` returns.
Uploads that are never committed are garbage: ``gc`` removes them once they are older than
its ``min_age``, by the store's clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ClosedError, ReadOnlyError, RemoteNotFoundError, SerializerMismatchError
from ..format import new_commit_id, segment_name, value_hash
from ..format.run import RUN_MAX_ENTRIES, encode_run, key_order
from ..limits import check_key, check_value_size
from ..local import codec_for
from ..remote import Remote, RemoteConn, connect
from ..settings import now_us
from .commit import SegmentWriter
from .heads import HeadStore
from .objects import ObjectStore, Tracker, Uploader

#: A stage writes a run once it holds this many writes...
RUN_ENTRIES = 131_072
#: ...or this many bytes of values (the stage's memory, beside the uploads in flight).
RUN_BYTES = 32 * 1024 * 1024
#: Values handed to the segment writer at a time (a batch that fits the segment being
#: filled is packed without a call per value).
PACK_CHUNK = 1024


def run_name(stage_id: str, n: int) -> str:
    """A run's name, relative to the database's object prefix."""
    return f"run/{stage_id}-{n}"


@dataclass(frozen=True)
class StageToken:
    """What :meth:`Stage.close` returns and :func:`ebooklet.commit` publishes: a small,
    picklable record of a stage's uploads.

    Attributes
    ----------
    location : str
        The remote database, as messages name it.
    db : str
        The database's uuid when the stage opened (a commit refuses another database).
    stage : str
        The stage's id: its objects are ``seg/<stage>-<n>`` and ``run/<stage>-<n>``.
    base : tuple of (int, str)
        The commit (number and id) the stage started from: keys changed remotely since are
        conflicts for the commit.
    runs : tuple of str
        The stage's runs, in the order written (a later run wins for a key in both).
    segments : tuple of (str, int)
        The stage's segments and their sizes.
    written, deleted : int
        Writes and deletes staged (after the stage's own repeats of a key).
    key_bytes : int
        UTF-8 bytes of the keys written.
    started : int
        When the stage opened, by its own clock (used only when the store cannot tell the
        age of an upload).
    """

    location: str
    db: str
    stage: str
    base: tuple[int, str]
    runs: tuple[str, ...]
    segments: tuple[tuple[str, int], ...]
    written: int
    deleted: int
    key_bytes: int
    started: int

    @property
    def first_upload(self) -> str | None:
        """The stage's oldest upload (its first segment, else its first run)."""
        if self.segments:
            return self.segments[0][0]
        return self.runs[0] if self.runs else None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.segments] + list(self.runs)


class Stage:
    """Writes to stage for a later :func:`ebooklet.commit` (see :func:`ebooklet.stage`)."""

    def __init__(self, remote_conn: RemoteConn, value_serializer: Any = None) -> None:
        self._own_remote = not isinstance(remote_conn, Remote)
        self.remote = remote = connect(remote_conn)
        try:
            if not remote.writable:
                raise ReadOnlyError(
                    f"cannot stage writes to {remote.location}: it is read-only (a public URL or no "
                    "credentials); pass a connection with credentials"
                )
            head, _ = HeadStore(remote).read_latest()
            if head is None:
                raise RemoteNotFoundError(
                    f"there is no database at {remote.location} to stage writes for; create it "
                    "first (ebooklet.open(remote, path, 'c', value_serializer=...) and push), so "
                    "that every stage uses its value serializer"
                )
            try:
                self.codec = codec_for(head.value_serializer, value_serializer)
            except ValueError as exc:
                raise SerializerMismatchError(f"{remote.location}: {exc}") from None
        except BaseException:
            self._close_remote()
            raise
        self.db = head.uuid
        self.base = (head.commit, head.commit_id)
        self.id = new_commit_id()
        self.started = now_us()
        self.objects = ObjectStore(remote)
        self._uploader = Uploader(self.objects, Tracker(None, "upload"))
        self._segments: list[str] = []
        self._sizes: dict[str, int] = {}
        self._writer = SegmentWriter(self.id, self._segments, self._sizes, self._uploader.submit)
        self._buffer: dict[str, tuple[int, bytes | None]] = {}
        self._bytes = 0
        self._runs: list[str] = []
        self._written = self._deleted = self._key_bytes = 0
        self._open = True
        #: The token, once the stage is closed.
        self.token: StageToken | None = None

    # -- the write-only mapping ------------------------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_open()
        check_key(key)
        raw = self.codec.encode(value, key)
        check_value_size(key, len(raw))
        self._put(key, raw)

    def __delitem__(self, key: str) -> None:
        """Stage a delete (a key the database does not hold is left as it is)."""
        self._check_open()
        check_key(key)
        self._put(key, None)

    def update(self, other: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), **kwargs: Any) -> None:
        """Stage many writes, as :meth:`dict.update` takes them."""
        items = other.items() if isinstance(other, Mapping) else other
        for key, value in items:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def _put(self, key: str, raw: bytes | None) -> None:
        old = self._buffer.pop(key, None)
        if old is not None and old[1] is not None:
            self._bytes -= len(old[1])
        self._buffer[key] = (now_us(), raw)
        self._bytes += len(raw) if raw is not None else 0
        if len(self._buffer) >= min(RUN_ENTRIES, RUN_MAX_ENTRIES) or self._bytes >= RUN_BYTES:
            self._write_run()

    def _check_open(self) -> None:
        if not self._open:
            raise ClosedError("this stage is closed (or discarded); open a new one with ebooklet.stage()")

    # -- runs ------------------------------------------------------------------------------

    def _write_run(self) -> None:
        """Sort the buffer by index part, pack its values into segments in that order, and
        upload its run of entries (both in the background)."""
        buffer, self._buffer, self._bytes = self._buffer, {}, 0
        if not buffer:
            return
        keys = list(buffer)
        order = key_order(keys)
        rows = sorted(zip(order, keys, strict=True))
        keys = [k for _, k in rows]
        order = [o for o, _ in rows]
        ts, raws_ = zip(*map(buffer.__getitem__, keys), strict=True)
        raws = list(raws_)
        del buffer
        if None not in raws:
            # Writes only (the common case): column by column.
            segs, offs = self._pack(raws)  # type: ignore[arg-type]
            lens = list(map(len, raws))  # type: ignore[arg-type]
            hashes: list[bytes | None] = list(map(value_hash, raws))  # type: ignore[arg-type]
            self._written += len(keys)
            self._key_bytes += sum(map(len, map(str.encode, keys)))
        else:
            writes = [raw for raw in raws if raw is not None]
            seg_w, off_w = self._pack(writes)
            segs, offs, lens, hashes = [], [], [], []
            w = 0
            for key, raw in zip(keys, raws, strict=True):
                if raw is None:
                    segs.append(0)
                    offs.append(0)
                    lens.append(0)
                    hashes.append(None)
                    self._deleted += 1
                    continue
                hashes.append(value_hash(raw))
                segs.append(seg_w[w])
                offs.append(off_w[w])
                lens.append(len(raw))
                w += 1
                self._written += 1
                self._key_bytes += len(key.encode())
        # A run refers to segments by number, the one still being filled included.
        name = run_name(self.id, len(self._runs))
        blob = encode_run(self.db, self.id, len(self._runs), keys, order, ts, hashes, segs, offs, lens)
        self._runs.append(name)
        self._uploader.submit(name, blob)

    def _pack(self, raws: list[bytes]) -> tuple[list[int], list[int]]:
        """Values into segments, in order: their segment numbers and offsets."""
        segs: list[int] = []
        offs: list[int] = []
        for lo in range(0, len(raws), PACK_CHUNK):
            s, o = self._writer.add_many(raws[lo:lo + PACK_CHUNK])
            segs += s
            offs += o
        return segs, offs

    def close(self) -> StageToken:
        """Upload what is still buffered and wait for every upload; return the token for
        :func:`ebooklet.commit`. Closing a closed stage returns the same token."""
        if self.token is not None:
            return self.token
        self._check_open()
        try:
            self._write_run()
            self._writer.flush()
            self._uploader.wait()
        except BaseException:
            self.discard()
            raise
        self._open = False
        self._uploader.close()
        self._close_remote()
        self.token = StageToken(
            self.remote.location, self.db, self.id, self.base, tuple(self._runs),
            tuple((name, self._sizes[name]) for name in self._segments),
            self._written, self._deleted, self._key_bytes, self.started,
        )
        return self.token

    def discard(self) -> None:
        """Give up the stage: stop its uploads and delete what was uploaded."""
        if not self._open:
            return
        self._open = False
        self._uploader.close()
        # Every name it may have uploaded (a segment is named before its upload returns).
        uploaded = {segment_name(self.id, i) for i in range(len(self._segments))} | set(self._runs)
        self.objects.delete_quietly(sorted(uploaded))
        self._close_remote()

    def _close_remote(self) -> None:
        if self._own_remote:
            self.remote.transport.close()

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<ebooklet stage {self.id} of {self.remote.location} ({state})>"
