"""The durability contract of the local side (issue 15): every write and delete that
``db[k] = v`` or ``del db[k]`` acknowledged survives the process ending without ``close()``
(a plain exit, ``sys.exit``, an uncaught exception), and a SIGKILL once the call returned.

Each session runs in a child process (tests/subprocs.py); the parent then reopens the local
file and checks its contents exactly, that ``changes()`` lists every change as local, and that
a push sends the writes as writes and the deletes as deletes (a delete made through ebooklet
is never taken for one made with plain booklet, which would stop the push with
``MassDeleteError``).
"""

from __future__ import annotations

import logging
import pathlib
import signal
from typing import Any

import pytest

import ebooklet

from .subprocs import conn_code, python

#: Keys on the remote before the child's session (the "large" sessions edit and delete some).
SEEDED = [f"seed{i:03d}" for i in range(40)]
#: session name -> (new keys written, seeded keys modified, seeded keys deleted). The "new"
#: sessions write to a new file (no seed); "large-edit" edits a file synced with SEEDED and
#: deletes three quarters of the remote's keys: pushed as deletes they are fine, taken for
#: deletes made with plain booklet they exceed max_delete's 50 %.
SESSIONS = {"small-new": (20, 0, 0), "large-new": (240, 0, 0), "large-edit": (240, 5, 30)}
ENDINGS = {
    "plain-exit": "",
    "sys-exit": "import sys; sys.exit(3)",
    "exception": "raise RuntimeError('the script failed')",
}
#: What each ending makes the child's exit status.
STATUS = {"plain-exit": 0, "sys-exit": 3, "exception": 1}


def _value(key: str, version: int = 0) -> dict[str, Any]:
    return {"key": key, "version": version, "pad": "x" * 40}


def _seed(conn: Any, tmp_path: pathlib.Path, local: pathlib.Path) -> dict[str, Any]:
    """Push SEEDED from ``local`` (which stays synced with the remote); return the contents."""
    items = {k: _value(k) for k in SEEDED}
    with ebooklet.open(conn, local, "c", value_serializer="pickle") as db:
        db.update(items)
        assert db.changes().push().keys == sorted(items)
    return items


