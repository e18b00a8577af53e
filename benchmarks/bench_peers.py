"""ebooklet against its peers, side by side, in one run on one S3 server.

Run from the repository root with the project's Python (it needs ebooklet's test
dependencies: moto and boto3)::

    python benchmarks/bench_peers.py                 # 100,000 keys x 100 B, all peers
    python benchmarks/bench_peers.py --keys 10000    # a quicker run
    python benchmarks/bench_peers.py --only ours,slatedb --save
    python benchmarks/bench_peers.py --repeat 3 --save   # the median of 3 runs of each phase

Implementations (each phase runs in a fresh process of its own):

``ours``        this repository's ebooklet, with default settings.
``ebooklet``    the published ebooklet 0.11.1 (opened with ``n_buckets`` = the key count, as
                its docs advise for large files).
``slatedb``     SlateDB 0.17 (an embedded LSM on object storage), WAL off, written in
                batches of 1,000 puts, scanned with read-ahead and parallel fetches.
``sqlitedict``  a sqlitedict file (raw bytes values, one commit) uploaded with one PUT and
                downloaded with one GET (boto3).

The peers are installed with pip into venvs of their own under ``--cache`` (default
``benchmarks/.venvs/``, git-ignored); none becomes a dependency of this project.

Phases, on keys ``key-0000000``... with incompressible values:

``write + push``   create a database, write every key, make it durable on S3 (ebooklet:
                   push; slatedb: flush and close; sqlitedict: commit, then the PUT).
``push alone``     the same with the local writes done before the clock starts (ebooklet:
                   only the push; sqlitedict: only the PUT; slatedb has no such phase).
``cold read 1``    a new process on a fresh local path opens the database and reads one key.
``read all``       a new process on a fresh local path reads every value (ebooklet:
                   ``values()``, which also caches them in the local file).
``no-op changes``  ``list(db.changes().iter_changes())`` on the synced file of ``write +
                   push`` (ebooklet only; the open is not timed).

The S3 server is moto on 127.0.0.1 (in a child process), reached only through a counting
reverse proxy in this process: requests and body bytes in each direction are counted for
the timed region of each phase (the worker reads the counters just before and after it).
Times are one run each, wall clock, and are only meaningful as ratios within one run; the
load average is printed because the machine may be shared. With ``--save`` the report is
also written to ``benchmarks/results/peers-<date>.txt``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import http.server
import json
import os
import pathlib
import platform
import random
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUCKET = "peers"
ACCESS_KEY_ID = "bench-key-id"
ACCESS_KEY = "bench-secret"

#: pip requirements of each peer's venv.
PEERS: dict[str, list[str]] = {
    "ebooklet": ["ebooklet==0.11.1"],
    "slatedb": ["slatedb==0.17.0"],
    "sqlitedict": ["sqlitedict==2.1.0", "boto3"],
}
IMPLS = ["ours", "ebooklet", "slatedb", "sqlitedict"]
LABELS = {
    "ours": "ours",
    "ebooklet": "ebooklet 0.11.1",
    "slatedb": "slatedb 0.17",
    "sqlitedict": "sqlitedict + 1 PUT",
}
PHASES = ["write_push", "push_alone", "cold_one", "read_all", "noop_changes"]
PHASE_LABELS = {
    "write_push": "write + push",
    "push_alone": "push alone",
    "cold_one": "cold read of 1 key",
    "read_all": "fresh read of all values",
    "noop_changes": "no-op changes()",
}
#: Which phases each implementation has.
HAS_PHASE = {
    "ours": set(PHASES),
    "ebooklet": set(PHASES),
    "slatedb": {"write_push", "cold_one", "read_all"},
    "sqlitedict": {"write_push", "push_alone", "cold_one", "read_all"},
}
CONTROL_PATH = "/__bench_counters__"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the counting proxy ----------------------------------------------------------------------


@dataclass
class Counters:
    requests: int = 0
    sent: int = 0
    received: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {"requests": self.requests, "sent": self.sent, "received": self.received}


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


def make_proxy(upstream: str, counters: Counters) -> socketserver.ThreadingTCPServer:
    """A reverse proxy on 127.0.0.1 to ``upstream`` (an http URL) that counts every request
    and the body bytes each way; ``GET CONTROL_PATH`` returns the counters (not counted)."""
    up = urllib.request.urlparse(upstream)
    local = threading.local()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _upstream(self, method: str, body: bytes) -> http.client.HTTPResponse:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers.pop("Expect", None)
            if body or method in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            for attempt in (1, 2):
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection(up.hostname, up.port, timeout=300)
                try:
                    conn.request(method, self.path, body=body or None, headers=headers)
                    return conn.getresponse()
                except (ConnectionError, http.client.HTTPException):
                    conn.close()
                    local.conn = None
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

        def _handle(self) -> None:
            method = self.command
            if self.path == CONTROL_PATH:
                data = json.dumps(counters.snapshot()).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            body = self._body()
            resp = self._upstream(method, body)
            data = resp.read()
            with counters.lock:
                counters.requests += 1
                counters.sent += len(body)
                counters.received += len(data)
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() in _HOP_BY_HOP or (k.lower() == "content-length" and method != "HEAD"):
                    continue
                self.send_header(k, v)
            if method != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data and method != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- moto ------------------------------------------------------------------------------------

_MOTO_CHILD = r"""
import json, sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(json.dumps({"endpoint_url": f"http://{host}:{port}"}), flush=True)
sys.stdin.read()  # until the parent closes our stdin (or dies)
server.stop()
"""


def start_moto(workdir: pathlib.Path) -> tuple[subprocess.Popen, str]:
    with open(workdir / "moto.log", "wb") as moto_log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _MOTO_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=moto_log, cwd=workdir,
        )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise RuntimeError(f"moto did not start; see {workdir / 'moto.log'}")
    return proc, json.loads(line)["endpoint_url"]


def make_bucket(endpoint: str) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=ACCESS_KEY, region_name="us-east-1",
        config=Config(proxies={}, s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=BUCKET)


# -- venvs -----------------------------------------------------------------------------------


def peer_python(impl: str, cache: pathlib.Path) -> str:
    """The Python of ``impl``'s venv, created and filled on first use."""
    if impl == "ours":
        return sys.executable
    venv = cache / impl
    python = venv / "bin" / "python"
    stamp = venv / "installed.json"
    wanted = PEERS[impl]
    if not (stamp.exists() and json.loads(stamp.read_text()) == wanted):
        log(f"installing {' '.join(wanted)} into {venv}")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted],
            check=True,
        )
        stamp.write_text(json.dumps(wanted))
    return str(python)


