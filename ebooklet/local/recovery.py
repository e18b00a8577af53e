"""Opening a local file: its sync state read and checked, its data file checked and repaired.

The journal is the source of truth for pending changes; the data file is a cache of the
journal plus the remote. Opening therefore:

* reads ``state.json`` (rebuilt from the journal's base record if it is lost or damaged),
  the journal and its mirror (pending deletes the journal lost are taken from the mirror);
* checks the data file whenever it may have changed behind ebooklet's back (a session that
  ended without syncing, a fingerprint that differs, damage noticed during a session): it
  walks booklet's layout (:func:`.layout.inspect`) and replays what the journal holds and
  the file lacks;
* rebuilds a damaged data file from its intact entries plus the journal, never leaving a
  moment without a file at the path: the rebuilt copy is written and fsynced beside it
  (``<name>.rebuild``), the damaged original is *linked* aside (``<name>.damaged-<time>``),
  the copy is renamed over the path, and the folder is fsynced;
* recovers a data file that is missing while the state folder holds pending changes: from a
  rebuilt copy left by an interrupted rebuild, or else from the journal (which holds every
  pending value; cached values are fetched again). Nothing is ever reset silently: when
  neither can be done, opening refuses, and the journal stays on disk.

Named crash points (:func:`.rebuild.crash_point`) let the tests kill the process between the
steps.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DamagedLocalFileError, LocalFileError
from ..files import aside_name, fsync_dir
from . import datafile, layout, rebuild
from .datafile import (
    INIT_N_BUCKETS,
    DataFile,
    builtin_serializer,
    lock_unreadable,
    serializer_arg,
)
from .legacy import read_legacy_touched
from .parts import PartCache
from .pending import PendingChanges
from .state import STATE_FILE, STATE_VERSION, SyncState, read_state, state_dir

logger = logging.getLogger("ebooklet.local")

@dataclass
class Opened:
    """What opening a local file produced."""

    data: DataFile
    state: SyncState
    pending: PendingChanges
    parts: PartCache
    created: bool = False
    recovered_from_crash: bool = False
    repairs: list[str] = field(default_factory=list)


def open_local(
    path: pathlib.Path,
    *,
    create: bool,
    new: bool,
    value_serializer: Any,
    timeout: float | None,
    read_only: bool,
    expected_keys: int,
    n_buckets: int | None,
    buffer_size: int | None,
) -> Opened:
    """Open (or create) the local file at ``path``; see the module docstring."""
    opener = _Opener(path, timeout, buffer_size)
    try:
        if new:
            return opener.create(value_serializer, expected_keys, n_buckets, replacing=True)
        if not path.exists():
            if opener.holds_changes():
                return opener.recover_missing(read_only)
            if not create:
                raise FileNotFoundError(f"the local file {path} does not exist")
            return opener.create(value_serializer, expected_keys, n_buckets, replacing=False)
        return opener.open_existing(read_only)
    except BaseException:
        opener.abandon()
        raise


def opened_before(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has been opened through ebooklet before: its sync state folder
    holds a state or a journal, and the data file is there or the folder holds changes
    that it would lose (then opening recovers the data file)."""
    p = pathlib.Path(path).absolute()
    folder = state_dir(p)
    names = (STATE_FILE, "journal.log", "mirror.log", "touched.log")
    if not any((folder / name).exists() for name in names):
        return False
    return p.exists() or holds_changes(folder)


def holds_changes(folder: pathlib.Path) -> bool:
    """Whether the sync state folder records anything a new data file would lose: a base, or
    pending changes (read without the data file's lock: a hint, checked again under it)."""
    probe = PendingChanges(folder)
    try:
        probe.load(None)
        if probe.journal.where or probe.mirror.where or probe.journal.damage or probe.journal.meta:
            return True
        legacy, _ = read_legacy_touched(folder / "touched.log")
        return bool(legacy) or (folder / STATE_FILE).exists() and probe.base is not None
    finally:
        probe.close()


