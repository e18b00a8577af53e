"""After ``sync()`` or ``close()``, what the local side holds survives a power cut (issue 15):
the data file, the journal and its mirror, the presence bits, ``state.json``, and the folders
that name them are all fsynced after their last change.

This is the one place in the suite where a recorder stands in for a real fault. A power cut
drops what the kernel held in its page cache but had not written to the disk; a SIGKILL or
an exit (which the durability tests inflict for real) drops nothing the kernel holds, so no
fault this machine can inject tells an fsynced file from one that was only written. Cutting
the power needs a rig (a VM or a dm-flakey device) the suite does not have. What a power cut
would expose is an fsync missing or made too early, and that is exactly what the recorder
sees: every ``os.fsync`` call notes the state of what it synced (its inode, size and
modification time), and the test asserts that each file and folder, as it is after
``sync()``, is a state that was fsynced.
"""

from __future__ import annotations

import os
import pathlib
import threading
from typing import Any

import pytest

import ebooklet
from ebooklet.local import writeback
from ebooklet.remote import Remote, connect
from ebooklet.remote.wrapper import WrapperTransport

KEYS = [f"k{i:04d}" for i in range(300)]


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes whenever a file is written or replaced, or a folder's names change (not
    the change time: renaming a file fsynced under its temporary name changes that, and the
    rename is made durable by the fsync of its folder)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> set[tuple[int, int, int, int]]:
    """The states of every file and folder fsynced from now on (os.fsync, recorded)."""
    seen: set[tuple[int, int, int, int]] = set()
    real = os.fsync

    def fsync(fd: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        real(fd)
        seen.add(_identity(os.fstat(fd)))

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def _durable_things(local: pathlib.Path) -> list[pathlib.Path]:
    folder = local.with_name(local.name + ".ebooklet")
    bits = sorted(folder.glob("parts/*.bits"))
    assert bits, "the session set presence bits"
    things = [local, folder / "journal.log", folder / "mirror.log", folder / "state.json", *bits]
    return [*things, local.parent, folder, folder / "parts"]


def _not_fsynced(local: pathlib.Path, seen: set[tuple[int, int, int, int]]) -> list[str]:
    return [str(p) for p in _durable_things(local) if _identity(os.stat(p)) not in seen]


@pytest.mark.parametrize("end", ["sync", "close"])
def test_sync_and_close_fsync_every_file_and_folder_after_its_last_write(tmp_path, fsynced, end):
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer="str") as db:
        db.update({k: f"v-{k}" for k in KEYS})
        db.changes().push()
    local = tmp_path / "local" / "a.blt"
    local.parent.mkdir()
    db = ebooklet.open(conn, local, "w", value_serializer="str")
    try:
        # A session that changes each of them: fetched values (the data file, the presence
        # bits), a pending write and delete (the journal and its mirror), the state.
        assert [db[k] for k in KEYS[:50]] == [f"v-{k}" for k in KEYS[:50]]
        db["new"] = "written"
        del db[KEYS[100]]
        if end == "sync":
            db.sync()
            assert _not_fsynced(local, fsynced) == []
    finally:
        db.close()
    assert _not_fsynced(local, fsynced) == []