def _session(size: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """The writes and deletes of a session: (key -> value written, new keys, deleted keys)."""
    n_new, n_modified, n_deleted = SESSIONS[size]
    writes = {f"new{i:04d}": _value(f"new{i:04d}", 1) for i in range(n_new)}
    writes |= {k: _value(k, 2) for k in SEEDED[:n_modified]}
    deleted = SEEDED[len(SEEDED) - n_deleted :]
    return writes, sorted(k for k in writes if k.startswith("new")), deleted


def _child_code(conn: Any, local: pathlib.Path, writes: dict[str, Any], deleted: list[str], tail: str) -> str:
    """A script that writes ``writes`` one by one, deletes ``deleted``, and runs ``tail``
    without ever calling sync() or close()."""
    return f"""
        import ebooklet
        db = ebooklet.open({conn_code(conn)}, {str(local)!r}, "c", value_serializer="pickle")
        for key, value in {writes!r}.items():
            db[key] = value
        for key in {deleted!r}:
            del db[key]
        print("done", flush=True)
        {tail}
    """


def _remote_items(conn: Any, tmp_path: pathlib.Path) -> dict[str, Any]:
    """The remote's contents, read through a new local file."""
    check = tmp_path / f"check-{len(list(tmp_path.glob('check-*.blt')))}.blt"
    with ebooklet.open(conn, check, "r", value_serializer="pickle") as db:
        return dict(db.items())


def _check_reopened(
    conn: Any, tmp_path: pathlib.Path, local: pathlib.Path, base: dict[str, Any], writes: dict[str, Any],
    new: list[str], deleted: list[str],
) -> None:
    """Reopen ``local``, synced with ``base`` before a session wrote ``writes`` (``new`` of
    them new keys) and deleted ``deleted``: it holds the result exactly, ``changes()`` lists
    every change of the session as local, and a push commits them, deletes as deletes."""
    expected = {k: v for k, v in (base | writes).items() if k not in deleted}
    local_changes = {k: "added" if k in new else "modified" for k in writes}
    local_changes |= dict.fromkeys(deleted, "deleted")
    with ebooklet.open(conn, local, "w") as db:
        assert len(db) == len(expected), f"{len(expected) - len(db)} acknowledged write(s) lost"
        assert dict(db.items()) == expected
        listed = {c.key: c.local for c in db.changes().iter_changes() if c.side == "local"}
        assert listed == local_changes
        result = db.changes().push()  # MassDeleteError here: the deletes were lost
        written = sorted(k for k, kind in local_changes.items() if kind != "deleted")
        assert (result.keys, result.deleted) == (written, sorted(deleted))
        assert list(db.changes().iter_changes()) == []
    assert _remote_items(conn, tmp_path) == expected


#: Every ending for the small and the large session; the large new file on a plain exit.
CASES = [(size, ending) for size in ("small-new", "large-edit") for ending in ENDINGS]
CASES.append(("large-new", "plain-exit"))


@pytest.mark.parametrize(("size", "ending"), CASES)
def test_writes_and_deletes_survive_an_exit_without_close(tmp_path, size, ending):
    conn = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    base = _seed(conn, tmp_path, local) if size == "large-edit" else {}
    writes, new, deleted = _session(size)
    proc = python(_child_code(conn, local, writes, deleted, ENDINGS[ending]))
    out, err = proc.communicate(timeout=120)
    assert out.strip() == "done", err
    assert proc.returncode == STATUS[ending], err
    _check_reopened(conn, tmp_path, local, base, writes, new, deleted)


@pytest.mark.parametrize("remote", ["folder", "moto"], indirect=True)
def test_writes_acknowledged_before_a_sigkill_survive_it(tmp_path, remote):
    """The journal record reaches the OS before ``db[k] = v`` returns: a SIGKILL right after
    the last call loses nothing (no group-commit window is stated, so none is allowed)."""
    conn = remote.conn()
    local = tmp_path / "a.blt"
    base = _seed(conn, tmp_path, local)
    writes, new, deleted = _session("large-edit")
    proc = python(_child_code(conn, local, writes, deleted, "import sys; sys.stdin.readline()"))
    assert proc.stdout.readline().strip() == "done", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    _check_reopened(conn, tmp_path, local, base, writes, new, deleted)


def test_a_sigkill_after_sync_loses_nothing(tmp_path):
    conn = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    base = _seed(conn, tmp_path, local)
    writes, new, deleted = _session("large-edit")
    tail = "db.sync(); print('synced', flush=True); import sys; sys.stdin.readline()"
    proc = python(_child_code(conn, local, writes, deleted, tail))
    assert proc.stdout.readline().strip() == "done", proc.stderr.read()
    assert proc.stdout.readline().strip() == "synced", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    _check_reopened(conn, tmp_path, local, base, writes, new, deleted)


def test_a_session_that_ends_without_close_twice_in_a_row_keeps_both(tmp_path):
    """The replay on open is itself durable: a second session that also ends without close()
    keeps the first session's writes as well as its own."""
    conn = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    first = {f"first{i:03d}": _value(f"first{i:03d}") for i in range(50)}
    second = {f"second{i:03d}": _value(f"second{i:03d}") for i in range(50)}
    for writes in (first, second):
        proc = python(_child_code(conn, local, writes, [], ""))
        out, err = proc.communicate(timeout=120)
        assert (out.strip(), proc.returncode) == ("done", 0), err
    _check_reopened(conn, tmp_path, local, {}, first | second, sorted(first | second), [])


def test_writes_survive_a_sigterm(tmp_path):
    """SIGTERM (how a kernel or a service manager stops a process that does not exit when
    asked) ends the process without running its exit handlers: only the journal keeps them."""
    conn = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    base = _seed(conn, tmp_path, local)
    writes, new, deleted = _session("large-edit")
    proc = python(_child_code(conn, local, writes, deleted, "import sys; sys.stdin.readline()"))
    assert proc.stdout.readline().strip() == "done", proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    _check_reopened(conn, tmp_path, local, base, writes, new, deleted)


def test_a_write_or_delete_the_journal_refused_changes_nothing(tmp_path):
    """The journal is written before the data file: when the journal cannot take a change
    (here the file-size limit of the process, as a full disk would), the call raises and the
    data file is left as it was, in the session and after reopening. The other order would
    leave the data file holding a change that raised and that the journal does not list."""
    conn = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    code = f"""
        import os, resource, signal
        import ebooklet
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises EFBIG
        journal = {str(local.with_name(local.name + ".ebooklet") / "journal.log")!r}
        db = ebooklet.open({conn_code(conn)}, {str(local)!r}, "c", value_serializer="str", n_buckets=1009)
        # A journal larger than the offsets in the data file that a delete of "kept" writes
        # to (its block, its bucket, the header), so that the limit, which applies to every
        # file, refuses the journal only.
        db["kept"] = "old"
        db.sync()
        db.update({{f"big{{i}}": "x" * 100_000 for i in range(10)}})
        db.sync()
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(journal), resource.RLIM_INFINITY))
        size = os.path.getsize(journal)
        changes = ("db['kept'] = 'refused'", "db['refused'] = 'refused'", "del db['kept']",
                   "db['kept'] = 'refused' * 20_000")  # a large value: written with writev
        for change in changes:
            try:
                exec(change)
            except OSError:
                pass
            else:
                raise SystemExit("the journal took a change past the limit: " + change)
        # Room for part of a large value's record: the part written is taken back.
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 5000, resource.RLIM_INFINITY))
        try:
            db['kept'] = 'refused' * 20_000
        except OSError:
            pass
        else:
            raise SystemExit("the journal took a large change past the limit")
        if os.path.getsize(journal) != size:
            raise SystemExit("a part of a refused record was left in the journal")
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print(sorted(db), db.get("kept"), flush=True)
        db.close()
    """
    proc = python(code)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    big = {f"big{i}": "x" * 100_000 for i in range(10)}
    assert out.splitlines() == [f"{sorted([*big, 'kept'])} old"]
    with ebooklet.open(conn, local, "w") as db:
        assert dict(db.items()) == {"kept": "old"} | big
        assert {c.key: c.local for c in db.changes().iter_changes()}["kept"] == "added"
        assert "refused" not in db


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_session_that_ends_without_close_is_synced_at_exit(tmp_path, ending, caplog):
    """The exit handler syncs a database left open (while booklet's files are still open), so
    the next open finds a synced file and replays nothing."""
    conn = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    writes, _, _ = _session("small-new")
    proc = python(_child_code(conn, local, writes, [], ENDINGS[ending]))
    out, err = proc.communicate(timeout=120)
    assert (out.strip(), proc.returncode) == ("done", STATUS[ending]), err
    assert "could not sync at exit" not in err
    with caplog.at_level(logging.WARNING, logger="ebooklet.local"):
        with ebooklet.open(conn, local, "r") as db:
            assert dict(db.items()) == writes
    assert [r.getMessage() for r in caplog.records if r.name == "ebooklet.local"] == []


def test_a_change_the_journal_took_only_in_part_leaves_no_trace(tmp_path, caplog):
    """A disk that fills in the middle of a journal record: the call raises, and the part
    written is taken back, so that later changes follow the last whole record (left there,
    it would be read as damage amid acknowledged changes at the next open)."""
    conn = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    code = f"""
        import os, resource, signal
        import ebooklet
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is cut short
        journal = {str(local.with_name(local.name + ".ebooklet") / "journal.log")!r}
        db = ebooklet.open({conn_code(conn)}, {str(local)!r}, "c", value_serializer="str")
        db["kept"] = "old"
        db.sync()
        db["second"] = "s"  # the session is marked unsynced: the next write goes to the journal only
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(journal) + 10, resource.RLIM_INFINITY))
        try:
            db["refused"] = "x" * 1000
        except OSError:
            pass
        else:
            raise SystemExit("the journal took a change past the limit")
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        db["after"] = "a"
        db.close()
    """
    proc = python(code)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    with caplog.at_level(logging.WARNING, logger="ebooklet"):
        with ebooklet.open(conn, local, "w") as db:
            assert dict(db.items()) == {"kept": "old", "second": "s", "after": "a"}
            assert sorted(c.key for c in db.changes().iter_changes()) == ["after", "kept", "second"]
    assert caplog.text == ""
