"""LocalStore: the local side of one open database, as the sync layer sees it.

A thin facade over the units of this package: the data file (:mod:`.datafile`), the pending
changes (:mod:`.pending`), the stored index parts and presence bits (:mod:`.parts`,
:mod:`.presence`) and the
sync state (:mod:`.state`). Opening, checking and repairing are :mod:`.recovery`'s.

Every write and delete through :meth:`set_raw` and :meth:`delete` is recorded in the journal,
and handed to the operating system, before it returns; :meth:`sync` makes everything so far
durable (fsync of the data file, the journals, the presence bits and the state, and of their
folder). A process that ends without :meth:`close` is cleaned up at interpreter exit
(:func:`_sync_open_stores`); one that is killed loses nothing the journal holds, and the
next open replays it.
"""

from __future__ import annotations

import atexit
import logging
import os
import pathlib
import struct
import threading
import traceback
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from ..codec import Codec
from ..errors import DamagedLocalFileError, LocalFileBusyError
from ..settings import now_us
from . import recovery
from .datafile import DataFile
from .journal import Pending
from .parts import PartCache
from .pending import PendingChanges, disagrees
from .presence import Presence
from .state import SyncState, state_dir
from .writeback import WriteBack

logger = logging.getLogger("ebooklet.local")

#: User writes of values at least this long count towards writing the files back early.
_WRITE_BACK_VALUE = 64 << 10
#: What booklet raises while iterating a damaged file (UnicodeDecodeError is a ValueError).
_ITER_DAMAGE = (ValueError, IndexError, OverflowError, struct.error)

# Data files open in this process: resolved path -> the stores that hold it, with where each
# was opened and whether it only reads. A second open of a file here would otherwise wait for
# its own file lock until the timeout; readers may share a file, as across processes.
_open_here: dict[str, list[tuple[weakref.ref[LocalStore], str, bool]]] = {}
_open_lock = threading.Lock()


def _caller() -> str:
    """Where the user's code opened a file: the innermost frame outside ebooklet."""
    package = str(pathlib.Path(__file__).resolve().parent.parent)
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not str(pathlib.Path(frame.filename).resolve()).startswith(package):
            return f"{frame.filename}, line {frame.lineno}"
    return "ebooklet"


def _holders(key: str, store: LocalStore | None = None) -> list[tuple[LocalStore, str, bool]]:
    """The live stores of this process that hold ``key`` (other than ``store``)."""
    live = [(ref(), where, ro) for ref, where, ro in _open_here.get(key, [])]
    return [(s, where, ro) for s, where, ro in live if s is not None and s is not store]


def _claim(path: pathlib.Path, store: LocalStore, read_only: bool) -> str:
    key = str(path.resolve())
    with _open_lock:
        held = _holders(key)
        blocking = [h for h in held if not (read_only and h[2])]
        if blocking:
            raise LocalFileBusyError(
                f"{path} is already open in this process (opened at {blocking[0][1]}); use that "
                "database object, or close it before opening the file again"
            )
        _open_here[key] = [(weakref.ref(s), where, ro) for s, where, ro in held]
        _open_here[key].append((weakref.ref(store), _caller(), read_only))
    return key


def _claim_writing(key: str, store: LocalStore) -> None:
    """A reader of this process is about to write: refuse at once if another store of this
    process holds the file (it would wait for that store's lock until the timeout)."""
    with _open_lock:
        held = _holders(key, store)
        if held:
            raise LocalFileBusyError(
                f"{store.path} must be written (to cache a value or record sync state) but "
                f"another database object of this process has it open (opened at {held[0][1]}); "
                "close it first"
            )
        _open_here[key] = [(ref, where, ro and ref() is not store) for ref, where, ro in _open_here[key]]


def _release(key: str, store: LocalStore) -> None:
    with _open_lock:
        held = [(weakref.ref(s), where, ro) for s, where, ro in _holders(key, store)]
        if held:
            _open_here[key] = held
        else:
            _open_here.pop(key, None)


def _sync_open_stores() -> None:
    """At interpreter exit, sync every store left open (a script that ends without close()).
    The journal already holds every change; this saves the next open a check of the file."""
    with _open_lock:
        stores = [ref() for held in _open_here.values() for ref, _, _ in held]
    for store in stores:
        if store is None or not store.lock.acquire(timeout=1):
            continue  # another thread is inside it: the next open replays the journal
        try:
            store.sync()
        except Exception as exc:  # noqa: BLE001 - at exit, nothing can be raised to anyone
            logger.info("%s: could not sync at exit (%s); the next open replays the journal",
                        store.path, exc)
        finally:
            store.lock.release()




