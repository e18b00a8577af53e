"""The command line's everyday conveniences, run as subprocesses on folder remotes: the
remembered remote, dry runs and exit codes, put/del/discard, ls/cp/rm, JSON for every command,
and the advice its messages give."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import ebooklet
from ebooklet.lock import Lease
from ebooklet.remote import connect

from .test_cli import ROOT, Run, _environ, ebk, ebk_all, error_line

REMOTE = "bucket/stations.blt"


@pytest.fixture
def alice(tmp_path: pathlib.Path) -> pathlib.Path:
    """``alice.blt``, synced with the folder remote ``bucket/stations.blt`` (two keys, orjson)."""
    with ebooklet.open(tmp_path / REMOTE, tmp_path / "alice.blt", "c", value_serializer="orjson") as db:
        db.update({"station-1": {"rain_mm": [0.2]}, "station-2": {"rain_mm": [1.4]}})
        db.changes().push()
    return tmp_path


def remote_commit(tmp_path: pathlib.Path, remote: str = REMOTE) -> int:
    info = ebooklet.remote_info(tmp_path / remote)
    assert info is not None
    return info.commit


def edit(tmp_path: pathlib.Path, local: str, **values: object) -> None:
    with ebooklet.open(tmp_path / REMOTE, tmp_path / local, "w") as db:
        for key, value in values.items():
            if value is None:
                del db[key]
            else:
                db[key] = value


# -- the remembered remote ------------------------------------------------------------------------


def test_a_local_file_remembers_its_remote(alice: pathlib.Path) -> None:
    edit(alice, "alice.blt", **{"station-3": {"rain_mm": [0.0]}})
    status, dry = ebk_all(alice, ["status", "alice.blt"], ["push", "alice.blt", "--dry-run"])
    assert status.out.splitlines()[-1] == "1 change: 1 local, 0 remote, 0 both"
    assert dry.out.splitlines()[0].startswith("a push would write 1 key and delete 0 on file://")
    assert ebk(alice, "push", "alice.blt").out.startswith("commit 2: 1 key written")
    assert ebk(alice, "pull", REMOTE, "bob.blt").code == 0
    assert ebk(alice, "pull", "bob.blt").out == (
        f"already up to date with {(alice / REMOTE).as_uri()} (commit 2)\n"
    )

    with ebooklet.open(alice / "other", alice / "plain.blt", "c") as db:
        db["k"] = b"v"  # never synced: nothing to remember
    shutil.rmtree(alice / "plain.blt.ebooklet")
    assert error_line(ebk(alice, "push", "plain.blt")) == (
        "ebooklet: error: plain.blt has never been synced, so there is no remote to remember: give it, "
        "as in 'ebooklet push REMOTE plain.blt'\n"
    )


def test_a_remote_that_is_another_database_is_refused(alice: pathlib.Path) -> None:
    ebk(alice, "cp", REMOTE, "other/copy.blt")
    status, push, pull = ebk_all(
        alice, ["status", "other/copy.blt", "alice.blt"], ["push", "other/copy.blt", "alice.blt"],
        ["pull", "other/copy.blt", "alice.blt"],
    )
    for run in (status, push, pull):
        assert error_line(run).startswith(
            f"ebooklet: error: alice.blt is synced with {(alice / REMOTE).as_uri()}, and "
            f"{(alice / 'other' / 'copy.blt').as_uri()} holds another database. Leave REMOTE out"
        )
    assert "'ebooklet pull other/copy.blt OTHER.blt'" in pull.err
    # The same database reached another way (a folder that moved) is accepted.
    shutil.copytree(alice / "bucket", alice / "moved")
    assert ebk(alice, "status", "moved/stations.blt", "alice.blt").out.startswith("no changes")


def test_a_deleted_remote_gets_a_command_to_create_it_again(alice: pathlib.Path) -> None:
    assert ebk(alice, "pull", REMOTE, "bob.blt").code == 0
    assert ebk(alice, "rm", REMOTE, "--yes").code == 0
    edit(alice, "alice.blt", **{"station-1": {"rain_mm": [9.9]}})
    pull, push = ebk(alice, "pull", "alice.blt"), ebk(alice, "push", "alice.blt")
    for run in (pull, push):
        assert error_line(run) == (
            f"ebooklet: error: there is no database at {(alice / REMOTE).as_uri()} any more: it was "
            "deleted after alice.blt was last synced with it. alice.blt keeps its data; to create the "
            f"database again from it, run 'ebooklet push --recreate {(alice / REMOTE).as_uri()} "
            "alice.blt'\n"
        )
    assert ebk(alice, "push", "--recreate", "alice.blt").out.startswith("commit 1: 2 keys written")
    assert "exists: push without --recreate" in error_line(ebk(alice, "push", "--recreate", "alice.blt"))
    with ebooklet.open(alice / REMOTE, alice / "check.blt", "r") as db:
        assert db["station-1"] == {"rain_mm": [9.9]} and len(db) == 2


# -- dry runs and exit codes ----------------------------------------------------------------------


def test_push_dry_run_pushes_nothing(alice: pathlib.Path) -> None:
    edit(alice, "bob.blt", **{"station-2": {"rain_mm": [5.0]}, "station-9": {"rain_mm": []}})
    ebk(alice, "push", REMOTE, "bob.blt")
    edit(alice, "alice.blt", **{"station-1": None, "station-3": {"rain_mm": [1.0]}})
    text, as_json = ebk_all(alice, ["push", "-n", "alice.blt"], ["push", "--dry-run", "alice.blt", "--json"])
    assert text.out.splitlines() == [
        f"a push would write 1 key and delete 1 on {(alice / REMOTE).as_uri()} (nothing was pushed: "
        "--dry-run)",
        "it would pull in 2 keys others changed",
        "  write   station-3",
        "  delete  station-1",
        "  pull    station-2",
        "  pull    station-9",
    ]
    assert as_json.json() == {
        "remote": (alice / REMOTE).as_uri(), "endpoint": None, "local": "alice.blt", "dry_run": True,
        "write": ["station-3"], "delete": ["station-1"], "pull": ["station-2", "station-9"], "resolve": [],
    }
    edit(alice, "alice.blt", **{"station-2": {"rain_mm": [7.0]}})
    conflict, resolved = ebk_all(alice, ["push", "-n", "alice.blt"],
                                 ["push", "-n", "alice.blt", "--on-conflict", "newest"])
    stop = "the push would stop: 1 key changed both locally and on the remote: 'station-2'"
    assert stop in error_line(conflict)
    assert "it would keep the newest side of 1 key changed on both sides" in resolved.out
    assert remote_commit(alice) == 2


def test_status_exit_code(alice: pathlib.Path) -> None:
    assert ebk(alice, "status", "alice.blt", "--exit-code", "-q").code == 0
    edit(alice, "alice.blt", **{"station-1": {"rain_mm": [1.0]}})
    changed = ebk(alice, "status", "alice.blt", "--exit-code", "-q")
    assert (changed.code, changed.out, changed.err) == (3, "", "")
    edit(alice, "bob.blt", **{"station-1": {"rain_mm": [2.0]}})
    ebk(alice, "push", REMOTE, "bob.blt")
    conflict, plain = ebk_all(alice, ["status", "alice.blt", "--exit-code"], ["status", "alice.blt"])
    assert conflict.code == 4 and "CONFLICT" in conflict.out
    assert plain.code == 0  # without --exit-code, status reports and succeeds


# -- put, del and discard -------------------------------------------------------------------------


def test_put_and_del_from_the_shell(alice: pathlib.Path) -> None:
    (alice / "value.json").write_text('{"rain_mm": [3.5]}')
    arg, from_file, from_stdin, text = ebk_all(
        alice,
        ["put", "alice.blt", "station-4", '{"rain_mm": [0.1]}'],
        ["put", "alice.blt", "station-5", "--file", "value.json"],
        ["put", "alice.blt", "station-6", "-"],
        ["put", "alice.blt", "note", "not JSON", "--text"],
        stdin=b"[1, 2]",
    )
    assert arg.out == "set station-4 in alice.blt (not pushed yet: 'ebooklet push alice.blt' pushes it)\n"
    assert from_file.code == from_stdin.code == text.code == 0, (from_file.err, from_stdin.err, text.err)
    bad = ebk(alice, "put", "alice.blt", "x", "not JSON")
    assert "the value is not JSON, and alice.blt stores orjson values: give it as JSON" in error_line(bad)
    missing = ebk(alice, "del", "alice.blt", "station-1", "nope")
    assert error_line(missing) == "ebooklet: error: no key 'nope' in alice.blt; nothing was deleted\n"
    deleted = ebk(alice, "del", "alice.blt", "station-1", "--push", "--json")
    data = deleted.json()
    assert data["deleted"] == ["station-1"] and data["push"]["committed"]  # type: ignore[index]
    assert set(data["push"]["keys"]) == {"station-4", "station-5", "station-6", "note"}  # type: ignore[index]
    with ebooklet.open(alice / REMOTE, alice / "check.blt", "r") as db:
        assert dict(db.items()) == {
            "station-2": {"rain_mm": [1.4]}, "station-4": {"rain_mm": [0.1]}, "station-5": {"rain_mm": [3.5]},
            "station-6": [1, 2], "note": "not JSON",
        }


def test_put_into_a_new_database(tmp_path: pathlib.Path) -> None:
    needs = ebk(tmp_path, "put", "new.blt", "k", "v", "--remote", "bucket/new.blt")
    assert error_line(needs) == (
        f"ebooklet: error: there is no database at {(tmp_path / 'bucket' / 'new.blt').as_uri()} yet: to "
        "create one, choose how it stores values with --serializer (bytes, str, orjson, pickle, msgpack, "
        "...)\n"
    )
    assert not (tmp_path / "new.blt").exists()
    raw = bytes(range(256))
    put = ebk(tmp_path, "put", "new.blt", "blob", "--remote", "bucket/new.blt", "--serializer", "bytes",
              "--push", stdin=raw)
    assert put.out.splitlines()[:2] == ["set blob in new.blt", "commit 1: 1 key written, 0 deleted, " +
                                         put.out.splitlines()[1].split(" deleted, ")[1]]
    assert ebk(tmp_path, "get", "bucket/new.blt", "blob").raw == raw  # byte for byte
    no_remote = ebk(tmp_path, "put", "other.blt", "k", "v")
    assert "other.blt does not exist: name its remote with --remote REMOTE" in error_line(no_remote)


def test_discard_asks_first(alice: pathlib.Path) -> None:
    edit(alice, "alice.blt", **{"station-1": {"rain_mm": [8.0]}, "station-2": None})
    refused = ebk(alice, "discard", "alice.blt")
    assert error_line(refused) == (
        "ebooklet: error: discard would discard 2 local changes in alice.blt (station-1, station-2), which "
        "cannot be undone: add --yes to confirm (standard input is not a terminal, so there is nobody to "
        "ask)\n"
    )
    one = ebk(alice, "discard", "alice.blt", "--key", "station-2", "--yes")
    assert one.out.splitlines() == ["discarded 1 local change in alice.blt", "  discarded  station-2"]
    rest = ebk(alice, "discard", "alice.blt", "--yes", "--json")
    assert rest.json()["discarded"] == ["station-1"]  # type: ignore[index]
    assert ebk(alice, "status", "alice.blt", "--exit-code").code == 0
    with ebooklet.open(alice / REMOTE, alice / "alice.blt", "r") as db:
        assert db["station-1"] == {"rain_mm": [0.2]} and "station-2" in db


# -- ls, cp and rm --------------------------------------------------------------------------------


def test_ls_cp_rm(alice: pathlib.Path) -> None:
    copy = ebk(alice, "cp", REMOTE, "bucket/sub/copy.blt")
    assert copy.out == (
        f"copied {(alice / REMOTE).as_uri()} to {(alice / 'bucket' / 'sub' / 'copy.blt').as_uri()}: "
        "commit 1, 2 keys, 34 B\n"
    )
    again = ebk(alice, "cp", REMOTE, "bucket/sub/copy.blt")
    assert "bucket/sub/copy.blt already holds a database (commit 1, 2 keys): add --overwrite" in again.err
    assert ebk(alice, "cp", REMOTE, "bucket/sub/copy.blt", "--overwrite").code == 0
    listing, as_json, here = ebk_all(alice, ["ls", "bucket"], ["ls", "bucket/", "--json"], ["ls", "."])
    lines = listing.out.splitlines()
    assert lines[0].split() == ["DATABASE", "COMMIT", "KEYS", "SIZE", "COMMITTED"]
    assert [line.split()[:4] for line in lines[1:3]] == [
        ["bucket/stations.blt", "1", "2", "34"], ["bucket/sub/copy.blt", "1", "2", "34"]
    ]
    assert lines[3] == "2 databases under bucket"
    assert [d["remote"] for d in as_json.json()] == ["bucket/stations.blt", "bucket/sub/copy.blt"]  # type: ignore[index]
    # Local files (alice.blt and its sync state) are not databases.
    assert [line.split()[0] for line in here.out.splitlines()[1:-1]] == [
        "bucket/stations.blt", "bucket/sub/copy.blt"
    ]

    refused = ebk(alice, "rm", "bucket/sub/copy.blt")
    assert "add --yes to confirm" in error_line(refused) and "(commit 1, 2 keys, 34 B)" in refused.err
    removed = ebk(alice, "rm", "bucket/sub/copy.blt", "--yes", "--json")
    assert removed.json()["objects"] >= 3  # type: ignore[index]
    assert ebooklet.remote_info(alice / "bucket" / "sub" / "copy.blt") is None
    assert not list((alice / "bucket" / "sub").rglob("*.blt*"))
    assert "no ebooklet database at" in error_line(ebk(alice, "rm", "bucket/sub/copy.blt", "--yes"))
    assert "is a public URL, which cannot be listed" in error_line(ebk(alice, "ls", "https://example.invalid/"))


# -- JSON for programs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["status", "alice.blt"], "LocalFileNotFoundError"),
        (["push", "alice.blt"], "LocalFileNotFoundError"),
        # alice.blt is synced with another remote than nowhere/x.blt.
        (["push", "-n", "alice.blt"], "SyncError"), (["pull", "alice.blt"], "LocalFileNotFoundError"),
        (["discard", "alice.blt", "--yes"], "LocalFileNotFoundError"),
        (["put", "alice.blt", "k", "1"], "LocalFileNotFoundError"),
        (["del", "alice.blt", "station-2"], "LocalFileNotFoundError"),
        (["keys", REMOTE], "RemoteNotFoundError"), (["get", REMOTE, "station-1"], "RemoteNotFoundError"),
        (["head", REMOTE], "RemoteNotFoundError"), (["ls", "bucket"], "InvalidArgumentError"),
        # The first run made the copy that the failing one would overwrite.
        (["cp", REMOTE, "bucket/copy.blt"], "RemoteExistsError"),
        (["rm", REMOTE, "--yes"], "RemoteNotFoundError"),
    ],
    ids=lambda args: args[0] + ("-n" if "-n" in args else "") if isinstance(args, list) else "",
)
def test_every_command_speaks_json(alice: pathlib.Path, args: list[str], kind: str) -> None:
    ok = ebk(alice, *args, "--json")
    assert ok.code == 0 and ok.err == "", ok.err
    assert isinstance(ok.json(), (dict, list))
    # Errors too: one JSON object on stdout, the usual line on stderr.
    failing = [args[0], "nowhere.blt", *args[2:]] if args[1] == "alice.blt" else [args[0], "nowhere/x.blt",
                                                                                    *args[2:]]
    if args[0] == "ls":
        failing = ["ls", "nowhere"]
    run = ebk(alice, *failing, "--json")
    error = error_line(run)
    # The type is the class of the error, which a program can tell apart from the others.
    assert run.json() == {"error": {"message": error[len("ebooklet: error: "):-1], "type": kind,
                                    "exit_status": 1}}
    usage = ebk(alice, args[0], "--json", "--no-such-option")
    assert usage.code == 2 and usage.json()["error"]["exit_status"] == 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "failing", "kind"),
    [
        (["log", REMOTE], ["log", "nowhere/x.blt"], "RemoteNotFoundError"),
        (["diff", REMOTE, "1", "1"], ["diff", "nowhere/x.blt", "1", "2"], "RemoteNotFoundError"),
        (["compact", "alice.blt"], ["compact", "nowhere.blt"], "RemoteNotFoundError"),
        (["gc", REMOTE, "--dry-run"], ["gc", "s3://bucket/db"], "NoCredentialsError"),
        (["verify", REMOTE], ["verify", "https://example.invalid/"], "InvalidArgumentError"),
    ],
    ids=["log", "diff", "compact", "gc", "verify"],
)
def test_the_lifecycle_commands_speak_json_too(
    alice: pathlib.Path, args: list[str], failing: list[str], kind: str
) -> None:
    ok = ebk(alice, *args, "--json")
    assert ok.code == 0 and ok.err == "", ok.err
    assert isinstance(ok.json(), (dict, list))
    run = ebk(alice, *failing, "--json")
    error = error_line(run)
    assert run.json() == {"error": {"message": error[len("ebooklet: error: "):-1], "type": kind,
                                    "exit_status": 1}}


def test_the_demo_and_completion_speak_json_too(tmp_path: pathlib.Path) -> None:
    demo, completion = ebk_all(tmp_path, ["demo", "--dir", "d", "--json"], ["completion", "--json", "bash"])
    assert demo.code == 0 and demo.json() == {  # type: ignore[comparison-overlap]
        "dir": "d", "remote": (tmp_path / "d" / "remote" / "stations.blt").as_uri(), "commit": 5, "keys": 999
    }
    script = completion.json()["script"]  # type: ignore[index]
    assert completion.code == 0 and "complete -o filenames -F _ebooklet ebooklet" in script


def test_push_and_pull_json_list_their_keys(alice: pathlib.Path) -> None:
    """Issue 11, problem 12: in --json, ``keys`` was a count for pull but a list for push."""
    assert ebk(alice, "pull", REMOTE, "bob.blt").code == 0
    edit(alice, "alice.blt", **{"station-3": {"rain_mm": [0.1]}, "station-2": None})
    push = ebk(alice, "push", "alice.blt", "--json").json()
    assert push["keys"] == ["station-3"] and push["deleted"] == ["station-2"]  # type: ignore[index]
    pull = ebk(alice, "pull", "bob.blt", "--json").json()
    assert pull["updated"] == ["station-3"] and pull["deleted"] == ["station-2"]  # type: ignore[index]
    assert pull["n_keys"] == 2 and "keys" not in pull  # type: ignore[operator]


def test_conflicts_in_json_name_their_keys(alice: pathlib.Path) -> None:
    edit(alice, "bob.blt", **{"station-1": {"rain_mm": [2.0]}})
    ebk(alice, "push", REMOTE, "bob.blt")
    edit(alice, "alice.blt", **{"station-1": {"rain_mm": [3.0]}})
    run = ebk(alice, "push", "alice.blt", "--json")
    error = run.json()["error"]  # type: ignore[index]
    assert run.code == 1 and error["type"] == "ConflictError" and error["keys"] == ["station-1"]


# -- messages that say what to do next ------------------------------------------------------------


def test_swapped_arguments_get_a_hint(alice: pathlib.Path) -> None:
    run = ebk(alice, "push", "alice.blt", REMOTE)
    assert error_line(run) == (
        "ebooklet: error: alice.blt is a local database file (its sync state is in alice.blt.ebooklet/), "
        f"not a remote. The arguments are REMOTE, then LOCAL: did you mean 'ebooklet push {REMOTE} "
        f"alice.blt'? alice.blt was last synced with {(alice / REMOTE).as_uri()}.\n"
    )


def test_a_file_that_is_not_a_database_gets_the_right_advice(alice: pathlib.Path) -> None:
    (alice / "notes.txt").write_text("hello\n")
    plain = ebk(alice, "push", REMOTE, "notes.txt")
    assert error_line(plain).startswith("ebooklet: error: notes.txt is not a database file (")
    assert "LOCAL must be a file made by ebooklet or booklet" in plain.err and "fresh copy" not in plain.err
    # A synced file that was damaged is rebuilt by ebooklet, which says so as a warning.
    (alice / "alice.blt").write_bytes(b"garbage")
    damaged = ebk(alice, "push", "alice.blt")
    assert damaged.code == 0 and damaged.out == "nothing to push: no local changes in alice.blt\n"
    assert damaged.err.startswith(f"ebooklet: warning: {alice / 'alice.blt'}: the data file was damaged")


def _as_a_user_who_cannot_write(folder: pathlib.Path) -> list[str]:
    """Make ``folder`` read-only, and return the command prefix under which that holds: none
    for a user without root's override, ``unshare -U`` for root (a new user namespace, where
    root keeps only an owner's permissions). Skips the test when neither is possible."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    probe = folder / "probe"
    if unshare is None or subprocess.run([unshare, "-U", "touch", str(probe)],
                                         capture_output=True).returncode == 0:
        probe.unlink(missing_ok=True)
        pytest.skip("cannot run as a user for whom a folder is read-only (no user namespaces)")
    return [unshare, "-U"]


