"""The transport contract, proved against every backend, and what is particular to each.

The contract is stated once in :class:`ebooklet.testing.TransportTests`; each backend here
subclasses it with the ``transport`` under test and, for the read-only HTTP transport, a
``writer`` that seeds objects through S3.

The S3 and HTTP backends run against real servers on loopback (moto and SeaweedFS, see
servers.py). Buckets are slow to create, so each server gets one per session and every
test works under its own unique key prefix; tests of the one-time probe of conditional
writes, which is remembered per bucket, make buckets of their own.
"""

from __future__ import annotations

import inspect
import logging
import pathlib
import socket
import uuid
from collections.abc import Callable, Iterator

import pytest
import urllib3

from ebooklet.errors import (
    PreconditionFailed,
    RemoteAccessError,
    RemoteNotFoundError,
    RemoteUnavailableError,
)
from ebooklet.remote import CountingTransport, Remote, WrapperTransport, connect
from ebooklet.remote.azure import AzureTransport, container_client
from ebooklet.remote.base import PutMode, Transport, Update
from ebooklet.remote.fs import FolderTransport
from ebooklet.remote.gcs import GCSTransport
from ebooklet.remote.http import HttpTransport, make_pool
from ebooklet.remote.s3 import S3Transport
from ebooklet.testing import DATA, TransportTests

from .emulators import Emulator, make_gcs_bucket
from .faultproxy import FaultProxy
from .servers import S3Server


