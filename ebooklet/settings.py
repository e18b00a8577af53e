"""The tunables of the engine, in one typed object, and the one clock.

Every wall-clock reading of the package goes through :data:`settings`'s ``clock`` (a
:class:`Clock`), so that a test can run the engine with a clock that is off, as a machine's
clock can be, without patching ``time``. The tunables are read when they are used, so a
change to :data:`settings` (or an :func:`override` block) applies to what runs next.

>>> from ebooklet.settings import override, settings
>>> with override(segment_bytes=1 << 20):
...     settings.segment_bytes
1048576
>>> settings.segment_bytes == 8 << 20
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class Clock:
    """The wall clock, in microseconds since the epoch, and a monotonic clock in seconds."""

    def now_us(self) -> int:
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        return time.monotonic()


class SkewedClock(Clock):
    """A wall clock ``offset_s`` seconds off the real one (ahead when positive)."""

    def __init__(self, offset_s: float) -> None:
        self.offset_us = int(offset_s * 1e6)

    def now_us(self) -> int:
        return time.time_ns() // 1000 + self.offset_us


@dataclass
class Settings:
    """Tunables with their defaults.

    Attributes
    ----------
    segment_bytes : int
        A push packs values into segment objects of about this size.
    lease_max_ttl : float
        Seconds: the longest ``lease_ttl`` a writer may ask for. A lease that claims to last
        longer is judged by the store's clock: once the store has not seen it rewritten for
        1.25 times this, it has expired, whatever it says.
    gc_every : int
        Every ``gc_every``-th commit collects garbage after committing.
    max_delete : float
        Percent of the remote's keys a push may delete that were not deleted through
        ebooklet (found missing from the local file), before it stops and asks.
    gc_min_age : float
        Seconds: unreferenced objects younger than this are never collected (they may
        belong to a push in flight).
    multipart_from : int
        Objects of this many bytes or more (a segment that holds a large value) are uploaded
        in parts of ``multipart_part`` bytes, several at a time (S3's multipart upload, Azure's
        blocks, pieces composed on Google Cloud Storage).
    multipart_part : int
        The size of each part (at least 5 MiB on S3, which refuses smaller ones).
    clock : Clock
        Every wall-clock reading.
    """

    segment_bytes: int = 8 * 1024 * 1024
    lease_max_ttl: float = 300.0
    gc_every: int = 64
    max_delete: float = 50.0
    gc_min_age: float = 6 * 3600.0
    multipart_from: int = 16 * 1024 * 1024
    multipart_part: int = 8 * 1024 * 1024
    clock: Clock = field(default_factory=Clock)


#: The settings in force.
settings = Settings()


def now_us() -> int:
    """Microseconds since the epoch, by the clock in force."""
    return settings.clock.now_us()


@contextlib.contextmanager
def override(**changes: Any) -> Iterator[Settings]:
    """Change some settings for the duration of a ``with`` block."""
    saved = dataclasses.replace(settings)
    for name, value in changes.items():
        if name not in Settings.__dataclass_fields__:
            raise AttributeError(f"no setting named {name!r}")
        setattr(settings, name, value)
    try:
        yield settings
    finally:
        for name in changes:
            setattr(settings, name, getattr(saved, name))
