"""The ``ebooklet`` command line.

::

    ebooklet status REMOTE LOCAL     what differs between a local file and its remote
    ebooklet push REMOTE LOCAL       commit the local changes to the remote
    ebooklet pull REMOTE LOCAL       bring in what others pushed
    ebooklet keys REMOTE             list the keys
    ebooklet get REMOTE KEY          print one value
    ebooklet head REMOTE             describe the remote database
    ebooklet demo                    the full cycle on a local folder remote

Expected failures (every :class:`ebooklet.EbookletError`, bad arguments given to
:func:`ebooklet.open`) print one line ``ebooklet: error: <message>`` and exit 1; usage errors
exit 2 and an interrupt exits 130. See docs/cli.rst.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import portalocker

from . import __version__
from .api import open as open_db
from .db import EBooklet
from .errors import ConflictError, EbookletError, RemoteNotFoundError, SyncError
from .info import remote_info
from .remote import RemoteConn, S3Connection
from .results import Progress

#: How many keys ``push`` and ``pull`` list before summing up the rest (``--verbose``: all).
SHOWN_KEYS = 20
#: Seconds between two redraws of the progress bar, and before the first one.
PROGRESS_INTERVAL = 0.1
PROGRESS_DELAY = 0.5
CONFLICT_POLICIES = ("local", "remote", "newest")


class CliError(Exception):
    """An expected failure: printed as ``ebooklet: error: <message>``, exit status 1."""


# -- remotes ---------------------------------------------------------------------------------


@dataclasses.dataclass
class RemoteArg:
    """A REMOTE argument, resolved."""

    conn: RemoteConn
    #: Shown in messages (never includes credentials).
    location: str
    #: Identifies the database for the read cache.
    cache_key: str
    writable: bool
    #: A folder path given as REMOTE (for hints when it names a folder, not a database).
    path: pathlib.Path | None = None


def parse_remote(text: str, args: argparse.Namespace) -> RemoteArg:
    """Turn REMOTE (``s3://``, ``http(s)://``, ``file://`` or a folder path) into a connection."""
    if not text:
        raise CliError("REMOTE is empty: give s3://BUCKET/KEY, an https:// URL, or a path")
    scheme = urllib.parse.urlsplit(text).scheme.lower()
    if scheme == "s3":
        return _s3_remote(text, args)
    if scheme in ("http", "https"):
        if not urllib.parse.urlsplit(text).path.rsplit("/", 1)[-1]:
            raise CliError(f"{text} must be the URL of the database object, not end with '/'")
        return RemoteArg(text, text, text, writable=False)
    if scheme == "file":
        parts = urllib.parse.urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise CliError(f"{text} must be a local file URL (file:///path/to/db)")
        path = pathlib.Path(urllib.parse.unquote(parts.path)).absolute()
    elif len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        raise CliError(
            f"unsupported remote {text!r}: use s3://BUCKET/KEY, an http(s):// URL, file:///PATH "
            "or a folder path"
        )
    else:
        path = pathlib.Path(text).absolute()
    if not path.name or text.endswith(("/", os.sep)):
        raise CliError(f"the remote path {text!r} must name the database inside a folder, e.g. {text}db.blt")
    return RemoteArg(path, path.as_uri(), path.as_uri(), writable=True, path=path)


def _s3_remote(text: str, args: argparse.Namespace) -> RemoteArg:
    bucket, _, key = text[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise CliError(f"{text!r} must name a bucket and an object key, e.g. s3://my-bucket/data/db.blt")
    key_id = args.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (key_id and secret):
        needed = (("AWS_ACCESS_KEY_ID (or --access-key-id)", key_id), ("AWS_SECRET_ACCESS_KEY", secret))
        missing = " and ".join(name for name, value in needed if not value)
        raise CliError(
            f"no credentials for {text}: set {missing} in the environment; to read a public "
            "database without credentials, give its https:// URL instead"
        )
    env = os.environ
    endpoint = args.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint and urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        raise CliError(f"the endpoint {endpoint!r} must be an http:// or https:// URL")
    region = args.region or env.get("AWS_REGION")
    conn = S3Connection(
        key_id, secret, key, bucket, endpoint_url=endpoint, region=region, retries=args.retries
    )
    return RemoteArg(
        conn,
        f"s3://{bucket}/{key} ({endpoint or 'aws'})",
        f"s3://{bucket}/{key}@{endpoint or 'aws'}",
        writable=True,
    )


def _remote(args: argparse.Namespace) -> RemoteArg:
    return parse_remote(args.remote, args)


def _one_line(message: str) -> str:
    return " ".join(message.split("\n"))


def _bad_input(exc: Exception) -> CliError:
    return CliError(_one_line(str(exc)) or type(exc).__name__)


def _no_database(remote: RemoteArg) -> CliError:
    hint = ""
    if remote.path is not None and remote.path.is_dir():
        example = remote.path / "db.blt"
        hint = f" ({remote.path} is a folder; a folder remote names the database inside it, e.g. {example})"
    return CliError(f"no ebooklet database at {remote.location}{hint}")


def open_database(remote: RemoteArg, local: pathlib.Path, flag: str) -> EBooklet:
    """:func:`ebooklet.open`, with bad input turned into :class:`CliError`."""
    try:
        return open_db(remote.conn, local, flag)
    except RemoteNotFoundError:
        if not local.exists():  # neither side has a database
            raise _no_database(remote) from None
        raise
    except EbookletError:
        raise
    except (ValueError, TypeError, OSError) as exc:
        raise _bad_input(exc) from None


def _existing_local(path: str, why: str) -> pathlib.Path:
    local = pathlib.Path(path)
    if local.is_dir():
        raise CliError(f"the local file {local} is a folder; LOCAL names a database file in it")
    if not local.exists():
        raise CliError(f"the local file {local} does not exist; {why}")
    return local


# -- the read cache --------------------------------------------------------------------------


def cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/ebooklet`` (``~/.cache/ebooklet`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = pathlib.Path(base) if os.path.isabs(base) else pathlib.Path.home() / ".cache"
    return root / "ebooklet"


def cache_path(remote: RemoteArg) -> pathlib.Path:
    """The cache file of a remote: named from a hash of where the database lives."""
    digest = hashlib.sha256(remote.cache_key.encode()).hexdigest()[:32]
    return cache_dir() / f"{digest}.blt"


def _drop_cache(path: pathlib.Path) -> None:
    path.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".ebooklet"), ignore_errors=True)


@contextlib.contextmanager
def reader(args: argparse.Namespace) -> Iterator[EBooklet]:
    """The database for a read command: through ``--local``, or the cache (pulled first)."""
    remote = _remote(args)
    if args.local:
        with open_database(remote, pathlib.Path(args.local), "r") as db:
            yield db
        return
    path = cache_path(remote)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")
    except OSError as exc:
        raise CliError(f"cannot use the cache folder {path.parent}: {exc.strerror or exc}") from None
    # One command at a time per cache file: two could otherwise both create it.
    with lock:
        portalocker.lock(lock, portalocker.LOCK_EX)
        with _cached(remote, path) as db:
            yield db


@contextlib.contextmanager
def _cached(remote: RemoteArg, path: pathlib.Path) -> Iterator[EBooklet]:
    db = open_database(remote, path, "r")
    try:
        db.changes().pull()
    except (SyncError, RemoteNotFoundError):
        # The database was deleted or replaced since the cache was filled: start afresh.
        db.close()
        _drop_cache(path)
        db = open_database(remote, path, "r")
    except BaseException:
        db.close()
        raise
    with db:
        yield db


# -- output ----------------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``12.0 MiB``..."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def _size(n: int) -> str:
    """``42 bytes``, ``268,475 bytes (262.2 KiB)``."""
    return f"{n:,} bytes" if n < 1024 else f"{n:,} bytes ({human_bytes(n)})"


def _show_key(key: str) -> str:
    """A key as it is, unless it would break the one-line-per-key layout."""
    return key if key.isprintable() and key.strip() == key and key else repr(key)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _print_keys(rows: list[tuple[str, list[str]]], verbose: bool) -> None:
    """``  label  key`` lines, at most SHOWN_KEYS of them unless verbose."""
    width = max((len(label) for label, keys in rows if keys), default=0)
    shown = 0
    total = sum(len(keys) for _, keys in rows)
    for label, keys in rows:
        for key in keys:
            if not verbose and shown == SHOWN_KEYS:
                print(f"  ... and {total - shown:,} more (--verbose lists them all)")
                return
            print(f"  {label:<{width}}  {_show_key(key)}")
            shown += 1


def _table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


# -- the progress bar ------------------------------------------------------------------------


def render_progress(p: Progress, width: int = 80) -> str:
    """One line describing a transfer, at most ``width`` characters.

    The layout does not shift as the numbers grow, so redraws do not jitter.

    >>> render_progress(Progress("upload", 250, 1000, 512 * 1024, 2 * 1024 * 1024), 80)
    'pushing   [#####...............]  25%   512.0 KiB /    2.0 MiB    250/1,000 keys'
    """
    verb = "pushing" if p.phase == "upload" else "fetching"
    if p.bytes_total > 0:
        fraction = p.bytes_done / p.bytes_total
    elif p.keys_total > 0:
        fraction = p.keys_done / p.keys_total
    else:
        fraction = 1.0
    fraction = min(max(fraction, 0.0), 1.0)
    total_keys = f"{p.keys_total:,}"
    stats = (
        f"{int(fraction * 100):3d}%  {human_bytes(p.bytes_done):>10} / {human_bytes(p.bytes_total):>10}  "
        f"{p.keys_done:>{len(total_keys)},}/{total_keys} keys"
    )
    bar_width = min(20, width - len("fetching") - len(stats) - 5)
    if bar_width < 5:
        return f"{verb} {' '.join(stats.split())}"[:width]
    filled = int(fraction * bar_width)
    return f"{verb:<8}  [{'#' * filled}{'.' * (bar_width - filled)}] {stats}"


class ProgressBar:
    """A ``progress=`` callback that redraws one line of ``stream`` with ``\\r``.

    Thread-safe (callbacks come from ebooklet's transfer threads). Nothing is drawn during
    the first ``delay`` seconds, so quick transfers leave no trace; then at most one redraw
    per ``interval``. :meth:`close` draws the last state and ends the line.
    """

    def __init__(
        self,
        stream: IO[str],
        width: int | None = None,
        interval: float = PROGRESS_INTERVAL,
        delay: float = PROGRESS_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.width = width or max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        self.interval = interval
        self.clock = clock
        self._start = clock()
        self._delay = delay
        self._lock = threading.Lock()
        self._last_draw: float | None = None
        self._last_len = 0
        self._pending: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            now = self.clock()
            self._pending = progress
            if now - self._start < self._delay:
                return
            if self._last_draw is not None and now - self._last_draw < self.interval:
                return
            self._draw(now)

    def _draw(self, now: float) -> None:
        assert self._pending is not None
        line = render_progress(self._pending, self.width)
        self._write("\r" + line + " " * max(0, self._last_len - len(line)))
        self._last_len = len(line)
        self._last_draw = now
        self._pending = None

    def _write(self, text: str) -> None:
        # A closed or broken terminal must not fail the transfer the bar reports on.
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._last_draw is None:
                return  # never shown: leave no trace
            if self._pending is not None:
                self._draw(self.clock())
            self._write("\n")
            self._last_draw = None


@contextlib.contextmanager
def progress_bar(args: argparse.Namespace) -> Iterator[ProgressBar | None]:
    """A bar on stderr when it is a terminal and ``--no-progress`` was not given."""
    if args.no_progress or not sys.stderr.isatty():
        yield None
        return
    bar = ProgressBar(sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


# -- commands --------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    remote = _remote(args)
    local = _existing_local(args.local, f"'ebooklet pull {args.remote} {args.local}' makes a copy there")
    with open_database(remote, local, "r") as db:
        changes = list(db.changes().iter_changes())
    sides = {side: sum(c.side == side for c in changes) for side in ("local", "remote", "both")}
    conflicts = sum(c.conflict for c in changes)
    if args.json:
        _print_json(
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
        (c.side, c.local or "-", c.remote or "-", _show_key(c.key) + ("  CONFLICT" if c.conflict else ""))
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
    remote = _remote(args)
    if not remote.writable:
        raise CliError(
            f"cannot push to {remote.location}: a public URL is read-only; push to "
            "s3://BUCKET/KEY (with credentials) or to a folder"
        )
    local = _existing_local(args.local, "there is nothing to push")
    with open_database(remote, local, "w") as db:
        with progress_bar(args) as bar:
            result = db.changes().push(args.on_conflict, progress=bar)
    if args.json:
        _print_json({"remote": remote.location, "local": str(local), **dataclasses.asdict(result)})
        return 0
    if result.committed:
        print(result)
    else:
        print(f"nothing to push: no local changes in {local}")
    if result.pulled:
        print(f"pulled in {len(result.pulled):,} key(s) others changed meanwhile")
    rows = [("written", result.keys), ("deleted", result.deleted), ("pulled", result.pulled)]
    _print_keys(rows, args.verbose)
    return 0


def _pull(args: argparse.Namespace) -> int:
    remote = _remote(args)
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
    with open_database(remote, local, "w" if remote.writable else "r") as db:
        result = db.changes().pull(args.on_conflict)
        n_keys = len(db)
        if args.load:
            with progress_bar(args) as bar:
                loaded = db.load_items(progress=bar)
    if args.json:
        _print_json(
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
        _print_keys([("updated", result.updated), ("deleted", result.deleted)], args.verbose)
    if loaded is not None:
        print(f"fetched {loaded:,} value(s)")
    return 0


def _keys(args: argparse.Namespace) -> int:
    with reader(args) as db:
        keys = sorted(k for k in db.keys() if k.startswith(args.prefix))
    if args.json:
        _print_json(keys)
    else:
        for key in keys:
            print(key)
    return 0


def _get(args: argparse.Namespace) -> int:
    with reader(args) as db:
        try:
            value = db[args.key]
        except KeyError:
            raise CliError(f"no key {args.key!r} in {db.remote}") from None
    if args.json:
        try:
            text = json.dumps(value, indent=2, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise CliError(
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
        print(repr(value))
    return 0


def _head(args: argparse.Namespace) -> int:
    remote = _remote(args)
    try:
        info = remote_info(remote.conn)
    except EbookletError:
        raise
    except (ValueError, TypeError, OSError) as exc:
        raise _bad_input(exc) from None
    if info is None:
        raise _no_database(remote)
    if args.json:
        data = dataclasses.asdict(info)
        data["committed_at"] = info.committed_at.isoformat()
        _print_json(data)
        return 0
    _table(
        [
            ("location", info.location),
            ("uuid", info.uuid),
            ("format version", str(info.format_version)),
            ("commit", str(info.commit)),
            ("committed at", info.committed_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("keys", f"{info.n_keys:,}"),
            ("value bytes", _size(info.n_bytes)),
            ("index parts", f"{info.n_index_parts:,}"),
            ("segments", f"{info.n_segments:,}"),
            ("segment bytes", _size(info.segment_bytes)),
            ("serializer", info.value_serializer or "none (raw bytes)"),
            ("metadata", "none" if info.metadata is None else json.dumps(info.metadata, ensure_ascii=False)),
        ]
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The full cycle on a local folder remote: push, lazy read, merge, pull, conflict."""
    workdir = pathlib.Path(args.dir) if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="ebooklet-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    remote = workdir / "remote" / "stations.blt"
    say = print

    say(f"ebooklet {__version__} demo in {workdir}")
    say(f"The remote is a local folder: {remote.parent}\n")

    say("1. Alice creates a database and pushes 1,000 stations.")
    with open_db(remote, workdir / "alice.blt", "n", value_serializer="pickle") as alice:
        for i in range(1000):
            alice[f"station-{i:04d}"] = {"id": i, "lat": -41.2 + i / 1000, "rain_mm": [0.0] * 24}
        alice.set_metadata({"units": "mm", "owner": "alice"})
        result = alice.changes().push()
        say(f"   push: {result}\n")

    say("2. Bob opens the remote on a fresh local path. Keys are listed; values come lazily.")
    with open_db(remote, workdir / "bob.blt", "w") as bob:
        stats = bob._remote.transport.stats
        say(f"   {len(bob)} keys, metadata {bob.get_metadata()}")
        before = stats.requests
        say(f"   station-0042 = {bob['station-0042']['lat']:.3f} (lat), fetched with "
            f"{stats.requests - before} request(s)")
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
        bob.changes().push()
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
    with open_db(remote, workdir / "reader.blt", "r") as reader:
        reader.load_items()
        rain = {k: v["rain_mm"][0] for k, v in reader.items() if v["rain_mm"][0]}
        say(f"   {len(reader)} stations; those with rain: {rain}")
    say("\nDone. Everything the demo wrote is in " + str(workdir))
    return 0


# -- the parser ------------------------------------------------------------------------------

REMOTE_HELP = """\
REMOTE is where the database lives:
  s3://BUCKET/KEY     an S3 object. The endpoint comes from --endpoint-url,
                      $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL (default: AWS),
                      the credentials from $AWS_ACCESS_KEY_ID (or
                      --access-key-id) and $AWS_SECRET_ACCESS_KEY
  https://HOST/PATH   a public URL of the database (read-only)
  file:///PATH, PATH  a database named inside a local folder (no server needed)
"""

CACHE_HELP = """\
Without --local, the database is read through a cache file in
$XDG_CACHE_HOME/ebooklet/ (default ~/.cache/ebooklet/) named from a hash of
the remote's location. It is brought up to date with the remote first (one
small request when nothing changed), and values fetched once are reused.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=26)

    def _format_action(self, action: argparse.Action) -> str:
        text = super()._format_action(action)
        if isinstance(action, argparse._SubParsersAction):
            # Drop the "COMMAND" line argparse puts above the list of commands.
            text = text.split("\n", 1)[1]
        return text


def _parents() -> dict[str, argparse.ArgumentParser]:
    s3 = argparse.ArgumentParser(add_help=False)
    group = s3.add_argument_group("S3 options (for s3:// remotes)")
    group.add_argument("--endpoint-url", metavar="URL",
                       help="the S3 endpoint (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, or AWS)")
    group.add_argument("--access-key-id", metavar="ID",
                       help="the access key id (default: $AWS_ACCESS_KEY_ID); the secret is only read "
                       "from $AWS_SECRET_ACCESS_KEY")
    group.add_argument("--region",
                       help="the signing region (default: $AWS_REGION, $AWS_DEFAULT_REGION or us-east-1)")
    group.add_argument("--retries", type=_positive_int, default=3, metavar="N",
                       help="attempts per request before giving up (default: 3)")
    json_ = argparse.ArgumentParser(add_help=False)
    json_.add_argument("--json", action="store_true", help="print JSON for programs instead of text")
    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument("--no-progress", action="store_true",
                          help="never show the progress bar (shown on stderr when it is a terminal)")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true",
                         help=f"list every key (default: the first {SHOWN_KEYS})")
    conflict = argparse.ArgumentParser(add_help=False)
    conflict.add_argument("--on-conflict", choices=CONFLICT_POLICIES, metavar="{local,remote,newest}",
                          help="for keys changed on both sides, keep the local side, the remote side, or "
                          "the side changed last (default: stop with an error, changing nothing)")
    local = argparse.ArgumentParser(add_help=False)
    local.add_argument("--local", metavar="PATH",
                       help="read through this local file (made if missing) instead of the cache; it is "
                       "not pulled first, so it shows its own unpushed changes")
    return {"s3": s3, "json": json_, "progress": progress, "verbose": verbose, "conflict": conflict,
            "local": local}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebooklet",
        description="A local-first key-value database that syncs with S3.",
        epilog=REMOTE_HELP + "\nRun 'ebooklet COMMAND --help' for a command's options. Errors exit 1, "
        "usage errors 2.",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"ebooklet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    p = _parents()

    def command(name: str, help: str, description: str, parents: list[str], epilog: str = REMOTE_HELP) -> Any:
        return sub.add_parser(
            name, help=help, description=description, epilog=epilog, formatter_class=_Formatter,
            parents=[p[k] for k in parents], allow_abbrev=False,
        )

    status = command(
        "status", "show what differs between a local file and its remote",
        "Show the keys that differ between LOCAL and REMOTE since they were last\n"
        "synced: one line per key with the side that changed it (local, remote or\n"
        "both) and how (added, modified, deleted), then a summary. Keys changed on\n"
        "both sides to different values are CONFLICTs.",
        ["json", "s3"],
    )
    status.add_argument("remote", metavar="REMOTE", help="where the database lives (see below)")
    status.add_argument("local", metavar="LOCAL", help="the local database file")
    status.set_defaults(func=_status)

    push = command(
        "push", "commit the local changes to the remote",
        "Commit LOCAL's changes to REMOTE in one atomic commit (creating the remote\n"
        "database if there is none). Changes others pushed meanwhile to other keys\n"
        "are merged in; keys changed on both sides stop the push, unless\n"
        "--on-conflict says which side wins.",
        ["conflict", "verbose", "progress", "json", "s3"],
    )
    push.add_argument("remote", metavar="REMOTE", help="where the database lives (see below)")
    push.add_argument("local", metavar="LOCAL",
                      help="the local database file (an ebooklet or plain booklet file)")
    push.set_defaults(func=_push)

    pull = command(
        "pull", "bring in the changes others pushed",
        "Bring REMOTE's new commits into LOCAL: changed values are dropped and\n"
        "fetched again when read, deleted keys disappear, new keys appear. Unpushed\n"
        "local changes to other keys are kept. When LOCAL does not exist it becomes a\n"
        "copy of the remote.",
        ["conflict", "verbose", "progress", "json", "s3"],
    )
    pull.add_argument("remote", metavar="REMOTE", help="where the database lives (see below)")
    pull.add_argument("local", metavar="LOCAL", help="the local database file (made if missing)")
    pull.add_argument("--load", action="store_true",
                      help="also fetch every value not in LOCAL yet, for offline use")
    pull.set_defaults(func=_pull)

    keys = command(
        "keys", "list the keys of a database",
        "List REMOTE's keys, sorted, one per line.",
        ["local", "json", "s3"], epilog=REMOTE_HELP + "\n" + CACHE_HELP,
    )
    keys.add_argument("remote", metavar="REMOTE", help="where the database lives (see below)")
    keys.add_argument("--prefix", default="", metavar="P", help="only the keys that start with P")
    keys.set_defaults(func=_keys)

    get = command(
        "get", "print the value of one key",
        "Print the value of KEY: bytes as they are, str as text, anything else as its\n"
        "Python repr (or as JSON with --json). A missing key is an error.",
        ["local", "json", "s3"], epilog=REMOTE_HELP + "\n" + CACHE_HELP,
    )
    get.add_argument("remote", metavar="REMOTE", help="where the database lives (see below)")
    get.add_argument("key", metavar="KEY", help="the key")
    get.set_defaults(func=_get)

    head = command(
        "head", "describe a remote database",
        "Read REMOTE's head object (one request) and describe the database: format\n"
        "version, commit, keys, value bytes, index parts, segments, serializer, last\n"
        "commit time and metadata. Exits 1 when there is no database at REMOTE.",
        ["json", "s3"],
    )
    head.add_argument("remote", metavar="REMOTE", help="where the database lives (see below)")
    head.set_defaults(func=_head)

    demo = sub.add_parser("demo", help="run the full cycle on a local folder remote")
    demo.add_argument("--dir", help="where to put the demo's files (default: a new temporary folder)")
    demo.set_defaults(func=_demo)
    return parser


def _fail(message: str) -> int:
    print(f"ebooklet: error: {_one_line(message)}", file=sys.stderr)
    return 1


def _conflict_message(exc: ConflictError, command: str) -> str:
    keys = exc.keys
    shown = ", ".join(repr(k) for k in keys[:10])
    more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
    done = "committed" if command == "push" else "changed"
    return (
        f"{len(keys)} key(s) changed both locally and on the remote: {shown}{more}. Nothing was "
        f"{done}; choose the side to keep with {command} --on-conflict local|remote|newest"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except ConflictError as exc:
        return _fail(_conflict_message(exc, args.command))
    except (CliError, EbookletError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("ebooklet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. '| head'): stop quietly, like a process killed by SIGPIPE.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        # The local disk said no (permissions, a full disk, ...).
        if exc.strerror and exc.filename:
            return _fail(f"{exc.filename}: {exc.strerror}")
        return _fail(str(exc) or type(exc).__name__)


if __name__ == "__main__":
    sys.exit(main())
