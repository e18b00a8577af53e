"""The command line in a real terminal: the progress bar, waits, and Ctrl-C.

Each command runs under a pseudo-terminal (``pty.fork``: the terminal is its controlling
terminal, so a ``^C`` typed into it is a real SIGINT from the terminal driver). It talks to
moto through :class:`GatedProxy`, a forwarding proxy of this module that can hold chosen
requests until the test lets them go: the test decides when a transfer is "in progress",
and nothing waits on a clock.
"""

from __future__ import annotations

import http.server
import os
import pathlib
import pty
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator

import booklet
import pytest
import urllib3

import ebooklet
from ebooklet.lock import Lease
from ebooklet.remote import connect
from ebooklet.settings import settings as ebooklet_settings
from ebooklet.sync.objects import THREADS

from .servers import S3Server
from .test_cli import ebk

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: How long a test waits for the terminal to show something before it fails.
PATIENCE = 60.0


class GatedProxy:
    """Forwards HTTP requests to ``target``; requests whose path matches a held pattern wait
    until :meth:`release` (the first ``passing`` of them go through)."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.log: list[tuple[str, str]] = []
        self._pool = urllib3.PoolManager(retries=False)
        self._cond = threading.Condition()
        self._pattern: re.Pattern[str] | None = None
        self._passing = 0
        self._open = threading.Event()
        self.held = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy._gate(self.command, self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                resp = proxy._pool.request(self.command, proxy.target + self.path, body=body or None,
                                           headers=headers, redirect=False, preload_content=True)
                self.send_response(resp.status)
                for key, value in resp.headers.items():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(resp.data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def _gate(self, method: str, path: str) -> None:
        with self._cond:
            self.log.append((method, path))
            self._cond.notify_all()
            pattern = self._pattern
            if pattern is None or not pattern.search(f"{method} {path}"):
                return
            if self._passing > 0:
                self._passing -= 1
                return
            self.held += 1
            self._cond.notify_all()
        self._open.wait(PATIENCE)

    def hold(self, pattern: str, passing: int = 0) -> None:
        """Hold requests matching ``pattern`` ("METHOD /path" regex) after ``passing`` of them."""
        with self._cond:
            self._pattern, self._passing = re.compile(pattern), passing
            self._open.clear()

    def release(self) -> None:
        with self._cond:
            self._pattern = None
        self._open.set()

    def wait_held(self, n: int = 1) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.held >= n, PATIENCE), self.log[-5:]

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


class Terminal:
    """``python -m ebooklet ARGS`` with a pseudo-terminal as its stdin, stdout and stderr."""

    def __init__(self, cwd: pathlib.Path, args: list[str], env: dict[str, str], prelude: str = "") -> None:
        code = f"import sys\n{prelude}\nfrom ebooklet.cli import main\nsys.exit(main({args!r}))"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XDG_", "PYTHONPATH"))}
        environ.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(cwd / "cache"), HOME=str(cwd / "home"),
                       AWS_EC2_METADATA_DISABLED="true", COLUMNS="100", TERM="dumb", **env)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes the command at once
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-c", code], environ)
        self.output = b""
        self.status: int | None = None

    def read_until(self, pattern: str) -> str:
        """Read the terminal until ``pattern`` (a regex) shows up; return everything so far."""
        deadline = time.monotonic() + PATIENCE
        while not re.search(pattern.encode(), self.output):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{pattern!r} never showed; the terminal shows:\n{self.text}"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the command exited and the terminal closed
                    chunk = b""
                assert chunk, f"{pattern!r} never showed; the terminal shows:\n{self.text}"
                self.output += chunk
        return self.text

    def written(self) -> str:
        """Everything the command has written to the terminal so far, without waiting: a read
        of the terminal takes in what the command's writes left in flight."""
        os.set_blocking(self.fd, False)
        try:
            while True:
                try:
                    chunk = os.read(self.fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                self.output += chunk
        finally:
            os.set_blocking(self.fd, True)
        return self.text

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self) -> int:
        """Read to the end, and return the exit status."""
        while True:
            ready, _, _ = select.select([self.fd], [], [], PATIENCE)
            assert ready, f"the command did not end; the terminal shows:\n{self.text}"
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            self.output += chunk
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


