"""What a push costs in memory and time as the database grows.

Run from the repository root (any Python with ebooklet's test dependencies)::

    python benchmarks/bench_push_memory.py                    # 300,000 and 1,000,000 keys
    python benchmarks/bench_push_memory.py --keys 100000      # one size
    python benchmarks/bench_push_memory.py --save             # also append to benchmarks/results/

Each size runs in a fresh child process: it writes N keys of 100-byte values to a new local
file opened with default settings, syncs, then pushes them to moto (a child process of its
own, on 127.0.0.1) and reports:

* ``rss before``: resident memory after the writes, before the push;
* ``push adds``: the peak resident memory during the push minus ``rss before`` (the peak is
  reset just before the push through /proc/self/clear_refs, so earlier peaks do not count);
* ``peak``: the process's peak resident memory over the whole run, writes included;
* ``requests``: the push's requests to the store;
* the push's time, and its time per 100,000 keys, so that sizes compare (a push in constant
  memory per key should also take time in proportion to the keys).

Nothing here asserts on time; the exit status does not depend on any target.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from harness import ROOT, append_results, machine_info, start_server

_CHILD = r"""
import json, os, pathlib, sys, time
import ebooklet

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0

n, workdir, endpoint, key_id, secret, bucket = sys.argv[1:7]
n = int(n)
conn = ebooklet.S3Connection(key_id, secret, f"mem/{n}-{os.getpid()}", bucket, endpoint_url=endpoint)
db = ebooklet.open(conn, pathlib.Path(workdir) / f"m{n}.blt", "n")
value = bytes(range(100))
t0 = time.perf_counter()
for i in range(n):
    db[f"station-{i:08d}/2026-11-30"] = value
db.sync()
write_s = time.perf_counter() - t0
before = status("VmRSS")
writes_peak = status("VmHWM")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
t0 = time.perf_counter()
result = db.changes().push()
push_s = time.perf_counter() - t0
push_peak = status("VmHWM")
db.close()
print(json.dumps({
    "keys": n, "write_s": write_s, "push_s": push_s, "rss_before": before,
    "push_peak": push_peak, "writes_peak": writes_peak, "requests": result.requests,
    "pushed": len(result.keys),
}))
"""


def run_one(n: int, server, workdir: pathlib.Path, bucket: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n), str(workdir), server.endpoint_url,
         server.access_key_id, server.access_key, bucket],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the run of {n:,} keys failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, action="append", help="sizes to run (repeatable)")
    parser.add_argument("--save", action="store_true", help="append the report to benchmarks/results/")
    args = parser.parse_args()
    sizes = args.keys or [300_000, 1_000_000]

    with tempfile.TemporaryDirectory(prefix="ebooklet-mem-") as tmp:
        workdir = pathlib.Path(tmp)
        server = start_server("moto", workdir)
        try:
            info = machine_info(server)
            bucket = server.make_bucket("bench-memory")
            rows = [run_one(n, server, workdir, bucket) for n in sizes]
        finally:
            server.stop()
    mb = 1024 * 1024
    lines = [
        "push memory and time by database size",
        *info,
        "data      : N keys x 100 B, written with default settings, then pushed in one push",
        "",
        f"{'keys':>10}  {'rss before':>10}  {'push adds':>9}  {'peak':>7}  {'push':>8}  "
        f"{'per 100k':>8}  {'requests':>8}",
    ]
    for r in rows:
        adds = r["push_peak"] - r["rss_before"]
        lines.append(
            f"{r['keys']:>10,}  {r['rss_before'] / mb:>7.0f} MB  {adds / mb:>6.0f} MB  "
            f"{max(r['push_peak'], r['writes_peak']) / mb:>4.0f} MB  {r['push_s']:>6.2f} s  "
            f"{r['push_s'] * 100_000 / r['keys']:>6.2f} s  {r['requests']:>8}"
        )
    report = "\n".join(lines)
    print(report)
    if args.save:
        append_results("push-memory", report + "\n")


if __name__ == "__main__":
    main()
