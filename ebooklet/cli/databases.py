"""The commands on whole remote databases: init (make one), ls (list those under a prefix),
cp and rm."""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import pathlib
import tempfile
import urllib.parse

from ..api import open as open_db
from ..errors import (
    InvalidArgumentError,
    LocalFileExistsError,
    NotSupportedError,
    ReadOnlyError,
    RemoteExistsError,
    RemoteFormatError,
    RemoteNotFoundError,
)
from ..info import RemoteInfo, remote_info
from ..local import STATE_FILE
from ..remote import Remote, S3Connection, Transport
from ..remote.fs import FolderTransport
from .interrupt import StoppableTransport, handling_interrupts
from .local import open_database
from .output import CliError, confirm, count, human_bytes, print_json, show_key
from .parser import Commands
from .remote_arg import check_credentials, location_fields, no_database, remote_arg, s3_options

LS_HELP = """\
PREFIX is where to look:
  s3://BUCKET[/PREFIX]  the keys of a bucket that start with PREFIX
  file:///PATH, PATH    a folder (and the folders inside it)
A public URL cannot be listed.
"""

SERIALIZERS = """\
Serializers: orjson or msgpack for JSON-like values (what 'ebooklet put'
takes), str for text, bytes for raw bytes, pickle for any Python object
(reading it runs code from whoever can write to REMOTE: readers must trust it).
"""

#: Heads read at once by ``ls``.
LS_THREADS = 8


def register(commands: Commands) -> None:
    init = commands.add(
        "init", _init, "create a database and its local file",
        "Create a new, empty database at REMOTE (commit 1) and LOCAL, a local file\n"
        "synced with it, ready for 'ebooklet put LOCAL KEY VALUE' and 'ebooklet push\n"
        "LOCAL'. --serializer says how values are stored. To work on a database that\n"
        "exists, copy it with 'ebooklet pull REMOTE LOCAL' instead.",
        ["timeout", "lock", "s3"], notes=SERIALIZERS,
    )
    init.add_argument("local", metavar="LOCAL", help="the local file to create")
    init.add_argument("--serializer", metavar="NAME", required=True,
                      help="how values are stored: orjson, msgpack, str, bytes, pickle, ...")

    ls = commands.add(
        "ls", _ls, "list the databases under a prefix",
        "List the ebooklet databases under PREFIX, one per line: where it is (as\n"
        "REMOTE for the other commands), its last commit, keys, value bytes and when\n"
        "it was last committed. It lists the objects under PREFIX and reads each\n"
        "database's head.",
        ["json", "s3"], remote=False, notes=LS_HELP,
    )
    ls.add_argument("prefix", metavar="PREFIX", help="an s3:// bucket and prefix, or a folder")

    cp = commands.add(
        "cp", _cp, "copy a remote database",
        "Copy the database at REMOTE, as committed now, to TARGET (another key,\n"
        "bucket or folder). Objects are copied inside the store when both are on the\n"
        "same S3 endpoint; the copy's head is written last, so nobody sees half a\n"
        "copy. The copy is a new database (its own uuid).",
        ["json", "s3"],
    )
    cp.add_argument("target", metavar="TARGET", help="where the copy goes (a REMOTE that can be written)")
    cp.add_argument("--overwrite", action="store_true", help="replace a database already at TARGET")
    cp.add_argument("--target-profile", metavar="NAME", help="the AWS profile of an s3:// TARGET on "
                    "another store than REMOTE: its credentials, region and endpoint (REMOTE keeps "
                    "--profile)")
    cp.add_argument("--target-endpoint-url", metavar="URL", help="the S3 endpoint of an s3:// TARGET, "
                    "when it differs from REMOTE's")

    rm = commands.add(
        "rm", _rm, "delete a remote database",
        "Delete the database at REMOTE for everyone: its head first (readers see it\n"
        "gone at once), then every object under its prefix. Local copies are kept.\n"
        "This cannot be undone; on a terminal it asks first, elsewhere it needs --yes.",
        ["json", "lock", "s3"],
    )
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


