"""Values of every size go through the journal the same way: a large value (at least
``records.BIG_VALUE``) is written with ``writev`` and read back on its own rather than copied
into and out of one record, and its record has the same bytes and the same checks as a small
value's. Damage is done with plain file operations; the remote is a local folder."""

from __future__ import annotations

import os

import pytest

import ebooklet
from ebooklet.errors import SyncError
from ebooklet.local import records

SIZES = {"small": 200, "large": records.BIG_VALUE + 1000}


def _values(size: int) -> dict[str, bytes]:
    return {f"k{i}": bytes([65 + i]) * (size + i) for i in range(6)}


def _journal(local):
    return local.with_name(local.name + ".ebooklet") / "journal.log"


def _flip_in(path, needle: bytes) -> None:
    data = path.read_bytes()
    at = data.find(needle)
    assert at >= 0
    with open(path, "r+b") as f:
        f.seek(at + len(needle) // 2)
        f.write(b"Z")


def _fresh(remote, tmp_path, name="fresh.blt"):
    with ebooklet.open(remote, tmp_path / name, "r") as db:
        return dict(db.items())


@pytest.mark.parametrize("raw", [b"", b"v" * 10, os.urandom(records.BIG_VALUE - 1),
                                 os.urandom(records.BIG_VALUE), os.urandom(3 * records.BIG_VALUE)])
def test_a_large_value_has_the_record_bytes_of_a_small_one(raw):
    pieces = records.change("clé".encode(), 123456789, raw, records.INFERRED)
    if len(raw) >= records.BIG_VALUE:
        assert isinstance(pieces, list), "a large value is written from where it is"
        pieces = b"".join(pieces)
    key = "clé".encode()
    assert pieces == records.record(records.ONE, records.ONE_HEAD.pack(len(key), 123456789) + key + raw,
                                    records.INFERRED)
    kind, _, (k, ts, value), flags = records.parse(memoryview(pieces), 0)
    assert (kind, k, ts, value, flags) == (records.ONE, "clé", 123456789, raw, records.INFERRED)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("when", ["in-the-session", "after-the-data-file-is-lost"])
def test_pending_values_of_any_size_are_pushed_from_the_journal_intact(tmp_path, size, when):
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    values = _values(SIZES[size])
    db = ebooklet.open(remote, local, "c")
    db.update(values)
    db["k1"] = b"overwritten"  # the later record of k1 is its pending change
    del db["k2"]
    if when != "in-the-session":
        db.close()
        local.unlink()  # the journal alone holds the changes
        db = ebooklet.open(remote, local, "w")
    with db:
        result = db.changes().push()
        sent = db.stats.bytes_sent
    expected = {**values, "k1": b"overwritten"}
    del expected["k2"]
    assert sorted(result.keys) == sorted(expected)
    assert result.deleted == []  # k2 never reached the remote
    # Only the last change of each key is read back and sent, not the ones it replaced.
    assert sent < sum(map(len, expected.values())) + 4000
    assert _fresh(remote, tmp_path) == expected


@pytest.mark.parametrize("size", list(SIZES))
def test_a_value_damaged_in_the_journal_during_a_session_is_never_pushed(tmp_path, size):
    """The journal was read whole when the file was opened; bytes that change under the
    session afterwards are caught by the push's second check of each record, whichever way
    the record is read back."""
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    values = _values(SIZES[size])
    with ebooklet.open(remote, local, "c") as db:
        db.update(values)
        _flip_in(_journal(local), values["k3"])
        with pytest.raises(SyncError, match="damaged while this push read it"):
            db.changes().push()
    assert not remote.exists() or ebooklet.remote_info(remote).n_keys == 0
    # The data file's copy is intact: reopening finds the damage and pushes that copy.
    with ebooklet.open(remote, local, "w") as db:
        db.changes().push()
    assert _fresh(remote, tmp_path) == values


def test_a_large_record_cut_short_in_a_session_is_never_pushed(tmp_path):
    """A large value read on its own still has to be whole: a journal cut inside it fails
    the push instead of pushing fewer bytes."""
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    values = _values(SIZES["large"])
    with ebooklet.open(remote, local, "c") as db:
        db.update(values)
        journal = _journal(local)
        with open(journal, "r+b") as f:
            f.truncate(journal.stat().st_size - 3 * SIZES["large"])
        with pytest.raises(SyncError, match="damaged while this push read it"):
            db.changes().push()
    assert not remote.exists() or ebooklet.remote_info(remote).n_keys == 0


@pytest.mark.parametrize("window", [None, 7, 4096])
@pytest.mark.parametrize("damaged", ["small", "large"])
def test_a_journal_damaged_between_sessions_is_read_around_the_damage(tmp_path, monkeypatch, caplog,
                                                                       window, damaged):
    """Opening reads the journal a window at a time (a large value's record checked a window
    at a time too): a record damaged between sessions is found, reading resumes at the next
    intact one across window edges, and no acknowledged change is lost."""
    if window is not None:
        monkeypatch.setattr(records, "READ_WINDOW", window)
    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    big = {f"big{i}": bytes([97 + i]) * (SIZES["large"] + i) for i in range(4)}
    values = {**_values(SIZES["small"]), **big}
    with ebooklet.open(remote, local, "c") as db:
        db.update(values)
    _flip_in(_journal(local), values["k3" if damaged == "small" else "big2"])
    with caplog.at_level("WARNING", logger="ebooklet"):
        with ebooklet.open(remote, local, "w") as db:
            assert sorted(c.key for c in db.changes().iter_changes()) == sorted(values)
            db.changes().push()
    assert "journal" in caplog.text, "the damage is reported"
    assert _fresh(remote, tmp_path) == values


def test_opening_a_journal_of_large_values_does_not_hold_them(tmp_path):
    """A journal holding 48 MiB of pending values is opened with a few windows of it in
    memory, not the whole file (nor a copy of each value)."""
    import tracemalloc

    remote = tmp_path / "remote" / "db"
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "c") as db:
        for i in range(12):
            db[f"big{i}"] = os.urandom(4 << 20)
    tracemalloc.start()
    try:
        with ebooklet.open(remote, local, "w") as db:
            _, peak = tracemalloc.get_traced_memory()
            assert len(db) == 12
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"opening held {peak:,} bytes"