@pytest.fixture(scope="session")
def shared_bucket() -> Callable[[S3Server, bool], str]:
    """One bucket per (server, public) for the whole session: making buckets is slow."""
    buckets: dict[tuple[str, bool], str] = {}

    def get(server: S3Server, public_read: bool = False) -> str:
        key = (server.endpoint_url, public_read)
        if key not in buckets:
            buckets[key] = server.make_bucket(public_read=public_read)
        return buckets[key]

    return get


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def connection_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every TCP connection urllib3 tries from now on, as "host:port" (each is still made)."""
    attempts: list[str] = []
    real = urllib3.util.connection.create_connection

    def counted(address: tuple[str, int], *args, **kwargs) -> socket.socket:
        attempts.append(f"{address[0]}:{address[1]}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    return attempts


def assert_one_plain_sentence(message: str, url: str) -> None:
    where = url.removeprefix("http://")
    assert f"could not connect to {where} (connection refused). Check that the server is running" in message
    assert "Error" not in message and "HTTPConnection" not in message and "\n" not in message


def s3_transport(server: S3Server, bucket: str, **kwargs) -> S3Transport:
    kwargs.setdefault("retries", 1)
    return S3Transport(
        kwargs.pop("access_key_id", server.access_key_id),
        kwargs.pop("access_key", server.access_key),
        bucket,
        endpoint_url=kwargs.pop("endpoint_url", server.endpoint_url),
        **kwargs,
    )


# --- the local folder -----------------------------------------------------------------------


class TestFolderTransport(TransportTests):
    @pytest.fixture
    def transport(self, tmp_path: pathlib.Path) -> Iterator[Transport]:
        transport = FolderTransport(tmp_path / "remote")
        yield transport
        transport.close()

    @pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", "."])
    def test_keys_escaping_the_root_raise_value_error(self, transport, key):
        with pytest.raises(ValueError, match="escapes"):
            transport.put(key, DATA)
        with pytest.raises(ValueError, match="escapes"):
            transport.get(key)
        with pytest.raises(ValueError, match="escapes"):
            transport.get_range(key, 0, 1)
        with pytest.raises(ValueError, match="escapes"):
            transport.delete([key])
        assert not (transport.root.parent / "x").exists()

    def test_list_refuses_a_prefix_outside_the_root(self, transport, tmp_path):
        (tmp_path / "secret").write_bytes(b"secret")
        transport.put("inside", DATA)
        with pytest.raises(ValueError, match="escapes"):
            list(transport.list("../"))

    def test_put_leaves_no_temporary_files_behind(self, transport, prefix):
        key = prefix + "db.ebooklet/head"
        first = transport.put(key, b"first", "create")
        with pytest.raises(PreconditionFailed):
            transport.put(key, b"again", "create")
        with pytest.raises(PreconditionFailed):
            transport.put(key, b"stale", Update("not-the-etag"))
        transport.put(key, b"second", Update(first))
        transport.put(key, b"third", "overwrite")
        files = sorted(p.name for p in transport.root.rglob("*") if p.is_file())
        assert files == sorted([".ebooklet.lock", "head"])
        assert list(transport.list("")) == [key]

    def test_delete_removes_folders_it_empties_but_not_the_root(self, transport, prefix):
        keys = [prefix + "db.ebooklet/seg/c1-0", prefix + "db.ebooklet/index/0-0-c1"]
        for key in keys:
            transport.put(key, DATA)
        transport.put(prefix + "db.ebooklet/index/0-0-c1", b"next", Update(transport.get(keys[1]).etag))
        transport.put(prefix + "db", b"head")
        transport.delete(keys)
        assert not (transport.root / prefix / "db.ebooklet").exists()
        assert (transport.root / prefix / "db").read_bytes() == b"head"
        transport.delete([prefix + "db"])
        assert not (transport.root / prefix).exists()
        assert transport.root.is_dir() and list(transport.root.iterdir()) == []

    def test_list_of_a_root_that_does_not_exist_yet_is_empty(self, tmp_path):
        assert list(FolderTransport(tmp_path / "not-yet").list("")) == []


class TestCountingTransportOverAFolder(TransportTests):
    """The counting wrapper is a transport too, and keeps every contract of what it wraps."""

    @pytest.fixture
    def transport(self, tmp_path: pathlib.Path) -> Iterator[Transport]:
        transport = CountingTransport(FolderTransport(tmp_path / "remote"))
        yield transport
        transport.close()

    def test_every_remote_counts_through_one_wrapper_of_its_own(self, tmp_path):
        remote = connect(tmp_path / "remote" / "db")
        assert isinstance(remote.transport, CountingTransport)
        assert isinstance(remote.transport.inner, FolderTransport)
        again = Remote(remote.transport, remote.db_key, remote.location)
        assert again.transport is remote.transport  # not wrapped twice
        assert connect(again) is again


class TestWrapperTransportOverAFolder(TransportTests):
    """The forwarding base of every wrapper keeps every contract of what it wraps."""

    @pytest.fixture
    def transport(self, tmp_path: pathlib.Path) -> Iterator[Transport]:
        transport = WrapperTransport(FolderTransport(tmp_path / "remote"))
        yield transport
        transport.close()


def _public_methods(cls: type) -> list[str]:
    return sorted(
        name for name in dir(cls)
        if not name.startswith("_") and inspect.isfunction(inspect.getattr_static(cls, name))
    )


def test_a_wrapper_that_overrides_nothing_forwards_every_method_of_transport():
    # Every public method, those with a default in Transport too: a method added to Transport
    # later fails here until WrapperTransport forwards it.
    names = _public_methods(Transport)
    assert {"get", "get_start", "copy", "list", "close"} <= set(names)
    calls: list[tuple[str, tuple]] = []

    def recorder(name: str) -> Callable[..., object]:
        def method(self, *args):
            calls.append((name, args))
            return f"{name}'s answer"
        return method

    inner_class = type("Recording", (Transport,), {name: recorder(name) for name in names})
    inner = inner_class()
    inner.description, inner.writable, inner.delete_batch_size = "recorded", False, 7

    class Bare(WrapperTransport):
        pass

    wrapper = Bare(inner)
    assert (wrapper.description, wrapper.writable, wrapper.delete_batch_size) == ("recorded", False, 7)
    for name in names:
        params = list(inspect.signature(getattr(Transport, name)).parameters)[1:]
        args = tuple(object() for _ in params)
        calls.clear()
        answer = getattr(wrapper, name)(*args)
        assert calls == [(name, args)], f"WrapperTransport.{name} does not reach the inner transport"
        if name not in ("close", "delete", "abort_upload"):  # those answer nothing
            assert answer == f"{name}'s answer", f"WrapperTransport.{name} drops the inner answer"


def test_wrappers_of_the_same_kind_copy_inside_the_store_and_of_another_kind_decline(tmp_path):
    folder = FolderTransport(tmp_path / "remote")
    folder.put("src", b"data")
    source = WrapperTransport(folder)
    assert source.copy("src", WrapperTransport(folder), "dst") is True
    assert folder.get("dst").data == b"data"

    class Other(WrapperTransport):
        pass

    assert source.copy("src", Other(folder), "dst2") is False


# --- S3 against moto and SeaweedFS ----------------------------------------------------------


class RecordingS3Transport(S3Transport):
    """An S3 transport that records its puts."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.puts: list[str] = []

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        self.puts.append(key)
        return super().put(key, data, mode)


