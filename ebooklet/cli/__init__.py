"""The ``ebooklet`` command line.

::

    ebooklet status [REMOTE] LOCAL   what differs between a local file and its remote
    ebooklet push [REMOTE] LOCAL     commit the local changes to the remote
    ebooklet pull [REMOTE] LOCAL     bring in what others pushed
    ebooklet discard [REMOTE] LOCAL  throw away local changes
    ebooklet put LOCAL KEY [VALUE]   set a key in a local file
    ebooklet del LOCAL KEY...        delete keys in a local file
    ebooklet keys REMOTE             list the keys
    ebooklet get REMOTE KEY          print one value
    ebooklet head REMOTE             describe the remote database
    ebooklet log REMOTE              list the commits of a database
    ebooklet diff REMOTE OLD [NEW]   what changed between two commits
    ebooklet compact REMOTE LOCAL    rewrite segments that hold dead or scattered values
    ebooklet gc REMOTE               remove objects no retained commit uses
    ebooklet verify REMOTE           check that a database is whole
    ebooklet ls PREFIX               list the databases under a prefix
    ebooklet cp REMOTE TARGET        copy a remote database
    ebooklet rm REMOTE               delete a remote database
    ebooklet demo                    the full cycle on a local folder remote
    ebooklet completion SHELL        shell completion

Expected failures (every :class:`ebooklet.EbookletError`, bad arguments given to
:func:`ebooklet.open`) print one line ``ebooklet: error: <message>`` and exit 1 (with
``--json``, the error as JSON on stdout too); usage errors exit 2 and an interrupt exits 130.
See docs/cli.rst.

This module owns :func:`main`, which runs a command and turns what it raises into that one
line and an exit status. The commands live in one module per kind (:mod:`.sync`,
:mod:`.edit`, :mod:`.read`, :mod:`.lifecycle`, :mod:`.databases`, :mod:`.demo`,
:mod:`.completion`), each adding
them to the parser of :mod:`.parser` in its ``register``; :mod:`.remote_arg` reads REMOTE,
:mod:`.local` opens the local copy, :mod:`.interrupt` handles Ctrl-C, :mod:`.output` and
:mod:`.progress` print.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence

from ..errors import ConflictError, EbookletError
from . import completion, databases, demo, edit, lifecycle, read, stores, sync
from .output import Cancelled, CliError, print_error, print_json
from .parser import Parser, parse_command_line, root_parser

__all__ = ["build_parser", "main"]

#: The modules whose commands ``ebooklet`` has, in the order ``ebooklet --help`` lists them.
COMMAND_MODULES = (sync, edit, read, lifecycle, databases, demo, completion)


def build_parser() -> argparse.ArgumentParser:
    """The ``ebooklet`` parser, with every command of :data:`COMMAND_MODULES`."""
    parser, commands = root_parser()
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def _conflict_message(exc: ConflictError, command: str) -> str:
    keys = exc.keys
    shown = ", ".join(repr(k) for k in keys[:10])
    more = f" and {len(keys) - 10:,} more" if len(keys) > 10 else ""
    done = "committed" if command in ("push", "put", "del") else "changed"
    policy = "pull" if command == "pull" else "push"
    return (
        f"{len(keys):,} key{'s' if len(keys) != 1 else ''} changed both locally and on the remote: "
        f"{shown}{more}. Nothing was {done}; choose the side to keep with {policy} --on-conflict "
        "local|remote|newest"
    )


#: What a Ctrl-C that a command did not handle itself left behind: the commands that commit
#: had not started to, and those that only read changed nothing.
_INTERRUPTED = {
    **dict.fromkeys(("push", "put", "del", "compact", "init"),
                    "nothing was committed; run the command again to do it"),
    **dict.fromkeys(("status", "keys", "get", "head", "log", "diff", "ls", "verify", "completion"),
                    "nothing was changed"),
}


class _Prefixed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kind = "warning: " if record.levelno >= logging.WARNING else ""
        return f"ebooklet: {kind}{record.getMessage()}"


@contextlib.contextmanager
def _logging_to_stderr(args: argparse.Namespace) -> Iterator[None]:
    """While a command runs, what ebooklet logs goes to stderr as ``ebooklet: ...`` lines:
    warnings (a lease taken over, a file rebuilt, leftovers not deleted), with ``--verbose``
    what it does too, with ``--quiet`` nothing. booklet's own warning about waiting for a file
    lock (which names "this process" as a possible holder) is left out: the command line says
    it itself, in its own words. Everything is as it was afterwards (main may be called from
    Python)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Prefixed())
    logger, booklet_logger = logging.getLogger("ebooklet"), logging.getLogger("booklet")
    levels = logger.level, booklet_logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR + 1 if args.quiet else logging.INFO if args.verbose else logging.WARNING)
    booklet_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(levels[0])
        booklet_logger.setLevel(levels[1])


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    finally:
        stores.keep()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    Parser.json_errors = "--json" in argv
    parser = build_parser()
    args = parse_command_line(parser, argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    as_json = args.json
    try:
        with _logging_to_stderr(args):
            return _run(args)
    except ConflictError as exc:
        return print_error(_conflict_message(exc, args.command), as_json, "ConflictError", keys=exc.keys)
    except Cancelled as exc:
        if as_json:
            print_json({"cancelled": True, "message": str(exc)})
        print(f"ebooklet: {exc}", file=sys.stderr)
        return 0
    except CliError as exc:
        return print_error(str(exc), as_json, "Interrupted" if exc.status == 130 else exc.kind, exc.status,
                           **exc.details)
    except EbookletError as exc:
        if getattr(args, "verbose", False):  # the whole chain: urllib3's reprs, the socket's error
            traceback.print_exception(exc)
        return print_error(str(exc), as_json, type(exc).__name__)
    except KeyboardInterrupt:
        # Not caught by the command itself (which says more once its transfer began).
        left = _INTERRUPTED.get(args.command, "stopped")
        return print_error(f"interrupted: {left}", as_json, "Interrupted", 130)
    except BrokenPipeError:
        # The reader went away (e.g. '| head'): stop quietly, like a process killed by SIGPIPE.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        # The local disk said no (permissions, a full disk, ...).
        advice = "Check the path, its permissions and the free space on its disk, then run the command again"
        if exc.strerror and exc.filename:
            return print_error(f"{exc.filename}: {exc.strerror}. {advice}", as_json, type(exc).__name__)
        return print_error(f"{exc or type(exc).__name__}. {advice}", as_json, type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - a bug: one line, and the traceback with --verbose
        if getattr(args, "verbose", False):
            traceback.print_exc()
        how = " with the output of the same command run with --verbose (which shows where it happened)"
        return print_error(
            f"unexpected {type(exc).__name__}: {exc}. This is a bug in ebooklet: please report it{how}",
            as_json, "InternalError",
        )
