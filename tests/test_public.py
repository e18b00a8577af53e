"""Reading a database through its public URL, without credentials.

Every test that takes ``public`` runs against three servers of the same database:

* ``moto`` and ``seaweedfs``: the database is written with an S3Connection into a bucket with a
  public-read policy and read at ``{endpoint}/{bucket}/{db_key}``;
* ``http``: the database is written to a folder remote, copied (``shutil.copytree``) into a
  folder served by tests/httpserver.py, and read at ``http://127.0.0.1:PORT/dbs/stations.blt``.

Requests are counted by the server's own log on ``http`` and by the transport's statistics
on the S3 servers (they keep no log we can read). Fault injection (403, 404, 500, cut and
dropped bodies) needs the test server, so those tests run on ``http`` only.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import booklet
import pytest
import urllib3

import ebooklet

from .httpserver import FileServer
from .servers import S3Server

KINDS = ["moto", "seaweedfs", "http"]
SERIALIZER = "pickle"
VALUES = {f"station-{i:02d}": {"id": i, "rain_mm": [round(i * 0.1, 1)] * (i + 1)} for i in range(20)}
#: Where the segments of the ``http`` database are served (a folder prefix for faults).
SEG_PREFIX = "/dbs/stations.blt.ebooklet/seg/"
HEAD_PATH = "/dbs/stations.blt"


@pytest.fixture(scope="session")
def public_buckets() -> dict[str, str]:
    """One public-read bucket per S3 server for the whole session (tests use unique keys)."""
    return {}


@dataclass
class Public:
    """A database published at a public URL, its writer, and a fresh path for a reader."""

    kind: str
    tmp: pathlib.Path
    url: str
    writer_conn: Any
    server: FileServer | None = None
    remote_root: pathlib.Path | None = None
    www: pathlib.Path | None = None
    s3: S3Server | None = None
    bucket: str | None = None
    key_prefix: str = ""

    @property
    def reader_dir(self) -> pathlib.Path:
        path = self.tmp / "reader"
        path.mkdir(exist_ok=True)
        return path

    @property
    def copy(self) -> pathlib.Path:
        """The reader's local file."""
        return self.reader_dir / "copy.blt"

    def write(self, values: dict[str, Any] | None = None, delete: tuple[str, ...] = ()) -> None:
        """Commit changes as the (credentialed) writer, then publish them."""
        with ebooklet.open(self.writer_conn, self.tmp / "writer.blt", "c", value_serializer=SERIALIZER) as db:
            db.update(values or {})
            for key in delete:
                del db[key]
            assert db.changes().push().committed
        self.publish()

    def publish(self) -> None:
        """Make what the writer committed visible at the public URL."""
        if self.server is not None:
            assert self.remote_root is not None and self.www is not None
            shutil.copytree(self.remote_root, self.www, dirs_exist_ok=True)

    def put_raw(self, name: str, data: bytes) -> str:
        """Publish ``data`` under ``name`` next to the database; return its public URL."""
        if self.server is not None:
            assert self.www is not None
            path = self.www / "dbs" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            assert self.s3 is not None
            self.s3.admin_client.put_object(Bucket=self.bucket, Key=self.key_prefix + name, Body=data)
        return self.url_of(name)

    def url_of(self, name: str) -> str:
        """The public URL of ``name`` next to the database's head."""
        return self.url.rsplit("/", 1)[0] + "/" + name

    def open(self, flag: str = "r") -> tuple[ebooklet.EBooklet, Callable[[], int]]:
        """Open the public URL on the reader's file; also return a count of requests since."""
        mark = len(self.server.log) if self.server is not None else 0
        db = ebooklet.open(self.url, self.copy, flag, allow_pickle=True)
        if self.server is not None:
            server = self.server
            return db, lambda: len(server.log) - mark
        return db, lambda: db.stats.requests

    def received(self, db: ebooklet.EBooklet) -> int:
        """Bytes of bodies the reader's transport has received so far."""
        return db.stats.bytes_received


@contextlib.contextmanager
def served_folder(tmp_path: pathlib.Path) -> Iterator[Public]:
    """A folder remote written by the writer, copied into a folder the test server serves."""
    remote_root, www = tmp_path / "remote", tmp_path / "www"
    www.mkdir()
    with FileServer(www) as server:
        yield Public(
            "http", tmp_path, server.url("dbs/stations.blt"), remote_root / "dbs" / "stations.blt",
            server=server, remote_root=remote_root, www=www,
        )


