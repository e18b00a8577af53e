"""Files made durable: atomic replacement, and fsync of a file and of its folder.

The one place that knows how a file is replaced so that a crash or a power cut leaves either
the old content or the new, never a mix or nothing (the sequence of SQLite and litestream):
write a temporary file beside the target, fsync it, rename it over the target, fsync the
folder so that the rename itself is on disk. Used by the local side (sync state, presence
bits) and by the folder remote.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import threading
import time


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync an existing file (or folder) by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder, so that names created, renamed or removed in it are on disk. A file
    system that cannot fsync a folder (some network and Windows ones) is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. EINVAL where folders cannot be fsynced: nothing better can be done
    finally:
        os.close(fd)


def temp_name(path: pathlib.Path) -> pathlib.Path:
    """A temporary name beside ``path``, private to this process and thread."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def write_atomic(path: pathlib.Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically. ``durable``: fsync the file before the
    rename and the folder after it, so that the new content survives a power cut."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic_many(files: list[tuple[pathlib.Path, bytes]]) -> None:
    """:func:`write_atomic` for several files, their fsyncs run side by side (a file system
    commits concurrent fsyncs together: several cost about one)."""
    if len(files) <= 1:
        for path, data in files:
            write_atomic(path, data)
        return
    with concurrent.futures.ThreadPoolExecutor(min(8, len(files))) as pool:
        for _ in pool.map(lambda item: write_atomic(*item), files):
            pass


def aside_name(path: pathlib.Path, what: str) -> pathlib.Path:
    """A free name beside ``path`` for keeping a damaged original: ``<name>.<what>-<time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{what}-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.{what}-{stamp}-{n}")
    return aside