def test_a_read_only_folder_is_said_to_be_read_only(alice: pathlib.Path) -> None:
    """Issue 11, problem 9: a folder the user cannot write to is not a damaged file."""
    shelf = alice / "shelf"
    shelf.mkdir()
    shutil.copy(alice / "alice.blt", shelf / "plain.blt")  # a plain booklet file: its state is made at open
    prefix = _as_a_user_who_cannot_write(shelf)
    try:
        runs = [
            subprocess.run(
                [*prefix, sys.executable, "-m", "ebooklet", *args], cwd=alice, env=_environ(alice, None),
                capture_output=True, stdin=subprocess.DEVNULL,
            )
            for args in (
                ["pull", REMOTE, "shelf/copy.blt"],
                ["put", "shelf/new.blt", "k", "{}", "--remote", REMOTE],
                ["status", REMOTE, "shelf/plain.blt"],
            )
        ]
    finally:
        shelf.chmod(0o755)
    for run, name in zip(runs, ["copy.blt", "new.blt", "plain.blt"], strict=True):
        line = error_line(Run(run.returncode, run.stdout, run.stderr.decode()))
        assert line.startswith(f"ebooklet: error: cannot write {shelf / name}"), line
        assert ": permission denied. ebooklet keeps LOCAL's sync state beside it" in line, line
        assert "damaged" not in line and "not a database file" not in line, line
    assert sorted(p.name for p in shelf.iterdir()) == ["plain.blt"]


