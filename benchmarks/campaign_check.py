"""The judge of the fault campaign (benchmarks/campaign.py): the journals read back, each key's
final value against what was acknowledged, the remote's objects, and the report."""

from __future__ import annotations

import collections
import json
import pathlib
import re
import sys
import time
from dataclasses import dataclass, field

# The tests load these files by their path: their folder may not be on sys.path yet.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from campaign_writer import ABSENT, DB_KEY, OPEN_ATTEMPTS, Writer, key_names, qualified  # noqa: E402
from harness import log  # noqa: E402

import ebooklet  # noqa: E402

#: Seconds after a push was given up (or its writer killed) during which a request it had sent
#: may still reach the server (the proxy's delay fault holds a request 0.2 s by default).
LANDING_MARGIN = 2.0


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
