"""The errors ebooklet raises.

Every error is an :class:`EbookletError`; where a builtin exception means the same thing the
class inherits it too, so ``except KeyError`` or ``except PermissionError`` keep working. The
message of each error says what the caller can do about it::

    EbookletError
    ├── InvalidArgumentError (ValueError)      an argument ebooklet cannot use (flag, timestamp,
    │   │                                      on_conflict, a value too large, ...)
    │   ├── ArgumentTypeError (TypeError)      an argument of a type ebooklet cannot use
    │   ├── InvalidKeyError                    a key that cannot be stored: reserved, too long,
    │   │   │                                  or not encodable as UTF-8
    │   │   └── KeyTypeError (TypeError)       a key that is not a str
    │   ├── SerializationError (TypeError)     the value serializer cannot encode a value
    │   ├── SerializerMismatchError            value_serializer (or the local file's) is not
    │   │                                      the remote database's
    │   └── UnsafeSerializerError              the remote's serializer can run code (pickle):
    │                                          reading it needs value_serializer or allow_pickle
    ├── DeserializationError (ValueError)      stored bytes the value serializer cannot decode
    ├── NotSupportedError (TypeError)          this kind of database does not do that (e.g.
    │                                          set() on a remote connection group)
    ├── MissingExtraError (ImportError)        an optional extra is not installed (e.g. dask)
    ├── ReadOnlyError (PermissionError)        the database or remote was opened read-only
    ├── ClosedError (ValueError)               the database was used after close()
    ├── ChangedDuringIterationError (RuntimeError)  written while items()/values() ran,
    │                                          pushed or pulled while keys() ran
    ├── LocalFileError                         the local file cannot be used as it is
    │   ├── LocalFileBusyError (TimeoutError)  another process holds the local file
    │   ├── LocalPathError (OSError)           the path cannot hold a database file:
    │   │   ├── LocalPathIsAFolderError (IsADirectoryError)   it is a folder
    │   │   ├── LocalFolderIsAFileError (NotADirectoryError)  its folder is a file
    │   │   ├── LocalFileNotFoundError (FileNotFoundError)    it (or its folder) does not exist
    │   │   └── LocalFileExistsError (FileExistsError)        it exists, and a new one was asked for
    │   └── DamagedLocalFileError              the local file was damaged (e.g. a crash)
    ├── RemoteError                            talking to the remote failed
    │   ├── RemoteNotFoundError (FileNotFoundError)
    │   ├── RemoteAccessError (PermissionError)  credentials were refused
    │   ├── RemoteExistsError (FileExistsError)  a database is there, and a new one was asked for
    │   ├── RemoteUnavailableError (ConnectionError)  the server failed or dropped the connection
    │   ├── RemoteFormatError                  the remote is not an ebooklet database we can read
    │   │   └── UnsupportedFormatError          written by a newer ebooklet
    │   └── IntegrityError                     a value or object failed its hash check
    ├── NoCredentialsError (ValueError)        no credentials were found for an S3 remote
    ├── PreconditionFailed                     a conditional write lost the race (internal;
    │                                          surfaces as PushConflictError)
    ├── LeaseHeldError (TimeoutError)          another writer holds the remote lock
    └── SyncError                              a push or pull could not be completed
        ├── ConflictError                      keys changed both locally and remotely
        ├── LeaseLostError                     the remote lock expired during a push
        ├── PushConflictError                  the remote kept moving while we pushed
        ├── MassDeleteError                    a push would delete most of the remote unasked
        └── CommitUnknownError (ConnectionError)  whether a commit landed is not known yet
"""

from __future__ import annotations

from collections.abc import Iterable

from .words import counted

__all__ = [
    "ArgumentTypeError",
    "ChangedDuringIterationError",
    "ClosedError",
    "CommitUnknownError",
    "ConflictError",
    "DamagedLocalFileError",
    "DeserializationError",
    "EbookletError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "KeyTypeError",
    "LeaseHeldError",
    "LeaseLostError",
    "LocalFileBusyError",
    "LocalFileError",
    "LocalFileExistsError",
    "LocalFileNotFoundError",
    "LocalFolderIsAFileError",
    "LocalPathError",
    "LocalPathIsAFolderError",
    "MassDeleteError",
    "MissingExtraError",
    "NoCredentialsError",
    "NotSupportedError",
    "PreconditionFailed",
    "PushConflictError",
    "ReadOnlyError",
    "RemoteAccessError",
    "RemoteError",
    "RemoteExistsError",
    "RemoteFormatError",
    "RemoteNotFoundError",
    "RemoteUnavailableError",
    "SerializationError",
    "SerializerMismatchError",
    "SyncError",
    "UnsafeSerializerError",
    "UnsupportedFormatError",
]