class S3TransportTests(TransportTests):
    has_fallback_lock = True

    @pytest.fixture
    def server(self) -> S3Server:
        raise NotImplementedError

    @pytest.fixture
    def bucket(self, server, shared_bucket) -> str:
        return shared_bucket(server)

    @pytest.fixture
    def transport(self, server, bucket) -> Iterator[Transport]:
        transport = s3_transport(server, bucket, max_connections=10)
        yield transport
        transport.close()

    @pytest.fixture
    def credentials(self, server) -> list[str]:
        return [server.access_key]

    @pytest.mark.parametrize(
        "operation",
        [
            lambda t: t.get("k"),
            lambda t: t.get_range("k", 0, 1),
            lambda t: t.put("k", DATA),
            lambda t: t.put("k", DATA, "create"),
            lambda t: t.delete(["k"]),
            lambda t: list(t.list("k/")),
        ],
        ids=["get", "get_range", "put", "put-create", "delete", "list"],
    )
    def test_a_bucket_that_does_not_exist_raises_remote_not_found(self, server, operation):
        transport = s3_transport(server, f"ebk-missing-{uuid.uuid4().hex[:12]}")
        with pytest.raises(RemoteNotFoundError, match="bucket does not exist|NoSuchBucket"):
            operation(transport)

    @pytest.mark.parametrize(
        "operation",
        [
            lambda t: t.get("k"),
            lambda t: t.get_range("k", 0, 1),
            lambda t: t.put("k", DATA, "create"),
            lambda t: t.delete(["k"]),
            lambda t: list(t.list("k/")),
        ],
        ids=["get", "get_range", "put", "delete", "list"],
    )
    def test_a_refused_connection_is_tried_once_and_said_in_one_sentence(
        self, server, operation, connection_attempts
    ):
        # retries=3 as by default: a refused connection is still tried only once (its answer
        # cannot change), and the user reads where, and why, without urllib3's reprs.
        url = closed_port_url()
        transport = s3_transport(server, "any-bucket", endpoint_url=url, retries=3)
        with pytest.raises(RemoteUnavailableError) as raised:
            operation(transport)
        assert connection_attempts == [url.removeprefix("http://")]
        assert_one_plain_sentence(str(raised.value), url)

    # --- the probe of conditional writes --------------------------------------------------------

    def test_conditional_writes_are_probed_once_per_endpoint_and_bucket(self, server, prefix):
        bucket = server.make_bucket()  # never probed yet
        first = RecordingS3Transport(server.access_key_id, server.access_key, bucket,
                                     endpoint_url=server.endpoint_url)
        assert first.supports_conditional_writes(prefix) is True
        assert len(first.puts) == 2 and first.puts[0].startswith(prefix + "probe-")
        assert list(first.list("")) == []  # the probe object was deleted
        second = RecordingS3Transport(server.access_key_id, server.access_key, bucket,
                                      endpoint_url=server.endpoint_url)
        assert second.supports_conditional_writes("elsewhere/") is True
        assert second.puts == []

    def test_a_probe_whose_cleanup_fails_still_answers_and_logs(self, server, prefix, caplog):
        bucket = server.make_bucket()
        with FaultProxy(server.endpoint_url) as proxy:
            # Every delete (a DeleteObjects POST) is answered 503 on the wire.
            proxy.add_rule(lambda r: r.method == "POST" and "delete" in r.query, "503", times=None)
            transport = RecordingS3Transport(server.access_key_id, server.access_key, bucket,
                                             endpoint_url=proxy.url)
            with caplog.at_level(logging.WARNING, logger="ebooklet.remote.s3"):
                assert transport.supports_conditional_writes(prefix) is True
            assert [e.fault for e in proxy.requests(lambda e: e.method == "POST")] == ["503"]
        assert "could not delete the probe object" in caplog.text and "503" in caplog.text
        direct = s3_transport(server, bucket)
        assert list(direct.list("")) == transport.puts[:1]  # left behind, and harmless

    def test_a_probe_in_a_bucket_that_does_not_exist_says_so(self, server, prefix):
        transport = RecordingS3Transport(server.access_key_id, server.access_key,
                                         f"ebk-missing-{uuid.uuid4().hex[:12]}",
                                         endpoint_url=server.endpoint_url, retries=0)
        with pytest.raises(RemoteNotFoundError, match="the bucket does not exist") as info:
            transport.supports_conditional_writes(prefix)
        assert "delet" not in str(info.value)
        assert len(transport.puts) == 1  # the first put was refused: nothing to clean up
        # A failed probe is not remembered.
        with pytest.raises(RemoteNotFoundError):
            transport.supports_conditional_writes(prefix)


class TestS3TransportOnMoto(S3TransportTests):
    @pytest.fixture
    def server(self, moto_server) -> S3Server:
        return moto_server


