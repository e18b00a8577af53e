"""The ``ebooklet`` command line, run as a subprocess the way people run it.

Every run gets ``XDG_CACHE_HOME`` and ``HOME`` inside the test's folder and no ``AWS_*``
variable from the developer's environment, so nothing touches the real home or a real bucket.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import shutil
import socket
import sys
from dataclasses import dataclass

import booklet
import pytest

import ebooklet
from ebooklet import cli
from ebooklet.cli import read
from ebooklet.cli.output import human_bytes
from ebooklet.cli.progress import ProgressBar, progress_bar, render_progress
from ebooklet.results import Progress

from . import clirunner
from .servers import S3Server

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclass
class Run:
    code: int
    raw: bytes
    err: str

    @property
    def out(self) -> str:
        return self.raw.decode()

    def json(self) -> object:
        return json.loads(self.raw)


def _environ(cwd: pathlib.Path, env: dict[str, str] | None) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XDG_", "PYTHONPATH"))}
    # No instance-metadata lookup by botocore's credential chain: nothing leaves loopback.
    environ.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(cwd / "cache"), HOME=str(cwd / "home"),
                   AWS_EC2_METADATA_DISABLED="true")
    environ.update(env or {})
    return environ


def ebk_all(
    cwd: pathlib.Path, *commands: list[str], env: dict[str, str] | None = None, stdin: bytes | None = None
) -> list[Run]:
    """``python -m ebooklet ARGS`` for each command, side by side, in ``cwd``, each its own
    process (forked from a warm parent: tests/clirunner.py); standard input is ``stdin``, or
    empty (never a terminal)."""
    environ = _environ(cwd, env)
    runs = []
    commands_in = [(str(cwd), args, environ) for args in commands]
    for code, out, err in clirunner.run_all(commands_in, stdin or b"", 60):
        assert "Traceback" not in err.decode(), err.decode()
        runs.append(Run(code, out, err.decode()))
    return runs


def ebk(cwd: pathlib.Path, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> Run:
    """``python -m ebooklet ARGS`` in ``cwd``, with a clean environment."""
    return ebk_all(cwd, list(args), env=env, stdin=stdin)[0]


def error_line(run: Run) -> str:
    """The one line an expected failure prints."""
    assert run.code == 1, (run.code, run.out, run.err)
    assert run.err.startswith("ebooklet: error: ") and run.err.count("\n") == 1, run.err
    return run.err


VALUES = {"station-1": {"rain_mm": [0.2, 0.0]}, "station-2": "plain text", "blob": b"\x00\x01\xff"}


@pytest.fixture
def folder(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder remote ``bucket/stations.blt`` holding VALUES, pushed from ``alice.blt``."""
    remote = tmp_path / "bucket" / "stations.blt"
    with ebooklet.open(remote, tmp_path / "alice.blt", "c", value_serializer="pickle") as db:
        db.update(VALUES)
        db.set_metadata({"units": "mm"})
        db.changes().push()
    return remote


# -- help and usage --------------------------------------------------------------------------


def test_help_describes_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    parser = cli.build_parser()
    text = parser.format_help()
    for command in ("status", "push", "pull", "discard", "put", "del", "keys", "get", "head", "ls", "cp",
                    "rm", "demo", "completion"):
        assert f"\n    {command} " in text or f"\n    {command}\n" in text
    assert "s3://BUCKET/KEY" in text and "AWS_SECRET_ACCESS_KEY" in text
    sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("keys", "get"):
        assert "XDG_CACHE_HOME" in sub[name].format_help()
    for name in ("push", "pull"):
        assert "--on-conflict {local,remote,newest}" in sub[name].format_help()
    for name, command in sub.items():
        for line in command.format_help().splitlines():
            assert len(line) <= 80, (name, line)
    # The secret has no option of its own: it never shows in `ps`.
    assert "secret" not in " ".join(a for action in sub["push"]._actions for a in action.option_strings)