class LocalStore:
    """A booklet data file and its sync state, opened for one session.

    Parameters
    ----------
    path : path
        The data file.
    create : bool
        Create the data file if it does not exist (and nothing says it held changes).
    new : bool
        Start from an empty data file and empty sync state.
    value_serializer : str, class or None
        Used only when the data file is created.
    timeout : float or None
        Seconds to wait for another process to release the file.
    expected_keys : int
        How many keys a new data file will likely hold, to size booklet's hash index.
    n_buckets : int or None
        Hash buckets of a new data file (None: 1.2 times ``expected_keys``, or
        DEFAULT_N_BUCKETS when nothing is expected).
    buffer_size : int or None
        booklet's write buffer, in bytes (None: booklet's default).
    read_only : bool
        Open the data file for reading and switch to writing only when something must be
        written, such as a fetched value to cache.

    Opening checks what may have been damaged and repairs it (see :mod:`.recovery`);
    :attr:`repairs` lists what was found, one sentence each, and each is logged as a warning.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool,
        new: bool = False,
        value_serializer: Any = None,
        timeout: float | None = None,
        read_only: bool = False,
        expected_keys: int = 0,
        n_buckets: int | None = None,
        buffer_size: int | None = None,
    ) -> None:
        self.path = pathlib.Path(path).absolute()
        self.state_dir = state_dir(self.path)
        #: One lock for every operation on this store (the database's lock too).
        self.lock = threading.RLock()
        self._claim = _claim(self.path, self, read_only)
        try:
            opened = recovery.open_local(
                self.path, create=create, new=new, value_serializer=value_serializer,
                timeout=timeout, read_only=read_only, expected_keys=expected_keys,
                n_buckets=n_buckets, buffer_size=buffer_size,
            )
        except BaseException:
            _release(self._claim, self)
            raise
        self.data: DataFile = opened.data
        # Exit handlers run last registered first, and booklet's files are closed by the exit
        # handler of weakref.finalize, registered when the process made its first finalizer
        # (booklet's, at the latest just now): registered again after every open, this one
        # runs before it, while the files are still open.
        atexit.unregister(_sync_open_stores)
        atexit.register(_sync_open_stores)
        self.state: SyncState = opened.state
        self.pending: PendingChanges = opened.pending
        self.parts: PartCache = opened.parts
        #: The stored base parts and their presence bits, as the sync layer uses them.
        self.presence = Presence(self, self.parts, self._need_write)
        self.created = opened.created
        self.recovered_from_crash = opened.recovered_from_crash
        #: What opening found damaged and repaired, one sentence each.
        self.repairs: list[str] = opened.repairs
        self.touched = self.pending.touched
        self._unsynced = False
        self._saved = self.state.to_json()
        self._closed = False
        self.writeback = WriteBack(lambda: (self.data.path, self.pending.journal.path))

    has_state = staticmethod(recovery.opened_before)

    # -- the sync state --------------------------------------------------------------------

    @property
    def external_edits(self) -> bool:
        """True while the data file may hold changes that ``touched`` does not list.

        Set when the file changed behind ebooklet's back (plain booklet, a crash, a repair)
        and kept, across sessions, until a full comparison has recorded what changed.
        """
        return self.state.external_edits

    @external_edits.setter
    def external_edits(self, value: bool) -> None:
        self.state.external_edits = value

    @property
    def presence_reset(self) -> bool:
        """True after a repair forgot the presence bits, until the next full scan has set
        them again for the keys in the data file."""
        return self.state.presence_reset

    def presence_restored(self) -> None:
        self.state.presence_reset = False

    def save_state(self, data_synced: bool = False) -> None:
        self._need_write()
        self.pending.save_state(self.state, data_synced)
        self._saved = self.state.to_json()

    def refuse_if_damaged(self) -> None:
        """Refuse to compare a file found damaged in this session: reopening repairs it."""
        if self.state.damaged:
            raise DamagedLocalFileError(
                f"{self.path} was found damaged in this session; close the database and open it "
                "again to repair it before comparing it with the remote"
            )

    def _found_damaged(self, exc: BaseException, key: str | None = None) -> DamagedLocalFileError:
        """Record damage noticed during a session (checked and repaired at the next open)."""
        self.state.damaged = True
        if key is not None:
            self.state.damaged_keys.append(key)
        try:
            self.save_state()
        except Exception:  # noqa: BLE001 - the error below is what the caller must see
            logger.warning("%s: could not record the damage found in the sync state", self.path)
        return DamagedLocalFileError(
            f"{self.path} is damaged ({type(exc).__name__}: {exc}). Close the database and open it "
            "again: opening checks the file and rebuilds it from its intact entries, the journal "
            "of your pending changes, and the remote."
        )

    def _need_write(self) -> None:
        """Switch a read-only data file to writing (waits for other readers to close it)."""
        if not self.data.writable:
            _claim_writing(self._claim, self)
            self.data.reopen("w")

    def _before_write(self) -> None:
        """Every write to the data file: make it writable, and flag the state unsynced first."""
        self._need_write()
        if not self._unsynced:
            self._unsynced = True
            self.state.unsynced = True
            self.save_state()

    # -- the data file ---------------------------------------------------------------------

    @property
    def codec(self) -> Codec:
        return self.data.codec

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def _checked(self, items: Iterator[Any]) -> Iterator[Any]:
        """booklet's iteration, with what damage makes it raise turned into an ebooklet error."""
        try:
            yield from items
        except _ITER_DAMAGE as exc:
            raise self._found_damaged(exc) from exc

    def keys(self) -> Iterator[str]:
        return self._checked(self.data.keys())

    def timestamps(self) -> Iterator[tuple[str, int]]:
        return self._checked(self.data.timestamps())

    def raw_items(self) -> Iterator[tuple[str, int, bytes]]:
        """(key, timestamp, serialized value) of every key in the data file."""
        return self._checked(self.data.raw_items())

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self.data.get(key, default)
        except (KeyError, UnicodeEncodeError):
            raise
        except Exception as exc:
            # The stored bytes did not decode: check them against the journal when the key
            # is pending (and restore them); otherwise they are damaged or foreign.
            got = self.get_raw(key)
            if got is not None and self.disagrees(key, *got) and self.restore(key):
                return self.data.get(key, default)
            if got is not None and key in self.touched:
                raise  # the bytes are the ones written: the serializer's own failure
            raise self._found_damaged(exc, key) from exc

    def get_timestamp(self, key: str) -> int | None:
        return self.data.get_timestamp(key)

    def get_raw(self, key: str) -> tuple[int, bytes] | None:
        return self.data.get_raw(key)

    def get_metadata(self) -> tuple[Any, int] | None:
        return self.data.get_metadata()

    # -- user changes: journal first, then the data file ----------------------------------

    def set(self, key: str, value: Any, timestamp: int | None = None) -> None:
        """A user write."""
        raw = self.data.dumps(value)
        if type(raw) is not bytes and isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        self.set_raw(key, raw, now_us() if timestamp is None else timestamp)

    def set_raw(self, key: str, raw: bytes, timestamp: int) -> None:
        """A user write of an already serialized value."""
        # The hot path of local writes: kept to what each write must do.
        if not self._unsynced or not self.data.writable:
            self._before_write()
        self.pending.write(key, timestamp, raw)
        self.data.put(key, raw, timestamp)
        if len(raw) >= _WRITE_BACK_VALUE:  # the journal's copy and the data file's:
            self.writeback.wrote(2 * len(raw))

    def set_timestamp(self, key: str, timestamp: int) -> None:
        self._before_write()
        got = self.get_raw(key)
        if got is not None:
            self.pending.write(key, timestamp, got[1])
        self.data.set_timestamp(key, timestamp)

    def delete(self, key: str, deleted_at: int) -> None:
        """A user delete of a key that may or may not be in the data file."""
        self._before_write()
        self.pending.delete(key, deleted_at)
        self.data.delete(key)

    def set_metadata(self, data: Any, timestamp: int) -> None:
        self._before_write()
        stored = self.data.set_metadata(data, timestamp)  # as booklet encoded it: plain JSON
        self.pending.set_metadata(stored, timestamp)

    def prune(self) -> int:
        self._before_write()
        return self.data.prune()

    # -- changes that are not the user's ---------------------------------------------------

    def put_raw(self, key: str, raw: bytes, timestamp: int) -> None:
        """Store a value that came from the remote (not a user change)."""
        self._before_write()
        self.data.put(key, raw, timestamp)

    def put_raw_many(self, items: Iterable[tuple[str, bytes, int]], nbytes: int = 0) -> None:
        """:meth:`put_raw` for many ``(key, value, timestamp)`` (``nbytes`` of values), in order."""
        self._before_write()
        self.data.put_many(items)
        self.writeback.wrote(nbytes)

    def drop(self, key: str) -> None:
        """Remove a cached copy (not a user change), or the value of a pending change that is
        being given up (a discard, a pull that takes the remote's side)."""
        self._before_write()
        if key in self.touched and self.state.synced_journal is not None:
            # The data file loses a change the journal still holds, and no record says so:
            # until the next sync, the open after a crash must replay every change (or this
            # one would read as deleted with plain booklet, a delete nobody asked for).
            self.state.synced_journal = None
            self.save_state()
        self.data.delete(key)

    def record_write(self, key: str, timestamp: int, raw: bytes) -> None:
        """Record a change found in the data file (an edit made behind ebooklet's back)."""
        self._need_write()
        self.pending.write(key, timestamp, raw)

    def record_delete(self, key: str, deleted_at: int) -> None:
        """Record a key found missing from the data file: an inferred delete."""
        self._need_write()
        self.pending.delete(key, deleted_at, inferred=True)

    def clear_touched(self, keys: Iterable[str] | None = None) -> None:
        """Forget pending changes (all, or those given) once they are pushed or discarded."""
        self._need_write()
        self.pending.forget(keys, self.state)

    # -- the journal of pending changes ----------------------------------------------------

    def pending_change(self, key: str) -> Pending | None:
        """The journal's record of a pending change to ``key``."""
        return self.pending.get(key)

    def pending_batches(self) -> Iterator[list[tuple[str, int, bytes | None, int]]]:
        """Every pending change as ``(key, timestamp, value, flags)`` (value None for a
        delete; flag INFERRED for a delete found rather than asked for), streamed from the
        journal in one sequential read, a batch at a time. The journal is the record of what
        was acknowledged; the data file holds the same bytes unless it was damaged or edited
        behind ebooklet's back, which a full comparison settles first (see
        sync.diff.local_changes)."""
        return self.pending.batches()

    def inferred_delete(self, key: str) -> bool:
        """Whether ``key`` is pending as a delete that no one asked ebooklet for: the key was
        found missing from the data file (deleted with plain booklet, or lost)."""
        return self.pending.inferred_delete(key)

    def disagrees(self, key: str, timestamp: int, raw: bytes) -> bool:
        """Whether the data file's value of a pending write is damaged: not the bytes the
        journal recorded, nor a later edit."""
        if key not in self.touched or self.touched[key] is not None:
            return False
        entry = self.pending.get(key)
        return entry is not None and not entry.deleted and disagrees(entry, timestamp, raw)

    def restore(self, key: str) -> tuple[int, bytes] | None:
        """Put the journal's value of a pending write back into the data file; return its
        (timestamp, value), or None when the journal's copy is damaged too."""
        entry = self.pending.get(key)
        if entry is None or entry.value is None:
            return None
        self._before_write()
        self.data.put(key, entry.value, entry.timestamp)
        logger.warning("%s: the value of %r was damaged; restored it from the journal", self.path, key)
        return entry.timestamp, entry.value

    # -- durability ------------------------------------------------------------------------

    def sync(self) -> None:
        """Make every change so far durable, and record the state that goes with it."""
        with self.lock:
            if self._closed:
                return
            if not self.data.writable:
                clean = not (self.pending.dirty or self.parts.dirty or self._unsynced)
                if clean and self.state.to_json() == self._saved:
                    return  # a reader that changed nothing writes nothing
                self._need_write()
            self.data.sync()
            self.pending.flush()
            self.pending.compact_if_wasteful(self.state)
            self.parts.flush()
            self.state.fingerprint = self.data.fingerprint()
            self.state.unsynced = False
            self._unsynced = False
            self.save_state(data_synced=True)
            self.parts.sweep()

    def write_back(self) -> None:
        """Start writing the data file and the journal to the disk (see :mod:`.writeback`)."""
        with self.lock:
            if not self._closed and self.data.writable:
                self.data.flush()  # booklet's buffered writes, to the operating system
                self.writeback.start()

    def close(self) -> None:
        with self.lock:
            try:
                self.sync()
            finally:
                self.abandon()

    def abandon(self) -> None:
        """Close without syncing (used when opening failed half way)."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.writeback.join()
            try:
                self.data.close()
            finally:
                self.pending.close()
                _release(self._claim, self)
