"""What changed: the local file against the base, the base against the current remote, and
the three-way comparison of both.

The results are values (:class:`LocalDiff`, :class:`ChangeSet`); nothing here writes to the
remote. :func:`local_changes` records what a scan found about edits made behind ebooklet's
back, so that the next comparison needs no scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from ..format import Entry, Head, hash_in, part_of, same_value, value_hash
from ..results import Change, ChangeKind
from ..settings import now_us
from .index import EMPTY, SCAN_FRACTION, BaseIndex, check_count

logger = logging.getLogger(__name__)




class LocalChange(NamedTuple):
    """A key's local state where it differs from the base: its serialized value (None for a
    delete), its timestamp (of the deletion for deletes, when known) and its content hash."""

    raw: bytes | None
    timestamp: int | None
    hash: bytes | None


@dataclass
class LocalDiff:
    """The local changes against the base, and every key of the data file when a full scan
    listed them (a push reuses that list for the presence bits)."""

    changes: dict[str, LocalChange] = field(default_factory=dict)
    scanned: set[str] | None = None


@dataclass
class ChangeSet:
    """Both sides' changes since the base: ``local`` (key -> LocalChange) and ``remote``
    (key -> its new entry, None when deleted)."""

    local: dict[str, LocalChange]
    remote: dict[str, Entry | None]

    @property
    def both(self) -> set[str]:
        return set(self.local) & set(self.remote)


def same(lc: LocalChange, rc: Entry | None) -> bool:
    """Both sides made the same change (same bytes, or both deleted)."""
    if lc.raw is None:
        return rc is None
    return rc is not None and same_value(lc.raw, lc.hash, rc.hash, rc.segment)  # type: ignore[arg-type]


def local_changes(index: BaseIndex) -> LocalDiff:
    """Keys whose local state differs from the base.

    The data file is checked on the way: a pending write whose bytes are not the ones the
    journal recorded is restored from the journal, and, after edits behind ebooklet's back, a
    cached value whose bytes differ from the base's under the base's own timestamp is damage
    (booklet stamps every write), so it is dropped and fetched again instead of pushed.
    """
    local = index.local
    local.refuse_if_damaged()
    base = index.base
    external = local.external_edits
    # Something wrote to the file behind ebooklet's back (plain booklet, or a session that
    # ended without syncing): every key is a candidate. A linear scan reads the whole file
    # faster than a lookup per key once many keys are candidates.
    scan = external or len(local.touched) * SCAN_FRACTION > len(local)
    diff = LocalDiff()
    changes = diff.changes
    damaged: list[str] = []  # cached values that are not the base's bytes
    suspect: list[str] = []  # pending writes that are not the journal's bytes
    if scan:
        # One pass: read, compare with the base, hash what may have changed.
        parts = index.all_parts(base) if base is not None else {}
        bits = base.part_bits if base is not None else 0
        touched = local.touched
        wanted = None if external else touched
        scanned = []
        new = LocalChange
        for key, ts, raw in local.raw_items():
            scanned.append(key)
            if wanted is not None and key not in wanted:
                continue
            entry = parts[part_of(key, bits)].get(key) if parts else None
            mine = key in touched
            if entry is not None and ts == entry.timestamp and not mine:
                if external and hash_in(entry.segment, raw) != entry.hash:
                    damaged.append(key)
                continue
            if mine and touched[key] is None and local.disagrees(key, ts, raw):
                suspect.append(key)
                continue
            h = value_hash(raw)
            if entry is None or not same_value(raw, h, entry.hash, entry.segment):
                changes[key] = new(raw, ts, h)
        diff.scanned = set(scanned)
        rest = [key for key in touched if key not in diff.scanned]
    else:
        rest = list(local.touched)
    if damaged:
        _drop_damaged(index, damaged)
        diff.scanned -= set(damaged)  # type: ignore[operator]
    # Touched keys the scan did not see (deleted ones), or all of them without a scan.
    by_part: dict[int, list[str]] = {}
    for key in rest + suspect:
        by_part.setdefault(part_of(key, base.part_bits) if base else 0, []).append(key)
    parts = index.parts(base, by_part) if base else {}
    checked = set(suspect)
    for p, keys in by_part.items():
        part = parts.get(p, EMPTY)
        for key in keys:
            got = None if scan and key not in checked else local.get_raw(key)
            change = _compare(index, key, got, part.get(key), external)
            if change is not None:
                changes[key] = change
    if external and base is not None:
        assert diff.scanned is not None
        reset = local.presence_reset
        for p in local.parts.stored():
            for row, key in enumerate(index.part(base, p).keys):
                if key in diff.scanned:
                    # Seen now. Its bit may be clear although it was fetched: bits set since
                    # the last sync die with a killed process (and a repair forgets them all).
                    if not index.present(p, row):
                        local.presence.mark(p, row)
                elif reset:
                    # After a repair, a key missing from the data file may have been lost:
                    # only the keys present now count as seen.
                    continue
                elif index.present(p, row) and key not in local.touched:
                    # Deleted with plain booklet: seen in the data file once, absent now.
                    changes[key] = LocalChange(None, None, None)
        if reset:
            local.presence_restored()
    if external:
        # Record what the scan found, so the next sync needs no scan to know it. Deletes
        # found this way are marked as inferred (the push's max_delete guard counts them).
        for key, change in changes.items():
            pending = local.pending_change(key)
            if change.raw is None:
                if pending is None or not pending.deleted:
                    local.record_delete(key, now_us())
            elif pending is None or (pending.timestamp, pending.value) != (change.timestamp, change.raw):
                local.record_write(key, change.timestamp, change.raw)  # type: ignore[arg-type]
        # A pending change that the file no longer shows (a plain-booklet edit put back the
        # base's value, or deleted a key the base does not hold) is no change at all: forget
        # it, so that a push, which reads the journal, never sends it.
        gone = [key for key in local.touched if key not in changes]
        if gone:
            local.clear_touched(gone)
        local.external_edits = False
        local.sync()
    return diff


def _drop_damaged(index: BaseIndex, keys: list[str]) -> None:
    """Drop cached values whose bytes are not the base's: they read as not fetched again
    (their presence bits go first, durably, so that they never look deleted)."""
    local = index.local
    logger.warning(
        "%s: %d cached value(s) were damaged (%s); they are fetched again from the remote",
        local.path, len(keys), ", ".join(repr(k) for k in keys[:10]),
    )
    index.forget_present(keys)
    local.parts.flush()
    for key in keys:
        local.drop(key)


def _compare(
    index: BaseIndex, key: str, got: tuple[int, bytes] | None, entry: Entry | None, external: bool = False
) -> LocalChange | None:
    local = index.local
    touched = local.touched
    if key in touched and touched[key] is None:
        # A pending write: the data file must hold what the journal says was written. Missing
        # without edits behind ebooklet's back, or other bytes, it was damaged: restore it.
        if got is None:
            if not external:
                got = local.restore(key)
        elif local.disagrees(key, *got):
            got = local.restore(key)
            if got is None:
                return None  # lost in the journal too (logged): never push damage
    if got is None:
        if entry is not None and key in touched:
            return LocalChange(None, touched[key], None)
        return None
    ts, raw = got
    if entry is not None and ts == entry.timestamp and key not in touched:
        return None
    h = value_hash(raw)
    if entry is not None and same_value(raw, h, entry.hash, entry.segment):
        return None
    return LocalChange(raw, ts, h)


def remote_changes(index: BaseIndex, base: Head | None, current: Head | None) -> dict[str, Entry | None]:
    """Keys whose entry differs from ``base`` to ``current`` (None: deleted)."""
    if current is None:
        return {}
    if base is not None and base.uuid != current.uuid:
        base = None
    if base is not None and base.commit_id == current.commit_id:
        return {}
    if base is not None and base.part_bits == current.part_bits:
        changed = [p for p in range(len(current.parts)) if current.parts[p] != base.parts[p]]
        old, new = index.parts(base, changed), index.parts(current, changed)
        pairs = [(old[p], new[p]) for p in changed]
        # The parts that did not change hold as many keys in both heads.
        counted = base.n_keys + sum(len(new[p]) - len(old[p]) for p in changed)
        check_count(current, counted, index.remote.location)
    else:
        pairs = [(index.merged(base), index.merged(current))]
    out: dict[str, Entry | None] = {}
    for old_part, new_part in pairs:
        for key, entry in new_part.items():
            before = old_part.get(key)
            # Content decides, as for local changes: new timestamps on the same bytes are
            # not a change.
            if before is None or before.hash != entry.hash:
                out[key] = entry
        for key in old_part.keys:
            if key not in new_part:
                out[key] = None
    return out


def _kind(in_base: bool, present: bool) -> ChangeKind:
    if not present:
        return "deleted"
    return "modified" if in_base else "added"


def three_way(index: BaseIndex, current: Head | None, local: dict[str, LocalChange]) -> list[Change]:
    """One :class:`Change` per key that differs, sorted by key."""
    if index.replacing:
        # The first push replaces the remote: everything there that is not local goes.
        remote_keys = set(index.merged(current).keys)
        out = [Change(k, "local", "added", None, c.timestamp, None) for k, c in local.items() if c.raw]
        out += [Change(k, "local", "deleted", None, None, None) for k in remote_keys - set(local)]
        return sorted(out, key=lambda c: c.key)
    base = index.base
    remote = remote_changes(index, base, current)
    out = []
    for key in sorted(set(local) | set(remote)):
        in_base = base is not None and key in index.part(base, part_of(key, base.part_bits))
        lc = local.get(key)
        rc = remote.get(key)
        lkind = _kind(in_base, lc.raw is not None) if lc is not None else None
        rkind = _kind(in_base, rc is not None) if key in remote else None
        rts = rc.timestamp if rc is not None else None
        if lc is not None and key in remote:
            out.append(Change(key, "both", lkind, rkind, lc.timestamp, rts, not same(lc, rc)))
        elif lc is not None:
            out.append(Change(key, "local", lkind, None, lc.timestamp, None))
        else:
            out.append(Change(key, "remote", None, rkind, None, rts))
    return out
