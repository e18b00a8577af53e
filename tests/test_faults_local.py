"""Damage to the local side and bad input: issue 8's local defects, one test each.

Damage is done the way it happens: a child process SIGKILLed in the middle of its writes
(tests/subprocs.py), and plain file operations (truncation) for what a power loss or a bad copy
leaves behind. Each test asserts the behaviour issue 8 asks for, and failed before its fixes.
The remote is a local folder: these
defects do not depend on the transport.
"""

from __future__ import annotations

import datetime
import os
import signal
import textwrap

import pytest

import ebooklet

from .subprocs import python

#: booklet's metadata key and its two application slots (booklet.utils): hidden from
#: iteration, so a user key with one of these names is silently mishandled.
BOOKLET_METADATA_KEY = "adb01ebc1ba3433eb043527"
BOOKLET_SLOT_KEYS = ("7c40d2ea915b4f3a8e6d201", "f19a5c3d7e2b48069ab34c5")


def seed(conn, path, data, value_serializer="str") -> None:
    with ebooklet.open(conn, path, "c", value_serializer=value_serializer) as db:
        db.update(data)
        assert db.changes().push().committed


def remote_items(conn, path) -> dict:
    with ebooklet.open(conn, path, "r", allow_pickle=True) as reader:
        return dict(reader.items())


def kill_when_ready(code: str) -> None:
    """Run ``code`` in a child that prints "ready" and waits; SIGKILL it there."""
    proc = python(textwrap.dedent(code) + '\nprint("ready", flush=True)\ninput()\n')
    try:
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
        proc.stdin.close()


# -- crashes and damaged files ---------------------------------------------------------------


def test_the_open_after_a_crash_rebuild_works_and_keeps_acknowledged_writes(tmp_path):
    conn, path = tmp_path / "remote" / "db", tmp_path / "a.blt"
    seed(conn, path, {f"s{i}": f"seed {i}" for i in range(10)}, value_serializer="pickle")
    # Killed mid-write: booklet has flushed part of the writes (its 4 MiB buffer overflowed)
    # but its header still counts the keys of the last sync, so the next open must rebuild.
    kill_when_ready(f"""
        import ebooklet
        db = ebooklet.open({str(conn)!r}, {str(path)!r}, "w", allow_pickle=True)
        db["acked"] = "synced before the crash"
        db.sync()
        for i in range(1100):
            db[f"unsynced{{i}}"] = b"x" * 4096
    """)
    with ebooklet.open(conn, path, "w", allow_pickle=True) as db:  # the rebuild
        assert db["acked"] == "synced before the crash"
    with ebooklet.open(conn, path, "w", allow_pickle=True) as db:  # the open after it
        assert db["acked"] == "synced before the crash"
        assert "acked" in db.changes().push().keys
    assert remote_items(conn, tmp_path / "r.blt")["acked"] == "synced before the crash"


def test_a_truncated_data_file_never_deletes_the_remote_keys(tmp_path):
    conn, path = tmp_path / "remote" / "db", tmp_path / "a.blt"
    data = {f"k{i:03d}": f"value {i}" * 10 for i in range(50)}
    seed(conn, path, data)
    os.truncate(path, path.stat().st_size // 2)  # a bad copy, a full disk
    try:
        with ebooklet.open(conn, path, "w", allow_pickle=True) as db:
            db.changes().push()
    except ebooklet.EbookletError:
        pass  # refusing the damaged file is right too
    assert remote_items(conn, tmp_path / "r.blt") == data


def test_writes_after_a_torn_last_record_are_pushed(tmp_path):
    conn, path = tmp_path / "remote" / "db", tmp_path / "a.blt"
    data = {f"k{i:03d}": b"v%03d" % i for i in range(20)}
    seed(conn, path, data, value_serializer=None)
    # A session overwrites k019 with a big value; booklet writes it out (a bigger write
    # overflows its buffer) and the machine loses power before anything is synced.
    kill_when_ready(f"""
        import ebooklet
        db = ebooklet.open({str(conn)!r}, {str(path)!r}, "w", allow_pickle=True)
        db["k019"] = b"t" * 4000
        db["filler"] = b"f" * (5 * 2**20)
    """)
    os.truncate(path, path.stat().st_size - 2000)  # the tail of k019's record never hit the disk
    with ebooklet.open(conn, path, "w", allow_pickle=True) as db:
        db["later"] = b"written after the crash"
        db["k000"] = b"changed after the crash"
        assert "later" in db and len(db) == len(list(db.keys()))
    with ebooklet.open(conn, path, "w", allow_pickle=True) as db:
        db.changes().push()
    remote = remote_items(conn, tmp_path / "r.blt")
    assert remote.get("later") == b"written after the crash"
    assert remote.get("k000") == b"changed after the crash"
    # The writes before the kill were never acknowledged: each may be kept whole (the journal
    # of pending changes had it intact) or dropped, never pushed torn.
    assert remote.get("k019") in (data["k019"], None, b"t" * 4000)
    assert remote.get("filler") in (None, b"f" * (5 * 2**20))
    assert set(remote) - {"filler"} >= set(data) - {"k019"}


# -- input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("lone\udc80surrogate", b"v"), ("long" + "k" * 70_000, b"v"), ("strvalue", "a str, not bytes")],
    ids=["lone-surrogate-key", "70KB-key", "str-value-in-bytes-db"],
)
def test_a_key_or_value_booklet_cannot_store_raises_an_ebooklet_error_naming_the_key(tmp_path, key, value):
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "c", value_serializer=None) as db:
        with pytest.raises(ebooklet.EbookletError) as err:
            db[key] = value
        assert key[:4] in str(err.value)
        assert list(db.keys()) == [] and len(db) == 0


