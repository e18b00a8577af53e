"""The fault proxy itself: every fault kind happens as described, and a clean pass-through works.

Requests are made with s3func's S3Session (the client ebooklet uses), signed for the proxy's
address, with urllib3's retries off unless a test is about them.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass

import pytest
import s3func
import urllib3

import ebooklet

from .faultproxy import FAULTS, FaultProxy


@dataclass
class Client:
    """A signed S3 client through the proxy (s3func's S3Session, as ebooklet uses)."""

    s3: s3func.S3Session
    base: str  # the proxy's URL and the bucket

    @classmethod
    def make(cls, proxied, attempts: int = 0, secret: str | None = None, url: str | None = None) -> Client:
        """``attempts`` retries by urllib3 (0: one attempt only)."""
        server, url = proxied.server, url or proxied.proxy.url
        s3 = s3func.S3Session(server.access_key_id, secret or server.access_key, proxied.bucket,
                              endpoint_url=url, max_attempts=attempts, read_timeout=30, stream=False)
        return cls(s3, f"{url}/{proxied.bucket}/")

    def put(self, key: str, body: bytes):
        return self.s3.request("PUT", self.base + urllib.parse.quote(key),
                               headers={"Content-Length": str(len(body))}, body=body, preload_content=True)

    def get(self, key: str):
        return self.s3.request("GET", self.base + urllib.parse.quote(key), preload_content=True)


def _session(proxied, attempts: int = 0) -> Client:
    return Client.make(proxied, attempts)


def _stored(proxied, key: str) -> bytes | None:
    """The object as the server has it (not through the proxy)."""
    try:
        return proxied.client.get_object(Bucket=proxied.bucket, Key=key)["Body"].read()
    except proxied.client.exceptions.NoSuchKey:
        return None


def _key() -> str:
    return f"proxytest/{uuid.uuid4().hex}"


# -- pass-through ---------------------------------------------------------------------------


def test_a_push_and_a_pull_pass_through_the_proxy_unchanged(proxied, tmp_path):
    conn = proxied.conn()
    data = {f"k{i:03d}": f"value {i}" * 10 for i in range(200)}
    with ebooklet.open(conn, tmp_path / "w.blt", "c", value_serializer="str") as db:
        db.update(data)
        assert db.changes().push().committed
    with ebooklet.open(conn, tmp_path / "r.blt", "w") as reader:
        assert dict(reader.items()) == data
        with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
            db["k000"] = "changed"
            del db["k001"]
            db.changes().push()
        pulled = reader.changes().pull()
        assert (pulled.updated, pulled.deleted) == (["k000"], ["k001"])
        assert reader["k000"] == "changed" and "k001" not in reader
    stats = proxied.proxy.stats
    assert stats.requests == len(proxied.proxy.log) > 10
    assert stats.bytes_in > 0 and stats.bytes_out > 0
    assert not stats.faults and not proxied.proxy.errors
    assert {e.status for e in proxied.proxy.log} <= {200, 204, 206, 304, 404, 412}


def test_signatures_made_for_the_proxy_verify_on_the_server_and_bad_ones_still_fail(proxied, tmp_path):
    key = _key()
    assert _session(proxied).put(key, b"signed").status == 200
    assert _stored(proxied, key) == b"signed"
    if proxied.kind == "seaweedfs":  # moto accepts any credentials
        forged = Client.make(proxied, secret="not-the-secret")
        assert forged.put(key, b"forged").status == 403
        assert _stored(proxied, key) == b"signed"


# -- each fault ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
def test_an_error_status_is_answered_by_the_proxy_and_the_server_never_sees_the_request(
    moto_proxied, status
):
    proxy, key = moto_proxied.proxy, _key()
    rule = proxy.add_rule(lambda r: r.method == "PUT" and r.key == key, str(status))
    resp = _session(moto_proxied).put(key, b"x")
    assert resp.status == status
    assert b"<Error>" in resp.data
    assert _stored(moto_proxied, key) is None
    assert rule.hits == 1 and proxy.stats.faults[str(status)] == 1
    assert proxy.log[-1].status == status and proxy.log[-1].fault == str(status)


def test_a_reset_drops_the_connection_before_forwarding(moto_proxied):
    proxy, key = moto_proxied.proxy, _key()
    proxy.add_rule(lambda r: r.method == "PUT" and r.key == key, "reset")
    with pytest.raises(urllib3.exceptions.HTTPError) as err:
        _session(moto_proxied).put(key, b"x")
    assert "reset" in repr(err.value).lower() or "aborted" in repr(err.value).lower()
    assert _stored(moto_proxied, key) is None
    assert proxy.stats.faults["reset"] == 1 and proxy.log[-1].status is None


def test_a_lost_reply_is_applied_by_the_server_but_the_client_sees_a_reset(moto_proxied):
    proxy, key = moto_proxied.proxy, _key()
    proxy.add_rule(lambda r: r.method == "PUT" and r.key == key, "lost_reply")
    with pytest.raises(urllib3.exceptions.HTTPError):
        _session(moto_proxied).put(key, b"landed")
    assert _stored(moto_proxied, key) == b"landed"
    assert proxy.stats.faults["lost_reply"] == 1


def test_a_truncated_body_arrives_short_of_its_content_length(moto_proxied):
    proxy, key = moto_proxied.proxy, _key()
    body = bytes(range(256)) * 8
    assert _session(moto_proxied).put(key, body).status == 200
    proxy.add_rule(lambda r: r.method == "GET" and r.key == key, "truncate")
    with pytest.raises(urllib3.exceptions.HTTPError) as err:
        _session(moto_proxied).get(key)
    assert "IncompleteRead" in repr(err.value) or "incomplete" in repr(err.value).lower()
    assert proxy.log[-1].fault == "truncate" and proxy.stats.bytes_out < len(body) + 2000


def test_a_truncated_answer_without_a_body_is_cut_in_its_status_line_after_the_server_applied_it(
    moto_proxied,
):
    proxy, key = moto_proxied.proxy, _key()
    proxy.add_rule(lambda r: r.method == "PUT" and r.key == key, "truncate")
    with pytest.raises(urllib3.exceptions.HTTPError):
        _session(moto_proxied).put(key, b"applied")
    assert _stored(moto_proxied, key) == b"applied"


def test_a_delay_holds_the_request_for_the_given_time_then_forwards_it(moto_proxied):
    proxy, key = moto_proxied.proxy, _key()
    proxy.add_rule(lambda r: r.method == "PUT" and r.key == key, "delay", delay=0.3)
    start = time.monotonic()
    assert _session(moto_proxied).put(key, b"late").status == 200
    assert time.monotonic() - start >= 0.3
    assert _stored(moto_proxied, key) == b"late"


def test_urllib3_retries_a_failed_put_itself_so_a_rule_for_one_attempt_is_invisible(moto_proxied):
    proxy, key = moto_proxied.proxy, _key()
    rule = proxy.add_rule(lambda r: r.method == "PUT" and r.key == key, "503", times=1)
    assert _session(moto_proxied, attempts=1).put(key, b"second try").status == 200
    assert rule.hits == 1
    assert [e.status for e in proxy.log if e.target.endswith(key)] == [503, 200]


def test_the_delete_objects_post_is_not_retried_by_urllib3(moto_proxied):
    proxy = moto_proxied.proxy
    rule = proxy.add_rule(lambda r: r.method == "POST" and "delete" in r.query, "503", times=1)
    with pytest.raises(urllib3.exceptions.HTTPError):
        _session(moto_proxied, attempts=3).s3.delete_objects(keys=[_key()], purge=False)
    assert rule.hits == 1
    assert [e.status for e in proxy.log if e.method == "POST"] == [503]


# -- holds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_gate_holds_a_request_until_released(moto_proxied, where):
    proxy, key = moto_proxied.proxy, _key()
    gate = proxy.hold(lambda r: r.method == "PUT" and r.key == key, where=where)
    session = _session(moto_proxied)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(session.put(key, b"gated").status))
    thread.start()
    try:
        assert gate.reached.wait(30)
        # Held before forwarding: the server has not seen it; after: it has, the client waits.
        assert _stored(moto_proxied, key) == (None if where == "before" else b"gated")
        assert result == []
    finally:
        gate.release()
        thread.join(30)
    assert result == [200]
    assert gate.requests[0].body == b"gated"


