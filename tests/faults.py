"""Fault injection around a real transport: pause or fail chosen requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from ebooklet.errors import RemoteUnavailableError
from ebooklet.remote import Remote, connect
from ebooklet.remote.base import Blob, FallbackLock, ObjectStat, PutMode, Transport
from ebooklet.remote.s3 import S3Transport


class FaultyTransport(Transport):
    """Delegates to a real transport; ``before_put(key)`` runs before every put."""

    def __init__(self, inner: Transport, before_put: Callable[[str], None]) -> None:
        self.inner = inner
        self.before_put = before_put
        #: Runs after a put was applied (raise to lose its reply).
        self.after_put: Callable[[str], None] | None = None
        #: Every read fails, as from a server that stopped answering.
        self.fail_gets = False
        self.description = inner.description
        self.writable = inner.writable
        self.knows_ages = inner.knows_ages
        self.stats = inner.stats

    def _check_reads(self) -> None:
        if self.fail_gets:
            raise RemoteUnavailableError("the server stopped answering")

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        self._check_reads()
        return self.inner.get(key, if_none_match)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self._check_reads()
        return self.inner.get_range(key, start, length)

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        self.before_put(key)
        etag = self.inner.put(key, data, mode)
        if self.after_put is not None:
            self.after_put(key)
        return etag

    def delete(self, keys: list[str]) -> None:
        self.inner.delete(keys)

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        return self.inner.list_sizes(prefix)

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        return self.inner.list_stats(prefix)

    def stat(self, key: str) -> ObjectStat:
        return self.inner.stat(key)

    def store_time(self) -> float:
        return self.inner.store_time()

    def supports_conditional_writes(self, scratch_prefix: str) -> bool:
        return self.inner.supports_conditional_writes(scratch_prefix)

    def fallback_lock(self, key: str) -> FallbackLock:
        return self.inner.fallback_lock(key)

    def close(self) -> None:
        self.inner.close()


class Gate:
    """Stops a thread at a put of ``key`` until released; tells when it got there."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, key: str) -> None:
        if key == self.key:
            self.reached.set()
            if not self.release.wait(timeout=60):
                raise TimeoutError("the test never released the gate")


def faulty_remote(
    conn: Any, before_put: Callable[[str], None] = lambda key: None
) -> tuple[Remote, FaultyTransport]:
    """A remote for ``conn`` whose requests go through a FaultyTransport (open the database
    on it; ``remote.db_key`` is the head's key)."""
    real = connect(conn)
    faulty = FaultyTransport(real.transport, before_put)
    return Remote(faulty, real.db_key, real.location), faulty


class UnconditionalS3Transport(S3Transport):
    """An S3 store that ignores If-Match / If-None-Match: every put overwrites."""

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        return super().put(key, data, "overwrite")
