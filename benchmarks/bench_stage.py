"""Staged commits against one process writing and pushing, and read_bag against one reader.

Run from the repository root (with ebooklet's test dependencies, which include the dask extra)::

    python benchmarks/bench_stage.py                        # 1,000,000 keys x 100 B, 2 and 8 workers
    python benchmarks/bench_stage.py --keys 100000 --runs 1 # a quick look
    python benchmarks/bench_stage.py --save                 # also append to benchmarks/results/
    python benchmarks/bench_stage.py --reads-only           # only read_bag against one reader

Writes. The same keys go to a fresh database on the server (SeaweedFS by default, a child process
of its own on 127.0.0.1) three ways, each timed from the start of its processes to the commit:

* ``one process``: a child process opens a local file, writes every key and pushes;
* ``staged xW``: W child processes each stage a W-th of the keys (``ebooklet.stage``) and
  print their token; this process commits the tokens (``ebooklet.commit``).

Reads. The database the first staged run wrote is read by ``read_bag`` (a count, so that
values are decoded on the workers, not shipped back) on a ``LocalCluster`` of 2 worker
processes (started before the timing), against the same read in one process (``npartitions=1``,
synchronous scheduler), the two taking turns run by run (so that a drift of the machine's speed
weighs on both; each pair's speedup is printed too). The requests and bytes of each partition's
plan are listed, and the CPU each process spent in a run (this one, the server, each worker, and
the rest of the machine), with the speedup two free cores would allow the 2-worker run: on a
2-core machine the server and the scheduler share the workers' cores, while the one reader
leaves a core to them.

Medians of ``--runs`` runs. Peak RSS is each process's VmHWM. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from harness import ROOT, append_results, fmt_bytes, fmt_s, log, machine_info, start_server, table

import ebooklet

_PEAK = """
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""

_ONE = _PEAK + r"""
import ebooklet, json, pathlib, sys
conn = ebooklet.S3Connection(*sys.argv[1:5], endpoint_url=sys.argv[5])
n, path = int(sys.argv[6]), sys.argv[7]
value = bytes(range(100))
with ebooklet.open(conn, path, "w") as db:
    for i in range(n):
        db[f"station-{i:08d}/x"] = value
    result = db.changes().push()
print(json.dumps({"committed": len(result.keys), "peak": peak()}))
"""

_STAGER = _PEAK + r"""
import ebooklet, json, pickle, sys
conn = ebooklet.S3Connection(*sys.argv[1:5], endpoint_url=sys.argv[5])
lo, hi, out = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
value = bytes(range(100))
with ebooklet.stage(conn) as s:
    for i in range(lo, hi):
        s[f"station-{i:08d}/x"] = value
with open(out, "wb") as f:
    pickle.dump(s.token, f)
print(json.dumps({"peak": peak()}))
"""


def _conn_args(server, bucket: str, key: str) -> list[str]:
    return [server.access_key_id, server.access_key, key, bucket, server.endpoint_url]


def _create(server, bucket: str, key: str, workdir: pathlib.Path) -> ebooklet.S3Connection:
    conn = ebooklet.S3Connection(server.access_key_id, server.access_key, key, bucket,
                                 endpoint_url=server.endpoint_url)
    seed = workdir / f"{key.replace('/', '_')}-seed.blt"
    with ebooklet.open(conn, seed, "c", value_serializer="bytes") as db:
        db["seed"] = b"0"
        db.changes().push()
    return conn


