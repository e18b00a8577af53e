"""Request counting as one wrapper around any transport (after SlateDB's instrumented object store).

Backends count nothing; every :class:`~ebooklet.remote.Remote` wraps its transport in a
:class:`CountingTransport`, whose :class:`Stats` are what :attr:`ebooklet.EBooklet.stats`
reports. What one call through the wrapper counts:

=============  ===========================================  ==========  ===============
call           requests                                     bytes sent  bytes received
=============  ===========================================  ==========  ===============
``get``        1                                            0           the body; 0 when
                                                                        ``if_none_match``
                                                                        matched
``get_start``  1                                            0           the bytes returned
``get_range``  1; 0 for a length of 0                       0           the bytes returned
``put``        1                                            the data    0
``delete``     one per ``delete_batch_size`` keys           0           0
``list``       1, when iteration starts                     0           0
``copy``       1 on the target's counter when the copy is   0           0
               attempted; 0 when the transport declines
=============  ===========================================  ==========  ===============

A call that fails is counted all the same (its request was made); a call that a read-only
transport refuses is not (it makes none). Retries inside a transport, the pages of a long
listing, and requests a transport makes on its own behalf (the S3 transport's one-time probe
of conditional writes, s3func's fallback lock) are not counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import EbookletError
from .base import Blob, ObjectStat, PutMode, Transport
from .wrapper import WrapperTransport


@dataclass
class Stats:
    """Requests made and bytes moved through one transport (thread-safe).

    Attributes
    ----------
    requests : int
        Requests sent to the store.
    bytes_sent : int
        Bytes of object data uploaded.
    bytes_received : int
        Bytes of object data downloaded.

    Examples
    --------
    >>> stats = Stats()
    >>> stats.add(sent=10)
    >>> stats.add(received=4)
    >>> stats.snapshot()
    (2, 10, 4)
    """

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, requests: int = 1, sent: int = 0, received: int = 0) -> None:
        """Count ``requests`` requests that sent and received so many bytes."""
        with self._lock:
            self.requests += requests
            self.bytes_sent += sent
            self.bytes_received += received

    def snapshot(self) -> tuple[int, int, int]:
        """``(requests, bytes_sent, bytes_received)`` as of now, read consistently."""
        with self._lock:
            return self.requests, self.bytes_sent, self.bytes_received


class CountingTransport(WrapperTransport):
    """Forwards every call to ``inner`` and counts it in :attr:`stats`.

    Parameters
    ----------
    inner : Transport
        The transport that does the work.

    Attributes
    ----------
    inner : Transport
    stats : Stats
        What went through this wrapper (see the module docstring for the rules).

    Examples
    --------
    >>> import tempfile
    >>> from ebooklet.remote.fs import FolderTransport
    >>> transport = CountingTransport(FolderTransport(tempfile.mkdtemp()))
    >>> etag = transport.put("a", b"12345")
    >>> transport.get("a", if_none_match=etag) is None
    True
    >>> transport.stats
    Stats(requests=2, bytes_sent=5, bytes_received=0)
    """

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.stats = Stats()

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        self.stats.add()
        blob = self.inner.get(key, if_none_match)
        if blob is not None:
            self.stats.add(0, received=len(blob.data))
        return blob

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        self.stats.add()
        blob = self.inner.get_start(key, length, if_none_match)
        if blob is not None:
            self.stats.add(0, received=len(blob.data))
        return blob

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            return self.inner.get_range(key, start, length)
        self.stats.add()
        data = self.inner.get_range(key, start, length)
        self.stats.add(0, received=len(data))
        return data

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        if self.writable:
            self.stats.add(self.inner.put_requests(len(data), mode), sent=len(data))
        return self.inner.put(key, data, mode)

    def delete(self, keys: list[str]) -> None:
        if self.writable:
            self.stats.add(-(-len(keys) // self.delete_batch_size))
        self.inner.delete(keys)

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        return self._listing(self.inner.list_sizes, prefix)  # type: ignore[return-value]

    def list(self, prefix: str) -> Iterator[str]:
        return self._listing(self.inner.list, prefix)  # type: ignore[return-value]

    def _listing(self, listing: Callable[[str], Iterator[Any]], prefix: str) -> Iterator[Any]:
        if not self.writable:
            return listing(prefix)  # refused without a request
        return self._counted_listing(listing, prefix)

    def _counted_listing(self, listing: Callable[[str], Iterator[Any]], prefix: str) -> Iterator[Any]:
        self.stats.add()
        yield from listing(prefix)

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        if not self.writable:
            return self.inner.list_stats(prefix)
        return self._list_stats(prefix)

    def _list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        self.stats.add()
        yield from self.inner.list_stats(prefix)

    def stat(self, key: str) -> ObjectStat:
        self.stats.add()
        return self.inner.stat(key)

    def store_time(self) -> float:
        self.stats.add()
        return self.inner.store_time()

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        # The inner transport decides by the target's class, so it gets the target unwrapped;
        # the copy is counted where its object is written.
        counter = self.stats
        if isinstance(target, CountingTransport):
            counter, target = target.stats, target.inner
        try:
            done = self.inner.copy(key, target, target_key)
        except EbookletError:
            counter.add()
            raise
        if done:
            counter.add()
        return done
