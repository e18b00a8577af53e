"""Google Cloud Storage and Azure Blob Storage, end to end, on their emulators.

The acceptance tests written for every remote (``remote``: test_database, test_safety,
test_lifecycle, test_remote_ops) and for the S3 servers (``s3_remote``: test_collaboration's
push, pull, conflicts, lease, commit races between processes) are collected here a second
time, with those two fixtures overridden to give the cloud stores instead: the same
scenarios, run as they are, on fake-gcs-server and Azurite. Only tests that reach into an S3
server directly (its boto3 client, its keys) are left out, by the fixtures they ask for.

Then what is particular to the clouds: remote strings (``gs://``, ``az://``, ``s3://``) in
Python with credentials and endpoints from each SDK's own environment variables, refusals,
and copies between stores.

Every test here is marked ``clouds`` (``-m "not clouds"`` leaves them out of a quick run).
"""

from __future__ import annotations

import inspect
import pathlib
from types import ModuleType
from typing import Any

import pytest

from . import test_collaboration, test_database, test_lifecycle, test_remote_ops, test_safety
from .conftest import CLOUDS, RemoteKind, cloud_kind

pytestmark = pytest.mark.clouds

#: Fixtures that reach into an S3 server or a folder directly: tests asking for them stay
#: with the remotes they were written for.
_S3_ONLY = {"moto_server", "seaweedfs_server", "proxied", "moto_proxied", "seaweedfs_proxied"}


def _scenarios(module: ModuleType, fixture: str) -> dict[str, Any]:
    chosen = {}
    for name, test in vars(module).items():
        if not name.startswith("test_") or not callable(test):
            continue
        params = set(inspect.signature(test).parameters)
        if fixture in params and not params & _S3_ONLY:
            chosen[name] = test
    return chosen


for _module in (test_database, test_safety, test_lifecycle, test_remote_ops):
    globals().update(_scenarios(_module, "remote"))
globals().update(_scenarios(test_collaboration, "s3_remote"))
globals().update(_scenarios(test_lifecycle, "s3_remote"))


@pytest.fixture(params=CLOUDS)
def remote(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> RemoteKind:
    """Each cloud store in turn, where the scenarios collected above expect any remote."""
    return cloud_kind(request, request.param, tmp_path)


@pytest.fixture(params=CLOUDS)
def s3_remote(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> RemoteKind:
    """Each cloud store in turn, where the scenarios collected above expect an S3 server."""
    return cloud_kind(request, request.param, tmp_path)
