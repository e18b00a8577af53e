"""Local files written by every earlier version of this project open and push (issue 15).

Each earlier version is taken from the project's own git history, found by what changed in
it rather than by a fixed hash: the oldest released remote layout (relative object names), the last commit of
format 1 (before the head of format version 2), the first of format 2, and the last commit
whose local sync state was version 1 (touched.log, before the journal). Each is exported with
``git archive`` and run in a child process that makes a folder remote, pushes, and leaves
pending changes (writes, a change and a delete); today's code then opens that local file,
reads every key, lists the pending changes, and pushes them; ``ebooklet status`` on it works.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import ebooklet

from .subprocs import ROOT

REPO = pathlib.Path(ROOT)
SYNCED = {f"k{i:02d}": {"n": i} for i in range(20)}
PENDING_WRITES = {f"p{i}": {"pending": i} for i in range(5)} | {"k00": {"n": "changed"}}
PENDING_DELETE = "k01"
EXPECTED = {k: v for k, v in (SYNCED | PENDING_WRITES).items() if k != PENDING_DELETE}
LOCAL_CHANGES = {k: "added" for k in PENDING_WRITES if k.startswith("p")} | {
    "k00": "modified", PENDING_DELETE: "deleted",
}


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def _first_adding(text: str, path: str) -> str:
    """The oldest commit that changed how often ``text`` occurs in ``path`` (it added it)."""
    found = _git("log", "--reverse", "--format=%H", "-S", text, "--", path).splitlines()
    assert found, f"no commit in the history adds {text!r} to {path} (a shallow clone?)"
    return found[0]


#: Earlier versions: name -> how to find its commit in the history.
GENERATIONS = {
    # The first round's earliest commits named objects by full key; that layout changed within
    # the round, before anything landed, so the oldest released layout is the first with
    # relative names.
    "oldest-released-layout": lambda: _first_adding(
        "names inside the head and the index are relative", "ebooklet/format.py"
    ),
    "last-format-1": lambda: _first_adding("FORMAT_VERSION = 2", "ebooklet/format.py") + "^",
    "first-format-2": lambda: _first_adding("FORMAT_VERSION = 2", "ebooklet/format.py"),
    "last-format-2": lambda: _first_adding("FORMAT_VERSION = 3", "ebooklet/format/names.py") + "^",
    "last-state-version-1": lambda: _first_adding("STATE_VERSION = 2", "ebooklet/local.py") + "^",
    "last-state-version-3": lambda: _first_adding("STATE_VERSION = 4", "ebooklet/local/state.py") + "^",
}


def _has_history() -> bool:
    return (REPO / ".git").exists() and shutil.which("git") is not None


@functools.cache
def _commit(generation: str) -> str:
    return _git("rev-parse", GENERATIONS[generation]())


def _export(commit: str, into: pathlib.Path) -> pathlib.Path:
    """The ``ebooklet`` package as it was at ``commit``, in ``into``."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "ebooklet"], cwd=REPO, capture_output=True, check=True,
        timeout=60,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=60)
    return into


def run_old_code(code_dir: pathlib.Path, session: str) -> None:
    """Run ``session`` (Python lines using ``ebooklet``) in a child process with the old code
    exported to ``code_dir``, and only it, importable."""
    script = f"import ebooklet\nassert ebooklet.__file__.startswith({str(code_dir)!r}), ebooklet.__file__\n"
    script += textwrap.dedent(session) + "\nprint('written', flush=True)\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env={**env, "PYTHONPATH": str(code_dir)},
        cwd=code_dir, capture_output=True, text=True, timeout=120,
    )
    assert proc.stdout.strip() == "written", proc.stderr


def _old_session(code_dir: pathlib.Path, remote: pathlib.Path, local: pathlib.Path) -> None:
    """With the old code only: push SYNCED, then leave PENDING_WRITES and the delete pending."""
    run_old_code(code_dir, f"""
        db = ebooklet.open({str(remote)!r}, {str(local)!r}, "c", value_serializer="pickle")
        db.update({SYNCED!r})
        assert db.changes().push()
        db.update({PENDING_WRITES!r})
        del db[{PENDING_DELETE!r}]
        db.close()
    """)


def _ebooklet_cli(cwd: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XDG_", "PYTHONPATH"))}
    env.update(PYTHONPATH=ROOT, HOME=str(cwd / "home"), XDG_CACHE_HOME=str(cwd / "cache"))
    return subprocess.run(
        [sys.executable, "-m", "ebooklet", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )


@pytest.fixture(params=list(GENERATIONS))
def old_file(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(remote, local) as an earlier version of the project left them."""
    if not _has_history():
        pytest.skip(f"no git history at {REPO}: earlier versions cannot be exported")
    code_dir = _export(_commit(request.param), tmp_path / "old-code")
    remote, local = tmp_path / "remote" / "db", tmp_path / "old.blt"
    _old_session(code_dir, remote, local)
    return remote, local


def _remote_items(remote: pathlib.Path, tmp_path: pathlib.Path) -> dict[str, Any]:
    with ebooklet.open(remote, tmp_path / "check.blt", "r", value_serializer="pickle") as db:
        return dict(db.items())


def test_a_local_file_of_an_earlier_version_opens_reads_and_pushes(old_file, tmp_path):
    remote, local = old_file
    with ebooklet.open(remote, local, "w") as db:  # today, format 1: a raw TypeError
        assert dict(db.items()) == EXPECTED
        assert {c.key: c.local for c in db.changes().iter_changes()} == LOCAL_CHANGES
        result = db.changes().push()
        assert (result.keys, result.deleted) == (sorted(PENDING_WRITES), [PENDING_DELETE])
        assert list(db.changes().iter_changes()) == []
    assert _remote_items(remote, tmp_path) == EXPECTED
    with ebooklet.open(remote, local, "r") as db:  # and it keeps opening
        assert dict(db.items()) == EXPECTED


def test_a_local_file_of_an_earlier_version_opens_read_only_first(old_file, tmp_path):
    """The first open of the old file by today's code is read-only: it cannot rewrite the old
    state, and still reads and lists everything."""
    remote, local = old_file
    with ebooklet.open(remote, local, "r") as db:
        assert dict(db.items()) == EXPECTED
        assert {c.key: c.local for c in db.changes().iter_changes()} == LOCAL_CHANGES
    with ebooklet.open(remote, local, "w") as db:
        assert db.changes().push().deleted == [PENDING_DELETE]
    assert _remote_items(remote, tmp_path) == EXPECTED


def test_ebooklet_status_on_a_local_file_of_an_earlier_version(old_file, tmp_path):
    remote, local = old_file
    run = _ebooklet_cli(tmp_path, "status", "--json", str(remote), str(local))
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 0, run.stderr
    listed = {c["key"]: c["local"] for c in json.loads(run.stdout)["changes"]}
    assert listed == LOCAL_CHANGES
