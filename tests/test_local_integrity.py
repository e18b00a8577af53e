"""The local file is checked, not trusted: damage to the data file and its side files is
found, repaired from the journal and the remote, and never pushed (issue 8, items 8-13).

Damage is done with plain file operations, crashes with SIGKILL of a child process. The
remote is a local folder: what is tested here is the local side.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct

import booklet
import pytest

import ebooklet
from ebooklet.local.state import STATE_VERSION

from .subprocs import python

VALUE = "value-of-{0}-" * 4


def _value(key: str) -> str:
    return VALUE.format(key)


def _seed(tmp_path, keys, path="seed.blt"):
    """A remote database holding ``keys`` (str values), pushed from a file that caches them."""
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(remote, tmp_path / path, "c", value_serializer="str") as db:
        db.update({k: _value(k) for k in keys})
        db.changes().push()
    return remote


def _remote_items(remote, tmp_path):
    check = tmp_path / "check.blt"
    for p in tmp_path.glob("check.blt*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    with ebooklet.open(remote, check, "r", allow_pickle=True) as db:
        return dict(db.items())


def _local_changes(db):
    return sorted((c.key, c.local) for c in db.changes().iter_changes() if c.local)


def _flip(path, offset, mask=0xFF, keep_mtime=False):
    """XOR one byte of a file, as a bad disk or a bad copy would."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _find(path, needle: bytes) -> int:
    data = path.read_bytes()
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, f"{needle!r} is not in {path} exactly once"
    return at


def _kill_child(code: str) -> None:
    """Run ``code`` in a child that prints "ready" when it reaches the point to die at."""
    proc = python(code)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


# -- item 8: the open after a crash rebuild ------------------------------------------------


def test_a_file_rebuilt_after_a_kill_mid_write_opens_again_and_again(tmp_path, caplog):
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    _kill_child(f"""
        import sys, ebooklet
        db = ebooklet.open({str(remote)!r}, {str(local)!r}, "c", value_serializer="pickle")
        for i in range(300):
            db[f"synced{{i}}"] = {{"i": i}}
        db.sync()
        for i in range(3000):  # enough to make booklet write its buffer to the file
            db[f"unsynced{{i}}"] = "x" * 2000
        print("ready", flush=True)
        sys.stdin.readline()
    """)
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "w") as db:
            assert db["synced7"] == {"i": 7}
    assert "rebuilt" in caplog.text
    # The open after the rebuild used to fail ("How did you mess up value_serializer so bad?!").
    for flag in ("w", "r", "w"):
        with ebooklet.open(remote, local, flag) as db:
            assert all(db[f"synced{i}"] == {"i": i} for i in range(300))
    with ebooklet.open(remote, local, "w") as db:
        result = db.changes().push()
        assert {f"synced{i}" for i in range(300)} <= set(result.keys)
    items = _remote_items(remote, tmp_path)
    assert all(items[f"synced{i}"] == {"i": i} for i in range(300))
    assert all(v == "x" * 2000 for k, v in items.items() if k.startswith("unsynced"))


# -- item 9: truncation ---------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["to-the-index", "half", "one-byte"])
def test_a_truncated_data_file_is_rebuilt_and_never_pushed_as_deletes(tmp_path, cut, caplog):
    keys = [f"k{i}" for i in range(50)]
    remote = _seed(tmp_path, keys, "a.blt")
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "w") as db:
        db["new"] = _value("new")
        del db["k0"]
    size = local.stat().st_size
    with booklet.open(local) as raw:
        index_end = 200 + raw._n_buckets * 6
    keep = {"to-the-index": index_end + 10, "half": (index_end + size) // 2, "one-byte": size - 1}[cut]
    with open(local, "r+b") as f:
        f.truncate(keep)
    with caplog.at_level("WARNING", logger="ebooklet"):
        db = ebooklet.open(remote, local, "w")
    with db:
        assert sorted(db.keys()) == sorted(keys[1:] + ["new"])
        assert len(db) == 50
        assert _local_changes(db) == [("k0", "deleted"), ("new", "added")]
        result = db.changes().push()
        assert (result.keys, result.deleted) == (["new"], ["k0"])
    assert _remote_items(remote, tmp_path) == {k: _value(k) for k in keys[1:] + ["new"]}
    assert "damaged" in caplog.text and "rebuilt" in caplog.text
    assert list(tmp_path.glob("a.blt.damaged-*")), "the damaged original is kept"


def test_an_offline_booklet_prune_is_an_edit_not_damage(tmp_path, caplog):
    keys = [f"k{i}" for i in range(10)]
    remote = _seed(tmp_path, keys, "a.blt")
    local = tmp_path / "a.blt"
    with booklet.open(local, "w") as raw:
        for key in keys[:3]:
            del raw[key]
        raw["k9"] = "edited"
        raw.prune()
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "w") as db:
            assert _local_changes(db) == [
                ("k0", "deleted"), ("k1", "deleted"), ("k2", "deleted"), ("k9", "modified")
            ]
            db.changes().push()
    assert caplog.text == "" and not list(tmp_path.glob("a.blt.damaged-*"))
    assert _remote_items(remote, tmp_path) == {**{k: _value(k) for k in keys[3:]}, "k9": "edited"}


