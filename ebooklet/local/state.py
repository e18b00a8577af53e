"""The sync state of a local file: what it was last synced with, and how it was left.

It lives in ``state.json`` in the folder ``{data file}.ebooklet/``: JSON, then a line with its
blake2b-128 checksum. The journal's base record carries the fields of :data:`BASE_FIELDS`
too, so that a lost or damaged ``state.json`` is rebuilt from the journal. The metadata of the
heads it records is kept apart, once (see :mod:`.headmeta`).

Versions: 1 (ebooklet 0.6.0: no checksum, ``touched.log``), 2 (journal of batched records),
3 (changes written through to the journal one record each, checksummed presence bits), 4
(this one: heads' metadata in files of their own). Every earlier version is read and
upgraded on the first write; a newer one is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

from .headmeta import REF, SPLIT_VERSION, join, split

STATE_VERSION = 4
#: The sync state's file name, in the folder ``{data file}.ebooklet/`` beside the data file.
STATE_FILE = "state.json"
#: What state.json shares with the journal's base record: enough to rebuild the state.
BASE_FIELDS = ("head", "etag", "remote_uuid", "location", "replace", "codec")


@dataclass
class SyncState:
    """The sync state of one local file (see the module docstring for where it lives)."""

    version: int = STATE_VERSION
    #: The remote head at the last sync (the *base*), as a dict of its fields.
    head: dict[str, Any] | None = None
    etag: str | None = None
    remote_uuid: str | None = None
    #: Where the remote is, as shown in messages (never with credentials).
    location: str | None = None
    #: True until the first push of a database opened with flag='n'.
    replace: bool = False
    #: The value serializer's name, as the remote head records it.
    codec: str | None = None
    #: Base index parts kept locally: part number (as text) -> object name.
    parts: dict[str, str] = field(default_factory=dict)
    #: The commit a database opened with ``at=`` is pinned to.
    pinned: str | None = None
    #: A retention setting to record with the next push.
    retention: dict[str, float] | None = None
    #: The record of a push whose head write may have landed (see sync/inflight.py).
    inflight: dict[str, Any] | None = None
    #: The data file's fingerprint at the last sync (size, mtime, key count).
    fingerprint: list[int] | None = None
    #: A session wrote to the data file and has not synced since.
    unsynced: bool = False
    #: Damage was noticed during a session; the next open checks and repairs.
    damaged: bool = False
    damaged_keys: list[str] = field(default_factory=list)
    #: The data file may hold changes the journal does not list (edits behind ebooklet's back).
    external_edits: bool = False
    #: A repair forgot the presence bits; the next full scan sets them again.
    presence_reset: bool = False
    #: [id, length] of the journal and its mirror acknowledged by the last sync.
    journal: list[Any] | None = None
    mirror: list[Any] | None = None
    #: [id, length] of the journal when the data file was last synced (fsynced with every
    #: change the journal held): a record within it cannot have been lost by a crash.
    synced_journal: list[Any] | None = None
    #: Fields of a later state version of this major format, kept as they were.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The metadata of the heads above, by ref (see headmeta; not saved in state.json).
    head_metadata: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # -- heads, their metadata apart -----------------------------------------------------

    def set_head(self, head: dict[str, Any] | None) -> None:
        """Record the base head (a dict of its fields, with its metadata)."""
        self.head = None if head is None else split(head, self.head_metadata)

    def full_head(self) -> dict[str, Any] | None:
        """The base head's fields, with its metadata (``headmeta.Lost`` when it is lost)."""
        return None if self.head is None else join(self.head, self.head_metadata)

    def split_head(self, head: dict[str, Any]) -> dict[str, Any]:
        """A head to record elsewhere in the state (a push in flight), its metadata apart."""
        return split(head, self.head_metadata)

    def join_head(self, head: dict[str, Any]) -> dict[str, Any]:
        return join(head, self.head_metadata)

    def metadata_refs(self) -> set[str]:
        """The refs of the metadata the state's heads name."""
        inflight = self.inflight if isinstance(self.inflight, dict) else {}
        heads = [self.head, inflight.get("head")]
        return {h[REF] for h in heads if isinstance(h, dict) and isinstance(h.get(REF), str)}

    def _stored(self, head: Any) -> Any:
        # Before version 4 the metadata is kept in the head, as those versions read it.
        if isinstance(head, dict) and self.version < SPLIT_VERSION:
            return join(head, self.head_metadata)
        return head

    def base_fields(self) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in BASE_FIELDS}
        fields["head"] = self._stored(self.head)
        return fields

    def base_text(self) -> str:
        return json.dumps(self.base_fields(), sort_keys=True)

    def acknowledged(self, name: str) -> tuple[str, int] | None:
        """(id, length) of the journal (``name``: "journal" or "mirror") at the last sync
        (``"synced_journal"``: the journal's when the data file was last synced)."""
        value = getattr(self, name)
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            return str(value[0]), value[1]
        return None

    def to_json(self) -> dict[str, Any]:
        skip = ("extra", "head_metadata")
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        out["head"] = self._stored(self.head)
        if isinstance(self.inflight, dict):
            out["inflight"] = {**self.inflight, "head": self._stored(self.inflight.get("head"))}
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SyncState:
        """A state from its JSON, checked field by field (ValueError when it is not one)."""
        raw = dict(raw)
        if "rescan" in raw:  # the name of external_edits in ebooklet 0.6.0's state files
            raw.setdefault("external_edits", raw.pop("rescan"))
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in known or name in ("extra", "head_metadata"):
                extra[name] = value
            elif value is not None or name in _OPTIONAL:
                values[name] = value
        state = cls(**values, extra=extra)
        state._check()
        # Metadata held in the heads (version 3 and earlier) is taken apart in memory.
        if state.head is not None:
            state.head = split(state.head, state.head_metadata)
        inflight = state.inflight
        if isinstance(inflight, dict) and isinstance(inflight.get("head"), dict):
            state.inflight = {**inflight, "head": split(inflight["head"], state.head_metadata)}
        return state

    def _check(self) -> None:
        if not isinstance(self.version, int) or isinstance(self.version, bool):
            raise ValueError("its version is not a number")
        if not isinstance(self.parts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.parts.items()
        ):
            raise ValueError("its list of index parts is malformed")
        if self.head is not None and not isinstance(self.head, dict):
            raise ValueError("its head is malformed")
        if not isinstance(self.damaged_keys, list):
            raise ValueError("its list of damaged keys is malformed")
        for name in ("replace", "unsynced", "damaged", "external_edits", "presence_reset"):
            setattr(self, name, bool(getattr(self, name)))