def test_usage_errors_exit_2(tmp_path: pathlib.Path) -> None:
    none, unknown, missing = ebk_all(tmp_path, [], ["frobnicate"], ["push"])
    assert none.code == 2 and "usage: ebooklet" in none.err
    assert unknown.code == 2 and "unknown command 'frobnicate' ('ebooklet --help' lists" in unknown.err
    assert missing.code == 2 and "required: LOCAL" in missing.err and "usage: ebooklet push" in missing.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["pull", "bucket/db", "x.blt", "--on-conflict", "mine"], "invalid choice: 'mine'"),
        (["head", "bucket/db", "--retries", "0"], "--retries: must be at least 1, not 0"),
        (["head", "bucket/db", "--access-key", "X"], "unrecognized arguments"),  # no abbreviations
        (["get", "bucket/db"], "required: KEY"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(args)
    assert exit.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["head", "ftp://host/db"], {}, "unsupported remote 'ftp://host/db'"),
        (["head", "s3://bucket"], {}, "'s3://bucket' must name a bucket and an object key"),
        (["keys", "s3://bucket/db"], {}, "no credentials for s3://bucket/db: none in the arguments, in "
         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in "),
        (["head", "s3://b/db"], {"AWS_ACCESS_KEY_ID": "id"}, "s3://b/db: AWS_ACCESS_KEY_ID is set but "
         "AWS_SECRET_ACCESS_KEY is not. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the key id may "
         "be --access-key-id), or name a profile with --profile or AWS_PROFILE; to read a public "
         "database without credentials, give its https:// URL instead"),
        (["head", "s3://b/db", "--profile", "nope"], {}, "s3://b/db: the AWS profile 'nope' is in neither"),
        (["head", "s3://b/db", "--profile", "nope"], {}, "; check the name (--profile)"),
        (["head", "s3://b/db", "--endpoint-url", "ftp://x"],
         {"AWS_ACCESS_KEY_ID": "i", "AWS_SECRET_ACCESS_KEY": "s"},
         "the endpoint 'ftp://x' must be an http:// or https:// URL"),
        (["keys", "https://example.invalid/"], {}, "must be the URL of the database object"),
        (["push", "https://example.invalid/db", "alice.blt"], {},
         "cannot push to https://example.invalid/db: a public URL is read-only"),
    ],
)
def test_bad_remotes_are_one_line_errors(
    args: list[str], env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path,
) -> None:
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    pathlib.Path("alice.blt").touch()
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("ebooklet: error: ") and err.count("\n") == 1 and message in err, err


# -- a folder remote -------------------------------------------------------------------------


def test_head(folder: pathlib.Path) -> None:
    tmp = folder.parent.parent
    run, as_json = ebk_all(tmp, ["head", "bucket/stations.blt"], ["head", folder.as_uri(), "--json"])
    assert run.code == 0, run.err
    matches = [re.fullmatch(r"(\S+(?: \S+)*)( +)(\S.*)", line) for line in run.out.splitlines()]
    rows = {m[1]: m[3] for m in matches if m}
    assert len(rows) == len(matches) == 12
    assert len({len(m[1]) + len(m[2]) for m in matches if m}) == 1  # the values line up
    info = ebooklet.remote_info(folder)
    assert info is not None
    assert rows["location"] == folder.as_uri() and rows["uuid"] == info.uuid
    assert rows["commit"] == "1" and rows["keys"] == "3" and rows["serializer"] == "pickle"
    assert rows["format version"] == str(info.format_version)
    assert rows["value bytes"] == f"{info.n_bytes} bytes"
    assert rows["index parts"] == str(info.n_index_parts)
    assert rows["segments"] == str(info.n_segments) and rows["segment bytes"] == f"{info.segment_bytes} bytes"
    assert rows["metadata"] == '{"units": "mm"}'
    assert rows["committed at"] == info.committed_at.strftime("%Y-%m-%d %H:%M:%S UTC")

    data = as_json.json()
    assert data["n_keys"] == 3 and data["commit"] == 1 and data["metadata"] == {"units": "mm"}  # type: ignore[index]
    assert data["committed_at"] == info.committed_at.isoformat()  # type: ignore[index]


def test_no_database(tmp_path: pathlib.Path) -> None:
    (tmp_path / "empty").mkdir()
    head, folder, keys = ebk_all(
        tmp_path, ["head", "empty/db.blt"], ["head", "empty"], ["keys", "empty/db.blt"]
    )
    missing = (tmp_path / "empty" / "db.blt").as_uri()
    assert f"no ebooklet database at {missing}: check the path" in error_line(head)
    assert "is a folder; a folder remote names the database inside it" in error_line(folder)
    assert "no ebooklet database at" in error_line(keys)
    assert not list((tmp_path / "cache" / "ebooklet").glob("*.blt"))


