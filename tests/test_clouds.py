"""Google Cloud Storage and Azure Blob Storage, end to end, on their emulators.

The acceptance tests written for every remote (``remote``: test_database, test_safety,
test_lifecycle, test_remote_ops) and for the S3 servers (``s3_remote``: test_collaboration's
push, pull, conflicts, lease, commit races between processes) are collected here a second
time, with those two fixtures overridden to give the cloud stores instead: the same
scenarios, run as they are, on fake-gcs-server and Azurite. Only tests that reach into an S3
server directly (its boto3 client, its keys) are left out, by the fixtures they ask for.

Then what is particular to the clouds: remote strings (``gs://``, ``az://``, ``s3://``) in
Python with credentials and endpoints from each SDK's own environment variables, refusals,
and copies between stores.

Every test here is marked ``clouds`` (``-m "not clouds"`` leaves them out of a quick run).
The scenarios collected a second time are also marked ``slow``, all but :data:`SMOKE`: the
quick subset (``-m "not slow"``) runs those on each cloud, and what is particular to the
clouds; the whole suite runs every scenario on both.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http.server
import inspect
import json
import pathlib
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

import ebooklet
from ebooklet.settings import override

from . import test_collaboration, test_database, test_lifecycle, test_remote_ops, test_safety
from .conftest import CLOUDS, RemoteKind, cloud_kind
from .emulators import Emulator
from .faultproxy import FaultProxy, Request
from .faults import held_together
from .servers import S3Server
from .test_cli import ebk

pytestmark = pytest.mark.clouds

#: Fixtures that reach into an S3 server or a folder directly: tests asking for them stay
#: with the remotes they were written for.
_S3_ONLY = {"moto_server", "seaweedfs_server", "proxied", "moto_proxied", "seaweedfs_proxied"}


#: The scenarios that the quick subset runs on each cloud: a push, and a fresh reader that
#: fetches one value with one request; two writers whose commits race and both land.
SMOKE = {
    "test_a_fresh_open_lists_every_key_and_fetches_a_value_only_when_read",
    "test_two_clients_pushing_different_keys_from_one_base_both_land",
}


def _rerun(test: Callable[..., Any]) -> Callable[..., Any]:
    """``test`` again, as a function of its own: marks added here stay off the original."""

    @functools.wraps(test)
    def again(*args: Any, **kwargs: Any) -> Any:
        return test(*args, **kwargs)

    return again if test.__name__ in SMOKE else pytest.mark.slow(again)


def _scenarios(module: ModuleType, fixture: str) -> dict[str, Any]:
    chosen = {}
    for name, test in vars(module).items():
        if not name.startswith("test_") or not callable(test):
            continue
        params = set(inspect.signature(test).parameters)
        pinned = any(
            mark.name == "parametrize" and fixture in str(mark.args[0]).replace(" ", "").split(",")
            for mark in getattr(test, "pytestmark", [])
        )  # a scenario pinned to one kind of remote (e.g. ["folder"]) is about that kind
        if fixture in params and not params & _S3_ONLY and not pinned:
            chosen[name] = _rerun(test)
    return chosen


for _module in (test_database, test_safety, test_lifecycle, test_remote_ops):
    globals().update(_scenarios(_module, "remote"))
globals().update(_scenarios(test_collaboration, "s3_remote"))
globals().update(_scenarios(test_lifecycle, "s3_remote"))
# Scenarios with faults on the wire: the proxy in front of each cloud emulator (``wire``).
globals().update(_scenarios(test_collaboration, "wire"))
globals().update(_scenarios(test_lifecycle, "wire"))


@pytest.fixture(params=CLOUDS)
def remote(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> RemoteKind:
    """Each cloud store in turn, where the scenarios collected above expect any remote."""
    return cloud_kind(request, request.param, tmp_path)


@pytest.fixture(params=CLOUDS)
def s3_remote(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> RemoteKind:
    """Each cloud store in turn, where the scenarios collected above expect an S3 server."""
    return cloud_kind(request, request.param, tmp_path)


# --- remote strings in Python, with each SDK's own environment --------------------------------


@pytest.fixture
def gs_env(monkeypatch: pytest.MonkeyPatch, fake_gcs_server: Emulator, gcs_bucket: str) -> str:
    """``STORAGE_EMULATOR_HOST`` set as Google's tools set it (host:port); the bucket's URL."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server.endpoint_url.removeprefix("http://"))
    return f"gs://{gcs_bucket}"


