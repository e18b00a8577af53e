"""The argument parser: the top level, the options commands share, and the help layout.

Commands are not listed here: each command module has a ``register(commands)`` function
that adds its commands through :class:`Commands`, and :func:`ebooklet.cli.build_parser` calls
them. To add a command, write its function and its ``commands.add(...)`` call in the module of
its kind.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal, NoReturn

from .. import __version__
from ..api import DEFAULT_TIMEOUT
from ..lock import DEFAULT_WAIT
from .output import SHOWN_KEYS, print_json
from .remote_arg import REMOTE_HELP

#: A command: given the parsed arguments, does its work and returns the exit status.
Command = Callable[[argparse.Namespace], int]

CONFLICT_POLICIES = ("local", "remote", "newest")

#: The name pip knows this package by (not "ebooklet": see docs/from-0.5.rst, "Installing").
DISTRIBUTION = "ebooklet-sync"


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; no ``COMMAND`` line above the list of commands."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=26)

    def _format_action(self, action: argparse.Action) -> str:
        text = super()._format_action(action)
        if isinstance(action, argparse._SubParsersAction):
            text = text.split("\n", 1)[1]
        return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, not {text}")
    return value


COMMIT_HELP = "a commit number (as `ebooklet log` lists them) or an ISO 8601 time with a timezone"


def commit_ref(text: str) -> int | datetime:
    """An argparse type: a commit, by number or by time (see :data:`COMMIT_HELP`)."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a commit number nor an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a timezone, e.g. {text}+00:00")
    return when


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """The options several commands take, by name, as argparse parents."""
    s3 = argparse.ArgumentParser(add_help=False)
    group = s3.add_argument_group("S3 options (for s3:// remotes)")
    group.add_argument("--endpoint-url", metavar="URL",
                       help="the S3 endpoint (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, the "
                       "profile's endpoint_url, or AWS)")
    group.add_argument("--profile", metavar="NAME",
                       help="take credentials, region and endpoint from this AWS profile (default: "
                       "$AWS_PROFILE or default) instead of the environment")
    group.add_argument("--access-key-id", metavar="ID",
                       help="the access key id (default: the AWS chain); the secret is only read from "
                       "$AWS_SECRET_ACCESS_KEY, never from an option")
    group.add_argument("--region",
                       help="the signing region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's "
                       "region, or us-east-1)")
    group.add_argument("--retries", type=positive_int, default=3, metavar="N",
                       help="attempts per request before giving up (default: 3)")
    json_ = argparse.ArgumentParser(add_help=False)
    json_.add_argument("--json", action="store_true",
                       help="print JSON for programs instead of text (errors too)")
    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument("--no-progress", action="store_true",
                          help="never show the progress bar (shown on stderr when it is a terminal)")
    talk = argparse.ArgumentParser(add_help=False)
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="print nothing but errors (and the data asked for)")
    talk.add_argument("-v", "--verbose", action="store_true",
                      help=f"list every key (default: up to {SHOWN_KEYS}) and say on stderr what "
                      "ebooklet does while it waits")
    conflict = argparse.ArgumentParser(add_help=False)
    conflict.add_argument("--on-conflict", choices=CONFLICT_POLICIES, metavar="{local,remote,newest}",
                          help="for keys changed on both sides, keep the local side, the remote side, or "
                          "the side changed last (default: stop with an error, changing nothing)")
    pickle = argparse.ArgumentParser(add_help=False)
    pickle.add_argument("--allow-pickle", action="store_true",
                        help="read a database whose values are pickled; unpickling runs code chosen by "
                        "whoever can write to REMOTE, so use it only for remotes you trust")
    local = argparse.ArgumentParser(add_help=False)
    local.add_argument("--local", metavar="PATH",
                       help="read through this local file (made if missing) instead of the cache; it is "
                       "not pulled first, so it shows its own unpushed changes")
    timeout = argparse.ArgumentParser(add_help=False)
    timeout.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                         help="how long to wait for another process to close the local file "
                         f"(default: {DEFAULT_TIMEOUT:g})")
    lock = argparse.ArgumentParser(add_help=False)
    lock.add_argument("--lock-wait", type=_seconds, default=DEFAULT_WAIT, metavar="SECONDS",
                      help="how long to wait for another writer's lock on the remote "
                      f"(default: {DEFAULT_WAIT:g})")
    return {"s3": s3, "json": json_, "progress": progress, "talk": talk, "conflict": conflict,
            "pickle": pickle, "local": local, "timeout": timeout, "lock": lock}


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are JSON too when ``--json`` was asked for."""

    #: Set by :func:`ebooklet.cli.main` when ``--json`` is among the arguments.
    json_errors = False

    def error(self, message: str) -> NoReturn:
        message += self._did_you_mean(message)
        if self.json_errors:
            print_json({"error": {"message": message, "type": "UsageError", "exit_status": 2}})
        super().error(message)

    def _did_you_mean(self, message: str) -> str:
        """For an unknown option, the closest one this command has."""
        if not message.startswith("unrecognized arguments: "):
            return ""
        known = [option for option in self._option_string_actions if option.startswith("--")]
        for word in message.split(": ", 1)[1].split():
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6)
            if word.startswith("-") and close:
                return f" (did you mean {close[0]}?)"
        return ""


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``ebooklet [OPTIONS] COMMAND ARGS``, with options anywhere around the arguments.

    The command is the first word that is not an option. Its own parser reads everything
    else, options and arguments in any order (``put F K --text hello`` as well as ``put F K
    hello --text``), so a bad option gets that command's usage and a suggestion; an unknown
    command gets the closest one.
    """
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    words = [i for i, word in enumerate(argv) if not word.startswith("-")]
    if not words or any(word in ("-h", "--help", "--version") for word in argv[: words[0]]):
        return parser.parse_args(argv)
    at = words[0]
    name = argv[at]
    if name not in commands.choices:
        close = difflib.get_close_matches(name, list(commands.choices), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        parser.error(f"unknown command {name!r}{hint} ('ebooklet --help' lists the commands)")
    args = commands.choices[name].parse_intermixed_args([*argv[:at], *argv[at + 1 :]])
    args.command = name
    args.root_parser = parser  # for the command that describes them all (completion)
    return args


class Commands:
    """Where a command module's ``register`` adds its commands."""

    def __init__(self, subparsers: argparse._SubParsersAction) -> None:
        self._subparsers = subparsers
        self._options = _shared_options()
        self.names: list[str] = []

    def add(
        self,
        name: str,
        func: Command,
        help: str,
        description: str | None = None,
        options: Sequence[str] = (),
        remote: bool | Literal["optional"] = True,
        notes: str | None = None,
    ) -> argparse.ArgumentParser:
        """Add the command ``name``, run by ``func``; return its parser for its own arguments.

        ``help`` is its line in ``ebooklet --help``; ``options`` names the shared options it
        takes (``"s3"``, ``"json"``, ``"progress"``, ``"talk"`` for ``--quiet`` and
        ``--verbose``, ``"conflict"``, ``"pickle"`` for ``--allow-pickle``, ``"local"``,
        ``"timeout"``, ``"lock"``); ``remote`` gives it the REMOTE argument first
        (``"optional"``: ``[REMOTE]``, for commands whose LOCAL file remembers its remote),
        explained below its options, above ``notes``.
        """
        epilog = REMOTE_HELP if remote else None
        if notes:
            epilog = f"{epilog}\n{notes}" if epilog else notes
        # Every command takes --json, --quiet and --verbose, wherever they are typed.
        options = [*dict.fromkeys([*options, "json", "talk"])]
        parser = self._subparsers.add_parser(
            name, help=help, description=description, epilog=epilog, formatter_class=Formatter,
            parents=[self._options[option] for option in options], allow_abbrev=False,
        )
        if remote == "optional":
            parser.add_argument("remote", metavar="REMOTE", nargs="?",
                                help="where the database lives (see below); default: the remote LOCAL "
                                "was last synced with")
        elif remote:
            parser.add_argument("remote", metavar="REMOTE", help="where the database lives (see below)")
        parser.set_defaults(func=func)
        self.names.append(name)
        return parser


def root_parser() -> tuple[argparse.ArgumentParser, Commands]:
    """``ebooklet`` without its commands, and where to add them."""
    parser = Parser(
        prog="ebooklet",
        description="A local-first key-value database that syncs with S3.",
        epilog=REMOTE_HELP + "\nRun 'ebooklet COMMAND --help' for a command's options. Errors exit 1, "
        "usage errors 2, an interrupt 130.",
        formatter_class=Formatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"ebooklet {__version__} ({DISTRIBUTION})")
    return parser, Commands(parser.add_subparsers(dest="command", metavar="COMMAND", title="commands"))