# -- item 10: a torn last record -----------------------------------------------------------


def test_a_torn_last_record_is_restored_from_the_journal(tmp_path):
    remote = _seed(tmp_path, ["a"], "a.blt")
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "w") as db:
        for i in range(5):
            db[f"new{i}"] = _value(f"new{i}")
    with open(local, "r+b") as f:  # the last write torn (power lost while the disk wrote it)
        f.truncate(local.stat().st_size - 10)
    with ebooklet.open(remote, local, "w") as db:
        assert len(db) == len(list(db.keys())) == 6
        assert db["new4"] == _value("new4")
        assert sorted(db.changes().push().keys) == [f"new{i}" for i in range(5)]
    assert _remote_items(remote, tmp_path) == {k: _value(k) for k in ["a"] + [f"new{i}" for i in range(5)]}


def test_writes_torn_by_a_kill_and_a_power_loss_are_never_pushed_half(tmp_path):
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    _kill_child(f"""
        import sys, ebooklet
        db = ebooklet.open({str(remote)!r}, {str(local)!r}, "c", value_serializer="str")
        for i in range(100):
            db[f"synced{{i}}"] = "s" * 100
        db.sync()
        for i in range(3000):
            db[f"late{{i}}"] = "L" * 2000
        print("ready", flush=True)
        sys.stdin.readline()
    """)
    with open(local, "r+b") as f:  # the power goes too: the tail of the file is torn
        f.truncate(local.stat().st_size - 1500)
    with ebooklet.open(remote, local, "w") as db:
        keys = list(db.keys())
        assert len(db) == len(keys)
        assert all((k in db) for k in keys)
        assert {f"synced{i}" for i in range(100)} <= set(keys)
        result = db.changes().push()
        assert sorted(result.keys) == sorted(keys)
    items = _remote_items(remote, tmp_path)
    assert set(items) == set(keys)
    assert all(v == ("s" * 100 if k.startswith("synced") else "L" * 2000) for k, v in items.items())


# -- item 11: flipped bytes ----------------------------------------------------------------


def test_a_flipped_byte_in_a_pending_value_is_restored_not_pushed(tmp_path):
    remote = _seed(tmp_path, ["a", "b"], "a.blt")
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "w") as db:
        db["a"] = "MARKER-pending-value"
    _flip(local, _find(local, b"MARKER-pending-value") + 3, mask=0x01)
    with ebooklet.open(remote, local, "w") as db:
        assert db["a"] == "MARKER-pending-value"
        assert db.changes().push().keys == ["a"]
    assert _remote_items(remote, tmp_path)["a"] == "MARKER-pending-value"


def test_a_flipped_byte_in_a_pending_value_is_never_pushed_even_when_unnoticed(tmp_path):
    remote = _seed(tmp_path, ["a", "b"], "a.blt")
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "w") as db:
        db["a"] = "MARKER-pending-value"
    # Bit rot under an unchanged size and mtime: opening has no reason to look. The push
    # carries the journal's checksummed copy, not the data file's.
    _flip(local, _find(local, b"MARKER-pending-value") + 3, mask=0x01, keep_mtime=True)
    with ebooklet.open(remote, local, "w") as db:
        assert db.changes().push().keys == ["a"]
    assert _remote_items(remote, tmp_path)["a"] == "MARKER-pending-value"


def test_a_flipped_byte_in_a_cached_value_is_fetched_again_not_pushed(tmp_path, caplog):
    remote = _seed(tmp_path, ["a", "b"], "a.blt")
    local = tmp_path / "a.blt"
    _flip(local, _find(local, _value("a").encode()) + 2, mask=0x01)
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "w") as db:
            assert _local_changes(db) == []
            assert db["a"] == _value("a")
            assert db.changes().push().committed is False
    assert _remote_items(remote, tmp_path) == {"a": _value("a"), "b": _value("b")}
    assert "fetched again" in caplog.text