# -- workers: one phase of one implementation, in its own process ----------------------------


def make_data(n: int, size: int) -> tuple[list[str], list[bytes]]:
    keys = [f"key-{i:07d}" for i in range(n)]
    blob = random.Random(42).randbytes(n * size)
    return keys, [blob[i * size : (i + 1) * size] for i in range(n)]


class Clock:
    """Times a region and reads the proxy's counters at its ends."""

    def __init__(self, proxy: str) -> None:
        self.proxy = proxy
        self.result: dict[str, Any] = {}

    def counters(self) -> dict[str, int]:
        with urllib.request.urlopen(self.proxy + CONTROL_PATH) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def __enter__(self) -> Clock:
        self.before = self.counters()
        self.profile = None
        if os.environ.get("BENCH_PEERS_PROFILE"):
            import cProfile  # noqa: PLC0415 - only when asked for

            self.profile = cProfile.Profile()
            self.profile.enable()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self.t0
        if self.profile is not None:
            # BENCH_PEERS_PROFILE=DIR: one .prof file per timed region (python -m pstats).
            self.profile.disable()
            out = pathlib.Path(os.environ["BENCH_PEERS_PROFILE"])
            out.mkdir(parents=True, exist_ok=True)
            self.profile.dump_stats(out / f"{os.getpid()}.prof")
        after = self.counters()
        self.result = {"seconds": seconds, **{k: after[k] - self.before[k] for k in after}}


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    impl, phase = cfg["impl"], cfg["phase"]
    keys, values = make_data(cfg["keys"], cfg["value_bytes"])
    clock = Clock(cfg["proxy"])
    out: dict[str, Any] = {}
    if impl in ("ours", "ebooklet"):
        out = _worker_ebooklet(cfg, impl, phase, keys, values, clock)
    elif impl == "slatedb":
        import asyncio

        out = asyncio.run(_worker_slatedb(cfg, phase, keys, values, clock))
    elif impl == "sqlitedict":
        out = _worker_sqlitedict(cfg, phase, keys, values, clock)
    return {**clock.result, **out}