def test_keys_and_get(folder: pathlib.Path) -> None:
    tmp = folder.parent.parent
    remote = "bucket/stations.blt"
    keys, prefixed, as_repr, as_json, as_str, as_bytes, missing = ebk_all(
        tmp,
        ["keys", remote, "--allow-pickle"],
        ["keys", remote, "--prefix", "station-", "--json", "--allow-pickle"],
        ["get", remote, "station-1", "--local", "g1.blt", "--allow-pickle"],
        ["get", remote, "station-1", "--json", "--local", "g2.blt", "--allow-pickle"],
        ["get", remote, "station-2", "--local", "g3.blt", "--allow-pickle"],
        ["get", remote, "blob", "--local", "g4.blt", "--allow-pickle"],
        ["get", remote, "station-9", "--allow-pickle"],
    )
    assert keys.code == 0 and keys.out == "blob\nstation-1\nstation-2\n"
    assert prefixed.json() == ["station-1", "station-2"]
    assert as_repr.out == '{"rain_mm": [0.2, 0.0]}\n'  # JSON, as put takes it
    assert as_json.json() == {"rain_mm": [0.2, 0.0]}
    assert as_str.out == "plain text\n"
    assert as_bytes.raw == b"\x00\x01\xff"
    assert error_line(missing) == (
        f"ebooklet: error: no key 'station-9' in {folder.as_uri()}: 'ebooklet keys {remote}' lists its keys "
        "(--prefix P those that start with P)\n"
    )

    # --local reads through that file, with its unpushed changes.
    with ebooklet.open(folder, tmp / "alice.blt", "w") as db:
        db["station-3"] = "local only"
    keys, json_error = ebk_all(
        tmp, ["keys", remote, "--local", "alice.blt"], ["get", remote, "blob", "--json"]
    )
    assert keys.out.split() == ["blob", "station-1", "station-2", "station-3"]
    assert "the value of 'blob' cannot be shown as JSON" in error_line(json_error)


def test_reads_reuse_the_cache(folder: pathlib.Path) -> None:
    tmp = folder.parent.parent
    assert ebk(tmp, "get", "bucket/stations.blt", "station-2", "--allow-pickle").out == "plain text\n"
    cached = list((tmp / "cache" / "ebooklet").glob("*.blt"))
    assert len(cached) == 1 and len(cached[0].stem) == 32
    # With the remote's values gone, the cached one is still there; the others are not.
    shutil.rmtree(folder.with_name("stations.blt.ebooklet") / "seg")
    assert ebk(tmp, "get", str(folder), "station-2").out == "plain text\n"
    assert "is gone from" in error_line(ebk(tmp, "get", "bucket/stations.blt", "station-1"))

    # A database deleted and created again under the same name: the cache starts afresh.
    folder.unlink()
    shutil.rmtree(folder.with_name("stations.blt.ebooklet"))
    with ebooklet.open(folder, tmp / "new.blt", "c", value_serializer="str") as db:
        db["other"] = "value"
        db.changes().push()
    assert ebk(tmp, "keys", folder.as_uri()).out == "other\n"


