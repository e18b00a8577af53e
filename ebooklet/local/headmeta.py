"""The metadata of the heads a sync state records, kept once beside it (state version 4).

A head's ``metadata`` may hold up to 4 MiB of JSON, and ``state.json`` and the journals' base
records are rewritten at every sync. So the head dicts a state holds (the base, and the record
of a push in flight) carry ``metadata_ref`` instead of ``metadata``: the blake2b-128 hex of
the metadata's JSON, whose bytes live in ``metadata-<ref>.json`` in the state's folder. Such a
file is written once, durably, before any record names it, and removed once none does.

A file that is missing or damaged reads as metadata not fetched (:class:`Lost`), as any lost
cache does: the base's is read again from the remote when it is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
from typing import Any, NamedTuple

from ..files import write_atomic

#: The field that stands for ``metadata`` in a head dict of a state of version 4 or later.
REF = "metadata_ref"
#: The first state version that keeps metadata apart.
SPLIT_VERSION = 4
_PREFIX, _SUFFIX = "metadata-", ".json"


class Lost(NamedTuple):
    """Metadata whose file was missing or damaged: not known locally (``ref`` names it)."""

    ref: str


def encode(value: Any) -> tuple[str, bytes]:
    """The ref and the bytes of a metadata value."""
    blob = json.dumps(value, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest(), blob


def split(head: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``head`` with its metadata replaced by its ref (the value goes into ``values``)."""
    if "metadata" not in head:
        return dict(head)  # split already
    out = dict(head)
    meta = out.pop("metadata")
    if isinstance(meta, Lost):
        out[REF] = meta.ref
    elif meta is None:
        out[REF] = None
    else:
        ref, _ = encode(meta)
        values[ref] = meta
        out[REF] = ref
    return out


def join(head: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``head`` with its metadata in place (:class:`Lost` when its value is not known)."""
    if REF not in head:
        return dict(head)  # inline (a state of version 3 or earlier)
    out = dict(head)
    ref = out.pop(REF)
    out["metadata"] = None if ref is None else values.get(ref, Lost(ref))
    return out


class MetadataFiles:
    """The ``metadata-<ref>.json`` files in the sync state's folder ``folder``."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self._on_disk: set[str] = set()  # refs known to have their file
        self._kept: set[str] | None = None  # refs kept at the last sweep

    def path(self, ref: str) -> pathlib.Path:
        return self.folder / f"{_PREFIX}{ref}{_SUFFIX}"

    def load(self, refs: set[str], values: dict[str, Any]) -> list[str]:
        """Read the values of ``refs`` into ``values``; returns the refs whose file is missing
        or damaged."""
        lost = []
        for ref in sorted(refs - values.keys()):
            try:
                data = self.path(ref).read_bytes()
                if hashlib.blake2b(data, digest_size=16).hexdigest() != ref:
                    raise ValueError("its checksum does not match")
                values[ref] = json.loads(data)
            except (OSError, ValueError, RecursionError):
                lost.append(ref)
                continue
            self._on_disk.add(ref)
        return lost

    def write(self, refs: set[str], values: dict[str, Any]) -> None:
        """Write the files of ``refs`` that are not on disk yet (before a record names them)."""
        for ref in sorted(refs - self._on_disk):
            if ref in values:
                write_atomic(self.path(ref), encode(values[ref])[1])
                self._on_disk.add(ref)

    def sweep(self, refs: set[str], values: dict[str, Any]) -> None:
        """Remove the files (and values) of refs no record names any more."""
        if refs == self._kept:
            return
        for path in self.folder.glob(f"{_PREFIX}*{_SUFFIX}"):
            ref = path.name[len(_PREFIX) : -len(_SUFFIX)]
            if ref not in refs:
                with contextlib.suppress(OSError):
                    path.unlink()
                self._on_disk.discard(ref)
        for ref in set(values) - refs:
            del values[ref]
        self._kept = set(refs)