@pytest.mark.parametrize("window", [2, 3, 5, 6, 7, 64])
def test_the_next_intact_record_is_found_across_window_edges(tmp_path, monkeypatch, window):
    monkeypatch.setattr(records, "READ_WINDOW", window)
    good = records.change(b"key", 7, b"value", 0)
    junk = b"\xebJ" + b"junk" + b"\xeb"  # a magic that starts no record, and half of one
    path = tmp_path / "journal"
    path.write_bytes(junk + good)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = records.Reader(fd, len(junk) + len(good))
        assert reader.record(0) is None
        assert reader.resync(1) == len(junk)
        length, (kind, _, (key, ts, _), _) = reader.record(len(junk))
        assert (length, kind, key, ts) == (len(good), records.ONE, "key", 7)
    finally:
        os.close(fd)


def test_a_large_record_whose_key_overruns_it_is_refused_not_read(tmp_path):
    """A W record whose key length runs past its payload (a hostile or garbled record that
    still carries a valid checksum) is not a change, for the opening check and for the push's
    scan alike: neither reads a negative length."""
    n = records.BIG_VALUE + 4
    # A checksum of ASCII bytes, so that the overrun key (which takes it in) still decodes.
    head = records.ONE_HEAD.pack(65535, 7)
    fills = (bytes([c]) * (n - len(head)) for c in range(32, 127))
    rec = next(r for r in (records.record(records.ONE, head + f) for f in fills) if max(r[-4:]) < 0x80)
    path = tmp_path / "journal"
    path.write_bytes(rec + b"y" * 70_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert records.Reader(fd, path.stat().st_size).record(0) is None
        assert list(records.scan(fd, [(0, path.stat().st_size)], lambda key: 0, 24)) == []
    finally:
        os.close(fd)
