"""The commit point: reading the head object and replacing it by compare-and-swap.

Everything the sync protocol does to the head goes through :class:`HeadStore`: a read (one
conditional GET when the caller knows the ETag it has), a commit (a PUT conditional on the ETag
the commit was built on, or on the head not existing yet), the decision whether a commit whose
reply was lost has landed, and the fencing check against a stale lease holder. SlateDB's
transactional manifest store is the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LeaseLostError, PreconditionFailed, RemoteNotFoundError
from ..format import Head
from ..lock import Lease
from ..remote import Remote, Update


@dataclass(frozen=True)
class Committed:
    """A commit that landed, and the ETag of the head now (None when unknown: others have
    committed on top of it since)."""

    head: Head
    etag: str | None


class HeadStore:
    """The head object of one remote database."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote

    def read(self, if_none_match: str | None = None) -> tuple[Head | None, str | None, bool]:
        """The head, its ETag, and whether it changed since ``if_none_match``.

        Returns ``(None, None, True)`` when there is no database. With ``if_none_match`` (an
        ETag the caller holds), an unchanged head costs one small request and comes back as
        ``(None, if_none_match, False)``: the caller already has it.
        """
        try:
            blob = self.remote.transport.get(self.remote.db_key, if_none_match=if_none_match)
        except RemoteNotFoundError:
            return None, None, True
        if blob is None:
            return None, if_none_match, False
        return Head.decode(blob.data, where=self.remote.location), blob.etag, True

    def read_latest(self) -> tuple[Head | None, str | None]:
        """The head as it is now, and its ETag; (None, None) when there is no database."""
        head, etag, _ = self.read()
        return head, etag

    @staticmethod
    def check_fence(current: Head | None, lease: Lease | None) -> None:
        """A writer whose lease was taken over must not commit (fencing)."""
        if lease is not None and current is not None and current.lease_token > lease.token:
            raise LeaseLostError(lease.remote.location)

    def commit(self, head: Head, current_etag: str | None) -> Committed | None:
        """Replace the head with ``head`` if it is still the version ``current_etag`` (or, when
        None, if there is no head yet).

        Returns the commit when it landed, None when another writer committed first. A retried
        request whose first attempt landed gets a 412 like a lost race: the head is read again
        to tell the two apart.
        """
        mode = Update(current_etag) if current_etag is not None else "create"
        try:
            etag = self.remote.transport.put(self.remote.db_key, head.encode(), mode)
        except PreconditionFailed:
            winner, winner_etag = self.read_latest()
            if winner is None or head.commit_id not in (winner.commit_id, winner.parent):
                return None
            # Committed (and maybe built on already): the ETag is known only if ours is still
            # the head; otherwise the next read simply fetches the head in full.
            return Committed(head, winner_etag if winner.commit_id == head.commit_id else None)
        return Committed(head, etag)
