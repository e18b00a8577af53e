"""Nothing on the local side is reset silently (issue 15): a data file that is missing while
its sync state holds pending changes is recovered (from a leftover rebuilt copy, or from the
journal, which holds the values) or refused with advice, never replaced by an empty file; and
a rebuild of a damaged data file never leaves a moment with no file at the path.

The pending changes of every test are those of ``_pending_session``: writes of new keys, a
changed key and deletes, made through ebooklet and closed without a push. Crashes inside a
rebuild use the named crash points of ``EBOOKLET_CRASH_AT=<name>`` (the process SIGKILLs
itself there), in a child process.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import ebooklet
from ebooklet.errors import EbookletError

from .subprocs import ROOT

SEEDED = [f"seed{i:02d}" for i in range(30)]
WRITTEN = {f"new{i:02d}": f"MARKER-new-value-{i:02d}" for i in range(10)} | {"seed00": "MARKER-changed"}
DELETED = ["seed27", "seed28", "seed29"]
#: key -> how changes() must list it as a local change.
PENDING = {k: "added" for k in WRITTEN if k.startswith("new")} | {"seed00": "modified"} | dict.fromkeys(
    DELETED, "deleted"
)
EXPECTED = {k: f"seeded-{k}" for k in SEEDED if k not in DELETED} | WRITTEN


def _pending_session(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A remote holding SEEDED, and a local file synced with it that then holds WRITTEN and
    DELETED as pending changes (closed, not pushed). Every seeded value is cached locally."""
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "c", value_serializer="str") as db:
        db.update({k: f"seeded-{k}" for k in SEEDED})
        db.changes().push()
    with ebooklet.open(remote, local, "w") as db:
        db.update(WRITTEN)
        for key in DELETED:
            del db[key]
    return remote, local


def _remote_items(remote: pathlib.Path, tmp_path: pathlib.Path) -> dict[str, Any]:
    check = tmp_path / f"check-{time.monotonic_ns()}.blt"
    with ebooklet.open(remote, check, "r") as db:
        return dict(db.items())


def _check_recovered(remote: pathlib.Path, local: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """``local`` holds every pending change, lists them, and pushes them."""
    with ebooklet.open(remote, local, "w") as db:
        assert {c.key: c.local for c in db.changes().iter_changes() if c.side == "local"} == PENDING
        assert dict(db.items()) == EXPECTED
        result = db.changes().push()
        assert (result.keys, result.deleted) == (sorted(WRITTEN), DELETED)
    assert _remote_items(remote, tmp_path) == EXPECTED


def _state_files(local: pathlib.Path) -> dict[str, bytes]:
    folder = local.with_name(local.name + ".ebooklet")
    return {name: (folder / name).read_bytes() for name in ("journal.log", "mirror.log", "state.json")}


# -- a data file missing under pending changes ---------------------------------------------------


@pytest.mark.parametrize("flag", ["w", "c"])
def test_a_data_file_moved_away_is_recovered_from_the_journal(tmp_path, flag, caplog):
    remote, local = _pending_session(tmp_path)
    local.rename(tmp_path / "moved-away.blt")  # by hand: the state folder stays
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, flag) as db:
            # Today: a new empty file, the state folder (journal included) removed.
            assert {c.key: c.local for c in db.changes().iter_changes() if c.side == "local"} == PENDING
            assert all(db[k] == v for k, v in WRITTEN.items())
    assert any(r.levelname == "WARNING" for r in caplog.records), "the recovery is not silent"
    _check_recovered(remote, local, tmp_path)


def test_a_missing_data_file_with_nothing_pending_opens_as_a_copy_of_the_remote(tmp_path):
    """Nothing to lose (every change was pushed): the open makes a fresh copy, as before."""
    remote, local = _pending_session(tmp_path)
    with ebooklet.open(remote, local, "w") as db:
        db.changes().push()
    local.unlink()
    with ebooklet.open(remote, local, "w") as db:
        assert list(db.changes().iter_changes()) == []
        assert dict(db.items()) == EXPECTED


def test_a_leftover_rebuilt_copy_is_used(tmp_path):
    """A rebuild stopped between putting the damaged file aside and renaming the rebuilt copy
    in: the copy (which holds the cached values as well as the pending changes) is used."""
    remote, local = _pending_session(tmp_path)
    shutil.copyfile(local, local.with_name(local.name + ".rebuild"))
    local.rename(local.with_name(local.name + ".damaged-20260101T000000"))
    with ebooklet.open(remote, local, "w") as db:
        before = db.stats.snapshot()
        assert all(db[k] == f"seeded-{k}" for k in SEEDED[1:27])
        # The journal alone would have to fetch these: the rebuilt copy holds them.
        assert db.stats.snapshot() == before, "the seeded values were fetched: the rebuilt copy was not used"
    assert not local.with_name(local.name + ".rebuild").exists()
    _check_recovered(remote, local, tmp_path)


