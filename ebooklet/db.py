"""The database a user holds: a MutableMapping over a local file that syncs with a remote."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from datetime import datetime
from typing import Any

from . import limits
from .bulk import BulkReads
from .changes import Changes
from .errors import (
    ArgumentTypeError,
    ClosedError,
    DamagedLocalFileError,
    DeserializationError,
    EbookletError,
    InvalidArgumentError,
    ReadOnlyError,
    SerializationError,
)
from .limits import MAX_KEY_BYTES, RESERVED_KEYS, check_key, check_timestamp, check_value_size
from .local import LocalStore
from .remote import Remote, Stats
from .settings import now_us
from .sync import Replica
from .sync.diff import local_changes
from .sync.listing import lazy_rows
from .sync.metadata import current_metadata
from .whole import WholeDatabase

__all__ = ["EBooklet"]


#: Keys of at most this many characters are short enough whatever their UTF-8 (check_key).
_KEY_CHARS = MAX_KEY_BYTES // 4


def _timestamp(value: int | str | datetime | None) -> int | None:
    """Microseconds since the epoch from what booklet accepts as a timestamp."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidArgumentError(
                f"the timestamp {value!r} is not an ISO 8601 date and time, e.g. "
                "'2024-05-01T12:00:00+00:00'"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidArgumentError(
                "a datetime timestamp needs a timezone, e.g. datetime.now(timezone.utc)"
            )
        value = int(value.timestamp() * 1_000_000)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArgumentTypeError(
            "a timestamp is an int of microseconds since the epoch, an ISO 8601 string with a "
            f"timezone, or a timezone-aware datetime, not {type(value).__name__}"
        )
    return check_timestamp(value)


