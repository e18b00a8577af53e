"""docs/cli.rst runs as written: its Python blocks are executed and its console sessions replayed.

The page is read top to bottom in one folder. A ``.. code:: python`` block is executed; in a
``.. code:: console`` block each ``$ `` line is a command (run by bash, with ``ebooklet`` on the
PATH) and the lines up to the next command are its expected output, stdout and stderr
together. ``export``, ``unset`` and ``echo $?`` are kept track of here. The page's fixed
names stand for this run's: the folder ``/tmp/tour``, the S3 endpoint
``http://127.0.0.1:9000`` (moto), the bucket ``my-bucket`` and ``http://127.0.0.1:9999``
(a port where nothing listens). Values that change from run to run (uuids, times, byte
counts) are compared by shape.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import uuid

import pytest

from .servers import S3Server

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "cli.rst"

_VOLATILE = [
    (re.compile(r"\b[0-9a-f]{32}\b"), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00| UTC)"), "<time>"),
    (re.compile(r"\b\d{16}\b"), "<microseconds>"),
    (re.compile(r"\b\d{1,3}(,\d{3})* bytes"), "<n> bytes"),
    (re.compile(r"\(\d+(\.\d)? [KMG]iB\)"), "(<size>)"),
    (re.compile(r"  by \S+"), "  by <author>"),
]


def blocks(text: str) -> list[tuple[str, str]]:
    """The page's ``.. code:: python`` and ``.. code:: console`` blocks, in order."""
    found = []
    for match in re.finditer(r"^\.\. code:: (python|console)\n\n((?:(?:  .*)?\n)+)", text, re.MULTILINE):
        lines = [line[2:] for line in match[2].rstrip("\n").split("\n")]
        found.append((match[1], "\n".join(lines)))
    return found


def sessions(block: str) -> list[tuple[str, str]]:
    """(command, expected output) for each ``$ `` line of a console block."""
    pairs: list[tuple[str, list[str]]] = []
    for line in block.split("\n"):
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            pairs[-1][1].append(line)
    return [(command, "\n".join(out).rstrip("\n")) for command, out in pairs]


class Replay:
    def __init__(self, cwd: pathlib.Path, server: S3Server, bucket: str, dead_port: int) -> None:
        self.cwd = cwd
        self.names = [
            ("/tmp/tour", str(cwd)),
            ("http://127.0.0.1:9000", server.endpoint_url),
            ("http://127.0.0.1:9999", f"http://127.0.0.1:{dead_port}"),
            ("127.0.0.1:9999", f"127.0.0.1:{dead_port}"),
            ("my-bucket", bucket),
            ("AKIAEXAMPLE", server.access_key_id),
            ("example-secret", server.access_key),
        ]
        bin_dir = cwd / ".bin"
        bin_dir.mkdir()
        (bin_dir / "ebooklet").write_text(f'#!/bin/sh\nexec {sys.executable} -m ebooklet "$@"\n')
        (bin_dir / "ebooklet").chmod(0o755)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XDG_", "PYTHON"))}
        self.env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
                        HOME=str(cwd / ".home"), XDG_CACHE_HOME=str(cwd / ".cache"),
                        AWS_EC2_METADATA_DISABLED="true", COLUMNS="80")
        self.status = 0
        self.namespace: dict[str, object] = {}  # the Python blocks share one, like a session

    def ours(self, text: str) -> str:
        for page, real in self.names:
            text = text.replace(page, real)
        return text

    def theirs(self, text: str) -> str:
        for page, real in self.names:
            text = text.replace(real, page)
        for pattern, placeholder in _VOLATILE:
            text = pattern.sub(placeholder, text)
        return text

    def python(self, code: str) -> None:
        os.chdir(self.cwd)
        exec(compile(self.ours(code), str(PAGE), "exec"), self.namespace)

    def run(self, command: str) -> str:
        words = shlex.split(command)
        if words[0] == "export":
            for word in words[1:]:
                name, _, value = word.partition("=")
                self.env[name] = self.ours(value)
            return ""
        if words[0] == "unset":
            for name in words[1:]:
                self.env.pop(name, None)
            return ""
        if command == "echo $?":
            return str(self.status)
        proc = subprocess.run(["bash", "-c", self.ours(command)], cwd=self.cwd, env=self.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=120)
        self.status = proc.returncode
        return proc.stdout.decode().rstrip("\n")


def test_the_page_lists_every_command() -> None:
    from ebooklet import cli

    text = PAGE.read_text()
    for command in cli.build_parser()._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
        assert f"  ebooklet {command}" in text, command


@pytest.mark.slow  # a whole day in the shell: some forty commands, each a new process
def test_the_examples_run(
    tmp_path: pathlib.Path, moto_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    bucket = moto_server.make_bucket(f"my-{uuid.uuid4().hex[:6]}")  # as long as the page's my-bucket
    tour = tmp_path / "tour"
    tour.mkdir()
    monkeypatch.chdir(tour)
    replay = Replay(tour, moto_server, bucket, dead_port)
    ran = 0
    for kind, block in blocks(PAGE.read_text()):
        if kind == "python":
            replay.python(block)
            continue
        for command, expected in sessions(block):
            actual = replay.run(command)
            assert replay.theirs(actual) == replay.theirs(expected), f"$ {command}"
            ran += 1
    assert ran > 40