def test_a_partial_rebuilt_copy_beside_an_intact_data_file_is_not_used(tmp_path):
    """A rebuild killed while it wrote its copy leaves the original in place: the original is
    what opens, and the partial copy is not taken for the data file."""
    remote, local = _pending_session(tmp_path)
    partial = local.with_name(local.name + ".rebuild")
    partial.write_bytes(local.read_bytes()[: local.stat().st_size // 3])
    _check_recovered(remote, local, tmp_path)


def test_a_data_file_and_sync_state_both_gone_are_recovered_from_the_journal(tmp_path):
    """Only the journal says there are pending changes (state.json went with the data file,
    and no delete is pending for the mirror to hold): they are recovered, not reset."""
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "c", value_serializer="str") as db:
        db.update(WRITTEN)
    local.unlink()
    (local.with_name(local.name + ".ebooklet") / "state.json").unlink()
    with ebooklet.open(remote, local, "w") as db:
        assert dict(db.items()) == WRITTEN
        assert {c.key: c.local for c in db.changes().iter_changes()} == dict.fromkeys(WRITTEN, "added")


def test_a_partial_rebuilt_copy_is_not_taken_for_a_missing_data_file(tmp_path, caplog):
    """A rebuild killed while writing its copy, and the data file then lost: the partial copy
    is not put in place (it fails its check); the file is recovered from the journal."""
    remote, local = _pending_session(tmp_path)
    partial = local.with_name(local.name + ".rebuild")
    partial.write_bytes(local.read_bytes()[: local.stat().st_size // 3])
    local.unlink()
    with caplog.at_level("WARNING", logger="ebooklet"):
        _check_recovered(remote, local, tmp_path)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("now put in its place" in m for m in messages), messages
    assert any("rebuilt from the journal" in m for m in messages), messages


@pytest.mark.parametrize("flag", ["w", "c"])
def test_a_missing_data_file_that_nothing_can_recover_is_refused_and_the_journal_kept(tmp_path, flag):
    remote, local = _pending_session(tmp_path)
    folder = local.with_name(local.name + ".ebooklet")
    journal = folder / "journal.log"
    data = bytearray(journal.read_bytes())
    at = data.find(b"MARKER-new-value-03")
    assert at > 0, "the journal holds the pending values"
    data[at + 3] ^= 0x01  # the journal's record of the pending writes is damaged
    journal.write_bytes(bytes(data))
    local.unlink()
    before = _state_files(local)
    with pytest.raises(EbookletError) as caught:
        ebooklet.open(remote, local, flag)  # today: opens as a new, empty file
    assert str(folder) in str(caught.value), "the refusal says where the pending changes are"
    assert _state_files(local) == before, "the journal stays on disk, untouched"
    assert not local.exists()
    with pytest.raises(EbookletError):  # and it keeps refusing
        ebooklet.open(remote, local, flag)
    assert _state_files(local) == before


# -- a kill at every step of a rebuild ----------------------------------------------------------

CRASH_POINTS = ["rebuild:written", "rebuild:linked", "rebuild:replaced"]


def _damage(local: pathlib.Path) -> None:
    """Cut the last byte of the data file: opening finds it damaged and rebuilds it."""
    with open(local, "r+b") as f:
        f.truncate(local.stat().st_size - 1)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_kill_at_each_step_of_a_rebuild_loses_nothing(tmp_path, point):
    remote, local = _pending_session(tmp_path)
    _damage(local)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=ROOT, EBOOKLET_CRASH_AT=point)
    code = f"""
        import ebooklet
        ebooklet.open({str(remote)!r}, {str(local)!r}, "w").close()
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, f"the crash point {point} was not reached: {proc.stderr}"
    assert local.exists(), f"a kill at {point} left no file at {local}"
    _check_recovered(remote, local, tmp_path)
    with ebooklet.open(remote, local, "r") as db:  # and the repaired file opens again
        assert dict(db.items()) == EXPECTED


def test_a_rebuild_after_damage_keeps_the_pending_changes(tmp_path):
    """The same damage, no crash: the rebuild the crash tests interrupt does happen."""
    remote, local = _pending_session(tmp_path)
    _damage(local)
    _check_recovered(remote, local, tmp_path)
    assert list(tmp_path.glob("a.blt.damaged-*")), "the damaged original is kept"


def test_flag_n_keeps_the_unpushed_changes_of_the_old_file_aside(tmp_path, caplog):
    """flag='n' starts a new file, but the pending changes of the old one are moved aside,
    journal and all, never deleted; and the open says where they are."""
    remote, local = _pending_session(tmp_path)
    before = _state_files(local)
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "n", value_serializer="str") as db:
            assert len(db) == 0
    kept = list(tmp_path.glob("a.blt.ebooklet.replaced-*"))
    assert len(kept) == 1, "the old sync state folder is kept aside"
    assert {name: (kept[0] / name).read_bytes() for name in before} == before
    assert any(str(kept[0]) in r.getMessage() for r in caplog.records), "the open says where"
