"""The commands that compare and sync a local file with its remote: status, push, pull, discard.

Each takes ``[REMOTE] LOCAL``: without REMOTE, the remote LOCAL was last synced with.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Any

from ..db import EBooklet
from ..errors import (
    ConflictError,
    LeaseHeldError,
    LocalFileNotFoundError,
    LocalPathIsAFolderError,
    MassDeleteError,
    ReadOnlyError,
    RemoteExistsError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    SyncError,
)
from ..info import remote_info
from ..local import synced_with
from ..lock import Lease
from ..results import Change, PushResult
from ..settings import settings
from .interrupt import handling_interrupts, stop_requested
from .local import check_folder, existing_local, open_database
from .output import SHOWN_KEYS, CliError, confirm, count, print_json, print_keys, show_key
from .parser import Commands
from .progress import progress_bar
from .remote_arg import RemoteArg, remote_for_local

#: ``status --exit-code``: the statuses for "there are changes" and "some keys conflict".
CHANGES_STATUS = 3
CONFLICTS_STATUS = 4
#: The exit status of a status whose remote could not be reached (local changes only).
OFFLINE_STATUS = 5

REMEMBERED = """\
Without REMOTE, the command uses the remote LOCAL was last synced with (recorded
in LOCAL.ebooklet/). A REMOTE given for a LOCAL synced with another database is
refused.
"""


def register(commands: Commands) -> None:
    status = commands.add(
        "status", _status, "show what differs between a local file and its remote",
        "Show the keys that differ between LOCAL and REMOTE since they were last\n"
        "synced: one line per key with the side that changed it (local, remote or\n"
        "both) and how (added, modified, deleted), then a summary. Keys changed on\n"
        "both sides to different values are CONFLICTs.",
        ["talk", "pickle", "json", "timeout", "s3"], remote="optional",
        notes=REMEMBERED + f"\nWith --exit-code the status is {CHANGES_STATUS} when something differs and "
        f"{CONFLICTS_STATUS} when\nsome keys conflict (0: in sync). When the remote cannot be reached (or\n"
        f"with --offline) the local changes are listed from the journal and the\nstatus is {OFFLINE_STATUS}.",
    )
    status.add_argument("local", metavar="LOCAL", help="the local database file")
    status.add_argument("--offline", action="store_true",
                        help="list the local changes only, without contacting the remote")
    status.add_argument("--exit-code", action="store_true",
                        help=f"exit {CHANGES_STATUS} when something differs, {CONFLICTS_STATUS} on conflicts")

    push = commands.add(
        "push", _push, "commit the local changes to the remote",
        "Commit LOCAL's changes to REMOTE in one atomic commit (creating the remote\n"
        "database if there is none). Changes others pushed meanwhile to other keys\n"
        "are merged in; keys changed on both sides stop the push, unless\n"
        "--on-conflict says which side wins. Ctrl-C stops it: nothing is committed\n"
        "and it can simply be run again.",
        ["conflict", "talk", "progress", "pickle", "json", "timeout", "lock", "s3"], remote="optional",
        notes=REMEMBERED,
    )
    push.add_argument("local", metavar="LOCAL",
                      help="the local database file (an ebooklet or plain booklet file)")
    push.add_argument("-n", "--dry-run", action="store_true",
                      help="say what a push would do, and do nothing (one request)")
    push.add_argument("--max-delete", type=_percent, default=settings.max_delete, metavar="PERCENT",
                      help="stop when the push would delete more than PERCENT of the remote's keys "
                      "that were not deleted through ebooklet (missing from LOCAL); default 50, "
                      "100 to allow any")
    push.add_argument("--recreate", action="store_true",
                      help="when the remote database was deleted, create it again from LOCAL")
    push.add_argument("--break-lease", action="store_true",
                      help="remove the remote lock first, whoever holds it (for a lock left by a "
                      "writer that is gone, or a damaged one); a writer still pushing then fails "
                      "and must push again")

    pull = commands.add(
        "pull", _pull, "bring in the changes others pushed",
        "Bring REMOTE's new commits into LOCAL: changed values are dropped and\n"
        "fetched again when read, deleted keys disappear, new keys appear. Unpushed\n"
        "local changes to other keys are kept. When LOCAL does not exist it becomes a\n"
        "copy of the remote.",
        ["conflict", "talk", "progress", "pickle", "json", "timeout", "s3"], remote="optional",
        notes=REMEMBERED,
    )
    pull.add_argument("local", metavar="LOCAL", help="the local database file (made if missing)")
    pull.add_argument("--load", action="store_true",
                      help="also fetch every value not in LOCAL yet, for offline use")

    discard = commands.add(
        "discard", _discard, "throw away local changes",
        "Throw away LOCAL's unpushed changes (all, or those to the keys given with\n"
        "--key): they read again as the remote had them at the last sync. This cannot\n"
        "be undone; on a terminal it asks first, elsewhere it needs --yes.",
        ["talk", "pickle", "json", "timeout", "s3"], remote="optional", notes=REMEMBERED,
    )
    discard.add_argument("local", metavar="LOCAL", help="the local database file")
    discard.add_argument("--key", action="append", metavar="KEY", dest="keys",
                         help="discard the change to this key only (repeat for more keys)")
    discard.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _status(args: argparse.Namespace) -> int:
    local = existing_local(args.local, f"'ebooklet pull REMOTE {args.local}' makes a copy there")
    remote = remote_for_local(args, local)
    unreachable = None
    with handling_interrupts(), open_database(remote, local, "r", args) as db:
        if args.offline:
            unreachable = "--offline"
        else:
            try:
                changes = list(db.changes().iter_changes())
            except RemoteUnavailableError as exc:
                unreachable = str(exc)
        if unreachable is not None:
            changes = list(db.changes(offline=True).iter_changes())
    sides = {side: sum(c.side == side for c in changes) for side in ("local", "remote", "both")}
    conflicts = sum(c.conflict for c in changes)
    status = 0
    if unreachable is not None:
        status = OFFLINE_STATUS
    elif args.exit_code and changes:
        status = CONFLICTS_STATUS if conflicts else CHANGES_STATUS
    if args.json:
        print_json(
            {
                **remote.fields(),
                "local": str(local),
                "remote_checked": unreachable is None,
                "changes": [dataclasses.asdict(c) for c in changes],
                "summary": {"changes": len(changes), **sides, "conflicts": conflicts},
            }
        )
        return status
    if args.quiet:
        return status
    if unreachable is not None:
        return _print_offline(changes, local, remote.location, unreachable, args.verbose)
    if not changes:
        print(f"no changes: {local} is in sync with {remote.location}")
        return status
    _print_changes(changes, args.verbose)
    summary = (
        f"{count(len(changes), 'change')}: {sides['local']:,} local, {sides['remote']:,} remote, "
        f"{sides['both']:,} both"
    )
    if conflicts:
        summary += f" ({count(conflicts, 'conflict')}; resolve with push --on-conflict)"
    print(summary)
    return status


def _print_offline(changes: list[Change], local: Any, location: str, why: str, verbose: bool) -> int:
    if why != "--offline":
        print(f"the remote was not checked: {why}")
    if not changes:
        print(f"no local changes in {local} since it was last synced with {location} (remote not checked)")
    else:
        _print_changes(changes, verbose)
        print(f"{count(len(changes), 'local change')} not pushed yet (remote not checked)")
    return OFFLINE_STATUS


def _print_changes(changes: list[Change], verbose: bool) -> None:
    """A table of the changes: up to SHOWN_KEYS of them, conflicts first, as push and pull
    list theirs (``--verbose``: all of them), then how many more there are."""
    shown = changes if verbose else sorted(changes, key=lambda c: not c.conflict)[:SHOWN_KEYS]
    rows = [("side", "local", "remote", "key")] + [
        (c.side, c.local or "-", c.remote or "-", show_key(c.key) + ("  CONFLICT" if c.conflict else ""))
        for c in shown
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3])
    if len(shown) < len(changes):
        print(f"... and {count(len(changes) - len(shown), 'more change')} (--verbose lists them all)")


# -- push ------------------------------------------------------------------------------------


def _push(args: argparse.Namespace) -> int:
    local = existing_local(args.local, "there is nothing to push")
    remote = remote_for_local(args, local)
    if not remote.writable:
        raise CliError(
            ReadOnlyError,
            f"cannot push to {remote.location}: a public URL is read-only; push to "
            "s3://BUCKET/KEY (with credentials) or to a folder"
        )
    if args.dry_run:  # a reader: it changes nothing, and waits for no writer of LOCAL
        with handling_interrupts(), open_database(remote, local, "r", args) as db:
            return _dry_run(args, db, remote, local)
    with handling_interrupts(), open_database(remote, local, "w", args) as db:
        if args.recreate:
            _recreate(db, remote, local)
        if args.break_lease:
            broken = Lease(remote.remote()).break_lease()
            holder = f" held by {broken.owner}" if broken is not None and broken.owner else ""
            print(f"broke the lock on {remote.location}{holder}", file=sys.stderr)
        result = push_changes(args, db, remote, local)
    report_push(args, result, remote, local)
    return 0


def _recreate(db: EBooklet, remote: RemoteArg, local: pathlib.Path) -> None:
    if remote_info(remote.remote()) is not None:
        raise CliError(
            RemoteExistsError,
            f"--recreate is for a remote database that was deleted, and {remote.location} exists: "
            f"push without --recreate (or 'ebooklet pull {remote.text} {local}' first)"
        )
    db.delete_remote()  # forgets the old database (and removes what it left behind)


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage from 0 to 100")
    return value


def push_changes(
    args: argparse.Namespace, db: EBooklet, remote: RemoteArg, local: pathlib.Path
) -> PushResult:
    """``db.changes().push()`` with the progress bar, and the advice for a shell when it stops."""
    stoppable = remote.transport

    def waiting_for() -> str | None:
        if stoppable is not None and stoppable.repeated_gets >= 2:
            return (f"waiting for another writer's lock on {remote.location} (up to "
                    f"{args.lock_wait:g} s; --lock-wait SECONDS changes this)")
        return None

    try:
        with progress_bar(args, "upload", waiting_for) as bar:
            # put --push and del --push have no --max-delete: the advice below is to push again.
            max_delete = getattr(args, "max_delete", settings.max_delete)
            return db.changes().push(args.on_conflict, progress=bar, max_delete=max_delete)
    except KeyboardInterrupt:
        if not stop_requested():
            raise
        raise _interrupted_push(remote, local) from None
    except MassDeleteError as exc:
        raise CliError(
            MassDeleteError,
            f"this push would delete {len(exc.keys):,} of the remote's {exc.total:,} keys that were "
            f"not deleted through ebooklet: they are missing from {local}, e.g. "
            f"{', '.join(repr(k) for k in exc.keys[:5])}. Nothing was committed. If you meant to "
            f"delete them, push again with --max-delete 100; to keep them, run 'ebooklet discard "
            f"{local} --key KEY' for each (they are read from the remote again)"
        ) from None
    except LeaseHeldError as exc:
        raise CliError(
            LeaseHeldError,
            f"{exc} To wait longer, give --lock-wait SECONDS (now {args.lock_wait:g})."
        ) from None
    except (SyncError, RemoteNotFoundError) as exc:
        raise _gone(remote, local) or exc from None


def _interrupted_push(remote: RemoteArg, local: pathlib.Path) -> CliError:
    stoppable = remote.transport
    try:
        discarded = stoppable.discard_uploads() if stoppable is not None else 0
    except Exception as exc:  # noqa: BLE001 - the objects are harmless; say so and carry on
        cleaned = (f" The objects it had uploaded could not be deleted ({exc}); they are harmless, "
                   "and deleted with the database.")
    else:
        if discarded is None:
            return CliError(
                KeyboardInterrupt,
                f"interrupted while committing: whether the commit landed on {remote.location} is "
                f"not known yet. Nothing is lost: {local} keeps its changes, and the next push, pull "
                "or status finds out. Run the push again.", status=130, interrupted=True,
            )
        cleaned = f" The {count(discarded, 'object')} it had uploaded were deleted." if discarded else ""
    return CliError(
        KeyboardInterrupt,
        f"interrupted: nothing was committed.{cleaned} {local} keeps its changes: run the push again "
        "to push them.", status=130, interrupted=True,
    )


def _gone(remote: RemoteArg, local: pathlib.Path) -> CliError | None:
    """The remote database LOCAL was synced with is gone: the shell's way on, or None."""
    synced = synced_with(local)
    if synced is None or synced.uuid is None or remote_info(remote.remote()) is not None:
        return None  # never pushed or pulled (nothing to be gone), or the database is there
    return CliError(
        RemoteNotFoundError,
        f"there is no database at {remote.location} any more: it was deleted after {local} was "
        f"last synced with it. {local} keeps its data; to create the database again from it, run "
        f"'ebooklet push --recreate {remote.text} {local}'"
    )