@pytest.fixture(params=KINDS)
def public(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path, public_buckets: dict[str, str]
) -> Iterator[Public]:
    kind = request.param
    if kind == "http":
        with served_folder(tmp_path) as public:
            yield public
        return
    s3: S3Server = request.getfixturevalue(f"{kind}_server")
    if kind not in public_buckets:
        public_buckets[kind] = s3.make_bucket(public_read=True)
    bucket = public_buckets[kind]
    prefix = f"pub/{uuid.uuid4().hex[:12]}/"
    db_key = prefix + "stations.blt"
    conn = ebooklet.S3Connection(
        s3.access_key_id, s3.access_key, db_key, bucket, endpoint_url=s3.endpoint_url, retries=1
    )
    yield Public(
        kind, tmp_path, f"{s3.endpoint_url}/{bucket}/{db_key}", conn, s3=s3, bucket=bucket, key_prefix=prefix
    )


@pytest.fixture
def http(tmp_path: pathlib.Path) -> Iterator[Public]:
    """The ``http`` kind alone, for fault injection."""
    with served_folder(tmp_path) as public:
        yield public


def cached_keys(path: pathlib.Path) -> dict[str, Any]:
    """What the reader's local file holds, read with plain booklet."""
    with booklet.open(path) as f:
        return dict(f.items())


def cached_keys_while_open(db: ebooklet.EBooklet) -> set[str]:
    """Keys already in the local data file of an open database."""
    return set(db.local_keys())


# --- reading ------------------------------------------------------------------------------


def test_a_fresh_copy_lists_every_key_and_reads_values_lazily(public):
    public.write(VALUES)
    n_bytes = ebooklet.remote_info(public.url).n_bytes
    db, requests = public.open()
    with db:
        assert requests() == 1  # the head
        assert sorted(db.keys()) == sorted(VALUES)
        assert len(db) == len(VALUES)
        assert requests() == 2  # ... and the one index part
        assert cached_keys_while_open(db) == set()

        before, received = requests(), public.received(db)
        assert db["station-03"] == VALUES["station-03"]
        assert requests() == before + 1
        if public.server is not None:
            read = public.server.log[-1]
            assert (read.method, read.status) == ("GET", 206)
            assert read.path.startswith(SEG_PREFIX) and read.range is not None
        # A ranged read: far fewer bytes than the segment holds.
        assert 0 < public.received(db) - received < n_bytes / 10

        assert db["station-03"] == VALUES["station-03"]  # cached now
        assert requests() == before + 1

        assert db.load_items() == len(VALUES) - 1
        assert requests() == before + 2  # neighbouring values coalesce into one ranged GET
        assert dict(db.items()) == VALUES
        assert db.load_items() == 0
        assert requests() == before + 2
        if public.server is not None:
            # The library's own count agrees with what the server saw.
            assert db.stats.requests == requests()
    assert cached_keys(public.copy) == VALUES


def test_get_items_fetches_only_what_is_asked(public):
    public.write(VALUES)
    db, requests = public.open()
    with db:
        wanted = ["station-01", "station-07", "station-19", "no-such-key"]
        got = dict(db.get_items(wanted))
        assert got == {**{k: VALUES[k] for k in wanted[:3]}, "no-such-key": None}
    assert set(cached_keys(public.copy)) == set(wanted[:3])


def test_reopening_costs_nothing_and_pull_brings_the_writers_changes(public):
    public.write(VALUES)
    db, _ = public.open()
    with db:
        db.load_items()

    db, requests = public.open()
    with db:
        assert requests() == 0  # the local copy answers everything
        assert dict(db.items()) == VALUES
        assert requests() == 0

        received = public.received(db)
        result = db.changes().pull()
        assert (result.updated, result.deleted, result.requests) == ([], [], 1)
        assert requests() == 1
        assert public.received(db) == received  # a 304: no body
        if public.server is not None:
            last = public.server.log[-1]
            assert (last.path, last.status) == (HEAD_PATH, 304) and last.if_none_match

        new = {"id": 1, "rain_mm": [42.0]}
        public.write({"station-01": new, "station-99": {"id": 99}}, delete=("station-02",))

        result = db.changes().pull()
        assert result.updated == ["station-01", "station-99"]
        assert result.deleted == ["station-02"]
        assert result.requests == 2  # the head and the one index part that changed
        assert result.commit == 2

        assert "station-02" not in db
        assert db.get("station-02") is None
        with pytest.raises(KeyError):
            db["station-02"]
        assert "station-99" in db
        assert sorted(db.keys()) == sorted(set(VALUES) - {"station-02"} | {"station-99"})
        assert len(db) == len(VALUES)

        before = requests()
        assert db["station-05"] == VALUES["station-05"]  # unchanged: still cached
        assert requests() == before
        assert db["station-01"] == new  # changed: fetched again
        assert requests() == before + 1
        assert db["station-99"] == {"id": 99}
        assert requests() == before + 2

        again = db.changes().pull()  # the new head is the base now
        assert (again.updated, again.deleted, again.requests) == ([], [], 1)

    expected = {k: v for k, v in VALUES.items() if k != "station-02"}
    expected.update({"station-01": new, "station-99": {"id": 99}})
    assert cached_keys(public.copy) == expected


