"""The commands that change a local file from the shell: put and del.

They write to LOCAL, offline, like any other writer; ``--push`` pushes right after. LOCAL
remembers its remote; ``--remote`` names one for a LOCAL that does not exist yet (it then
becomes a copy of the remote database, or a new one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from typing import Any

from ..db import EBooklet
from ..errors import (
    InvalidArgumentError,
    LocalFileNotFoundError,
    LocalPathIsAFolderError,
    ReadOnlyError,
    RemoteNotFoundError,
    SerializationError,
)
from ..info import remote_info
from .interrupt import handling_interrupts
from .local import open_database
from .output import CliError, count, print_json, show_key
from .parser import Commands
from .remote_arg import RemoteArg, remote_for_local
from .sync import push_changes, report_push

VALUES = """\
The value is VALUE, the file given with --file, or standard input (VALUE
omitted or '-'), taken byte for byte. How it is stored depends on the
database's serializer: raw bytes for 'bytes', text for 'str', and for every
other serializer (pickle, orjson, msgpack, ...) JSON, parsed into the value
('{"rain_mm": [0.2]}', '3', '"text"'); --text stores the text as a string.
"""


def register(commands: Commands) -> None:
    put = commands.add(
        "put", _put, "set a key in a local file",
        "Set KEY to a value in LOCAL (offline; --push pushes it right after).",
        ["conflict", "talk", "progress", "pickle", "json", "timeout", "lock", "s3"], remote=False,
        notes=VALUES,
    )
    put.add_argument("local", metavar="LOCAL", help="the local database file")
    put.add_argument("key", metavar="KEY", help="the key")
    put.add_argument("value", metavar="VALUE", nargs="?", help="the value (default: standard input)")
    put.add_argument("--file", metavar="PATH", help="take the value from this file")
    put.add_argument("--text", action="store_true", help="store the value as a string, not as JSON")
    _common(put)

    delete = commands.add(
        "del", _del, "delete keys in a local file",
        "Delete KEYs from LOCAL (offline; --push pushes the deletes right after).\n"
        "A key that does not exist is an error, and then nothing is deleted.",
        ["conflict", "talk", "progress", "pickle", "json", "timeout", "lock", "s3"], remote=False,
    )
    delete.add_argument("local", metavar="LOCAL", help="the local database file")
    delete.add_argument("keys", metavar="KEY", nargs="+", help="the keys")
    _common(delete)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--push", action="store_true", help="push LOCAL's changes right after")
    parser.add_argument("--remote", metavar="REMOTE",
                        help="the remote, for a LOCAL that does not exist yet (default: the one LOCAL "
                        "remembers)")
    parser.add_argument("--serializer", metavar="NAME",
                        help="how a new database stores values: bytes, str, orjson, pickle, msgpack, ...")
    parser.set_defaults(no_progress=False)


def _open(args: argparse.Namespace) -> tuple[EBooklet, RemoteArg, pathlib.Path]:
    local = pathlib.Path(args.local)
    if local.is_dir():
        raise CliError(
            LocalPathIsAFolderError,
            f"the local file {local} is a folder; LOCAL names a database file in it"
        )
    if not local.exists() and args.remote is None:
        raise CliError(
            LocalFileNotFoundError,
            f"{local} does not exist: name its remote with --remote REMOTE (an existing "
            "database is copied, a new one created)"
        )
    # Without --push the command works on LOCAL alone: S3 credentials are needed only if the
    # remote is read after all (a LOCAL that does not exist yet is copied from it).
    remote = remote_for_local(args, local, deferred=not args.push)
    if not remote.writable:
        raise CliError(
            ReadOnlyError,
            f"{remote.location} is read-only (a public URL): a local copy of it cannot be "
            "changed. Use s3://BUCKET/KEY (with credentials) or a folder remote"
        )
    if not local.exists() and args.serializer is None and remote_info(remote.remote()) is None:
        raise CliError(
            RemoteNotFoundError,
            f"there is no database at {remote.location} yet: to create one, choose how it stores "
            "values with --serializer (bytes, str, orjson, pickle, msgpack, ...)"
        )
    serializer = None if args.serializer in (None, "bytes") else args.serializer
    db = open_database(remote, local, "w" if local.exists() else "c", args, value_serializer=serializer)
    return db, remote, local


def _read_value(args: argparse.Namespace) -> bytes:
    if args.file is not None:
        if args.value is not None:
            raise CliError(InvalidArgumentError, "give the value once: as VALUE or with --file, not both")
        try:
            return pathlib.Path(args.file).read_bytes()
        except OSError as exc:
            raise CliError(InvalidArgumentError, f"cannot read {args.file}: {exc.strerror or exc}") from None
    if args.value is not None and args.value != "-":
        return args.value.encode()
    if sys.stdin.isatty():
        raise CliError(
            InvalidArgumentError,
            "no value: give VALUE, --file PATH, or pipe the value into standard input"
        )
    return sys.stdin.buffer.read()


def _decode(raw: bytes, serializer: str, text: bool, where: str) -> Any:
    if serializer == "bytes":
        return raw
    try:
        string = raw.decode()
    except UnicodeDecodeError:
        raise CliError(
            SerializationError,
            f"the value is not UTF-8 text, and {where} stores {serializer} values: store "
            "binary data in a database whose serializer is bytes"
        ) from None
    if serializer == "str" or text:
        return string
    try:
        return json.loads(string)
    except ValueError:
        raise CliError(
            SerializationError,
            f"the value is not JSON, and {where} stores {serializer} values: give it as JSON (e.g. "
            "'{\"rain_mm\": [0.2]}', '3' or '\"text\"'), or add --text to store it as a string"
        ) from None


def _put(args: argparse.Namespace) -> int:
    raw = _read_value(args)
    with handling_interrupts():
        db, remote, local = _open(args)
        with db:
            value = _decode(raw, db.value_serializer, args.text, str(local))
            try:
                db[args.key] = value
            except (TypeError, ValueError) as exc:
                raise CliError(
                    SerializationError,
                    f"the value cannot be stored with {db.value_serializer} ({exc})"
                ) from None
            result = push_changes(args, db, remote, local) if args.push else None
    _report(args, remote, local, f"set {show_key(args.key)}", {"set": args.key}, result)
    return 0


def _del(args: argparse.Namespace) -> int:
    with handling_interrupts():
        db, remote, local = _open(args)
        with db:
            missing = [key for key in args.keys if key not in db]
            if missing:
                shown = ", ".join(repr(k) for k in missing)
                raise CliError(KeyError, f"no key {shown} in {local}; nothing was deleted")
            for key in args.keys:
                del db[key]
            result = push_changes(args, db, remote, local) if args.push else None
    keys = args.keys
    what = f"deleted {show_key(keys[0])}" if len(keys) == 1 else f"deleted {count(len(keys), 'key')}"
    _report(args, remote, local, what, {"deleted": args.keys}, result)
    return 0


def _report(
    args: argparse.Namespace, remote: RemoteArg, local: pathlib.Path, what: str, data: dict[str, Any],
    result: Any,
) -> None:
    if result is not None:
        if args.json:
            print_json({"local": str(local), **data, "pushed": True,
                        "push": {**remote.fields(), **dataclasses.asdict(result)}})
            return
        if not args.quiet:
            print(f"{what} in {local}")
        report_push(args, result, remote, local)
        return
    if args.json:
        print_json({"local": str(local), **data, "pushed": False})
    elif not args.quiet:
        print(f"{what} in {local} (not pushed yet: 'ebooklet push {local}' pushes it)")
