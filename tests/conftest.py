"""Fixtures: real S3 servers on 127.0.0.1 (moto, SeaweedFS) and the folder remote.

Every test that takes ``remote`` runs once per kind of remote. ``remote.conn()`` gives a
connection to a new, empty database location each call.
"""

from __future__ import annotations

import itertools
import pathlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import ebooklet

from .servers import S3Server, start_moto, start_seaweedfs

REMOTES = ["folder", "moto", "seaweedfs"]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@dataclass
class RemoteKind:
    """Makes connections to fresh database locations on one kind of remote."""

    kind: str
    root: pathlib.Path
    server: S3Server | None = None
    bucket: str | None = None

    def __post_init__(self) -> None:
        self._names = itertools.count()

    def conn(self, name: str | None = None) -> ebooklet.S3Connection | pathlib.Path:
        name = name or f"db-{next(self._names)}-{uuid.uuid4().hex[:8]}"
        if self.server is None:
            return self.root / name
        return ebooklet.S3Connection(
            self.server.access_key_id,
            self.server.access_key,
            f"dbs/{name}",
            self.bucket,
            endpoint_url=self.server.endpoint_url,
            retries=1,
        )

    def __str__(self) -> str:
        return self.kind


_buckets: dict[str, str] = {}


@pytest.fixture(params=REMOTES)
def remote(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> RemoteKind:
    """Each kind of remote in turn; one shared bucket per server (buckets are slow to make)."""
    kind = request.param
    if kind == "folder":
        return RemoteKind(kind, tmp_path / "remote")
    server: S3Server = request.getfixturevalue(f"{kind}_server")
    if kind not in _buckets:
        _buckets[kind] = server.make_bucket()
    return RemoteKind(kind, tmp_path, server, _buckets[kind])


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_remote(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> RemoteKind:
    """The two real S3 servers only."""
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    if request.param not in _buckets:
        _buckets[request.param] = server.make_bucket()
    return RemoteKind(request.param, tmp_path, server, _buckets[request.param])
