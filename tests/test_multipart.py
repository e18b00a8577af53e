"""Large segments go up to S3 in parts (ebooklet/remote/multipart.py), on moto and SeaweedFS.

The threshold and the part size are shrunk (settings.multipart_from, multipart_part) so that a
value of 12 MiB takes three parts. What the store received is read at the fault proxy's log and
with boto3 straight from the server: the parts, the completion under ``If-None-Match: *``, and
the unfinished uploads (``ListMultipartUploads``) that a failed push must not leave, and that
garbage collection aborts when a process died before aborting them itself.
"""

from __future__ import annotations

import random

import pytest

import ebooklet
from ebooklet.settings import override

from .faults import held_together

#: Megabytes through two servers and a proxy: out of the quick subset (``-m "not slow"``).
pytestmark = pytest.mark.slow

MIB = 1024 * 1024
BIG = 12 * MIB + 12345  # three parts of 5 MiB, the last shorter


@pytest.fixture
def small_parts():
    with override(multipart_from=6 * MIB, multipart_part=5 * MIB, segment_bytes=1 * MIB):
        yield


def _data(seed: int = 5) -> dict[str, bytes]:
    rng = random.Random(seed)
    data = {f"small-{i}": rng.randbytes(100 + i) for i in range(10)}
    data["big"] = rng.randbytes(BIG)
    return data


def _unfinished(proxied, conn) -> list[str]:  # type: ignore[no-untyped-def]
    """The keys of the database's unfinished uploads, as the server lists them."""
    answer = proxied.client.list_multipart_uploads(Bucket=proxied.bucket, Prefix=conn.db_key + ".ebooklet/")
    return [u["Key"] for u in answer.get("Uploads", [])]


def _is_part(r) -> bool:  # type: ignore[no-untyped-def]
    return r.method == "PUT" and "partNumber=" in r.query


def _is_completion(r) -> bool:  # type: ignore[no-untyped-def]
    return r.method == "POST" and "uploadId=" in r.query


def test_a_large_segment_goes_up_in_parallel_parts_and_reads_back_whole(proxied, tmp_path, small_parts):
    conn = proxied.conn()
    data = _data()
    completions = proxied.proxy.add_rule(_is_completion, None, times=None)

    def push() -> bool:
        with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="bytes") as db:
            db.update(data)
            return db.changes().push().committed

    # The three parts are held by the proxy until all three have come: in flight together.
    together, parts, committed = held_together(proxied.proxy, _is_part, 3, push)
    assert together and committed
    assert len([e for e in proxied.proxy.requests() if "partNumber=" in e.target]) == 3  # no more
    assert {r.query.split("partNumber=")[1].split("&")[0] for r in parts} == {"1", "2", "3"}
    assert sorted(len(r.body) for r in parts) == [BIG - 10 * MIB, 5 * MIB, 5 * MIB]
    # The segment is created under the same condition as a single PUT: never over an object.
    assert [r.header("If-None-Match") for r in completions.requests] == ["*"]
    assert _unfinished(proxied, conn) == []
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert dict(db.items()) == data
    assert ebooklet.verify(conn, deep=True).ok


def test_small_segments_still_go_up_in_one_request(proxied, tmp_path, small_parts):
    conn = proxied.conn()
    parts = proxied.proxy.add_rule(lambda r: "uploadId=" in r.query or "uploads" in r.query, None, times=None)
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="bytes") as db:
        db.update({f"k{i}": bytes(5 * MIB) for i in range(2)})  # one under the threshold each
        assert db.changes().push().committed
    assert parts.requests == []


def test_a_part_that_fails_aborts_the_upload_and_the_push_can_be_run_again(proxied, tmp_path, small_parts):
    conn = proxied.conn()
    data = _data()
    # Every attempt of the second part fails: the push fails, and leaves no upload behind.
    broken = proxied.proxy.add_rule(lambda r: _is_part(r) and "partNumber=2&" in r.query, "503", times=None)
    path = tmp_path / "w.blt"
    with ebooklet.open(conn, path, "c", value_serializer="bytes") as db:
        db.update(data)
        with pytest.raises(ebooklet.RemoteUnavailableError):
            db.changes().push()
    assert broken.hits >= 2  # retried, then given up
    assert _unfinished(proxied, conn) == []
    proxied.proxy.remove_rule(broken)
    with ebooklet.open(conn, path, "w") as db:
        assert sorted(c.key for c in db.changes().iter_changes()) == sorted(data)
        assert db.changes().push().committed
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert dict(db.items()) == data


