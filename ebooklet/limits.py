"""What a key, a value and a timestamp may be: the limits of the local file and the remote.

Every key, value size and timestamp is checked here before it reaches the local file, and
every key of a remote index part before it is cached, so that nothing is refused half way
by booklet (with an error that names no key) or silently misread.

The numbers are booklet's on-disk format (``booklet.utils``: keys are prefixed by a 2-byte
length, values by a 4-byte one, timestamps are 7 bytes, and three key names are reserved
for the file's own bookkeeping). booklet is imported by :mod:`ebooklet.local` only, so they
are written out here; ``tests/test_input.py`` checks them against booklet.
"""

from __future__ import annotations

from typing import Any

from .errors import ArgumentTypeError, InvalidArgumentError, InvalidKeyError, KeyTypeError

__all__ = ["MAX_KEY_BYTES", "MAX_TIMESTAMP", "MAX_VALUE_BYTES", "RESERVED_KEYS", "check_key",
           "check_timestamp", "check_value_size", "key_problem"]

#: The longest key, in UTF-8 bytes.
MAX_KEY_BYTES = 2**16 - 1
#: The largest value, in (serialized) bytes.
MAX_VALUE_BYTES = 2**32 - 1
#: The latest timestamp, in microseconds since the epoch (the year 4253).
MAX_TIMESTAMP = 2**56 - 1
#: Names booklet keeps for itself: the file's metadata and two slots for libraries built on
#: it. A value stored under one of them would replace that bookkeeping, so they are refused.
RESERVED_KEYS = frozenset({"adb01ebc1ba3433eb043527", "7c40d2ea915b4f3a8e6d201", "f19a5c3d7e2b48069ab34c5"})


def _shown(key: str) -> str:
    """A key as it appears in a message: its repr, cut short when long."""
    text = repr(key)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]} ({len(key):,} characters)"


def key_problem(key: str) -> str | None:
    """Why a str cannot be a key, or None when it can."""
    if key in RESERVED_KEYS:
        return (
            f"the key {key!r} is reserved: booklet, the local file format, keeps its own "
            "bookkeeping under that name. Choose another key"
        )
    if key.isascii():
        size = len(key)
    else:
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError as exc:
            return (
                f"the key {_shown(key)} cannot be stored: keys are stored as UTF-8, and "
                f"{key[exc.start]!r} at position {exc.start} is a lone surrogate (it often "
                "comes from decoding bytes with errors='surrogateescape'). Use a key of valid "
                "text, e.g. the bytes decoded with errors='replace' or as hex"
            )
    if size > MAX_KEY_BYTES:
        return (
            f"the key {_shown(key)} is {size:,} bytes long in UTF-8; keys may be at most "
            f"{MAX_KEY_BYTES:,} bytes. Use a shorter key, e.g. a hash of this one, and keep "
            "the long text in the value"
        )
    return None


def check_key(key: Any) -> None:
    """Raise :class:`~ebooklet.KeyTypeError` or :class:`~ebooklet.InvalidKeyError` unless
    ``key`` can be stored."""
    if not isinstance(key, str):
        raise KeyTypeError(f"ebooklet keys must be str, not {type(key).__name__} ({key!r})", key)
    if key in RESERVED_KEYS or len(key) > MAX_KEY_BYTES // 4 or not key.isascii():
        problem = key_problem(key)
        if problem is not None:
            raise InvalidKeyError(problem, key)


def check_value_size(key: str, size: int) -> None:
    if size > MAX_VALUE_BYTES:
        raise InvalidArgumentError(
            f"the value of {_shown(key)} is {size:,} bytes once serialized; a value may be at "
            f"most {MAX_VALUE_BYTES:,} bytes. Split it over several keys"
        )


def check_timestamp(timestamp: Any, what: str = "timestamp") -> int:
    """``timestamp`` (microseconds since the epoch) if the local file and the remote can
    record it."""
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise ArgumentTypeError(f"{what} must be an int of microseconds, not {type(timestamp).__name__}")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise InvalidArgumentError(
            f"{what} {timestamp:,} is out of range: timestamps are microseconds since "
            f"1970-01-01 UTC, from 0 to {MAX_TIMESTAMP:,} (the year 4253)"
        )
    return timestamp