@pytest.fixture
def az_env(monkeypatch: pytest.MonkeyPatch, azurite_server: Emulator, azure_container: str) -> str:
    """``AZURE_STORAGE_CONNECTION_STRING`` naming Azurite's endpoint; the container's URL."""
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    return f"az://{azure_container}"


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, moto_server: S3Server) -> str:
    """The AWS variables naming moto; a bucket's URL."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.access_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint_url)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return f"s3://{moto_server.make_bucket()}"


@pytest.mark.parametrize("store", ["s3_env", "gs_env", "az_env"])
def test_a_cloud_string_opens_pushes_and_is_read_back_by_every_function(
    store: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    url = f"{request.getfixturevalue(store)}/dbs/{tmp_path.name}/big.blt"
    with ebooklet.open(url, tmp_path / "a.blt", "c", value_serializer="pickle") as db:
        db.update({"station-1": {"lat": -41.2}, "station-2": {"lat": -36.8}})
        db.changes().push()
    with ebooklet.open(url, tmp_path / "b.blt", "w", allow_pickle=True) as db:
        assert db["station-1"] == {"lat": -41.2}
        del db["station-2"]
        db.changes().push()
    info = ebooklet.remote_info(url)
    assert info is not None and info.n_keys == 1 and info.location.startswith(url)
    assert ebooklet.verify(url, deep=True).ok
    assert ebooklet.gc(url, dry_run=True) is not None
    with ebooklet.open(url, tmp_path / "a.blt", "w", allow_pickle=True) as db:
        assert db.changes().pull().deleted == ["station-2"]
        assert dict(db.items()) == {"station-1": {"lat": -41.2}}


def test_copy_remote_between_clouds_given_as_strings(
    gs_env: str, az_env: str, tmp_path: pathlib.Path
) -> None:
    source, target = f"{gs_env}/dbs/{tmp_path.name}/src.blt", f"{az_env}/dbs/{tmp_path.name}/dst.blt"
    with ebooklet.open(source, tmp_path / "a.blt", "c") as db:
        db.update({f"k{i}": bytes([i]) * 100 for i in range(50)})
        db.changes().push()
        info = db.copy_remote(target)
    assert info.n_keys == 50
    with ebooklet.open(target, tmp_path / "b.blt", "r") as copy:
        assert dict(copy.items()) == {f"k{i}": bytes([i]) * 100 for i in range(50)}


def test_a_group_records_cloud_members_without_credentials(
    az_env: str, gs_env: str, azurite_server: Emulator, tmp_path: pathlib.Path
) -> None:
    members = {
        "rain": f"{gs_env}/dbs/{tmp_path.name}/rain.blt", "flow": f"{az_env}/dbs/{tmp_path.name}/flow.blt"
    }
    for name, url in members.items():
        with ebooklet.open(url, tmp_path / f"{name}.blt", "c") as db:
            db[name] = b"1"
            db.changes().push()
    group_url = f"{az_env}/dbs/{tmp_path.name}/group.blt"
    with ebooklet.open(group_url, tmp_path / "group.blt", "n", remote_conn_group=True) as group:
        uuids = {name: group.add(url) for name, url in members.items()}
        group.changes().push()
    secret = azurite_server.connection_string.split("AccountKey=")[1].split(";")[0]
    with ebooklet.open(group_url, tmp_path / "group-copy.blt", "r", remote_conn_group=True) as group:
        # Where each member is, not the emulator this environment happens to name.
        assert group[uuids["rain"]]["connection"]["endpoint_url"] is None
        for name, uuid in uuids.items():
            assert secret not in str(group[uuid])
            with ebooklet.open(group.connection(uuid), tmp_path / f"{name}-again.blt", "r") as member:
                assert member[name] == b"1"


# --- refusals -------------------------------------------------------------------------------


def test_a_wrong_azure_key_is_refused_as_an_access_error(azurite_server: Emulator, azure_container: str,
                                                        tmp_path: pathlib.Path) -> None:
    wrong = azurite_server.connection_string.replace("AccountKey=", "AccountKey=AAAA")
    conn = ebooklet.AzureConnection(azure_container, f"dbs/{tmp_path.name}", connection_string=wrong,
                                    retries=0)
    with pytest.raises(ebooklet.RemoteAccessError, match="Check the credentials"):
        ebooklet.open(conn, tmp_path / "a.blt", "c").changes().push()


@pytest.mark.parametrize("kind", ["gcs", "azure"])
def test_a_bucket_or_container_that_does_not_exist_says_so(
    kind: str, fake_gcs_server: Emulator, azurite_server: Emulator, tmp_path: pathlib.Path
) -> None:
    if kind == "gcs":
        conn: Any = ebooklet.GCSConnection("ebk-missing", "db", endpoint_url=fake_gcs_server.endpoint_url,
                                           anonymous=True, retries=0)
    else:
        conn = ebooklet.AzureConnection("ebk-missing", "db", retries=0,
                                        connection_string=azurite_server.connection_string)
    # Azure says so at the first read (at open); fake-gcs-server's 404 for an object does not
    # say which was missing, so GCS says so at the first write.
    missing = r"(bucket|container) does not exist.*Check the"
    with pytest.raises(ebooklet.RemoteNotFoundError, match=missing) as info:
        with ebooklet.open(conn, tmp_path / "a.blt", "c") as db:
            db["k"] = b"v"
            db.changes().push()
    assert info.value.bucket_missing


def test_a_cloud_remote_without_its_extra_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setitem(sys.modules, "ebooklet.remote.azure", None)  # as if azure-storage-blob were absent
    with pytest.raises(ebooklet.InvalidArgumentError, match=r"pip install azure-storage-blob azure-identity"):
        ebooklet.open("az://container/db.blt", tmp_path / "a.blt", "c")
    monkeypatch.setitem(sys.modules, "ebooklet.remote.gcs", None)
    with pytest.raises(ebooklet.InvalidArgumentError, match=r"pip install google-auth"):
        ebooklet.open("gs://bucket/db.blt", tmp_path / "b.blt", "c")


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def cloud_env(fake_gcs_server: Emulator, azurite_server: Emulator) -> dict[str, str]:
    """Each SDK's own variables, naming the emulators, as a user would set them."""
    return {
        "STORAGE_EMULATOR_HOST": fake_gcs_server.endpoint_url.removeprefix("http://"),
        "AZURE_STORAGE_CONNECTION_STRING": azurite_server.connection_string,
    }


