"""The command line a scientist can guess (issue 19): init, a LOCAL file wherever a read
command takes REMOTE, --at, "did you mean", options anywhere, --json/-q/-v on every command,
and output that programs and people can both use. Run in-process (``cli.main``): nothing
here needs a terminal (tests/test_cli_terminal.py has what does)."""

from __future__ import annotations

import argparse
import json
import pathlib
import re

import pytest

import ebooklet
from ebooklet import cli
from ebooklet.local import synced_with

from .servers import S3Server


class Shell:
    """``ebooklet ARGS`` in one folder, in this process: the exit status, stdout and stderr."""

    def __init__(self, cwd: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.cwd, self._capsys = cwd, capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(args))
        except SystemExit as exit:  # usage errors, --help
            code = int(exit.code or 0)
        out, err = self._capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> object:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def sh(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Shell:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return Shell(tmp_path, capsys)


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    return out


# -- init --------------------------------------------------------------------------------------


def test_init_creates_the_database_and_a_local_file_synced_with_it(sh: Shell) -> None:
    out = ok(sh("init", "bucket/st.blt", "st.blt", "--serializer", "orjson"))
    remote = (sh.cwd / "bucket" / "st.blt").as_uri()
    assert out == (f"created {remote} (commit 1, serializer orjson) and st.blt, synced with it: "
                   "'ebooklet put st.blt KEY VALUE', then 'ebooklet push st.blt'\n")
    info = ebooklet.remote_info(sh.cwd / "bucket" / "st.blt")
    assert info is not None and info.commit == 1 and info.n_keys == 0 and info.value_serializer == "orjson"
    assert synced_with(sh.cwd / "st.blt").location == remote  # type: ignore[union-attr]
    # The next steps it names work as they are.
    ok(sh("put", "st.blt", "station-1", '{"rain_mm": [0.2]}'))
    assert ok(sh("push", "st.blt")).startswith("commit 2: 1 key written")

    code, _, err = sh("init", "bucket/st.blt", "other.blt", "--serializer", "orjson")
    assert code == 1 and err == (f"ebooklet: error: {remote} already holds a database (commit 2, 1 key): "
                                 "'ebooklet pull bucket/st.blt other.blt' makes a local copy\n")
    assert not (sh.cwd / "other.blt").exists()
    code, _, err = sh("init", "bucket/new.blt", "st.blt", "--serializer", "orjson")
    assert code == 1 and "st.blt already exists: init makes a new local file" in err
    assert ebooklet.remote_info(sh.cwd / "bucket" / "new.blt") is None
    code, _, err = sh("init", "bucket/new.blt", "new.blt")
    assert code == 2 and "usage: ebooklet init" in err and "--serializer" in err


# -- a LOCAL file where REMOTE goes, and --at ----------------------------------------------------


@pytest.fixture
def two_commits(sh: Shell) -> Shell:
    """bucket/st.blt at commit 2, and st.blt synced with it plus one change not pushed."""
    ok(sh("init", "bucket/st.blt", "st.blt", "--serializer", "orjson"))
    ok(sh("put", "st.blt", "a", '{"v": 1}', "--push"))
    ok(sh("put", "st.blt", "a", '{"v": 2}', "--push"))
    ok(sh("put", "st.blt", "b", "[1, 2]"))  # not pushed
    return sh


def test_read_commands_take_the_local_file_they_were_synced_with(two_commits: Shell) -> None:
    sh = two_commits
    assert ok(sh("keys", "st.blt")) == "a\nb\n"  # its own keys, the unpushed one too
    assert ok(sh("get", "st.blt", "b")) == "[1, 2]\n"
    assert [c["number"] for c in sh.json("log", "st.blt")] == [3, 2, 1]  # type: ignore[index]
    assert sh.json("diff", "st.blt", "2", "3") == [{"key": "a", "change": "modified"}]
    # Nothing was pulled into it or pushed from it.
    assert ok(sh("status", "st.blt")).splitlines()[-1] == "1 change: 1 local, 0 remote, 0 both"


def test_at_reads_a_past_commit(two_commits: Shell) -> None:
    sh = two_commits
    assert ok(sh("get", "bucket/st.blt", "a", "--at", "2")) == '{"v": 1}\n'
    assert ok(sh("get", "st.blt", "a", "--at", "3")) == '{"v": 2}\n'
    assert ok(sh("keys", "--at", "1", "bucket/st.blt")) == ""
    code, out, err = sh("get", "bucket/st.blt", "b", "--at", "2", "--json")
    assert code == 1 and json.loads(out)["error"]["type"] == "KeyError"
    assert f"no key 'b' in {(sh.cwd / 'bucket' / 'st.blt').as_uri()} at commit 2" in err
    code, _, err = sh("keys", "bucket/st.blt", "--at", "yesterday")
    assert code == 2 and "'yesterday' is neither a commit number nor an ISO 8601 time" in err


def test_compact_takes_a_remote_alone_or_a_local_file(two_commits: Shell) -> None:
    sh = two_commits
    for i in range(4):  # small segments, one per push: worth rewriting into one
        ok(sh("put", "st.blt", f"k{i}", str(i), "--push"))
    assert ok(sh("compact", "bucket/st.blt")) == "commit 8: 6 values moved into new segments\n"
    assert ok(sh("compact", "bucket/st.blt")) == "nothing to compact\n"
    assert ebooklet.verify(sh.cwd / "bucket" / "st.blt", deep=True)
    code, _, err = sh("compact", "bucket/nothing.blt")
    assert code == 1 and f"no ebooklet database at {(sh.cwd / 'bucket' / 'nothing.blt').as_uri()}" in err


# -- usage: did you mean, options anywhere, every command's options ------------------------------


def test_a_mistyped_command_or_option_gets_a_suggestion_and_the_commands_usage(sh: Shell) -> None:
    code, _, err = sh("stauts", "st.blt")
    assert code == 2 and "unknown command 'stauts'; did you mean 'status'?" in err
    code, _, err = sh("frobnicate")
    assert code == 2 and "unknown command 'frobnicate' ('ebooklet --help' lists the commands)" in err
    code, _, err = sh("put", "st.blt", "k", "v", "--txet")
    assert code == 2 and err.startswith("usage: ebooklet put ")
    assert err.endswith("ebooklet put: error: unrecognized arguments: --txet (did you mean --text?)\n")
    code, out, _ = sh("keys", "bucket/st.blt", "--jsn", "--json")
    assert code == 2 and json.loads(out)["error"]["message"] == (
        "unrecognized arguments: --jsn (did you mean --json?)")


def test_options_go_anywhere(two_commits: Shell) -> None:
    sh = two_commits
    ok(sh("put", "st.blt", "c", "--text", "hello"))  # the option between KEY and VALUE
    ok(sh("put", "--text", "st.blt", "d", "hello"))
    assert ok(sh("get", "st.blt", "c")) == ok(sh("get", "st.blt", "d")) == "hello\n"
    assert json.loads(ok(sh("--json", "keys", "st.blt"))) == ["a", "b", "c", "d"]
    assert ok(sh("-q", "push", "st.blt")) == ""


def test_every_command_takes_json_quiet_and_verbose() -> None:
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert len(commands.choices) >= 20
    for name, parser in commands.choices.items():
        options = {s for action in parser._actions for s in action.option_strings}
        assert {"--json", "-q", "--quiet", "-v", "--verbose"} <= options, name


# -- output --------------------------------------------------------------------------------------


def test_get_prints_json_that_put_takes_back(sh: Shell) -> None:
    ok(sh("init", "bucket/st.blt", "st.blt", "--serializer", "pickle"))
    values = {"nested": {"rain_mm": [0.2, None], "ok": True, "name": "Wellington"}, "n": 3, "pi": 3.5}
    with ebooklet.open(sh.cwd / "bucket" / "st.blt", sh.cwd / "st.blt", "w") as db:
        db.update({**values, "tuple": (1, 2), "set": {1}})
    for key, value in values.items():
        printed = ok(sh("get", "st.blt", key))
        ok(sh("put", "st.blt", f"{key}-again", printed.rstrip("\n")))
        with ebooklet.open(sh.cwd / "bucket" / "st.blt", sh.cwd / "st.blt", "r") as db:
            assert db[f"{key}-again"] == value
    # No JSON form that reads back the same: the repr, which says what it is.
    assert ok(sh("get", "st.blt", "tuple")) == "(1, 2)\n" and ok(sh("get", "st.blt", "set")) == "{1}\n"


def test_status_lists_twenty_changes_then_says_how_many_more(sh: Shell) -> None:
    ok(sh("init", "bucket/st.blt", "st.blt", "--serializer", "orjson"))
    with ebooklet.open(sh.cwd / "bucket" / "st.blt", sh.cwd / "st.blt", "w") as db:
        db.update({f"k{i:03d}": i for i in range(150)})
    lines = ok(sh("status", "st.blt")).splitlines()
    assert len(lines) == 1 + 20 + 2 and lines[1].endswith("k000") and lines[20].endswith("k019")
    assert lines[-2:] == ["... and 130 more changes (--verbose lists them all)",
                          "150 changes: 150 local, 0 remote, 0 both"]
    assert len(ok(sh("status", "st.blt", "--verbose")).splitlines()) == 1 + 150 + 1


def test_json_names_the_remote_and_its_endpoint_apart(
    sh: Shell, moto_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = moto_server.make_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.access_key)
    remote, endpoint = f"s3://{bucket}/st.blt", moto_server.endpoint_url
    created = sh.json("init", remote, "st.blt", "--serializer", "orjson", "--endpoint-url", endpoint)
    assert created == {"remote": remote, "endpoint": endpoint, "local": "st.blt", "commit": 1,
                       "serializer": "orjson"}
    head = sh.json("head", remote, "--endpoint-url", endpoint)
    assert (head["remote"], head["endpoint"]) == (remote, endpoint)  # type: ignore[index]
    status = sh.json("status", "st.blt")
    assert (status["remote"], status["endpoint"]) == (remote, endpoint)  # type: ignore[index]
    # compact takes the REMOTE alone, as gc and verify do (the URL is not read as a file name).
    for i in range(3):
        ok(sh("put", "st.blt", f"k{i}", str(i), "--push"))
    compacted = sh.json("compact", remote, "--endpoint-url", endpoint)
    assert compacted["commit"] == 5 and compacted["compacted"] == 3  # type: ignore[index]
    folder = sh.json("init", "bucket/f.blt", "f.blt", "--serializer", "str")
    assert folder["remote"] == (sh.cwd / "bucket" / "f.blt").as_uri() and folder["endpoint"] is None  # type: ignore[index]


def test_results_say_one_key_and_two_keys(tmp_path: pathlib.Path) -> None:
    remote = tmp_path / "bucket" / "st.blt"
    with ebooklet.open(remote, tmp_path / "a.blt", "c", value_serializer="orjson") as db:
        db["a"] = 1
        assert str(db.changes().push()).startswith("commit 1: 1 key written, 0 deleted, ")
    with ebooklet.open(remote, tmp_path / "b.blt", "w") as db:
        db.update({"a": 2, "b": 3})
        pushed = str(db.changes().push())
        assert pushed.startswith("commit 2: 2 keys written, 0 deleted, ") and " in " in pushed
    with ebooklet.open(remote, tmp_path / "a.blt", "w") as db:
        assert str(db.changes().pull()) == "2 keys updated, 0 deleted from the remote"
    assert re.search(r": OK \(2 commits, \d+ objects checked\)$", str(ebooklet.verify(remote)))
    assert "(s)" not in str(ebooklet.gc(remote, min_age=0, dry_run=True))


def test_a_remembered_endpoint_wins_over_the_environment_and_says_so(
    sh: Shell, moto_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = moto_server.make_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.access_key)
    endpoint, moved = moto_server.endpoint_url, "http://127.0.0.1:9"
    ok(sh("init", f"s3://{bucket}/st.blt", "st.blt", "--serializer", "orjson", "--endpoint-url", endpoint))
    ok(sh("put", "st.blt", "k", "1"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moved)
    code, out, err = sh("push", "st.blt")
    assert code == 0 and out.startswith("commit 2: 1 key written")
    assert err == (f"ebooklet: warning: st.blt remembers the endpoint {endpoint}, and AWS_ENDPOINT_URL is "
                   f"{moved}: using {endpoint} (give --endpoint-url {moved} to use that one)\n")
    assert sh("status", "st.blt", "-q")[2] == ""  # -q: no warning
    # The option wins over both: nothing listens there, so status lists the local changes
    # only, says why, and exits 5 (issue 15: the remote was not checked).
    code, out, err = sh("status", "st.blt", "--endpoint-url", moved)
    assert code == 5 and "could not connect to 127.0.0.1:9 (connection refused)" in out


def test_a_refused_connection_is_one_sentence_and_verbose_shows_the_chain(sh: Shell, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    code, _, err = sh("head", "s3://bucket/db.blt", "--endpoint-url", "http://127.0.0.1:9")
    assert code == 1 and err == (
        "ebooklet: error: GET s3://bucket/db.blt: could not connect to 127.0.0.1:9 (connection refused). "
        "Check that the server is running and that the endpoint is right, then try again; nothing was "
        "changed.\n")
    code, _, err = sh("head", "s3://bucket/db.blt", "--endpoint-url", "http://127.0.0.1:9", "--verbose")
    assert code == 1 and "Traceback" in err and "NewConnectionError" in err
    assert "ConnectionRefusedError" in err
    assert err.endswith("nothing was changed.\n")
