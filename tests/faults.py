"""Fault injection around a real transport: pause or fail chosen requests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ebooklet.errors import RemoteUnavailableError
from ebooklet.remote import Remote, connect
from ebooklet.remote.base import Blob, PutMode, Transport
from ebooklet.remote.s3 import S3Transport
from ebooklet.remote.wrapper import WrapperTransport


class FaultyTransport(WrapperTransport):
    """Delegates to a real transport; ``before_put(key)`` runs before every put."""

    def __init__(self, inner: Transport, before_put: Callable[[str], None]) -> None:
        super().__init__(inner)
        self.before_put = before_put
        #: Runs after a put was applied (raise to lose its reply).
        self.after_put: Callable[[str], None] | None = None
        #: Every read fails, as from a server that stopped answering.
        self.fail_gets = False

    def _check_reads(self) -> None:
        if self.fail_gets:
            raise RemoteUnavailableError("the server stopped answering")

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        self._check_reads()
        return self.inner.get(key, if_none_match)

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        self._check_reads()
        return self.inner.get_start(key, length, if_none_match)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self._check_reads()
        return self.inner.get_range(key, start, length)

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        self.before_put(key)
        etag = self.inner.put(key, data, mode)
        if self.after_put is not None:
            self.after_put(key)
        return etag


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


def local_store_of(db: Any) -> Any:
    """The local store behind an open database, for faults that act on the process itself (an
    exit without close, a kill) simulated in the test's process: a real kill per step would
    make the model test minutes slower. The one place the tests reach into a database."""
    return db._local


def held_together(proxy: Any, match: Callable[[Any], bool], n: int, action: Callable[[], Any],
                  timeout: float = 30.0) -> tuple[bool, list[Any], Any]:
    """Run ``action`` in a thread while the proxy holds each of the first ``n`` requests that
    ``match`` before forwarding it: whether all ``n`` were held at once (in flight together:
    a client sending them one after another never gets there), the requests, and the result."""
    import concurrent.futures

    rules = [proxy.hold(match, times=1) for _ in range(n)]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        done = pool.submit(action)
        try:
            together = all(rule.reached.wait(timeout) for rule in rules)
        finally:
            for rule in rules:
                rule.release()
        result = done.result(timeout=120)
    return together, [r for rule in rules for r in rule.requests], result
