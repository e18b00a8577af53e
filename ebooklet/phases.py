"""Opt-in timing of the engine's phases, for benchmarks and for finding where a push goes.

The engine's coarse steps (a push and its attempts, rebasing, streaming the changes, waiting
for uploads, building index parts, each request to S3, ...) are marked with :func:`timed`.
Nothing is measured until a :class:`PhaseTimes` is installed with :func:`recording`; until
then a marked function costs one extra call and one check of a global, so only functions
called a handful of times per operation (or once per request) are marked.

Because the mark sits on the function itself, a rename or a move keeps it: a benchmark sees
what the package marks, never a list of private names that silently goes stale.

>>> import ebooklet, tempfile, pathlib
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> with ebooklet.open(tmp / "remote" / "db", tmp / "db.blt", "c", "orjson") as db:
...     db["k"] = 1
...     with recording() as times:
...         _ = db.changes().push()
>>> [path[-1] for path in times.totals][:2]
['Replica.push', 'Push.run']
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_recorder: PhaseTimes | None = None


class PhaseTimes:
    """Inclusive wall time and calls of each marked function, by call path.

    Calls in the thread that installed it nest (``("Replica.push", "Push.run", ...)``);
    calls made in other threads (transfers) are summed under a top-level row of their own.
    """

    def __init__(self) -> None:
        self.totals: dict[tuple[str, ...], list[float]] = {}  # path -> [seconds, calls]
        self._main = threading.get_ident()
        self._local = threading.local()
        self._lock = threading.Lock()

    def call(self, name: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        stack: tuple[str, ...] = getattr(self._local, "stack", ())
        if not stack and threading.get_ident() != self._main:
            path: tuple[str, ...] = (f"{name} [in other threads, summed]",)
        else:
            path = (*stack, name)
        with self._lock:  # rows are made on entry, so that they come out in call order
            row = self.totals.setdefault(path, [0.0, 0])
        self._local.stack = path
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self._local.stack = stack
            spent = time.perf_counter() - started
            with self._lock:
                row[0] += spent
                row[1] += 1

    def render(self, wall: float) -> str:
        """A table: each path indented under its caller, with seconds, share of ``wall`` and calls."""
        lines = [f"{'function (inclusive wall time)':<58} {'seconds':>8} {'share':>6} {'calls':>6}"]
        # Other threads' rows last: they overlap the main thread's, so their shares add up past 100%.
        for path, (seconds, calls) in sorted(self.totals.items(), key=lambda row: "[in other" in row[0][0]):
            label = "  " * (len(path) - 1) + path[-1]
            lines.append(f"{label:<58} {seconds:8.3f} {seconds / wall:6.1%} {int(calls):6d}")
        return "\n".join(lines)


def timed(name: str) -> Callable[[F], F]:
    """Mark a function as a phase named ``name`` (``Class.method`` by convention)."""

    def mark(fn: F) -> F:
        @functools.wraps(fn)
        def phase(*args: Any, **kwargs: Any) -> Any:
            recorder = _recorder
            if recorder is None:
                return fn(*args, **kwargs)
            return recorder.call(name, fn, args, kwargs)

        return phase  # type: ignore[return-value]

    return mark


@contextlib.contextmanager
def recording() -> Iterator[PhaseTimes]:
    """Time the marked phases while the block runs (one recording at a time)."""
    global _recorder
    if _recorder is not None:
        raise RuntimeError("phases are already being recorded")
    times = PhaseTimes()
    _recorder = times
    try:
        yield times
    finally:
        _recorder = None
