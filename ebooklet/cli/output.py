"""What commands print: sizes, key lists, tables, JSON, and the one-line error.

Text goes to stdout for people to read and for ``--json`` programs to parse; an expected
failure is a :class:`CliError`, printed by :func:`print_error` as ``ebooklet: error: ...`` on
stderr and, with ``--json``, as a JSON object ``{"error": {...}}`` on stdout as well.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import ArgumentTypeError, InvalidArgumentError
from ..words import counted

#: How many keys ``push`` and ``pull`` list (``--verbose``: all). A longer list is summed up.
SHOWN_KEYS = 20


class CliError(Exception):
    """An expected failure: printed as ``ebooklet: error: <message>``, exit status 1.

    ``error`` is the class of the exception a Python program doing the same would catch: a
    subclass of :class:`ebooklet.EbookletError`, ``KeyError`` for a missing key, or
    ``KeyboardInterrupt`` for an interrupt (status 130, reported as ``Interrupted``). Its name
    is the ``type`` of the JSON form of the error (``--json``), so that a program can tell the
    failures apart; ``details`` go in there too.
    """

    def __init__(self, error: type[BaseException], message: str, status: int = 1, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.kind = error.__name__
        self.details = details


class Cancelled(Exception):
    """The user answered no at a prompt: nothing was done, as asked; not an error (exit 0)."""


def confirm(what: str, command: str) -> None:
    """Ask on a terminal before doing ``what``, which cannot be undone; elsewhere (a script,
    a pipe) refuse, since ``--yes`` was not given."""
    if not sys.stdin.isatty():
        raise CliError(
            InvalidArgumentError,
            f"{command} would {what}, which cannot be undone: add --yes to confirm (standard input "
            "is not a terminal, so there is nobody to ask)"
        )
    print(f"ebooklet {command}: {what}? This cannot be undone. [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        raise Cancelled(f"{command} cancelled: nothing was changed")


def one_line(message: str) -> str:
    return " ".join(message.split("\n"))


def bad_input(exc: Exception) -> CliError:
    """A ValueError, TypeError or OSError that is not an ebooklet error (from a library ebooklet
    uses), as a :class:`CliError`."""
    error = ArgumentTypeError if isinstance(exc, TypeError) else InvalidArgumentError
    return CliError(error, one_line(str(exc)) or type(exc).__name__)


def print_error(
    message: str, as_json: bool, kind: str, status: int = 1, **details: Any
) -> int:
    """Print ``ebooklet: error: <message>`` on one line of stderr (and, ``as_json``, the error
    as JSON on stdout); return the exit status."""
    message = one_line(message)
    if as_json:
        print_json({"error": {"message": message, "type": kind, "exit_status": status, **details}})
    # An interrupt is the user's doing, not an error.
    print(f"ebooklet: {message}" if status == 130 else f"ebooklet: error: {message}", file=sys.stderr)
    return status


#: ``1 key``, ``1,024 keys``: a number with thousands separators and its noun.
count = counted


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


def size(n: int) -> str:
    """``42 bytes``, ``268,475 bytes (262.2 KiB)``."""
    return f"{n:,} bytes" if n < 1024 else f"{n:,} bytes ({human_bytes(n)})"


def show_key(key: str) -> str:
    """A key as it is, unless it would break the one-line-per-key layout."""
    return key if key.isprintable() and key.strip() == key and key else repr(key)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def print_keys(rows: list[tuple[str, list[str]]], verbose: bool) -> None:
    """``  label  key`` lines: all of them when there are at most SHOWN_KEYS (or verbose),
    else one line saying how to list them."""
    width = max((len(label) for label, keys in rows if keys), default=0)
    total = sum(len(keys) for _, keys in rows)
    if total > SHOWN_KEYS and not verbose:
        print(f"  ({total:,} keys; --verbose lists them)")
        return
    for label, keys in rows:
        for key in keys:
            print(f"  {label:<{width}}  {show_key(key)}")


def print_table(rows: list[tuple[str, str]]) -> None:
    """``name  value`` lines, the values lined up."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