def test_a_local_path_whose_folder_is_a_file_is_said_so(alice: pathlib.Path) -> None:
    (alice / "notes.txt").write_text("hello\n")
    pull, put = ebk_all(alice, ["pull", REMOTE, "notes.txt/copy.blt"],
                        ["put", "notes.txt/new.blt", "k", "{}", "--remote", REMOTE])
    for run, name in ((pull, "copy.blt"), (put, "new.blt")):
        assert error_line(run) == (
            f"ebooklet: error: cannot create notes.txt/{name}: the folder {alice / 'notes.txt'} is a file, "
            "not a folder. Check the path (LOCAL is a file in a folder that exists)\n"
        )
    # The Python API says the same, not that a file is damaged.
    with pytest.raises(NotADirectoryError, match="notes.txt is a file, not a folder"):
        ebooklet.open(alice / REMOTE, alice / "notes.txt" / "copy.blt", "c")


def test_a_file_left_open_by_a_script_stays_readable(alice: pathlib.Path) -> None:
    # A script that writes and exits without close(): booklet marks such a file for writers only.
    code = (
        "import ebooklet\n"
        f"db = ebooklet.open({str(alice / REMOTE)!r}, {str(alice / 'alice.blt')!r}, 'w')\n"
        "db['station-3'] = {'rain_mm': [4.0]}\n"
        "db.sync()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(ROOT)})
    status, get, keys = ebk_all(
        alice, ["status", "alice.blt"], ["get", REMOTE, "station-3", "--local", "alice.blt"],
        ["keys", REMOTE, "--local", "alice.blt"],
    )
    assert status.code == 0 and status.out.splitlines()[-1] == "1 change: 1 local, 0 remote, 0 both"
    assert get.out == '{"rain_mm": [4.0]}\n'
    assert keys.out.split() == ["station-1", "station-2", "station-3"]
    # Python's flag='r' reads it too, and push and pull work on it.
    with ebooklet.open(alice / REMOTE, alice / "alice.blt", "r") as db:
        assert db["station-3"] == {"rain_mm": [4.0]}
    push = ebk(alice, "push", "alice.blt")
    assert push.code == 0 and push.out.startswith("commit 2: 1 key written"), push.err
    edit(alice, "bob.blt", **{"station-1": {"rain_mm": [7.0]}})
    ebk(alice, "push", REMOTE, "bob.blt")
    pull = ebk(alice, "pull", "alice.blt")
    assert pull.code == 0 and pull.out.startswith("1 key updated"), pull.err


def test_the_demo_refuses_a_used_folder(tmp_path: pathlib.Path) -> None:
    first = ebk(tmp_path, "demo", "--dir", "demo")
    assert first.code == 0
    second = ebk(tmp_path, "demo", "--dir", "demo")
    assert error_line(second) == (
        "ebooklet: error: demo is not empty: the demo starts from nothing, in a new or empty folder. Give "
        "another --dir, or leave it out for a new temporary folder.\n"
    )


# -- waiting, said out loud -----------------------------------------------------------------------


def test_a_busy_local_file_is_waited_for_and_said_so(alice: pathlib.Path) -> None:
    with ebooklet.open(alice / REMOTE, alice / "alice.blt", "w"):  # another writer holds it
        run = ebk(alice, "push", "alice.blt", "--timeout", "0.5")
    assert run.err.splitlines()[0] == (
        "ebooklet: waiting for alice.blt: another process has it open (up to 0.5 s; --timeout SECONDS "
        "changes this)"
    )
    assert run.code == 1 and run.err.splitlines()[1] == (
        "ebooklet: error: alice.blt is still open in another process (another ebooklet command or a Python "
        "session) after 0.5 s: close it there, or wait longer with --timeout SECONDS"
    )
    assert "possibly in this process" not in run.err


def test_a_held_remote_lock_is_waited_for_and_said_so(alice: pathlib.Path) -> None:
    edit(alice, "alice.blt", **{"station-1": {"rain_mm": [6.0]}})
    lease = Lease(connect(alice / REMOTE), ttl=600)
    lease.acquire()  # another writer is pushing, and will be for a while
    try:
        run = ebk(alice, "push", "alice.blt", "--lock-wait", "3")
    finally:
        lease.release()
    lines = run.err.splitlines()
    assert lines[0] == (
        f"ebooklet: waiting for another writer's lock on {(alice / REMOTE).as_uri()} (up to 3 s; "
        "--lock-wait SECONDS changes this)"
    )
    assert run.code == 1
    assert lines[1].startswith(f"ebooklet: error: {(alice / REMOTE).as_uri()} is locked by ")
    assert lines[1].endswith("To wait longer, give --lock-wait SECONDS (now 3).")
    assert ebk(alice, "push", "alice.blt", "-q").out == ""  # released: it goes through, quietly


def test_completion_scripts(tmp_path: pathlib.Path) -> None:
    bash, fish = ebk_all(tmp_path, ["completion", "bash"], ["completion", "fish"])
    assert "complete -o filenames -F _ebooklet ebooklet" in bash.out
    assert "push) opts=\"" in bash.out and "--dry-run" in bash.out
    assert "__fish_seen_subcommand_from put' -l file" in fish.out
    if shutil.which("bash"):
        (tmp_path / "c.sh").write_text(bash.out)
        subprocess.run(["bash", "-n", str(tmp_path / "c.sh")], check=True)
        words = subprocess.run(
            ["bash", "-c", f"source {tmp_path / 'c.sh'}; COMP_WORDS=(ebooklet pu); COMP_CWORD=1; _ebooklet; "
             "echo ${COMPREPLY[@]}"], capture_output=True, text=True, check=True,
        )
        assert words.stdout.split() == ["push", "pull", "put"]


def test_quiet_prints_nothing_but_errors(alice: pathlib.Path) -> None:
    edit(alice, "alice.blt", **{"station-1": {"rain_mm": [6.0]}})
    runs = ebk_all(alice, ["push", "alice.blt", "-q"])
    assert [(r.code, r.out, r.err) for r in runs] == [(0, "", "")]
    pull = ebk(alice, "pull", REMOTE, "bob.blt", "-q")
    assert (pull.code, pull.out, pull.err) == (0, "", "")


def test_what_ebooklet_logs_is_said_on_stderr(alice: pathlib.Path) -> None:
    edit(alice, "alice.blt", **{"station-1": {"rain_mm": [6.0]}})
    stale = Lease(connect(alice / REMOTE), ttl=0.001)
    stale.acquire()  # a writer that died holding the lock, which has expired since
    run: Run = ebk(alice, "push", "alice.blt", "-v")
    assert run.code == 0
    assert run.err.startswith(f"ebooklet: warning: took over the expired lease of {stale.owner} on ")
    edit(alice, "alice.blt", **{"station-1": {"rain_mm": [7.0]}})
    Lease(connect(alice / REMOTE), ttl=0.001).acquire()
    assert ebk(alice, "push", "alice.blt", "-q").err == ""
