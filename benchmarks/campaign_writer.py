"""The writer process of the fault campaign (benchmarks/campaign.py), and what the campaign
and its check share: the database key, the key names, the journal each writer keeps.

A writer (``campaign.py --writer N``) opens its own local file and, until the deadline, makes
random writes and deletes of the shared keys, ``sync()``, pushes under every conflict policy and
pulls, journaling each step (fsynced) before it goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pathlib
import random
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import ebooklet

DB_KEY = "campaign/db"
ABSENT = None  # the final "value" of a key that is not there
#: Exit status of a writer that could not open its local file, however often it tried.
EXIT_UNUSABLE = 3
OPEN_ATTEMPTS = 20
LEASE_TTL = 10.0
LOCK_WAIT = 30.0
POLICIES = ("none", "local", "remote", "newest", "merge")


def key_names(n: int) -> list[str]:
    return [f"k{i:03d}" for i in range(n)]


def qualified(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ in ("builtins", "ebooklet.errors"):
        return cls.__name__
    return f"{cls.__module__}.{cls.__name__}"


@dataclass
class Writer:
    """A writer as the campaign sees it: its files, its current process and generation."""

    wid: int
    local: pathlib.Path
    journal: pathlib.Path
    gen: int = 0
    proc: subprocess.Popen | None = None
    gave_up: bool = False
    exits: list[int] = field(default_factory=list)



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
