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
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as _dt
import json
import logging
import os
import pathlib
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

# The tests load this file by its path: its folder may not be on sys.path yet.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from harness import ROOT, log, start_server  # noqa: E402

import ebooklet  # noqa: E402

DB_KEY = "campaign/db"
ABSENT = None  # the final "value" of a key that is not there
#: Exit status of a writer that could not open its local file, however often it tried.
EXIT_UNUSABLE = 3
OPEN_ATTEMPTS = 20
LEASE_TTL = 10.0
LOCK_WAIT = 30.0
POLICIES = ("none", "local", "remote", "newest", "merge")
#: Seconds after a push was given up (or its writer killed) during which a request it had sent
#: may still reach the server (the proxy's delay fault holds a request 0.2 s by default).
LANDING_MARGIN = 2.0


def key_names(n: int) -> list[str]:
    return [f"k{i:03d}" for i in range(n)]


def qualified(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ in ("builtins", "ebooklet.errors"):
        return cls.__name__
    return f"{cls.__module__}.{cls.__name__}"


# == the writer process ======================================================================


class Journal:
    """JSON lines, each appended and fsynced before the writer goes on."""

    def __init__(self, path: pathlib.Path, **common: Any) -> None:
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
        self.common = common

    def log(self, ev: str, **fields: Any) -> None:
        record = {"t": time.time(), "ev": ev, **self.common, **fields}
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())


def writer_main(args: argparse.Namespace) -> int:
    wid, gen = args.writer, args.gen
    # ebooklet's warnings (lease takeovers, failed releases) go to this writer's stderr file,
    # with the process id, so the check can tell a writer taking over its own lease.
    logging.basicConfig(level=logging.WARNING, format="pid=%(process)d %(levelname)s %(name)s: %(message)s")
    rng = random.Random(f"{args.seed}/{wid}/{gen}")
    journal = Journal(pathlib.Path(args.journal), gen=gen)
    journal.log("start", pid=os.getpid())
    conn = ebooklet.S3Connection(
        db_key=DB_KEY, bucket=args.bucket, endpoint_url=args.endpoint, retries=args.retries
    )
    keys = key_names(args.keys)
    counter = 0
    pushes = 0
    db = None
    open_failures = 0

    def record_exc(op: str, exc: BaseException, **fields: Any) -> None:
        is_ours = isinstance(exc, ebooklet.EbookletError)
        # An ebooklet error the package does not export (e.g. PreconditionFailed) is internal.
        public = is_ours and type(exc).__name__ in ebooklet.__all__
        extra = {} if public else {"tb": traceback.format_exc()[-4000:]}
        journal.log("exc", op=op, type=qualified(exc), ebooklet=is_ours, public=public,
                    msg=str(exc)[:500], **fields, **extra)

    def merge_for(pid: str):
        def merge(key: str, local: Any, remote: Any, base: Any) -> Any:
            nonlocal counter
            counter += 1
            if rng.random() < 0.2:
                journal.log("merge", push=pid, key=key, value=None)
                return ebooklet.DELETED
            value = f"w{wid}.{gen}-m{counter}"
            journal.log("merge", push=pid, key=key, value=value)
            return value

        return merge

    def policy_for(name: str, pid: str) -> Any:
        return {"none": None, "merge": merge_for(pid)}.get(name, name)

    while time.time() < args.until:
        if db is None:
            try:
                lock = rng.choice(["push", "none"])
                db = ebooklet.open(conn, args.local, "c", remote_lock=lock, lease_ttl=LEASE_TTL,
                                   lock_wait=LOCK_WAIT)
                journal.log("open", remote_lock=lock)
            except Exception as exc:  # noqa: BLE001 - every exception is journaled and judged
                record_exc("open", exc)
                open_failures += 1
                if open_failures >= OPEN_ATTEMPTS:
                    journal.log("gave_up", reason="could not open the local file")
                    return EXIT_UNUSABLE
                time.sleep(0.5)
                continue
        roll = rng.random()
        op = ("write" if roll < 0.55 else "delete" if roll < 0.70 else "sync" if roll < 0.74
              else "push" if roll < 0.92 else "pull")
        try:
            if op in ("write", "delete"):
                key = rng.choice(keys)
                had = db.get(key)
                if op == "write":
                    counter += 1
                    value = f"w{wid}.{gen}-{counter}"
                    db[key] = value
                    journal.log("op", key=key, had=had, new=value)
                elif had is not None:
                    del db[key]
                    journal.log("op", key=key, had=had, new=None)
            elif op == "sync":
                db.sync()
            elif op == "push":
                pushes += 1
                pid = f"{wid}.{gen}.{pushes}"
                policy = rng.choice(POLICIES)
                changes = [c for c in db.changes().iter_changes() if c.local]
                writes = {c.key: db[c.key] for c in changes if c.local != "deleted"}
                deletes = sorted(c.key for c in changes if c.local == "deleted")
                journal.log("intent", push=pid, policy=policy, writes=writes, deletes=deletes)
                try:
                    res = db.changes().push(on_conflict=policy_for(policy, pid))
                except Exception as exc:  # noqa: BLE001
                    record_exc("push", exc, push=pid)
                else:
                    journal.log("ack", push=pid, committed=res.committed, commit=res.commit,
                                keys=res.keys, deleted=res.deleted, pulled=res.pulled)
            else:
                policy = rng.choice(POLICIES)
                res = db.changes().pull(on_conflict=policy_for(policy, f"pull-{wid}.{gen}"))
                journal.log("pulled", policy=policy, commit=res.commit, updated=len(res.updated),
                            deleted=len(res.deleted))
        except Exception as exc:  # noqa: BLE001
            record_exc(op, exc)
            if not isinstance(exc, ebooklet.EbookletError) or isinstance(exc, ebooklet.ClosedError):
                with contextlib.suppress(Exception):
                    db.close()
                db = None
    if db is not None:
        try:
            db.close()
        except Exception as exc:  # noqa: BLE001
            record_exc("close", exc)
    journal.log("stop")
    return 0