def report_push(args: argparse.Namespace, result: PushResult, remote: RemoteArg, local: pathlib.Path) -> None:
    if args.json:
        print_json({**remote.fields(), "local": str(local), **dataclasses.asdict(result)})
        return
    if args.quiet:
        return
    if result.committed:
        print(
            f"commit {result.commit:,}: {count(len(result.keys), 'key')} written, "
            f"{len(result.deleted):,} deleted, {count(result.bytes_sent, 'byte')} in "
            f"{count(result.requests, 'request')}"
        )
    else:
        print(f"nothing to push: no local changes in {local}")
    if result.pulled:
        print(f"pulled in {count(len(result.pulled), 'key')} others changed meanwhile")
    print_keys([("written", result.keys), ("deleted", result.deleted), ("pulled", result.pulled)],
               args.verbose)


def _dry_run(args: argparse.Namespace, db: EBooklet, remote: RemoteArg, local: pathlib.Path) -> int:
    changes = list(db.changes().iter_changes())
    conflicts = [c.key for c in changes if c.conflict]
    if conflicts and args.on_conflict is None:
        shown = ", ".join(repr(k) for k in conflicts[:10])
        more = f" and {len(conflicts) - 10:,} more" if len(conflicts) > 10 else ""
        raise CliError(
            ConflictError,
            f"the push would stop: {count(len(conflicts), 'key')} changed both locally and on the "
            f"remote: {shown}{more}. Choose the side to keep with push --on-conflict "
            "local|remote|newest (nothing was pushed: --dry-run)", keys=conflicts,
        )
    mine = [c for c in changes if c.side == "local" or c.conflict and args.on_conflict == "local"]
    plan = {
        "write": [c.key for c in mine if c.local != "deleted"],
        "delete": [c.key for c in mine if c.local == "deleted"],
        "pull": [c.key for c in changes if c.side == "remote" or c.conflict and args.on_conflict == "remote"],
        "resolve": [c.key for c in changes if c.conflict and args.on_conflict == "newest"],
    }
    if args.json:
        print_json({**remote.fields(), "local": str(local), "dry_run": True, **plan})
        return 0
    if args.quiet:
        return 0
    if not changes or not (plan["write"] or plan["delete"] or plan["resolve"]):
        print(f"nothing to push: no local changes in {local} (nothing was pushed: --dry-run)")
    else:
        print(
            f"a push would write {count(len(plan['write']), 'key')} and delete {len(plan['delete']):,} "
            f"on {remote.location} (nothing was pushed: --dry-run)"
        )
    if plan["pull"]:
        print(f"it would pull in {count(len(plan['pull']), 'key')} others changed")
    if plan["resolve"]:
        print(f"it would keep the newest side of {count(len(plan['resolve']), 'key')} changed on both sides")
    print_keys([("write", plan["write"]), ("delete", plan["delete"]), ("pull", plan["pull"]),
                ("newest", plan["resolve"])], args.verbose)
    return 0