def _worker_ebooklet(cfg, impl, phase, keys, values, clock) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    import ebooklet

    args = (ACCESS_KEY_ID, ACCESS_KEY, cfg["db_key"], BUCKET)
    conn = ebooklet.S3Connection(*args, endpoint_url=cfg["proxy"])
    path = pathlib.Path(cfg["path"])
    if impl == "ours":
        def open_db(flag: str):  # type: ignore[no-untyped-def]
            return ebooklet.open(conn, path, flag)
    else:
        def open_db(flag: str):  # type: ignore[no-untyped-def]
            return ebooklet.open_ebooklet(conn, path, flag, n_buckets=len(keys))
    out: dict[str, Any] = {"version": ebooklet.__version__}
    if phase == "write_push":
        with clock:
            with open_db("n") as db:
                for k, v in zip(keys, values, strict=True):
                    db[k] = v
                db.changes().push()
    elif phase == "push_alone":
        with open_db("n") as db:
            for k, v in zip(keys, values, strict=True):
                db[k] = v
            db.sync()
            with clock:
                db.changes().push()
    elif phase == "cold_one":
        key = keys[len(keys) // 2]
        with clock:
            with open_db("r") as db:
                value = db[key]
        out["ok"] = value == values[len(keys) // 2]
    elif phase == "read_all":
        with clock:
            with open_db("r") as db:
                n = total = 0
                for v in db.values():
                    n += 1
                    total += len(v)
        out["ok"] = n == len(keys) and total == sum(map(len, values))
    elif phase == "noop_changes":
        with open_db("w") as db:
            with clock:
                changes = list(db.changes().iter_changes())
        out["ok"] = changes == []
    return out


async def _worker_slatedb(cfg, phase, keys, values, clock) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from importlib.metadata import version

    import slatedb.uniffi as s

    def store():  # type: ignore[no-untyped-def]
        builder = s.ObjectStoreBuilder(s.ObjectStoreType.S3)
        for k, v in {
            "access_key_id": ACCESS_KEY_ID, "secret_access_key": ACCESS_KEY, "bucket": BUCKET,
            "region": "us-east-1", "endpoint": cfg["proxy"], "allow_http": "true",
        }.items():
            builder.with_config(k, v)
        return builder.build()

    out: dict[str, Any] = {"version": version("slatedb")}
    path = cfg["db_key"]
    if phase == "write_push":
        settings = s.Settings.default()
        settings.set("wal_enabled", "false")
        with clock:
            builder = s.DbBuilder(path, store())
            builder.with_settings(settings)
            db = await builder.build()
            for i in range(0, len(keys), 1000):
                batch = s.WriteBatch()
                for k, v in zip(keys[i : i + 1000], values[i : i + 1000], strict=True):
                    batch.put(k.encode(), v)
                await db.write(batch)
            await db.flush()
            await db.shutdown()
    elif phase == "cold_one":
        i = len(keys) // 2
        with clock:
            reader = await s.DbReaderBuilder(path, store()).build()
            value = await reader.get(keys[i].encode())
            await reader.shutdown()
        out["ok"] = value == values[i]
    elif phase == "read_all":
        options = s.ScanOptions(
            durability_filter=s.DurabilityLevel.REMOTE, dirty=False,
            read_ahead_bytes=cfg["read_ahead"], cache_blocks=False, max_fetch_tasks=8,
        )
        everything = s.KeyRange(start=None, start_inclusive=True, end=None, end_inclusive=False)
        with clock:
            reader = await s.DbReaderBuilder(path, store()).build()
            rows = await reader.scan_with_options(everything, options)
            n = total = 0
            while batch := await rows.next_batch(10_000):
                n += len(batch)
                total += sum(len(kv.value) for kv in batch)
            await reader.shutdown()
        out["ok"] = n == len(keys) and total == sum(map(len, values))
    return out


def _worker_sqlitedict(cfg, phase, keys, values, clock) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from importlib.metadata import version

    import boto3
    from botocore.config import Config
    from sqlitedict import SqliteDict

    client = boto3.client(
        "s3", endpoint_url=cfg["proxy"], aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=ACCESS_KEY, region_name="us-east-1",
        config=Config(proxies={}, s3={"addressing_style": "path"},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )
    client.list_buckets()  # connect before the clock starts
    path = cfg["path"]

    def same(x: bytes) -> bytes:
        return x

    def open_db(flag: str) -> SqliteDict:
        return SqliteDict(path, flag=flag, encode=same, decode=same, autocommit=False)

    def write() -> None:
        with open_db("n") as db:
            for k, v in zip(keys, values, strict=True):
                db[k] = v
            db.commit()

    def put() -> None:
        client.put_object(Bucket=BUCKET, Key=cfg["db_key"], Body=pathlib.Path(path).read_bytes())

    def get() -> None:
        pathlib.Path(path).write_bytes(client.get_object(Bucket=BUCKET, Key=cfg["db_key"])["Body"].read())

    out: dict[str, Any] = {"version": version("sqlitedict")}
    if phase == "write_push":
        with clock:
            write()
            put()
    elif phase == "push_alone":
        write()
        with clock:
            put()
    elif phase == "cold_one":
        i = len(keys) // 2
        with clock:
            get()
            with open_db("r") as db:
                value = db[keys[i]]
        out["ok"] = value == values[i]
    elif phase == "read_all":
        with clock:
            get()
            with open_db("r") as db:
                n = total = 0
                for v in db.values():
                    n += 1
                    total += len(v)
        out["ok"] = n == len(keys) and total == sum(map(len, values))
    return out


# -- the orchestrator ------------------------------------------------------------------------


def run_phase(python: str, cfg: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if cfg["impl"] == "ours":
        env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [python, str(pathlib.Path(__file__).resolve()), "--worker", json.dumps(cfg)],
        capture_output=True, text=True, env=env, cwd=cfg["workdir"],
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{cfg['impl']} {cfg['phase']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_time(s: float) -> str:
    return f"{s:.3f} s" if s < 1 else f"{s:.2f} s"


def fmt_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} KB"
    return f"{n / 1_000_000:.1f} MB"


def table(title: str, rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [title]
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(results: dict[tuple[str, str], dict[str, Any]], impls: list[str], header: list[str],
           value_bytes: int) -> str:
    out = ["\n".join(header)]

    def cell(impl: str, phase: str, metric: str, show: Any) -> str:
        r = results.get((impl, phase))
        if r is None:
            return "-"
        text = show(r[metric])
        ours = results.get(("ours", phase))
        if impl != "ours" and ours is not None and ours[metric]:
            text += f" ({r[metric] / ours[metric]:.2f}x)"
        return text

    for metric, title, show in [
        ("seconds", "time (ratio to ours)", fmt_time),
        ("requests", "requests (ratio to ours)", str),
        ("received", "bytes downloaded (ratio to ours)", fmt_bytes),
        ("sent", "bytes uploaded (ratio to ours)", fmt_bytes),
    ]:
        rows = [["phase"] + [LABELS[i] for i in impls]]
        for phase in PHASES:
            rows.append([PHASE_LABELS[phase]] + [cell(i, phase, metric, show) for i in impls])
        out.append(table(title, rows))
    lines = ["fresh read of all values, bytes downloaded / value bytes:"]
    for impl in impls:
        r = results.get((impl, "read_all"))
        if r is not None:
            lines.append(f"  {LABELS[impl]}: {r['received'] / value_bytes:.2f}")
    out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        branch = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--abbrev-ref", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return f"{rev} ({branch}{', with uncommitted changes' if dirty else ''})"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--only", default=",".join(IMPLS), help="comma-separated implementations")
    parser.add_argument("--cache", type=pathlib.Path, default=ROOT / "benchmarks" / ".venvs")
    parser.add_argument("--read-ahead", type=int, default=8 * 1024 * 1024,
                        help="slatedb scan read-ahead bytes")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/peers-<date>.txt")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each phase (fresh process and paths each); the median is reported")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    impls = [i for i in args.only.split(",") if i]
    unknown = set(impls) - set(IMPLS)
    if unknown:
        parser.error(f"unknown implementations {sorted(unknown)}; choose from {IMPLS}")
    args.cache.mkdir(parents=True, exist_ok=True)
    pythons = {impl: peer_python(impl, args.cache) for impl in impls}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-peers-"))
    moto, endpoint = start_moto(workdir)
    counters = Counters()
    proxy = make_proxy(endpoint, counters)
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    load_before = os.getloadavg()
    started = _dt.datetime.now(_dt.timezone.utc)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    versions: dict[str, str] = {}
    try:
        make_bucket(endpoint)
        for impl in impls:
            run = uuid.uuid4().hex[:8]
            main_key, main_path = f"{impl}-{run}/db", workdir / f"{impl}-{run}.db"
            for phase in PHASES:
                if phase not in HAS_PHASE[impl]:
                    continue
                cfg = {
                    "impl": impl, "phase": phase, "keys": args.keys, "value_bytes": args.value_bytes,
                    "proxy": proxy_url, "workdir": str(workdir), "read_ahead": args.read_ahead,
                    "db_key": main_key, "path": str(main_path),
                }
                if phase == "push_alone":
                    cfg.update(db_key=f"{impl}-{run}/push", path=str(workdir / f"{impl}-{run}-push.db"))
                elif phase in ("cold_one", "read_all"):
                    cfg["path"] = str(workdir / f"{impl}-{run}-{phase}.db")
                log(f"{LABELS[impl]}: {PHASE_LABELS[phase]}")
                runs = []
                for rep in range(args.repeat):
                    rcfg = dict(cfg)
                    if rep and phase != "noop_changes":
                        # Later runs write to databases and local paths of their own (the first
                        # run's database is the one the read phases read).
                        rcfg["path"] = f"{cfg['path']}.rep{rep}"
                        if phase in ("write_push", "push_alone"):
                            rcfg["db_key"] = f"{cfg['db_key']}-rep{rep}"
                    r = run_phase(pythons[impl], rcfg)
                    if r.get("ok") is False:
                        raise RuntimeError(f"{impl} {phase} read wrong values: {r}")
                    versions[impl] = r.pop("version", "?")
                    runs.append(r)
                r = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]  # the median run
                if len(runs) > 1:
                    r["spread"] = (min(x["seconds"] for x in runs), max(x["seconds"] for x in runs))
                results[impl, phase] = r
                log(f"  {fmt_time(r['seconds'])}, {r['requests']} requests, "
                    f"{fmt_bytes(r['received'])} down, {fmt_bytes(r['sent'])} up")
    finally:
        proxy.shutdown()
        moto.stdin.close()  # type: ignore[union-attr]
        moto.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()

    from importlib.metadata import version

    value_bytes = args.keys * args.value_bytes
    header = [
        "ebooklet and its peers",
        "======================",
        f"date      : {started.isoformat(timespec='seconds')}",
        f"machine   : {platform.platform()} ({platform.machine()}), {os.cpu_count()} CPUs, "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        f"python    : {platform.python_implementation()} {platform.python_version()}",
        f"ours      : ebooklet {versions.get('ours', '?')} at commit {git_commit()}",
        "peers     : " + ", ".join(f"{LABELS[i]} = {versions[i]}" for i in impls if i != "ours"),
        f"server    : moto {version('moto')} on 127.0.0.1 (child process), behind a counting proxy",
        f"data      : {args.keys:,} keys x {args.value_bytes} B = {fmt_bytes(value_bytes)} of values",
        f"slatedb   : WAL off, write batches of 1,000, scan read-ahead {args.read_ahead:,} B, 8 fetch tasks",
        "ebooklet 0.11.1 opened with n_buckets = the key count; ours with default settings",
        (f"median of {args.repeat} runs per phase" if args.repeat > 1 else "one run per phase")
        + ", each in a fresh process; times are wall clock",
        "command   : python benchmarks/bench_peers.py " + " ".join(sys.argv[1:]),
    ]
    text = report(results, impls, header, value_bytes)
    print(text)
    if args.save:
        out = ROOT / "benchmarks" / "results" / f"peers-{started.date().isoformat()}.txt"
        out.write_text(text)
        log(f"written to {out}")


if __name__ == "__main__":
    main()