@pytest.mark.parametrize("store", ["gcs", "azure"])
def test_the_demo_runs_on_a_cloud_remote(
    store: str, cloud_env: dict[str, str], gcs_bucket: str, azure_container: str, tmp_path: pathlib.Path
) -> None:
    url = f"gs://{gcs_bucket}" if store == "gcs" else f"az://{azure_container}"
    url += f"/dbs/{tmp_path.name}/demo.blt"
    run = ebk(tmp_path, "demo", "--dir", str(tmp_path / "demo"), "--remote", url, env=cloud_env)
    assert run.code == 0, run.err
    assert f"The remote is {url}" in run.out
    assert "999 stations; those with rain" in run.out
    head = ebk(tmp_path, "head", url, "--json", env=cloud_env)
    assert head.code == 0, head.err
    assert json.loads(head.out)["n_keys"] == 999


def test_cp_copies_between_clouds_each_with_its_own_credentials(
    cloud_env: dict[str, str], gcs_bucket: str, azure_container: str, tmp_path: pathlib.Path
) -> None:
    source = f"gs://{gcs_bucket}/dbs/{tmp_path.name}/src.blt"
    target = f"az://{azure_container}/dbs/{tmp_path.name}/dst.blt"
    with pytest.MonkeyPatch.context() as env:
        for name, value in cloud_env.items():
            env.setenv(name, value)
        with ebooklet.open(source, tmp_path / "src.blt", "c") as db:
            db.update({"a": b"1", "b": b"2"})
            db.changes().push()
        run = ebk(tmp_path, "cp", source, target, env=cloud_env)
        assert run.code == 0, run.err
        assert f"copied {source}" in run.out
        with ebooklet.open(target, tmp_path / "copy.blt", "r") as copy:
            assert dict(copy.items()) == {"a": b"1", "b": b"2"}