# --- read-only ----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["w", "c", "n"])
def test_a_public_url_cannot_be_opened_for_writing(public, flag):
    public.write(VALUES)
    mark = len(public.server.log) if public.server else 0
    with pytest.raises(ebooklet.ReadOnlyError, match="read-only") as info:
        ebooklet.open(public.url, public.copy, flag)
    assert "flag='r'" in str(info.value)
    assert list(public.reader_dir.iterdir()) == []
    if public.server is not None:
        assert public.server.log[mark:] == []  # refused before any request


def test_a_read_only_copy_refuses_writes_and_pushes(public):
    public.write(VALUES)
    db, _ = public.open()
    with db:
        with pytest.raises(ebooklet.ReadOnlyError) as info:
            db["station-01"] = "changed"
        # Not "open it with 'w'", which a public URL cannot be (issue 11, problem 9).
        assert "is read-only (a public URL" in str(info.value) and "with 'w'" not in str(info.value)
        with pytest.raises(ebooklet.ReadOnlyError):
            del db["station-01"]
        with pytest.raises(ebooklet.ReadOnlyError):
            db.changes().push()
        with pytest.raises(ebooklet.ReadOnlyError):
            db.changes().pull(on_conflict="local")
        assert db["station-01"] == VALUES["station-01"]
    assert cached_keys(public.copy) == {"station-01": VALUES["station-01"]}


# --- errors at open -----------------------------------------------------------------------


def test_a_missing_database_on_a_fresh_path_says_neither_exists(public):
    public.write(VALUES)
    url = public.url_of("missing.blt")
    with pytest.raises(FileNotFoundError, match="neither the local file .* nor the remote .* exists") as info:
        ebooklet.open(url, public.copy, "r")
    assert url in str(info.value)
    assert list(public.reader_dir.iterdir()) == []
    assert ebooklet.remote_info(url) is None


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Welcome</body></html>", b"\x00\xffEBKI\x01 binary", b'{"format": "something-else"}', b""],
    ids=["html", "binary", "other-json", "empty"],
)
def test_a_url_that_is_not_an_ebooklet_database_says_so(public, body):
    url = public.put_raw("not-a-db.blt", body)
    with pytest.raises(ebooklet.RemoteFormatError, match="not an ebooklet database") as info:
        ebooklet.open(url, public.copy, "r")
    assert url in str(info.value)
    assert list(public.reader_dir.iterdir()) == []


def test_a_private_bucket_refuses_anonymous_reads(seaweedfs_server, tmp_path):
    """A real server's 403 (SeaweedFS checks bucket policies; moto does not)."""
    bucket = seaweedfs_server.make_bucket()
    server = seaweedfs_server
    conn = ebooklet.S3Connection(
        server.access_key_id, server.access_key, "dbs/private.blt", bucket, endpoint_url=server.endpoint_url
    )
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer=SERIALIZER) as db:
        db["k"] = 1
        db.changes().push()
    reader = tmp_path / "reader"
    reader.mkdir()
    with pytest.raises(ebooklet.RemoteAccessError, match="access denied.*anonymous reads"):
        ebooklet.open(f"{server.endpoint_url}/{bucket}/dbs/private.blt", reader / "copy.blt", "r")
    assert list(reader.iterdir()) == []


def test_a_forbidden_head_is_an_access_error_and_creates_nothing(http):
    http.write(VALUES)
    http.server.fault("403", HEAD_PATH)
    with pytest.raises(ebooklet.RemoteAccessError, match="access denied") as info:
        ebooklet.open(http.url, http.copy, "r")
    assert "anonymous reads" in str(info.value)
    # No advice about credentials, which a public URL does not use.
    assert "Check the credentials" not in str(info.value) and "AWS_" not in str(info.value)
    assert http.url in str(info.value)
    assert [(r.path, r.status) for r in http.server.log] == [(HEAD_PATH, 403)]  # no retries
    assert list(http.reader_dir.iterdir()) == []


