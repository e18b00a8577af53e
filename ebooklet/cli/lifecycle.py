"""The commands that look after a remote database over time: log, diff, compact, gc, verify."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import tempfile

from ..errors import EbookletError, ReadOnlyError
from ..info import remote_info
from ..local import synced_with
from ..maintenance import gc, verify
from ..results import PushResult
from ..settings import settings
from .interrupt import handling_interrupts
from .local import CACHE_HELP, existing_local, open_database, reader
from .output import CliError, bad_input, count, print_json, show_key
from .parser import COMMIT_HELP, Commands, commit_ref, positive_int
from .progress import progress_bar
from .remote_arg import RemoteArg, no_database, remote_arg, remote_for_local
from .sync import REMEMBERED


def register(commands: Commands) -> None:
    log = commands.add(
        "log", _log, "list the commits of a database",
        "List the commits REMOTE keeps readable (its retention window), newest first:\n"
        "number, time, keys written and deleted, and the author where known.",
        ["local", "json", "timeout", "s3"], notes=CACHE_HELP,
    )
    log.add_argument("-n", "--limit", type=positive_int, metavar="N", help="at most N commits")

    diff = commands.add(
        "diff", _diff, "show what changed between two commits",
        "List the keys added, modified or deleted from commit OLD to commit NEW (the\n"
        "latest when left out).",
        ["local", "json", "timeout", "s3"], notes=CACHE_HELP,
    )
    diff.add_argument("old", metavar="OLD", type=commit_ref, help=COMMIT_HELP)
    diff.add_argument("new", metavar="NEW", type=commit_ref, nargs="?", help=COMMIT_HELP)

    compact = commands.add(
        "compact", _compact, "rewrite segments that hold dead or scattered values",
        "Rewrite REMOTE's segments that are mostly dead or small into new ones, in one\n"
        "atomic commit made from LOCAL (which also pushes LOCAL's changes), or, given\n"
        "REMOTE alone, from a temporary local copy. Pushes compact on the way when the\n"
        "index is small; this does it for any size.",
        ["talk", "progress", "pickle", "json", "timeout", "lock", "s3"], remote="optional", notes=REMEMBERED,
    )
    compact.add_argument("local", metavar="LOCAL",
                         help="the local database file; or, alone, the REMOTE to compact")

    collect = commands.add(
        "gc", _gc, "remove objects no retained commit uses",
        "Remove the objects under REMOTE that no commit within the retention window\n"
        "uses: objects replaced by later commits, leftovers of failed or interrupted\n"
        "pushes, and the log of commits past retention. Objects younger than\n"
        "--min-age are kept, since a push may still be uploading them. Nothing a\n"
        "retained commit needs is ever removed, so gc runs for real unless --dry-run.",
        ["json", "s3"],
    )
    collect.add_argument("--dry-run", action="store_true", help="report what would go; remove nothing")
    collect.add_argument("--min-age", type=float, default=settings.gc_min_age, metavar="SECONDS",
                         help="keep unreferenced objects younger than this "
                         f"(default {settings.gc_min_age:.0f})")

    check = commands.add(
        "verify", _verify, "check that a database is whole",
        "Check that every object the retained commits of REMOTE use exists with the\n"
        "right size and checksum; with --deep, also read every value and check its\n"
        "content hash. Exits 0 when all is well, 1 when something is damaged.",
        ["json", "s3"],
    )
    check.add_argument("--deep", action="store_true", help="also read and check every value")


def _log(args: argparse.Namespace) -> int:
    with handling_interrupts(), reader(args) as db:
        commits = db.log(args.limit)
    if args.json:
        print_json([{**dataclasses.asdict(c), "committed_at": c.committed_at.isoformat()} for c in commits])
    else:
        for commit in commits:
            print(commit)
    return 0


def _diff(args: argparse.Namespace) -> int:
    with handling_interrupts(), reader(args) as db:
        changes = db.diff(args.old, args.new)
    if args.json:
        print_json([{"key": c.key, "change": c.remote} for c in changes])
        return 0
    for change in changes:
        print(f"{change.remote:<8}  {show_key(change.key)}")
    counts = {kind: sum(c.remote == kind for c in changes) for kind in ("added", "modified", "deleted")}
    print(f"{count(len(changes), 'key')}: {counts['added']:,} added, {counts['modified']:,} modified, "
          f"{counts['deleted']:,} deleted")
    return 0


def _compact(args: argparse.Namespace) -> int:
    if args.remote is None and synced_with(pathlib.Path(args.local)) is None:
        # One argument that is no synced local file: the REMOTE, compacted through a copy of its own.
        remote = remote_arg(args, args.local)
        with tempfile.TemporaryDirectory(prefix="ebooklet-compact-") as tmp:
            result = _compact_from(args, remote, pathlib.Path(tmp) / "compact.blt")
    else:
        local = existing_local(args.local, f"'ebooklet pull REMOTE {args.local}' makes one")
        result = _compact_from(args, remote_for_local(args, local), local)
    if args.json:
        print_json({"commit": result.commit, "compacted": result.compacted, "keys": len(result.keys),
                    "deleted": len(result.deleted)})
    elif args.quiet:
        pass
    elif result.committed:
        print(f"commit {result.commit:,}: {count(result.compacted, 'value')} moved into new segments"
              + (f", {count(len(result.keys), 'key')} written" if result.keys else ""))
    else:
        print("nothing to compact")
    return 0


def _compact_from(args: argparse.Namespace, remote: RemoteArg, local: pathlib.Path) -> PushResult:
    if not remote.writable:
        raise CliError(
            ReadOnlyError,
            f"cannot compact {remote.location}: a public URL is read-only; compact it through "
            "s3://BUCKET/KEY (with credentials) or a folder"
        )
    if not local.exists() and remote_info(remote.remote()) is None:
        raise no_database(remote)
    with handling_interrupts(), open_database(remote, local, "w", args) as db, progress_bar(args) as bar:
        return db.compact(progress=bar)


def _gc(args: argparse.Namespace) -> int:
    remote = remote_arg(args)
    try:
        with handling_interrupts():
            report = gc(remote.conn, min_age=args.min_age, dry_run=args.dry_run)
    except EbookletError:
        raise
    except (ValueError, TypeError, OSError) as exc:
        raise bad_input(exc) from None
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        print(report)
    return 0


def _verify(args: argparse.Namespace) -> int:
    remote = remote_arg(args)
    try:
        with handling_interrupts():
            report = verify(remote.conn, deep=args.deep)
    except EbookletError:
        raise
    except (ValueError, TypeError, OSError) as exc:
        raise bad_input(exc) from None
    if args.json:
        print_json({**dataclasses.asdict(report), "ok": report.ok})
    else:
        print(report)
    if not report.ok:
        raise SystemExit(1)
    return 0