def test_a_database_on_gcs_is_read_through_its_public_https_url(
    gs_env: str, fake_gcs_server: Emulator, tmp_path: pathlib.Path
) -> None:
    # https://storage.googleapis.com/BUCKET/KEY on Google; the emulator serves the same paths.
    url = f"{gs_env}/dbs/{tmp_path.name}/public.blt"
    public = f"{fake_gcs_server.endpoint_url}/{url.removeprefix('gs://')}"
    with ebooklet.open(url, tmp_path / "a.blt", "c") as db:
        db.update({f"k{i}": bytes([i]) * 10 for i in range(20)})
        db.changes().push()
    with ebooklet.open(public, tmp_path / "reader.blt", "r") as reader:
        assert reader["k7"] == bytes([7]) * 10
        assert len(reader) == 20
    with ebooklet.open(url, tmp_path / "a.blt", "w") as db:
        db["k7"] = b"new"
        db.changes().push()
    with ebooklet.open(public, tmp_path / "reader.blt", "r") as reader:
        assert reader.changes().pull().updated == ["k7"]
        assert reader["k7"] == b"new"


# --- network faults, through the fault proxy in front of each emulator ------------------------


@dataclass
class CloudProxied:
    """A cloud emulator behind a fresh FaultProxy: ``conn()`` goes through the proxy,
    ``direct(conn)`` reaches the same database without it (for the scenario's other writers)."""

    kind: str
    emulator: Emulator
    bucket: str
    proxy: FaultProxy

    def conn(self, name: str | None = None, direct: bool = False) -> Any:
        name = name or uuid.uuid4().hex[:12]
        if self.kind == "gcs":
            endpoint = self.emulator.endpoint_url if direct else self.proxy.url
            return ebooklet.GCSConnection(self.bucket, f"dbs/{name}", endpoint_url=endpoint, anonymous=True,
                                          retries=1)
        connection = self.emulator.connection_string
        if not direct:  # the account's path stays: SharedKey signs it, not the host
            connection = connection.replace(self.emulator.endpoint_url.rsplit("/", 1)[0], self.proxy.url)
        return ebooklet.AzureConnection(self.bucket, f"dbs/{name}", connection_string=connection, retries=1)

    def direct(self, conn: Any) -> Any:
        """The same database, reached without the proxy."""
        return self.conn(conn.db_key.removeprefix("dbs/"), direct=True)

    def writes(self, part: str) -> Callable[[Request], bool]:
        """Matches the writes of objects whose key holds ``part`` (GCS names the object in the
        upload's body)."""
        if self.kind == "gcs":
            return lambda r: r.method == "POST" and r.path.startswith("/upload/") and part.encode() in r.body
        return lambda r: r.method == "PUT" and part in r.path

    def head_write(self, conn: Any) -> Callable[[Request], bool]:
        """Matches the writes of the database's head (GCS names the object in the upload's body)."""
        if self.kind == "gcs":
            named = json.dumps({"name": conn.db_key}).encode()[:-1] + b","
            return lambda r: r.method == "POST" and r.path.startswith("/upload/") and named in r.body
        return lambda r: r.method == "PUT" and r.path.endswith(f"/{self.bucket}/{conn.db_key}")