def test_status_push_pull(folder: pathlib.Path) -> None:
    tmp = folder.parent.parent
    remote = "bucket/stations.blt"
    status, copy = ebk_all(
        tmp, ["status", remote, "alice.blt"], ["pull", remote, "bob.blt", "--allow-pickle"]
    )
    assert status.code == 0 and status.out == f"no changes: alice.blt is in sync with {folder.as_uri()}\n"
    assert copy.code == 0 and copy.out.splitlines() == [
        f"created bob.blt from {folder.as_uri()}: 3 keys at commit 1",
        "values are fetched when first read (pull --load fetches them all now)",
    ]

    with ebooklet.open(folder, tmp / "alice.blt", "w") as db:
        db["station-1"] = {"rain_mm": [5.0]}
        db["station-3"] = "new"
        del db["blob"]
    with ebooklet.open(folder, tmp / "carol.blt", "w", allow_pickle=True) as db:
        db["station-2"] = "carol's text"
        db.changes().push()

    status, as_json = ebk_all(tmp, ["status", remote, "alice.blt"], ["status", remote, "alice.blt", "--json"])
    assert status.code == 0
    assert status.out.splitlines() == [
        "side    local     remote    key",
        "local   deleted   -         blob",
        "local   modified  -         station-1",
        "remote  -         modified  station-2",
        "local   added     -         station-3",
        "4 changes: 3 local, 1 remote, 0 both",
    ]
    data = as_json.json()
    assert data["summary"] == {"changes": 4, "local": 3, "remote": 1, "both": 0, "conflicts": 0}  # type: ignore[index]
    first = data["changes"][0]  # type: ignore[index]
    assert first == {
        "key": "blob", "side": "local", "local": "deleted", "remote": None,
        "local_timestamp": first["local_timestamp"], "remote_timestamp": None, "conflict": False,
    }

    push = ebk(tmp, "push", remote, "alice.blt")
    assert push.code == 0 and push.err == ""  # no progress bar: stderr is not a terminal
    lines = push.out.splitlines()
    assert re.fullmatch(r"commit 3: 2 keys written, 1 deleted, [\d,]+ bytes in \d+ requests", lines[0])
    assert lines[1:] == [
        "pulled in 1 key others changed meanwhile",
        "  written  station-1",
        "  written  station-3",
        "  deleted  blob",
        "  pulled   station-2",
    ]

    pull, again, fresh, as_json = ebk_all(
        tmp,
        ["pull", remote, "bob.blt"],
        ["push", remote, "alice.blt"],
        ["pull", remote, "dan.blt", "--load", "--allow-pickle"],
        ["pull", remote, "erin.blt", "--load", "--json", "--allow-pickle"],
    )
    assert pull.code == 0 and pull.err == "" and pull.out.splitlines() == [
        "3 keys updated, 1 deleted from the remote (now at commit 3)",
        "  updated  station-1",
        "  updated  station-2",
        "  updated  station-3",
        "  deleted  blob",
    ]
    assert again.out == "nothing to push: no local changes in alice.blt\n"
    assert fresh.code == 0 and fresh.err == ""
    assert fresh.out.splitlines() == [
        f"created dan.blt from {folder.as_uri()}: 3 keys at commit 3",
        "fetched 3 values",
    ]
    data = as_json.json()
    assert data["created"] is True and data["loaded"] == 3 and data["commit"] == 3  # type: ignore[index]
    expected = {"station-1": {"rain_mm": [5.0]}, "station-2": "carol's text", "station-3": "new"}
    with ebooklet.open(folder, tmp / "bob.blt", "r") as db:
        assert dict(db.items()) == expected
    with booklet.open(tmp / "dan.blt", "r") as local:  # a plain booklet file
        assert {key: local.get(key) for key in expected} == expected  # loaded into the file


