"""``ebooklet.local.synced_with``: which remote a local file was last synced with, read
without opening (or locking) the file. The command line uses it to remember a file's remote
and to notice a REMOTE that is not the file's."""

from __future__ import annotations

import pathlib

import ebooklet
from ebooklet.local import Synced, synced_with


def test_synced_with_names_the_remote_and_its_uuid(tmp_path: pathlib.Path) -> None:
    remote, local = tmp_path / "remote" / "db.blt", tmp_path / "local.blt"
    assert synced_with(local) is None  # no file
    with ebooklet.open(remote, local, "n", value_serializer="pickle") as db:
        db["a"] = 1
        assert synced_with(local) is None  # never synced
        db.changes().push()
    info = ebooklet.remote_info(remote)
    assert info is not None
    expected = Synced(remote.absolute().as_uri(), info.uuid)
    assert synced_with(local) == expected
    assert synced_with(str(local)) == expected
    # Lock-free: it answers while another handle holds the file for writing.
    with ebooklet.open(remote, local, "w") as db:
        db["b"] = 2
        assert synced_with(local) == expected


def test_a_damaged_sync_state_gives_none(tmp_path: pathlib.Path) -> None:
    remote, local = tmp_path / "remote" / "db.blt", tmp_path / "local.blt"
    with ebooklet.open(remote, local, "n") as db:
        db["a"] = b"1"
        db.changes().push()
    state = tmp_path / "local.blt.ebooklet" / "state.json"
    data = state.read_bytes()
    state.write_bytes(data.replace(b'"location"', b'"locatioN"', 1))  # fails its checksum
    assert synced_with(local) is None