# == the campaign ============================================================================

@dataclass
class Writer:
    wid: int
    local: pathlib.Path
    journal: pathlib.Path
    gen: int = 0
    proc: subprocess.Popen | None = None
    gave_up: bool = False
    exits: list[int] = field(default_factory=list)


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


# == checking ================================================================================


@dataclass
class Push:
    writer: str
    pid: str
    gen: int
    t0: float
    policy: str
    writes: dict[str, str]
    deletes: list[str]
    merges: dict[str, list[str | None]] = field(default_factory=dict)
    ack: dict | None = None
    exc: dict | None = None
    t1: float | None = None  # when its outcome was known, or the writer died

    def outcomes(self, key: str, committed: bool = False) -> set[str | None]:
        """What this push may have left as ``key``'s value (ABSENT for a delete).

        A merge function's value is what gets committed for a key it was called for; without
        one, the value the push carried.
        """
        out: set[str | None] = set()
        if key in self.merges:
            out.update(self.merges[key])
        elif key in self.writes:
            out.add(self.writes[key])
        if key in self.deletes:
            out.add(ABSENT)
        if committed and self.ack is not None:
            # Restrict to what the acknowledgement says the commit did.
            if key in self.ack["deleted"]:
                return {ABSENT}
            out.discard(ABSENT)
        return out