def test_a_rebuild_makes_each_rename_durable_before_the_next_step(tmp_path, monkeypatch):
    """A rebuild fsyncs the rebuilt copy, links the damaged file aside, fsyncs the folder,
    renames the copy over the path, and fsyncs the folder again: after a power cut at any
    moment the folder names the damaged original, and then the whole rebuilt file (the
    recorder here notes the order of those calls, which is what a power cut would test)."""
    conn = tmp_path / "remote" / "db"
    local = tmp_path / "local" / "a.blt"
    local.parent.mkdir()
    with ebooklet.open(conn, local, "c", value_serializer="str") as db:
        db.update({k: f"v-{k}" for k in KEYS})
    with open(local, "r+b") as f:  # cut the last byte: opening rebuilds the file
        f.truncate(local.stat().st_size - 1)
    folder = os.stat(local.parent).st_ino
    events: list[str] = []
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

    def fsync(fd: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        real_fsync(fd)
        if os.fstat(fd).st_ino == folder:
            events.append("fsync folder")
        elif os.readlink(f"/proc/self/fd/{fd}") == f"{local}.rebuild":
            events.append("fsync copy")

    def link(src: Any, dst: Any, **kw: Any) -> None:
        real_link(src, dst, **kw)
        if pathlib.Path(src) == local:
            events.append("link aside")

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        real_replace(src, dst, **kw)
        if pathlib.Path(dst) == local:
            events.append("replace")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "replace", replace)
    with ebooklet.open(conn, local, "w") as db:
        assert dict(db.items()) == {k: f"v-{k}" for k in KEYS}
    steps = [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]  # repeats as one
    start = steps.index("link aside")
    assert "fsync copy" in steps[:start], "the rebuilt copy is on disk before it is used"
    assert steps[start : start + 4] == ["link aside", "fsync folder", "replace", "fsync folder"]


def test_a_push_commits_only_changes_already_on_disk(tmp_path, monkeypatch, fsynced):
    """A push sends its changes to the disk while it streams them (a background fsync) and
    syncs before its commit: when the head's PUT goes out, the journal and the data file as
    they are then were fsynced, so a power cut after the commit cannot lose a change the
    remote acknowledges."""
    conn = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    folder = local.with_name(local.name + ".ebooklet")
    at_commit: list[list[str]] = []

    class Watching(WrapperTransport):
        def put(self, key, data, mode="overwrite"):  # type: ignore[no-untyped-def]
            if key == real.db_key:  # the commit
                things = [local, folder / "journal.log"]
                at_commit.append([str(p) for p in things if _identity(os.stat(p)) not in fsynced])
            return super().put(key, data, mode)

    # Without the write-back, only the sync before the commit makes them durable.
    monkeypatch.setattr(writeback.WriteBack, "start", lambda self: None)
    real = connect(conn)
    remote = Remote(Watching(real.transport), real.db_key, real.location)
    with ebooklet.open(remote, local, "c", value_serializer="str") as db:
        db.update({k: f"v-{k}" * 1000 for k in KEYS})
        db.changes().push()
        db["later"] = "x"
        del db[KEYS[0]]
        db.changes().push()
    assert at_commit == [[], []]


def _wait_for_write_back() -> None:
    for thread in threading.enumerate():
        if thread.name == "ebooklet-write-back":
            thread.join()


def test_bulk_writes_and_reads_are_written_back_before_the_sync(tmp_path, monkeypatch, fsynced):
    """Past WRITE_BACK_BYTES of large values written or fetched, the files' pages go to the
    disk in the background, so that the sync at the end finds them written."""
    monkeypatch.setattr(writeback, "WRITE_BACK_BYTES", 1 << 20)
    conn = tmp_path / "remote" / "db"
    big = {f"big{i}": os.urandom(200_000) for i in range(20)}  # 4 MB: large values

    def fsynced_with_values(path: pathlib.Path, start: int) -> bool:
        ino = os.stat(path).st_ino
        return any(s[1] == ino and s[2] > start + 1_000_000 for s in fsynced)

    with ebooklet.open(conn, tmp_path / "w.blt", "c") as db:
        start = os.stat(tmp_path / "w.blt").st_size
        db.update(big)
        _wait_for_write_back()
        assert fsynced_with_values(tmp_path / "w.blt", start), "written back before any sync"
        db.changes().push()
    local = tmp_path / "r.blt"
    with ebooklet.open(conn, local, "r") as db:
        start = os.stat(local).st_size
        assert dict(db.items()) == big
        _wait_for_write_back()
        assert fsynced_with_values(local, start), "fetched values written back before the sync"
