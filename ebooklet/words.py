"""Counted nouns in messages: "1 key", "2 keys", "1,000 commits", never "key(s)"."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` with thousands separators, then ``noun``, or ``plural`` (default: ``noun``
    plus "s") unless ``number`` is 1.

    >>> counted(1, "key"), counted(0, "key"), counted(12345, "commit")
    ('1 key', '0 keys', '12,345 commits')
    >>> counted(2, "entry", "entries")
    '2 entries'
    """
    word = noun if number == 1 else plural or noun + "s"
    return f"{number:,} {word}"
