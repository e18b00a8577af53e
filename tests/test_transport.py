"""The transport contract (see ebooklet/remote/base.py), proved against every backend.

:class:`TransportTests` states the contract once; each backend subclasses it and provides
the ``transport`` under test and a ``writer`` that seeds objects for the read tests (the
transport itself, except for the read-only HTTP transport, which is seeded through S3).
Tests marked :func:`write_contract` are replaced, for read-only transports, by
``test_every_write_raises_read_only_error``.

The S3 and HTTP backends run against real servers on loopback (moto and SeaweedFS, see
servers.py). Buckets are slow to create, so each server gets one per session and every
test works under its own unique key prefix; tests of the one-time probe of conditional
writes, which is remembered per bucket, make buckets of their own.
"""

from __future__ import annotations

import logging
import pathlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from ebooklet.errors import (
    PreconditionFailed,
    ReadOnlyError,
    RemoteAccessError,
    RemoteFormatError,
    RemoteNotFoundError,
    RemoteUnavailableError,
)
from ebooklet.remote import CountingTransport, Remote, connect
from ebooklet.remote.base import Blob, PutMode, Transport, Update
from ebooklet.remote.fs import FolderTransport
from ebooklet.remote.http import HttpTransport, make_pool
from ebooklet.remote.s3 import S3Transport

from .servers import S3Server

DATA = b"0123456789"


def write_contract(test: Callable) -> Callable:
    """Mark a test that writes through the transport under test."""
    test.write_contract = True  # type: ignore[attr-defined]
    return test


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


def s3_transport(server: S3Server, bucket: str, **kwargs) -> S3Transport:
    kwargs.setdefault("retries", 1)
    return S3Transport(
        kwargs.pop("access_key_id", server.access_key_id),
        kwargs.pop("access_key", server.access_key),
        bucket,
        endpoint_url=kwargs.pop("endpoint_url", server.endpoint_url),
        **kwargs,
    )


