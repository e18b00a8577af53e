"""A database left open when the interpreter exits is synced at exit.

The journal already holds every acknowledged change (tests/test_local_durability.py); syncing
at exit saves the next open a check and replay of the data file, and says nothing on the way
out. A SIGKILL skips it, so the next open replays the journal (and says so).
"""

from __future__ import annotations

import logging

import pytest

import ebooklet

from .subprocs import python

REPLAY = "ended without syncing"


def _child(tmp_path, ending: str) -> tuple[int, str]:
    proc = python(f"""
        import os, signal, sys
        import ebooklet
        db = ebooklet.open({str(tmp_path / "remote" / "db")!r}, {str(tmp_path / "a.blt")!r}, "c",
                           value_serializer="pickle")
        for i in range(300):
            db[f"k{{i}}"] = i
        {ending}
    """)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("ending", ["", "raise SystemExit(3)"])
def test_a_database_left_open_at_exit_is_synced_and_reopens_without_a_replay(tmp_path, caplog, ending):
    status, err = _child(tmp_path, ending)
    assert status == (3 if ending else 0), err
    assert err == "", "exiting with a database open prints nothing"
    with caplog.at_level(logging.WARNING, logger="ebooklet.local"):
        with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "w") as db:
            assert dict(db.items()) == {f"k{i}": i for i in range(300)}
    assert REPLAY not in caplog.text
    assert caplog.records == []


def test_a_killed_session_is_replayed_from_the_journal_at_the_next_open(tmp_path, caplog):
    status, err = _child(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")
    assert status == -9, err
    with caplog.at_level(logging.WARNING, logger="ebooklet.local"):
        with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "w") as db:
            assert dict(db.items()) == {f"k{i}": i for i in range(300)}
    assert REPLAY in caplog.text
