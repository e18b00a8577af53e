"""The transport interface every remote implements.

A transport stores immutable byte objects under string keys, plus the few mutable objects
(the head, the lease) that are only ever replaced through a conditional write. Each method
states its contract; a transport translates its own failures into :mod:`ebooklet.errors`.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ReadOnlyError


@dataclass(frozen=True)
class Update:
    """Put mode: replace the object only if its current ETag is still ``etag``."""

    etag: str


#: How a put treats an existing object: ``"create"`` fails if it exists, ``"overwrite"``
#: always writes, ``Update(etag)`` writes only over that exact version.
PutMode = Literal["create", "overwrite"] | Update


@dataclass(frozen=True)
class Blob:
    """An object's bytes with the ETag of the version they came from."""

    data: bytes
    etag: str


@dataclass
class Stats:
    """Requests made and bytes moved through one transport."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, requests: int = 1, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_sent += sent
            self.bytes_received += received

    def snapshot(self) -> tuple[int, int, int]:
        return self.requests, self.bytes_sent, self.bytes_received


class Transport(abc.ABC):
    """Byte objects under string keys.

    Attributes
    ----------
    description : str
        Where the objects live, for messages; never contains credentials.
    writable : bool
        False for read-only transports (public URLs); their write methods raise
        :class:`~ebooklet.errors.ReadOnlyError`.
    stats : Stats
        Requests made and bytes moved so far; every method counts what it does.
    """

    description: str = ""
    writable: bool = True

    def __init__(self) -> None:
        self.stats = Stats()

    @abc.abstractmethod
    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        """Return the whole object.

        With ``if_none_match`` set to an ETag, return None when the object still has that
        ETag (one cheap conditional request). Raises RemoteNotFoundError if it is absent.
        """

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return exactly ``length`` bytes of the object starting at byte ``start``.

        Raises RemoteNotFoundError if absent, RemoteFormatError if fewer bytes exist.
        """

    @abc.abstractmethod
    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        """Store ``data`` under ``key`` atomically and return the new ETag.

        Raises PreconditionFailed when ``mode`` is ``"create"`` and the object exists, or
        ``Update(etag)`` and the object is absent or has another ETag.
        """

    @abc.abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Delete the objects; keys that do not exist are ignored."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Yield the keys that start with ``prefix``, in no particular order."""

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        """Copy an object to ``target`` inside the store, without downloading it.

        Returns False when this store cannot copy to ``target`` directly (the caller then
        downloads and uploads).
        """
        return False

    def close(self) -> None:  # noqa: B027 - most transports hold nothing to release
        """Release connections."""


class ReadOnlyTransport(Transport):
    """A transport that can only read; every write raises ReadOnlyError."""

    writable = False

    def _refuse(self) -> ReadOnlyError:
        return ReadOnlyError(
            f"{self.description} is read-only; to write, open the database with an "
            "S3Connection (credentials) or a local folder remote"
        )

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        raise self._refuse()

    def delete(self, keys: list[str]) -> None:
        raise self._refuse()

    def list(self, prefix: str) -> Iterator[str]:
        raise self._refuse()
