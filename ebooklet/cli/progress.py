"""The progress bar that ``push`` and ``pull --load`` draw on stderr.

:func:`render_progress` lays out one line; :class:`ProgressBar` is the ``progress=`` callback
that redraws it, throttled; :func:`progress_bar` gives a command its bar, or None when stderr
is not a terminal or ``--no-progress`` was given.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

from ..results import Progress
from .output import human_bytes

#: Seconds between two redraws of the progress bar, and before the first one.
PROGRESS_INTERVAL = 0.1
PROGRESS_DELAY = 0.5


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
