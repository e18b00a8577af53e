"""ebooklet: a local-first key-value database that syncs with S3.

Work with a dict on a local file, offline if you like; push your changes to a bucket and pull
other people's changes back. Anyone with the public URL of a database can read it.
"""

__version__ = "0.6.0"

from .api import open  # noqa: E402
from .changes import Changes  # noqa: E402
from .db import EBooklet  # noqa: E402

#: The name of the database class in ebooklet 0.5.
EVariableLengthValue = EBooklet
from .errors import (  # noqa: E402
    ArgumentTypeError,
    ChangedDuringIterationError,
    ClosedError,
    CommitUnknownError,
    ConflictError,
    DamagedLocalFileError,
    DeserializationError,
    EbookletError,
    IntegrityError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyTypeError,
    LeaseHeldError,
    LeaseLostError,
    LocalFileBusyError,
    LocalFileError,
    LocalFileExistsError,
    LocalFileNotFoundError,
    LocalFolderIsAFileError,
    LocalPathError,
    LocalPathIsAFolderError,
    MassDeleteError,
    MissingExtraError,
    NoCredentialsError,
    NotSupportedError,
    PushConflictError,
    ReadOnlyError,
    RemoteAccessError,
    RemoteError,
    RemoteExistsError,
    RemoteFormatError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    SerializationError,
    SerializerMismatchError,
    SyncError,
    UnsafeSerializerError,
    UnsupportedFormatError,
)
from .groups import RemoteConnGroup  # noqa: E402
from .info import RemoteInfo, remote_info  # noqa: E402
from .maintenance import GcReport, VerifyReport, gc, verify  # noqa: E402
from .remote import AzureConnection, GCSConnection, Remote, S3Connection, Stats  # noqa: E402
from .results import Change, CommitInfo, Progress, PullResult, PushResult  # noqa: E402
from .staging import Stage, StageToken, commit, stage  # noqa: E402
from .sync import DELETED  # noqa: E402

__all__ = [
    "DELETED",
    "ArgumentTypeError",
    "AzureConnection",
    "Change",
    "Changes",
    "CommitInfo",
    "ChangedDuringIterationError",
    "ClosedError",
    "CommitUnknownError",
    "ConflictError",
    "DamagedLocalFileError",
    "DeserializationError",
    "EBooklet",
    "EVariableLengthValue",
    "EbookletError",
    "GCSConnection",
    "GcReport",
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
    "Progress",
    "PullResult",
    "PushConflictError",
    "PushResult",
    "ReadOnlyError",
    "Remote",
    "RemoteInfo",
    "RemoteAccessError",
    "RemoteConnGroup",
    "RemoteError",
    "RemoteExistsError",
    "RemoteFormatError",
    "RemoteNotFoundError",
    "RemoteUnavailableError",
    "S3Connection",
    "SerializationError",
    "SerializerMismatchError",
    "Stage",
    "StageToken",
    "Stats",
    "SyncError",
    "UnsafeSerializerError",
    "UnsupportedFormatError",
    "VerifyReport",
    "commit",
    "gc",
    "open",
    "remote_info",
    "stage",
    "verify",
]
