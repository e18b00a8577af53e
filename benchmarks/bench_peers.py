"""ebooklet against its peers, side by side, in one run on one S3 server.

Run from the repository root with the project's Python (it needs ebooklet's test
dependencies: moto and boto3)::

    python benchmarks/bench_peers.py                 # 100,000 keys x 100 B, all peers
    python benchmarks/bench_peers.py --keys 10000    # a quicker run
    python benchmarks/bench_peers.py --only ours,slatedb --save
    python benchmarks/bench_peers.py --repeat 3 --save   # the median of 3 runs of each phase
    python benchmarks/bench_peers.py --latency 20 --rate 40   # as a distant store: 20 ms a
                                                              # request, 40 MB/s per stream

Implementations (each phase runs in a fresh process of its own):

``ours``        this repository's ebooklet, with default settings.
``ebooklet``    the published ebooklet 0.11.1 (opened with ``n_buckets`` = the key count, as
                its docs advise for large files).
``slatedb``     SlateDB 0.17 (an embedded LSM on object storage), WAL off, written in
                batches of 1,000 puts, scanned with read-ahead and parallel fetches.
``sqlitedict``  a sqlitedict file (raw bytes values, one commit) uploaded with one PUT and
                downloaded with one GET (boto3).
``file``        the values written to one plain file, uploaded with one PUT; read: one GET
                of it into a local file (boto3, in the sqlitedict venv). Not a database: the
                floor that a transfer of the same bytes through the same server costs.
``base``        (with ``--base DIR``) this project from another tree, e.g. ``git archive``
                of main: a before/after in one run.

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
reverse proxy in this process (both from ``benchmarks/harness.py``; each phase runs
``benchmarks/peers_worker.py`` in the implementation's venv): requests and body bytes in
each direction are counted for the timed region of each phase (the worker reads the
counters just before and after it).
Times are one run each, wall clock, and are only meaningful as ratios within one run; the
load average is printed because the machine may be shared. With ``--save`` the report is
also written to ``benchmarks/results/peers-<date>.txt``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Any

from harness import (
    ROOT,
    CountingProxy,
    append_results,
    fmt_bytes,
    fmt_s,
    git_commit,
    log,
    start_server,
    table,
)
from peers_worker import BUCKET

#: pip requirements of each peer's venv.
PEERS: dict[str, list[str]] = {
    "ebooklet": ["ebooklet==0.11.1"],
    "slatedb": ["slatedb==0.17.0"],
    "sqlitedict": ["sqlitedict==2.1.0", "boto3"],
}
IMPLS = ["ours", "ebooklet", "slatedb", "sqlitedict", "file"]
LABELS = {
    "ours": "ours",
    "ebooklet": "ebooklet 0.11.1",
    "slatedb": "slatedb 0.17",
    "sqlitedict": "sqlitedict + 1 PUT",
    "base": "ours at --base",
    "file": "1 file, 1 PUT/GET",
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
    "base": set(PHASES),
    "file": {"write_push", "push_alone", "read_all"},
}


# -- venvs -----------------------------------------------------------------------------------


def peer_python(impl: str, cache: pathlib.Path) -> str:
    """The Python of ``impl``'s venv, created and filled on first use."""
    if impl in ("ours", "base"):
        return sys.executable
    impl = "sqlitedict" if impl == "file" else impl  # one venv serves both
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


# -- the orchestrator ------------------------------------------------------------------------


