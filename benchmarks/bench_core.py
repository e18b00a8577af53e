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

Where a push's time goes (the engine's phase timers, and profilers) is
``benchmarks/bench_profile.py``; servers, timing, tables and results files are in
``benchmarks/harness.py``; the report's tables in ``benchmarks/core_report.py``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import booklet
import harness
from core_report import render
from harness import append_results, log, machine_info, start_server, timed

import ebooklet
from ebooklet.remote.counting import CountingTransport
from ebooklet.remote.s3 import S3Transport
from tests.servers import S3Server

VALUE_BYTES = 100


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
    harness.GC_IN_TIMED = not args.no_gc

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
        where = "in-process" if args.moto_in_process else "child process"
        info = machine_info(server, [
            f"mode      : {'QUICK (sizes / 10)' if args.quick else 'full'}; best of {args.repeat}; moto "
            f"{where}; cyclic GC {'on' if harness.GC_IN_TIMED else 'off'} in timed regions"])
        only = set(args.only or ["push", "cold", "local"])
        push = bench_push(env, n_push) if "push" in only else None
        cold = bench_cold_read(env, n_big) if "cold" in only else None
        local = bench_local(env, n_local) if "local" in only else None
        if push and cold and local:
            text = render(info, push, cold, local, VALUE_BYTES)
        else:
            text = (
                "\n".join(info)
                + "\n"
                + json.dumps({"push": push, "cold": cold, "local": local}, indent=1, default=str)
                + "\n"
            )
        print(text, end="", flush=True)
        if not args.quick and push and cold and local:
            append_results("core", text)
    finally:
        log(f"stopping {server.name}")
        server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