def _run(children: list[subprocess.Popen]) -> list[dict]:
    out = []
    for child in children:
        stdout, stderr = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(stderr)
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def one_process(server, bucket: str, n: int, workdir: pathlib.Path, tag: str) -> tuple[float, int]:
    key = f"stage/one-{tag}"
    _create(server, bucket, key, workdir)
    t0 = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", _ONE, *_conn_args(server, bucket, key), str(n),
         str(workdir / f"one-{tag}.blt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    (got,) = _run([child])
    return time.perf_counter() - t0, got["peak"]


def staged(server, bucket: str, n: int, workers: int, workdir: pathlib.Path, tag: str
           ) -> tuple[float, float, list[int], ebooklet.S3Connection]:
    key = f"stage/w{workers}-{tag}"
    conn = _create(server, bucket, key, workdir)
    t0 = time.perf_counter()
    children, outs = [], []
    for w in range(workers):
        out = workdir / f"token-{tag}-{w}.pickle"
        outs.append(out)
        lo, hi = w * n // workers, (w + 1) * n // workers
        children.append(subprocess.Popen(
            [sys.executable, "-c", _STAGER, *_conn_args(server, bucket, key), str(lo), str(hi), str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        ))
    peaks = [got["peak"] for got in _run(children)]
    staged_s = time.perf_counter() - t0
    tokens = [pickle.loads(out.read_bytes()) for out in outs]
    result = ebooklet.commit(conn, tokens)
    assert len(result.keys) == n, len(result.keys)
    return time.perf_counter() - t0, staged_s, peaks, conn


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _busy() -> float:
    """CPU seconds the whole machine has been busy so far (/proc/stat)."""
    fields = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / _TICK


def _worker_cpu() -> float:
    return _cpu(os.getpid())


class CpuMeter:
    """CPU seconds of this process, the server's processes (this process's children when the
    meter is made), the dask workers (through ``client``) and the whole machine, per timed run."""

    def __init__(self) -> None:
        import psutil  # a dependency of distributed

        self.server = [c.pid for c in psutil.Process().children(recursive=True)]
        self.runs: list[dict[str, float]] = []

    def start(self, client=None) -> None:
        self._workers = client.run(_worker_cpu) if client is not None else {}
        self._t0 = (_cpu(os.getpid()), sum(map(_cpu, self.server)), _busy())

    def stop(self, client=None) -> None:
        me, server, busy = _cpu(os.getpid()), sum(map(_cpu, self.server)), _busy()
        workers = client.run(_worker_cpu) if client is not None else {}
        run = {"this process": me - self._t0[0], "server": server - self._t0[1]}
        for i, (addr, cpu) in enumerate(sorted(workers.items())):
            run[f"worker {i}"] = cpu - self._workers[addr]
        run["other processes"] = busy - self._t0[2] - sum(run.values())
        self.runs.append(run)

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(r[k] for r in self.runs) for k in self.runs[0]}


def reads(conn: ebooklet.S3Connection, runs: int) -> list[str]:
    import dask
    from dask.distributed import Client, LocalCluster

    import ebooklet.dask as edask
    from ebooklet.remote import connect
    from ebooklet.sync.heads import HeadStore
    from ebooklet.sync.scan import Scan, plan_partitions

    remote = connect(conn)
    head, _ = HeadStore(remote).read_latest()
    assert head is not None
    plan, cpus = [], []
    for i, names in enumerate(plan_partitions(head, 2)):
        cpu = time.process_time()
        scan = Scan(remote, names)
        assert sum(1 for _ in scan) == len(scan)
        cpus.append(time.process_time() - cpu)
        wanted = scan.value_bytes
        plan.append([str(i), f"{len(names)}", f"{len(scan):,}", f"{len(scan.requests):,}",
                     fmt_bytes(scan.bytes), fmt_bytes(wanted), f"{scan.bytes / wanted:.3f}", fmt_s(cpus[-1])])
    remote.transport.close()
    one, two = [], []
    one_cpu, two_cpu = CpuMeter(), CpuMeter()  # made before the cluster: its processes are not the server
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # The one reader and the 2-worker read take turns, so that a change of the machine's
        # speed during the runs (other tenants) weighs on both alike; the idle cluster's CPU
        # during the one reader's runs is in 'other processes'.
        for _ in range(runs):
            one_cpu.start()
            t0 = time.perf_counter()
            with dask.config.set(scheduler="synchronous"):
                count = edask.read_bag(conn, npartitions=1).count().compute()
            one.append(time.perf_counter() - t0)
            one_cpu.stop()
            assert count == head.n_keys
            two_cpu.start(client)  # outside the timing: client.run is a round trip to each worker
            t0 = time.perf_counter()
            count = edask.read_bag(conn, npartitions=2).count().compute()
            two.append(time.perf_counter() - t0)
            two_cpu.stop(client)
            assert count == head.n_keys
    m1, m2 = statistics.median(one), statistics.median(two)
    lines = ["", f"read_bag of the {head.n_keys:,} keys (count on the workers), median of {runs}:"]
    rows = [["one reader (npartitions=1, synchronous)", fmt_s(m1), "1.00x", " ".join(map(fmt_s, one))],
            ["read_bag, 2 worker processes", fmt_s(m2), f"{m1 / m2:.2f}x", " ".join(map(fmt_s, two))]]
    lines += table(rows, ["read", "median", "speedup", "runs"])
    pairs = [a / b for a, b in zip(one, two, strict=True)]
    lines.append(f"speedup of each pair of runs (taken in turn): {' '.join(f'{x:.2f}x' for x in pairs)}; "
                 f"median {statistics.median(pairs):.2f}x")
    c1, c2 = one_cpu.medians(), two_cpu.medians()
    ours = sum(v for k, v in c2.items() if k != "other processes")
    lines += ["", "CPU per run (median) of each process; 'this process' is the client, with the 2-worker "
              "run's scheduler and nannies"]
    lines += table([[k, fmt_s(c1[k]) if k in c1 else "", fmt_s(v)] for k, v in c2.items()],
                   ["process", "one reader", "2 workers"])
    for label, meter in (("one reader", one_cpu), ("2 workers", two_cpu)):
        others = " ".join(fmt_s(r["other processes"]) for r in meter.runs)
        lines.append(f"CPU of other processes in each run, {label}: {others}")
    lines.append(f"the 2-worker run's processes need {fmt_s(ours)} of CPU: on 2 free cores at least "
                 f"{fmt_s(ours / 2)}, a speedup of at most {m1 / (ours / 2):.2f}x over this run's one reader")
    lines += ["", "partitions of read_bag(npartitions=2): requests and bytes each"]
    lines += table(plan, ["partition", "parts", "keys", "requests", "bytes fetched", "values",
                          "fetched/values", "CPU to read"])
    lines.append(f"the partitions' CPU, all / the largest: {sum(cpus) / max(cpus):.2f} (the speedup two "
                 "free cores would allow this process's share of the work)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server", choices=["seaweedfs", "moto"], default="seaweedfs")
    parser.add_argument("--no-reads", action="store_true")
    parser.add_argument("--reads-only", action="store_true",
                        help="write the database once (staged, 2 workers, untimed) and time the reads")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-stage-"))
    server = start_server(args.server, workdir)
    try:
        bucket = server.make_bucket()
        info = machine_info(server)
        n = args.keys
        if args.reads_only:
            conn = staged(server, bucket, n, 2, workdir, "reads")[3]
            text = "\n".join(["bench_stage: read_bag against one reader", *info,
                              f"keys      : {n:,} x 100 B", *reads(conn, args.runs)])
            print(text)
            if args.save:
                append_results("stage", text)
            return
        one_runs, one_peaks = [], []
        for r in range(args.runs):
            log(f"one process, run {r + 1}")
            s, peak = one_process(server, bucket, n, workdir, str(r))
            one_runs.append(s)
            one_peaks.append(peak)
        base = statistics.median(one_runs)
        rows = [["one process: write + push", "1", fmt_s(base), "", "1.00x", "1.00x",
                 fmt_bytes(max(one_peaks)), " ".join(fmt_s(x) for x in one_runs)]]
        first_conn = None
        for workers in args.workers:
            runs, stage_runs, peaks = [], [], []
            for r in range(args.runs):
                log(f"staged x{workers}, run {r + 1}")
                s, staged_s, p, conn = staged(server, bucket, n, workers, workdir, f"{workers}-{r}")
                runs.append(s)
                stage_runs.append(staged_s)
                peaks += p
                first_conn = first_conn or conn
            m = statistics.median(runs)
            cores = min(workers, 2)
            rows.append([f"staged: {workers} workers + commit", str(workers), fmt_s(m),
                         fmt_s(statistics.median(stage_runs)), f"{base / m:.2f}x", f"{base / m / cores:.2f}x",
                         fmt_bytes(max(peaks)), " ".join(fmt_s(x) for x in runs)])
        lines = ["bench_stage: staged commits vs one process writing and pushing", *info,
                 f"keys      : {n:,} x 100 B; median of {args.runs}; cores used: min(workers, 2)", ""]
        lines += table(rows, ["how", "processes", "median", "of which staging", "speedup", "per core",
                              "peak RSS/process", "runs"])
        if not args.no_reads and first_conn is not None:
            log("reads")
            lines += reads(first_conn, args.runs)
        text = "\n".join(lines)
        print(text)
        if args.save:
            append_results("stage", text)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # a million keys, nine times over


if __name__ == "__main__":
    main()
