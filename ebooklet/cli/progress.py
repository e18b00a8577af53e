"""What ``push`` and ``pull --load`` show on stderr while they work.

:func:`render_progress` lays out one line; :class:`ProgressBar` is the ``progress=`` callback
that redraws it, throttled. From the command's first moment until the first progress arrives
it says what the command is doing (reading the index, packing the changes) or waiting for
(another writer's lock), with the seconds so far, so that the start of a push is never
silent. :func:`progress_bar` gives a command its bar when stderr is a
terminal; elsewhere a wait that lasts is reported once, as a line of its own.
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
from .interrupt import when_stopped
from .output import human_bytes

#: Seconds between two redraws of the progress bar.
PROGRESS_INTERVAL = 0.1
#: Seconds of a wait before it is reported on a stderr that is not a terminal.
NOTICE_AFTER = 2.0

#: What a command does before its first progress report, by phase.
PREPARING = {"upload": "reading the remote and packing the changes", "download": "reading the index"}


def render_progress(p: Progress, width: int = 80, elapsed: float | None = None) -> str:
    """One line describing a transfer, at most ``width`` characters.

    The fraction counts keys, whose total is known from the start (the byte total of a push
    grows once its index is built); the layout does not shift as the numbers grow, so
    redraws do not jitter. Given the seconds ``elapsed`` since the transfer began, the line
    ends with its rate and the time left at that pace (as rclone and ``aws s3 cp`` show
    them), when there is room.

    >>> render_progress(Progress("upload", 250, 1000, 512 * 1024, 2 * 1024 * 1024), 80)
    'pushing   [#####...............]  25%   512.0 KiB sent        250/1,000 keys'
    >>> render_progress(Progress("upload", 250, 1000, 512 * 1024, 2 * 1024 * 1024), 79, elapsed=2.0)
    'pushing   [#......]  25%   512.0 KiB    250/1,000 keys   256.0 KiB/s  ETA  0:06'
    """
    verb = "pushing" if p.phase == "upload" else "fetching"
    moved = "sent" if p.phase == "upload" else "received"
    if p.keys_total > 0:
        fraction = p.keys_done / p.keys_total
    elif p.bytes_total > 0:
        fraction = p.bytes_done / p.bytes_total
    else:
        fraction = 1.0
    fraction = min(max(fraction, 0.0), 1.0)
    total_keys = f"{p.keys_total:,}"
    keys = f"{p.keys_done:>{len(total_keys)},}/{total_keys} keys"
    amount = f"{int(fraction * 100):3d}%  {human_bytes(p.bytes_done):>10}"
    layouts = [f"{amount} {moved:<8}  {keys}"]
    if elapsed is not None and elapsed > 0:
        # The rate says which way the bytes go; without "sent" the line fits 80 columns.
        left = _clock(elapsed * (1 - fraction) / fraction) if fraction > 0 else "-:--"
        rate = f"{human_bytes(int(p.bytes_done / elapsed))}/s"
        layouts.insert(0, f"{amount}  {keys}  {rate:>12}  ETA {left:>5}")
    for stats in layouts:
        bar_width = min(20, width - len("fetching") - len(stats) - 5)
        if bar_width >= 5:
            filled = int(fraction * bar_width)
            return f"{verb:<8}  [{'#' * filled}{'.' * (bar_width - filled)}] {stats}"
    return f"{verb} {' '.join(layouts[-1].split())}"[:width]


def _clock(seconds: float) -> str:
    """``0:07``, ``12:30``, ``2:05:00``: a duration as a clock shows it."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """A ``progress=`` callback that redraws one line of ``stream`` with ``\\r``.

    Thread-safe (callbacks come from ebooklet's transfer threads). At most one redraw per
    ``interval``. Until the first progress arrives, :meth:`tick` draws what the command is
    doing or waiting for: :func:`progress_bar` calls it once as the bar is made, so that the
    line is there from the command's first moment, then a timer calls it. :meth:`close`
    draws the last state and ends the line; :meth:`abandon` ends it as it is (an interrupt).
    """

    def __init__(
        self,
        stream: IO[str],
        width: int | None = None,
        interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        phase: str = "upload",
    ) -> None:
        self.stream = stream
        self.width = width or max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        self.interval = interval
        self.clock = clock
        self.phase = phase
        self.waiting_for: Callable[[], str | None] = lambda: None
        self._start = clock()
        self._lock = threading.Lock()
        self._last_draw: float | None = None
        self._last_len = 0
        self._pending: Progress | None = None
        #: When the first progress arrived: the rate and the time left count from there.
        self._began: float | None = None
        self._progressed = False
        self._closed = False

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            if self._closed:
                return
            now = self.clock()
            self._pending = progress
            self._progressed = True
            if self._began is None:
                self._began = now
            if self._last_draw is not None and now - self._last_draw < self.interval:
                return
            self._draw(self._render(progress, now), now)
            self._pending = None

    def _render(self, progress: Progress, now: float) -> str:
        return render_progress(progress, self.width, now - self._began if self._began is not None else None)

    def tick(self) -> None:
        """Called by a timer: draw progress that arrived and was not drawn yet, or, before any
        progress or while it waits (for a lock), what the command is doing, with the seconds so
        far."""
        with self._lock:
            now = self.clock()
            if self._closed:
                return
            if self._pending is not None:
                if self._last_draw is None or now - self._last_draw >= self.interval:
                    self._draw(self._render(self._pending, now), now)
                    self._pending = None
                return
            # A wait is shown whenever it happens: a push uploads while it waits for the lock.
            waiting = self.waiting_for()
            if self._progressed and waiting is None:
                return
            verb = "pushing" if self.phase == "upload" else "fetching"
            doing = waiting or PREPARING.get(self.phase, "working")
            line = f"{verb:<8}  {int(now - self._start):>3} s  {doing}"
            self._draw(line[: self.width], now)

    def _draw(self, line: str, now: float) -> None:
        self._write("\r" + line + " " * max(0, self._last_len - len(line)))
        self._last_len = len(line)
        self._last_draw = now

    def _write(self, text: str) -> None:
        # A closed or broken terminal must not fail the transfer the bar reports on.
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._last_draw is None:
                return  # never shown: leave no trace
            if self._pending is not None:
                now = self.clock()
                self._draw(self._render(self._pending, now), now)
            self._write("\n")

    def abandon(self) -> None:
        """End the line as it stands, drawing nothing more (the command was interrupted)."""
        with self._lock:
            if not self._closed and self._last_draw is not None:
                self._write("\n")
            self._closed = True

    def freeze(self) -> bool:
        """Draw nothing more, now; True if a line was left unfinished. Safe in a signal
        handler: no lock, no writing (the caller ends the line)."""
        drawn = not self._closed and self._last_draw is not None
        self._closed = True
        return drawn


def _ticking(bar: ProgressBar) -> tuple[threading.Event, threading.Thread]:
    done = threading.Event()

    def run() -> None:
        while not done.wait(bar.interval * 2.5):
            bar.tick()

    thread = threading.Thread(target=run, name="ebooklet-progress", daemon=True)
    thread.start()
    return done, thread


@contextlib.contextmanager
def notice_when_waiting(
    args: argparse.Namespace, waiting_for: Callable[[], str | None], after: float = NOTICE_AFTER
) -> Iterator[None]:
    """On a stderr that is not a terminal: report once a wait that lasts ``after`` seconds."""
    if args.quiet or args.json and not args.verbose:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(after):
            what = waiting_for()
            if what:
                print(f"ebooklet: {what}", file=sys.stderr, flush=True)
                return

    thread = threading.Thread(target=watch, name="ebooklet-notice", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


@contextlib.contextmanager
def progress_bar(
    args: argparse.Namespace, phase: str = "upload", waiting_for: Callable[[], str | None] | None = None
) -> Iterator[ProgressBar | None]:
    """A bar on stderr when it is a terminal (and neither ``--no-progress`` nor ``--quiet``
    was given); otherwise None, and a lasting wait for ``waiting_for`` is reported once."""
    waiting = waiting_for or (lambda: None)
    if args.no_progress or args.quiet or not sys.stderr.isatty():
        with notice_when_waiting(args, waiting):
            yield None
        return
    bar = ProgressBar(sys.stderr, phase=phase)
    bar.waiting_for = waiting
    bar.tick()  # what the command prepares, drawn before it sends its first request
    done, thread = _ticking(bar)
    forget = when_stopped(bar.freeze)  # at Ctrl-C the bar stops where it is, at once
    try:
        yield bar
    except BaseException:
        done.set()
        bar.abandon()
        raise
    finally:
        forget()
        done.set()
        thread.join()
        bar.close()