def _open(tmp_path, **kwargs):
    return ebooklet.open(tmp_path / "remote" / "db", tmp_path / "x.blt", **kwargs)


@pytest.mark.parametrize(
    ("call", "builtin"),
    [
        (lambda db, tmp: db.__setitem__(1, b"v"), TypeError),
        (lambda db, tmp: db[1], TypeError),
        (lambda db, tmp: db.set("k", b"v", timestamp=1.5), TypeError),
        (lambda db, tmp: db.set("k", b"v", timestamp=datetime.datetime(2020, 1, 1)), ValueError),
        (lambda db, tmp: db.changes().push(on_conflict="bogus"), ValueError),
        (lambda db, tmp: _open(tmp, flag="x"), ValueError),
        (lambda db, tmp: _open(tmp, flag="c", value_serializer="no-such-serializer"), ValueError),
        (lambda db, tmp: _open(tmp, flag="c", remote_lock="always"), ValueError),
    ],
    ids=["int-key-set", "int-key-get", "float-timestamp", "naive-datetime", "unknown-policy",
         "unknown-flag", "unknown-serializer", "unknown-remote-lock"],
)
def test_argument_errors_are_ebooklet_errors_and_the_matching_builtin(tmp_path, call, builtin):
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "c", value_serializer=None) as db:
        with pytest.raises(ebooklet.EbookletError) as err:
            call(db, tmp_path)
    assert isinstance(err.value, builtin)


@pytest.mark.parametrize("key", [BOOKLET_METADATA_KEY, *BOOKLET_SLOT_KEYS],
                         ids=["metadata", "slot1", "slot2"])
@pytest.mark.parametrize(("serializer", "value"), [(None, b"user value"), ("pickle", {"user": "value"})],
                         ids=["bytes", "pickle"])
def test_a_reserved_key_is_refused_or_round_trips_as_an_ordinary_key(tmp_path, key, serializer, value):
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer=serializer) as db:
        db.set_metadata({"meta": 1})
        try:
            db[key] = value
            stored = True
        except ebooklet.EbookletError:
            stored = False  # refused with a clear error: one of the two right answers
        assert len(db) == len(list(db.keys())) == int(stored)
        assert db.get_metadata() == {"meta": 1}
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "r.blt", "r", allow_pickle=True) as reader:
        assert reader.get_metadata() == {"meta": 1}
        assert dict(reader.items()) == ({key: value} if stored else {})


@pytest.mark.parametrize("how", ["discard", "pull taking the remote's side"])
def test_a_kill_while_a_pending_change_is_given_up_never_turns_it_into_a_delete(tmp_path, how):
    """A discard, or a pull that resolves a conflict with the remote's value, removes the
    pending value from the data file before it forgets the journal's record. Killed in
    between (here at the forgetting), the next open must not take the missing value for a
    delete made with plain booklet: that delete would reach the remote at the next push. The
    change is replayed instead (it was never given up), and the remote keeps its value."""
    conn, path = tmp_path / "remote" / "db", tmp_path / "a.blt"
    with ebooklet.open(conn, path, "n", value_serializer="pickle") as db:
        db.update({"k": "remote value", "other": "x"})
        db.changes().push()
    with ebooklet.open(conn, path, "w", allow_pickle=True) as db:
        db["k"] = "local edit"  # closed: the data file's sync covers the journal's record of k
    if how == "discard":
        give_up = 'db.changes().discard(["k"])'
    else:
        with ebooklet.open(conn, tmp_path / "other.blt", "w", allow_pickle=True) as other:
            other["k"] = "another writer's value"
            other.changes().push()
        give_up = 'db.changes().pull(on_conflict="remote")'
    proc = python(f"""
        import os, signal, ebooklet
        from ebooklet.local.store import LocalStore
        def killed(self, keys=None):
            os.kill(os.getpid(), signal.SIGKILL)  # after the value was dropped, before forgetting
        LocalStore.clear_touched = killed
        db = ebooklet.open({str(conn)!r}, {str(path)!r}, "w", allow_pickle=True)
        {give_up}
    """)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    with ebooklet.open(conn, path, "w", allow_pickle=True) as db:
        assert db["k"] == "local edit"
        assert [(c.key, c.local) for c in db.changes().iter_changes() if c.local] == [("k", "modified")]
    with ebooklet.open(conn, tmp_path / "check.blt", "r", allow_pickle=True) as reader:
        assert reader["k"] in ("remote value", "another writer's value")