# -- pull ------------------------------------------------------------------------------------


def _pull(args: argparse.Namespace) -> int:
    local = pathlib.Path(args.local)
    if local.is_dir():
        raise CliError(
            LocalPathIsAFolderError,
            f"the local file {local} is a folder; LOCAL names a database file in it"
        )
    fresh = not local.exists()
    if fresh and args.remote is None:
        raise CliError(LocalFileNotFoundError, f"{local} does not exist: give the REMOTE to copy, as in "
                       f"'ebooklet pull REMOTE {local}'")
    if fresh:
        check_folder(local)
    remote = remote_for_local(args, local)
    if not remote.writable and args.on_conflict in ("local", "newest"):
        raise CliError(
            ReadOnlyError,
            f"{remote.location} is read-only, so local changes to conflicting keys could never be "
            "pushed: use --on-conflict remote"
        )
    loaded = None
    with handling_interrupts(), open_database(remote, local, "w" if remote.writable else "r", args) as db:
        try:
            result = db.changes().pull(args.on_conflict)
        except KeyboardInterrupt:
            if not stop_requested():
                raise
            raise CliError(
                KeyboardInterrupt,
                "interrupted: the pull did not complete. Run it again.", status=130,
                interrupted=True
            ) from None
        except (SyncError, RemoteNotFoundError) as exc:
            raise _gone(remote, local) or exc from None
        n_keys = len(db)
        if args.load:
            loaded = _load(args, db, local, result.commit)
    _report_pull(args, result, remote, local, fresh, n_keys, loaded)
    return 0


