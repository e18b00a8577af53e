"""A fault campaign: several writers share one database through a faulty network, and get killed.

Run from the repository root::

    python benchmarks/campaign.py                          # moto, 4 writers, 2 minutes
    python benchmarks/campaign.py --server seaweedfs --minutes 10 --seed 3
    python benchmarks/campaign.py --minutes 1 --json summary.json

What happens:

* An S3 server (moto in a child process, or SeaweedFS ``weed mini``) is started on 127.0.0.1,
  with tests/faultproxy.py in front of it. The database is seeded with ``--keys`` keys.
* ``--writers`` writer processes (this script with ``--writer``) open their own local file
  and, until the deadline, make random writes and deletes of the shared keys, ``sync()``,
  pushes under every conflict policy (None, "local", "remote", "newest", a merge function)
  and pulls, all through the proxy, which gives ``--fault-rate`` of the requests a random
  fault of every kind (500, 503, reset, truncated answer, delay, lost reply). Every value is
  unique (``w<writer>.<generation>-<counter>``, merges ``...-m<counter>``), so where a value
  came from is known.
* The campaign SIGKILLs a random writer every ``--kill-every`` seconds on average and starts
  it again on the same local file (a new generation).
* Each writer appends to its own journal, fsynced: every local write and delete (with the
  value it replaced), what each push carries before it starts (its local changes), every
  merge its conflict function made, what each push acknowledged (the PushResult's commit,
  keys and deleted), and every exception that reached it. An exception that is not an
  ``ebooklet.EbookletError`` is a defect.

At the end the faults are turned off and, straight to the server (no proxy):

* a fresh reader reads every key; a value whose hash does not verify (IntegrityError) or
  whose object is gone is a defect;
* every key's value must be the one of the last acknowledged commit that touched it (by
  commit number; a delete means absent), or else the outcome of a push that was tried but not
  acknowledged (it failed or was killed) and may have landed later: a lost reply makes the
  outcome ambiguous, and both are allowed. Anything else is a **lost** acknowledged write, or a
  **resurrected** key when the last acknowledged commit deleted it. A value that an
  acknowledged write or delete knowingly replaced (the writer read it just before) must never
  be the final value either: that is a stale value committed again (issue 8, defect 2);
* every object the head references must exist (the bucket is listed with boto3), and
  ``ebooklet.verify(deep=True)`` must find every object of the retained commits whole and
  every value matching its hash; objects no retained commit references are *leaked*
  (leftovers of failed pushes, collected by ``ebooklet.gc``: space, not a defect);
* every writer's file, after a last pull, must hold the remote's value for every key it has
  no pending change to (a *diverged* key is a defect).

The report goes to stdout (``--record`` also appends it to benchmarks/results/), progress to
stderr; ``--json`` writes the figures. The exit status is 1 when any defect was found.

This file runs the campaign (the servers, the proxy, the writers, the kills);
``campaign_writer.py`` is the writer process, ``campaign_check.py`` the judge and the report.
"""


from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

# The tests load this file by its path: its folder may not be on sys.path yet.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from campaign_check import check, report  # noqa: E402
from campaign_writer import DB_KEY, EXIT_UNUSABLE, Journal, Writer, key_names, writer_main  # noqa: E402
from harness import ROOT, append_results, log, machine_info, start_server  # noqa: E402

import ebooklet  # noqa: E402


@dataclass
class Campaign:
    args: argparse.Namespace
    workdir: pathlib.Path
    server: Any
    bucket: str
    proxy: Any
    writers: list[Writer]
    until: float
    events: list[dict] = field(default_factory=list)  # kills, restarts, exits

    def spawn(self, w: Writer) -> None:
        w.gen += 1
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.server.access_key_id,
               "AWS_SECRET_ACCESS_KEY": self.server.access_key, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--writer", str(w.wid),
               "--gen", str(w.gen), "--seed", str(self.args.seed), "--bucket", self.bucket,
               "--endpoint", self.proxy.url, "--local", str(w.local), "--journal", str(w.journal),
               "--until", repr(self.until), "--keys", str(self.args.keys), "--retries",
               str(self.args.retries)]
        with open(self.workdir / f"writer{w.wid}.stderr", "ab") as err:
            w.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=err, cwd=ROOT, env=env)

    def kill(self, w: Writer, why: str) -> None:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait()
            self.events.append({"t": time.time(), "ev": "kill", "writer": w.wid, "gen": w.gen, "why": why})

    def reap(self, w: Writer) -> bool:
        """True when the writer process has exited (recorded once)."""
        if w.proc is None or w.proc.poll() is None:
            return False
        code = w.proc.returncode
        w.exits.append(code)
        self.events.append({"t": time.time(), "ev": "exit", "writer": w.wid, "gen": w.gen, "code": code})
        if code == EXIT_UNUSABLE:
            w.gave_up = True
        w.proc = None
        return True



