"""``python -m ebooklet ARGS`` as real child processes, forked from a warm parent.

Every command the tests run is its own process, with its own folder, environment, standard
streams, exit status and interpreter exit, as when a person types it. What is saved is the
interpreter's start and the imports every command pays for (about half a second when pandas is
installed, since booklet imports it): a *zygote*, started once per test process with the
test's environment, imports ``ebooklet.cli`` and then forks one child per command. The child
takes the command's folder, environment and files for its standard streams, and runs
``ebooklet`` as ``-m`` would; its exit (``SystemExit``, an uncaught exception) ends the
interpreter as any process ends.

Tests that need a terminal, signals or a process of their own still start one (test_cli_terminal,
the kill tests); ``EBOOKLET_TEST_FRESH=1`` makes every command here a fresh interpreter too.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence

_ZYGOTE = r"""
import os, pickle, select, signal, struct, sys

import ebooklet.cli  # noqa: F401  the imports every command pays for, once


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return data


def reply(obj):
    data = pickle.dumps(obj)
    os.write(1, struct.pack("<I", len(data)) + data)


def child(cwd, argv, env, files):
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, (path, mode) in enumerate(files):
        opened = os.open(path, mode, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    os.closerange(3, 256)
    # Standard streams as the interpreter makes them for pipes (the zygote's own are its
    # requests and replies).
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        old = getattr(sys, name)
        stream = open(fd, mode, encoding=old.encoding, errors=old.errors, closefd=False,
                      buffering=-1 if fd != 2 else 1)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["-m", *argv]
    import runpy
    runpy.run_module("ebooklet", run_name="__main__", alter_sys=True)
    raise SystemExit(0)


while True:
    (size,) = struct.unpack("<I", read_exact(4))
    commands, timeout = pickle.loads(read_exact(size))
    pids = []
    for command in commands:
        pid = os.fork()
        if pid == 0:
            child(*command)  # never returns: the child's exit ends its interpreter
        pids.append(pid)
    fds = {os.pidfd_open(pid): pid for pid in pids}
    codes = {}
    while fds:
        ready, _, _ = select.select(list(fds), [], [], timeout)
        if not ready:  # past the timeout: stop them, and say so
            for pid in fds.values():
                os.kill(pid, signal.SIGKILL)
            for fd, pid in fds.items():
                os.waitpid(pid, 0)
                os.close(fd)
                codes[pid] = None
            break
        for fd in ready:
            pid = fds.pop(fd)
            _, status = os.waitpid(pid, 0)
            os.close(fd)
            codes[pid] = os.waitstatus_to_exitcode(status)
    reply([codes[pid] for pid in pids])
"""

_lock = threading.Lock()
_zygote: subprocess.Popen | None = None


def _start(env: dict[str, str]) -> subprocess.Popen:
    global _zygote
    if _zygote is None or _zygote.poll() is not None:
        _zygote = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, cwd=tempfile.gettempdir(),
        )
    return _zygote


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise RuntimeError("the test zygote for ebooklet commands died")
    return data


def run_all(
    commands: Sequence[tuple[str, list[str], dict[str, str]]], stdin: bytes, timeout: float
) -> list[tuple[int, bytes, bytes]]:
    """Run each ``(cwd, args, env)`` as ``python -m ebooklet ARGS``, side by side; return
    each one's exit status, standard output and standard error."""
    if os.environ.get("EBOOKLET_TEST_FRESH"):
        return _fresh(commands, stdin, timeout)
    with tempfile.TemporaryDirectory(prefix="ebk-run-") as tmp:
        stdin_path = os.path.join(tmp, "stdin")
        with open(stdin_path, "wb") as f:
            f.write(stdin)
        request = []
        for i, (cwd, args, env) in enumerate(commands):
            files = [
                (stdin_path, os.O_RDONLY),
                (os.path.join(tmp, f"out{i}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                (os.path.join(tmp, f"err{i}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            ]
            request.append((str(cwd), list(args), env, files))
        data = pickle.dumps((request, timeout))
        with _lock:
            zygote = _start(commands[0][2])
            assert zygote.stdin is not None and zygote.stdout is not None
            zygote.stdin.write(struct.pack("<I", len(data)) + data)
            zygote.stdin.flush()
            (size,) = struct.unpack("<I", _read_exact(zygote.stdout, 4))
            codes = pickle.loads(_read_exact(zygote.stdout, size))
        results = []
        for i, code in enumerate(codes):
            if code is None:
                raise subprocess.TimeoutExpired(["ebooklet", *commands[i][1]], timeout)
            with open(os.path.join(tmp, f"out{i}"), "rb") as out:
                with open(os.path.join(tmp, f"err{i}"), "rb") as err:
                    results.append((code, out.read(), err.read()))
        return results


def _fresh(
    commands: Sequence[tuple[str, list[str], dict[str, str]]], stdin: bytes, timeout: float
) -> list[tuple[int, bytes, bytes]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ebooklet", *args], cwd=cwd, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for cwd, args, env in commands
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(stdin, timeout=timeout)
        results.append((proc.returncode, out, err))
    return results