class EbookletError(Exception):
    """Base class of every error raised by ebooklet."""


class InvalidArgumentError(EbookletError, ValueError):
    """An argument has a value ebooklet cannot use; the message names it and what it accepts."""


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument has a type ebooklet cannot use."""


class InvalidKeyError(InvalidArgumentError):
    """A key that cannot be stored: a reserved name, too long, or not encodable as UTF-8.

    ``key`` is the key (a str, or whatever was given in its place).
    """

    def __init__(self, message: str, key: object = None) -> None:
        super().__init__(message)
        self.key = key


class KeyTypeError(InvalidKeyError, TypeError):
    """A key that is not a str."""


class SerializationError(InvalidArgumentError, TypeError):
    """The database's value serializer cannot encode a value (``key`` names it).

    It is a TypeError (what serializers raise for an object they cannot encode) and a
    ValueError (a value the database cannot hold).
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class SerializerMismatchError(InvalidArgumentError):
    """The value serializer asked for (or the local file's) is not the remote database's."""


class UnsafeSerializerError(InvalidArgumentError):
    """The remote database's serializer can run code while decoding (pickle), and the caller
    did not consent to it with ``value_serializer`` or ``allow_pickle=True``."""


class DeserializationError(EbookletError, ValueError):
    """Stored bytes that the database's value serializer cannot decode (``key`` names them)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class NotSupportedError(EbookletError, TypeError):
    """This kind of database does not support the operation; the message names what does."""


class MissingExtraError(EbookletError, ImportError):
    """A module of ebooklet needs an optional extra that is not installed; the message names
    what to install."""


class ReadOnlyError(EbookletError, PermissionError):
    """A write was attempted on a database (or remote) opened read-only."""


class ClosedError(EbookletError, ValueError):
    """The database was used after it was closed."""


class ChangedDuringIterationError(EbookletError, RuntimeError):
    """The local file was written (by this thread or another) while ``items()`` or
    ``values()`` iterated over it, or the database was pushed or pulled while ``keys()`` did."""


class LocalFileError(EbookletError):
    """The local file cannot be used as it is."""


class LocalFileBusyError(LocalFileError, TimeoutError):
    """Another process (or another open database in this one) holds the local file."""


class LocalPathError(LocalFileError, OSError):
    """The local path cannot hold a database file (``filename`` names it)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.filename = path

    def __str__(self) -> str:
        return str(self.args[0])


class LocalPathIsAFolderError(LocalPathError, IsADirectoryError):
    """The local path is a folder; a local database is a file."""


class LocalFolderIsAFileError(LocalPathError, NotADirectoryError):
    """What should be the local file's folder is a file."""


class LocalFileNotFoundError(LocalPathError, FileNotFoundError):
    """The local file, or the folder it would be in, does not exist (and is not created)."""


class LocalFileExistsError(LocalPathError, FileExistsError):
    """The local file exists, and the operation makes a new one."""


class DamagedLocalFileError(LocalFileError):
    """The local file is damaged and could not be rebuilt automatically."""


class RemoteError(EbookletError):
    """Talking to the remote failed."""


class RemoteNotFoundError(RemoteError, FileNotFoundError):
    """The remote database (or an object it references) does not exist.

    ``bucket_missing`` is True when the whole bucket does not exist (a wrong bucket name or
    endpoint), which is not the same as a database that does not exist yet.
    """

    bucket_missing: bool = False

    @classmethod
    def no_bucket(cls, message: str) -> RemoteNotFoundError:
        """The error for a bucket that does not exist."""
        exc = cls(message)
        exc.bucket_missing = True
        return exc


class RemoteAccessError(RemoteError, PermissionError):
    """The remote refused the credentials or the request."""


class NoCredentialsError(EbookletError, ValueError):
    """No source in the credential chain had credentials for an S3 remote (or only half a
    key pair); the message lists where they were looked for."""