def run_campaign(args: argparse.Namespace, workdir: pathlib.Path) -> dict:
    from tests.faultproxy import FAULTS, FaultProxy

    server = start_server(args.server, workdir)
    try:
        bucket = server.make_bucket()
        with FaultProxy(server.endpoint_url) as proxy:
            direct = ebooklet.S3Connection(server.access_key_id, server.access_key, DB_KEY, bucket,
                                           endpoint_url=server.endpoint_url)
            keys = key_names(args.keys)
            seed_journal = Journal(workdir / "journal-seed.jsonl", gen=0)
            with ebooklet.open(direct, workdir / "seed.blt", "c", value_serializer="str") as db:
                data = {k: f"seed-{k}" for k in keys}
                db.update(data)
                seed_journal.log("intent", push="seed", policy="none", writes=data, deletes=[])
                res = db.changes().push()
                seed_journal.log("ack", push="seed", committed=res.committed, commit=res.commit,
                                 keys=res.keys, deleted=res.deleted, pulled=[])
            proxy.randomize(args.fault_rate, seed=args.seed, kinds=FAULTS, delay=args.delay)
            start = time.time()
            until = start + args.minutes * 60
            writers = [Writer(i, workdir / f"writer{i}.blt", workdir / f"journal-{i}.jsonl")
                       for i in range(1, args.writers + 1)]
            camp = Campaign(args, workdir, server, bucket, proxy, writers, until)
            for w in writers:
                camp.spawn(w)
            log(f"{args.writers} writers started; faults at {args.fault_rate:.0%} until "
                f"{time.strftime('%H:%M:%S', time.localtime(until))}")
            rng = random.Random(f"kills/{args.seed}")
            next_kill = time.time() + rng.expovariate(1 / args.kill_every)
            while time.time() < until:
                time.sleep(0.1)
                for w in writers:
                    if camp.reap(w) and not w.gave_up and time.time() < until:
                        camp.spawn(w)  # it ended on its own (a crash): start it again
                if time.time() >= next_kill:
                    live = [w for w in writers if w.proc is not None]
                    if live:
                        victim = rng.choice(live)
                        camp.kill(victim, "random")
                        camp.reap(victim)
                        camp.spawn(victim)
                    next_kill = time.time() + rng.expovariate(1 / args.kill_every)
            log("deadline: waiting for the writers to finish their last operation")
            grace_end = time.time() + args.grace
            while any(w.proc is not None for w in writers) and time.time() < grace_end:
                time.sleep(0.1)
                for w in writers:
                    camp.reap(w)
            for w in writers:
                if w.proc is not None:
                    camp.kill(w, "still running after the grace period")
                    camp.reap(w)
            proxy.calm()
            proxy.clear_rules()
            elapsed = time.time() - start
            proxy_stats = proxy.stats.snapshot()
            proxy_errors = list(proxy.errors)
            log("checking")
            summary = check(args, workdir, server, bucket, direct, writers, camp.events)
            summary.update(
                seconds=round(elapsed, 1),
                requests=proxy_stats["requests"],
                faults=proxy_stats["faults"],
                proxy_errors=len(proxy_errors),
                kills=sum(1 for e in camp.events if e["ev"] == "kill"),
                restarts=sum(w.gen - 1 for w in writers),
            )
            return summary
    finally:
        server.stop()



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=["moto", "seaweedfs"], default="moto")
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument("--fault-rate", type=float, default=0.10)
    ap.add_argument("--delay", type=float, default=0.2, help="seconds of a 'delay' fault")
    ap.add_argument("--kill-every", type=float, default=10.0, help="mean seconds between SIGKILLs")
    ap.add_argument("--retries", type=int, default=3, help="S3Connection retries of each writer")
    ap.add_argument("--grace", type=float, default=60.0,
                    help="seconds the writers get to end their last operation after the deadline")
    ap.add_argument("--workdir", type=pathlib.Path, help="keep files here (default: a temporary folder)")
    ap.add_argument("--json", type=pathlib.Path, help="write the figures here")
    ap.add_argument("--record", action="store_true",
                    help="append the report to benchmarks/results/campaign-<date>.txt")
    # The writer process.
    ap.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--gen", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--bucket", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--local", help=argparse.SUPPRESS)
    ap.add_argument("--journal", help=argparse.SUPPRESS)
    ap.add_argument("--until", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.writer is not None:
        return writer_main(args)

    if args.workdir:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="ebooklet-campaign-"))
    try:
        summary = run_campaign(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(summary)
    print(text, flush=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.record:
        append_results("campaign", "\n".join([*machine_info(), "", text]) + "\n")
    return 1 if summary["defects"] else 0


if __name__ == "__main__":
    sys.exit(main())
