"""Where ebooklet's time goes: a push under the engine's phase timers, then one push, one
pass of local writes and one of local reads under pyinstrument (if importable) and cProfile.

Run from the repository root::

    python benchmarks/bench_profile.py OUTDIR              # moto, 100,000 keys
    python benchmarks/bench_profile.py OUTDIR --quick      # 10,000 keys

It writes OUTDIR/profile.txt (and ``.prof`` files for ``python -m pstats`` or snakeviz).
The phase timers are the package's own (:mod:`ebooklet.phases`): the engine marks its
coarse steps, and this script only switches the recording on, so a renamed function keeps
its timer. Cyclic-GC pauses are counted beside them.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pathlib
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench_core import Env, make_items
from harness import gc_policy, log, phases, start_server, timed

import ebooklet


def _profilers() -> list[str]:
    names = ["cProfile"]
    try:
        import pyinstrument  # noqa: F401

        names.insert(0, "pyinstrument")
    except ImportError:
        log("profile: pyinstrument is not installed (pip install pyinstrument); cProfile only")
    return names


def _profile_call(
    kind: str, name: str, fn: Callable[[], Any], outdir: pathlib.Path, report: io.StringIO
) -> None:
    """Run ``fn`` once under ``kind`` and write its report (GC as in the timed runs)."""
    with gc_policy():
        if kind == "pyinstrument":
            from pyinstrument import Profiler

            prof = Profiler(interval=0.0005)
            t0 = time.perf_counter()
            prof.start()
            try:
                fn()
            finally:
                prof.stop()
            wall = time.perf_counter() - t0
            text = prof.output_text(unicode=False, color=False, show_all=False)
            (outdir / f"{name}.pyinstrument.txt").write_text(text)
            report.write(f"\n==== {name}: {wall:.2f} s under pyinstrument (sampling; main thread) ====\n")
            report.write(text)
            return
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(fn)
        wall = time.perf_counter() - t0
    path = outdir / f"{name}.prof"
    prof.dump_stats(str(path))
    report.write(f"\n==== {name}: {wall:.2f} s under cProfile ({path}; inflates per-call-heavy code) ====\n")
    for sort in ("cumulative", "tottime"):
        report.write(f"-- top 30 by {sort} --\n")
        pstats.Stats(prof, stream=report).strip_dirs().sort_stats(sort).print_stats(30)


class GcPauses:
    """Cyclic-GC pauses while the block runs (they land inside whichever phase was running)."""

    def __enter__(self) -> GcPauses:
        self.seconds, self.runs, self.gen2 = 0.0, 0, 0
        self._started: float | None = None
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self.runs += 1
            self.gen2 += info.get("generation") == 2
            self._started = None

    def render(self, wall: float) -> str:
        label = f"cyclic GC pauses, anywhere above ({self.gen2} of generation 2)"
        return f"{label:<58} {self.seconds:8.3f} {self.seconds / wall:6.1%} {self.runs:6d}"


def phase_breakdown(env: Env, n: int) -> str:
    """Where a push's wall time goes, by the engine's phase timers (ebooklet.phases).

    Runs ``env.repeat`` pushes and shows the fastest, like the timed measurements.
    """
    keys, values = make_items(n, seed=6)
    runs = []
    for rep in range(env.repeat):
        log(f"phases {rep + 1}/{env.repeat}: push of {n:,} keys")
        db = ebooklet.open(env.conn("phases"), env.path("phases"), "c", value_serializer=None)
        for k, v in zip(keys, values, strict=True):
            db[k] = v
        db.sync()
        with phases() as timer, GcPauses() as pauses:
            wall, _ = timed(lambda db=db: db.changes().push())
        db.close()
        runs.append((wall, timer, pauses))
    wall, timer, pauses = min(runs, key=lambda r: r[0])
    walls = ", ".join(f"{w:.3f}" for w, _, _ in runs)
    return (
        f"\n==== push of {n:,} keys: {wall:.3f} s wall (fastest of {walls}), phase timers ====\n"
        + timer.render(wall)
        + "\n"
        + pauses.render(wall)
        + "\n"
    )


def profile_all(env: Env, n: int, outdir: pathlib.Path) -> str:
    """Profile one push, one pass of local writes and one of local reads, with each profiler."""
    outdir.mkdir(parents=True, exist_ok=True)
    keys, values = make_items(n, seed=5)
    report = io.StringIO()
    report.write(phase_breakdown(env, n))
    for kind in _profilers():
        log(f"profile ({kind}): push of {n:,} keys")
        db = ebooklet.open(env.conn("prof"), env.path("prof"), "c", value_serializer=None)
        for k, v in zip(keys, values, strict=True):
            db[k] = v
        db.sync()
        _profile_call(kind, f"push-{kind}", lambda db=db: db.changes().push(), outdir, report)
        db.close()

        log(f"profile ({kind}): ebooklet writes and reads of {n:,} keys")
        conn, path = env.conn("prof-local"), env.path("prof-local")
        db = ebooklet.open(conn, path, "c", value_serializer=None)

        def writes(db: Any = db) -> None:
            for k, v in zip(keys, values, strict=True):
                db[k] = v
            db.close()

        _profile_call(kind, f"local_write-{kind}", writes, outdir, report)
        db = ebooklet.open(conn, path, "r")

        def reads(db: Any = db) -> None:
            for k in keys:
                db[k]

        _profile_call(kind, f"local_read-{kind}", reads, outdir, report)
        db.close()
    text = report.getvalue()
    (outdir / "profile.txt").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=pathlib.Path, help="where the profiles go")
    ap.add_argument("--server", choices=["moto", "seaweedfs"], default="moto")
    ap.add_argument("--quick", action="store_true", help="10,000 keys instead of 100,000")
    ap.add_argument("--repeat", type=int, default=3,
                    help="pushes under the phase timers (the fastest is shown)")
    args = ap.parse_args(argv)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="ebooklet-profile-"))
    server = start_server(args.server, workdir)
    try:
        env = Env(server, server.make_bucket(), workdir / "local", args.quick, max(1, args.repeat))
        env.workdir.mkdir()
        text = profile_all(env, 10_000 if args.quick else 100_000, args.outdir)
        print(text.split("\n==== ", 2)[1] if "\n==== " in text else text)
        log(f"profiles written to {args.outdir} (all of it in {args.outdir / 'profile.txt'})")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
