"""The base index: the remote head at the last sync, its index parts, and presence bits.

The *base* is the remote as this local file last synced with it. :class:`BaseIndex` keeps it
(in the local sync state), serves its index parts (from memory, the local copies, or the
remote), answers which keys are *lazy* (on the remote, never fetched, never deleted here), and
adopts a new base after a push or pull. The presence bits are what tell a lazy key from one the
user deleted with plain booklet: a key whose bit is set has been in the data file.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict

from ..errors import IntegrityError, RemoteFormatError, SerializerMismatchError, SyncError
from ..format import Entry, Head, Part, part_of
from ..local import LocalStore
from ..local.headmeta import Lost
from ..phases import timed
from ..remote import Remote
from .objects import ObjectStore, parallel_map

#: Decoded index parts kept in memory.
PART_CACHE = 64
#: Take presence bits with one pass over the data file's keys once a part set to store holds
#: more than 1/SCAN_FRACTION of the file's keys (a lookup per key costs about ten times more).
SCAN_FRACTION = 8

EMPTY = Part()


def check_count(head: Head, counted: int, location: str) -> None:
    """Refuse a head whose index parts hold another number of keys than it says (``n_keys``):
    a reader would list one number of keys and count another."""
    if counted != head.n_keys:
        raise RemoteFormatError(
            f"the index parts of {location} (commit {head.commit}) hold {counted:,} keys, and its "
            f"head says {head.n_keys:,}: the remote database is damaged or was not written by "
            "ebooklet. Run 'ebooklet verify' on it, and ask whoever writes it"
        )


class BaseIndex:
    """The base of one local file and the index parts of any head of its remote."""

    def __init__(self, local: LocalStore, remote: Remote, objects: ObjectStore) -> None:
        self.local = local
        self.remote = remote
        self.objects = objects
        self._parts: OrderedDict[str, Part] = OrderedDict()
        # Parts of non-base heads downloaded during this operation, kept until the head
        # they belong to becomes the base (so presence bits can be stored with them).
        self._fresh: dict[str, bytes] = {}
        head = local.state.full_head()
        self._head: Head | None = Head.from_saved(head) if head else None
        local.presence.part_keys = self._stored_keys

    def _stored_keys(self, p: int, name: str) -> Sequence[str] | None:
        """The keys of stored base part ``p`` (object ``name``), or None if its stored copy is
        gone or damaged (its presence bits then wait for the next full comparison)."""
        part = self._parts.get(name)
        if part is not None:
            return part.keys
        blob = self.local.parts.blob(p, name)
        if blob is None:
            return None
        try:
            return Part.decode(blob, name).keys
        except (IntegrityError, RemoteFormatError):
            return None

    # -- the base --------------------------------------------------------------------------

    @property
    def replacing(self) -> bool:
        """True until the first push of a database opened with flag='n': the remote's current
        content is then no base at all, only something to replace."""
        return bool(self.local.state.replace)

    def start_replacing(self) -> None:
        self.local.state.replace = True

    @property
    def synced_head(self) -> Head | None:
        """The remote head at the last sync, replaced or not (None: there was no database)."""
        return self._head

    @property
    def base(self) -> Head | None:
        """The head local changes are measured against: the synced head, unless replacing."""
        return None if self.replacing else self._head

    @property
    def etag(self) -> str | None:
        """The ETag of the synced head."""
        return self.local.state.etag if self._head is not None else None

    def set_base(self, head: Head | None, etag: str | None) -> None:
        state = self.local.state
        if head is not None:
            self.check_same_database(head)
        old = self._head
        if head is None or old is None or old.uuid != head.uuid or old.part_bits != head.part_bits:
            self.local.presence.forget()
        state.set_head(asdict(head) if head else None)
        state.etag = etag
        state.remote_uuid = head.uuid if head else None
        state.location = self.remote.location
        self._head = head

    def check_same_database(self, head: Head) -> None:
        """Refuse a head of another database than the synced one: the local file was synced
        with a different remote (or the database was deleted and created again)."""
        known = self.local.state.remote_uuid
        if self.replacing:
            return
        if known is None or head.uuid == known:
            _check_serializer(self.local, self.remote, head)
            return
        advice = " Open a new local path for it"
        if self.remote.writable:
            advice += (
                "; or, to replace that database with this file's data, call delete_remote() "
                "and then push()"
            )
        synced = self.local.state.location or "another remote"
        raise SyncError(
            f"{self.remote.location} holds another database (uuid {head.uuid}) than the one "
            f"{self.local.path} was synced with ({synced}, uuid {self.local.state.remote_uuid})."
            f"{advice}."
        )

    @property
    def metadata_lost(self) -> bool:
        """Whether the synced head's metadata was lost locally (its file damaged)."""
        return self._head is not None and isinstance(self._head.metadata, Lost)

    # -- index parts -----------------------------------------------------------------------

    def is_base(self, head: Head) -> bool:
        base = self.base
        return base is not None and head.commit_id == base.commit_id and head.uuid == base.uuid

    def part(self, head: Head, p: int, keep: bool = True, blob: bytes | None = None) -> Part:
        """Index part ``p`` of ``head``: from memory, the local state, or the remote (``blob``:
        its object, downloaded already). A part of the base is always stored locally (with its
        presence bits) once used. ``keep=False``: not held in memory (for a walk over all)."""
        name = head.parts[p]
        if name is None:
            return EMPTY
        is_base = self.is_base(head)
        stored = is_base and self.local.parts.has(p, name)
        part = self._parts.get(name)
        if part is None:
            if blob is None and stored:
                blob = self.local.parts.blob(p, name)
                if blob is not None:
                    try:
                        part = Part.decode(blob, name)
                    except (IntegrityError, RemoteFormatError):
                        # The local copy was torn (e.g. by a crash): fetch it again.
                        blob, stored = None, False
            blob = blob if blob is not None else self._fresh.get(name)
            if blob is None:
                blob = self.objects.get(name)
                if not is_base:
                    self._fresh[name] = blob
            if part is None:
                part = Part.decode(blob, name)
            if keep:
                self._parts[name] = part
                if len(self._parts) > PART_CACHE:
                    self._parts.popitem(last=False)
        elif keep:
            self._parts.move_to_end(name)
        if is_base and not stored:
            # An empty data file (a fresh copy) holds none of the keys: no lookup per key.
            present = set() if len(self.local) == 0 else None
            blob = blob or self._fresh.get(name) or part.encode()
            self.local.presence.store(p, name, blob, part.keys, present)
            self._fresh.pop(name, None)
        return part

    def at_hand(self, head: Head, p: int) -> bool:
        """Whether index part ``p`` of ``head`` can be had without a request."""
        name = head.parts[p]
        if name is None or name in self._parts or name in self._fresh:
            return True
        return self.is_base(head) and self.local.parts.has(p, name)

    def peek_part(self, head: Head, p: int) -> Part:
        """Index part ``p`` of ``head`` without keeping it (neither in memory nor stored): for
        one pass over many parts, in bounded memory."""
        name = head.parts[p]
        if name is None:
            return EMPTY
        part = self._parts.get(name)
        if part is not None:
            return part
        if self.is_base(head):
            blob = self.local.parts.blob(p, name)
            if blob is not None:
                with contextlib.suppress(IntegrityError, RemoteFormatError):
                    return Part.decode(blob, name)
        blob = self._fresh.get(name)
        return Part.decode(blob if blob is not None else self.objects.get(name), name)

    @timed("BaseIndex.parts")
    def parts(self, head: Head, indexes: Iterable[int]) -> dict[int, Part]:
        """Several parts of ``head``, downloading the missing ones in parallel."""
        indexes = list(indexes)
        is_base = self.is_base(head)
        missing: dict[str, int] = {}
        for p in indexes:
            name = head.parts[p]
            if name is None or name in self._parts or name in self._fresh:
                continue
            if is_base and self.local.parts.blob(p, name) is not None:
                continue
            missing[name] = p
        got: dict[int, Part] = {}
        if len(missing) > 1:
            # Each part is decoded (and kept) as it arrives, while the rest download.
            for name, blob in zip(missing, parallel_map(self.objects.get, list(missing)), strict=True):
                self._fresh[name] = blob
                got[missing[name]] = self.part(head, missing[name])
        return {p: got[p] if p in got else self.part(head, p) for p in indexes}

    def all_parts(self, head: Head) -> dict[int, Part]:
        """Every part of ``head``, whose key counts must add up to the head's ``n_keys``."""
        parts = self.parts(head, range(len(head.parts)))
        check_count(head, sum(map(len, parts.values())), self.remote.location)
        return parts

    def merged(self, head: Head | None) -> Part:
        """Every entry of ``head`` in one part (for comparing heads with different layouts)."""
        if head is None:
            return EMPTY
        return Part(kv for part in self.all_parts(head).values() for kv in part.items())

    # -- keys of the base ------------------------------------------------------------------

    def present(self, p: int, row: int) -> bool:
        """Whether the ``row``-th key of base part ``p`` has been in the data file."""
        bits = self.local.presence.bits(p)
        return (row >> 3) < len(bits) and bool(bits[row >> 3] & (1 << (row & 7)))

    def entry(self, key: str) -> tuple[Entry, bool] | None:
        """The base entry of ``key``, and whether the key has been in the data file."""
        base = self.base
        if base is None:
            return None
        p = part_of(key, base.part_bits)
        part = self.part(base, p)
        row = part.row(key)
        if row is None:
            return None
        return part.get(key), self.present(p, row)  # type: ignore[return-value]

    def stored_entry(self, key: str) -> Entry | None:
        """The base entry of ``key`` if the index part that holds it is at hand without a
        request (in memory or stored locally); None otherwise."""
        base = self.base
        if base is None:
            return None
        p = part_of(key, base.part_bits)
        name = base.parts[p] if p < len(base.parts) else None
        if name is None:
            return None
        part = self._parts.get(name)
        if part is None:
            blob = self.local.parts.blob(p, name)
            if blob is None:
                return None
            try:
                part = Part.decode(blob, name)
            except (IntegrityError, RemoteFormatError):
                return None
        return part.get(key)

    def lazy_entry(self, key: str) -> Entry | None:
        """The base entry of ``key`` if it is lazy: on the remote at the last sync, absent from
        the data file, and neither deleted nor written locally since."""
        if key in self.local.touched or key in self.local:
            return None
        found = self.entry(key)
        if found is None or found[1]:
            return None  # not on the remote, or deleted with plain booklet
        return found[0]

    def lazy_selection(self, keys: Iterable[str] | None = None) -> list[tuple[int, Part, Sequence[int]]]:
        """The lazy keys of the base (all, or those among ``keys``) as rows of its parts:
        ``(part number, part, rows)``, the rule of :meth:`lazy_entry` without an entry per
        key (a fresh copy takes every row of every part as it is)."""
        base = self.base
        if base is None:
            return []
        chosen: list[tuple[int, Part, Sequence[int]]]
        if keys is None:
            chosen = [(p, part, range(len(part))) for p, part in self.all_parts(base).items()]
            n = base.n_keys
        else:
            chosen = self.rows_of(keys)
            n = sum(len(rows) for _, _, rows in chosen)
        local, touched = self.local, self.local.touched
        n_local = len(local)
        # Keys neither touched nor marked present are in the data file only after edits
        # behind ebooklet's back; one pass over a smaller file beats a lookup per key.
        small_file = n_local <= n
        file_keys: set[str] | None = None
        out = []
        for p, part, rows in chosen:
            bits = local.presence.bits(p)
            if n_local == 0 and not touched and bits.count(0) == len(bits):
                out.append((p, part, rows))  # nothing here yet: every row is lazy
                continue
            part_keys, kept = part.keys, []
            for row in rows:
                key = part_keys[row]
                if key in touched or (row >> 3) < len(bits) and bits[row >> 3] & (1 << (row & 7)):
                    continue  # written or deleted here, or present (see present())
                if small_file:
                    if file_keys is None:
                        file_keys = set(local.keys())
                    if key in file_keys:
                        continue
                elif key in local:
                    continue
                kept.append(row)
            out.append((p, part, kept))
        return out

    def rows_of(self, keys: Iterable[str]) -> list[tuple[int, Part, list[int]]]:
        """The keys among ``keys`` that the base holds, once each, as rows of its parts."""
        base = self.base
        if base is None:
            return []
        by_part: dict[int, dict[str, None]] = {}
        for key in keys:
            by_part.setdefault(part_of(key, base.part_bits), {})[key] = None
        parts = self.parts(base, by_part)
        out = []
        for p, ks in by_part.items():
            row_of = parts[p].row
            out.append((p, parts[p], [r for r in map(row_of, ks) if r is not None]))
        return out

    def forget_present(self, keys: Iterable[str]) -> None:
        """Clear the presence bits of ``keys`` (they read as not fetched again)."""
        base = self.base
        if base is None:
            return
        for key in keys:
            p = part_of(key, base.part_bits)
            row = self.part(base, p).row(key)
            if row is not None:
                self.local.presence.mark(p, row, present=False)

    # -- a new base ------------------------------------------------------------------------

    @timed("BaseIndex.adopt")
    def adopt(
        self,
        head: Head,
        etag: str | None,
        written: dict[int, tuple[str, bytes, Part]],
        dropped: set[str],
        still_pending: set[str] = frozenset(),  # type: ignore[assignment]
        scanned: set[str] | None = None,
        staged: dict[int, tuple[str, bytes]] | None = None,
    ) -> None:
        """Make ``head`` the base: drop stale cached values, keep its parts and presence bits.

        ``written`` are the parts a push just built; ``staged`` those it built and already
        wrote locally with their presence bits (part -> (name, bits), see
        LocalStore.presence.stage); ``dropped`` the cached keys that are stale; ``still_pending``
        the touched keys that remain local changes against ``head``; ``scanned`` every key of
        the data file, when a full scan has just listed them.
        """
        staged = staged or {}
        local = self.local
        base = self.base
        if dropped and base is not None:
            # Cached values are about to go; their presence bits go first, durably, so that a
            # crash in between cannot make a dropped key look deleted by the user.
            for key in dropped:
                p = part_of(key, base.part_bits)
                name = base.parts[p] if p < len(base.parts) else None
                if name is not None and local.parts.has(p, name):
                    row = self.part(base, p).row(key)
                    if row is not None:
                        local.presence.mark(p, row, present=False)
            local.parts.flush()
        for key in dropped:
            local.drop(key)
        stored = local.parts.stored()
        # Keys seen in the data file stay seen when their part is replaced: recomputing that
        # from the file alone would forget keys deleted since (and bring them back).
        carried: set[str] = set()
        # (A part a push staged carries its bits already; after a change of layout, every
        # part is one.)
        if base is not None and not (staged and len(head.parts) != len(base.parts)):
            for p, name in stored.items():
                if p in staged:
                    continue
                if p >= len(head.parts) or head.parts[p] != name:
                    rows = enumerate(self.part(base, p).keys)
                    carried.update(key for row, key in rows if self.present(p, row))
        carried -= dropped
        local.state.replace = False
        self.set_base(head, etag)
        if local.parts.stored() != stored:
            stored = {}  # the layout changed and the stored parts were forgotten
        # Stored parts that this head replaced are kept up to date (with their presence
        # bits) when their new version was downloaded on the way; otherwise forgotten.
        renewed: dict[int, tuple[str, bytes, Part]] = dict(written)
        for p, (name, bits) in staged.items():
            if not local.parts.use_staged(p, name, bits):
                local.parts.forget(p)
        for p, name in stored.items():
            new_name = head.parts[p]
            if p in written or p in staged or new_name == name:
                continue
            blob = self._fresh.get(new_name) if new_name else None
            if blob is None:
                local.parts.forget(p)
            else:
                part = self._parts.get(new_name) or Part.decode(blob, new_name)  # type: ignore[arg-type]
                renewed[p] = (new_name, blob, part)  # type: ignore[assignment]
        n_keys = sum(len(part) for _, _, part in renewed.values())
        present = None
        if n_keys * SCAN_FRACTION > len(local):
            # Many presence bits to take: one pass over the keys beats a lookup per key, and
            # the push that led here has usually just made that pass.
            present = scanned - dropped if scanned is not None else set(local.keys())
        for p, (name, blob, part) in renewed.items():
            local.presence.store(p, name, blob, part.keys, present, carried)
            self._parts[name] = part
        self._fresh.clear()
        local.clear_touched(set(local.touched) - still_pending if still_pending else None)
        local.sync()


def _check_serializer(local: LocalStore, remote: Remote, head: Head) -> None:
    ours = local.codec.name
    if head.value_serializer is not None and head.value_serializer != ours:
        # Adopting it would decode every cached value with the wrong serializer.
        raise SerializerMismatchError(
            f"{remote.location} now stores values with serializer "
            f"{head.value_serializer!r}, and {local.path} holds them with {ours!r}: the "
            "remote was rewritten with another serializer. Nothing was changed; open a new "
            "local path to read it"
        )