def _note(path: pathlib.Path, repairs: list[str], text: str) -> None:
    """Report a repair: logged as a warning, and kept in ``repairs``. (A function, not a
    method of the opener, so that the units it is handed to do not keep the opener alive.)"""
    logger.warning("%s: %s", path, text)
    repairs.append(text)


class _Opener:
    """One open of a local file, while it runs."""

    def __init__(self, path: pathlib.Path, timeout: float | None, buffer_size: int | None) -> None:
        self.path = path
        self.folder = state_dir(path)
        self.timeout = timeout
        self.buffer_size = buffer_size
        self.repairs: list[str] = []
        self.pending = PendingChanges(self.folder)
        self.state = SyncState()
        self.parts = PartCache(self.folder / "parts", self.state, self._reporter())
        self.data: DataFile | None = None
        self.adopting = False  # a plain booklet file, never synced: the user's to repair
        self.legacy: dict[str, int | None] | None = None
        self.crashed = False

    def note(self, text: str) -> None:
        _note(self.path, self.repairs, text)

    def _reporter(self) -> Callable[[str], None]:
        return functools.partial(_note, self.path, self.repairs)

    def opened(self, created: bool = False) -> Opened:
        assert self.data is not None
        return Opened(self.data, self.state, self.pending, self.parts, created, self.crashed, self.repairs)

    def abandon(self) -> None:
        if self.data is not None:
            with contextlib.suppress(Exception):
                self.data.close()
        self.pending.close()

    def _open_data(self, flag: str, value_serializer: Any = None, n_buckets: int = 12007) -> DataFile:
        return DataFile(self.path, flag, value_serializer, n_buckets, self.timeout, self.buffer_size)

    def _make_dirs(self) -> None:
        self.folder.mkdir(exist_ok=True)
        (self.folder / "parts").mkdir(exist_ok=True)

    def _set_state(self, state: SyncState) -> None:
        self.state = state
        self.parts = PartCache(self.folder / "parts", state, self._reporter())

    def save(self) -> None:
        self.pending.save_state(self.state)

    # -- a new file ------------------------------------------------------------------------

    def create(
        self, value_serializer: Any, expected_keys: int, n_buckets: int | None, replacing: bool
    ) -> Opened:
        if n_buckets is None:
            default = datafile.DEFAULT_N_BUCKETS
            n_buckets = max(INIT_N_BUCKETS, int(expected_keys * 1.2)) if expected_keys else default
        self.data = self._open_data("n", value_serializer, n_buckets)
        if self.folder.exists():
            # Sync state left by an earlier file at this path (now held locked by us): it
            # describes data that is gone. Pending changes in it are kept aside, never lost.
            if replacing and self.holds_changes():
                aside = aside_name(self.folder, "replaced")
                os.replace(self.folder, aside)
                self.note(
                    f"flag='n' started a new file; the unpushed changes of the old one are kept in {aside}"
                )
            else:
                shutil.rmtree(self.folder)
        self._make_dirs()
        self._set_state(SyncState(codec=self.data.codec.name))
        self.save()
        fsync_dir(self.path.parent)
        return self.opened(created=True)

    def holds_changes(self) -> bool:
        return holds_changes(self.folder)

    # -- a missing data file ---------------------------------------------------------------

    def recover_missing(self, read_only: bool) -> Opened:
        """The data file is gone but its state folder holds changes: take a rebuilt copy an
        interrupted rebuild left, or rebuild the file from the journal."""
        leftover = self.path.with_name(self.path.name + ".rebuild")
        if leftover.exists() and not layout.inspect(leftover).problems:
            os.replace(leftover, self.path)
            fsync_dir(self.path.parent)
            self.note(
                f"the data file was missing; an interrupted repair had left {leftover}, now put in its place"
            )
            return self.open_existing(read_only)
        self._make_dirs()
        self.load_sync_state()
        journal = self.pending.journal
        if self.legacy is not None or journal.missing or journal.damage:
            raise DamagedLocalFileError(
                f"the local file {self.path} is missing, and its pending changes cannot all be "
                f"recovered from {self.folder} (the journal is missing or damaged). Put the data "
                f"file back if you moved it; or move the folder {self.folder} aside and open "
                "again to start from the remote (the changes that were never pushed are then "
                "only in the moved folder)."
            )
        name = self.state.codec or (self.state.head or {}).get("value_serializer")
        try:
            serializer = builtin_serializer(name)
        except LookupError:
            raise DamagedLocalFileError(
                f"the local file {self.path} is missing, and it cannot be rebuilt here from "
                f"its journal: its value serializer ({name or 'unknown'}) is not one of booklet's. "
                f"Put the data file back; its pending changes stay in {self.folder}."
            ) from None
        self._rebuild(None, "the data file was missing", serializer, INIT_N_BUCKETS)
        return self.opened()

    # -- an existing file ------------------------------------------------------------------

    def open_existing(self, read_only: bool) -> Opened:
        self._make_dirs()
        stale = self.path.with_name(self.path.name + ".rebuild")
        peek = read_state(self.folder)[0]
        calm = peek is not None and not (peek.unsynced or peek.damaged)
        lock = None
        unreadable = None
        try:
            try:
                self.data = self._open_data("r" if read_only and calm else "w")
            except DamagedLocalFileError as exc:
                if read_only and calm:
                    # e.g. booklet's mark of a file closed without close(): reading needs 'w'
                    with contextlib.suppress(DamagedLocalFileError):
                        self.data = self._open_data("w")
                if self.data is None:
                    unreadable = exc
                    lock = lock_unreadable(self.path)
            # An interrupted rebuild's copy, with the original still in place: redone if needed.
            stale.unlink(missing_ok=True)
            self.load_sync_state()
            if unreadable is not None:
                reason = str(unreadable.__cause__ or unreadable)
                self._refuse_if_unmanaged(reason)
                found = layout.inspect(self.path)  # booklet could not open it: what is intact?
                self._rebuild_damaged(found, "; ".join([reason, *found.problems]), lock)
                lock = None
            else:
                self.state.codec = self.opened_data.codec.name
                self.check_data_file()
        finally:
            if lock is not None:
                lock.close()
        if self.legacy is not None:
            # A one-time upgrade of a version-1 state, readers included: its touched.log is
            # what lists the pending changes, and it becomes journal records.
            if not self.opened_data.writable:
                self.opened_data.reopen("w")
            self.migrate()
        data = self.opened_data
        if self.repairs or data.writable and (
            self.state.version < STATE_VERSION or self.pending.journal.base is None
        ):
            if not data.writable:
                data.reopen("w")
            self.state.version = STATE_VERSION
            self.save()
        return self.opened()

    @property
    def opened_data(self) -> DataFile:
        assert self.data is not None
        return self.data

    # -- the sync state and the journal, read and checked ---------------------------------

    def load_sync_state(self) -> None:
        """Read state.json and the journals (under the data file's lock), rebuilding what
        is missing or damaged from the others."""
        state, problem = read_state(self.folder)
        if state is not None and state.version > STATE_VERSION:
            raise LocalFileError(
                f"{self.folder} was written by a newer ebooklet (local state version "
                f"{state.version}); upgrade ebooklet: pip install -U ebooklet"
            )
        pending = self.pending
        pending.load(state)
        rebuilt = False
        self.adopting = state is None and problem is None and pending.missing
        if state is None:
            if self.adopting:
                state = SyncState()  # a plain booklet file, adopted
            else:
                state = self._state_from_journal(problem)
                rebuilt = True
        self._set_state(state)
        if (lost := pending.load_metadata(state)) is not None:
            self.note(lost)
        if state.version < 2:
            self.legacy, complete = read_legacy_touched(self.folder / "touched.log")
            if not complete:
                self.note(
                    f"{self.folder / 'touched.log'} is damaged; the changes it listed are found "
                    "again by comparing the data file with the remote"
                )
                state.external_edits = True
            return
        problems = pending.problems(state)
        if problems or rebuilt:
            pending.recover_deletes()
            state.external_edits = True
        if problems:
            where = f" (kept as {pending.keep_damaged_journal()})" if pending.journal.damage else ""
            self.note(
                f"the journal {pending.journal.path} {' and '.join(problems)}{where}; pending "
                f"deletes were recovered from {pending.mirror.path}, and pending writes are found "
                "again by comparing the data file with the remote"
            )
        elif pending.mirror.damage or (pending.mirror.missing and not pending.journal.missing):
            self.note(f"{pending.mirror.path} was missing or damaged; rewritten from the journal")
        mirror_bad = bool(pending.mirror.damage or pending.mirror.missing)
        pending.adopt_base(state, rewrite=bool(problems or rebuilt or mirror_bad))

    def _state_from_journal(self, problem: str | None) -> SyncState:
        """A sync state rebuilt from the base the journal (or its mirror) records."""
        state_path = self.folder / STATE_FILE
        what = f"the sync state {state_path} is " + ("missing" if problem is None else f"damaged ({problem})")
        base = self.pending.base
        if base is None:
            raise DamagedLocalFileError(
                f"{what}, and the journal that could rebuild it ({self.pending.journal.path}) is "
                f"damaged too. Move the folder {self.folder} aside and open again: the data file is "
                "then compared with the remote as it is now and every difference becomes a local "
                "change (check changes() before pushing). Deletes made since the last push cannot "
                "be recovered that way; they are listed in mirror.log of the moved folder if it "
                "is intact."
            )
        state = SyncState()
        for name in ("etag", "remote_uuid", "location", "replace", "codec"):
            if base.get(name) is not None:
                setattr(state, name, base[name])
        if isinstance(base.get("head"), dict):
            state.set_head(base["head"])
        parts = PartCache(self.folder / "parts", state, self.note)
        for p, name in enumerate((state.head or {}).get("parts") or []):
            if name and parts.file(name).exists() and parts.file(name, ".bits").exists():
                state.parts[str(p)] = name
        if problem is not None:
            aside = aside_name(state_path, "damaged")
            os.replace(state_path, aside)
            what += f" (kept as {aside})"
        source = self.pending.journal.path if self.pending.journal.base else self.pending.mirror.path
        self.note(f"{what}; rebuilt it from {source}")
        return state

    def migrate(self) -> None:
        """Turn the touched.log of a version-1 state into journal records."""
        legacy, self.legacy = self.legacy or {}, None
        data = self.opened_data
        for key, deleted_at in legacy.items():
            if key in self.pending.touched:
                continue
            if deleted_at is None:
                got = data.get_raw(key)
                if got is not None:
                    self.pending.write(key, got[0], got[1])
            else:
                self.pending.delete(key, deleted_at)
        self.state.version = STATE_VERSION
        self.pending.adopt_base(self.state, rewrite=True)
        self.save()
        (self.folder / "touched.log").unlink(missing_ok=True)

    # -- the data file, checked ------------------------------------------------------------

    def check_data_file(self) -> None:
        """Check the data file if it may have changed behind ebooklet's back; repair it."""
        state, data = self.state, self.opened_data
        crashed = state.unsynced
        if not (crashed or state.damaged) and data.fingerprint() == state.fingerprint:
            return
        self.crashed = crashed
        state.external_edits = True
        found = layout.inspect(self.path)
        if found.problems:
            what = "; ".join(found.problems)
            self._refuse_if_unmanaged(what)
            if crashed:
                what = f"left inconsistent by an interrupted session: {what}"
            self._rebuild_damaged(found, what)
            return
        restored = rebuild.replay(data, self.pending, crashed, self.pending.synced(state))
        dropped = [k for k in state.damaged_keys if k not in self.pending.touched and k in data]
        state.damaged_keys = []
        if dropped and not data.writable:
            data.reopen("w")
        for key in dropped:
            if data.delete(key):
                restored.append(key)
        if dropped:
            self._zero_bits()
        state.damaged = False
        # The data file now holds what it should of every change in the journal (replayed
        # here, or edited behind ebooklet's back since): made durable and recorded, a crash
        # later in this session replays only what the session wrote, never those edits.
        if data.writable:
            data.sync()
        state.synced_journal = [self.pending.journal.id, self.pending.journal.durable]
        if restored and crashed:
            shown = ", ".join(repr(k) for k in restored[:10])
            self.note(
                f"the last session ended without syncing; {len(restored)} change"
                f"{'s' if len(restored) != 1 else ''} it had acknowledged ({shown}) were replayed "
                "from the journal into the data file"
            )
        elif restored:
            shown = ", ".join(repr(k) for k in restored[:10])
            self.note(
                f"{len(restored)} value{'s' if len(restored) != 1 else ''} did not match what was "
                f"written ({shown}); pending ones were restored from the journal, cached ones are "
                "fetched again"
            )

    def _refuse_if_unmanaged(self, reason: str) -> None:
        """A damaged booklet file that ebooklet never synced is the user's to deal with."""
        if self.adopting:
            raise DamagedLocalFileError(
                f"{self.path} is not a readable booklet file ({reason}). If it was damaged, move "
                "it aside and open again: ebooklet then fetches a fresh copy from the remote "
                "(changes that were never pushed are in the moved file only)."
            )

    def _rebuild_damaged(self, found: layout.Inspection, reason: str, lock: Any = None) -> None:
        serializer = found.value_serializer if found.header_ok else None
        if serializer is not None:
            arg = serializer_arg(serializer)
        else:
            name = self.state.codec or (self.state.head or {}).get("value_serializer")
            try:
                arg = builtin_serializer(name)
            except LookupError:
                raise DamagedLocalFileError(
                    f"{self.path} is damaged ({reason}) and cannot be rebuilt here: its value "
                    f"serializer ({name or 'unknown'}) is not one of booklet's. Move it aside and "
                    f"open again to fetch a fresh copy; its pending changes stay in {self.folder}."
                ) from None
        n_buckets = found.n_buckets if found.header_ok else INIT_N_BUCKETS
        self._rebuild(found if found.header_ok else None, reason, arg, n_buckets, lock)

    def _rebuild(
        self, found: layout.Inspection | None, reason: str, serializer: Any, n_buckets: int, lock: Any = None
    ) -> None:
        """Replace the data file by its intact entries (``found``) plus the journal's pending
        changes; keep a damaged original beside it."""
        lost = rebuild.write_copy(self.path, found, serializer, n_buckets, self.pending, self.note)
        if self.data is not None:
            self.data.close()
            self.data = None
        if lock is not None:
            lock.close()
        aside = rebuild.swap_in(self.path)
        self.data = self._open_data("w")
        self._zero_bits()
        state = self.state
        state.external_edits = True
        state.damaged = False
        state.damaged_keys = []
        state.unsynced = True
        state.version = STATE_VERSION
        self.save()
        if aside is None:
            self.note(
                f"{reason}; it was rebuilt from the journal of pending changes (the values it "
                "cached from the remote are fetched again when read)"
            )
        else:
            self.note(
                f"the data file was damaged ({reason}); it was rebuilt from its intact entries and "
                f"the journal of pending changes (keys it lost are fetched again from the remote); "
                f"the original is kept as {aside}"
            )
        if lost:
            self.note(
                f"the pending values of {len(lost)} key{'s' if len(lost) != 1 else ''} were damaged "
                f"in both the data file and the journal and are lost: "
                f"{', '.join(repr(k) for k in lost[:10])}"
            )

    def _zero_bits(self) -> None:
        """Forget which keys were seen in the data file: after a repair, a key missing from it
        may have been lost, not deleted. The next scan sets the bits of the keys present."""
        self.parts.zero()
        self.state.presence_reset = True
