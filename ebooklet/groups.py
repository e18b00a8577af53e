"""Remote connection groups: a database that records how to reach other databases.

Each entry is keyed by the member database's uuid; its value holds the member's connection
parameters (never credentials), its metadata, its size and its last commit time. A group is
pushed and pulled like any database, so a team can share a catalogue of related databases.
"""

from __future__ import annotations

from typing import Any

from .db import EBooklet
from .errors import NotSupportedError, RemoteNotFoundError
from .info import remote_info
from .remote import RemoteConn, connection_from_params, connection_params

#: Group values are JSON documents.
GROUP_SERIALIZER = "orjson"


class RemoteConnGroup(EBooklet):
    """A database of remote connections; open it with ``remote_conn_group=True``.

    Use :meth:`add` to record a database and :meth:`connection` to reach one again; ``set``
    and item assignment are refused so that every entry describes a real database.
    """

    def add(self, remote_conn: RemoteConn) -> str:
        """Record an existing remote database; returns its uuid (the entry's key)."""
        self._check_write("add to the group")
        info = remote_info(remote_conn)
        if info is None:
            raise RemoteNotFoundError(
                f"there is no database at {remote_conn!r}; push it before adding it to a group"
            )
        entry: dict[str, Any] = {
            "connection": connection_params(remote_conn),
            "location": info.location,
            "metadata": info.metadata,
            "timestamp": info.committed_at.isoformat(),
            "commit": info.commit,
            "n_keys": info.n_keys,
            "n_bytes": info.n_bytes,
            "value_serializer": info.value_serializer,
        }
        with self._lock:
            self._store(info.uuid, entry)
        return info.uuid

    def set(self, key: str, value: Any, timestamp: Any = None) -> None:
        raise NotSupportedError("a remote connection group is changed with add(remote_conn), not set()")

    def __setitem__(self, key: str, value: Any) -> None:
        raise NotSupportedError(
            "a remote connection group is changed with add(remote_conn), not item assignment"
        )

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        raise NotSupportedError("a remote connection group is changed with add(remote_conn), not update()")

    def connection(
        self, uuid: str, access_key_id: str | None = None, access_key: str | None = None
    ) -> RemoteConn:
        """A connection to the member ``uuid`` (S3 credentials from the arguments or the
        standard AWS environment variables), ready for :func:`ebooklet.open`."""
        return connection_from_params(self[uuid]["connection"], access_key_id, access_key)
