"""The commands that compare and sync a local file with its remote: status, push, pull."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

from .local import existing_local, open_database
from .output import CliError, print_json, print_keys, show_key
from .parser import Commands
from .progress import progress_bar
from .remote_arg import remote_arg


def register(commands: Commands) -> None:
    status = commands.add(
        "status", _status, "show what differs between a local file and its remote",
        "Show the keys that differ between LOCAL and REMOTE since they were last\n"
        "synced: one line per key with the side that changed it (local, remote or\n"
        "both) and how (added, modified, deleted), then a summary. Keys changed on\n"
        "both sides to different values are CONFLICTs.",
        ["pickle", "json", "s3"],
    )
    status.add_argument("local", metavar="LOCAL", help="the local database file")

    push = commands.add(
        "push", _push, "commit the local changes to the remote",
        "Commit LOCAL's changes to REMOTE in one atomic commit (creating the remote\n"
        "database if there is none). Changes others pushed meanwhile to other keys\n"
        "are merged in; keys changed on both sides stop the push, unless\n"
        "--on-conflict says which side wins.",
        ["conflict", "verbose", "progress", "pickle", "json", "s3"],
    )
    push.add_argument("local", metavar="LOCAL",
                      help="the local database file (an ebooklet or plain booklet file)")

    pull = commands.add(
        "pull", _pull, "bring in the changes others pushed",
        "Bring REMOTE's new commits into LOCAL: changed values are dropped and\n"
        "fetched again when read, deleted keys disappear, new keys appear. Unpushed\n"
        "local changes to other keys are kept. When LOCAL does not exist it becomes a\n"
        "copy of the remote.",
        ["conflict", "verbose", "progress", "pickle", "json", "s3"],
    )
    pull.add_argument("local", metavar="LOCAL", help="the local database file (made if missing)")
    pull.add_argument("--load", action="store_true",
                      help="also fetch every value not in LOCAL yet, for offline use")


def _status(args: argparse.Namespace) -> int:
    remote = remote_arg(args)
    local = existing_local(args.local, f"'ebooklet pull {args.remote} {args.local}' makes a copy there")
    with open_database(remote, local, "r", args.allow_pickle) as db:
        changes = list(db.changes().iter_changes())
    sides = {side: sum(c.side == side for c in changes) for side in ("local", "remote", "both")}
    conflicts = sum(c.conflict for c in changes)
    if args.json:
        print_json(
            {
                "remote": remote.location,
                "local": str(local),
                "changes": [dataclasses.asdict(c) for c in changes],
                "summary": {"changes": len(changes), **sides, "conflicts": conflicts},
            }
        )
        return 0
    if not changes:
        print(f"no changes: {local} is in sync with {remote.location}")
        return 0
    rows = [("side", "local", "remote", "key")] + [
        (c.side, c.local or "-", c.remote or "-", show_key(c.key) + ("  CONFLICT" if c.conflict else ""))
        for c in changes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3])
    summary = (
        f"{len(changes):,} change(s): {sides['local']:,} local, {sides['remote']:,} remote, "
        f"{sides['both']:,} both"
    )
    if conflicts:
        summary += f" ({conflicts:,} conflict(s); resolve with --on-conflict)"
    print(summary)
    return 0


def _push(args: argparse.Namespace) -> int:
    remote = remote_arg(args)
    if not remote.writable:
        raise CliError(
            f"cannot push to {remote.location}: a public URL is read-only; push to "
            "s3://BUCKET/KEY (with credentials) or to a folder"
        )
    local = existing_local(args.local, "there is nothing to push")
    with open_database(remote, local, "w", args.allow_pickle) as db:
        with progress_bar(args) as bar:
            result = db.changes().push(args.on_conflict, progress=bar)
    if args.json:
        print_json({"remote": remote.location, "local": str(local), **dataclasses.asdict(result)})
        return 0
    if result.committed:
        print(result)
    else:
        print(f"nothing to push: no local changes in {local}")
    if result.pulled:
        print(f"pulled in {len(result.pulled):,} key(s) others changed meanwhile")
    rows = [("written", result.keys), ("deleted", result.deleted), ("pulled", result.pulled)]
    print_keys(rows, args.verbose)
    return 0


def _pull(args: argparse.Namespace) -> int:
    remote = remote_arg(args)
    local = pathlib.Path(args.local)
    if local.is_dir():
        raise CliError(f"the local file {local} is a folder; LOCAL names a database file in it")
    fresh = not local.exists()
    if fresh and not local.absolute().parent.is_dir():
        raise CliError(f"cannot create {local}: the folder {local.absolute().parent} does not exist")
    if not remote.writable and args.on_conflict in ("local", "newest"):
        raise CliError(
            f"{remote.location} is read-only, so local changes to conflicting keys could never be "
            "pushed: use --on-conflict remote"
        )
    loaded = None
    with open_database(remote, local, "w" if remote.writable else "r", args.allow_pickle) as db:
        result = db.changes().pull(args.on_conflict)
        n_keys = len(db)
        if args.load:
            with progress_bar(args) as bar:
                loaded = db.load_items(progress=bar)
    if args.json:
        print_json(
            {"remote": remote.location, "local": str(local), "created": fresh, **dataclasses.asdict(result),
             "keys": n_keys, "loaded": loaded}
        )
        return 0
    if fresh:
        print(f"created {local} from {remote.location}: {n_keys:,} key(s) at commit {result.commit}")
        if loaded is None:
            print("values are fetched when first read (pull --load fetches them all now)")
    else:
        print(result)
        print_keys([("updated", result.updated), ("deleted", result.deleted)], args.verbose)
    if loaded is not None:
        print(f"fetched {loaded:,} value(s)")
    return 0