def test_push_and_pull_list_keys_only_when_there_are_few(tmp_path: pathlib.Path) -> None:
    with ebooklet.open(tmp_path / "bucket" / "db", tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.update({f"k{i:04d}": "v" for i in range(1_500)})
    run = ebk(tmp_path, "push", "bucket/db", "a.blt")
    assert run.out.splitlines()[1:] == ["  (1,500 keys; --verbose lists them)"]
    assert re.fullmatch(r"commit 1: 1,500 keys written, 0 deleted, \d{1,3}(,\d{3})+ bytes in \d+ requests",
                        run.out.splitlines()[0])
    with ebooklet.open(tmp_path / "bucket" / "db", tmp_path / "a.blt", "w") as db:
        db.update({f"k{i:04d}": "w" for i in range(25)})
    run = ebk(tmp_path, "push", "bucket/db", "a.blt", "-v")
    again = ebk(tmp_path, "pull", "bucket/db", "b.blt")
    assert len(run.out.splitlines()) == 26 and run.out.splitlines()[-1] == "  written  k0024"
    assert again.out.splitlines()[0].endswith(": 1,500 keys at commit 2")


def test_conflicts(folder: pathlib.Path) -> None:
    tmp = folder.parent.parent
    remote = "bucket/stations.blt"
    with ebooklet.open(folder, tmp / "bob.blt", "w", allow_pickle=True) as db:
        db["station-1"] = "bob"
        db.changes().push()
    with ebooklet.open(folder, tmp / "alice.blt", "w") as db:
        db["station-1"] = "alice"

    status, push, pull = (ebk(tmp, command, remote, "alice.blt") for command in ("status", "push", "pull"))
    assert status.code == 0 and status.out.splitlines() == [
        "side  local     remote    key",
        "both  modified  modified  station-1  CONFLICT",
        "1 change: 0 local, 0 remote, 1 both (1 conflict; resolve with push --on-conflict)",
    ]
    assert error_line(push) == (
        "ebooklet: error: 1 key changed both locally and on the remote: 'station-1'. Nothing was "
        "committed; choose the side to keep with push --on-conflict local|remote|newest\n"
    )
    assert "'station-1'" in error_line(pull) and "pull --on-conflict local|remote|newest" in pull.err

    run = ebk(tmp, "push", remote, "alice.blt", "--on-conflict", "local")
    assert run.code == 0 and run.out.startswith("commit 3: 1 key written")
    with ebooklet.open(folder, tmp / "check.blt", "r", allow_pickle=True) as db:
        assert db["station-1"] == "alice"


def test_local_file_errors(folder: pathlib.Path) -> None:
    tmp = folder.parent.parent
    remote = "bucket/stations.blt"
    (tmp / "not-a-db.blt").write_bytes(b"this is not a booklet file")
    status, push, pull, is_dir, damaged = ebk_all(
        tmp,
        ["status", remote, "missing.blt"],
        ["push", remote, "missing.blt"],
        ["pull", remote, "nowhere/x.blt"],
        ["push", remote, "bucket"],
        ["status", remote, "not-a-db.blt"],
    )
    assert error_line(status) == (
        "ebooklet: error: the local file missing.blt does not exist; 'ebooklet pull REMOTE "
        "missing.blt' makes a copy there\n"
    )
    assert "missing.blt does not exist; there is nothing to push" in error_line(push)
    assert f"the folder {tmp / 'nowhere'} does not exist" in error_line(pull)
    assert "the local file bucket is a folder" in error_line(is_dir)
    assert error_line(damaged)


def test_demo_still_runs(tmp_path: pathlib.Path) -> None:
    run = ebk(tmp_path, "demo", "--dir", "demo")
    assert run.code == 0 and "ConflictError" in run.out
    assert run.out.splitlines()[-1] == "Done. Everything the demo wrote is in demo"


# -- S3 (moto) -------------------------------------------------------------------------------


def test_s3(tmp_path: pathlib.Path, moto_server: S3Server) -> None:
    bucket = moto_server.make_bucket()
    key = "dbs/stations.blt"
    url = f"s3://{bucket}/{key}"
    creds = {"AWS_ACCESS_KEY_ID": moto_server.access_key_id, "AWS_SECRET_ACCESS_KEY": moto_server.access_key}
    endpoint = ["--endpoint-url", moto_server.endpoint_url]
    conn = ebooklet.S3Connection(
        moto_server.access_key_id, moto_server.access_key, key, bucket, endpoint_url=moto_server.endpoint_url
    )
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="orjson") as db:
        db.update({"x": [1, 2], "y": {"z": None}})

    location = f"{url} ({moto_server.endpoint_url})"
    head, status = ebk_all(tmp_path, ["head", url, *endpoint], ["status", url, "a.blt", *endpoint], env=creds)
    assert error_line(head) == (
        f"ebooklet: error: no ebooklet database at {location}: check the bucket and key; 'ebooklet ls "
        f"s3://{bucket}/dbs/' lists the databases there\n"
    )
    assert status.out.splitlines() == [
        "side   local  remote  key",
        "local  added  -       x",
        "local  added  -       y",
        "2 changes: 2 local, 0 remote, 0 both",
    ]
    data = ebk(tmp_path, "push", url, "a.blt", "--json", *endpoint, env=creds).json()
    assert data["committed"] and data["commit"] == 1 and data["keys"] == ["x", "y"]  # type: ignore[index]

    # The endpoint may come from the environment, the key id from --access-key-id.
    head, keys, get = ebk_all(
        tmp_path,
        ["head", url, "--json", "--access-key-id", moto_server.access_key_id],
        ["keys", url, "--json", "--access-key-id", moto_server.access_key_id],
        ["get", url, "y", "--json", "--access-key-id", moto_server.access_key_id],
        env={"AWS_SECRET_ACCESS_KEY": moto_server.access_key, "AWS_ENDPOINT_URL_S3": endpoint[1]},
    )
    data = head.json()
    assert data["location"] == location and data["n_keys"] == 2  # type: ignore[index]
    assert data["value_serializer"] == "orjson" and data["commit"] == 1  # type: ignore[index]
    assert keys.json() == ["x", "y"]
    assert get.json() == {"z": None}

    with ebooklet.open(conn, tmp_path / "b.blt", "w") as db:
        db["x"] = [3]
        del db["y"]
        db.changes().push()
    pull = ebk(tmp_path, "pull", url, "a.blt", *endpoint, env=creds)
    assert pull.out.splitlines() == [
        "1 key updated, 1 deleted from the remote (now at commit 2)", "  updated  x", "  deleted  y"
    ]
    status, get = ebk_all(
        tmp_path, ["status", url, "a.blt", *endpoint], ["get", url, "x", *endpoint], env=creds
    )
    assert status.out == f"no changes: a.blt is in sync with {location}\n"
    assert get.out == "[3]\n"  # the cache was brought up to date