def test_a_server_error_on_the_head_is_retried_up_to_the_budget(http):
    http.write(VALUES)
    http.server.fault("500", HEAD_PATH, times=3)  # urllib3 retries 3 times: the 4th try answers
    with ebooklet.open(http.url, http.copy, "r", allow_pickle=True) as db:
        assert sorted(db.keys()) == sorted(VALUES)
    # The head is read with a ranged GET: 206.
    assert [r.status for r in http.server.log if r.path == HEAD_PATH] == [500, 500, 500, 206]


def test_a_server_error_beyond_the_retry_budget_is_unavailable_and_creates_nothing(http):
    http.write(VALUES)
    http.server.fault("500", HEAD_PATH)
    with pytest.raises(ebooklet.RemoteUnavailableError, match="answered HTTP 500 after retries") as info:
        ebooklet.open(http.url, http.copy, "r")
    assert isinstance(info.value, ConnectionError)
    assert "Try again" in str(info.value)
    assert [r.status for r in http.server.log] == [500] * 4
    assert list(http.reader_dir.iterdir()) == []


@pytest.mark.parametrize("mode", ["truncate", "drop"])
def test_a_head_cut_short_is_unavailable_and_creates_nothing(http, mode):
    http.write(VALUES)
    http.server.fault(mode, HEAD_PATH)
    with pytest.raises(ebooklet.RemoteUnavailableError, match="dropped the connection.*after retries"):
        ebooklet.open(http.url, http.copy, "r")
    assert [(r.path, r.fault) for r in http.server.log] == [(HEAD_PATH, mode)] * 4
    assert list(http.reader_dir.iterdir()) == []


# --- errors reading values ----------------------------------------------------------------

CUT = "dropped the connection before its answer was complete"
VALUE_FAULTS = {
    "403": (ebooklet.RemoteAccessError, "access denied.*anonymous reads"),
    # A segment the index names is gone: the writer retired it and the copy must pull.
    "404": (ebooklet.RemoteNotFoundError, "(?i)pull"),
    "500": (ebooklet.RemoteUnavailableError, "answered HTTP 500 after retries"),
    "truncate": (ebooklet.RemoteUnavailableError, f"{CUT} .*IncompleteRead"),
    "drop": (ebooklet.RemoteUnavailableError, f"{CUT} .*reset"),
}


@pytest.mark.parametrize("mode", list(VALUE_FAULTS))
def test_a_failed_value_read_raises_and_caches_nothing(http, mode):
    error, message = VALUE_FAULTS[mode]
    http.write(VALUES)
    db, requests = http.open()
    with db:
        assert sorted(db.keys()) == sorted(VALUES)  # the index part is local from here on
        http.server.fault(mode, SEG_PREFIX)
        with pytest.raises(error, match=message) as info:
            db["station-04"]
        assert http.url in str(info.value) and "seg/" in str(info.value)
        if mode in ("403", "404"):  # (the others cost a second of retries each)
            with pytest.raises(error):
                db.load_items()
        assert cached_keys_while_open(db) == set()
    assert cached_keys(http.copy) == {}

    # Nothing was left half done: once the server recovers, the same copy reads normally.
    http.server.clear_faults()
    db, _ = http.open()
    with db:
        assert db["station-04"] == VALUES["station-04"]
    assert cached_keys(http.copy) == {"station-04": VALUES["station-04"]}


@pytest.mark.parametrize(("mode", "times"), [("500", 2), ("truncate", 1), ("drop", 1)])
def test_a_transient_failure_within_the_retry_budget_is_invisible(http, mode, times):
    http.write(VALUES)
    db, requests = http.open()
    with db:
        list(db.keys())
        mark = len(http.server.log)
        http.server.fault(mode, SEG_PREFIX, times=times)
        assert db["station-04"] == VALUES["station-04"]
        statuses = [(r.status, r.fault) for r in http.server.log[mark:]]
        assert statuses == [(int(mode) if mode == "500" else 206, mode)] * times + [(206, None)]
    assert cached_keys(http.copy) == {"station-04": VALUES["station-04"]}


def _segment(http: Public) -> pathlib.Path:
    assert http.www is not None
    (segment,) = (http.www / SEG_PREFIX.strip("/")).iterdir()
    return segment


