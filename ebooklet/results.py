"""What the sync operations report: changes, progress, and the results of push and pull.

These are plain values, returned to the caller or passed to a ``progress`` callback; none of
them holds a reference back into the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .words import counted

__all__ = ["Change", "ChangeKind", "CommitInfo", "Progress", "ProgressCallback", "PullResult", "PushResult"]

ChangeKind = Literal["added", "modified", "deleted"]


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


@dataclass
class PushResult:
    """What a push did. False when nothing was committed (as ``push()`` returned in 0.5)."""

    committed: bool = False
    commit: int | None = None
    keys: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    requests: int = 0
    attempts: int = 0
    pulled: list[str] = field(default_factory=list)
    #: Values moved into new segments by compaction (same keys, same bytes).
    compacted: int = 0

    def __bool__(self) -> bool:
        return self.committed

    def __str__(self) -> str:
        if not self.committed:
            return "nothing to push"
        return (
            f"commit {self.commit:,}: {counted(len(self.keys), 'key')} written, "
            f"{len(self.deleted):,} deleted, "
            f"{counted(self.bytes_sent, 'byte')} in {counted(self.requests, 'request')}"
        )


@dataclass
class PullResult:
    """What a pull did."""

    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    requests: int = 0
    commit: int | None = None

    def __str__(self) -> str:
        return f"{counted(len(self.updated), 'key')} updated, {len(self.deleted):,} deleted from the remote"


@dataclass(frozen=True)
class CommitInfo:
    """One commit of a remote database, as :meth:`EBooklet.log` lists it.

    ``written`` and ``deleted`` are None for commits made by ebooklet 0.6 (format 1), which
    did not record them.
    """

    number: int
    commit_id: str
    committed_at: datetime
    written: int | None
    deleted: int | None
    author: str | None

    def __str__(self) -> str:
        counts = ""
        if self.written is not None:
            counts = f"  {self.written:,} written, {self.deleted or 0:,} deleted"
        by = f"  by {self.author}" if self.author else ""
        return f"commit {self.number:>6}  {self.committed_at:%Y-%m-%d %H:%M:%S} UTC{counts}{by}"
