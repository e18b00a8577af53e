"""One forwarding base for transports that wrap another (after zarr's ``WrapperStore``).

A wrapper (request counting, a command line's Ctrl-C, a test's injected faults) subclasses
:class:`WrapperTransport` and overrides only what it changes: every other call reaches the
inner transport as it is, including the optional methods a backend overrides for speed
(``get_start``'s ranged read, ``copy`` inside the store), so no call is silently answered by
:class:`~ebooklet.remote.base.Transport`'s generic default instead of the backend's own.
"""

from __future__ import annotations

from collections.abc import Iterator

from .base import Blob, FallbackLock, ObjectStat, PutMode, Transport, Upload


class WrapperTransport(Transport):
    """Forwards every call to ``inner``; what it can do is ``inner``'s.

    Parameters
    ----------
    inner : Transport
        The transport that does the work.

    Examples
    --------
    >>> import tempfile
    >>> from ebooklet.remote.fs import FolderTransport
    >>> class Shouting(WrapperTransport):
    ...     def get(self, key, if_none_match=None):
    ...         blob = super().get(key, if_none_match)
    ...         return blob and Blob(blob.data.upper(), blob.etag)
    >>> transport = Shouting(FolderTransport(tempfile.mkdtemp()))
    >>> etag = transport.put("a", b"quiet")
    >>> transport.get("a").data, transport.get_range("a", 0, 5)
    (b'QUIET', b'quiet')
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.description = inner.description
        self.writable = inner.writable
        self.delete_batch_size = inner.delete_batch_size
        self.knows_ages = inner.knows_ages

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        return self.inner.get(key, if_none_match)

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        return self.inner.get_start(key, length, if_none_match)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.inner.get_range(key, start, length)

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        return self.inner.put(key, data, mode)

    def delete(self, keys: list[str]) -> None:
        self.inner.delete(keys)

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        return self.inner.list_sizes(prefix)

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        return self.inner.list_stats(prefix)

    def stat(self, key: str) -> ObjectStat:
        return self.inner.stat(key)

    def put_requests(self, size: int, mode: PutMode = "overwrite") -> int:
        return self.inner.put_requests(size, mode)

    def uploads(self, prefix: str) -> Iterator[Upload]:
        return self.inner.uploads(prefix)

    def abort_upload(self, upload: Upload) -> None:
        self.inner.abort_upload(upload)

    def store_time(self) -> float:
        return self.inner.store_time()

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        # The inner transport decides by the target's class: a target wrapped the same way as
        # this transport is handed over unwrapped, so that two remotes behind the same kind of
        # wrapper still copy inside their store. A target of any other class stays as it is.
        if isinstance(target, WrapperTransport) and type(target) is type(self):
            target = target.inner
        return self.inner.copy(key, target, target_key)

    def supports_conditional_writes(self, scratch_prefix: str) -> bool:
        return self.inner.supports_conditional_writes(scratch_prefix)

    def fallback_lock(self, key: str) -> FallbackLock:
        return self.inner.fallback_lock(key)

    def close(self) -> None:
        self.inner.close()