def test_a_held_lost_reply_lets_a_test_act_between_the_servers_apply_and_the_reset(moto_proxied):
    proxy, key = moto_proxied.proxy, _key()
    rule = proxy.add_rule(lambda r: r.method == "PUT" and r.key == key, "lost_reply", hold="after")
    errors: list = []

    def put() -> None:
        try:
            _session(moto_proxied).put(key, b"applied")
        except urllib3.exceptions.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=put)
    thread.start()
    assert rule.reached.wait(30)
    assert _stored(moto_proxied, key) == b"applied"
    rule.release()
    thread.join(30)
    assert len(errors) == 1


def test_rules_match_in_order_and_run_out(moto_proxied):
    proxy, key = moto_proxied.proxy, _key()
    first = proxy.add_rule(lambda r: r.key == key, "500", times=2)
    second = proxy.add_rule(lambda r: r.key == key, "503", times=None)
    session = _session(moto_proxied)
    assert [session.get(key).status for _ in range(4)] == [500, 500, 503, 503]
    assert (first.hits, second.hits) == (2, 2)
    proxy.remove_rule(second)
    assert session.get(key).status == 404


# -- random faults ---------------------------------------------------------------------------


def _random_run(upstream: str, proxied, seed: int) -> list:
    with FaultProxy(upstream) as proxy:
        proxy.randomize(0.5, seed=seed, kinds=("500", "503", "delay"), delay=0.001)
        session = Client.make(proxied, url=proxy.url)
        for _ in range(40):
            session.get("proxytest/absent")
        return [e.fault for e in proxy.log]


def test_random_faults_follow_their_seed(moto_proxied):
    upstream = moto_proxied.server.endpoint_url
    run = _random_run(upstream, moto_proxied, seed=7)
    assert run == _random_run(upstream, moto_proxied, seed=7)
    assert run != _random_run(upstream, moto_proxied, seed=8)
    assert 5 < sum(f is not None for f in run) < 35
    assert {f for f in run if f} <= {"500", "503", "delay"}


def test_every_fault_kind_is_counted_and_calm_turns_random_faults_off(moto_proxied):
    proxy = moto_proxied.proxy
    proxy.randomize(1.0, seed=1, delay=0.001)
    session = _session(moto_proxied)
    for _ in range(60):
        try:
            session.get("proxytest/absent")
        except urllib3.exceptions.HTTPError:
            pass
    assert set(proxy.stats.faults) == set(FAULTS)
    assert sum(proxy.stats.faults.values()) == proxy.stats.requests == 60
    proxy.calm()
    assert session.get("proxytest/absent").status == 404
    assert proxy.log[-1].fault is None
    assert not proxy.errors
