"""Ctrl-C: stop promptly, say what state things were left in, and clean up what is safe to.

A command's remote goes through :class:`StoppableTransport`. Once :func:`stop_requested` is
set (by the SIGINT handler of :func:`handling_interrupts`), every request that would start
new work (reads, listings, uploads of new objects) fails at once instead of being sent, so
the transfers queued behind the ones in flight end within milliseconds; what releases or
cleans up (conditional updates, as of the remote lock, and deletes) still goes through.

The wrapper also records what a push created. Objects created with a create-only write and
never updated afterwards, while no write of the head was started, are referenced by no head
(their names are unique to this push), so :meth:`StoppableTransport.discard_uploads` may
delete them. Once a write of the head has started, nothing is deleted: whether the commit
landed is for the next push, pull or status to find out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from ..errors import EbookletError
from ..remote import Transport
from ..remote.base import Blob, ObjectStat, PutMode
from ..remote.wrapper import WrapperTransport


class Stopped(EbookletError):
    """A request not sent because the user pressed Ctrl-C."""

    def __init__(self) -> None:
        super().__init__("interrupted (Ctrl-C)")


_stop = threading.Event()
_on_stop: list[Callable[[], bool]] = []


def stop_requested() -> bool:
    """Whether Ctrl-C was pressed during this command."""
    return _stop.is_set()


def when_stopped(hook: Callable[[], bool]) -> Callable[[], None]:
    """Call ``hook`` at the first Ctrl-C, from the signal handler, before anything unwinds: it
    must not take locks or write to a stream, and returns True when it leaves a line of the
    terminal unfinished. Returns the function that unregisters it."""
    _on_stop.append(hook)
    return lambda: _on_stop.remove(hook) if hook in _on_stop else None


@contextlib.contextmanager
def handling_interrupts() -> Iterator[None]:
    """Ctrl-C sets :func:`stop_requested`, says at once that the command is stopping, and
    raises KeyboardInterrupt in the main thread, as Python does by default; a second Ctrl-C
    does the same, so it can cut a slow clean-up short."""
    def interrupted(signum: int, frame: FrameType | None) -> None:
        if not _stop.is_set():
            _stop.set()
            open_line = any([hook() for hook in list(_on_stop)])
            # A raw write: the main thread may be in the middle of writing to sys.stderr.
            with contextlib.suppress(OSError):
                os.write(2, b"\n" * open_line + b"ebooklet: stopping (Ctrl-C again to stop at once)\n")
        raise KeyboardInterrupt

    _stop.clear()
    try:
        previous = signal.signal(signal.SIGINT, interrupted)
    except ValueError:  # not the main thread (the CLI run from a test's thread): keep Python's
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class StoppableTransport(WrapperTransport):
    """Forwards to ``inner`` until Ctrl-C; records the objects a push creates.

    Parameters
    ----------
    inner : Transport
    head_key : str
        The database's head object: a write of it starts a commit.
    """

    def __init__(self, inner: Transport, head_key: str) -> None:
        super().__init__(inner)
        self.head_key = head_key
        self.head_written = False
        #: How many GETs in a row read the same key: 2 or more is a wait (polling a lock).
        self.repeated_gets = 0
        self._last_get: str | None = None
        self._created: list[str] = []
        self._updated: set[str] = set()
        self._lock = threading.Lock()

    def _check(self) -> None:
        if _stop.is_set():
            raise Stopped

    def _count_get(self, key: str) -> None:
        self._check()
        with self._lock:
            self.repeated_gets = self.repeated_gets + 1 if key == self._last_get else 0
            self._last_get = key

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        self._count_get(key)
        return self.inner.get(key, if_none_match)

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        self._count_get(key)
        return self.inner.get_start(key, length, if_none_match)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self._check()
        return self.inner.get_range(key, start, length)

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        with self._lock:
            self._last_get = None
        if key == self.head_key:
            with self._lock:
                self.head_written = True
        elif mode == "create":
            self._check()
        else:
            with self._lock:
                self._updated.add(key)
        etag = self.inner.put(key, data, mode)
        if mode == "create" and key != self.head_key:
            with self._lock:
                self._created.append(key)
        return etag

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        self._check()
        return self.inner.list_sizes(prefix)

    def list(self, prefix: str) -> Iterator[str]:
        self._check()
        return self.inner.list(prefix)
    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        self._check()
        return self.inner.list_stats(prefix)

    def stat(self, key: str) -> ObjectStat:
        self._check()
        return self.inner.stat(key)

    def store_time(self) -> float:
        self._check()
        return self.inner.store_time()

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        self._check()
        return super().copy(key, target, target_key)

    def discard_uploads(self) -> int | None:
        """Delete what this command created that no head can reference; return how many
        objects, or None when a write of the head had started (then nothing is deleted)."""
        with self._lock:
            if self.head_written:
                return None
            mine = [key for key in self._created if key not in self._updated]
        if mine:
            self.inner.delete(mine)
        return len(mine)


def unwrap(transport: Any) -> StoppableTransport | None:
    """The :class:`StoppableTransport` inside a remote's (counting) transport, if any."""
    while transport is not None and not isinstance(transport, StoppableTransport):
        transport = getattr(transport, "inner", None)
    return transport