def test_put_and_del_without_push_need_no_credentials(tmp_path: pathlib.Path, moto_server: S3Server) -> None:
    bucket = moto_server.make_bucket()
    url = f"s3://{bucket}/db"
    conn = ebooklet.S3Connection(
        moto_server.access_key_id, moto_server.access_key, "db", bucket, endpoint_url=moto_server.endpoint_url
    )
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.update({"x": "1", "y": "2"})
        db.changes().push()
    # No AWS_* variable and no ~/.aws: they change the local file only, offline.
    put = ebk(tmp_path, "put", "a.blt", "z", "3")
    assert put.code == 0, put.err
    assert put.out == "set z in a.blt (not pushed yet: 'ebooklet push a.blt' pushes it)\n"
    delete = ebk(tmp_path, "del", "a.blt", "x", "--json")
    assert delete.code == 0, delete.err
    assert delete.json() == {"local": "a.blt", "deleted": ["x"], "pushed": False}
    with ebooklet.open(conn, tmp_path / "a.blt", "r") as db:
        assert dict(db.items()) == {"y": "2", "z": "3"}
    # What does need the remote still asks for credentials, with the same advice.
    push, new = ebk_all(
        tmp_path, ["put", "a.blt", "z", "4", "--push"],
        ["put", "new.blt", "k", "v", "--remote", url, "--endpoint-url", moto_server.endpoint_url],
    )
    for run in (push, new):
        assert error_line(run).startswith(f"ebooklet: error: no credentials for {url}: none in the arguments")
    assert not (tmp_path / "new.blt").exists()
    creds = {"AWS_ACCESS_KEY_ID": moto_server.access_key_id, "AWS_SECRET_ACCESS_KEY": moto_server.access_key}
    pushed = ebk(tmp_path, "push", "a.blt", env=creds)
    assert pushed.out.startswith("commit 2: 1 key written, 1 deleted"), pushed.out


