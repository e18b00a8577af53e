"""Local writes to a new database: ebooklet with default settings against raw booklet sized
for the keys.

Run from the repository root with the project's Python::

    python benchmarks/bench_local_write.py                     # 300,000 keys x 100 B
    python benchmarks/bench_local_write.py --keys 1000000 --repeat 1
    python benchmarks/bench_local_write.py --defaults 12007,144013,1728017

Each measurement runs in a fresh process: it writes ``--keys`` keys of 100-byte values and
closes the file (ebooklet's close also records its sync state and fsyncs). Cases:

``booklet sized``        ``booklet.open(path, 'n', n_buckets=keys)``: the baseline.
``ebooklet default``     ``ebooklet.open(folder_remote, path, 'n')``, no sizing argument.
``ebooklet n_buckets``   the same with ``n_buckets=keys``.
``ebooklet empty``       opening and closing a new empty database (what a large default costs
                         a small database), and the file's size.

``--defaults`` repeats the ebooklet cases with other values of
``ebooklet.local.datafile.DEFAULT_N_BUCKETS`` (set in the child process), to choose it. Times are
best of ``--repeat``: wall clock and CPU (user + system) of the writing process.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from harness import ROOT, machine_info


def child(cfg: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import booklet

    import ebooklet
    import ebooklet.local.datafile

    if cfg.get("default") is not None:
        ebooklet.local.datafile.DEFAULT_N_BUCKETS = cfg["default"]
    n = cfg["keys"]
    blob = random.Random(1).randbytes(n * 100)
    work = pathlib.Path(cfg["workdir"])
    path = work / "db.blt"
    case = cfg["case"]
    t0, c0 = time.perf_counter(), time.process_time()
    if case == "booklet sized":
        with booklet.open(path, "n", key_serializer="str", value_serializer=None, n_buckets=n) as db:
            for i in range(n):
                db[f"key-{i:09d}"] = blob[i * 100 : (i + 1) * 100]
    else:
        sizing = {"n_buckets": n} if case == "ebooklet n_buckets" else {}
        with ebooklet.open(work / "remote" / "db", path, "n", **sizing) as db:
            if case != "ebooklet empty":
                for i in range(n):
                    db[f"key-{i:09d}"] = blob[i * 100 : (i + 1) * 100]
    return {
        "seconds": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
        "size": path.stat().st_size,
        "default": ebooklet.local.datafile.DEFAULT_N_BUCKETS,
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-local-"))
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps({**cfg, "workdir": str(work)})],
            capture_output=True, text=True, check=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--defaults", default="", help="comma-separated DEFAULT_N_BUCKETS to try")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    defaults: list[int | None] = [int(d) for d in args.defaults.split(",") if d] or [None]
    cases: list[tuple[str, int | None]] = [("booklet sized", None)]
    for d in defaults:
        cases += [("ebooklet default", d), ("ebooklet empty", d)]
    cases.append(("ebooklet n_buckets", None))
    best: dict[tuple[str, int | None], dict[str, Any]] = {}
    for _ in range(args.repeat):
        for case, d in cases:  # interleaved, so that a busy moment hits every case alike
            r = run({"case": case, "keys": args.keys, "default": d})
            key = (case, d)
            if key not in best or r["seconds"] < best[key]["seconds"]:
                best[key] = {**r, "cpu": min(r["cpu"], best.get(key, r)["cpu"])}
    base = best["booklet sized", None]
    print("local writes to a new database")
    print("\n".join(machine_info()))
    print(f"keys     : {args.keys:,} x 100 B; best of {args.repeat}")
    print()
    print(f"{'case':<20} {'default':>9} {'wall':>8} {'ratio':>6} {'cpu':>8} {'ratio':>6} {'file':>9}")
    for (case, _d), r in best.items():
        keys = case != "ebooklet empty"
        default = "-" if case in ("booklet sized", "ebooklet n_buckets") else r["default"]
        print(
            f"{case:<20} {default:>9} "
            f"{r['seconds']:>7.2f}s {r['seconds'] / base['seconds'] if keys else 0:>5.2f}x "
            f"{r['cpu']:>7.2f}s {r['cpu'] / base['cpu'] if keys else 0:>5.2f}x "
            f"{r['size'] / 1e6:>7.1f}MB"
        )


if __name__ == "__main__":
    main()
