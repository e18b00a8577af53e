"""The commands that read a database: keys, get, and head (which reads only the remote's head)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..errors import EbookletError, SerializationError
from ..info import remote_info
from .interrupt import handling_interrupts
from .local import CACHE_HELP, reader
from .output import CliError, bad_input, print_json, print_table, show_key, size
from .parser import COMMIT_HELP, Commands, commit_ref
from .remote_arg import no_database, remote_arg


def register(commands: Commands) -> None:
    keys = commands.add(
        "keys", _keys, "list the keys of a database",
        "List REMOTE's keys, sorted, one per line. REMOTE may be a local file:\n"
        "then its own keys are listed, unpushed changes included. A key that is not\n"
        "printable as it is (control characters, terminal escapes, line breaks,\n"
        "spaces at its ends) is shown as a Python string literal, unless --raw or\n"
        "--json is given.",
        ["local", "pickle", "json", "timeout", "s3"], notes=CACHE_HELP,
    )
    keys.add_argument("--prefix", default="", metavar="P", help="only the keys that start with P")
    keys.add_argument("--at", type=commit_ref, metavar="COMMIT", help=f"as at this commit: {COMMIT_HELP}")
    keys.add_argument("--raw", action="store_true",
                      help="print every key exactly as it is (for scripts; a key may then hold "
                      "line breaks or terminal escapes)")

    get = commands.add(
        "get", _get, "print the value of one key",
        "Print the value of KEY: bytes as they are, str as text, anything else as\n"
        "JSON (what 'ebooklet put' takes back), or as its Python repr when it has no\n"
        "JSON form. With --json, the value as JSON, a str included. A missing key is\n"
        "an error. REMOTE may be a local file: then its own value is shown, unpushed\n"
        "changes included.",
        ["local", "pickle", "json", "timeout", "s3"], notes=CACHE_HELP,
    )
    get.add_argument("key", metavar="KEY", help="the key")
    get.add_argument("--at", type=commit_ref, metavar="COMMIT", help=f"as at this commit: {COMMIT_HELP}")

    commands.add(
        "head", _head, "describe a remote database",
        "Read REMOTE's head object and describe the database: format version,\n"
        "commit, keys, value bytes, index parts, segments, serializer, last commit\n"
        "time and metadata (one small request: an object too large to be a head is\n"
        "refused without downloading it). Exits 1 when there is no database at REMOTE.",
        ["json", "s3"],
    )


def _keys(args: argparse.Namespace) -> int:
    with handling_interrupts(), reader(args) as db:
        keys = sorted(k for k in db.keys() if k.startswith(args.prefix))
    if args.json:
        print_json(keys)
    else:
        for key in keys:
            # Keys come from whoever can write to the remote: escape sequences in them would
            # reach the terminal, and a line break would forge output lines.
            print(key if args.raw else show_key(key))
    return 0


def _get(args: argparse.Namespace) -> int:
    with handling_interrupts(), reader(args) as db:
        try:
            value = db[args.key]
        except KeyError:
            at = f" at commit {args.at}" if args.at is not None else ""
            raise CliError(
                KeyError,
                f"no key {args.key!r} in {db.remote}{at}: 'ebooklet keys {args.remote}' lists its "
                "keys (--prefix P those that start with P)"
            ) from None
    if args.json:
        try:
            text = json.dumps(value, indent=2, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise CliError(
                SerializationError,
                f"the value of {args.key!r} cannot be shown as JSON ({exc}); leave out --json"
            ) from None
        print(text)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        sys.stdout.flush()
        sys.stdout.buffer.write(bytes(value))
        sys.stdout.buffer.flush()
    elif isinstance(value, str):
        print(value)
    else:
        print(_as_json(value))
    return 0


def _as_json(value: object) -> str:
    """JSON when the value has an exact JSON form (so that 'put' reads back the same value),
    else its repr."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
    return text if json.loads(text) == value else repr(value)


def _head(args: argparse.Namespace) -> int:
    remote = remote_arg(args)
    try:
        info = remote_info(remote.remote())
    except EbookletError:
        raise
    except (ValueError, TypeError, OSError) as exc:
        raise bad_input(exc) from None
    if info is None:
        raise no_database(remote)
    if args.json:
        data = {**dataclasses.asdict(info), **remote.fields()}
        data["committed_at"] = info.committed_at.isoformat()
        print_json(data)
        return 0
    print_table(
        [
            ("location", info.location),
            ("uuid", info.uuid),
            ("format version", str(info.format_version)),
            ("commit", str(info.commit)),
            ("committed at", info.committed_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("keys", f"{info.n_keys:,}"),
            ("value bytes", size(info.n_bytes)),
            ("index parts", f"{info.n_index_parts:,}"),
            ("segments", f"{info.n_segments:,}"),
            ("segment bytes", size(info.segment_bytes)),
            ("serializer", info.value_serializer or "none (raw bytes)"),
            ("metadata", "none" if info.metadata is None else json.dumps(info.metadata, ensure_ascii=False)),
        ]
    )
    return 0
