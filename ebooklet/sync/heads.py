"""The commit point: reading the head object and replacing it by compare-and-swap.

Everything the sync protocol does to the head goes through :class:`HeadStore`: a read (one
conditional GET when the caller knows the ETag it has), a commit, the decision whether a commit
whose reply was lost has landed, and the fencing check against a stale lease holder. SlateDB's
transactional manifest store is the model.

A commit is two writes. First the new head is stored as an immutable log object named by its
commit number and id (``log/{number}-{id}``, uploaded with the commit's index parts); then the
head object is replaced with a PUT
conditional on the ETag the commit was built on (or on there being no head yet). Commit numbers
follow each other along the chain of heads, so commit number N is either ours or another
writer's; each head names its latest commits, and the log objects they point at name earlier
ones. A writer that never saw the reply to its PUT (lost, reset, or killed before reading it)
looks up which commit holds number N, however many commits followed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import (
    CommitUnknownError,
    PreconditionFailed,
    RemoteError,
    RemoteFormatError,
    RemoteNotFoundError,
)
from ..format import Head, check_head, head_size_limit, log_name
from ..lock import Lease
from ..remote import Blob, Remote, Update
from .objects import ObjectStore

logger = logging.getLogger(__name__)

#: How much of the head object one read fetches. Heads are a few kB (about 50 bytes per
#: index part), so this is the whole head but for databases of billions of keys, whose head
#: takes a second read. An object named like the head that is larger than its part_bits allow
#: (format.head_size_limit), or does not start like a head, is refused after this first read.
HEAD_READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Committed:
    """A commit that landed, and the ETag of the head now (None when unknown: others have
    committed on top of it since, or the reply carrying it was lost)."""

    head: Head
    etag: str | None


class HeadStore:
    """The head object of one remote database, and the log of its commits."""

    def __init__(self, remote: Remote, objects: ObjectStore | None = None) -> None:
        self.remote = remote
        self.objects = objects or ObjectStore(remote)

    def read(self, if_none_match: str | None = None) -> tuple[Head | None, str | None, bool]:
        """The head, its ETag, and whether it changed since ``if_none_match``.

        Returns ``(None, None, True)`` when there is no database. With ``if_none_match`` (an
        ETag the caller holds), an unchanged head costs one small request and comes back as
        ``(None, if_none_match, False)``: the caller already has it.
        """
        try:
            blob = self._get_head(self.remote.db_key, self.remote.location, if_none_match)
        except RemoteNotFoundError as exc:
            if exc.bucket_missing:
                raise  # no bucket is a wrong name or endpoint, not a database yet to create
            return None, None, True
        if blob is None:
            return None, if_none_match, False
        return Head.decode(blob.data, where=self.remote.location), blob.etag, True

    def _get_head(self, key: str, where: str, if_none_match: str | None = None) -> Blob | None:
        """The object at ``key`` that should be a head (the head, or a log object), read with a
        bound: the first HEAD_READ_BYTES, and the rest only when its start shows a head that
        large may be genuine (its part_bits allow it); anything else is refused unread."""
        transport = self.remote.transport
        blob = transport.get_start(key, HEAD_READ_BYTES, if_none_match=if_none_match)
        if blob is not None and blob.size is not None and blob.size > len(blob.data):
            self._check_large(blob, key, where)
            blob = transport.get_start(key, head_size_limit(blob.data), if_none_match=if_none_match)
            if blob is not None and blob.size is not None and blob.size > len(blob.data):
                self._check_large(blob, key, where)  # it grew in between
        return blob

    @staticmethod
    def _check_large(blob: Blob, key: str, where: str) -> None:
        """Refuse an object too large to be a head, or one whose start is not a head's,
        before more of it is downloaded."""
        assert blob.size is not None
        limit = head_size_limit(blob.data)
        if blob.size > limit:
            why = f"it is {blob.size:,} bytes, and a head is at most {limit:,} (for its index parts)"
        elif not blob.data.startswith(b"{"):
            why = f"it is {blob.size:,} bytes and does not start like a head (JSON)"
        else:
            return
        raise RemoteFormatError(
            f"{where} is not an ebooklet database: the object at its key {key!r} is not an ebooklet "
            f"head ({why}); it was not downloaded. Check the db_key or URL"
        )

    def read_latest(self) -> tuple[Head | None, str | None]:
        """The head as it is now, and its ETag; (None, None) when there is no database."""
        head, etag, _ = self.read()
        return head, etag

    def read_log(self, commit: int, commit_id: str) -> Head | None:
        """The head of an earlier commit, from its log object (None: not kept)."""
        name = log_name(commit, commit_id)
        where = f"{self.remote.location} ({name})"
        try:
            blob = self._get_head(self.remote.prefix + name, where)
        except RemoteNotFoundError:
            return None
        assert blob is not None
        head = Head.decode(blob.data, where=where)
        if (head.commit, head.commit_id) != (commit, commit_id):
            # A log object holds the head of the commit it is named after, or it is forged.
            raise RemoteFormatError(
                f"{where} holds commit {head.commit} ({head.commit_id}), not the commit it is "
                "named after: the history is damaged. Ask whoever writes this database"
            )
        return head

    @staticmethod
    def check_fence(current: Head | None, lease: Lease | None) -> None:
        """A writer whose lease was taken over must not commit (fencing).

        A head whose token is above ours means another holder committed since we took the
        lease, unless the lease's history was lost (a malformed lease taken over, a broken
        lease): then the lease is still ours, and moving it past the head's token with a write
        conditional on our own lease tells the two apart (LeaseLostError when it is not ours).
        """
        if lease is not None and current is not None and current.lease_token > lease.token:
            lease.advance(current.lease_token + 1)

    def commit_id_at(self, number: int, head: Head) -> str | None:
        """The id of the commit numbered ``number`` in the chain that leads to ``head``, or
        None when the log that would tell has not been kept."""
        while True:
            known = head.known_commits()
            if number in known:
                return known[number]
            oldest = min(known)
            if number > head.commit or oldest >= head.commit:
                return None  # not reached yet, or a head that names nothing older (format 1)
            older = self.read_log(oldest, known[oldest])
            if older is None or older.commit != oldest:
                return None
            head = older

    def landed(self, head: Head, latest: Head | None) -> bool | None:
        """Whether ``head`` was committed, judging from the ``latest`` head; None when that
        cannot be known (the log that would tell is gone)."""
        if latest is None:
            return False  # no database now: whatever happened, nothing references the commit
        if latest.commit_id == head.commit_id:
            return True
        if latest.uuid != head.uuid or latest.commit < head.commit:
            return False
        found = self.commit_id_at(head.commit, latest)
        return None if found is None else found == head.commit_id

    @staticmethod
    def log_entry(head: Head) -> tuple[str, bytes]:
        """The log object of ``head`` (name and bytes): it must be stored before the commit."""
        return log_name(head.commit, head.commit_id), head.encode()

    def commit(self, head: Head, current_etag: str | None) -> Committed | None:
        """Replace the head with ``head`` if it is still the version ``current_etag`` (or, when
        None, if there is no head yet). Its :meth:`log_entry` must be stored already.

        Returns the commit when it landed, None when another writer committed first. Raises
        :class:`~ebooklet.errors.CommitUnknownError` when neither can be known (the server
        could not be asked); the caller then keeps everything the commit references.
        """
        # Never write a head that a reader (this ebooklet included) would refuse.
        check_head(head, f"the head of commit {head.commit} for {self.remote.location}")
        blob = head.encode()
        mode = Update(current_etag) if current_etag is not None else "create"
        try:
            etag = self.remote.transport.put(self.remote.db_key, blob, mode)
        except PreconditionFailed:
            # Another writer won, or a retry of ours found our own first attempt applied.
            return self._settle(head)
        except RemoteError as exc:
            # The request may or may not have been applied: ask the head.
            logger.info("the commit's reply was lost (%s); reading the head to settle it", exc)
            return self._settle(head, exc)
        return Committed(head, etag)

    def _settle(self, head: Head, cause: BaseException | None = None) -> Committed | None:
        try:
            latest, etag = self.read_latest()
            landed = self.landed(head, latest)
        except RemoteError as exc:
            raise CommitUnknownError(self.remote.location, head.commit) from (cause or exc)
        if landed is None:
            raise CommitUnknownError(self.remote.location, head.commit) from cause
        if not landed:
            if cause is not None:
                raise cause  # the commit did not land: the failure stands, nothing changed
            return None
        # The ETag is known only if ours is still the head.
        assert latest is not None
        return Committed(head, etag if latest.commit_id == head.commit_id else None)
