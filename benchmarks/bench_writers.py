"""Many writers on one database: throughput, fairness and the round trips of one push.

N writer processes (default 1, 4, 8 and 16) share one database on SeaweedFS. Each opens its
own local file and, for T seconds (default 15), writes one small key and pushes it, again and
again. For each N and each ``remote_lock`` (default: the lease, ``"push"``, and ``"none"``),
median of 3 runs, it prints side by side:

* commits per second, all writers together, and as a multiple of one writer's;
* commits per writer (min / median / max of the median run) against the fair share;
* failed pushes (any exception: ``LeaseHeldError``, ``PushConflictError``, ...);
* CPU load: the machine's busy share over the run (all processes, SeaweedFS included), with
  its cores, since the writers compete for them.

Then the round trips of a one-key push, with 50 ms added to every request by the test fault
proxy (tests/faultproxy.py) in front of SeaweedFS: median wall time of 10 pushes, and the
longest chain of requests each sent after the previous one was answered, with and without
the lease.

Run from the repository root after the test install::

    .venv/bin/python benchmarks/bench_writers.py                 # about 8 minutes
    .venv/bin/python benchmarks/bench_writers.py --writers 1,4 --seconds 5 --runs 1

Targets (issue 17): no failed push; every writer makes at least a third of the fair share;
all writers together make at least 0.8x one writer's commits/s (cores allowing); a one-key
push takes at most 4 x 50 ms without the lease and 5 x 50 ms with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, append_results, log, machine_info, start_server, table

import ebooklet
from tests.faultproxy import FaultProxy, sequential_depth

WORKER = r"""
import json, sys, time, traceback
sys.path.insert(0, sys.argv[1])
import ebooklet
conn = ebooklet.S3Connection(**json.loads(sys.argv[2]))
lock, seconds, me = sys.argv[3], float(sys.argv[4]), sys.argv[5]
commits = failed = 0
errors = {}
with ebooklet.open(conn, sys.argv[6], "c", value_serializer="json", remote_lock=lock, lock_wait=120) as db:
    db.changes().pull()
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    time.sleep(max(0.0, start - time.time()))
    n = 0
    while time.time() < start + seconds:
        n += 1
        db[f"{me}-{n % 50}"] = n
        try:
            db.changes().push()
            commits += 1
        except Exception as exc:
            failed += 1
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
print(json.dumps({"commits": commits, "failed": failed, "errors": errors}), flush=True)
"""


def _cpu_busy() -> tuple[float, float]:
    """Busy and total jiffies of the machine so far (/proc/stat)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def run_writers(conn_args: dict, lock: str, n: int, seconds: float, tmp: Path) -> dict:
    """One run: ``n`` writer processes for ``seconds``; their counts and the CPU load."""
    procs = []
    for i in range(n):
        local = tmp / f"w{lock}-{n}-{i}-{time.monotonic_ns()}.blt"
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(ROOT), json.dumps(conn_args), lock, str(seconds), f"w{i}",
             str(local)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    for p in procs:
        line = p.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            raise RuntimeError(f"a writer did not start: {line!r} {p.stderr.read()}")  # type: ignore[union-attr]
    start = time.time() + 0.5
    busy0, total0 = _cpu_busy()
    for p in procs:
        p.stdin.write(f"{start}\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=seconds + 300)
        if p.returncode != 0:
            raise RuntimeError(f"a writer failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    busy1, total1 = _cpu_busy()
    commits = [r["commits"] for r in results]
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r["errors"].items():
            errors[name] = errors.get(name, 0) + count
    return {
        "per_writer": sorted(commits),
        "rate": sum(commits) / seconds,
        "failed": sum(r["failed"] for r in results),
        "errors": errors,
        "cpu": (busy1 - busy0) / max(1.0, total1 - total0),
    }


def push_round_trips(server, bucket: str, tmp: Path, latency: float, pushes: int) -> list[list[str]]:
    """Median wall time and sequential depth of a one-key push behind ``latency`` s a request."""
    rows = []
    with FaultProxy(server.endpoint_url) as proxy:
        for lock in ("none", "push"):
            name = f"dbs/rtt-{lock}-{time.time_ns()}"
            conn = ebooklet.S3Connection(server.access_key_id, server.access_key, name, bucket,
                                         endpoint_url=proxy.url)
            times, depths, requests = [], [], []
            local = tmp / f"rtt-{lock}.blt"
            with ebooklet.open(conn, local, "c", value_serializer="json", remote_lock=lock) as db:
                db["seed"] = 0
                db.changes().push()
                for i in range(pushes):
                    db[f"k{i}"] = i
                    rule = proxy.add_rule(lambda r: True, "delay", times=None, delay=latency)
                    first = len(proxy.log)
                    t = time.perf_counter()
                    db.changes().push()
                    times.append(time.perf_counter() - t)
                    proxy.remove_rule(rule)
                    entries = proxy.requests()[first:]
                    depths.append(sequential_depth(entries))
                    requests.append(len(entries))
            med = statistics.median(times)
            target = (4 if lock == "none" else 5) * latency
            rows.append([
                lock, f"{med * 1000:.0f} ms", f"{med / latency:.1f}", f"{statistics.median(depths):g}",
                f"{statistics.median(requests):g}", f"<= {target * 1000:.0f} ms",
                "yes" if med <= target else "NO",
            ])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", default="1,4,8,16")
    parser.add_argument("--locks", default="push,none")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--pushes", type=int, default=10, help="one-key pushes timed behind the latency")
    parser.add_argument("--save", action="store_true", help="append to benchmarks/results/writers-<date>.txt")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ebooklet-bench-writers-"))
    server = start_server("seaweedfs", tmp)
    lines = ["Many writers on one database (benchmarks/bench_writers.py)", *machine_info(server), ""]
    try:
        bucket = server.make_bucket()
        rows = []
        for lock in args.locks.split(","):
            one = None
            for n in (int(x) for x in args.writers.split(",")):
                key = f"dbs/writers-{lock}-{n}-{time.time_ns()}.blt"
                conn_args = {"access_key_id": server.access_key_id, "access_key": server.access_key,
                             "db_key": key, "bucket": bucket, "endpoint_url": server.endpoint_url}
                with ebooklet.open(ebooklet.S3Connection(**conn_args), tmp / f"seed-{lock}-{n}.blt", "n",
                                   value_serializer="json") as db:
                    db["seed"] = 0
                    db.changes().push()
                runs = []
                for r in range(args.runs):
                    log(f"{lock}: {n} writers, run {r + 1}")
                    runs.append(run_writers(conn_args, lock, n, args.seconds, tmp))
                runs.sort(key=lambda x: x["rate"])
                mid = runs[len(runs) // 2]
                one = mid["rate"] if n == 1 else one
                fair = mid["rate"] * args.seconds / n
                per = mid["per_writer"]
                failed = sum(x["failed"] for x in runs)
                errors = {}
                for x in runs:
                    for name, count in x["errors"].items():
                        errors[name] = errors.get(name, 0) + count
                rows.append([
                    lock, str(n), f"{mid['rate']:.1f}", f"{mid['rate'] / one:.2f}x" if one else "-",
                    f"{per[0]} / {statistics.median(per):g} / {per[-1]}", f"{fair:.0f}",
                    f"{per[0] / fair:.2f}" if fair else "-",
                    f"{failed}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(errors.items()))})"
                                   if errors else ""),
                    f"{statistics.median(x['cpu'] for x in runs) * 100:.0f}%",
                ])
                print("\n".join(table(rows[-1:], HEADER)), file=sys.stderr)
        lines += [f"{args.seconds:g} s per run, median of {args.runs} runs (by commits/s); "
                  f"one small key per push; CPU: the machine's busy share ({os.cpu_count()} cores)", ""]
        lines += table(rows, HEADER)
        lines += ["", f"One-key push with {args.latency * 1000:.0f} ms added to every request "
                  f"(fault proxy), median of {args.pushes}:", ""]
        rtt = push_round_trips(server, bucket, tmp, args.latency, args.pushes)
        lines += table(rtt, RTT_HEADER)
    finally:
        server.stop()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        append_results("writers", text)


HEADER = ["remote_lock", "writers", "commits/s", "vs 1 writer", "per writer min/median/max", "fair share",
          "min/fair", "failed pushes", "CPU busy"]

RTT_HEADER = ["remote_lock", "push", "x latency", "sequential requests", "requests", "target", "met"]

if __name__ == "__main__":
    main()
