"""Writing a store's files to the disk ahead of the fsync that makes them durable.

``fsync`` waits for every page of a file still only in the page cache. After a bulk write
(hundreds of MiB of fetched values, or of changes about to be pushed) that wait comes all at
once, at the next ``sync()`` or ``close()``. :class:`WriteBack` starts it early, in a thread,
while the caller goes on downloading or uploading, so that the sync which follows finds the
pages already written. It changes nothing about durability: only ``LocalStore.sync`` makes
anything durable, and it fsyncs every file as before.
"""

from __future__ import annotations

import contextlib
import pathlib
import threading
from collections.abc import Callable, Sequence

from ..files import fsync_path

#: Bytes written to a store's files after which their pages are sent to the disk in the
#: background (:meth:`WriteBack.wrote`).
WRITE_BACK_BYTES = 64 << 20


class WriteBack:
    """At most one background fsync of a store's files at a time."""

    def __init__(self, paths: Callable[[], Sequence[pathlib.Path]]) -> None:
        self._paths = paths
        self._thread: threading.Thread | None = None
        self._bytes = 0

    def wrote(self, n: int) -> None:
        """Count ``n`` bytes written; past WRITE_BACK_BYTES since the last start, start one."""
        self._bytes += n
        if self._bytes >= WRITE_BACK_BYTES:
            self.start()

    def start(self) -> None:
        """Start a background fsync of the files (unless one is still running)."""
        self._bytes = 0
        if self._thread is not None and self._thread.is_alive():
            return
        paths = list(self._paths())

        def fsync_all() -> None:
            for path in paths:
                with contextlib.suppress(OSError):  # sync() reports it, if it recurs
                    fsync_path(path)

        self._thread = threading.Thread(target=fsync_all, name="ebooklet-write-back", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