@pytest.mark.parametrize("which", ["pending", "cached"])
def test_a_flipped_byte_in_a_key_is_repaired_and_never_read_as_a_delete(tmp_path, which):
    remote = _seed(tmp_path, ["cached-KEYMARK", "other"], "a.blt")
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "w") as db:
        db["pending-KEYMARK"] = "p"
    # The key's bytes, found as the key followed by its value.
    at = _find(local, b"pending-KEYMARKp" if which == "pending" else b"cached-KEYMARKvalue-of")
    _flip(local, at + len(which) + 2, mask=0x80)
    with ebooklet.open(remote, local, "w") as db:
        assert sorted(db.keys()) == ["cached-KEYMARK", "other", "pending-KEYMARK"]
        assert _local_changes(db) == [("pending-KEYMARK", "added")]
        db.changes().push()
    assert _remote_items(remote, tmp_path) == {
        "cached-KEYMARK": _value("cached-KEYMARK"), "other": _value("other"), "pending-KEYMARK": "p"
    }


def test_damage_noticed_during_a_session_is_an_ebooklet_error_and_reopening_repairs_it(tmp_path):
    remote = _seed(tmp_path, ["cached-KEYMARK", "other"], "a.blt")
    local = tmp_path / "a.blt"
    _flip(local, _find(local, b"cached-KEYMARKvalue-of") + 3, mask=0x80, keep_mtime=True)
    db = ebooklet.open(remote, local, "w")
    with pytest.raises(ebooklet.DamagedLocalFileError, match="Close the database and open it again") as err:
        list(db.keys())
    assert str(local) in str(err.value)
    with pytest.raises(ebooklet.DamagedLocalFileError):
        db.changes().push()
    db.close()
    with ebooklet.open(remote, local, "w") as db:
        assert sorted(db.keys()) == ["cached-KEYMARK", "other"]
        assert _local_changes(db) == []
    assert len(_remote_items(remote, tmp_path)) == 2


def test_an_undecodable_cached_value_is_an_ebooklet_error_and_reopening_fetches_it_again(tmp_path):
    remote = _seed(tmp_path, ["a"], "a.blt")
    local = tmp_path / "a.blt"
    _flip(local, _find(local, _value("a").encode()) + 2, mask=0x80, keep_mtime=True)  # not utf-8
    db = ebooklet.open(remote, local, "w")
    with pytest.raises(ebooklet.DamagedLocalFileError, match="'a'|a.blt"):
        db["a"]
    db.close()
    with ebooklet.open(remote, local, "w") as db:
        assert db["a"] == _value("a")


# -- item 12: a damaged state.json ---------------------------------------------------------


def _pending_write_and_deletes(tmp_path):
    """A reader's copy of k0..k9 that read k1, then deleted k1 (cached) and k2 (never
    fetched) and wrote "new", all acknowledged by close()."""
    keys = [f"k{i}" for i in range(10)]
    remote = _seed(tmp_path, keys)
    local = tmp_path / "b.blt"
    with ebooklet.open(remote, local, "w") as db:
        assert db["k1"] == _value("k1")
        del db["k1"]
        del db["k2"]
        db["new"] = "n"
    expected = {**{k: _value(k) for k in keys if k not in ("k1", "k2")}, "new": "n"}
    return remote, local, local.with_name("b.blt.ebooklet"), expected


PENDING = [("k1", "deleted"), ("k2", "deleted"), ("new", "added")]


@pytest.mark.parametrize("damage", ["garbage", "flipped", "missing"])
def test_a_damaged_sync_state_is_rebuilt_keeping_every_acknowledged_change(tmp_path, damage, caplog):
    remote, local, folder, expected = _pending_write_and_deletes(tmp_path)
    state = folder / "state.json"
    if damage == "garbage":
        state.write_bytes(b"{garbage")
    elif damage == "flipped":
        _flip(state, state.read_bytes().index(b'"etag"') + 3, mask=0x01)
    else:
        state.unlink()
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "w", timeout=1) as db:
            assert len(db) == len(list(db.keys())) == len(expected)
            assert _local_changes(db) == PENDING
            db.changes().push()
    assert _remote_items(remote, tmp_path) == expected
    assert "sync state" in caplog.text


