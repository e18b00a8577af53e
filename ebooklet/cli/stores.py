"""What the command line remembers about S3 stores between runs: whether each honours
conditional writes.

The S3 transport probes a store once per process (three requests); the answers are kept in
``stores.json`` in the cache folder for :data:`REMEMBER_FOR` seconds, so that every command
costs the requests docs/operations.rst counts, not three more. :func:`recall` is called before
a command's first S3 transport is made; :func:`keep` after the command.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any

from ..settings import now_us

#: How long a probe's answer is trusted (a store rarely changes what it supports).
REMEMBER_FOR = 7 * 24 * 3600

#: What the transport knew after :func:`recall` (None: not called in this process).
_recalled: dict[tuple[str | None, str], bool] | None = None


def cache_dir() -> pathlib.Path:
    """The command line's cache folder: ``$XDG_CACHE_HOME/ebooklet`` (``~/.cache/ebooklet``
    by default)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = pathlib.Path(base) if os.path.isabs(base) else pathlib.Path.home() / ".cache"
    return root / "ebooklet"


def _path() -> pathlib.Path:
    return cache_dir() / "stores.json"


def _load() -> dict[str, Any]:
    try:
        data = json.loads(_path().read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recall() -> None:
    """Tell the S3 transport what earlier runs learned (once per process)."""
    global _recalled
    if _recalled is not None:
        return
    from ..remote.s3 import S3Transport  # imported only by commands on s3:// remotes

    now = now_us() / 1e6
    for entry in _load().values():
        try:
            if now - float(entry["probed_at"]) < REMEMBER_FOR:
                S3Transport.remember_store(entry["endpoint_url"], str(entry["bucket"]),
                                           bool(entry["conditional_writes"]))
        except (KeyError, TypeError, ValueError):
            continue  # an entry from another version, or damaged: probe again
    _recalled = S3Transport.known_stores()


def keep() -> None:
    """Save what this run learned about stores, if it used any."""
    if _recalled is None:
        return
    from ..remote.s3 import S3Transport

    learned = {k: v for k, v in S3Transport.known_stores().items() if k not in _recalled}
    if not learned:
        return
    saved = _load()
    for (endpoint, bucket), supported in learned.items():
        saved[f"{endpoint or 'aws'} {bucket}"] = {
            "endpoint_url": endpoint, "bucket": bucket, "conditional_writes": supported,
            "probed_at": now_us() / 1e6,
        }
    try:
        _path().parent.mkdir(parents=True, exist_ok=True)
        tmp = _path().with_name(f"stores.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(saved, indent=1))
        os.replace(tmp, _path())
    except OSError as exc:  # only a cache: the next run probes again
        print(f"ebooklet: warning: could not save {_path()} ({exc.strerror or exc}); the next command "
              "probes the store again", file=sys.stderr)