@pytest.mark.parametrize("fault", ["lost_reply", "200_error"])
def test_a_completion_that_fails_on_its_way_back_is_sent_again_and_the_push_commits(
    proxied, tmp_path, small_parts, fault
):
    """The completion was applied and its reply lost (the second says so: 412, the object
    exists, and its bytes are compared); or S3 answered 200 with the failure in the body,
    which is not taken as done."""
    conn = proxied.conn()
    data = _data()
    failed = proxied.proxy.add_rule(_is_completion, fault, times=1)
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="bytes") as db:
        db.update(data)
        assert db.changes().push().committed
    assert failed.hits == 1
    assert _unfinished(proxied, conn) == []
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert dict(db.items()) == data


def _abandoned_upload(proxied, tmp_path):  # type: ignore[no-untyped-def]
    """A push that died between its parts and the completion: the completion and the abort
    never reach the server, as when the process is killed."""
    conn = proxied.conn()
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="bytes") as db:
        db["first"] = b"a first commit"
        assert db.changes().push().committed
        proxied.proxy.add_rule(_is_completion, "reset", times=None)
        proxied.proxy.add_rule(lambda r: r.method == "DELETE" and "uploadId=" in r.query, "reset", times=None)
        db.update(_data())
        with pytest.raises(ebooklet.RemoteUnavailableError):
            db.changes().push()
    proxied.proxy.clear_rules()
    assert len(_unfinished(proxied, conn)) == 1
    return conn


def test_gc_aborts_an_upload_a_dead_push_left_unfinished(proxied, tmp_path, small_parts):
    conn = _abandoned_upload(proxied, tmp_path)
    dry = ebooklet.gc(conn, min_age=0, dry_run=True)
    assert dry.uploads_aborted == 1 and "would abort 1 unfinished upload" in str(dry)
    assert len(_unfinished(proxied, conn)) == 1
    # An upload under the prefix that is not one of the format's objects is a stranger's: kept.
    stranger = conn.db_key + ".ebooklet/not-ours.bin"
    proxied.client.create_multipart_upload(Bucket=proxied.bucket, Key=stranger)
    report = ebooklet.gc(conn, min_age=0)
    assert report.uploads_aborted == 1 and "aborted 1 unfinished upload" in str(report)
    assert _unfinished(proxied, conn) == [stranger]


def test_gc_keeps_an_unfinished_upload_younger_than_its_safe_age(seaweedfs_proxied, tmp_path, small_parts):
    """By the store's clock (moto dates every upload 2010, so only SeaweedFS can show this)."""
    conn = _abandoned_upload(seaweedfs_proxied, tmp_path)
    report = ebooklet.gc(conn)  # the default safe age: hours
    assert report.uploads_aborted == 0
    assert len(_unfinished(seaweedfs_proxied, conn)) == 1


def test_a_completion_sent_again_after_a_lost_reply_may_find_the_upload_gone(proxied, tmp_path, small_parts):
    """The first completion was applied and its reply lost; the second is told the upload is
    gone (NoSuchUpload, as S3 may say): the object is then compared, found, and the push commits."""
    conn = proxied.conn()
    data = _data()
    lost = proxied.proxy.add_rule(_is_completion, "lost_reply", times=1)
    gone = proxied.proxy.add_rule(_is_completion, "404", times=1)
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="bytes") as db:
        db.update(data)
        assert db.changes().push().committed
    assert (lost.hits, gone.hits) == (1, 1)
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert dict(db.items()) == data


def test_deleting_the_database_aborts_its_unfinished_uploads(proxied, tmp_path, small_parts):
    conn = _abandoned_upload(proxied, tmp_path)
    with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
        db.delete_remote()
    assert _unfinished(proxied, conn) == []


def test_starting_an_upload_is_tried_again_after_a_server_error(proxied, tmp_path, small_parts):
    """The start is a POST, which the connection pool does not retry: ebooklet does."""
    conn = proxied.conn()
    data = _data()
    busy = proxied.proxy.add_rule(lambda r: r.method == "POST" and r.query == "uploads", "503", times=1)
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="bytes") as db:
        db.update(data)
        assert db.changes().push().committed
    assert busy.hits == 1
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert db["big"] == data["big"]