def run_phase(python: str, cfg: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if cfg["impl"] in ("ours", "base"):
        env["PYTHONPATH"] = cfg.pop("root")
    proc = subprocess.run(
        [python, str(pathlib.Path(__file__).resolve().parent / "peers_worker.py"), json.dumps(cfg)],
        capture_output=True, text=True, env=env, cwd=cfg["workdir"],
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{cfg['impl']} {cfg['phase']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def phase_config(args: argparse.Namespace, impl: str, phase: str, rep: int, run: str,
                 proxy: CountingProxy, workdir: pathlib.Path) -> dict[str, Any]:
    """The worker's configuration for run ``rep`` of one phase of one implementation: the
    read phases read the first run's database of ``write_push``; other runs write databases
    and local files of their own."""
    cfg = {
        "impl": impl, "phase": phase, "keys": args.keys, "value_bytes": args.value_bytes,
        "proxy": proxy.url, "counters": proxy.url + proxy.CONTROL_PATH,
        "workdir": str(workdir), "read_ahead": args.read_ahead,
        "db_key": f"{impl}-{run}/db", "path": str(workdir / f"{impl}-{run}.db"),
        "root": str(args.base if impl == "base" else ROOT),
    }
    if phase == "push_alone":
        cfg.update(db_key=f"{impl}-{run}/push", path=str(workdir / f"{impl}-{run}-push.db"))
    elif phase in ("cold_one", "read_all"):
        cfg["path"] = str(workdir / f"{impl}-{run}-{phase}.db")
    if rep and phase != "noop_changes":
        cfg["path"] = f"{cfg['path']}.rep{rep}"
        if phase in ("write_push", "push_alone"):
            cfg["db_key"] = f"{cfg['db_key']}-rep{rep}"
    return cfg


def report(results: dict[tuple[str, str], dict[str, Any]], impls: list[str], header: list[str],
           value_bytes: int) -> str:
    out = ["\n".join(header)]

    def cell(impl: str, phase: str, metric: str, show: Any) -> str:
        r = results.get((impl, phase))
        if r is None or metric not in r:
            return "-"
        text = show(r[metric])
        ours = results.get(("ours", phase))
        if impl != "ours" and ours is not None and ours[metric]:
            text += f" ({r[metric] / ours[metric]:.2f}x)"
        return text

    for metric, title, show in [
        ("seconds", "time (ratio to ours)", fmt_s),
        ("cpu", "CPU time of the client process, all threads (ratio to ours)", fmt_s),
        ("requests", "requests (ratio to ours)", str),
        ("received", "bytes downloaded (ratio to ours)", fmt_bytes),
        ("sent", "bytes uploaded (ratio to ours)", fmt_bytes),
    ]:
        rows = [["phase"] + [LABELS[i] for i in impls]]
        for phase in PHASES:
            rows.append([PHASE_LABELS[phase]] + [cell(i, phase, metric, show) for i in impls])
        out.append("\n".join([title, *(line.rstrip() for line in table(rows[1:], rows[0]))]))
    lines = ["ours / each other implementation, median times (below 1: ours is faster):"]
    for phase in ("write_push", "push_alone", "read_all"):
        ours = results.get(("ours", phase))
        if ours is None:
            continue
        ratios = [f"{LABELS[i]} {ours['seconds'] / results[i, phase]['seconds']:.2f}"
                  for i in impls if i != "ours" and (i, phase) in results]
        lines.append(f"  {PHASE_LABELS[phase]}: " + ", ".join(ratios))
    out.append("\n".join(lines))
    lines = ["spread of the runs (min - max):"]
    for (impl, phase), r in sorted(results.items()):
        if "spread" in r:
            lines.append(f"  {LABELS[impl]}, {PHASE_LABELS[phase]}: "
                         f"{fmt_s(r['spread'][0])} - {fmt_s(r['spread'][1])}")
    out.append("\n".join(lines))
    lines = ["fresh read of all values, bytes downloaded / value bytes:"]
    for impl in impls:
        r = results.get((impl, "read_all"))
        if r is not None:
            lines.append(f"  {LABELS[impl]}: {r['received'] / value_bytes:.2f}")
    out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--only", default=",".join(IMPLS), help="comma-separated implementations")
    parser.add_argument("--cache", type=pathlib.Path, default=ROOT / "benchmarks" / ".venvs")
    parser.add_argument("--read-ahead", type=int, default=8 * 1024 * 1024,
                        help="slatedb scan read-ahead bytes")
    parser.add_argument("--base", type=pathlib.Path,
                        help="another tree of this project (e.g. a `git archive` of main), run as "
                        "implementation 'base' beside ours: a before/after in one run")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="comma-separated phases (the read phases read write_push's database)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="MB/s per request through the proxy (0: as fast as loopback goes)")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="milliseconds the proxy adds to each request (a distant store's round trip)")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/peers-<date>.txt")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each phase (fresh process and paths each); the median is reported")
    args = parser.parse_args()

    impls = [i for i in args.only.split(",") if i]
    if args.base is not None and "base" not in impls:
        impls.insert(1, "base")
    phases = {p for p in args.phases.split(",") if p}
    if phases - set(PHASES):
        parser.error(f"unknown phases {sorted(phases - set(PHASES))}; choose from {PHASES}")
    if phases & {"cold_one", "read_all", "noop_changes"}:
        phases.add("write_push")  # they read its database
    unknown = set(impls) - set(IMPLS) - ({"base"} if args.base else set())
    if unknown:
        parser.error(f"unknown implementations {sorted(unknown)}; choose from {IMPLS}")
    args.cache.mkdir(parents=True, exist_ok=True)
    pythons = {impl: peer_python(impl, args.cache) for impl in impls}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-peers-"))
    moto = start_server("moto", workdir)
    proxy = CountingProxy(moto.endpoint_url, rate=args.rate * 1e6 if args.rate else None,
                          latency=args.latency / 1000)
    load_before = os.getloadavg()
    started = _dt.datetime.now(_dt.timezone.utc)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    versions: dict[str, str] = {}
    try:
        moto.make_bucket(BUCKET)
        runs_of = {impl: uuid.uuid4().hex[:8] for impl in impls}
        # Phase by phase, and within a phase run by run across the implementations, so that
        # a change in the machine's load between runs falls on all of them alike.
        for phase in PHASES:
            if phase not in phases:
                continue
            runs: dict[str, list[dict[str, Any]]] = {}
            for rep in range(args.repeat):
                for impl in impls:
                    if phase not in HAS_PHASE[impl]:
                        continue
                    if rep == 0:
                        log(f"{LABELS[impl]}: {PHASE_LABELS[phase]}")
                    r = run_phase(pythons[impl], phase_config(args, impl, phase, rep, runs_of[impl],
                                                              proxy, workdir))
                    if r.get("ok") is False:
                        raise RuntimeError(f"{impl} {phase} read wrong values: {r}")
                    versions[impl] = r.pop("version", "?")
                    runs.setdefault(impl, []).append(r)
            for impl, done in runs.items():
                r = sorted(done, key=lambda x: x["seconds"])[len(done) // 2]  # the median run
                if len(done) > 1:
                    r["spread"] = (min(x["seconds"] for x in done), max(x["seconds"] for x in done))
                results[impl, phase] = r
                log(f"  {LABELS[impl]}: {fmt_s(r['seconds'])}, {r['requests']} requests, "
                    f"{fmt_bytes(r['received'])} down, {fmt_bytes(r['sent'])} up")
    finally:
        proxy.close()
        moto.stop()
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
        f"server    : moto {version('moto')} on 127.0.0.1 (child process), behind a counting proxy"
        + (f" that adds {args.latency:g} ms to each request" if args.latency else "")
        + (f" and paces each at {args.rate:g} MB/s" if args.rate else ""),
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
        append_results("peers", text)


if __name__ == "__main__":
    main()