def _load(args: argparse.Namespace, db: EBooklet, local: pathlib.Path, commit: int | None) -> int:
    try:
        with progress_bar(args, "download") as bar:
            return db.load_items(progress=bar)
    except KeyboardInterrupt:
        if not stop_requested():
            raise
        raise CliError(
            KeyboardInterrupt,
            f"interrupted while fetching values: {local} is up to date with commit {commit or 0:,}, and "
            "values not fetched yet are fetched when first read. Run the pull --load again to fetch "
            "them all now.", status=130, interrupted=True,
        ) from None


def _report_pull(
    args: argparse.Namespace, result: Any, remote: RemoteArg, local: pathlib.Path, fresh: bool,
    n_keys: int, loaded: int | None,
) -> None:
    if args.json:
        print_json(
            {"remote": remote.location, "local": str(local), "created": fresh, **dataclasses.asdict(result),
             "n_keys": n_keys, "loaded": loaded}
        )
        return
    if args.quiet:
        return
    if fresh:
        at = f"{count(n_keys, 'key')} at commit {result.commit or 0:,}"
        print(f"created {local} from {remote.location}: {at}")
        if loaded is None:
            print("values are fetched when first read (pull --load fetches them all now)")
    else:
        updated, deleted = len(result.updated), len(result.deleted)
        if updated or deleted:
            print(f"{count(updated, 'key')} updated, {deleted:,} deleted from the remote "
                  f"(now at commit {result.commit or 0:,})")
        else:
            print(f"already up to date with {remote.location} (commit {result.commit or 0:,})")
        print_keys([("updated", result.updated), ("deleted", result.deleted)], args.verbose)
    if loaded is not None:
        print(f"fetched {count(loaded, 'value')}")


# -- discard ---------------------------------------------------------------------------------


def _discard(args: argparse.Namespace) -> int:
    local = existing_local(args.local, "there is nothing to discard")
    remote = remote_for_local(args, local)
    if not remote.writable:
        raise CliError(
            ReadOnlyError,
            f"{remote.location} is read-only, and so is every local copy of it: there are no "
            "local changes to discard"
        )
    with handling_interrupts(), open_database(remote, local, "w", args) as db:
        pending = [c.key for c in db.changes().iter_changes() if c.side in ("local", "both")]
        chosen = pending if args.keys is None else sorted(set(args.keys) & set(pending))
        if chosen and not args.yes:
            shown = ", ".join(show_key(k) for k in chosen[:5]) + (", ..." if len(chosen) > 5 else "")
            confirm(f"discard {count(len(chosen), 'local change')} in {local} ({shown})", "discard")
        discarded = db.changes().discard(chosen) if chosen else []
    if args.json:
        print_json({"remote": remote.location, "local": str(local), "discarded": discarded})
    elif not args.quiet:
        print(f"discarded {count(len(discarded), 'local change')} in {local}" if discarded
              else f"no local changes to discard in {local}")
        print_keys([("discarded", discarded)], args.verbose)
    return 0
