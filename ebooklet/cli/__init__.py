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

This module owns :func:`main`, which runs a command and turns what it raises into that one
line and an exit status. The commands live in one module per kind (:mod:`.sync`,
:mod:`.read`, :mod:`.demo`), each adding them to the parser of :mod:`.parser` in its
``register``; :mod:`.remote_arg` reads REMOTE, :mod:`.local` opens the local copy,
:mod:`.output` and :mod:`.progress` print.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from ..errors import ConflictError, EbookletError
from . import demo, lifecycle, read, sync
from .output import CliError, print_error
from .parser import root_parser

__all__ = ["build_parser", "main"]

#: The modules whose commands ``ebooklet`` has, in the order ``ebooklet --help`` lists them.
COMMAND_MODULES = (sync, read, lifecycle, demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``ebooklet`` parser, with every command of :data:`COMMAND_MODULES`."""
    parser, commands = root_parser()
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


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
        return print_error(_conflict_message(exc, args.command))
    except (CliError, EbookletError) as exc:
        return print_error(str(exc))
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
            return print_error(f"{exc.filename}: {exc.strerror}")
        return print_error(str(exc) or type(exc).__name__)
