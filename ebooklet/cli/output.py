"""What commands print: sizes, key lists, tables, JSON, and the one-line error.

Text goes to stdout for people to read and for ``--json`` programs to parse; an expected
failure is a :class:`CliError`, printed by :func:`print_error` as ``ebooklet: error: ...``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: How many keys ``push`` and ``pull`` list before summing up the rest (``--verbose``: all).
SHOWN_KEYS = 20


class CliError(Exception):
    """An expected failure: printed as ``ebooklet: error: <message>``, exit status 1."""


def one_line(message: str) -> str:
    return " ".join(message.split("\n"))


def bad_input(exc: Exception) -> CliError:
    """A ValueError, TypeError or OSError from ebooklet, as a :class:`CliError`."""
    return CliError(one_line(str(exc)) or type(exc).__name__)


def print_error(message: str) -> int:
    """Print ``ebooklet: error: <message>`` on one line of stderr; return the exit status 1."""
    print(f"ebooklet: error: {one_line(message)}", file=sys.stderr)
    return 1


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
    """``  label  key`` lines, at most SHOWN_KEYS of them unless verbose."""
    width = max((len(label) for label, keys in rows if keys), default=0)
    shown = 0
    total = sum(len(keys) for _, keys in rows)
    for label, keys in rows:
        for key in keys:
            if not verbose and shown == SHOWN_KEYS:
                print(f"  ... and {total - shown:,} more (--verbose lists them all)")
                return
            print(f"  {label:<{width}}  {show_key(key)}")
            shown += 1


def print_table(rows: list[tuple[str, str]]) -> None:
    """``name  value`` lines, the values lined up."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