def test_a_failed_push_reports_its_own_failure_not_a_cleanup_error(
    tmp_path: pathlib.Path, seaweedfs_server: S3Server
) -> None:
    """Issue 11, problem 3: a wrong secret, a missing bucket and a server that is down were all
    reported as "deleting objects ... failed"."""
    bucket = seaweedfs_server.make_bucket()
    with ebooklet.open(tmp_path / "folder" / "db", tmp_path / "a.blt", "c", value_serializer="str") as db:
        db["k"] = "v"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it is closed
    good = {"AWS_ACCESS_KEY_ID": seaweedfs_server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": seaweedfs_server.access_key}
    wrong = {**good, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    options = ["--endpoint-url", seaweedfs_server.endpoint_url, "--retries", "1"]
    runs = [
        ebk(tmp_path, "push", f"s3://{bucket}/db", "a.blt", *options, env=wrong),
        ebk(tmp_path, "push", "s3://no-such-bucket-e11/db", "a.blt", *options, env=good),
        ebk(tmp_path, "push", f"s3://{bucket}/db", "a.blt", "--endpoint-url", down, "--retries", "1",
            env=good),
    ]
    expected = [
        ("access denied", "Check the credentials"),
        ("the bucket does not exist", "Check the bucket name and the endpoint"),
        ("could not connect to", "(connection refused). Check that the server is running"),
    ]
    for run, (what, advice) in zip(runs, expected, strict=True):
        line = error_line(run)  # one line: no warning about a cleanup before it
        assert what in line and advice in line, line
        assert "delet" not in line and "not-the-secret" not in line, line


def test_a_missing_bucket_is_not_a_missing_database(tmp_path: pathlib.Path, moto_server: S3Server) -> None:
    """Issue 11, problem 4: a missing bucket was reported as a missing database, and Python's
    flag='r' suggested flag='c'."""
    url = "s3://no-such-bucket-e11/db"
    env = {"AWS_ACCESS_KEY_ID": moto_server.access_key_id, "AWS_SECRET_ACCESS_KEY": moto_server.access_key,
           "AWS_ENDPOINT_URL_S3": moto_server.endpoint_url}
    head, keys, pull, json_keys = ebk_all(
        tmp_path, ["head", url], ["keys", url], ["pull", url, "b.blt"], ["keys", url, "--json"], env=env
    )
    message = ("ebooklet: error: GET s3://no-such-bucket-e11/db: the bucket does not exist (NoSuchBucket: "
               "The specified bucket does not exist). Check the bucket name and the endpoint.\n")
    for run in (head, keys, pull):
        assert error_line(run) == message
    assert json_keys.json()["error"]["message"] == message[len("ebooklet: error: "):-1]  # type: ignore[index]
    assert not (tmp_path / "b.blt").exists()
    conn = ebooklet.S3Connection(moto_server.access_key_id, moto_server.access_key, "db",
                                 "no-such-bucket-e11", endpoint_url=moto_server.endpoint_url)
    for flag in ("r", "w"):
        with pytest.raises(ebooklet.RemoteNotFoundError, match="the bucket does not exist") as info:
            ebooklet.open(conn, tmp_path / "a.blt", flag)
        assert "flag='c'" not in str(info.value)
    assert ebooklet.remote_info(ebooklet.S3Connection(
        moto_server.access_key_id, moto_server.access_key, "db", moto_server.make_bucket(),
        endpoint_url=moto_server.endpoint_url)) is None  # an existing bucket without the database


def test_unreachable_s3(tmp_path: pathlib.Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port once it is closed.
    env = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
    args = ["--endpoint-url", f"http://127.0.0.1:{port}", "--retries", "1"]
    runs = ebk_all(tmp_path, ["head", "s3://bucket/db", *args], ["keys", "s3://bucket/db", *args], env=env)
    for run in runs:
        line = error_line(run)
        assert f"could not connect to 127.0.0.1:{port} (connection refused). Check that the server" in line
        assert "secret" not in line


# -- the progress bar and error handling, in-process ----------------------------------------------


def test_render_progress() -> None:
    mib = 1024 * 1024
    line = render_progress(Progress("upload", 0, 2000, 0, 10 * mib), 80)
    assert line == "pushing   [....................]   0%         0 B sent          0/2,000 keys"
    half = render_progress(Progress("download", 1000, 2000, 5 * mib, 10 * mib), 80)
    assert half == "fetching  [##########..........]  50%     5.0 MiB received  1,000/2,000 keys"
    assert len(line) == len(half) <= 80
    # The fraction counts keys, whose total is fixed: a byte total that grows does not move it.
    grown = render_progress(Progress("upload", 1000, 2000, 5 * mib, 12 * mib), 80)
    assert " 50%" in grown and "12.0 MiB" not in grown
    done = render_progress(Progress("download", 2001, 2000, 10 * mib + 1, 10 * mib), 80)
    assert "[####################] 100%" in done  # clamped
    # Without keys, bytes give the fraction; with neither, it is done.
    assert " 25%" in render_progress(Progress("upload", 0, 0, 1, 4), 80)
    assert "100%" in render_progress(Progress("upload", 0, 0, 0, 0), 80)
    narrow = render_progress(Progress("upload", 1, 4, 512, 2048), 40)
    assert narrow == "pushing 25% 512 B sent 1/4 keys"  # no room for the bar
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * mib, 3 << 40)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 TiB"
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_throttles_and_ends_its_line() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressBar(out, width=80, interval=0.1, clock=clock)
    bar.tick()  # as progress_bar does when it makes the bar: the line is there at once
    assert out.getvalue() == "\rpushing     0 s  reading the remote and packing the changes"
    clock.now += 0.05
    bar(Progress("upload", 0, 10, 0, 100))  # within the interval: not drawn now
    assert out.getvalue().count("\r") == 1
    clock.now += 0.55
    bar(Progress("upload", 2, 10, 20, 100))
    bar(Progress("upload", 3, 10, 30, 100))  # within the interval: not drawn now
    assert out.getvalue().count("\r") == 2 and " 20%" in out.getvalue()
    clock.now += 0.15
    bar(Progress("upload", 4, 10, 40, 100))
    assert out.getvalue().count("\r") == 3 and " 40%" in out.getvalue()
    bar(Progress("upload", 10, 10, 100, 100))
    bar.close()
    text = out.getvalue()
    # The rate counts from the first progress, and the time left at that pace (0:00 once done).
    assert text.count("\r") == 4
    assert text.endswith("] 100%       100 B  10/10 keys       142 B/s  ETA  0:00\n")
    assert "  20%        20 B   2/10 keys        36 B/s  ETA  0:02" in text

    out = io.StringIO()
    quick = ProgressBar(out, clock=FakeClock(), phase="download")
    quick.tick()
    quick(Progress("download", 1, 1, 5, 5))
    quick.close()
    # A quick transfer: what it prepared, overwritten by its last state, and the line ended.
    assert out.getvalue().startswith("\rfetching    0 s  reading the index\r")
    assert out.getvalue().endswith("] 100%         5 B received  1/1 keys\n")


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    args = cli.build_parser().parse_args(["push", "r", "l"])
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar(args) as bar:
        assert bar is None
    monkeypatch.setattr(sys, "stderr", Tty())
    with progress_bar(args) as bar:
        assert isinstance(bar, ProgressBar)
    args = cli.build_parser().parse_args(["push", "r", "l", "--no-progress"])
    with progress_bar(args) as bar:
        assert bar is None


def test_interrupt_exits_130(
    folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(read, "remote_info", interrupted)
    assert cli.main(["head", str(folder)]) == 130
    assert capsys.readouterr().err == "ebooklet: interrupted: nothing was changed\n"
    assert cli.main(["head", str(folder), "--json"]) == 130
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": {"message": "interrupted: nothing was changed", "type": "Interrupted",
                                         "exit_status": 130}}
    # A Ctrl-C while a push prepares (opening the local file), before its transfer: what a
    # later one says too, that nothing was committed.
    monkeypatch.setattr(cli.sync, "open_database", interrupted)
    assert cli.main(["push", str(folder.parent.parent / "alice.blt")]) == 130
    assert capsys.readouterr().err == (
        "ebooklet: interrupted: nothing was committed; run the command again to do it\n")


def test_push_stops_before_deleting_most_of_the_remote_unasked(tmp_path: pathlib.Path) -> None:
    import booklet

    with ebooklet.open(tmp_path / "bucket" / "db", tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.update({f"k{i}": "v" for i in range(4)})
        db.changes().push()
    with booklet.open(tmp_path / "a.blt", "w") as raw:  # deleted offline, behind ebooklet's back
        for i in range(3):
            del raw[f"k{i}"]
    run = ebk(tmp_path, "push", "bucket/db", "a.blt")
    assert run.code == 1 and "would delete 3 of the remote's 4 keys" in run.err
    assert "--max-delete 100" in run.err and "Nothing was committed" in run.err
    assert ebooklet.remote_info(tmp_path / "bucket" / "db").n_keys == 4
    run = ebk(tmp_path, "push", "bucket/db", "a.blt", "--max-delete", "100")
    assert run.code == 0, run.err
    assert ebooklet.remote_info(tmp_path / "bucket" / "db").n_keys == 1


def test_every_failure_is_one_line_with_advice_even_a_bug(
    folder: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure the command line did not foresee (a full disk, a bug) is still one line that
    says what to do, and JSON with --json; --verbose adds the traceback of a bug."""
    def full_disk(args: object) -> int:
        raise OSError(28, "No space left on device", "/data/a.blt")

    def bug(args: object) -> int:
        raise RuntimeError("something impossible")

    monkeypatch.setattr(read, "_keys", full_disk)
    assert cli.main(["keys", str(folder)]) == 1
    assert capsys.readouterr().err == (
        "ebooklet: error: /data/a.blt: No space left on device. Check the path, its permissions and the "
        "free space on its disk, then run the command again\n"
    )
    monkeypatch.setattr(read, "_keys", bug)
    assert cli.main(["keys", str(folder), "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["type"] == "InternalError"
    assert err == (
        "ebooklet: error: unexpected RuntimeError: something impossible. This is a bug in ebooklet: please "
        "report it with the output of the same command run with --verbose (which shows where it happened)\n"
    )
    monkeypatch.setattr(ebooklet.cli.sync, "_status", bug)
    assert cli.main(["status", str(folder.parent.parent / "alice.blt"), "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("run with --verbose (which shows where it happened)\n")


def test_main_leaves_logging_as_it_found_it(folder: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    logger = logging.getLogger("ebooklet")
    handlers, level = list(logger.handlers), logger.level
    assert cli.main(["head", str(folder)]) == 0
    assert cli.main(["status", "nowhere.blt", "--verbose"]) == 1
    assert logger.handlers == handlers and logger.level == level
    assert logging.getLogger("booklet").level == logging.NOTSET