def read_journals(workdir: pathlib.Path, writers: list[Writer], events: list[dict]):
    """Pushes by id, local ops by writer, exceptions, pulls."""
    pushes: dict[str, Push] = {}
    ops: dict[str, list[dict]] = collections.defaultdict(list)
    excs: list[dict] = []
    pulls = collections.Counter()
    gave_up: list[str] = []
    files = [("seed", workdir / "journal-seed.jsonl")] + [(str(w.wid), w.journal) for w in writers]
    death = {(str(e["writer"]), e["gen"]): e["t"] for e in events if e["ev"] in ("kill", "exit")}
    end = time.time()
    for name, path in files:
        if not path.exists():
            continue
        open_push: dict[int, Push] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a record torn by a kill: it was never acted on
            ev = r["ev"]
            if ev == "intent":
                p = Push(name, r["push"], r["gen"], r["t"], r["policy"], r["writes"], r["deletes"])
                pushes[p.pid] = p
                open_push[r["gen"]] = p
            elif ev == "merge" and r["push"] in pushes:
                pushes[r["push"]].merges.setdefault(r["key"], []).append(r["value"])
            elif ev == "ack":
                p = pushes[r["push"]]
                p.ack, p.t1 = r, r["t"]
                open_push.pop(r["gen"], None)
            elif ev == "exc":
                excs.append({**r, "writer": name})
                if r["op"] == "push" and r.get("push") in pushes:
                    p = pushes[r["push"]]
                    p.exc, p.t1 = r, r["t"]
                    open_push.pop(r["gen"], None)
            elif ev == "op":
                ops[name].append(r)
            elif ev == "pulled":
                pulls["ok"] += 1
            elif ev == "gave_up":
                gave_up.append(name)
        for gen, p in open_push.items():
            p.t1 = death.get((name, gen), end)  # killed (or stopped) during the push
    for e in excs:
        if e["op"] == "pull":
            pulls["failed"] += 1
    return pushes, ops, excs, pulls, gave_up


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)
    #: Final values that only a push reported as "nothing committed" can explain: its commit
    #: landed unrecognised (issue 8, defect 1).
    unrecognised: list[str] = field(default_factory=list)
    ambiguous: int = 0  # final values explained only by a push that was never acknowledged
    twice: dict[int, list[str]] = field(default_factory=dict)  # commit numbers acked twice


def judge(keys: list[str], pushes: dict[str, Push], ops: dict[str, list[dict]],
          final: dict[str, str | None], skip: set[str] = frozenset()) -> Verdict:  # type: ignore[assignment]
    """Each key's final value against what the journals say was acknowledged.

    The final value must be an outcome of the last acknowledged commit that touched the key
    (by commit number), or of a push that was tried, never acknowledged and ended after that
    commit's push began (it may have landed later). And it must not be a value that an
    acknowledged write or delete knowingly replaced: values are unique, so such a value can
    only come back through a stale change committed again.
    """
    verdict = Verdict()
    acked = [p for p in pushes.values() if p.ack and p.ack["committed"]]
    by_commit = collections.defaultdict(list)
    for p in acked:
        by_commit[p.ack["commit"]].append(p.pid)
    verdict.twice = {c: pids for c, pids in by_commit.items() if len(pids) > 1}
    last: dict[str, Push] = {}
    for p in sorted(acked, key=lambda p: p.ack["commit"]):
        for key in p.ack["keys"] + p.ack["deleted"]:
            last[key] = p
    # Tried but never acknowledged (failed, or cut by a kill): each may have landed, and later.
    unacked = [p for p in pushes.values() if p.ack is None]
    # Acknowledged as "nothing committed": if one of these explains a value, its report was wrong.
    noop = [p for p in pushes.values() if p.ack is not None and not p.ack["committed"]]

    # Values knowingly replaced by an acknowledged write or delete.
    superseded: dict[tuple[str, str], tuple[str, str]] = {}
    for p in acked:
        writer_ops = [o for o in ops.get(p.writer, []) if o["t"] < p.t0]
        for key in p.ack["keys"] + p.ack["deleted"]:
            if key in p.merges:
                continue
            committed = ABSENT if key in p.ack["deleted"] else p.writes.get(key)
            for o in reversed(writer_ops):
                if o["key"] == key:
                    if o["new"] == committed and o["had"] is not None:
                        how = "deleted" if committed is ABSENT else "overwritten"
                        superseded.setdefault((key, o["had"]), (p.pid, how))
                    break

    for key in keys:
        if key in skip:
            continue
        got = final.get(key)
        p = last.get(key)
        expected = p.outcomes(key, committed=True) if p else {ABSENT}
        allowed = set(expected)
        since = p.t0 if p else 0.0
        for u in unacked:
            if u.t1 is not None and u.t1 + LANDING_MARGIN > since:
                allowed |= u.outcomes(key)
        stale = got is not None and (key, got) in superseded
        if got in allowed and not stale:
            verdict.ambiguous += got not in expected
            continue
        where = f"last acknowledged commit: {p.pid} (commit {p.ack['commit']})" if p else "no commit"
        detail = f"{key!r} is {got!r}; expected {sorted(map(str, expected))} ({where})"
        claimed = [u.pid for u in noop if u.t1 is not None and u.t1 + LANDING_MARGIN > since
                   and got in u.outcomes(key)]
        if claimed and not stale:
            verdict.unrecognised.append(f"{detail}; it is what push {claimed[-1]} carried, which "
                                        "reported that it committed nothing")
        elif stale:
            by, how = superseded[(key, got)]
            detail += f"; {got!r} had been {how} knowingly by acknowledged push {by}"
            (verdict.resurrected if how == "deleted" else verdict.lost).append(detail)
        elif got is not None and expected == {ABSENT}:
            verdict.resurrected.append(detail)
        else:
            verdict.lost.append(detail)
    return verdict


