"""``ebooklet demo``: the full cycle, in Python, on a local folder remote (or ``--remote``)."""

from __future__ import annotations

import argparse
import pathlib
import tempfile
from typing import Any

from .. import __version__
from ..api import open as open_db
from ..errors import ConflictError, InvalidArgumentError, LocalFolderIsAFileError, ReadOnlyError
from ..info import remote_info
from ..remote.url import remote_location
from ..words import counted
from .output import CliError, print_json
from .parser import Commands
from .remote_arg import remote_arg


def register(commands: Commands) -> None:
    demo = commands.add("demo", _demo, "run the full cycle on a local folder remote", remote=False)
    demo.add_argument("--dir", help="a new or empty folder for the demo's files (default: a new temporary "
                      "folder)")
    demo.add_argument("--remote", metavar="REMOTE", help="run the demo on this remote instead of a folder "
                      "inside --dir (s3://, gs://, az://, as for every command); it is replaced")


def _demo(args: argparse.Namespace) -> int:
    """The full cycle on a local folder remote: push, lazy read, merge, pull, conflict."""
    workdir = pathlib.Path(args.dir) if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="ebooklet-demo-"))
    if workdir.is_dir() and any(workdir.iterdir()):
        raise CliError(
            InvalidArgumentError,
            f"{workdir} is not empty: the demo starts from nothing, in a new or empty folder. Give "
            "another --dir, or leave it out for a new temporary folder."
        )
    if workdir.exists() and not workdir.is_dir():
        raise CliError(
            LocalFolderIsAFileError,
            f"{workdir} is a file: --dir names a folder for the demo's files"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    remote: Any = workdir / "remote" / "stations.blt"
    # -q: nothing but errors; --json: one object at the end, for a program that checks the demo.
    say = print if not (args.quiet or args.json) else lambda *_: None

    say(f"ebooklet {__version__} demo in {workdir}")
    if args.remote:
        chosen = remote_arg(args, args.remote)
        if not chosen.writable:
            raise CliError(
                ReadOnlyError,
                f"{chosen.location} is read-only: the demo writes, so give s3://, gs://, az:// "
                "or a folder path as --remote"
            )
        remote = chosen.conn
        say(f"The remote is {remote_location(remote)}\n")
    else:
        say(f"The remote is a local folder: {remote.parent}\n")

    say("1. Alice creates a database and pushes 1,000 stations.")
    with open_db(remote, workdir / "alice.blt", "n", value_serializer="pickle") as alice:
        for i in range(1000):
            alice[f"station-{i:04d}"] = {"id": i, "lat": -41.2 + i / 1000, "rain_mm": [0.0] * 24}
        alice.set_metadata({"units": "mm", "owner": "alice"})
        result = alice.changes().push()
        say(f"   push: {result}\n")

    say("2. Bob opens the remote on a fresh local path. Keys are listed; values come lazily.")
    # Naming the serializer is Bob's consent to unpickle what the remote holds.
    with open_db(remote, workdir / "bob.blt", "w", value_serializer="pickle") as bob:
        say(f"   {len(bob)} keys, metadata {bob.get_metadata()}")
        before = bob.stats.requests
        say(f"   station-0042 = {bob['station-0042']['lat']:.3f} (lat), fetched with "
            f"{counted(bob.stats.requests - before, 'request')}")
        bob["station-0042"] = {**bob["station-0042"], "rain_mm": [1.5] * 24}
        del bob["station-0999"]
        say(f"   Bob's changes: {[str(c) for c in bob.changes().iter_changes()]}")
        say(f"   push: {bob.changes().push()}\n")

    say("3. Alice, offline meanwhile, edits another station, then pushes: ebooklet rebases.")
    with open_db(remote, workdir / "alice.blt", "w") as alice:
        alice["station-0001"] = {**alice["station-0001"], "rain_mm": [9.9] * 24}
        result = alice.changes().push()
        say(f"   push: {result}; Bob's keys pulled in: {result.pulled}")
        say(f"   Alice now sees station-0042 rain {alice['station-0042']['rain_mm'][0]} and "
            f"station-0999 {'present' if 'station-0999' in alice else 'deleted'}\n")

    say("4. Both edit station-0007. Bob pushes first; Alice's push is refused.")
    with open_db(remote, workdir / "bob.blt", "w") as bob:
        bob.changes().pull()
        bob["station-0007"] = {**bob["station-0007"], "rain_mm": [2.0] * 24}
        say(f"   Bob's push: {bob.changes().push()}")
    with open_db(remote, workdir / "alice.blt", "w") as alice:
        alice["station-0007"] = {**alice["station-0007"], "rain_mm": [3.0] * 24}
        try:
            alice.changes().push()
        except ConflictError as exc:
            say(f"   ConflictError: {exc}")
        result = alice.changes().push(on_conflict="newest")
        say(f"   push(on_conflict='newest'): {result}")
        say(f"   station-0007 rain is now {alice['station-0007']['rain_mm'][0]}\n")

    say("5. A reader with only the remote's location, on a fresh path, sees the final state.")
    with open_db(remote, workdir / "reader.blt", "r", value_serializer="pickle") as reader:
        reader.load_items()
        rain = {k: v["rain_mm"][0] for k, v in reader.items() if v["rain_mm"][0]}
        say(f"   {len(reader)} stations; those with rain: {rain}")
    say("\nDone. Everything the demo wrote is in " + str(workdir))
    if args.json:
        info = remote_info(remote)
        print_json({"dir": str(workdir), "remote": remote.absolute().as_uri(), "commit": info and info.commit,
                    "keys": info and info.n_keys})
    return 0