class TransportTests:
    """The contract every transport honours. Subclasses provide the fixtures below."""

    #: False for read-only transports: the write contracts are replaced by refusals.
    writable = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.writable:
            for name in dir(cls):
                if getattr(getattr(cls, name, None), "write_contract", False):
                    setattr(cls, name, None)  # pytest does not collect a None attribute

    @pytest.fixture
    def transport(self) -> Iterator[Transport]:
        raise NotImplementedError

    @pytest.fixture
    def writer(self, transport: Transport) -> Transport:
        return transport

    @pytest.fixture
    def prefix(self) -> str:
        """A key prefix no other test uses (servers and buckets are shared)."""
        return f"t-{uuid.uuid4().hex[:12]}/"

    # --- reads -----------------------------------------------------------------------------

    def test_get_returns_the_bytes_and_the_etag_that_put_returned(self, transport, writer, prefix):
        etag = writer.put(prefix + "obj", DATA)
        blob = transport.get(prefix + "obj")
        assert isinstance(blob, Blob)
        assert blob.data == DATA
        assert blob.etag and blob.etag == etag

    def test_get_with_the_current_etag_returns_none(self, transport, writer, prefix):
        etag = writer.put(prefix + "obj", DATA)
        assert transport.get(prefix + "obj", if_none_match=etag) is None

    def test_get_with_another_etag_returns_the_object(self, transport, writer, prefix):
        old = writer.put(prefix + "obj", b"old")
        new = writer.put(prefix + "obj", b"new")
        assert old != new
        blob = transport.get(prefix + "obj", if_none_match=old)
        assert blob == Blob(b"new", new)

    def test_get_of_an_absent_object_raises_remote_not_found(self, transport, prefix):
        with pytest.raises(RemoteNotFoundError):
            transport.get(prefix + "absent")
        with pytest.raises(RemoteNotFoundError):
            transport.get(prefix + "absent", if_none_match='"0123"')

    def test_remote_not_found_is_also_a_file_not_found_error(self, transport, prefix):
        with pytest.raises(FileNotFoundError):
            transport.get(prefix + "absent")

    @pytest.mark.parametrize(
        ("start", "length", "expected"),
        [(0, 10, DATA), (0, 1, b"0"), (2, 3, b"234"), (9, 1, b"9"), (4, 6, b"456789")],
    )
    def test_get_range_returns_exactly_the_requested_bytes(
        self, transport, writer, prefix, start, length, expected
    ):
        writer.put(prefix + "obj", DATA)
        assert transport.get_range(prefix + "obj", start, length) == expected

    @pytest.mark.parametrize(
        ("start", "length"),
        [(8, 5), (0, 11), (10, 1), (50, 2)],
        ids=["overlapping-the-end", "one-byte-too-many", "starting-at-the-end", "far-past-the-end"],
    )
    def test_get_range_past_the_end_raises_remote_format_error(
        self, transport, writer, prefix, start, length
    ):
        writer.put(prefix + "obj", DATA)
        with pytest.raises(RemoteFormatError):
            transport.get_range(prefix + "obj", start, length)

    def test_get_range_of_an_absent_object_raises_remote_not_found(self, transport, prefix):
        with pytest.raises(RemoteNotFoundError):
            transport.get_range(prefix + "absent", 0, 1)

    def test_keys_with_spaces_and_unicode_round_trip(self, transport, writer, prefix):
        key = prefix + "data/mes données + 100%/ключ #1.blt"
        etag = writer.put(key, DATA)
        assert transport.get(key) == Blob(DATA, etag)
        assert transport.get_range(key, 3, 2) == b"34"
        if transport.writable:
            assert list(transport.list(prefix)) == [key]

    def test_get_range_of_zero_bytes_is_empty_and_makes_no_request(self, transport, writer, prefix):
        writer.put(prefix + "obj", DATA)
        counted = CountingTransport(transport)
        assert counted.get_range(prefix + "obj", 3, 0) == b""
        assert counted.get_range(prefix + "absent", 0, 0) == b""
        assert counted.stats.snapshot() == (0, 0, 0)

    def test_reads_count_requests_and_bytes_received(self, transport, writer, prefix):
        etag = writer.put(prefix + "obj", DATA)
        counted = CountingTransport(transport)
        counted.get(prefix + "obj")
        assert counted.stats.snapshot() == (1, 0, len(DATA))
        counted.get_range(prefix + "obj", 2, 3)
        assert counted.stats.snapshot() == (2, 0, len(DATA) + 3)
        assert counted.get(prefix + "obj", if_none_match=etag) is None
        assert counted.stats.snapshot() == (3, 0, len(DATA) + 3)  # a 304 moves no body
        with pytest.raises(RemoteNotFoundError):
            counted.get(prefix + "absent")
        assert counted.stats.snapshot() == (4, 0, len(DATA) + 3)  # failed requests count too

    # --- writes ----------------------------------------------------------------------------

    @write_contract
    def test_put_create_writes_an_absent_object(self, transport, prefix):
        etag = transport.put(prefix + "obj", DATA, "create")
        assert transport.get(prefix + "obj") == Blob(DATA, etag)

    @write_contract
    def test_put_create_on_an_existing_object_fails_and_leaves_it_unchanged(self, transport, prefix):
        etag = transport.put(prefix + "obj", b"first", "create")
        with pytest.raises(PreconditionFailed) as info:
            transport.put(prefix + "obj", b"second", "create")
        assert info.value.key == prefix + "obj"
        assert info.value.exists is True
        assert transport.get(prefix + "obj") == Blob(b"first", etag)

    @write_contract
    def test_put_update_with_the_current_etag_replaces_the_object(self, transport, prefix):
        first = transport.put(prefix + "obj", b"first", "create")
        second = transport.put(prefix + "obj", b"second", Update(first))
        assert second != first
        assert transport.get(prefix + "obj") == Blob(b"second", second)
        # The ETag returned by an update is good for the next update.
        third = transport.put(prefix + "obj", b"third", Update(second))
        assert transport.get(prefix + "obj") == Blob(b"third", third)

    @write_contract
    def test_put_update_with_a_stale_etag_fails_and_leaves_the_object_unchanged(self, transport, prefix):
        stale = transport.put(prefix + "obj", b"first")
        current = transport.put(prefix + "obj", b"second")
        with pytest.raises(PreconditionFailed) as info:
            transport.put(prefix + "obj", b"third", Update(stale))
        assert info.value.exists is not True
        assert transport.get(prefix + "obj") == Blob(b"second", current)

    @write_contract
    def test_put_update_of_an_absent_object_fails_and_creates_nothing(self, transport, prefix):
        with pytest.raises(PreconditionFailed) as info:
            transport.put(prefix + "obj", DATA, Update('"d41d8cd98f00b204e9800998ecf8427e"'))
        assert info.value.exists is not True
        with pytest.raises(RemoteNotFoundError):
            transport.get(prefix + "obj")

    @write_contract
    def test_put_overwrite_writes_whether_or_not_the_object_exists(self, transport, prefix):
        first = transport.put(prefix + "obj", b"first", "overwrite")
        assert transport.get(prefix + "obj") == Blob(b"first", first)
        second = transport.put(prefix + "obj", b"second")  # "overwrite" is the default
        assert transport.get(prefix + "obj") == Blob(b"second", second)

    @write_contract
    def test_put_of_empty_data_stores_an_empty_object(self, transport, prefix):
        etag = transport.put(prefix + "empty", b"", "create")
        assert transport.get(prefix + "empty") == Blob(b"", etag)

    @write_contract
    def test_exactly_one_of_8_concurrent_creates_wins(self, transport, prefix):
        n = 8
        start = threading.Barrier(n)
        results: list[tuple[bytes, str | Exception]] = []
        lock = threading.Lock()

        def create(i: int) -> None:
            data = f"writer {i}".encode()
            start.wait()
            try:
                outcome: str | Exception = transport.put(prefix + "head", data, "create")
            except Exception as exc:  # collected and checked below
                outcome = exc
            with lock:
                results.append((data, outcome))

        threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [(data, etag) for data, etag in results if isinstance(etag, str)]
        losers = [exc for _, exc in results if not isinstance(exc, str)]
        assert len(winners) == 1, results
        assert len(losers) == n - 1
        assert all(isinstance(exc, PreconditionFailed) and exc.exists is True for exc in losers), losers
        data, etag = winners[0]
        assert transport.get(prefix + "head") == Blob(data, etag)

    @write_contract
    def test_exactly_one_of_8_concurrent_updates_of_the_same_version_wins(self, transport, prefix):
        n = 8
        base = transport.put(prefix + "head", b"base", "create")
        start = threading.Barrier(n)
        results: list[tuple[bytes, str | Exception]] = []
        lock = threading.Lock()

        def update(i: int) -> None:
            data = f"writer {i}".encode()
            start.wait()
            try:
                outcome: str | Exception = transport.put(prefix + "head", data, Update(base))
            except Exception as exc:  # collected and checked below
                outcome = exc
            with lock:
                results.append((data, outcome))

        threads = [threading.Thread(target=update, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [(data, etag) for data, etag in results if isinstance(etag, str)]
        assert len(winners) == 1, results
        assert all(isinstance(exc, PreconditionFailed) for _, exc in results if not isinstance(exc, str))
        data, etag = winners[0]
        assert transport.get(prefix + "head") == Blob(data, etag)

    @write_contract
    def test_delete_removes_the_objects_and_ignores_absent_keys(self, transport, prefix):
        transport.put(prefix + "a", b"a")
        transport.put(prefix + "b", b"b")
        transport.put(prefix + "keep", b"keep")
        transport.delete([prefix + "a", prefix + "never-existed", prefix + "b"])
        for key in ("a", "b"):
            with pytest.raises(RemoteNotFoundError):
                transport.get(prefix + key)
        assert transport.get(prefix + "keep").data == b"keep"
        transport.delete([prefix + "a", prefix + "b"])  # deleting again is fine
        transport.delete([])
        assert sorted(transport.list(prefix)) == [prefix + "keep"]

    @write_contract
    def test_list_yields_exactly_the_keys_under_the_prefix(self, transport, prefix):
        inside = [prefix + "data/a.ebooklet/seg/c1-0", prefix + "data/a.ebooklet/index/0-0-c1"]
        outside = [
            prefix + "data/a",  # the head of the database is not under its prefix
            prefix + "data/ab",
            prefix + "data/ab.ebooklet/seg/c1-0",
            prefix + "data/a.ebooklet2/seg/c1-0",
            prefix + "data/b.ebooklet/seg/c1-0",
        ]
        for key in inside + outside:
            transport.put(key, key.encode())
        assert sorted(transport.list(prefix + "data/a.ebooklet/")) == sorted(inside)
        assert sorted(transport.list(prefix + "data/ab.ebooklet/")) == [prefix + "data/ab.ebooklet/seg/c1-0"]
        assert sorted(transport.list(prefix)) == sorted(inside + outside)
        # A prefix is a plain string prefix, not a folder.
        assert sorted(transport.list(prefix + "data/a")) == sorted(inside + outside[:4])
        assert list(transport.list(prefix + "nothing-here/")) == []

    @write_contract
    def test_writes_count_requests_and_bytes_sent(self, transport, prefix):
        counted = CountingTransport(transport)
        counted.put(prefix + "obj", DATA)
        assert counted.stats.snapshot() == (1, len(DATA), 0)
        with pytest.raises(PreconditionFailed):
            counted.put(prefix + "obj", b"abc", "create")
        assert counted.stats.snapshot() == (2, len(DATA) + 3, 0)  # refused writes are requests too
        listing = counted.list(prefix)
        assert counted.stats.requests == 2  # a listing counts once it is read
        assert list(listing) == [prefix + "obj"]
        assert counted.stats.requests == 3
        keys = [prefix + "obj", *(f"{prefix}absent-{i}" for i in range(4))]
        counted.delete(keys)
        batches = -(-len(keys) // transport.delete_batch_size)
        assert counted.stats.snapshot() == (3 + batches, len(DATA) + 3, 0)
        counted.delete([])
        assert counted.stats.requests == 3 + batches

    @write_contract
    def test_a_copy_inside_the_store_counts_one_request_on_the_target(self, transport, prefix):
        transport.put(prefix + "src", DATA)
        source, target = CountingTransport(transport), CountingTransport(transport)
        done = source.copy(prefix + "src", target, prefix + "dst")
        assert source.stats.snapshot() == (0, 0, 0)
        assert target.stats.snapshot() == ((1, 0, 0) if done else (0, 0, 0))


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


# --- S3 against moto and SeaweedFS ----------------------------------------------------------


class RecordingS3Transport(S3Transport):
    """An S3 transport that records its puts and can be told to fail its deletes."""

    def __init__(self, *args, fail_deletes: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.puts: list[str] = []
        self.fail_deletes = fail_deletes

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str:
        self.puts.append(key)
        return super().put(key, data, mode)

    def delete(self, keys: list[str]) -> None:
        if self.fail_deletes:
            raise RemoteUnavailableError(f"deleting {keys} failed (injected)")
        super().delete(keys)


class S3TransportTests(TransportTests):
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
    def test_an_unreachable_endpoint_raises_remote_unavailable_quickly(self, server, operation):
        transport = s3_transport(server, "any-bucket", endpoint_url=closed_port_url(), retries=0)
        started = time.monotonic()
        with pytest.raises(RemoteUnavailableError):
            operation(transport)
        assert time.monotonic() - started < 5

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
        transport = RecordingS3Transport(server.access_key_id, server.access_key, bucket,
                                         endpoint_url=server.endpoint_url, fail_deletes=True)
        with caplog.at_level(logging.WARNING, logger="ebooklet.remote.s3"):
            assert transport.supports_conditional_writes(prefix) is True
        assert "could not delete the probe object" in caplog.text
        assert "injected" in caplog.text
        assert list(transport.list("")) == transport.puts[:1]  # left behind, and harmless

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

    @pytest.mark.parametrize(
        "operation",
        [
            lambda t, p: t.put(p + "obj", b"new"),
            lambda t, p: t.put(p + "obj", b"new", "create"),
            lambda t, p: t.put(p + "obj", b"new", Update(t.get(p + "obj").etag)),
            lambda t, p: t.delete([p + "obj"]),
            lambda t, p: list(t.list(p)),
        ],
        ids=["put", "put-create", "put-update", "delete", "list"],
    )
    def test_every_write_raises_read_only_error(self, transport, writer, prefix, operation):
        etag = writer.put(prefix + "obj", DATA)
        assert transport.writable is False
        with pytest.raises(ReadOnlyError, match="read-only") as info:
            operation(transport, prefix)
        assert isinstance(info.value, PermissionError)
        assert transport.get(prefix + "obj") == Blob(DATA, etag)

    def test_a_refused_write_makes_no_request(self, transport, prefix):
        counted = CountingTransport(transport)
        with pytest.raises(ReadOnlyError):
            counted.put(prefix + "obj", DATA)
        with pytest.raises(ReadOnlyError):
            counted.delete([prefix + "obj"])
        with pytest.raises(ReadOnlyError):
            list(counted.list(prefix))
        assert counted.stats.snapshot() == (0, 0, 0)

    def test_an_unreachable_url_raises_remote_unavailable_quickly(self):
        transport = HttpTransport(closed_port_url() + "/bucket/", pool=make_pool(retries=0))
        started = time.monotonic()
        with pytest.raises(RemoteUnavailableError):
            transport.get("k")
        with pytest.raises(RemoteUnavailableError):
            transport.get_range("k", 0, 1)
        assert time.monotonic() - started < 5


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


def test_write_contracts_are_disabled_only_for_read_only_transports():
    disabled = [name for name in dir(TransportTests) if getattr(TransportTests, name, None) is None]
    assert disabled == []
    write_tests = [
        name for name in dir(TransportTests) if hasattr(getattr(TransportTests, name), "write_contract")
    ]
    assert len(write_tests) >= 10
    assert all(getattr(TestHttpTransportOnMoto, name) is None for name in write_tests)
    assert all(getattr(TestFolderTransport, name) is not None for name in write_tests)