# -- init ------------------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    remote = remote_arg(args)
    local = pathlib.Path(args.local)
    if not remote.writable:
        raise CliError(
            ReadOnlyError,
            f"cannot create a database at {remote.location}: a public URL is read-only; use "
            "s3://BUCKET/KEY (with credentials) or a folder"
        )
    if local.exists():
        raise CliError(
            LocalFileExistsError,
            f"{local} already exists: init makes a new local file; give another LOCAL"
        )
    with handling_interrupts():
        existing = remote_info(remote.remote())
        if existing is not None:
            raise CliError(
                RemoteExistsError,
                f"{remote.location} already holds a database (commit {existing.commit:,}, "
                f"{count(existing.n_keys, 'key')}): 'ebooklet pull {remote.text} {local}' makes a local copy"
            )
        serializer = None if args.serializer == "bytes" else args.serializer
        with open_database(remote, local, "c", args, value_serializer=serializer) as db:
            result = db.changes().push()
    if args.json:
        print_json({**remote.fields(), "local": str(local), "commit": result.commit,
                    "serializer": args.serializer})
    elif not args.quiet:
        print(f"created {remote.location} (commit {result.commit:,}, serializer {args.serializer}) and "
              f"{local}, synced with it: 'ebooklet put {local} KEY VALUE', then 'ebooklet push {local}'")
    return 0


# -- ls --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Place:
    """Where ``ls`` looks: a transport, a key prefix, and how to name a database found there."""

    transport: Transport
    prefix: str
    #: The REMOTE text of a database is ``base + key``.
    base: str
    #: Its location (as in messages) is ``where.format(key)``.
    where: str

    def remote(self, key: str) -> str:
        return self.base + key

    def location(self, key: str) -> str:
        return self.where.format(key)


def _place(args: argparse.Namespace) -> _Place:
    text = args.prefix
    parts = urllib.parse.urlsplit(text)
    if parts.scheme in ("http", "https"):
        raise CliError(
            NotSupportedError,
            f"{text} is a public URL, which cannot be listed: list s3://BUCKET/PREFIX (with "
            "credentials) or a folder"
        )
    if parts.scheme == "s3":
        bucket, _, prefix = text[len("s3://"):].partition("/")
        if not bucket:
            raise CliError(InvalidArgumentError, f"{text!r} must name a bucket, e.g. s3://my-bucket or s3://my-bucket/data/")
        options = s3_options(args)
        # A connection to the bucket; its db_key is never read by a listing.
        conn = S3Connection(
            options.access_key_id, None, "(listing)", bucket, region=options.region,
            endpoint_url=options.endpoint_url, retries=options.retries, profile=options.profile,
        )
        check_credentials(text, conn)
        endpoint = conn.endpoint_url or "aws"
        return _Place(conn.transport(), prefix, f"s3://{bucket}/", f"s3://{bucket}/{{}} ({endpoint})")
    path = pathlib.Path(urllib.parse.unquote(parts.path) if parts.scheme == "file" else text)
    if not path.is_dir():
        raise CliError(
            InvalidArgumentError,
            f"{text} is not a folder: ls lists the databases in a folder or under an s3:// prefix"
        )
    base = "" if text in (".", "./") else text.rstrip("/") + "/"
    return _Place(FolderTransport(path), "", base, path.absolute().as_uri().rstrip("/") + "/{}")