class RemoteExistsError(RemoteError, FileExistsError):
    """A database exists at the remote location, and the operation makes a new one there."""


class RemoteUnavailableError(RemoteError, ConnectionError):
    """The remote server failed (5xx) or dropped the connection, after retries."""


class RemoteFormatError(RemoteError):
    """The remote object is not part of an ebooklet database this version can read."""


class UnsupportedFormatError(RemoteFormatError):
    """The remote database was written by a newer ebooklet format version."""


class IntegrityError(RemoteError):
    """Downloaded bytes do not match the content hash recorded for them."""


class PreconditionFailed(EbookletError):
    """A conditional write found the object in another state than required.

    ``exists`` tells which: True when the object exists (create-only write), False when it was
    expected to exist and does not, None when it exists with another version.
    """

    def __init__(self, key: str, exists: bool | None = None) -> None:
        super().__init__(f"conditional write on {key!r} lost the race")
        self.key = key
        self.exists = exists


class LeaseHeldError(EbookletError, TimeoutError):
    """Another writer held the remote lock for longer than we were willing to wait."""

    def __init__(self, owner: str, expires: int, location: str) -> None:
        self.owner = owner
        self.expires = expires
        until = ""
        if expires:
            import time

            try:
                until = " until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires / 1e6))
            except (OverflowError, ValueError, OSError):
                until = " (with an expiry that is no date)"
        super().__init__(
            f"{location} is locked by {owner!r}{until}. Wait and try again; if that writer is gone, "
            "its lease expires by itself (or push with --break-lease)."
        )


class SyncError(EbookletError):
    """A push or pull could not be completed; nothing was committed."""


class ConflictError(SyncError):
    """Keys were changed both locally and on the remote since the last sync.

    ``keys`` lists them (sorted). Choose how to resolve them with
    ``push(on_conflict=...)`` or ``pull(on_conflict=...)``.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = sorted(keys)
        shown = ", ".join(repr(k) for k in self.keys[:10])
        more = f" and {len(self.keys) - 10:,} more" if len(self.keys) > 10 else ""
        super().__init__(
            f"{counted(len(self.keys), 'key')} changed both locally and on the remote: {shown}{more}. "
            "Nothing was committed. Resolve them with push(on_conflict='local'|'remote'|'newest'"
            " or a function), or discard your local changes to those keys."
        )


class LeaseLostError(SyncError):
    """The remote lock was lost (expired and taken over) before the push could commit."""

    def __init__(self, location: str) -> None:
        super().__init__(
            f"the lock on {location} expired and another writer took it before this push "
            "committed; nothing was committed. Push again (consider a longer lease_ttl)."
        )


class PushConflictError(SyncError):
    """Other writers kept committing while this push retried; nothing was committed."""


class CommitUnknownError(SyncError, ConnectionError):
    """A push could not learn whether its commit landed (the server stopped answering).

    Nothing is lost either way: the local changes stay pending and the attempt is recorded, so
    the next push, pull or ``changes()`` settles it first.
    """

    def __init__(self, location: str, commit: int) -> None:
        super().__init__(
            f"could not learn whether commit {commit} landed on {location}: the server stopped "
            "answering. Nothing is lost: your changes stay pending, and the next push (or pull) "
            "finds out and carries on from there. Push again once the remote answers."
        )
        self.commit = commit


class MassDeleteError(SyncError):
    """A push would delete more than ``max_delete`` percent of the remote's keys that were
    not deleted through ebooklet (found missing from the local file); nothing was committed.

    ``keys`` lists them (sorted), ``total`` is how many keys the remote holds. The model is
    rclone bisync's ``--max-delete``.
    """

    def __init__(self, keys: Iterable[str], total: int, max_delete: float, path: str) -> None:
        self.keys = sorted(keys)
        self.total = total
        shown = ", ".join(repr(k) for k in self.keys[:10])
        more = f" and {len(self.keys) - 10:,} more" if len(self.keys) > 10 else ""
        super().__init__(
            f"this push would delete {len(self.keys)} of the remote's {total} keys, more than "
            f"max_delete={max_delete:g}%, that were not deleted through ebooklet: they are missing "
            f"from {path} (deleted with plain booklet, or lost): {shown}{more}. Nothing was "
            "committed. To delete them, push again with push(max_delete=100); to keep them, "
            "call changes().discard(error.keys) and they are read from the remote again."
        )
