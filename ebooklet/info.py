"""What the head of a remote database says, without opening it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .format import Head
from .remote import RemoteConn, connect
from .sync.heads import HeadStore

__all__ = ["RemoteInfo", "remote_info"]


@dataclass(frozen=True)
class RemoteInfo:
    """What the head of a remote database says (see :func:`remote_info`)."""

    location: str
    uuid: str
    format_version: int
    commit: int
    committed_at: datetime
    n_keys: int
    n_bytes: int
    n_index_parts: int
    n_segments: int
    segment_bytes: int
    value_serializer: str | None
    metadata: Any

    @classmethod
    def from_head(cls, location: str, head: Head) -> RemoteInfo:
        return cls(
            location=location,
            uuid=head.uuid,
            format_version=head.version,
            commit=head.commit,
            committed_at=datetime.fromtimestamp(head.timestamp / 1e6, tz=timezone.utc),
            n_keys=head.n_keys,
            n_bytes=head.n_bytes,
            n_index_parts=sum(1 for p in head.parts if p),
            n_segments=len(head.segments),
            segment_bytes=sum(size for size, _live in head.segments.values()),
            value_serializer=head.value_serializer,
            metadata=head.metadata,
        )


def remote_info(remote_conn: RemoteConn) -> RemoteInfo | None:
    """Read a remote database's head (one request); None if there is no database there.

    Examples
    --------
    >>> import ebooklet, tempfile, pathlib
    >>> remote = pathlib.Path(tempfile.mkdtemp()) / "db"
    >>> ebooklet.remote_info(remote) is None
    True
    """
    location, head = latest_head(remote_conn)
    return None if head is None else RemoteInfo.from_head(location, head)


def latest_head(remote_conn: RemoteConn) -> tuple[str, Head | None]:
    """Where ``remote_conn`` points, and its latest head (None: no database there)."""
    remote = connect(remote_conn)
    try:
        head, _etag = HeadStore(remote).read_latest()
    finally:
        remote.transport.close()
    return remote.location, head