class EBooklet(BulkReads, WholeDatabase, MutableMapping):
    """A key-value database in a local booklet file, synced with a remote.

    Create it with :func:`ebooklet.open`. Keys are ``str``; values are anything the value
    serializer can encode. Reads and writes are local; keys that exist only on the remote
    are fetched on first access and cached. See :meth:`changes` for syncing.
    """

    def __init__(self, local: LocalStore, remote: Remote, replica: Replica, flag: str) -> None:
        self._local = local
        self._remote = remote
        self._replica = replica
        self._index = replica.index
        self._codec = local.codec
        self._writable = flag != "r"
        self._flag = flag
        # One lock for the database and its local store: every read, write, push and pull
        # runs under it, so threads see them happen one at a time.
        self._lock = local.lock
        self._closed = False

    # -- guards ----------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the database is closed; open it again with ebooklet.open()")

    def _check_write(self, what: str) -> None:
        self._check()
        if not self._writable:
            if not self._remote.writable:
                raise ReadOnlyError(
                    f"cannot {what}: {self._remote.location} is read-only (a public URL or a "
                    "connection without credentials); to write, open the database through an "
                    "S3Connection with credentials, or a folder remote"
                )
            raise ReadOnlyError(f"cannot {what}: the database was opened with flag='r'; open it with 'w'")

    _check_key = staticmethod(check_key)

    @property
    def writable(self) -> bool:
        """True when opened with flag 'w', 'c' or 'n'."""
        return self._writable

    @property
    def remote(self) -> str:
        """Where the remote database lives (never includes credentials)."""
        return self._remote.location

    @property
    def path(self) -> pathlib.Path:
        """The local data file."""
        return self._local.path

    @property
    def value_serializer(self) -> str:
        """How values are stored: a booklet serializer name (``"pickle"``, ``"orjson"``,
        ``"str"``, ...), ``"bytes"`` for raw bytes, or ``"custom:module.Class"``."""
        return self._codec.name

    @property
    def stats(self) -> Stats:
        """Requests made and bytes moved to and from the remote since the database was opened."""
        return self._remote.transport.stats

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"flag={self._flag!r}"
        return f"<EBooklet {str(self._local.path)!r} <-> {self._remote.location} ({state})>"

    # -- reading ---------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._check()
        self._check_key(key)
        with self._lock:
            found = self._local.get_raw(key)
            if found is not None:
                return self._decode_local(key, found[1])
            raw = self._replica.load(self._lazy([key])).get(key)
        if raw is None:
            raise KeyError(key)
        return self._codec.decode(raw, key)

    def _decode_local(self, key: str, raw: bytes) -> Any:
        """A value of the local file, however it is read (one key, many, or all)."""
        # Past the inflate limit is not damage: it is refused, never decoded another way.
        self._codec.check_inflation(raw, key)
        try:
            return self._codec.decode(raw, key)
        except DeserializationError as exc:
            if key not in self._local.touched and self._index.entry(key) is None:
                raise  # neither pending nor from the remote: written around the serializer
            # A pending value is restored from the journal when its bytes were damaged; a
            # cached one that does not decode is damage (DamagedLocalFileError).
            try:
                return self._local.get(key)
            except DamagedLocalFileError:
                raise
            except Exception:  # noqa: BLE001 - the serializer's own failure: say so
                raise exc from None

    def _lazy(self, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` that are on the remote and not fetched yet (under the lock)."""
        return [key for key in keys if self._index.lazy_entry(key) is not None]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        self._check()
        self._check_key(key)
        with self._lock:
            if key in self._local:
                return True
            return self._index.lazy_entry(key) is not None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return self._iter_keys()

    def keys(self) -> KeysView[str]:
        """Every key, as a view (``len``, ``in``, iteration): local ones, then remote ones not
        fetched yet, one index part at a time. Writes by other threads meanwhile do not stop
        an iteration; a push or pull meanwhile raises ChangedDuringIterationError."""
        return _Keys(self)

    def values(self) -> ValuesView[Any]:
        """Every value, as a view; remote values are fetched as for :meth:`items`."""
        return _Values(self)

    def items(self) -> ItemsView[str, Any]:
        """(key, value) pairs, as a view. Remote values not fetched yet are downloaded in the
        order they are stored on the remote, several requests at a time, and cached as they
        arrive. Writing to the local file while iterating (from this thread or another, a
        lazy read included) raises ChangedDuringIterationError (a RuntimeError), as booklet
        does; ``list(db.keys())`` is a list to iterate over instead."""
        return _Items(self)

    def _iter_keys(self) -> Iterator[str]:
        self._check()
        with self._lock:
            listed = dict.fromkeys(self._local.keys())
            base = self._index.base
        yield from listed
        # The remote's keys one index part at a time (see sync.listing.lazy_rows): a lazy read
        # by another thread meanwhile moves a key into the file, and it is still listed once.
        for part, rows in lazy_rows(self._index, base, listed, self._locked):
            yield from map(part.keys.__getitem__, rows)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self._check()
            yield

    def local_keys(self) -> Iterator[str]:
        """The keys whose values are in the local file: readable offline, without a request."""
        self._check()
        with self._lock:
            local_keys = list(self._local.keys())
        yield from local_keys

    def __len__(self) -> int:
        self._check()
        with self._lock:
            index = self._index
            base = index.base
            if base is None:
                return len(self._local)
            if self._local.external_edits:
                listed = set(self._local.keys())
                return len(listed) + sum(len(rows) for _, rows in lazy_rows(index, base, listed))
            n = base.n_keys
            for key in self._local.touched:
                n += (key in self._local) - (index.entry(key) is not None)
            return n

    def get_timestamp(self, key: str, include_value: bool = False, default: Any = None) -> Any:
        """The key's timestamp (microseconds since the epoch); with the value if asked."""
        self._check()
        self._check_key(key)
        with self._lock:
            ts = self._local.get_timestamp(key)
            entry = self._index.lazy_entry(key) if ts is None else None
        if ts is None:
            if entry is None:
                return default
            ts = entry.timestamp
        return (ts, self[key]) if include_value else ts

    def get_metadata(self, include_timestamp: bool = False) -> Any:
        """The database's metadata (a JSON-serialisable object), or None."""
        self._check()
        meta = current_metadata(self._index)
        if meta is None:
            return None
        return meta if include_timestamp else meta[0]

    # -- writing ---------------------------------------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        if self._closed or not self._writable:
            self._check_write("write")
        with self._lock:
            self._store(key, value)

    def set(self, key: str, value: Any, timestamp: int | str | datetime | None = None) -> None:
        """Set ``key`` to ``value``, stamped with ``timestamp`` (default: now)."""
        self._check_write("write")
        ts = _timestamp(timestamp)
        with self._lock:
            self._store(key, value, ts)

    def _store(self, key: str, value: Any, timestamp: int | None = None) -> None:
        """Every write of a value: the key checked, the value encoded here (so that what the
        file cannot hold is refused naming the key) and stored as it will be pushed."""
        # The hot path of local writes: the checks of check_key and check_value_size are
        # called only when a cheap test says they may fail.
        if type(key) is not str or key in RESERVED_KEYS or len(key) > _KEY_CHARS or not key.isascii():
            check_key(key)
        raw = self._codec.encode(value, key)
        if len(raw) > limits.MAX_VALUE_BYTES:
            check_value_size(key, len(raw))
        self._local.set_raw(key, raw, now_us() if timestamp is None else timestamp)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        self._check_write("write")
        if isinstance(other, Mapping):
            items = other.items()
        elif hasattr(other, "keys"):  # as dict.update: a dbm object, say, has keys() but no items()
            items = ((key, other[key]) for key in other.keys())
        else:
            items = other
        with self._lock:
            for key, value in items:
                self._store(key, value)
            for key, value in kwargs.items():
                self._store(key, value)

    def __delitem__(self, key: str) -> None:
        self._check_write("delete")
        self._check_key(key)
        with self._lock:
            if key not in self:
                raise KeyError(key)
            self._local.delete(key, now_us())

    def set_timestamp(self, key: str, timestamp: int | str | datetime) -> None:
        """Change the timestamp of an existing key (fetching it first if remote-only)."""
        self._check_write("set a timestamp")
        self._check_key(key)
        ts = _timestamp(timestamp)
        with self._lock:
            if key not in self._local:
                self[key]  # fetch it, or raise KeyError
            self._local.set_timestamp(key, ts)  # type: ignore[arg-type]

    def set_metadata(self, data: Any, timestamp: int | str | datetime | None = None) -> None:
        """Set the database's metadata; it is pushed with the next push."""
        self._check_write("set metadata")
        ts = _timestamp(timestamp)
        with self._lock:
            try:
                self._local.set_metadata(data, now_us() if ts is None else ts)
            except EbookletError:
                raise
            except (TypeError, ValueError) as exc:  # booklet encodes metadata as JSON (orjson)
                raise SerializationError(
                    f"the metadata ({type(data).__name__}) cannot be stored: it must be JSON "
                    f"(dicts with str keys, lists, str, numbers, bool, None); {exc}"
                ) from exc

    def clear(self) -> None:
        """Delete every key and the metadata, as booklet and ebooklet 0.5 do (locally; the
        deletes are pushed like any other change)."""
        self._check_write("clear")
        with self._lock:
            stamp = now_us()
            for key in list(self.keys()):
                self._local.delete(key, stamp)
            if current_metadata(self._index) is not None:
                self._local.set_metadata(None, stamp)

    def prune(self, timestamp: int | str | datetime | None = None, reindex: bool = False) -> int:
        """Reclaim the space of overwritten and deleted values in the local file.

        With ``timestamp``, also drop the local copies of values older than it that are
        unchanged since the last sync: they stay on the remote and are fetched again when read
        (local changes are never dropped). ``reindex`` is accepted for compatibility with
        ebooklet 0.5: booklet now resizes its index by itself. Returns how many entries were
        removed from the file.
        """
        self._check_write("prune")
        stamp = _timestamp(timestamp)
        with self._lock:
            dropped = 0 if stamp is None else self._drop_cached_before(stamp)
            return self._local.prune() + dropped

    def _drop_cached_before(self, stamp: int) -> int:
        if self._index.base is None:
            return 0
        changed = set(local_changes(self._index).changes)
        old = [
            key for key, ts in self._local.timestamps()
            if ts < stamp and key not in changed and self._index.entry(key) is not None
        ]
        # Presence bits are cleared, durably, before the values go: a key absent with its bit set
        # would read as deleted.
        self._index.forget_present(old)
        self._local.parts.flush()
        for key in old:
            self._local.drop(key)
        self._local.sync()
        return len(old)

    # -- syncing ---------------------------------------------------------------------------

    def changes(self, offline: bool = False) -> Changes:
        """Compare the local file with the remote; push or pull from the result.

        With ``offline=True``, :meth:`Changes.iter_changes` lists the pending local changes
        from the journal without a request (the remote is not checked, so remote changes and
        conflicts are not shown, nor edits made with plain booklet since the last sync).
        """
        self._check()
        return Changes(self._replica, self._lock, self._guard, self._writable, offline)

    def _guard(self, action: str | None) -> None:
        if action is None:
            self._check()
        else:
            self._check_write(action)

    def sync(self) -> None:
        """Make every change so far durable in the local file (no network)."""
        self._check()
        with self._lock:
            self._local.sync()

    def close(self) -> None:
        """Sync and close. Closing twice is harmless."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
            try:
                self._replica.end_session()
                self._local.close()
            finally:
                self._remote.transport.close()

    def __enter__(self) -> EBooklet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Keys(KeysView):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[str]:
        return self._mapping._iter_keys()  # type: ignore[attr-defined,no-any-return]


class _Values(ValuesView):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iter_values()  # type: ignore[attr-defined,no-any-return]


class _Items(ItemsView):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self._mapping._iter_items()  # type: ignore[attr-defined,no-any-return]