def check(args, workdir, server, bucket, direct, writers, events) -> dict:
    keys = key_names(args.keys)
    pushes, ops, excs, pulls, gave_up = read_journals(workdir, writers, events)
    defects: list[str] = []

    # -- the remote as a fresh reader sees it ---------------------------------------------
    head = json.loads(server.admin_client.get_object(Bucket=bucket, Key=DB_KEY)["Body"].read())
    prefix = DB_KEY + ".ebooklet/"
    listed: set[str] = set()
    for page in server.admin_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        listed.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
    referenced = {n for n in head["parts"] if n} | set(head["segments"])
    missing = sorted(referenced - listed)
    for name in missing:
        defects.append(f"the head references {name}, which does not exist")
    # Objects no retained commit references: what gc would collect (leftovers of failed
    # pushes, objects replaced by commits past retention).
    garbage = ebooklet.gc(direct, min_age=0, dry_run=True)
    leaked, leaked_bytes = garbage.removed, garbage.bytes_removed
    report = ebooklet.verify(direct, deep=True)
    defects += [f"verify: {problem}" for problem in report.problems]

    final: dict[str, str | None] = {}
    read_errors: dict[str, str] = {}
    with ebooklet.open(direct, workdir / "check-reader.blt", "r") as reader:
        try:
            reader.load_items()
        except ebooklet.EbookletError as exc:
            log(f"reading everything at once failed ({qualified(exc)}); reading key by key")
        for key in keys:
            try:
                final[key] = reader.get(key)
            except Exception as exc:  # noqa: BLE001 - every failure to read is a finding
                read_errors[key] = f"{qualified(exc)}: {exc}"
                defects.append(f"reading {key!r} failed: {qualified(exc)}: {str(exc)[:200]}")
        extra = sorted(set(reader.keys()) - set(keys))
    for key in extra:
        defects.append(f"the remote holds a key no writer wrote: {key!r}")

    # -- every key against the journals ---------------------------------------------------
    verdict = judge(keys, pushes, ops, final, skip=set(read_errors))
    lost, resurrected, ambiguous = verdict.lost, verdict.resurrected, verdict.ambiguous
    for c, pids in sorted(verdict.twice.items()):
        defects.append(f"commit {c} acknowledged to more than one push: {pids}")
    defects += [f"lost: {d}" for d in lost] + [f"resurrected: {d}" for d in resurrected]
    defects += [f"landed unrecognised: {d}" for d in verdict.unrecognised]

    # -- each writer's file after a last pull --------------------------------------------
    diverged: dict[str, list[str]] = {}
    pending_at_end: dict[str, int] = {}
    for w in writers:
        if not w.local.exists():
            continue
        try:
            with ebooklet.open(direct, w.local, "w", remote_lock="none") as db:
                db.changes().pull(on_conflict="remote")
                pending = {c.key for c in db.changes().iter_changes() if c.local}
                pending_at_end[str(w.wid)] = len(pending)
                bad = [k for k in keys
                       if k not in pending and k not in read_errors and db.get(k) != final.get(k)]
        except Exception as exc:  # noqa: BLE001
            defects.append(f"writer {w.wid}'s file cannot be checked: {qualified(exc)}: {str(exc)[:300]}")
            continue
        if bad:
            diverged[str(w.wid)] = bad
            defects.append(f"writer {w.wid}'s file differs from the remote (nothing pending) on {len(bad)} "
                           f"key(s), e.g. {bad[:5]}")
    for name in gave_up:
        defects.append(f"writer {name} gave up: it could not open its local file {OPEN_ATTEMPTS} times")

    # -- the lease, from the writers' warnings ------------------------------------------
    self_takeovers = release_failures = 0
    for w in writers:
        err = workdir / f"writer{w.wid}.stderr"
        text = err.read_text(errors="replace") if err.exists() else ""
        for m in re.finditer(r"^pid=(\d+) WARNING ebooklet\.lock: took over the expired lease of "
                             r"[^:\s]*:(\d+):", text, re.M):
            self_takeovers += m.group(1) == m.group(2)
        release_failures += len(re.findall(r"could not release the lock", text))
    if self_takeovers:
        defects.append(f"{self_takeovers} time(s) a writer waited for its own lease to expire and "
                       "took it over (a lost reply to its lease write)")

    # -- exceptions -----------------------------------------------------------------------
    ours = collections.Counter(e["type"] for e in excs if e["ebooklet"])
    foreign = [e for e in excs if not e["ebooklet"]]
    internal = [e for e in excs if e["ebooklet"] and not e["public"]]
    for e in foreign:
        defects.append(f"non-ebooklet exception in writer {e['writer']} ({e['op']}): "
                       f"{e['type']}: {e['msg'][:200]}")
    for e in internal:
        defects.append(f"internal ebooklet error escaped in writer {e['writer']} ({e['op']}): "
                       f"{e['type']}: {e['msg'][:200]}")
    tried = [p for p in pushes.values() if p.writer != "seed"]
    return {
        "server": args.server, "writers": args.writers, "keys": args.keys, "seed": args.seed,
        "minutes": args.minutes, "fault_rate": args.fault_rate,
        "pushes_tried": len(tried),
        "pushes_acknowledged": sum(1 for p in tried if p.ack),
        "pushes_committed": sum(1 for p in tried if p.ack and p.ack["committed"]),
        "pushes_failed": sum(1 for p in tried if p.exc),
        "pushes_cut_by_kill": sum(1 for p in tried if not p.ack and not p.exc),
        "pulls_ok": pulls["ok"], "pulls_failed": pulls["failed"],
        "head_commit": head["commit"],
        "keys_checked": len(keys), "lost": len(lost), "resurrected": len(resurrected),
        "ambiguous_ok": ambiguous, "read_errors": len(read_errors),
        "unrecognised_commits": len(verdict.unrecognised),
        "objects_referenced": len(referenced), "objects_missing": len(missing),
        "objects_leaked": len(leaked), "leaked_bytes": leaked_bytes,
        "diverged_keys": sum(len(v) for v in diverged.values()),
        "pending_at_end": pending_at_end,
        "ebooklet_exceptions": dict(ours.most_common()),
        "non_ebooklet_exceptions": len(foreign),
        "non_ebooklet_types": dict(collections.Counter(e["type"] for e in foreign).most_common()),
        "internal_errors": len(internal),
        "duplicate_commits": len(verdict.twice),
        "lease_self_takeovers": self_takeovers,
        "lease_release_failures": release_failures,
        "writers_gave_up": len(gave_up),
        "defects": defects,
        "examples": {"lost": lost[:10], "resurrected": resurrected[:10],
                     "unrecognised": verdict.unrecognised[:10],
                     "non_ebooklet": [f"{e['type']}: {e['msg'][:300]}\n{e.get('tb', '')[-1500:]}"
                                      for e in foreign[:3]]},
    }