def test_when_state_and_journals_are_all_damaged_the_advice_works_in_the_same_process(tmp_path):
    remote, local, folder, expected = _pending_write_and_deletes(tmp_path)
    for name in ("state.json", "journal.log", "mirror.log"):
        (folder / name).write_bytes(b"garbage" * 10)
    with pytest.raises(ebooklet.DamagedLocalFileError, match="Move the folder") as err:
        ebooklet.open(remote, local, "w", timeout=1)
    assert str(folder) in str(err.value)
    shutil.move(folder, tmp_path / "aside")  # what the error says, with the error still alive
    with ebooklet.open(remote, local, "w", timeout=1) as db:
        assert db["new"] == "n" and ("new", "added") in _local_changes(db)


def test_a_failed_open_releases_the_file(tmp_path):
    remote, local, folder, _ = _pending_write_and_deletes(tmp_path)
    (folder / "state.json").write_text(json.dumps({"version": 99, "parts": {}}))
    with pytest.raises(ebooklet.LocalFileError, match="newer ebooklet") as err:
        ebooklet.open(remote, local, "w", timeout=1)
    assert err.value  # the error (and its traceback) still alive
    with booklet.open(local, "w", timeout=1):
        pass


# -- item 13: a missing or damaged journal --------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "garbage", "flipped", "cut-short"])
def test_a_damaged_journal_loses_no_acknowledged_change(tmp_path, damage, caplog):
    remote, local, folder, expected = _pending_write_and_deletes(tmp_path)
    journal = folder / "journal.log"
    if not journal.exists():
        journal = folder / "touched.log"  # ebooklet 0.6.0, to show what it did
    if damage == "missing":
        journal.unlink()
    elif damage == "garbage":
        journal.write_bytes(os.urandom(journal.stat().st_size))
    elif damage == "flipped":
        _flip(journal, journal.stat().st_size - 30)
    else:
        with open(journal, "r+b") as f:
            f.truncate(journal.stat().st_size - 30)
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "w") as db:
            assert len(db) == len(list(db.keys())) == len(expected)
            assert _local_changes(db) == PENDING
            db.changes().push()
    assert _remote_items(remote, tmp_path) == expected
    assert "journal" in caplog.text


def test_a_torn_tail_of_the_journal_is_a_write_never_acknowledged(tmp_path, caplog):
    remote, local, folder, expected = _pending_write_and_deletes(tmp_path)
    with open(folder / "journal.log", "ab") as f:
        f.write(b"\xebJW\x00\x40\x00\x00\x00half a record")
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "w") as db:
            assert _local_changes(db) == PENDING
    assert caplog.text == ""


def test_a_torn_tail_of_the_journal_is_cut_off_before_the_next_session_appends(tmp_path, caplog):
    # Skipping the torn bytes is not enough: the next session's writes would follow them, its
    # sync would acknowledge them, and the open after that would find them as damage.
    remote, local, folder, expected = _pending_write_and_deletes(tmp_path)
    with open(folder / "journal.log", "ab") as f:
        f.write(b"\xebJW\x00\x40\x00\x00\x00half a record")
    with ebooklet.open(remote, local, "w") as db:
        db["later"] = "l"
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "w") as db:
            assert _local_changes(db) == sorted([*PENDING, ("later", "added")])
            db.changes().push()
    assert caplog.text == ""
    assert not list(tmp_path.rglob("*.damaged-*"))
    assert _remote_items(remote, tmp_path) == {**expected, "later": "l"}


def test_damage_amid_changes_written_since_the_last_sync_is_damage_not_a_torn_tail(tmp_path, caplog):
    """Changes written through to the journal were acknowledged even before a sync: a bad
    record followed by intact ones is damage (reported, reading resumes after it), not a torn
    tail to cut off with every change after it."""
    remote, local, folder, expected = _pending_write_and_deletes(tmp_path)
    later = {f"later{i:02d}": f"later-value-{i:02d}" for i in range(20)}
    _kill_child(f"""
        import ebooklet
        db = ebooklet.open({str(remote)!r}, {str(local)!r}, "w")
        db["damaged"] = "MARKER-damaged-value"
        db.update({later!r})
        print("ready", flush=True)
        import sys; sys.stdin.readline()
    """)
    _flip(folder / "journal.log", _find(folder / "journal.log", b"MARKER-damaged-value"))
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "w") as db:
            assert {k: db.get(k) for k in later} == later
    assert "journal" in caplog.text, "the damage is reported"