def test_an_overwrite_whose_completion_reply_is_lost_returns_the_objects_etag(proxied, small_parts):
    """Overwriting (a copy between stores): the completion was applied, its reply lost, and the
    second one is told the upload is gone; the object's ETag is read instead."""
    from ebooklet.remote.s3 import S3Transport

    server = proxied.server
    transport = S3Transport(server.access_key_id, server.access_key, proxied.bucket,
                            endpoint_url=proxied.proxy.url, retries=1)
    key = f"dbs/overwrite-{random.randrange(1 << 30)}"
    transport.put(key, b"before", "overwrite")
    proxied.proxy.add_rule(_is_completion, "lost_reply", times=1)
    proxied.proxy.add_rule(_is_completion, "404", times=1)
    etag = transport.put(key, _data()["big"], "overwrite")
    there = transport.get(key)
    assert there is not None and there.data == _data()["big"] and there.etag == etag
    transport.close()


def test_a_listing_of_uploads_that_strays_or_repeats_itself_is_refused():
    """Hostile answers to ListMultipartUploads: a key outside the prefix asked for, or a page
    that names the same markers again (which would list forever)."""
    from ebooklet.remote.multipart import S3Parts

    class Answer:
        def __init__(self, body: str) -> None:
            self.data = body.encode()

    def page(key: str, truncated: bool) -> str:
        more = "<IsTruncated>false</IsTruncated>"
        if truncated:
            more = ("<IsTruncated>true</IsTruncated><NextKeyMarker>m</NextKeyMarker>"
                    "<NextUploadIdMarker>u</NextUploadIdMarker>")
        return ("\n  <?xml version='1.0'?><ListMultipartUploadsResult><Upload><Key>" + key
                + "</Key><UploadId>id</UploadId><Initiated>2020-01-01T00:00:00Z</Initiated></Upload>"
                + more + "</ListMultipartUploadsResult>")

    def store(answers):  # type: ignore[no-untyped-def]
        return lambda *args, **kwargs: Answer(next(answers))

    stray = S3Parts(store(iter([page("elsewhere/seg/x", False)])), "bucket")
    with pytest.raises(ebooklet.RemoteFormatError, match="not under the prefix"):
        list(stray.uploads("db.ebooklet/"))
    looping = S3Parts(store(iter([page("db.ebooklet/seg/a", True)] * 3)), "bucket")
    with pytest.raises(ebooklet.RemoteFormatError, match="same page twice"):
        list(looping.uploads("db.ebooklet/"))
    fine = S3Parts(store(iter([page("db.ebooklet/seg/a", False)])), "bucket")  # blanks first, too
    assert [u.key for u in fine.uploads("db.ebooklet/")] == ["db.ebooklet/seg/a"]


def test_the_requests_of_a_put_in_parts_are_counted(proxied, small_parts):
    """``db.stats`` counts requests as the store bills them: a put in parts is its start, its
    parts and its completion, as the proxy sees them."""
    from ebooklet.remote import CountingTransport
    from ebooklet.remote.s3 import S3Transport

    server = proxied.server
    counted = CountingTransport(S3Transport(server.access_key_id, server.access_key, proxied.bucket,
                                            endpoint_url=proxied.proxy.url, retries=1))
    before = proxied.proxy.stats.requests
    counted.put(f"dbs/counted-{random.randrange(1 << 30)}", _data()["big"], "create")
    counted.put(f"dbs/counted-{random.randrange(1 << 30)}", b"small", "create")
    assert counted.stats.requests == proxied.proxy.stats.requests - before == (2 + 3) + 1
    counted.close()


def test_parts_smaller_than_s3_takes_are_made_5_mib(proxied, tmp_path):
    """``multipart_part`` below S3's least part size is raised to it, not sent to be refused."""
    conn = proxied.conn()
    parts = proxied.proxy.add_rule(_is_part, None, times=None)
    with override(multipart_from=6 * MIB, multipart_part=1 * MIB):
        with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="bytes") as db:
            db["big"] = bytes(BIG)
            assert db.changes().push().committed
    assert sorted(len(r.body) for r in parts.requests) == [BIG - 10 * MIB, 5 * MIB, 5 * MIB]