def report(s: dict) -> str:
    faults = ", ".join(f"{k} {v}" for k, v in s["faults"].items()) or "none"
    exc = ", ".join(f"{k} {v}" for k, v in s["ebooklet_exceptions"].items()) or "none"
    foreign = ", ".join(f"{k} {v}" for k, v in s["non_ebooklet_types"].items()) or "none"
    lines = [
        f"ebooklet fault campaign: {s['server']}, {s['writers']} writers, {s['keys']} keys, "
        f"seed {s['seed']}, {s['seconds']:.0f} s, faults on {s['fault_rate']:.0%} of requests",
        f"  requests through the proxy  {s['requests']}",
        f"  faults by kind              {faults}",
        f"  kills                       {s['kills']} ({s['restarts']} restarts)",
        f"  pushes tried                {s['pushes_tried']}: acknowledged {s['pushes_acknowledged']} "
        f"(committed {s['pushes_committed']}), failed {s['pushes_failed']}, cut by a kill "
        f"{s['pushes_cut_by_kill']}",
        f"  pulls                       {s['pulls_ok']} ok, {s['pulls_failed']} failed",
        f"  ebooklet errors seen        {exc}",
        f"  non-ebooklet exceptions     {s['non_ebooklet_exceptions']} ({foreign})",
        f"  internal errors escaped     {s['internal_errors']} (ebooklet errors it does not export)",
        f"  head                        commit {s['head_commit']}; {s['objects_referenced']} objects "
        f"referenced, {s['objects_missing']} missing",
        f"  leaked objects              {s['objects_leaked']} ({s['leaked_bytes']:,} bytes, for gc)",
        f"  keys checked                {s['keys_checked']}: lost {s['lost']}, resurrected "
        f"{s['resurrected']}, unreadable {s['read_errors']}, ambiguous but allowed {s['ambiguous_ok']}",
        f"  landed unrecognised         {s['unrecognised_commits']} key(s) hold what a push reported "
        "as not committed",
        f"  writers' files vs remote    {s['diverged_keys']} diverged key(s); pending at end "
        f"{s['pending_at_end']}",
        f"  duplicate commit numbers    {s['duplicate_commits']}",
        f"  lease                       {s['lease_self_takeovers']} takeover(s) of a writer's own lease, "
        f"{s['lease_release_failures']} 'could not release the lock' warning(s)",
        f"DEFECTS: {len(s['defects'])}" if s["defects"] else "no defects found",
    ]
    lines += [f"  - {d}" for d in s["defects"][:40]]
    if len(s["defects"]) > 40:
        lines.append(f"  ... and {len(s['defects']) - 40} more")
    for example in s["examples"]["non_ebooklet"]:
        lines.append("  non-ebooklet exception: " + example.replace("\n", "\n    "))
    return "\n".join(lines)


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
        results = ROOT / "benchmarks" / "results" / f"campaign-{_dt.date.today().isoformat()}.txt"
        stamp = f"# {_dt.datetime.now().isoformat(timespec='seconds')} on {platform.node() or 'unknown'} " \
                f"({platform.machine()}, {os.cpu_count()} cores), ebooklet {ebooklet.__version__}"
        with open(results, "a", encoding="utf-8") as f:
            f.write(f"{stamp}\n$ python benchmarks/campaign.py {' '.join(sys.argv[1:])}\n{text}\n\n")
    return 1 if summary["defects"] else 0


if __name__ == "__main__":
    sys.exit(main())