class TestS3TransportOnSeaweedFS(S3TransportTests):
    @pytest.fixture
    def server(self, seaweedfs_server) -> S3Server:
        return seaweedfs_server

    @pytest.mark.parametrize(
        "operation",
        [
            lambda t, p: t.get(p + "k"),
            lambda t, p: t.get_range(p + "k", 0, 1),
            lambda t, p: t.put(p + "k", DATA, "create"),
            lambda t, p: list(t.list(p)),
        ],
        ids=["get", "get_range", "put", "list"],
    )
    def test_a_wrong_secret_key_raises_remote_access_error_about_credentials(
        self, server, bucket, transport, prefix, operation
    ):
        transport.put(prefix + "k", DATA)
        wrong = s3_transport(server, bucket, access_key="not-the-secret-key")
        with pytest.raises(RemoteAccessError, match="credentials"):
            operation(wrong, prefix)
        assert transport.get(prefix + "k").data == DATA  # nothing was changed

    def test_a_delete_with_a_wrong_secret_key_is_refused_and_deletes_nothing(
        self, server, bucket, transport, prefix
    ):
        transport.put(prefix + "k", DATA)
        wrong = s3_transport(server, bucket, access_key="not-the-secret-key")
        with pytest.raises(RemoteAccessError, match="refused"):
            wrong.delete([prefix + "k"])
        assert transport.get(prefix + "k").data == DATA

    def test_a_probe_with_a_wrong_secret_key_says_the_credentials_were_refused(self, server, prefix):
        bucket = server.make_bucket()  # never probed yet
        wrong = RecordingS3Transport(server.access_key_id, "not-the-secret-key", bucket,
                                     endpoint_url=server.endpoint_url, retries=0)
        with pytest.raises(RemoteAccessError, match="Check the credentials") as info:
            wrong.supports_conditional_writes(prefix)
        assert "SignatureDoesNotMatch" in str(info.value)
        assert "delet" not in str(info.value)
        assert len(wrong.puts) == 1
        right = s3_transport(server, bucket)
        assert list(right.list("")) == []
        assert right.supports_conditional_writes(prefix) is True  # the failure was not remembered


# --- read-only HTTP over a public-read bucket -----------------------------------------------


class HttpTransportTests(TransportTests):
    writable = False
    conditional_writes = False

    @pytest.fixture
    def server(self) -> S3Server:
        raise NotImplementedError

    @pytest.fixture
    def bucket(self, server, shared_bucket) -> str:
        return shared_bucket(server, public_read=True)

    @pytest.fixture
    def transport(self, server, bucket) -> Iterator[Transport]:
        transport = HttpTransport(f"{server.endpoint_url}/{bucket}/")
        yield transport
        transport.close()

    @pytest.fixture
    def writer(self, server, bucket) -> Iterator[Transport]:
        writer = s3_transport(server, bucket)
        yield writer
        writer.close()

    def test_a_refused_url_is_tried_once_and_said_in_one_sentence(self, connection_attempts):
        url = closed_port_url()
        transport = HttpTransport(url + "/bucket/", pool=make_pool(retries=3))
        with pytest.raises(RemoteUnavailableError) as got:
            transport.get("k")
        assert_one_plain_sentence(str(got.value), url)
        with pytest.raises(RemoteUnavailableError) as ranged:
            transport.get_range("k", 0, 1)
        assert_one_plain_sentence(str(ranged.value), url)
        assert connection_attempts == [url.removeprefix("http://")] * 2

    def test_a_reset_connection_is_still_retried(self, server, bucket, writer, prefix):
        # What can change is retried: a reset before the answer, on the way through a proxy.
        writer.put(prefix + "obj", DATA)
        with FaultProxy(server.endpoint_url) as proxy:
            proxy.add_rule(lambda r: r.key == prefix + "obj", "reset", times=1)
            transport = HttpTransport(f"{proxy.url}/{bucket}/", pool=make_pool(retries=3))
            assert transport.get(prefix + "obj").data == DATA
            transport.close()
            assert [entry.fault for entry in proxy.requests()] == ["reset", None]


class TestHttpTransportOnMoto(HttpTransportTests):
    @pytest.fixture
    def server(self, moto_server) -> S3Server:
        return moto_server


class TestHttpTransportOnSeaweedFS(HttpTransportTests):
    @pytest.fixture
    def server(self, seaweedfs_server) -> S3Server:
        return seaweedfs_server

    def test_a_bucket_without_public_read_raises_remote_access_error(self, server, shared_bucket, prefix):
        private = shared_bucket(server)
        s3_transport(server, private).put(prefix + "obj", DATA)
        transport = HttpTransport(f"{server.endpoint_url}/{private}/")
        with pytest.raises(RemoteAccessError, match="anonymous reads"):
            transport.get(prefix + "obj")