def _cloud_proxied(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[CloudProxied]:
    kind = cloud_kind(request, request.param, tmp_path)
    assert kind.emulator is not None and kind.bucket is not None
    upstream = kind.emulator.endpoint_url
    if kind.kind == "azure":
        upstream = upstream.rsplit("/", 1)[0]  # Azurite's root: the account is in the path
    with FaultProxy(upstream) as proxy:
        yield CloudProxied(kind.kind, kind.emulator, kind.bucket, proxy)


@pytest.fixture(params=CLOUDS)
def cloud_proxied(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[CloudProxied]:
    yield from _cloud_proxied(request, tmp_path)


@pytest.fixture(params=CLOUDS)
def wire(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[CloudProxied]:
    """Each cloud emulator behind a fresh FaultProxy, where the scenarios collected above
    expect an S3 server behind one."""
    yield from _cloud_proxied(request, tmp_path)


def _push(conn: Any, path: pathlib.Path, writes: dict[str, bytes], **open_args: Any) -> ebooklet.PushResult:
    with ebooklet.open(conn, path, "c", **open_args) as db:
        db.update(writes)
        return db.changes().push()


def test_a_commit_whose_reply_was_lost_is_recognised_after_a_later_commit(
    cloud_proxied: CloudProxied, tmp_path: pathlib.Path
) -> None:
    conn = cloud_proxied.conn(tmp_path.name)
    direct = cloud_proxied.conn(tmp_path.name, direct=True)
    _push(direct, tmp_path / "seed.blt", {"a": b"a0", "b": b"b0"})
    with ebooklet.open(conn, tmp_path / "a.blt", "w", remote_lock="none") as a:
        a["a"] = b"a1"
        rule = cloud_proxied.proxy.add_rule(cloud_proxied.head_write(conn), "lost_reply", hold="after")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            push = pool.submit(a.changes().push)
            assert rule.reached.wait(60)
            # A's commit is in the store, its answer held; another writer commits on top of it.
            _push(direct, tmp_path / "b.blt", {"b": b"b1"})
            rule.release()  # A's answer is lost; its retry is refused by the precondition
            result = push.result(timeout=60)
        assert (result.committed, result.commit, result.keys) == (True, 2, ["a"])
    with ebooklet.open(direct, tmp_path / "r.blt", "r") as reader:
        assert dict(reader.items()) == {"a": b"a1", "b": b"b1"}


def test_transient_server_errors_are_retried(cloud_proxied: CloudProxied, tmp_path: pathlib.Path) -> None:
    conn = cloud_proxied.conn(tmp_path.name)
    cloud_proxied.proxy.add_rule(cloud_proxied.head_write(conn), "503", times=1)
    cloud_proxied.proxy.add_rule(lambda r: r.method == "GET", "503", times=1)
    assert _push(conn, tmp_path / "a.blt", {"k": b"v"}).committed
    assert cloud_proxied.proxy.stats.faults["503"] == 2
    with ebooklet.open(cloud_proxied.conn(tmp_path.name, direct=True), tmp_path / "r.blt", "r") as reader:
        assert reader["k"] == b"v"


def test_a_store_that_resets_every_connection_is_remote_unavailable(
    cloud_proxied: CloudProxied, tmp_path: pathlib.Path
) -> None:
    conn = cloud_proxied.conn(tmp_path.name)
    cloud_proxied.proxy.add_rule(lambda r: True, "reset", times=None)
    with pytest.raises(ebooklet.RemoteUnavailableError):
        _push(conn, tmp_path / "a.blt", {"k": b"v"})


# --- Google's credential chain --------------------------------------------------------------


class _TokenEndpoint(http.server.BaseHTTPRequestHandler):
    """An OAuth token endpoint on loopback that grants one token to any signed assertion."""

    grants: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.grants.append(form["assertion"][0])
        body = json.dumps({"access_token": "token-from-the-service-account", "expires_in": 3600,
                           "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_gcs_credentials_come_from_google_application_credentials(
    monkeypatch: pytest.MonkeyPatch, fake_gcs_server: Emulator, gcs_bucket: str, tmp_path: pathlib.Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        account = {
            "type": "service_account", "project_id": "test", "private_key_id": "k1", "private_key": pem,
            "client_email": "writer@test.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": f"http://127.0.0.1:{server.server_address[1]}/token",
        }
        (tmp_path / "key.json").write_text(json.dumps(account))
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
        with FaultProxy(fake_gcs_server.endpoint_url) as proxy:
            seen = proxy.add_rule(lambda r: True, None, times=None)
            conn = ebooklet.GCSConnection(gcs_bucket, f"dbs/{tmp_path.name}", endpoint_url=proxy.url)
            assert _push(conn, tmp_path / "a.blt", {"k": b"v"}).committed
        assert _TokenEndpoint.grants  # the service account's signed assertion was exchanged
        assert {r.header("authorization") for r in seen.requests} == {"Bearer token-from-the-service-account"}
    finally:
        server.shutdown()
        server.server_close()


def test_gcs_without_any_credentials_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ebooklet.RemoteAccessError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        ebooklet.open("gs://bucket/db.blt", tmp_path / "a.blt", "c")


# --- Azure's credential chain ---------------------------------------------------------------


@pytest.mark.parametrize(
    "variable", ["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"]
)
def test_azure_credentials_come_from_the_environment(
    variable: str, monkeypatch: pytest.MonkeyPatch, azurite_server: Emulator, azure_container: str,
    tmp_path: pathlib.Path,
) -> None:
    import datetime

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    key = azurite_server.connection_string.split("AccountKey=")[1].split(";")[0]
    secret = key
    if variable == "AZURE_STORAGE_SAS_TOKEN":
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        secret = "?" + generate_container_sas(  # as the portal shows it, with its "?"
            azurite_server.account, azure_container, account_key=key, expiry=expiry,
            permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
        )
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY",
                 "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, secret)
    conn = ebooklet.AzureConnection(azure_container, f"dbs/{tmp_path.name}", retries=0,
                                    account_url=azurite_server.endpoint_url)
    assert _push(conn, tmp_path / "a.blt", {"k": b"v"}).committed
    with ebooklet.open(conn, tmp_path / "b.blt", "r") as reader:
        assert reader["k"] == b"v"
    assert secret not in repr(conn) + str(conn.to_dict())


def test_azure_without_an_account_says_how_to_name_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ebooklet.RemoteAccessError, match="AZURE_STORAGE_CONNECTION_STRING"):
        ebooklet.open("az://container/db.blt", tmp_path / "a.blt", "c")


def test_a_connection_string_the_sdk_refuses_is_an_invalid_argument(tmp_path: pathlib.Path) -> None:
    conn = ebooklet.AzureConnection("container", "db.blt", connection_string="not a connection string")
    with pytest.raises(ebooklet.InvalidArgumentError, match="cannot reach az://container/db.blt"):
        ebooklet.open(conn, tmp_path / "a.blt", "c")


def test_cp_between_two_s3_stores_takes_each_sides_credentials_from_its_profile(
    moto_server: S3Server, seaweedfs_server: S3Server, tmp_path: pathlib.Path
) -> None:
    # Two named remotes, as AWS profiles: each brings its keys and its endpoint.
    (tmp_path / "credentials").write_text(
        f"[lab]\naws_access_key_id = {moto_server.access_key_id}\n"
        f"aws_secret_access_key = {moto_server.access_key}\n"
        f"[archive]\naws_access_key_id = {seaweedfs_server.access_key_id}\n"
        f"aws_secret_access_key = {seaweedfs_server.access_key}\n"
    )
    (tmp_path / "config").write_text(
        f"[profile lab]\nendpoint_url = {moto_server.endpoint_url}\n"
        f"[profile archive]\nendpoint_url = {seaweedfs_server.endpoint_url}\n"
    )
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
           "AWS_CONFIG_FILE": str(tmp_path / "config")}
    source = f"s3://{moto_server.make_bucket()}/rain/big.blt"
    target = f"s3://{seaweedfs_server.make_bucket()}/rain/big.blt"
    lab = ebooklet.S3Connection(moto_server.access_key_id, moto_server.access_key, "rain/big.blt",
                                source.split("/")[2], endpoint_url=moto_server.endpoint_url)
    _push(lab, tmp_path / "src.blt", {"a": b"1"})
    run = ebk(tmp_path, "cp", "--profile", "lab", source, target, "--target-profile", "archive", env=env)
    assert run.code == 0, run.err
    assert f"({seaweedfs_server.endpoint_url})" in run.out
    archive = ebooklet.S3Connection(seaweedfs_server.access_key_id, seaweedfs_server.access_key,
                                    "rain/big.blt", target.split("/")[2],
                                    endpoint_url=seaweedfs_server.endpoint_url)
    with ebooklet.open(archive, tmp_path / "copy.blt", "r") as copy:
        assert dict(copy.items()) == {"a": b"1"}


@pytest.mark.slow
@pytest.mark.parametrize("cloud_proxied", [pytest.param("azure", marks=pytest.mark.clouds)], indirect=True)
def test_a_large_segment_goes_up_to_azure_as_blocks_committed_under_the_condition(
    cloud_proxied: CloudProxied, tmp_path: pathlib.Path
) -> None:
    """As on S3 (tests/test_multipart.py): a segment of settings.multipart_from or more goes up
    as parallel blocks, committed by one Put Block List that carries ``If-None-Match: *``."""
    mib = 1 << 20
    big = bytes(range(256)) * (12 * mib // 256) + b"tail"
    with override(multipart_from=6 * mib, multipart_part=5 * mib):
        conn = cloud_proxied.conn(tmp_path.name)
        is_block = lambda r: "comp=block&" in r.query or r.query.endswith("comp=block")  # noqa: E731
        lists = cloud_proxied.proxy.add_rule(lambda r: "comp=blocklist" in r.query, None, times=None)
        writes = {"big": big, "small": b"s"}
        together, blocks, result = held_together(  # held until all three came: in flight together
            cloud_proxied.proxy, is_block, 3, lambda: _push(conn, tmp_path / "a.blt", writes))
    assert together and result.committed
    sent = [e.target for e in cloud_proxied.proxy.requests()]
    assert len([t for t in sent if "comp=block" in t and "blocklist" not in t]) == 3
    assert sorted(len(r.body) for r in blocks) == [len(big) - 10 * mib, 5 * mib, 5 * mib]
    assert [r.header("If-None-Match") for r in lists.requests] == ["*"]
    with ebooklet.open(cloud_proxied.conn(tmp_path.name, direct=True), tmp_path / "r.blt", "r") as reader:
        assert dict(reader.items()) == {"big": big, "small": b"s"}


def _gcs_names(proxied: CloudProxied, conn: Any, tmp_path: pathlib.Path) -> list[str]:
    """The names under the database's prefix, listed straight from the emulator."""
    from ebooklet.remote import connect

    remote = connect(proxied.conn(tmp_path.name, direct=True))
    try:
        return sorted(k[len(remote.prefix):] for k in remote.transport.list(remote.prefix))
    finally:
        remote.transport.close()


@pytest.mark.slow
@pytest.mark.parametrize("cloud_proxied", [pytest.param("gcs", marks=pytest.mark.clouds)], indirect=True)
def test_a_large_segment_goes_up_to_gcs_as_pieces_composed_under_the_condition(
    cloud_proxied: CloudProxied, tmp_path: pathlib.Path
) -> None:
    """GCS: pieces uploaded together, composed by one request with ifGenerationMatch=0, then
    deleted; the segment reads back whole."""
    mib = 1 << 20
    big = bytes(range(256)) * (12 * mib // 256) + b"tail"
    with override(multipart_from=6 * mib, multipart_part=5 * mib):
        conn = cloud_proxied.conn(tmp_path.name)
        is_piece = lambda r: r.path.startswith("/upload/") and b".piece-" in r.body[:4096]  # noqa: E731
        compose = cloud_proxied.proxy.add_rule(lambda r: r.path.endswith("/compose"), None, times=None)
        writes = {"big": big, "small": b"s"}
        together, _, result = held_together(  # held until all three came: in flight together
            cloud_proxied.proxy, is_piece, 3, lambda: _push(conn, tmp_path / "a.blt", writes))
    assert together and result.committed
    assert [urllib.parse.parse_qs(r.query).get("ifGenerationMatch") for r in compose.requests] == [["0"]]
    assert not [n for n in _gcs_names(cloud_proxied, conn, tmp_path) if ".piece-" in n]  # deleted
    with ebooklet.open(cloud_proxied.conn(tmp_path.name, direct=True), tmp_path / "r.blt", "r") as reader:
        assert dict(reader.items()) == {"big": big, "small": b"s"}


@pytest.mark.slow
@pytest.mark.parametrize("cloud_proxied", [pytest.param("gcs", marks=pytest.mark.clouds)], indirect=True)
def test_pieces_a_failed_push_could_not_delete_are_collected_by_gc(
    cloud_proxied: CloudProxied, tmp_path: pathlib.Path
) -> None:
    mib = 1 << 20
    with override(multipart_from=6 * mib, multipart_part=5 * mib):
        conn = cloud_proxied.conn(tmp_path.name)
        assert _push(conn, tmp_path / "a.blt", {"first": b"commit"}).committed
        cloud_proxied.proxy.add_rule(lambda r: r.path.endswith("/compose"), "reset", times=None)
        cloud_proxied.proxy.add_rule(lambda r: r.method == "DELETE" or "batch" in r.path, "reset", times=None)
        with pytest.raises(ebooklet.RemoteUnavailableError):
            _push(conn, tmp_path / "a.blt", {"big": bytes(12 * mib)})
        cloud_proxied.proxy.clear_rules()
    left = [n for n in _gcs_names(cloud_proxied, conn, tmp_path) if ".piece-" in n]
    assert len(left) == 3
    report = ebooklet.gc(cloud_proxied.conn(tmp_path.name, direct=True), min_age=0)
    assert set(left) <= set(report.removed)
    assert not [n for n in _gcs_names(cloud_proxied, conn, tmp_path) if ".piece-" in n]


@pytest.mark.slow
def test_the_requests_of_a_large_put_are_counted_as_the_store_sees_them(
    cloud_proxied: CloudProxied, tmp_path: pathlib.Path
) -> None:
    """``db.stats`` counts a put in blocks (Azure) or pieces (GCS) request by request."""
    from ebooklet.remote import connect

    mib = 1 << 20
    with override(multipart_from=6 * mib, multipart_part=5 * mib):
        remote = connect(cloud_proxied.conn(tmp_path.name))
        before = cloud_proxied.proxy.stats.requests
        remote.transport.put(remote.prefix + "big-object", bytes(12 * mib), "create")
        seen = cloud_proxied.proxy.stats.requests - before
        assert remote.transport.stats.requests == seen > 3
        remote.transport.close()
