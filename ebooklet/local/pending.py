"""The pending changes of a local file: its journal and the journal's mirror, as one object.

``journal.log`` holds every write and delete made through ebooklet since the last push, with
the values (the source of truth for pending changes, see :mod:`.journal`). ``mirror.log``
holds a second copy of the base and of the pending deletes: what the data file cannot tell
again if the journal is lost. ``touched`` is a view of the journal, never a second copy.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..files import aside_name, write_atomic
from .headmeta import SPLIT_VERSION, MetadataFiles
from .journal import INFERRED, Journal, Pending, Touched
from .state import BASE_FIELDS, STATE_FILE, SyncState, encode


class PendingChanges:
    """The journal and mirror in the sync state's folder ``folder``."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.journal = Journal(folder / "journal.log")
        self.mirror = Journal(folder / "mirror.log")
        #: key -> None for a pending write, the time of a pending delete (a view).
        self.touched: Touched = self.journal.touched()
        self._base = ""  # the base both journals record (as SyncState.base_text); "": unknown
        self._aside: pathlib.Path | None = None  # where a damaged journal goes at its rewrite
        self.metadata = MetadataFiles(folder)

    # -- reading ---------------------------------------------------------------------------

    def load(self, state: SyncState | None) -> None:
        self.journal.load(state.acknowledged("journal") if state else None)
        self.mirror.load(state.acknowledged("mirror") if state else None)

    @property
    def missing(self) -> bool:
        """Neither the journal nor its mirror exists."""
        return self.journal.missing and self.mirror.missing

    @property
    def base(self) -> dict[str, Any] | None:
        """The base the journal (or else its mirror) records."""
        return self.journal.base or self.mirror.base

    def get(self, key: str) -> Pending | None:
        """The journal's record of a pending change to ``key``."""
        return self.journal.get(key)

    def batches(self) -> Iterator[list[tuple[str, int, bytes | None, int]]]:
        return self.journal.pending_batches()

    def synced(self, state: SyncState) -> Callable[[str], bool]:
        """Whether a key's pending change was in the journal when the data file was last
        synced (so the data file held it durably then: a crash since cannot have lost it)."""
        marker = state.acknowledged("synced_journal")
        journal = self.journal
        if marker is None or marker[0] != journal.id or journal.damage:
            # Unknown: an older state, the journal replaced, or damaged or cut short since (its
            # deletes recovered from the mirror are appended where synced ones used to be).
            return lambda key: False
        return lambda key: self.journal.offset(key) < marker[1]

    @property
    def meta(self) -> tuple[Any, int] | None:
        return self.journal.meta

    def load_metadata(self, state: SyncState) -> str | None:
        """Read the metadata of the heads ``state`` records; says which files were lost."""
        lost = self.metadata.load(state.metadata_refs(), state.head_metadata)
        if not lost:
            return None
        return (
            f"the metadata file(s) {', '.join(self.metadata.path(r).name for r in lost)} in "
            f"{self.folder} are missing or damaged: the metadata is read again from the remote "
            "when it is needed"
        )

    def problems(self, state: SyncState) -> list[str]:
        """What is wrong with the journal, one phrase each (none: it is intact)."""
        out = []
        if self.journal.missing and state.journal is not None:
            out.append("is missing")
        if self.journal.damage:
            out.append(f"has {sum(d.end - d.start for d in self.journal.damage)} damaged bytes")
        return out

    def recover_deletes(self) -> None:
        """Take the pending deletes that the journal lost from the mirror (writes are in the
        data file, which the next comparison with the remote scans in full)."""
        for key in list(self.mirror.where):
            entry = self.mirror.get(key)
            if entry is not None and entry.deleted and key not in self.journal.where:
                self.journal.delete(key, entry.timestamp, entry.flags)

    def keep_damaged_journal(self) -> pathlib.Path:
        """Name where the damaged journal goes when it is rewritten (at the next save)."""
        self._aside = aside_name(self.journal.path, "damaged")
        return self._aside

    def adopt_base(self, state: SyncState, rewrite: bool) -> None:
        """Remember the base the journals record (``rewrite``: both are rewritten at the next
        save, e.g. after damage)."""
        base = self.journal.base
        self._base = "" if rewrite or base is None else SyncState(**_base_of(base)).base_text()

    # -- writing ---------------------------------------------------------------------------

    def write(self, key: str, timestamp: int, raw: bytes) -> None:
        self.journal.write(key, timestamp, raw)

    def delete(self, key: str, deleted_at: int, inferred: bool = False) -> None:
        flags = INFERRED if inferred else 0
        self.journal.delete(key, deleted_at, flags)
        self.mirror.delete(key, deleted_at, flags)

    def set_metadata(self, data: Any, timestamp: int) -> None:
        self.journal.set_metadata(data, timestamp)

    def inferred_delete(self, key: str) -> bool:
        """Whether ``key`` is pending as a delete that no one asked ebooklet for."""
        if key not in self.journal.deletes:
            return False
        entry = self.journal.get(key)
        return entry is not None and entry.deleted and entry.inferred

    @property
    def dirty(self) -> bool:
        return self.journal.dirty or self.mirror.dirty

    def flush(self) -> None:
        """fsync both journals."""
        self.journal.flush()
        self.mirror.flush()

    def forget(self, keys: Iterable[str] | None, state: SyncState) -> None:
        """Forget pending changes (all, or those to ``keys``) once pushed or discarded."""
        self.journal.forget(None if keys is None else list(keys))
        self.rewrite(state)

    def rewrite(self, state: SyncState) -> None:
        """Write the journal and its mirror anew: the base, then what is still pending."""
        self._write_metadata(state)
        base = state.base_fields()
        journal = self.journal
        pushed = (state.head or {}).get("metadata_timestamp")
        if journal.meta is not None and not state.replace and isinstance(pushed, int):
            if journal.meta[1] <= pushed:
                journal.meta = None  # the base holds it (pushed), or a newer one: not pending
        if self._aside is not None:
            # The damaged journal is kept; rewriting reads its intact records through the
            # descriptor it still holds.
            os.replace(journal.path, self._aside)
            self._aside = None
        synced = self.synced(state)
        fresh = [key for key in journal.where if not synced(key)]
        old = [key for key in journal.where if synced(key)]
        journal.rewrite(base, old + fresh, cut=len(old))
        self.mirror.rewrite(base, list(journal.deletes), source=journal)
        self._base = state.base_text()
        # The changes the data file held at its last sync are carried over: the new journal's
        # records before the first change made since stay known as synced.
        starts = [journal.offset(key) for key in fresh if journal.offset(key) >= 0]
        state.synced_journal = [journal.id, min(starts, default=journal.durable)]

    def save_state(self, state: SyncState, data_synced: bool = False) -> None:
        """Write ``state`` to state.json, atomically and durably, after rewriting the
        journals if the base they record is not the state's. ``data_synced``: the data file
        was just synced with every change the journal holds (recorded, see :meth:`synced`)."""
        self._write_metadata(state)
        if state.base_text() != self._base:
            self.rewrite(state)
        if data_synced:
            state.synced_journal = [self.journal.id, self.journal.durable]
        state.journal = [self.journal.id, self.journal.durable]
        state.mirror = [self.mirror.id, self.mirror.durable]
        write_atomic(self.folder / STATE_FILE, encode(state))
        if state.version >= SPLIT_VERSION:
            # Both journals were rewritten above if they named other metadata.
            self.metadata.sweep(state.metadata_refs(), state.head_metadata)

    def _write_metadata(self, state: SyncState) -> None:
        """The metadata files the state names, written before any record names them."""
        if state.version >= SPLIT_VERSION:
            self.metadata.write(state.metadata_refs(), state.head_metadata)

    def compact_if_wasteful(self, state: SyncState) -> None:
        if self.journal.wasteful:
            self.rewrite(state)

    def close(self) -> None:
        self.journal.close()
        self.mirror.close()


def disagrees(entry: Pending, timestamp: int, raw: bytes) -> bool:
    """Whether a value the data file holds for a pending write is not the one written: older,
    or other bytes under the same timestamp. A newer one is a later edit made with plain
    booklet."""
    if timestamp != entry.timestamp:
        return timestamp < entry.timestamp
    return raw != entry.value


def _base_of(base: dict[str, Any]) -> dict[str, Any]:
    return {name: base.get(name) for name in BASE_FIELDS}