def _ls(args: argparse.Namespace) -> int:
    place = _place(args)
    found: list[tuple[str, RemoteInfo | None]] = []
    with handling_interrupts():
        keys = set(place.transport.list(place.prefix))
        # A database is a head object with objects under its prefix, {db_key}.ebooklet/; a
        # local file has its sync state there instead.
        state = f".ebooklet/{STATE_FILE}"
        heads = sorted(
            {k.split(".ebooklet/", 1)[0] for k in keys if ".ebooklet/" in k} & keys
            - {k[: -len(state)] for k in keys if k.endswith(state)}
        )

        def describe(key: str) -> tuple[str, RemoteInfo | None]:
            shared = StoppableTransport(place.transport, key)
            shared.close = lambda: None  # type: ignore[method-assign] # one transport for every head
            try:
                return key, remote_info(Remote(shared, key, place.location(key)))
            except (RemoteNotFoundError, RemoteFormatError):
                return key, None  # deleted since the listing, or not a database

        with concurrent.futures.ThreadPoolExecutor(LS_THREADS) as pool:
            found = [(k, info) for k, info in pool.map(describe, heads) if info is not None]
    place.transport.close()
    if args.json:
        print_json([{**_info_json(info), "remote": place.remote(k)} for k, info in found if info])
        return 0
    if not found:
        print(f"no ebooklet databases under {args.prefix}")
        return 0
    rows = [("DATABASE", "COMMIT", "KEYS", "SIZE", "COMMITTED")] + [
        (show_key(place.remote(k)), f"{info.commit:,}", f"{info.n_keys:,}", human_bytes(info.n_bytes),
         info.committed_at.strftime("%Y-%m-%d %H:%M UTC"))
        for k, info in found if info
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        numbers = [cell.rjust(w) for cell, w in zip(row[1:4], widths[1:4], strict=True)]
        cells = [row[0].ljust(widths[0]), *numbers]
        print("  ".join(cells + [row[4]]))
    print(f"{count(len(found), 'database')} under {args.prefix}")
    return 0


def _info_json(info: RemoteInfo) -> dict[str, object]:
    data = {**dataclasses.asdict(info), **location_fields(info.location)}
    data["committed_at"] = info.committed_at.isoformat()
    return data


# -- cp and rm -------------------------------------------------------------------------------


def _cp(args: argparse.Namespace) -> int:
    source = remote_arg(args)
    target = remote_arg(_target_options(args), args.target)
    if not target.writable:
        raise CliError(ReadOnlyError, f"cannot copy to {target.location}: a public URL is read-only; copy to "
                       "s3://BUCKET/KEY (with credentials) or to a folder")
    if source.location == target.location:
        raise CliError(
            InvalidArgumentError,
            f"{source.location} is both the source and the target: give another TARGET"
        )
    with handling_interrupts():
        existing = remote_info(target.remote())
        if existing is not None and not args.overwrite:
            raise CliError(
                RemoteExistsError,
                f"{target.location} already holds a database (commit {existing.commit:,}, "
                f"{count(existing.n_keys, 'key')}): add --overwrite to replace it"
            )
        with tempfile.TemporaryDirectory(prefix="ebooklet-cp-") as tmp:
            try:
                db = open_db(source.remote(), pathlib.Path(tmp) / "source.blt", "r")
            except RemoteNotFoundError:
                raise no_database(source) from None
            with db:
                info = db.copy_remote(target.remote(), overwrite=args.overwrite)
    if args.json:
        print_json({"source": source.fields(), **_info_json(info)})
    else:
        print(f"copied {source.location} to {info.location}: commit {info.commit:,}, "
              f"{count(info.n_keys, 'key')}, {human_bytes(info.n_bytes)}")
    return 0


def _target_options(args: argparse.Namespace) -> argparse.Namespace:
    """The S3 options of TARGET: REMOTE's, unless --target-profile or --target-endpoint-url
    names another store (a profile brings its own credentials, so REMOTE's key id is dropped)."""
    if not (args.target_profile or args.target_endpoint_url):
        return args
    target = argparse.Namespace(**vars(args))
    if args.target_profile:
        target.profile, target.access_key_id, target.region = args.target_profile, None, None
        target.endpoint_url = None
    if args.target_endpoint_url:
        target.endpoint_url = args.target_endpoint_url
    return target


def _rm(args: argparse.Namespace) -> int:
    remote = remote_arg(args)
    if not remote.writable:
        raise CliError(
            ReadOnlyError,
            f"cannot delete {remote.location}: a public URL is read-only; delete it through "
            "s3://BUCKET/KEY (with credentials)"
        )
    with handling_interrupts():
        info = remote_info(remote.remote())
        if info is None:
            raise no_database(remote)
        if not args.yes:
            confirm(f"delete {remote.location} for everyone (commit {info.commit:,}, "
                    f"{count(info.n_keys, 'key')}, {human_bytes(info.n_bytes)})", "rm")
        with tempfile.TemporaryDirectory(prefix="ebooklet-rm-") as tmp:
            # 'n' reads nothing at open: the remote is only deleted, never replaced.
            with open_db(remote.remote(), pathlib.Path(tmp) / "rm.blt", "n", lock_wait=args.lock_wait) as db:
                deleted = db.delete_remote()
    if args.json:
        print_json({"deleted": remote.location, **remote.fields(), "objects": deleted})
    else:
        print(f"deleted {remote.location}: {count(deleted, 'object')}")
    return 0
