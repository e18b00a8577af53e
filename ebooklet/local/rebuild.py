"""Replaying the journal into the data file, and replacing a damaged data file safely.

The journal is the source of truth for pending changes, and the data file a cache of it plus
the remote. :func:`replay` brings a data file that a session left without syncing back in
line with the journal. :func:`write_copy` and :func:`swap_in` replace a damaged file without
a moment in which the path has no file: the rebuilt copy is written and fsynced beside it
(``<name>.rebuild``), the original is *linked* aside (``<name>.damaged-<time>``), the copy is
renamed over the path, and the folder is fsynced after each step. Named crash points
(:func:`crash_point`) let the tests kill the process between the steps.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
from collections.abc import Callable
from typing import Any

from ..files import aside_name, fsync_dir
from .datafile import DataFile, build
from .journal import Pending
from .layout import Inspection
from .pending import PendingChanges, disagrees

#: The environment variable naming a crash point at which the process kills itself (tests).
CRASH_ENV = "EBOOKLET_CRASH_AT"


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL here if the tests asked for it (``EBOOKLET_CRASH_AT``)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def replay(
    data: DataFile, pending: PendingChanges, crashed: bool, synced: Callable[[str], bool] = lambda key: False
) -> list[str]:
    """Bring the data file in line with the journal where the file lost changes (after a
    crash, every change made since the last sync of the data file, which ``synced`` tells
    from the others; otherwise, and for those, only damaged values: later edits with plain
    booklet stay). Returns the keys changed."""
    changed = []
    for batch in pending.batches():
        redo: list[tuple[str, int, bytes | None]] = []
        for key, ts, raw, _flags in batch:
            # A change the data file held durably at its last sync was not lost by the crash:
            # missing or older now, it was edited with plain booklet between sessions.
            lost = crashed and not synced(key)
            got = data.get_raw(key)
            if raw is None:
                if lost and got is not None and got[0] <= ts:
                    redo.append((key, ts, None))
                continue
            if got is None:
                if not lost:
                    continue  # deleted with plain booklet since
            elif not disagrees(Pending(ts, raw, 0), *got):
                continue
            redo.append((key, ts, raw))
        if redo and not data.writable:
            data.reopen("w")
        for key, ts, raw in redo:
            if raw is None:
                data.delete(key)
            else:
                data.put(key, raw, ts)
            changed.append(key)
    meta = pending.meta
    if meta is not None and crashed:
        mine = data.get_metadata()
        if mine is None or mine[1] < meta[1]:
            data.set_metadata(meta[0], meta[1])
    return changed


def write_copy(
    path: pathlib.Path,
    found: Inspection | None,
    serializer: Any,
    n_buckets: int,
    pending: PendingChanges,
    note: Callable[[str], None],
) -> list[str]:
    """Write ``<path>.rebuild``: the intact entries ``found`` in the file at ``path`` (none
    when None) plus every pending change of the journal, fsynced. Returns the keys whose
    pending value could not be read from the journal."""
    tmp = path.with_name(path.name + ".rebuild")
    new = build(tmp, serializer, n_buckets, found, path, note)
    try:
        lost = _replay_into(new, pending)
        new.sync()
    finally:
        new.close()
    crash_point("rebuild:written")
    return lost


def swap_in(path: pathlib.Path) -> pathlib.Path | None:
    """Put ``<path>.rebuild`` in place of ``path``; return where the original is kept (None
    when there was none)."""
    aside = None
    if path.exists():
        aside = aside_name(path, "damaged")
        try:
            os.link(path, aside)  # the path keeps its file until the replace below
        except OSError:
            shutil.copy2(path, aside)  # a file system without hard links
        fsync_dir(path.parent)
        crash_point("rebuild:linked")
    os.replace(path.with_name(path.name + ".rebuild"), path)
    fsync_dir(path.parent)
    crash_point("rebuild:replaced")
    return aside


def _replay_into(new: DataFile, pending: PendingChanges) -> list[str]:
    """Write every pending change of the journal into a rebuilt file; return the keys
    whose pending value could not be read."""
    lost = []
    for key in list(pending.touched):
        entry = pending.get(key)
        if entry is None:
            lost.append(key)
            continue
        got = new.get_raw(key)
        if entry.deleted:
            if got is not None and got[0] <= entry.timestamp:
                new.delete(key)
            continue
        if got is None or disagrees(entry, *got):
            new.put(key, entry.value, entry.timestamp)  # type: ignore[arg-type]
    meta = pending.meta
    if meta is not None:
        mine = new.get_metadata()
        if mine is None or mine[1] < meta[1]:
            new.set_metadata(meta[0], meta[1])
    return lost
