"""The command line's own errors name their class under ``--json``.

A program that runs ``ebooklet ... --json`` tells failures apart by ``error.type``: the class
of the exception the same mistake raises in Python (an :class:`ebooklet.EbookletError`, or
``KeyError`` for a missing key), never a bare ``Error``. Each case runs :func:`ebooklet.cli.main`
in this process (the commands fail before any transfer), in a folder of its own with no
``AWS_*`` variable from the developer's environment.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

import ebooklet
from ebooklet import cli

REMOTE = "bucket/stations.blt"


@pytest.fixture
def place(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """``alice.blt`` synced with the folder remote REMOTE (orjson), ``bucket/pickled.blt`` (a
    pickle database), ``afolder/``, and ``junk.blt`` (not a database)."""
    with ebooklet.open(tmp_path / REMOTE, tmp_path / "alice.blt", "c", value_serializer="orjson") as db:
        db["station-1"] = {"rain_mm": [0.2]}
        db.changes().push()
    pickled = tmp_path / "bucket" / "pickled.blt"
    with ebooklet.open(pickled, tmp_path / "p.blt", "c", value_serializer="pickle") as db:
        db["k"] = 1
        db.changes().push()
    (tmp_path / "afolder").mkdir()
    (tmp_path / "junk.blt").write_bytes(b"not a database, just some bytes" * 40)
    for name in list(os.environ):
        if name.startswith(("AWS_", "XDG_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)
    return tmp_path


KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}

CASES = [
    # LOCAL
    (["push", "nowhere.blt"], {}, "LocalFileNotFoundError"),
    (["push", "afolder"], {}, "LocalPathIsAFolderError"),
    (["pull", "nowhere.blt"], {}, "LocalFileNotFoundError"),
    (["pull", REMOTE, "afolder"], {}, "LocalPathIsAFolderError"),
    (["pull", REMOTE, "junk.blt/x.blt"], {}, "LocalFolderIsAFileError"),
    (["pull", REMOTE, "nofolder/x.blt"], {}, "LocalFileNotFoundError"),
    (["put", "nowhere.blt", "k", "1"], {}, "LocalFileNotFoundError"),
    (["init", "bucket/new.blt", "alice.blt", "--serializer", "str"], {}, "LocalFileExistsError"),
    (["status", REMOTE, "junk.blt"], {}, "DamagedLocalFileError"),
    (["demo", "--dir", "alice.blt"], {}, "LocalFolderIsAFileError"),
    # REMOTE
    (["keys", "bucket/none.blt"], {}, "RemoteNotFoundError"),
    (["head", "bucket/none.blt"], {}, "RemoteNotFoundError"),
    (["put", "new.blt", "k", "1", "--remote", "bucket/none.blt"], {}, "RemoteNotFoundError"),
    (["init", REMOTE, "new.blt", "--serializer", "str"], {}, "RemoteExistsError"),
    (["head", "bucket"], {}, "InvalidArgumentError"),  # a folder, not a database in it
    (["pull", "alice.blt", "bob.blt"], {}, "InvalidArgumentError"),  # the arguments swapped
    (["status", "junk.blt"], {}, "InvalidArgumentError"),  # never synced: no remote to remember
    (["push", "bucket/other.blt", "alice.blt"], {}, "SyncError"),  # synced with another database
    (["keys", "bucket/pickled.blt"], {}, "UnsafeSerializerError"),
    (["init", "https://example.invalid/db.blt", "new.blt", "--serializer", "str"], {}, "ReadOnlyError"),
    (["ls", "https://example.invalid/"], {}, "NotSupportedError"),
    (["ls", "s3://"], {}, "InvalidArgumentError"),
    (["cp", REMOTE, REMOTE], {}, "InvalidArgumentError"),
    (["keys", "s3://bucket/db.blt"], {}, "NoCredentialsError"),
    (["keys", "s3://bucket/db.blt", "--profile", "nobody"], {}, "InvalidArgumentError"),
    (["keys", "s3://bucket/db.blt", "--endpoint-url", "ftp://example.invalid"], KEYS, "InvalidArgumentError"),
    # keys and values
    (["get", REMOTE, "no-such-key"], {}, "KeyError"),
    (["del", "alice.blt", "no-such-key"], {}, "KeyError"),
    (["put", "alice.blt", "k", "not json"], {}, "SerializationError"),
    (["put", "alice.blt", "k", "1", "--file", "value.json"], {}, "InvalidArgumentError"),
    # what cannot be undone
    (["rm", REMOTE], {}, "InvalidArgumentError"),  # no --yes, and nobody to ask
]


@pytest.mark.parametrize(("args", "env", "kind"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_each_error_of_the_command_line_names_its_class(
    place: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], env: dict[str, str], kind: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main([*args, "--json"]) == 1
    out, err = capsys.readouterr()
    error = json.loads(out)["error"]
    assert error["type"] == kind, error
    assert err == f"ebooklet: error: {error['message']}\n"
    # A class a Python program can catch: ebooklet's own, or the builtin KeyError.
    assert kind == "KeyError" or issubclass(getattr(ebooklet, kind), ebooklet.EbookletError)


def test_a_local_file_held_by_another_handle_is_a_busy_error(
    place: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ebooklet.open(place / REMOTE, place / "alice.blt", "w"):
        assert cli.main(["push", "alice.blt", "--timeout", "0", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["type"] == "LocalFileBusyError"
