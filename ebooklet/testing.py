"""Conformance tests for transports: every contract of :class:`~ebooklet.remote.Transport`, once.

A backend's test module subclasses :class:`TransportTests`, provides the ``transport`` fixture
(and ``writer`` when the transport cannot write its own test objects), and sets the class
flags that say what the backend can do. For example, the tests of the folder transport::

    import pytest
    from ebooklet.remote.fs import FolderTransport
    from ebooklet.testing import TransportTests

    class TestFolderTransport(TransportTests):
        @pytest.fixture
        def transport(self, tmp_path):
            transport = FolderTransport(tmp_path / "remote")
            yield transport
            transport.close()

This module needs pytest, a test dependency of ebooklet: nothing in the package imports it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .errors import EbookletError, PreconditionFailed, ReadOnlyError, RemoteFormatError, RemoteNotFoundError
from .remote.base import Blob, Transport, Update
from .remote.counting import CountingTransport
from .remote.wrapper import WrapperTransport

__all__ = ["DATA", "TransportTests", "read_only_contract", "write_contract"]

#: The bytes most tests store.
DATA = b"0123456789"


def write_contract(test: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a test of :class:`TransportTests` that only a writable transport runs."""
    test.write_contract = True  # type: ignore[attr-defined]
    return test


def read_only_contract(test: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a test of :class:`TransportTests` that only a read-only transport runs."""
    test.read_only_contract = True  # type: ignore[attr-defined]
    return test


class _Elsewhere(WrapperTransport):
    """Forwards to a transport while being of another class, so that ``copy`` to it declines."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.description = f"elsewhere ({inner.description})"


def _race(n: int, attempt: Callable[[bytes], str]) -> list[tuple[bytes, str | Exception]]:
    """Run ``attempt`` in ``n`` threads released at once; each outcome is an ETag or an error."""
    start = threading.Barrier(n)
    results: list[tuple[bytes, str | Exception]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        data = f"writer {i}".encode()
        start.wait()
        try:
            outcome: str | Exception = attempt(data)
        except Exception as exc:  # noqa: BLE001 - collected and checked by the caller
            outcome = exc
        with lock:
            results.append((data, outcome))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class TransportTests:
    """The contract every transport honours, as tests; a backend subclasses it.

    Fixtures a subclass provides
    ----------------------------
    transport
        The transport under test (required).
    writer
        A transport that writes the objects the read tests read back; by default the
        transport itself. A read-only transport needs a writer that reaches the same objects.
    credentials
        Secrets the transport was given, which its ``description`` must never show.

    Class flags
    -----------
    writable : bool
        False for read-only transports: the tests marked :func:`write_contract` are not
        collected, and those marked :func:`read_only_contract` are.
    conditional_writes : bool
        What ``supports_conditional_writes`` should answer (False for read-only transports).
    has_fallback_lock : bool
        Whether ``fallback_lock`` gives a working lock rather than an error.
    """

    writable = True
    conditional_writes = True
    has_fallback_lock = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        disabled = "write_contract" if not cls.writable else "read_only_contract"
        for name in dir(cls):
            if getattr(getattr(cls, name, None), disabled, False):
                setattr(cls, name, None)  # pytest does not collect a None attribute

    @pytest.fixture
    def transport(self) -> Iterator[Transport]:
        raise NotImplementedError("a subclass of TransportTests provides the transport fixture")

    @pytest.fixture
    def writer(self, transport: Transport) -> Transport:
        return transport

    @pytest.fixture
    def credentials(self) -> list[str]:
        return []

    @pytest.fixture
    def prefix(self) -> str:
        """A key prefix no other test uses (servers and buckets may be shared)."""
        return f"t-{uuid.uuid4().hex[:12]}/"

    # --- what the class declares ---------------------------------------------------------------

    def test_the_description_says_where_and_shows_no_credentials(self, transport, credentials):
        assert transport.description
        for secret in credentials:
            assert secret not in transport.description
            assert secret not in repr(transport)

    def test_the_declared_capabilities_match_the_backend(self, transport, prefix):
        assert transport.writable is self.writable
        assert transport.delete_batch_size >= 1
        assert transport.supports_conditional_writes(prefix) is self.conditional_writes

    # --- reads ---------------------------------------------------------------------------------

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

    def test_get_start_returns_the_start_the_etag_and_the_whole_size(self, transport, writer, prefix):
        etag = writer.put(prefix + "obj", DATA)
        assert transport.get_start(prefix + "obj", 100) == Blob(DATA, etag, len(DATA))
        assert transport.get_start(prefix + "obj", len(DATA)) == Blob(DATA, etag, len(DATA))
        start = transport.get_start(prefix + "obj", 4)
        assert (start.data, start.size) == (DATA[:4], len(DATA))

    def test_get_start_with_the_current_etag_returns_none(self, transport, writer, prefix):
        etag = writer.put(prefix + "obj", DATA)
        assert transport.get_start(prefix + "obj", 100, if_none_match=etag) is None
        assert transport.get_start(prefix + "obj", 100, if_none_match='"0123"') == Blob(DATA, etag, len(DATA))

    def test_get_start_of_an_empty_or_absent_object(self, transport, writer, prefix):
        writer.put(prefix + "empty", b"")
        blob = transport.get_start(prefix + "empty", 10)
        assert (blob.data, blob.size) == (b"", 0)
        with pytest.raises(RemoteNotFoundError):
            transport.get_start(prefix + "absent", 10)

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

    def test_get_range_of_zero_bytes_is_empty_and_makes_no_request(self, transport, writer, prefix):
        writer.put(prefix + "obj", DATA)
        counted = CountingTransport(transport)
        assert counted.get_range(prefix + "obj", 3, 0) == b""
        assert counted.get_range(prefix + "absent", 0, 0) == b""
        assert counted.stats.snapshot() == (0, 0, 0)

    def test_keys_with_spaces_and_unicode_round_trip(self, transport, writer, prefix):
        key = prefix + "data/mes données + 100%/ключ #1.blt"
        etag = writer.put(key, DATA)
        assert transport.get(key) == Blob(DATA, etag)
        assert transport.get_range(key, 3, 2) == b"34"
        if transport.writable:
            assert list(transport.list(prefix)) == [key]

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

    # --- writes --------------------------------------------------------------------------------

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
        results = _race(8, lambda data: transport.put(prefix + "head", data, "create"))
        winners = [(data, etag) for data, etag in results if isinstance(etag, str)]
        losers = [exc for _, exc in results if not isinstance(exc, str)]
        assert len(winners) == 1, results
        assert len(losers) == 7
        assert all(isinstance(exc, PreconditionFailed) and exc.exists is True for exc in losers), losers
        data, etag = winners[0]
        assert transport.get(prefix + "head") == Blob(data, etag)

    @write_contract
    def test_exactly_one_of_8_concurrent_updates_of_the_same_version_wins(self, transport, prefix):
        base = transport.put(prefix + "head", b"base", "create")
        results = _race(8, lambda data: transport.put(prefix + "head", data, Update(base)))
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
    def test_list_sizes_gives_each_objects_size(self, transport: Transport, prefix: str) -> None:
        transport.put(prefix + "sized/a", b"12345", "create")
        transport.put(prefix + "sized/b", b"", "create")
        listed = sorted(transport.list_sizes(prefix + "sized/"))
        assert listed == [(prefix + "sized/a", 5), (prefix + "sized/b", 0)]

    @write_contract
    def test_copy_inside_the_store_copies_the_bytes_or_declines_and_writes_nothing(self, transport, prefix):
        transport.put(prefix + "src", DATA)
        if transport.copy(prefix + "src", transport, prefix + "dst"):
            assert transport.get(prefix + "dst").data == DATA
        else:
            with pytest.raises(RemoteNotFoundError):
                transport.get(prefix + "dst")
        assert transport.get(prefix + "src").data == DATA

    @write_contract
    def test_copy_to_another_kind_of_transport_declines_and_writes_nothing(self, transport, prefix):
        transport.put(prefix + "src", DATA)
        assert transport.copy(prefix + "src", _Elsewhere(transport), prefix + "dst") is False
        with pytest.raises(RemoteNotFoundError):
            transport.get(prefix + "dst")

    @write_contract
    def test_copy_of_an_absent_object_raises_remote_not_found_or_declines(self, transport, prefix):
        try:
            done = transport.copy(prefix + "absent", transport, prefix + "dst")
        except RemoteNotFoundError:
            done = None
        assert done in (None, False)
        with pytest.raises(RemoteNotFoundError):
            transport.get(prefix + "dst")

    @write_contract
    def test_supports_conditional_writes_leaves_nothing_behind(self, transport, prefix):
        transport.supports_conditional_writes(prefix)
        assert list(transport.list(prefix)) == []

    @write_contract
    def test_fallback_lock_is_a_lock_or_a_clear_error(self, transport, prefix):
        if not self.has_fallback_lock:
            with pytest.raises(EbookletError, match="conditional writes"):
                transport.fallback_lock(prefix + "lock")
            return
        lock = transport.fallback_lock(prefix + "lock")
        assert lock.acquire(timeout=30)
        lock.release()

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

    # --- read-only transports ------------------------------------------------------------------

    @read_only_contract
    @pytest.mark.parametrize(
        "operation",
        [
            lambda t, p: t.put(p + "obj", b"new"),
            lambda t, p: t.put(p + "obj", b"new", "create"),
            lambda t, p: t.put(p + "obj", b"new", Update(t.get(p + "obj").etag)),
            lambda t, p: t.delete([p + "obj"]),
            lambda t, p: list(t.list(p)),
            lambda t, p: t.fallback_lock(p + "lock"),
        ],
        ids=["put", "put-create", "put-update", "delete", "list", "fallback-lock"],
    )
    def test_every_write_raises_read_only_error(self, transport, writer, prefix, operation):
        etag = writer.put(prefix + "obj", DATA)
        with pytest.raises(ReadOnlyError, match="read-only") as info:
            operation(transport, prefix)
        assert isinstance(info.value, PermissionError)
        assert transport.get(prefix + "obj") == Blob(DATA, etag)

    @read_only_contract
    def test_a_refused_write_makes_no_request(self, transport, prefix):
        counted = CountingTransport(transport)
        with pytest.raises(ReadOnlyError):
            counted.put(prefix + "obj", DATA)
        with pytest.raises(ReadOnlyError):
            counted.delete([prefix + "obj"])
        with pytest.raises(ReadOnlyError):
            list(counted.list(prefix))
        assert counted.stats.snapshot() == (0, 0, 0)