@pytest.fixture
def proxy(moto_server: S3Server) -> Iterator[GatedProxy]:
    gated = GatedProxy(moto_server.endpoint_url)
    yield gated
    gated.close()


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for terminal in started:
        terminal.kill()


def s3_env(server: S3Server, proxy: GatedProxy) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": server.access_key_id, "AWS_SECRET_ACCESS_KEY": server.access_key,
            "AWS_ENDPOINT_URL_S3": proxy.url}


def direct(server: S3Server, bucket: str, key: str) -> ebooklet.S3Connection:
    return ebooklet.S3Connection(server.access_key_id, server.access_key, key, bucket,
                                 endpoint_url=server.endpoint_url)


def objects_under(conn: ebooklet.S3Connection, prefix: str) -> list[str]:
    remote = connect(conn)
    try:
        return sorted(remote.transport.list(prefix))
    finally:
        remote.transport.close()


#: Makes a push of a few MiB use many segments (64 KiB each), so that uploads queue up.
SMALL_SEGMENTS = "from ebooklet.settings import settings\nsettings.segment_bytes = 64 * 1024"


def test_the_progress_bar_is_drawn_in_place_and_ends_its_line(
    tmp_path: pathlib.Path, moto_server: S3Server, proxy: GatedProxy, terminals: list[Terminal]
) -> None:
    bucket = moto_server.make_bucket()
    conn = direct(moto_server, bucket, "db")
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db.update({f"k{i:03d}": os.urandom(40_000) for i in range(120)})
    proxy.hold(r"^PUT /[^ ]*/seg/", passing=2)
    remote = [f"s3://{bucket}/db", "a.blt", "--endpoint-url", proxy.url]
    push = Terminal(tmp_path, ["push", *remote], s3_env(moto_server, proxy), SMALL_SEGMENTS)
    terminals.append(push)
    proxy.wait_held()
    # The rate and the time left at that pace, as rclone shows them.
    shown = push.read_until(r"pushing +\[[#.]+\] +\d+% .* +\d+/120 keys +[\d.]+ [KM]?i?B/s  ETA +\d+:\d\d")
    assert "\r" in shown
    proxy.release()
    assert push.wait() == 0, push.text
    lines = push.text.replace("\r\n", "\n").split("\n")
    bar = next(line for line in lines if "pushing" in line)
    assert bar.split("\r")[-1].startswith("pushing   [####################] 100%")  # the last redraw
    assert re.search(r"120/120 keys +[\d.]+ [KM]?i?B/s  ETA  0:00$", bar.rstrip())
    after = lines[lines.index(bar) + 1]
    assert re.fullmatch(r"commit 1: 120 keys written, 0 deleted, 4,\d{3},\d{3} bytes in \d+ requests", after)