def test_each_contract_runs_only_for_the_transports_it_applies_to():
    def marked(mark: str) -> list[str]:
        return [name for name in dir(TransportTests) if getattr(getattr(TransportTests, name), mark, False)]

    write_tests, read_only_tests = marked("write_contract"), marked("read_only_contract")
    assert len(write_tests) >= 15 and len(read_only_tests) >= 2
    assert [name for name in dir(TransportTests) if getattr(TransportTests, name, None) is None] == []
    for writable in (TestFolderTransport, TestS3TransportOnMoto, TestS3TransportOnSeaweedFS, TestGCSTransport,
                     TestAzureTransport):
        assert all(getattr(writable, name) is not None for name in write_tests)
        assert all(getattr(writable, name) is None for name in read_only_tests)
    for read_only in (TestHttpTransportOnMoto, TestHttpTransportOnSeaweedFS, TestHttpTransportOnAzurite):
        assert all(getattr(read_only, name) is None for name in write_tests)
        assert all(getattr(read_only, name) is not None for name in read_only_tests)


# --- Google Cloud Storage against fake-gcs-server, Azure Blob against Azurite ---------------


@pytest.mark.clouds
class TestGCSTransport(TransportTests):
    @pytest.fixture
    def transport(self, fake_gcs_server: Emulator, gcs_bucket: str) -> Iterator[Transport]:
        transport = GCSTransport(gcs_bucket, endpoint_url=fake_gcs_server.endpoint_url, retries=1)
        yield transport
        transport.close()

    def test_a_copy_to_another_bucket_of_the_endpoint_is_done_by_the_server(
        self, transport, fake_gcs_server, prefix
    ):
        other = GCSTransport(make_gcs_bucket(fake_gcs_server), endpoint_url=fake_gcs_server.endpoint_url)
        transport.put(prefix + "src", DATA)
        target = CountingTransport(other)
        assert CountingTransport(transport).copy(prefix + "src", target, prefix + "dst") is True
        assert other.get(prefix + "dst").data == DATA
        assert target.stats.snapshot() == (1, 0, 0)  # one request, nothing uploaded


@pytest.mark.clouds
class TestAzureTransport(TransportTests):
    @pytest.fixture
    def transport(self, azurite_server: Emulator, azure_container: str) -> Iterator[Transport]:
        connection = azurite_server.connection_string
        client = container_client(azure_container, connection_string=connection, retries=1)
        transport = AzureTransport(client)
        yield transport
        transport.close()

    @pytest.fixture
    def credentials(self, azurite_server: Emulator) -> list[str]:
        return [azurite_server.connection_string.split("AccountKey=")[1].split(";")[0]]


@pytest.mark.clouds
class TestHttpTransportOnAzurite(TransportTests):
    """Public reads of a container (public access "blob") through the same https URL form as
    S3's: ``https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY`` (Azurite serves the same
    paths under its account). Google Cloud Storage's public reads are tested end to end in
    test_clouds.py: its reader's ETags are not the generations its writer returns."""

    writable = False
    conditional_writes = False

    @pytest.fixture
    def transport(self, azurite_server: Emulator, azure_public_container: str) -> Iterator[Transport]:
        transport = HttpTransport(f"{azurite_server.endpoint_url}/{azure_public_container}/")
        yield transport
        transport.close()

    @pytest.fixture
    def writer(self, azurite_server: Emulator, azure_public_container: str) -> Iterator[Transport]:
        connection = azurite_server.connection_string
        client = container_client(azure_public_container, connection_string=connection, retries=1)
        writer = AzureTransport(client)
        yield writer
        writer.close()


class _NoConditions(FolderTransport):
    """A store that declares no conditional writes and has no lock to fall back on."""

    def supports_conditional_writes(self, scratch_prefix: str) -> bool:
        return False


@pytest.mark.parametrize("remote_lock", ["session", "push"])
def test_a_store_without_conditional_writes_or_a_fallback_lock_refuses_writers_and_says_why(
    tmp_path: pathlib.Path, remote_lock: str
) -> None:
    import ebooklet

    remote = Remote(_NoConditions(tmp_path / "remote"), "db", "a store without conditional writes")
    why = "no lock for stores without conditional writes; ebooklet cannot push to it safely"
    with pytest.raises(ebooklet.RemoteError, match=why):
        with ebooklet.open(remote, tmp_path / "a.blt", "c", remote_lock=remote_lock) as db:
            db["k"] = b"v"
            db.changes().push()
    assert list(FolderTransport(tmp_path / "remote").list("")) == []  # nothing was committed
