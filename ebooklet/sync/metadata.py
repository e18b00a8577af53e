"""The database's metadata as a reader sees it: the newer of the local file's and the base's.

The base's metadata is kept in the local sync state (see :mod:`ebooklet.local.headmeta`); when
its file was lost, it is read again from the remote the first time it is needed, as a value
that was never fetched would be.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..errors import SyncError
from ..format import Head
from ..local.headmeta import Lost
from .heads import HeadStore
from .index import BaseIndex


def current_metadata(index: BaseIndex) -> tuple[Any, int] | None:
    """The newer of the local metadata and the base's, with its timestamp."""
    mine = index.local.get_metadata()
    base = index.base
    if base is not None and base.metadata_timestamp is not None:
        if mine is None or mine[1] < base.metadata_timestamp:
            if isinstance(base.metadata, Lost):
                _fetch(index, base)
            return base.metadata, base.metadata_timestamp
    return mine


def _fetch(index: BaseIndex, base: Head) -> None:
    """Read the base's lost metadata again: from the head, or its commit's log object."""
    heads = HeadStore(index.remote, index.objects)
    found = heads.read_latest()[0]
    if found is None or (found.uuid, found.commit_id) != (base.uuid, base.commit_id):
        found = heads.read_log(base.commit, base.commit_id)
    if found is None or found.uuid != base.uuid:
        raise SyncError(
            f"the metadata of commit {base.commit} of {index.remote.location} was lost from the "
            "local sync state, and the remote no longer holds that commit: pull() to read the "
            "latest"
        )
    base.metadata = found.metadata
    index.local.state.set_head(asdict(base))