def test_a_push_says_what_it_prepares_from_its_first_moment(
    tmp_path: pathlib.Path, moto_server: S3Server, proxy: GatedProxy, terminals: list[Terminal]
) -> None:
    """Before its first request, a push has drawn its "preparing" line: a push that reads a
    large database or packs many changes is never silent while it starts."""
    bucket = moto_server.make_bucket()
    through_proxy = ebooklet.S3Connection(moto_server.access_key_id, moto_server.access_key, "db", bucket,
                                          endpoint_url=proxy.url)
    with ebooklet.open(through_proxy, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db["k"] = "v"
    proxy.hold(r".")  # every request waits
    push = Terminal(tmp_path, ["push", f"s3://{bucket}/db", "a.blt", "--endpoint-url", proxy.url],
                    s3_env(moto_server, proxy))
    terminals.append(push)
    proxy.wait_held()
    # Written before the first request went out: what the terminal shows first.
    first = push.written()
    assert first.startswith("\rpushing     0 s  reading the remote and packing the changes"), first
    proxy.release()
    assert push.wait() == 0, push.text
    assert "commit 1: 1 key written" in push.text


def test_ctrl_c_during_a_push_stops_at_once_and_leaves_nothing_behind(
    tmp_path: pathlib.Path, moto_server: S3Server, proxy: GatedProxy, terminals: list[Terminal]
) -> None:
    bucket = moto_server.make_bucket()
    conn = direct(moto_server, bucket, "data/db")
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db["first"] = b"committed before"
        db.changes().push()
        db.update({f"k{i:03d}": os.urandom(40_000) for i in range(200)})
    before = objects_under(conn, "data/db.ebooklet/")

    proxy.hold(r"^PUT /[^ ]*/seg/", passing=3)
    remote = [f"s3://{bucket}/data/db", "a.blt", "--endpoint-url", proxy.url]
    push = Terminal(tmp_path, ["push", *remote], s3_env(moto_server, proxy), SMALL_SEGMENTS)
    terminals.append(push)
    proxy.wait_held(THREADS)  # every upload thread waits on a request in flight
    push.read_until(r"pushing +\[")
    push.type(b"\x03")  # Ctrl-C, through the terminal driver
    push.read_until(r"ebooklet: stopping \(Ctrl-C again to stop at once\)")
    proxy.release()  # the requests in flight at the interrupt finish
    assert push.wait() == 130, push.text
    # No upload started after the interrupt: of about 125 segments, 3 went up and THREADS were
    # in flight; the others were never sent.
    segment_puts = [r for r in proxy.log if r[0] == "PUT" and "/seg/" in r[1]]
    assert len(segment_puts) == 3 + THREADS
    last = push.text.replace("\r\n", "\n").rstrip("\n").split("\n")[-1]
    assert re.fullmatch(
        r"ebooklet: interrupted: nothing was committed\. The \d+ objects it had uploaded were deleted\. "
        r"a\.blt keeps its changes: run the push again to push them\.", last
    ), last
    # Only what the first commit made is left (the lease object stays, released).
    after = objects_under(conn, "data/db.ebooklet/")
    assert set(after) - set(before) <= {"data/db.ebooklet/lease"}
    assert ebooklet.remote_info(conn).commit == 1  # type: ignore[union-attr]

    again = Terminal(tmp_path, ["push", *remote], s3_env(moto_server, proxy), SMALL_SEGMENTS)
    terminals.append(again)
    assert again.wait() == 0 and "commit 2: 200 keys written" in again.text
    with ebooklet.open(conn, tmp_path / "check.blt", "r") as db:
        assert len(db) == 201


def test_a_wait_for_another_writer_is_shown(
    tmp_path: pathlib.Path, moto_server: S3Server, proxy: GatedProxy, terminals: list[Terminal]
) -> None:
    bucket = moto_server.make_bucket()
    conn = direct(moto_server, bucket, "db")
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db["k"] = "v"
    lease = Lease(connect(conn), ttl=600)
    lease.acquire()  # another writer is pushing
    try:
        push = Terminal(tmp_path, ["push", f"s3://{bucket}/db", "a.blt", "--endpoint-url", proxy.url],
                        s3_env(moto_server, proxy))
        terminals.append(push)
        push.read_until(r"pushing +\d+ s  waiting for another writer's lock on s3://\S+/db ")
    finally:
        lease.release()
    assert push.wait() == 0 and "commit 1: 1 key written" in push.text


def test_pull_load_says_what_it_does_before_its_bar(
    tmp_path: pathlib.Path, moto_server: S3Server, proxy: GatedProxy, terminals: list[Terminal]
) -> None:
    bucket = moto_server.make_bucket()
    conn = direct(moto_server, bucket, "db")
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db.update({f"k{i:03d}": os.urandom(1000) for i in range(300)})
        db.changes().push()
    proxy.hold(r"^GET /[^ ]*/index/")
    pull = Terminal(tmp_path, ["pull", f"s3://{bucket}/db", "b.blt", "--load"], s3_env(moto_server, proxy))
    terminals.append(pull)
    proxy.wait_held()
    pull.read_until(r"fetching +\d+ s  reading the index")
    proxy.release()
    assert pull.wait() == 0, pull.text
    assert pull.text.replace("\r\n", "\n").rstrip().endswith("fetched 300 values")


def test_a_store_is_probed_once_not_by_every_command(
    tmp_path: pathlib.Path, moto_server: S3Server, proxy: GatedProxy
) -> None:
    bucket = moto_server.make_bucket()
    with ebooklet.open(tmp_path / "folder" / "db", tmp_path / "a.blt", "c", value_serializer="str") as db:
        db["k"] = "v"
    remote = [f"s3://{bucket}/db", "a.blt", "--endpoint-url", proxy.url]

    def push() -> list[tuple[str, str]]:
        mark = len(proxy.log)
        run = ebk(tmp_path, "push", *remote, env=s3_env(moto_server, proxy))
        assert run.code == 0, run.err
        return proxy.log[mark:]

    first = push()
    assert len([r for r in first if "/probe-" in r[1]]) == 2  # two conditional creates, then a delete
    edit = ebk(tmp_path, "put", "a.blt", "k", "w", env=s3_env(moto_server, proxy))
    assert edit.code == 0, edit.err
    second = push()
    assert not [r for r in second if "probe" in r[1]]
    # What docs/operations.rst counts: lease and queue reads, lease take, head read, one
    # segment, one index part, the head's log object, a HEAD of the first upload, head write,
    # lease release.
    assert len(second) == 10, second


def test_ctrl_c_during_pull_load_keeps_what_it_fetched(
    tmp_path: pathlib.Path, moto_server: S3Server, proxy: GatedProxy, terminals: list[Terminal],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 11, problem 5: an interrupted ``pull --load`` kept nothing of what it fetched."""

    bucket = moto_server.make_bucket()
    conn = direct(moto_server, bucket, "db")
    values = {f"k{i:03d}": os.urandom(40_000) for i in range(200)}
    monkeypatch.setattr(ebooklet_settings, "segment_bytes", 64 * 1024)  # many segments: one GET each to load
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="bytes") as db:
        db.update(values)
        db.changes().push()
    monkeypatch.undo()

    proxy.hold(r"^GET /[^ ]*/seg/", passing=3)
    pull = Terminal(tmp_path, ["pull", f"s3://{bucket}/db", "b.blt", "--load", "--endpoint-url", proxy.url],
                    s3_env(moto_server, proxy))
    terminals.append(pull)
    proxy.wait_held()
    pull.read_until(r"fetching +\[")
    pull.type(b"\x03")  # Ctrl-C, through the terminal driver
    pull.read_until(r"ebooklet: stopping \(Ctrl-C again to stop at once\)")
    proxy.release()
    assert pull.wait() == 130, pull.text
    last = pull.text.replace("\r\n", "\n").rstrip("\n").split("\n")[-1]
    assert last == (
        "ebooklet: interrupted while fetching values: b.blt is up to date with commit 1, and values not "
        "fetched yet are fetched when first read. Run the pull --load again to fetch them all now."
    ), last
    segment_gets = [r for r in proxy.log if r[0] == "GET" and "/seg/" in r[1]]
    assert len(segment_gets) < 100  # it stopped: about 125 segments hold the values
    # What it fetched is in the file (a plain booklet file), each value whole.
    with booklet.open(tmp_path / "b.blt", "r") as local:
        kept = {key: local[key] for key in values if key in local}
    assert kept and len(kept) < len(values)
    assert all(value == values[key] for key, value in kept.items())
    # The rest is fetched when read, or by the next pull --load, which fetches only the rest.
    with ebooklet.open(conn, tmp_path / "b.blt", "r") as db:
        assert dict(db.items()) == values


def test_answering_no_at_a_prompt_cancels_without_an_error(tmp_path: pathlib.Path) -> None:
    remote = tmp_path / "bucket" / "db.blt"
    with ebooklet.open(remote, tmp_path / "a.blt", "c", value_serializer="orjson") as db:
        db["k"] = 1
        db.changes().push()
    for command in (["rm", "bucket/db.blt"], ["discard", "a.blt"]):
        if command[0] == "discard":
            with ebooklet.open(remote, tmp_path / "a.blt", "w") as db:
                db["k"] = 2
        asked = Terminal(tmp_path, command, {})
        try:
            asked.read_until(r"\[y/N\] ")
            asked.type(b"n\n")
            assert asked.wait() == 0, asked.text
        finally:
            asked.kill()
        assert asked.text.endswith(f"ebooklet: {command[0]} cancelled: nothing was changed\r\n")
        assert "error" not in asked.text
    assert ebooklet.remote_info(remote) is not None
    with ebooklet.open(remote, tmp_path / "a.blt", "r") as db:
        assert db["k"] == 2