def test_pending_changes_spread_over_many_journal_batches_are_all_replayed(tmp_path):
    remote = _seed(tmp_path, ["a"], "a.blt")
    local = tmp_path / "a.blt"
    data = {f"big{i}": f"{i:06d}" * 200 for i in range(3000)}  # 3.6 MB: several batches
    with ebooklet.open(remote, local, "w") as db:
        db.update(data)
    with open(local, "r+b") as f:
        f.truncate(local.stat().st_size // 3)
    with ebooklet.open(remote, local, "w") as db:
        assert all(db[k] == v for k, v in data.items())
        assert len(db.changes().push().keys) == 3000
    assert _remote_items(remote, tmp_path) == {"a": _value("a"), **data}


def test_a_journal_of_many_overwrites_is_compacted_and_keeps_the_last_value(tmp_path):
    remote = _seed(tmp_path, ["a"], "a.blt")
    local = tmp_path / "a.blt"
    journal = tmp_path / "a.blt.ebooklet" / "journal.log"
    with ebooklet.open(remote, local, "w") as db:
        for i in range(15_000):
            db["hot"] = f"v{i}"
        db.sync()
        assert journal.stat().st_size < 4096, "compacted at sync"
        db["hot"] = "last"
    with open(local, "r+b") as f:  # only the journal can tell the last value now
        f.truncate(local.stat().st_size - 3)
    with ebooklet.open(remote, local, "w") as db:
        assert db["hot"] == "last"
        assert db.changes().push().keys == ["hot"]


def test_the_sync_state_of_ebooklet_0_6_0_is_read_and_upgraded(tmp_path):
    remote, local, folder, expected = _pending_write_and_deletes(tmp_path)
    # Rewrite the folder as ebooklet 0.6.0 left it: state.json without checksum, touched.log.
    state = json.loads((folder / "state.json").read_bytes().partition(b"\n")[0])
    for name in ("journal", "mirror", "codec"):
        state.pop(name, None)
    state["version"] = 1
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "journal.log").unlink()
    (folder / "mirror.log").unlink()
    records = [("k1", 1_700_000_000_000_000), ("k2", 1_700_000_000_000_001), ("new", None)]
    with open(folder / "touched.log", "wb") as f:
        for key, deleted_at in records:
            raw = key.encode()
            stamp = 0xFFFFFFFFFFFFFFFF if deleted_at is None else deleted_at
            f.write(struct.pack("<QI", stamp, len(raw)) + raw)
    with ebooklet.open(remote, local, "w") as db:
        assert _local_changes(db) == PENDING
    assert (folder / "journal.log").exists() and not (folder / "touched.log").exists()
    assert json.loads((folder / "state.json").read_bytes().partition(b"\n")[0])["version"] == STATE_VERSION
    with ebooklet.open(remote, local, "w") as db:
        assert _local_changes(db) == PENDING
        db.changes().push()
    assert _remote_items(remote, tmp_path) == expected


# -- the second line of defence: max_delete ------------------------------------------------


def test_a_push_that_would_delete_most_of_the_remote_unasked_stops_and_says_how(tmp_path):
    keys = [f"k{i}" for i in range(10)]
    remote = _seed(tmp_path, keys, "a.blt")
    local = tmp_path / "a.blt"
    with booklet.open(local, "w") as raw:  # missing keys, as a damage no check caught would leave
        for key in keys[:6]:
            del raw[key]
    with ebooklet.open(remote, local, "w") as db:
        with pytest.raises(ebooklet.MassDeleteError, match="would delete 6 of the remote's 10 keys") as err:
            db.changes().push()
        assert isinstance(err.value, ebooklet.SyncError)
        assert err.value.keys == keys[:6] and "max_delete=100" in str(err.value)
        assert len(_remote_items(remote, tmp_path)) == 10, "nothing was committed"
        db.changes().discard(err.value.keys[:3])  # keep these: they come back from the remote
        assert db["k0"] == _value("k0")
        assert db.changes().push(max_delete=30).deleted == keys[3:6]
    assert sorted(_remote_items(remote, tmp_path)) == ["k0", "k1", "k2"] + keys[6:]


def test_max_delete_counts_only_deletes_nobody_asked_for(tmp_path):
    keys = [f"k{i}" for i in range(10)]
    remote = _seed(tmp_path, keys, "a.blt")
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "w") as db:
        for key in keys[:8]:
            del db[key]
        assert db.changes().push().deleted == keys[:8]  # 80%, all asked for
    with booklet.open(local, "w") as raw:
        for key in keys[8:]:
            del raw[key]
    with ebooklet.open(remote, local, "w") as db:
        with pytest.raises(ebooklet.MassDeleteError, match="would delete 2 of the remote's 2 keys"):
            db.changes().push()
        assert db.changes().push(max_delete=None).deleted == keys[8:]