def test_a_segment_shorter_than_its_index_says_is_a_format_error(http):
    http.write(VALUES)
    segment = _segment(http)
    data = segment.read_bytes()
    segment.write_bytes(data[:-1])  # the last value (the last key: values go in key order) is cut
    last, first = max(VALUES), min(VALUES)
    db, _ = http.open()
    with db:
        assert db[first] == VALUES[first]
        with pytest.raises(ebooklet.RemoteFormatError, match="truncated") as info:
            db[last]
        assert "where" in str(info.value) and "were expected" in str(info.value)
        assert http.server.log[-1].status == 206

        segment.write_bytes(b"")  # every range now starts past the end: 416
        with pytest.raises(ebooklet.RemoteFormatError, match="shorter than its index says") as info:
            db[last]
        assert http.server.log[-1].status == 416
    assert cached_keys(http.copy) == {first: VALUES[first]}


def test_a_corrupt_value_is_an_integrity_error_and_is_not_cached(http):
    http.write(VALUES)
    segment = _segment(http)
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF  # flip a byte of the last value
    segment.write_bytes(bytes(data))
    last = max(VALUES)
    db, _ = http.open()
    with db:
        with pytest.raises(ebooklet.IntegrityError, match=f"{last!r}.*does not match its content hash"):
            db[last]
    assert last not in cached_keys(http.copy)


# --- errors on pull -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "error"),
    [("403", ebooklet.RemoteAccessError), ("truncate", ebooklet.RemoteUnavailableError)],
)
def test_a_failed_pull_changes_nothing_and_can_be_retried(http, mode, error):
    http.write(VALUES)
    db, _ = http.open()
    with db:
        db.load_items()
    http.write({"station-01": "changed"}, delete=("station-02",))
    db, _ = http.open()
    with db:
        http.server.fault(mode, HEAD_PATH)
        with pytest.raises(error):
            db.changes().pull()
        assert db["station-01"] == VALUES["station-01"]
        assert "station-02" in db
        http.server.clear_faults()
        result = db.changes().pull()
        assert (result.updated, result.deleted) == (["station-01"], ["station-02"])
        assert db["station-01"] == "changed"


# --- the test server itself ---------------------------------------------------------------


def test_the_test_server_speaks_ranges_etags_and_faults(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.bin").write_bytes(b"0123456789")
    pool = urllib3.PoolManager(retries=False)
    with FileServer(tmp_path) as server:
        url = server.url("d/f.bin")

        def get(headers: dict[str, str] | None = None, method: str = "GET") -> urllib3.BaseHTTPResponse:
            return pool.request(method, url, headers=headers or {})

        whole = get()
        etag = whole.headers["ETag"]
        assert (whole.status, whole.data) == (200, b"0123456789") and etag.startswith('"')
        assert (get({"If-None-Match": etag}).status, get({"If-None-Match": '"other"'}).status) == (304, 200)
        part = get({"Range": "bytes=2-4"})
        assert (part.status, part.headers["Content-Range"], part.data) == (206, "bytes 2-4/10", b"234")
        assert get({"Range": "bytes=8-20"}).data == b"89"
        assert get({"Range": "bytes=-3"}).data == b"789"
        beyond = get({"Range": "bytes=10-12"})
        assert (beyond.status, beyond.headers["Content-Range"]) == (416, "bytes */10")
        head = get(method="HEAD")
        assert (head.status, head.headers["Content-Length"], head.data) == (200, "10", b"")
        assert get().status == 200 and pool.request("GET", server.url("d/missing")).status == 404

        server.fault("500", times=2)  # every path, twice
        assert [get().status for _ in range(3)] == [500, 500, 200]
        server.fault("403", "/d/")  # a folder
        server.fault("404")  # a global fault gives way to a path's own
        assert (get().status, pool.request("GET", server.url("other")).status) == (403, 404)
        server.clear_faults()
        for mode in ("truncate", "drop"):
            server.fault(mode, "/d/f.bin", times=1)
            with pytest.raises(urllib3.exceptions.ProtocolError):
                get()
        assert get().data == b"0123456789"

        log = [(r.method, r.path, r.status, r.fault) for r in server.log]
        assert log[:2] == [("GET", "/d/f.bin", 200, None), ("GET", "/d/f.bin", 304, None)]
        assert [entry[2:] for entry in log[-3:]] == [(200, "truncate"), (200, "drop"), (200, None)]
    with pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("GET", url, retries=False)  # stopped