_OPTIONAL = {
    "head", "etag", "remote_uuid", "location", "codec", "pinned", "retention", "inflight",
    "fingerprint", "journal", "mirror", "synced_journal",
}


def encode(state: SyncState) -> bytes:
    """JSON, then a line with its blake2b-128 checksum."""
    body = json.dumps(state.to_json()).encode()
    return body + b"\n" + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b"\n"


def decode(data: bytes) -> SyncState:
    """The state in ``data``; ValueError when it fails its checksum or does not parse."""
    body, _, checksum = data.partition(b"\n")
    try:
        if checksum.strip():
            if hashlib.blake2b(body, digest_size=16).hexdigest().encode() != checksum.strip():
                raise ValueError("its checksum does not match its content")
            raw = json.loads(body)
        else:
            raw = json.loads(data)
            # Version-1 files (ebooklet 0.6.0) were written without a checksum; later ones
            # never are (a newer version's are refused by the caller, whatever their form).
            if isinstance(raw, dict) and 1 < raw.get("version", 1) <= STATE_VERSION:
                raise ValueError("its checksum line is missing")
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    if not isinstance(raw, dict):
        raise ValueError("it is not a sync state")
    raw.setdefault("version", 1)
    return SyncState.from_json(raw)


def read_state(folder: pathlib.Path) -> tuple[SyncState | None, str | None]:
    """The state saved in ``folder``, or None and what is wrong with it (None: there is none)."""
    try:
        data = (folder / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, str(exc)
    try:
        return decode(data), None
    except ValueError as exc:
        return None, str(exc)


def state_dir(path: pathlib.Path) -> pathlib.Path:
    """The folder of the sync state of the data file at ``path``."""
    return path.with_name(path.name + ".ebooklet")


@dataclass(frozen=True)
class Synced:
    """The remote a local file was last synced with, as its sync state records it.

    Attributes
    ----------
    location : str
        Where the remote is, as shown in messages (never with credentials).
    uuid : str or None
        The remote database's uuid (None when the state does not say).
    """

    location: str
    uuid: str | None


def synced_with(path: str | os.PathLike[str]) -> Synced | None:
    """The remote the local file at ``path`` was last synced with, or None when it never was.

    Read-only and lock-free: it reads ``state.json`` beside the file and nothing else, and
    never opens the data file. A state that is missing, fails its checksum or records no
    location gives None: opening the file finds out (and says) what is wrong with it.
    """
    p = pathlib.Path(path)
    try:
        state = decode((state_dir(p) / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(state.location, str) or not state.location:
        return None
    uuid = state.remote_uuid
    return Synced(state.location, uuid if isinstance(uuid, str) else None)
