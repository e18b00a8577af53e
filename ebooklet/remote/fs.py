"""A local folder as a remote: the embedded default for demos and offline work.

Objects are files under a root folder, keys map to relative paths. Writes go to a temporary
file that is fsynced and renamed into place, so a reader never sees half an object.
Conditional writes hold an exclusive file lock on the folder's ``.ebooklet.lock`` while they
compare and replace, which makes them atomic between processes on one machine (not across
network file systems that lack working locks).

A folder remote is often shared, so whoever can create entries in it is not trusted: below
the root nothing is reached through a symbolic link. Every path is walked one folder at a
time with ``O_NOFOLLOW`` from a descriptor of the root (``openat``), so a link put in place of
a folder or a file is refused rather than followed, even if it appears between two calls,
and no operation can act outside the root. The root itself is the user's choice and may be
reached through links.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pathlib
import stat
import uuid
from collections.abc import Iterator

import portalocker

from ..errors import InvalidArgumentError, PreconditionFailed, RemoteFormatError, RemoteNotFoundError
from .base import Blob, ObjectStat, PutMode, Transport, Update

_LOCK_NAME = ".ebooklet.lock"
_TMP_PREFIX = ".ebooklet-tmp-"
#: Folders are opened only as folders and never through a link.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Files are read without following a link, and without blocking on a FIFO put in their place.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: A file is created only where nothing (not even a link) is.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _etag(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class FolderTransport(Transport):
    """Objects stored as files under ``root``.

    Conditional writes are atomic between threads and processes of one machine.

    Parameters
    ----------
    root : str or os.PathLike
        The folder; it is created by the first write.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = pathlib.Path(root).absolute()
        self._root_str = str(self.root)
        self._root_prefix = os.path.join(self._root_str, "")
        self.description = f"folder {self.root}"

    knows_ages = True

    def _names(self, key: str) -> list[str]:
        names = key.split("/")
        if any(n in ("", ".", "..") or "\0" in n for n in names):
            raise InvalidArgumentError(f"object key {key!r} escapes the remote folder {self.root}")
        return names

    def _path(self, key: str) -> pathlib.Path:
        """Where ``key`` lives (for messages and tests; every access goes through _folder)."""
        return self.root.joinpath(*self._names(key))

    def _refuse_link(self, key: str, name: str) -> RemoteFormatError:
        return RemoteFormatError(
            f"{name!r} on the way to {key!r} in {self.description} is not a plain folder or file "
            "(a symbolic link, or a special file): a folder remote never acts through one. "
            "Someone who can write to the folder put it there; remove it"
        )

    @contextlib.contextmanager
    def _folder(self, key: str, create: bool = False) -> Iterator[tuple[int, str]]:
        """A descriptor of the folder that holds ``key``, and the object's name in it.

        Raises RemoteNotFoundError when a folder on the way is missing (unless ``create``),
        and RemoteFormatError when one is a link or not a folder.
        """
        names = self._names(key)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise RemoteNotFoundError(f"{key!r} does not exist in {self.description}") from None
        try:
            for name in names[:-1]:
                try:
                    inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise RemoteNotFoundError(f"{key!r} does not exist in {self.description}") from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, dir_fd=fd)
                    inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self._refuse_link(key, name) from None
                    raise
                os.close(fd)
                fd = inner
            yield fd, names[-1]
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _open_file(self, key: str) -> Iterator[tuple[int, os.stat_result]]:
        """A descriptor of the regular file ``key`` (never through a link), and its stat."""
        with self._folder(key) as (dir_fd, name):
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
            except (FileNotFoundError, IsADirectoryError):
                raise RemoteNotFoundError(f"{key!r} does not exist in {self.description}") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise self._refuse_link(key, name) from None
                raise
            try:
                info = os.fstat(fd)
                if stat.S_ISDIR(info.st_mode):
                    raise RemoteNotFoundError(f"{key!r} does not exist in {self.description}")
                if not stat.S_ISREG(info.st_mode):
                    raise self._refuse_link(key, name)
                yield fd, info
            finally:
                os.close(fd)

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        with self._open_file(key) as (fd, _info), os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        etag = _etag(data)
        if if_none_match is not None and etag == if_none_match:
            return None
        return Blob(data, etag)

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        with self._open_file(key) as (fd, info), os.fdopen(os.dup(fd), "rb") as f:
            size = info.st_size
            if size > length:
                start = f.read(length)
                if if_none_match is None:
                    # The ETag is a hash of the whole content, which is not read (see
                    # the contract in base.py).
                    return Blob(start, "", size)
                # The caller has read this object before: hash it in pieces, never
                # holding more than `length` bytes, so that an unchanged one is None.
                digest = hashlib.blake2b(start, digest_size=16)
                while piece := f.read(length):
                    digest.update(piece)
                etag = digest.hexdigest()
                return None if etag == if_none_match else Blob(start, etag, size)
            data = f.read(length)
        etag = _etag(data)
        if if_none_match is not None and etag == if_none_match:
            return None
        return Blob(data, etag, len(data))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        with self._open_file(key) as (fd, _info):
            data = os.pread(fd, length, start)
            while 0 < len(data) < length:  # pread may return less than asked before the end
                more = os.pread(fd, length - len(data), start + len(data))
                if not more:
                    break
                data += more
        if len(data) != length:
            raise RemoteFormatError(
                f"{key!r} in {self.description} is truncated: wanted {length} bytes at {start}, "
                f"got {len(data)}"
            )
        return data

    @staticmethod
    def _write_temp(dir_fd: int, data: bytes) -> str:
        tmp = f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        fd = os.open(tmp, _CREATE_FLAGS, 0o666, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        data = bytes(data)
        with self._folder(key, create=True) as (dir_fd, name):
            tmp = self._write_temp(dir_fd, data)
            try:
                if mode == "overwrite":
                    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                elif mode == "create":
                    # link() fails if the target exists (even as a dangling link): an atomic
                    # create-if-absent, no lock needed.
                    try:
                        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                    except FileExistsError:
                        raise PreconditionFailed(key, exists=True) from None
                elif isinstance(mode, Update):
                    with self._locked(key, dir_fd):
                        current = self._current_etag(key, dir_fd, name)
                        if current != mode.etag:
                            raise PreconditionFailed(key, exists=False if current is None else None)
                        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                else:
                    raise ValueError(f"unknown put mode {mode!r}")
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)
            os.fsync(dir_fd)
        return _etag(data)

    @contextlib.contextmanager
    def _locked(self, key: str, dir_fd: int) -> Iterator[None]:
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(_LOCK_NAME, flags, 0o666, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse_link(key, _LOCK_NAME) from None
            raise
        with os.fdopen(fd, "r+b") as f:
            portalocker.lock(f, portalocker.LOCK_EX)
            try:
                yield
            finally:
                portalocker.unlock(f)

    def _current_etag(self, key: str, dir_fd: int, name: str) -> str | None:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse_link(key, name) from None
            raise
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise self._refuse_link(key, name)
            return _etag(f.read())

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        if not isinstance(target, FolderTransport):
            return False
        # Through the checked read and write: a copy never follows a link either.
        blob = self.get(key)
        assert blob is not None
        target.put(target_key, blob.data)
        return True

    def delete(self, keys: list[str]) -> None:
        folders: set[tuple[str, ...]] = set()
        for key in keys:
            try:
                with self._folder(key) as (dir_fd, name):
                    # unlink() removes a link itself, never what it points at.
                    os.unlink(name, dir_fd=dir_fd)
            except (RemoteNotFoundError, FileNotFoundError):
                continue
            except IsADirectoryError:
                continue  # not an object
            except RemoteFormatError:
                continue  # a link on the way: nothing of ours lies behind it
            folders.add(tuple(self._names(key)[:-1]))
        # Empty folders left behind are removed so a deleted database leaves no trace.
        for folder in sorted(folders, key=len, reverse=True):
            self._prune(list(folder))

    def _prune(self, folder: list[str]) -> None:
        """Remove ``folder`` and then its parents while they are empty (but for a lock file);
        a folder already gone, or filled again meanwhile, ends the climb."""
        while folder:
            try:
                with self._folder("/".join([*folder, "x"])) as (dir_fd, _):
                    leftovers = [n for n in os.listdir(dir_fd) if n != _LOCK_NAME]
                    if leftovers:
                        return
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(_LOCK_NAME, dir_fd=dir_fd)
                with self._folder("/".join(folder)) as (parent_fd, name):
                    os.rmdir(name, dir_fd=parent_fd)
            except (RemoteNotFoundError, RemoteFormatError, FileNotFoundError):
                pass  # already gone (another delete got there first), or not ours to remove
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return  # filled again meanwhile
                raise
            folder = folder[:-1]

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        for info in self.list_stats(prefix):
            yield info.key, info.size

    def list_stats(self, prefix: str) -> Iterator[ObjectStat]:
        # Walk only the folder that holds the prefix, not the whole root (nor outside it).
        folder = prefix.rpartition("/")[0]
        try:
            with self._folder(folder + "/x" if folder else "x") as (start_fd, _):
                start = os.dup(start_fd)
        except (RemoteNotFoundError, RemoteFormatError):
            return
        base = folder + "/" if folder else ""
        try:
            # fwalk never enters a linked folder; files are stat'ed without following links,
            # and whatever is not a plain file is no object.
            for dirpath, _dirs, files, dir_fd in os.fwalk(".", dir_fd=start, follow_symlinks=False):
                rel = "" if dirpath == "." else dirpath[2:] + "/"
                for name in files:
                    if name == _LOCK_NAME or name.startswith(_TMP_PREFIX):
                        continue
                    key = base + rel + name
                    if not key.startswith(prefix):
                        continue
                    try:
                        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted while listing
                    if stat.S_ISREG(info.st_mode):
                        yield ObjectStat(key, info.st_size, info.st_mtime)
        finally:
            os.close(start)

    def stat(self, key: str) -> ObjectStat:
        with self._open_file(key) as (_fd, info):
            return ObjectStat(key, info.st_size, info.st_mtime, self.store_time())

    def store_time(self) -> float:
        """The folder's clock: the mtime of a file written now (on a network file system the
        server's clock sets it, as it sets every object's)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            tmp = f"{_TMP_PREFIX}{uuid.uuid4().hex}"
            os.close(os.open(tmp, _CREATE_FLAGS, 0o666, dir_fd=fd))
            try:
                return os.stat(tmp, dir_fd=fd, follow_symlinks=False).st_mtime
            finally:
                os.unlink(tmp, dir_fd=fd)
        finally:
            os.close(fd)
