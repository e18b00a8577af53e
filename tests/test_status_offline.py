"""``status`` works offline (issue 15): with the remote unreachable (its server stopped, the
connection refused), ``ebooklet status LOCAL`` lists the pending local changes from the
journal, says the remote was not checked, and exits with its own status, at once rather than
after its retries; ``db.changes(offline=True)`` lists them without a request.

The pending changes are those of ``_pending``: added, modified and deleted keys, made through
ebooklet and closed without a push.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import ebooklet

from .servers import S3Server, start_moto
from .subprocs import ROOT

#: The exit status of ``status`` when the remote could not be checked (documented by the CLI).
OFFLINE_STATUS = 5
#: ``--retries`` of the CLI runs: a status that retried a refused connection would take
#: 0 + 2 + 4 + 8 = 14 s of backoff; "at once" is checked as far under that.
RETRIES = 4
AT_ONCE = 7.0
PENDING = {"new1": "added", "new2": "added", "k0": "modified", "k1": "deleted"}


@pytest.fixture
def stopped_moto() -> Iterator[S3Server]:
    """A moto server of the test's own, which the test may stop."""
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


def _conn(server: S3Server, bucket: str, endpoint_url: str, tmp_path: pathlib.Path) -> ebooklet.S3Connection:
    """A connection to the test's own database (the proxied fixtures share one bucket per
    server; the key is named after the test's folder)."""
    return ebooklet.S3Connection(
        server.access_key_id, server.access_key, _key(tmp_path), bucket, endpoint_url=endpoint_url,
        retries=RETRIES,
    )


def _key(tmp_path: pathlib.Path) -> str:
    return f"dbs/{tmp_path.name}"


def _pending(conn: ebooklet.S3Connection, local: pathlib.Path) -> None:
    """Push k0..k4 from ``local``, then leave PENDING there (closed, not pushed)."""
    with ebooklet.open(conn, local, "c", value_serializer="str") as db:
        db.update({f"k{i}": f"v{i}" for i in range(5)})
        db.changes().push()
    with ebooklet.open(conn, local, "w") as db:
        db.update({"new1": "n1", "new2": "n2", "k0": "changed"})
        del db["k1"]


def _status(
    cwd: pathlib.Path, server: S3Server, remote: list[str], *args: str
) -> tuple[subprocess.CompletedProcess, float]:
    """``ebooklet status [REMOTE] a.blt ARGS`` (``remote``: [REMOTE], or none for the remote
    a.blt remembers), and how long it took."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XDG_", "PYTHONPATH"))}
    env.update(
        PYTHONPATH=ROOT, HOME=str(cwd / "home"), XDG_CACHE_HOME=str(cwd / "cache"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID=server.access_key_id, AWS_SECRET_ACCESS_KEY=server.access_key,
    )
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "ebooklet", "status", *remote, "a.blt", "--retries", str(RETRIES), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )
    return run, time.monotonic() - started


def _offline_setup(
    request: pytest.FixtureRequest, how: str, tmp_path: pathlib.Path
) -> tuple[S3Server, str, str]:
    """A local file with PENDING changes whose remote is now unreachable, ``how``: its
    server stopped, or the proxy in front of it gone (connections refused)."""
    if how == "server-stopped":
        server = request.getfixturevalue("stopped_moto")
        bucket = server.make_bucket()
        endpoint = server.endpoint_url
        _pending(_conn(server, bucket, endpoint, tmp_path), tmp_path / "a.blt")
        server.stop()
    else:
        proxied = request.getfixturevalue("moto_proxied")
        server, bucket, endpoint = proxied.server, proxied.bucket, proxied.proxy.url
        _pending(_conn(server, bucket, endpoint, tmp_path), tmp_path / "a.blt")
        proxied.proxy.stop()
    return server, f"s3://{bucket}/{_key(tmp_path)}", endpoint


@pytest.mark.parametrize(
    ("how", "given"),
    [("server-stopped", False), ("connection-refused", False), ("connection-refused", True)],
    ids=["server-stopped", "connection-refused", "connection-refused-remote-given-exit-code"],
)
def test_status_offline_lists_the_pending_changes_with_its_own_exit_status(tmp_path, request, how, given):
    server, url, endpoint = _offline_setup(request, how, tmp_path)
    # ``ebooklet status LOCAL`` (the remote it remembers), or with REMOTE given and --exit-code
    remote, options = ([url], ["--endpoint-url", endpoint, "--exit-code"]) if given else ([], [])
    run, took = _status(tmp_path, server, remote, *options)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == OFFLINE_STATUS, (run.returncode, run.stdout, run.stderr)
    assert took < AT_ONCE, f"status took {took:.1f} s: it retried a refused connection"
    text = run.stdout + run.stderr
    assert "not checked" in text, f"status does not say the remote was not checked:\n{text}"
    for key, kind in PENDING.items():
        assert any(key in line and kind in line for line in run.stdout.splitlines()), (key, kind, run.stdout)


def test_status_offline_in_json(tmp_path, request):
    server, _, _ = _offline_setup(request, "connection-refused", tmp_path)
    run, took = _status(tmp_path, server, [], "--json")
    assert run.returncode == OFFLINE_STATUS, (run.stdout, run.stderr)
    assert took < AT_ONCE
    data = json.loads(run.stdout)
    assert {c["key"]: c["local"] for c in data["changes"]} == PENDING
    assert all(c["side"] == "local" for c in data["changes"])


def test_changes_offline_makes_no_request(tmp_path, moto_proxied):
    conn = _conn(moto_proxied.server, moto_proxied.bucket, moto_proxied.proxy.url, tmp_path)
    local = tmp_path / "a.blt"
    _pending(conn, local)
    with ebooklet.open(conn, local, "r") as db:
        before, proxied_before = db.stats.snapshot(), moto_proxied.proxy.stats.requests
        listed = {c.key: c.local for c in db.changes(offline=True).iter_changes()}
        assert listed == PENDING
        assert db.stats.snapshot() == before and moto_proxied.proxy.stats.requests == proxied_before
        moto_proxied.proxy.stop()  # and with the remote gone
        started = time.monotonic()
        listed = {c.key: c.local for c in db.changes(offline=True).iter_changes()}
        assert listed == PENDING
        assert time.monotonic() - started < AT_ONCE
        assert db.stats.snapshot() == before


#: What needs the network, on a handle whose remote went away.
NEEDS_NETWORK = {
    "push": lambda db: db.changes().push(),
    "pull": lambda db: db.changes().pull(),
    "changes": lambda db: list(db.changes().iter_changes()),
    "read-unfetched": lambda db: db["k2"],
}


@pytest.mark.parametrize("operation", list(NEEDS_NETWORK))
def test_what_needs_the_network_says_so_at_once_when_the_connection_is_refused(
    tmp_path, moto_proxied, operation
):
    conn = _conn(moto_proxied.server, moto_proxied.bucket, moto_proxied.proxy.url, tmp_path)
    _pending(conn, tmp_path / "seed.blt")
    local = tmp_path / "a.blt"
    with ebooklet.open(conn, local, "w") as db:  # a copy that never fetched k2
        db["x"] = "something to push"
        moto_proxied.proxy.stop()
        started = time.monotonic()
        with pytest.raises(ebooklet.errors.RemoteUnavailableError):
            NEEDS_NETWORK[operation](db)
        took = time.monotonic() - started
        assert took < AT_ONCE, f"{operation} took {took:.1f} s: it retried a refused connection"
