"""The base index parts one session keeps beside its data file, and their presence bits
(which keys of each part the data file holds), as the sync layer uses them.

:mod:`.parts` keeps the files; :class:`Presence` adds what the session knows: the data file
made writable before anything is stored or marked, and damaged bits rebuilt from the data
file at once, or else reported to the sync state (see :meth:`Presence.bits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .datafile import DataFile
from .parts import PartCache, present_bits
from .state import SyncState


class Session(Protocol):
    """What :class:`Presence` reads of its store, as it is now (the data file is replaced
    when it is rebuilt)."""

    data: DataFile
    state: SyncState


class Presence:
    """``LocalStore.presence``: stored base parts and presence bits of one open store."""

    def __init__(self, store: Session, parts: PartCache, writable: Callable[[], None]) -> None:
        self._store = store
        self._parts = parts
        self._writable = writable
        #: ``part_keys(part, name)``: the keys of stored base part ``part`` (object ``name``),
        #: or None when its stored copy cannot be read. Set by the layer that decodes parts;
        #: it lets damaged presence bits be rebuilt from the data file at once.
        self.part_keys: Callable[[int, str], Sequence[str] | None] | None = None
        parts.rebuild = self._rebuild_bits

    def store(
        self,
        part: int,
        name: str,
        blob: bytes,
        keys: list[str],
        present: set[str] | None = None,
        seen: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """Keep base part ``part`` (see :meth:`.parts.PartCache.store`); ``present``, the set
        of keys in the data file, saves a lookup per key when given."""
        self._writable()
        contains = present.__contains__ if present is not None else self._store.data.__contains__
        none_present = present is not None and not present
        self._parts.store(part, name, blob, keys, contains, seen, none_present=none_present)

    def stage(self, name: str, blob: bytes, bits: bytes) -> None:
        self._parts.stage(name, blob, bits)

    def forget(self) -> None:
        self._parts.forget_all()

    def bits(self, part: int) -> bytearray:
        parts = self._parts
        bits = parts.bits(part)
        if parts.found_damage:
            parts.found_damage = False
            # Keys present in the data file get their bits again at the next full scan.
            self._store.state.presence_reset = True
            self._store.state.external_edits = True
        return bits

    def _rebuild_bits(self, part: int, name: str) -> bytearray | None:
        keys = self.part_keys(part, name) if self.part_keys is not None else None
        if keys is None:
            return None
        return present_bits(keys, self._store.data.__contains__)

    def mark(self, part: int, row: int, present: bool = True) -> None:
        self._writable()
        self._parts.mark(part, row, present)

    def mark_rows(self, parts: Sequence[int], rows: Sequence[int]) -> None:
        self._writable()
        self._parts.mark_rows(parts, rows)
