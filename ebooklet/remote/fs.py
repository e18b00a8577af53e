"""A local folder as a remote: the embedded default for demos and offline work.

Objects are files under a root folder, keys map to relative paths. Writes go to a temporary
file that is fsynced and renamed into place, so a reader never sees half an object.
Conditional writes hold an exclusive file lock on the folder's ``.ebooklet.lock`` while they
compare and replace, which makes them atomic between processes on one machine (not across
network file systems that lack working locks).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import uuid
from collections.abc import Iterator

import portalocker

from ..errors import PreconditionFailed, RemoteFormatError, RemoteNotFoundError
from .base import Blob, PutMode, Transport, Update

_LOCK_NAME = ".ebooklet.lock"
_TMP_PREFIX = ".ebooklet-tmp-"


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

    def _path(self, key: str) -> pathlib.Path:
        path = os.path.normpath(os.path.join(self._root_str, key))
        if not path.startswith(self._root_prefix):
            raise ValueError(f"object key {key!r} escapes the remote folder {self.root}")
        return pathlib.Path(path)

    def get(self, key: str, if_none_match: str | None = None) -> Blob | None:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise RemoteNotFoundError(f"{key!r} does not exist in {self.description}") from None
        etag = _etag(data)
        if if_none_match is not None and etag == if_none_match:
            return None
        return Blob(data, etag)

    def get_start(self, key: str, length: int, if_none_match: str | None = None) -> Blob | None:
        try:
            with open(self._path(key), "rb") as f:
                size = os.fstat(f.fileno()).st_size
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
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise RemoteNotFoundError(f"{key!r} does not exist in {self.description}") from None
        etag = _etag(data)
        if if_none_match is not None and etag == if_none_match:
            return None
        return Blob(data, etag, len(data))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        try:
            with open(self._path(key), "rb") as f:
                f.seek(start)
                data = f.read(length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise RemoteNotFoundError(f"{key!r} does not exist in {self.description}") from None
        if len(data) != length:
            raise RemoteFormatError(
                f"{key!r} in {self.description} is truncated: wanted {length} bytes at {start}, "
                f"got {len(data)}"
            )
        return data

    def _write_temp(self, path: pathlib.Path, data: bytes) -> pathlib.Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    @staticmethod
    def _fsync_dir(path: pathlib.Path) -> None:
        dir_fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        path = self._path(key)
        data = bytes(data)
        tmp = self._write_temp(path, data)
        try:
            if mode == "overwrite":
                os.replace(tmp, path)
            elif mode == "create":
                # link() fails if the target exists: an atomic create-if-absent, no lock needed.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailed(key, exists=True) from None
            elif isinstance(mode, Update):
                with portalocker.Lock(path.parent / _LOCK_NAME, mode="a", flags=portalocker.LOCK_EX):
                    try:
                        current = _etag(path.read_bytes())
                    except FileNotFoundError:
                        current = None
                    if current != mode.etag:
                        raise PreconditionFailed(key, exists=False if current is None else None)
                    os.replace(tmp, path)
            else:
                raise ValueError(f"unknown put mode {mode!r}")
        finally:
            tmp.unlink(missing_ok=True)
        self._fsync_dir(path.parent)
        return _etag(data)

    def copy(self, key: str, target: Transport, target_key: str) -> bool:
        if not isinstance(target, FolderTransport):
            return False
        source = self._path(key)
        dest = target._path(target_key)
        tmp = dest.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, tmp)
        except FileNotFoundError:
            raise RemoteNotFoundError(f"{key!r} does not exist in {self.description}") from None
        os.replace(tmp, dest)
        return True

    def delete(self, keys: list[str]) -> None:
        parents = set()
        for key in keys:
            path = self._path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            parents.add(path.parent)
        # Empty folders left behind are removed so a deleted database leaves no trace.
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            while parent != self.root:
                leftovers = [p for p in parent.iterdir() if p.name != _LOCK_NAME]
                if leftovers:
                    break
                (parent / _LOCK_NAME).unlink(missing_ok=True)
                parent.rmdir()
                parent = parent.parent

    def list_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        if not self.root.is_dir():
            return
        # Walk only the folder that holds the prefix, not the whole root (nor outside it).
        folder = prefix.rpartition("/")[0]
        start = self._path(folder) if folder else self.root
        if not start.is_dir():
            return
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name == _LOCK_NAME or name.startswith(_TMP_PREFIX):
                    continue
                path = pathlib.Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        yield key, path.stat().st_size
                    except FileNotFoundError:
                        continue  # deleted while listing
