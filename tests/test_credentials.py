"""Credentials from every source of the AWS chain, checked by SeaweedFS, which verifies signatures.

Temporary credentials come from SeaweedFS's own STS (``AssumeRole`` signed by the server's
admin identity), so a session token is accepted only when it is sent and covered by the
signature. Every test runs with an empty ``HOME``, no ``AWS_*`` variable from the developer,
and botocore's instance-metadata lookup disabled, so nothing leaves the loopback interface.
"""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest
import urllib3
from s3func.signer import SigV4Auth

import ebooklet
from ebooklet.remote import connect
from ebooklet.remote.credentials import (
    NoCredentialsError,
    resolve_credentials,
    resolve_endpoint,
    resolve_region,
)

from .servers import S3Server

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """No AWS settings but the test's own; ``~/.aws`` is the test's folder."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return home


@pytest.fixture(scope="module")
def bucket(seaweedfs_server: S3Server) -> str:
    return seaweedfs_server.make_bucket()


def assume_role(server: S3Server, seconds: int = 900) -> dict[str, str]:
    """Temporary credentials (key id, secret, session token) from SeaweedFS's STS."""
    body = urllib.parse.urlencode(
        {"Action": "AssumeRole", "RoleSessionName": "ebooklet-test", "Version": "2011-06-15",
         "DurationSeconds": str(seconds)}
    ).encode()
    url = server.endpoint_url + "/"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    signer = SigV4Auth(server.access_key_id, server.access_key, "us-east-1", service="sts")
    signer.add_auth("POST", url, headers, body)
    resp = urllib3.request("POST", url, headers=headers, body=body, retries=False)
    assert resp.status == 200, resp.data
    found = {el.tag.rsplit("}", 1)[-1]: el.text for el in ET.fromstring(resp.data).iter()}
    creds = {k: found[k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
    assert creds["AccessKeyId"] != server.access_key_id and all(creds.values())
    return creds  # type: ignore[return-value]


@pytest.fixture(scope="module")
def temporary(seaweedfs_server: S3Server) -> dict[str, str]:
    return assume_role(seaweedfs_server)


def roundtrip(conn: ebooklet.S3Connection, tmp_path: pathlib.Path, name: str) -> None:
    """Every kind of request: create, push (lease, puts, head), a fresh read (gets, ranges),
    a server-side copy, a listing and deletes."""
    with ebooklet.open(conn, tmp_path / f"{name}.blt", "n", value_serializer="str") as db:
        db["k"] = name
        assert db.changes().push().committed
        copy = ebooklet.S3Connection(
            conn.access_key_id, conn.access_key, conn.db_key + "-copy", conn.bucket,
            endpoint_url=conn.endpoint_url, session_token=conn.session_token, retries=0,
        )
        db.copy_remote(copy)
    with ebooklet.open(copy, tmp_path / f"{name}-copy.blt", "w") as db:
        assert db["k"] == name
        assert db.delete_remote() >= 2


def conn_for(server: S3Server, bucket: str, name: str, **kwargs: object) -> ebooklet.S3Connection:
    return ebooklet.S3Connection(db_key=f"creds/{name}", bucket=bucket, endpoint_url=server.endpoint_url,
                                 retries=0, **kwargs)  # type: ignore[arg-type]


# -- each source, against SeaweedFS ---------------------------------------------------------------


def test_explicit_temporary_credentials_are_signed_into_every_request(
    seaweedfs_server: S3Server, bucket: str, temporary: dict[str, str], tmp_path: pathlib.Path
) -> None:
    conn = conn_for(seaweedfs_server, bucket, "explicit", access_key_id=temporary["AccessKeyId"],
                    access_key=temporary["SecretAccessKey"], session_token=temporary["SessionToken"])
    assert conn.credentials.source == "arguments" and conn.credentials.temporary
    roundtrip(conn, tmp_path, "explicit")

    # The token matters: without it the temporary key id is unknown to the server.
    without = conn_for(seaweedfs_server, bucket, "explicit", access_key_id=temporary["AccessKeyId"],
                       access_key=temporary["SecretAccessKey"])
    with pytest.raises(ebooklet.RemoteAccessError):
        ebooklet.open(without, tmp_path / "without.blt", "c")


def test_the_token_is_covered_by_the_signature(
    seaweedfs_server: S3Server, bucket: str, temporary: dict[str, str], tmp_path: pathlib.Path
) -> None:
    # The server refuses a token added after signing, so a request that passes signed it.
    url = f"{seaweedfs_server.endpoint_url}/{bucket}/creds/none"
    headers: dict[str, str] = {}
    signer = SigV4Auth(temporary["AccessKeyId"], temporary["SecretAccessKey"], "us-east-1")
    signer.add_auth("GET", url, headers)
    headers["X-Amz-Security-Token"] = temporary["SessionToken"]
    resp = urllib3.request("GET", url, headers=headers, retries=False)
    assert resp.status == 403 and b"SignatureDoesNotMatch" in resp.data

    conn = conn_for(seaweedfs_server, bucket, "signed", access_key_id=temporary["AccessKeyId"],
                    access_key=temporary["SecretAccessKey"], session_token=temporary["SessionToken"])
    transport = connect(conn).transport
    etag = transport.put("creds/signed-object", b"data")
    assert transport.get("creds/signed-object").etag == etag  # type: ignore[union-attr]
    # s3func's listing-based lock (for stores without conditional writes) signs the token too.
    lock = transport.fallback_lock("creds/signed-lock")
    assert lock.acquire(timeout=30)
    lock.release()
    transport.delete(["creds/signed-object"])


def test_credentials_from_the_environment(
    seaweedfs_server: S3Server, bucket: str, temporary: dict[str, str], tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", temporary["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", temporary["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", temporary["SessionToken"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs_server.endpoint_url)
    conn = ebooklet.S3Connection(db_key="creds/env", bucket=bucket, retries=0)
    assert conn.credentials.source == "environment" and conn.endpoint_url == seaweedfs_server.endpoint_url
    roundtrip(conn, tmp_path, "env")


def test_credentials_from_the_shared_files_and_profiles(
    seaweedfs_server: S3Server, bucket: str, temporary: dict[str, str], tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch, clean_environment: pathlib.Path,
) -> None:
    credentials = clean_environment / ".aws" / "credentials"
    credentials.write_text(textwrap.dedent(f"""\
        [default]
        aws_access_key_id = {seaweedfs_server.access_key_id}
        aws_secret_access_key = {seaweedfs_server.access_key}

        [temporary]
        aws_access_key_id = {temporary["AccessKeyId"]}
        aws_secret_access_key = {temporary["SecretAccessKey"]}
        aws_session_token = {temporary["SessionToken"]}
        """))
    (clean_environment / ".aws" / "config").write_text(textwrap.dedent(f"""\
        [default]
        endpoint_url = {seaweedfs_server.endpoint_url}

        [profile temporary]
        region = us-east-1
        s3 =
          endpoint_url = {seaweedfs_server.endpoint_url}
        """))
    conn = ebooklet.S3Connection(db_key="creds/default", bucket=bucket, retries=0)
    assert conn.credentials.source == f"{credentials} (profile default)"
    assert conn.endpoint_url == seaweedfs_server.endpoint_url  # from ~/.aws/config
    roundtrip(conn, tmp_path, "default")

    monkeypatch.setenv("AWS_PROFILE", "temporary")
    conn = ebooklet.S3Connection(db_key="creds/profile", bucket=bucket, retries=0)
    assert conn.credentials.temporary and conn.credentials.source.endswith("(profile temporary)")
    roundtrip(conn, tmp_path, "profile")

    # Files elsewhere, named by AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE; keys in config.
    elsewhere = tmp_path / "elsewhere.ini"
    elsewhere.write_text(textwrap.dedent(f"""\
        [profile moved]
        aws_access_key_id = {seaweedfs_server.access_key_id}
        aws_secret_access_key = {seaweedfs_server.access_key}
        services = local

        [services local]
        s3 =
          endpoint_url = {seaweedfs_server.endpoint_url}
        """))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(elsewhere))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    conn = ebooklet.S3Connection(db_key="creds/moved", bucket=bucket, retries=0, profile="moved")
    assert conn.credentials.source == f"{elsewhere} (profile moved)"
    roundtrip(conn, tmp_path, "moved")


def test_an_explicit_profile_wins_over_the_environment(
    seaweedfs_server: S3Server, bucket: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
    clean_environment: pathlib.Path,
) -> None:
    (clean_environment / ".aws" / "credentials").write_text(
        f"[team]\naws_access_key_id = {seaweedfs_server.access_key_id}\n"
        f"aws_secret_access_key = {seaweedfs_server.access_key}\n"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSTALE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stale-secret")
    assert conn_for(seaweedfs_server, bucket, "x").credentials.source == "environment"
    conn = conn_for(seaweedfs_server, bucket, "team", profile="team")
    assert conn.credentials.access_key_id == seaweedfs_server.access_key_id
    roundtrip(conn, tmp_path, "team")


def credential_process(tmp_path: pathlib.Path, creds: dict[str, str], expires_in: timedelta) -> str:
    """A ``credential_process`` command printing ``creds``; each run is counted in a file."""
    script = tmp_path / "process.py"
    output = {"Version": 1, **creds, "Expiration": (datetime.now(timezone.utc) + expires_in).isoformat()}
    script.write_text(textwrap.dedent(f"""\
        import json, pathlib
        runs = pathlib.Path({str(tmp_path / "runs")!r})
        runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
        print(json.dumps({output!r}))
        """))
    return f"{sys.executable} {script}"


def test_credentials_through_botocore_are_refreshed_as_they_expire(
    seaweedfs_server: S3Server, bucket: str, temporary: dict[str, str], tmp_path: pathlib.Path,
    clean_environment: pathlib.Path,
) -> None:
    # Expiring within botocore's mandatory refresh window: asked for again before each request.
    command = credential_process(tmp_path, temporary, timedelta(minutes=5))
    (clean_environment / ".aws" / "config").write_text(
        f"[profile sso-like]\ncredential_process = {command}\n"
        f"endpoint_url = {seaweedfs_server.endpoint_url}\n"
    )
    conn = ebooklet.S3Connection(db_key="creds/botocore", bucket=bucket, retries=0, profile="sso-like")
    assert conn.credentials.source == "botocore (custom-process)" and conn.credentials.temporary
    roundtrip(conn, tmp_path, "botocore")
    assert len((tmp_path / "runs").read_text()) > 5


def test_without_botocore_a_profile_that_needs_it_says_what_to_install(
    tmp_path: pathlib.Path, clean_environment: pathlib.Path
) -> None:
    (clean_environment / ".aws" / "config").write_text(
        "[profile sso]\nsso_session = corp\nsso_account_id = 1\n[profile plain]\nregion = eu-west-1\n"
    )
    code = textwrap.dedent("""\
        import sys
        sys.modules["botocore"] = None  # as if botocore were not installed
        from ebooklet.remote.credentials import resolve_credentials
        for profile in ("sso", "plain"):
            try:
                resolve_credentials(profile=profile)
            except ValueError as exc:
                print(exc)
        """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    sso, plain = out.stdout.splitlines()
    assert sso == (
        "the AWS profile 'sso' gets its credentials through sso_session, which needs botocore: "
        'pip install botocore'
    )
    assert plain.startswith("none in the arguments") and 'pip install botocore for SSO' in plain


# -- the order of the chain, region and endpoint --------------------------------------------------


def test_region_and_endpoint_follow_the_aws_order(
    monkeypatch: pytest.MonkeyPatch, clean_environment: pathlib.Path
) -> None:
    (clean_environment / ".aws" / "config").write_text(
        "[default]\nregion = eu-west-1\nendpoint_url = http://127.0.0.1:1/\n"
        "[profile nested]\ns3 =\n  endpoint_url = http://127.0.0.1:2/\nendpoint_url = http://127.0.0.1:3/\n"
    )
    assert resolve_region() == "eu-west-1"
    assert resolve_region(profile="nested") == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert resolve_region() == "ap-south-1"
    monkeypatch.setenv("AWS_REGION", "nz-north-1")
    assert resolve_region() == "nz-north-1" and resolve_region("given") == "given"
    assert ebooklet.S3Connection("a", "b", "k", "bucket").region == "nz-north-1"

    assert resolve_endpoint() == "http://127.0.0.1:1/"
    assert resolve_endpoint(profile="nested") == "http://127.0.0.1:2/"  # the S3 one first
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4/")
    assert resolve_endpoint() == "http://127.0.0.1:4/"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:5/")
    assert resolve_endpoint() == "http://127.0.0.1:5/" and resolve_endpoint("http://x/") == "http://x/"
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert resolve_endpoint() is None


def test_the_chain_takes_the_first_source_that_has_credentials(
    monkeypatch: pytest.MonkeyPatch, clean_environment: pathlib.Path
) -> None:
    (clean_environment / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = FILE\naws_secret_access_key = file-secret\n"
    )
    assert resolve_credentials().access_key_id == "FILE"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    env = resolve_credentials()
    assert (env.access_key_id, env.session_token) == ("ENV", "env-token")
    given = resolve_credentials("ARG", "arg-secret")
    assert (given.access_key_id, given.session_token, given.source) == ("ARG", None, "arguments")
    # --access-key-id on the command line, the secret (and its token) from the environment.
    half = resolve_credentials("ARG")
    assert (half.secret_access_key, half.session_token) == ("env-secret", "env-token")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(NoCredentialsError, match="set AWS_SECRET_ACCESS_KEY as well"):
        resolve_credentials("ARG")
    # Half a pair in the environment is an error, as in the AWS SDKs, not a reason to look on.
    with pytest.raises(NoCredentialsError, match="^AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY"):
        resolve_credentials()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_PROFILE", "missing")
    # Both ebooklet errors, so that a program catches every failure with EbookletError.
    with pytest.raises(ebooklet.InvalidArgumentError, match="the AWS profile 'missing' is in neither"):
        resolve_credentials()
    assert issubclass(NoCredentialsError, ebooklet.EbookletError)
    assert issubclass(NoCredentialsError, ValueError)


# -- credentials stay secret ---------------------------------------------------------------------


def test_temporary_credentials_are_never_written_or_logged(
    seaweedfs_server: S3Server, bucket: str, temporary: dict[str, str], tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    given = {"access_key_id": temporary["AccessKeyId"], "access_key": temporary["SecretAccessKey"],
             "session_token": temporary["SessionToken"]}
    (tmp_path / "local").mkdir()
    conn = conn_for(seaweedfs_server, bucket, "secret", **given)
    group_conn = conn_for(seaweedfs_server, bucket, "secret-group", **given)
    with ebooklet.open(conn, tmp_path / "local" / "a.blt", "n", value_serializer="str") as db:
        db["k"] = "v"
        db.changes().push()
    with ebooklet.open(group_conn, tmp_path / "local" / "g.blt", "n", remote_conn_group=True) as group:
        group.add(conn)
        group.changes().push()
    secrets = [temporary["SecretAccessKey"].encode(), temporary["SessionToken"].encode()]
    for target in (connect(conn), connect(group_conn)):
        for key in [target.db_key, *target.transport.list(target.prefix)]:
            data = target.transport.get(key).data  # type: ignore[union-attr]
            assert not any(secret in data for secret in secrets), key
    for path in (tmp_path / "local").rglob("*"):
        if path.is_file():
            assert not any(secret in path.read_bytes() for secret in secrets), path
    shown = repr(conn) + repr(conn.credentials) + str(conn.to_dict()) + caplog.text
    assert not any(secret.decode() in shown for secret in secrets)


# -- the command line ------------------------------------------------------------------------------


def test_the_command_line_takes_the_same_chain(
    seaweedfs_server: S3Server, bucket: str, temporary: dict[str, str], tmp_path: pathlib.Path,
    clean_environment: pathlib.Path,
) -> None:
    from .test_cli import ebk

    url = f"s3://{bucket}/creds/cli"
    (tmp_path / "home" / ".aws" / "credentials").write_text(
        f"[temporary]\naws_access_key_id = {temporary['AccessKeyId']}\n"
        f"aws_secret_access_key = {temporary['SecretAccessKey']}\n"
        f"aws_session_token = {temporary['SessionToken']}\n"
    )
    (tmp_path / "home" / ".aws" / "config").write_text(
        f"[profile temporary]\nendpoint_url = {seaweedfs_server.endpoint_url}\n"
    )
    with ebooklet.open(tmp_path / "folder" / "db", tmp_path / "a.blt", "c", value_serializer="str") as db:
        db["k"] = "from the shell"
    session = {
        "AWS_ACCESS_KEY_ID": temporary["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": temporary["SecretAccessKey"],
        "AWS_SESSION_TOKEN": temporary["SessionToken"], "AWS_ENDPOINT_URL": seaweedfs_server.endpoint_url,
    }
    push = ebk(tmp_path, "push", url, "a.blt", env=session)
    assert push.code == 0 and push.out.startswith("commit 1: 1 key written"), push.err
    # A profile from ~/.aws (HOME is the test's folder), with its endpoint; a stale key pair in
    # the environment does not get in the way of an explicit --profile.
    stale = {"AWS_ACCESS_KEY_ID": "AKIDSTALE", "AWS_SECRET_ACCESS_KEY": "stale"}
    get = ebk(tmp_path, "get", url, "k", "--profile", "temporary", env=stale)
    assert get.out == "from the shell\n", get.err
    profile_env = ebk(tmp_path, "head", url, "--json", env={"AWS_PROFILE": "temporary"})
    assert profile_env.json()["n_keys"] == 1  # type: ignore[index]
    without_token = {k: v for k, v in session.items() if k != "AWS_SESSION_TOKEN"}
    refused = ebk(tmp_path, "head", url, env=without_token)
    assert refused.code == 1 and "access denied" in refused.err.lower()
    for run in (push, get, profile_env, refused):
        assert temporary["SecretAccessKey"] not in run.out + run.err
        assert temporary["SessionToken"] not in run.out + run.err


def test_the_credentials_of_a_connection_can_be_replaced(
    seaweedfs_server: S3Server, bucket: str, temporary: dict[str, str], tmp_path: pathlib.Path
) -> None:
    conn = conn_for(seaweedfs_server, bucket, "replaced", access_key_id=temporary["AccessKeyId"],
                    access_key="wrong", session_token=temporary["SessionToken"])
    assert conn.access_key == "wrong"
    conn.access_key = temporary["SecretAccessKey"]  # as an attribute, as in 0.5
    assert conn.credentials.secret_access_key == temporary["SecretAccessKey"]
    roundtrip(conn, tmp_path, "replaced")
    conn.session_token = None
    with pytest.raises(ebooklet.RemoteAccessError):
        ebooklet.open(conn, tmp_path / "no-token.blt", "c")
