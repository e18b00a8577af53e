"""The transport interface every remote implements.

A transport stores immutable byte objects under string keys, plus the few mutable objects
(the head, the lease) that are only ever replaced through a conditional write. Each method
states its contract in its docstring, and :class:`ebooklet.testing.TransportTests` checks
those contracts against a backend. A transport translates its own failures into
:mod:`ebooklet.errors`.

What a transport can do is declared on its class, not discovered by trying: ``writable``,
``delete_batch_size``, :meth:`Transport.supports_conditional_writes` and
:meth:`Transport.fallback_lock`. Transports do not count their requests: one wrapper,
:class:`~ebooklet.remote.counting.CountingTransport`, counts every call made through it.
Wrappers subclass :class:`~ebooklet.remote.wrapper.WrapperTransport`, which forwards every
method here.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from ..errors import InvalidArgumentError, ReadOnlyError, RemoteError

#: The suffix of a database's object prefix (``{db_key}.ebooklet/``).
PREFIX_SUFFIX = ".ebooklet"


def check_db_key(db_key: str) -> None:
    """Refuse a database key that lies inside another database's objects.

    Everything under ``X.ebooklet/`` belongs to the database ``X``: its garbage collection and
    ``delete_remote`` may remove it. A key with a component ending in ``.ebooklet`` would put
    one database under another's prefix (or its own objects where another's folder is).
    """
    if any(part.endswith(PREFIX_SUFFIX) for part in db_key.split("/")):
        raise InvalidArgumentError(
            f"the database key {db_key!r} has a component ending in {PREFIX_SUFFIX!r}: that is "
            "where another database keeps its objects, and its garbage collection would delete "
            "this one. Choose a key without it"
        )


@dataclass(frozen=True)
class Update:
    """Put mode: replace the object only if its current ETag is still ``etag``."""

    etag: str


#: How a put treats an existing object: ``"create"`` fails if it exists, ``"overwrite"``
#: always writes, ``Update(etag)`` writes only over that exact version.
PutMode = Literal["create", "overwrite"] | Update


@dataclass(frozen=True)
class Blob:
    """An object's bytes with the ETag of the version they came from.

    ``size`` is the whole object's size in bytes when ``data`` may hold only its start
    (:meth:`Transport.get_start`), None when ``data`` is the whole object.
    """

    data: bytes
    etag: str
    size: int | None = None


@dataclass(frozen=True)
class ObjectStat:
    """An object's size and when the store last wrote it, by the store's own clock.

    ``modified`` is seconds since the epoch as the store keeps it (``LastModified`` on S3, the
    file's mtime on a folder); ``now`` is the store's clock when it answered, where the answer
    carries it (:meth:`Transport.stat`), else None. A client's own clock never enters either.
    """

    key: str
    size: int
    modified: float
    now: float | None = None


@dataclass(frozen=True)
class Upload:
    """An object upload in parts that was started and neither completed nor aborted: its
    parts take space (and are billed) until it is aborted. ``initiated`` is seconds since the
    epoch by the store's clock."""

    key: str
    upload_id: str
    initiated: float


class FallbackLock(Protocol):
    """A lock for stores without conditional writes (see :meth:`Transport.fallback_lock`)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds; False if it was not taken."""

    def release(self) -> None:
        """Give the lock up."""


class Transport(abc.ABC):
    """Byte objects under string keys.

    A new kind of store implements the five abstract methods and declares what it can do
    with the class attributes and the two capability methods below; the defaults describe
    a writable store whose conditional writes are atomic.

    Attributes
    ----------
    description : str
        Where the objects live, for messages; never contains credentials.
    knows_ages : bool
        True when :meth:`list_stats`, :meth:`stat` and :meth:`store_time` answer with the
        store's clock. Garbage collection refuses to run without it: it judges an object's
        age by the store's clock alone.
    writable : bool
        False for read-only transports (public URLs): :meth:`put`, :meth:`delete` and
        :meth:`list` raise :class:`~ebooklet.errors.ReadOnlyError` without a request.
    delete_batch_size : int
        How many keys one request of :meth:`delete` removes at most: 1 when every key is a
        request of its own. Request counts are computed from it.
    """

    description: str = ""
    writable: bool = True
    delete_batch_size: int = 1
    knows_ages: bool = False

    @abc.abstractmethod
    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        """Return the whole object and the ETag of that version.

        The ETag is an opaque string that changes whenever the content does, and is the one
        :meth:`put` returned when it wrote that version.

        Parameters
        ----------
        key : str
            The object's key.
        if_none_match : str, optional
            An ETag this transport returned earlier. When the object still has it, return
            None instead of the body: one request that moves no body.

        Returns
        -------
        Blob or None

        Raises
        ------
        RemoteNotFoundError
            The object does not exist (with or without ``if_none_match``).
        """

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        """Return at most the first ``length`` bytes of the object, its ETag, and its whole size.

        For objects that should be small (the head) but may be anything: an object of any
        size costs one request that moves at most ``length`` bytes, and ``Blob.size`` tells
        whether ``data`` is the whole object (``size == len(data)``). When it is not, the
        ETag may be empty (a transport that computes ETags from the content does not read the
        rest to compute it), and ``if_none_match`` may be ignored.

        The default reads the whole object with :meth:`get` and cuts it: a transport that
        can read a range of an object (all built-in ones) overrides it to bound what it
        reads.

        Parameters
        ----------
        key : str
        length : int
            At least 1.
        if_none_match : str, optional
            As for :meth:`get`: None comes back when the object still has this ETag.

        Raises
        ------
        RemoteNotFoundError
            The object does not exist.
        """
        blob = self.get(key, if_none_match)
        if blob is None:
            return None
        return Blob(blob.data[:length], blob.etag, len(blob.data))

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return exactly ``length`` bytes of the object, starting at byte ``start``.

        A ``length`` of 0 returns ``b""`` without a request, whether or not the object
        exists.

        Raises
        ------
        RemoteNotFoundError
            The object does not exist.
        RemoteFormatError
            The object ends before ``start + length``: never a short read.
        """

    @abc.abstractmethod
    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        """Store ``data`` under ``key`` atomically and return the new version's ETag.

        A reader sees the old object or the new one, never a part (a transport may upload a
        large object in parts, as S3's multipart upload does: the object appears whole when the
        last request completes it, and an upload that fails is aborted; one interrupted for
        good is left to :meth:`uploads`). ``"create"`` and
        ``Update(etag)`` are compare-and-swap operations: of several writers racing on one
        key with the same condition exactly one succeeds (when
        :meth:`supports_conditional_writes` is True).

        Parameters
        ----------
        key : str
        data : bytes
            May be empty.
        mode : PutMode
            ``"overwrite"`` always writes; ``"create"`` writes only if the object is absent;
            ``Update(etag)`` writes only if the object exists with that ETag.

        Raises
        ------
        PreconditionFailed
            The condition did not hold, and nothing was written. ``exists`` is True for a
            ``"create"`` over an existing object, False for an ``Update`` of an absent one when
            the store can tell, None otherwise.
        ReadOnlyError
            The transport is read-only.
        """

    @abc.abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Delete the objects.

        Idempotent: keys that do not exist are ignored, and deleting nothing makes no request.

        Raises
        ------
        ReadOnlyError
            The transport is read-only.
        """

    @abc.abstractmethod
    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Yield ``(key, size in bytes)`` of every object whose key starts with ``prefix``, in
        no given order.

        ``prefix`` is a plain string prefix, not a folder: ``"a"`` matches ``"a/b"`` and
        ``"ab"``. Objects being written (temporary files) are not listed.

        Raises
        ------
        ReadOnlyError
            The transport is read-only (it cannot list).
        """

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        """Yield an :class:`ObjectStat` of every object whose key starts with ``prefix``, in no
        given order (as :meth:`list_sizes`), each with the time the store last wrote it.

        Raises
        ------
        RemoteError
            The store cannot tell (``knows_ages`` is False; the default).
        """
        raise self._no_ages()

    def stat(self, key: str) -> ObjectStat:
        """The object's size and write time, and the store's clock when it answered (``now``).

        Raises
        ------
        RemoteNotFoundError
            The object does not exist.
        RemoteError
            The store cannot tell (``knows_ages`` is False; the default).
        """
        raise self._no_ages()

    def store_time(self) -> float:
        """The store's clock now, in seconds since the epoch (the clock of :meth:`stat`).

        Raises
        ------
        RemoteError
            The store cannot tell (``knows_ages`` is False; the default).
        """
        raise self._no_ages()

    def _no_ages(self) -> RemoteError:
        return RemoteError(
            f"{self.description} cannot tell when its objects were written by its own clock, so "
            "ebooklet cannot judge which objects are old enough to collect"
        )

    def put_requests(self, size: int, mode: PutMode = "overwrite") -> int:
        """How many requests :meth:`put` of ``size`` bytes makes (more than one when the
        store takes large objects in parts); counted by
        :class:`~ebooklet.remote.counting.CountingTransport`."""
        return 1

    def uploads(self, prefix: str) -> Iterator[Upload]:
        """Yield the unfinished uploads in parts (see :meth:`put`) of keys that start with
        ``prefix``. The default has none: a store that uploads in one request leaves none."""
        return iter(())

    def abort_upload(self, upload: Upload) -> None:
        """Abort an unfinished upload and free its parts (nothing when it is gone already)."""
        raise RemoteError(f"{self.description} has no uploads in parts to abort")

    def list(self, prefix: str) -> Iterator[str]:
        """The keys of :meth:`list_sizes`."""
        for key, _size in self.list_sizes(prefix):
            yield key

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        """Copy an object to ``target_key`` in ``target`` inside the store, without downloading it.

        Returns
        -------
        bool
            True when the copy is done: ``target_key`` holds the same bytes. False when this
            store cannot copy to ``target`` directly; nothing was written, and the caller
            downloads and uploads instead. The default declines.

        Raises
        ------
        RemoteNotFoundError
            The copy was attempted and the source object does not exist.
        """
        return False

    def supports_conditional_writes(self, scratch_prefix: str) -> bool:
        """Whether :meth:`put` honours ``"create"`` and ``Update(etag)`` atomically.

        True unless the class says otherwise, since :meth:`put`'s contract requires it. A
        store that may silently ignore the conditions (some S3-compatible servers do) finds
        out by writing and deleting a test object under ``scratch_prefix``, once, and
        remembers the answer. Read-only transports answer False.

        Parameters
        ----------
        scratch_prefix : str
            Where a probe may write: a prefix the caller may write to and that holds nothing
            else of importance (ebooklet passes the database's own prefix).

        Raises
        ------
        RemoteError
            A probe was needed and failed for another reason than the conditions (for
            instance the credentials were refused); nothing was cached.
        """
        return True

    def fallback_lock(self, key: str) -> FallbackLock:
        """A lock named ``key`` for serialising writers when conditional writes are not supported.

        Raises
        ------
        RemoteError
            The store offers no such lock (the default).
        """
        raise RemoteError(
            f"{self.description} has no lock for stores without conditional writes; ebooklet "
            "cannot push to it safely"
        )

    def close(self) -> None:  # noqa: B027 - most transports hold nothing to release
        """Release connections. The transport is not used afterwards."""


class ReadOnlyTransport(Transport):
    """A transport that can only read; every write raises ReadOnlyError."""

    writable = False

    def _refuse(self) -> ReadOnlyError:
        return ReadOnlyError(
            f"{self.description} is read-only; to write, open the database with an "
            "S3Connection (credentials) or a local folder remote"
        )

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        raise self._refuse()

    def delete(self, keys: list[str]) -> None:
        raise self._refuse()

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        raise self._refuse()

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        raise self._refuse()

    def supports_conditional_writes(self, scratch_prefix: str) -> bool:
        return False

    def fallback_lock(self, key: str) -> FallbackLock:
        raise self._refuse()
