"""Dask: write a bag or dataframe to a database through staged commits, and read a database as a
bag or dataframe on the workers (the ``dask`` extra; docs/scaling.rst).

``import ebooklet`` never imports this module (nor dask); ``import ebooklet.dask`` does.

- :func:`to_ebooklet` stages each partition on the worker that holds it
  (:func:`ebooklet.stage`), gathers the tokens, and publishes them in one
  :func:`ebooklet.commit`.
- :func:`read_bag` and :func:`read_dataframe` give one partition per group of index parts of
  the latest commit, read on the workers with coalesced ranged GETs.

The remote is passed to the workers as it is given: a remote string, or a connection object
(which carries its credentials to the workers, as Dask pickles it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .errors import MissingExtraError, RemoteNotFoundError
from .format import Head
from .info import latest_head
from .local import codec_for
from .remote import RemoteConn, connect
from .results import PushResult
from .staging import StageToken, commit, stage
from .sync.conflicts import Policy
from .sync.scan import Scan, plan_partitions

try:
    import dask
    import dask.bag
except ImportError as exc:  # pragma: no cover - the extra's absence is tested in a subprocess
    raise MissingExtraError(
        f"ebooklet.dask needs the dask extra ({exc.name} is missing): install it with: "
        "pip install 'dask[bag]' distributed"
    ) from exc

__all__ = ["read_bag", "read_dataframe", "stage_partition", "to_ebooklet"]


def stage_partition(items: Iterable[tuple[str, Any]], remote: RemoteConn) -> list[StageToken]:
    """Stage the (key, value) pairs of one partition; returns its token in a list (what a
    partition of tokens holds). Runs on a worker."""
    with stage(remote) as s:
        s.update(items)
    assert s.token is not None
    return [s.token]


def _frame_items(frame: Any, key: str | None, value: str | None) -> Iterable[tuple[str, Any]]:
    keys = frame.index if key is None else frame[key]
    if value is not None:
        return zip(keys, frame[value], strict=True)
    rest = frame.drop(columns=[key]) if key is not None else frame
    return zip(keys, rest.to_dict("records"), strict=True)


def _stage_frame(frame: Any, remote: RemoteConn, key: str | None, value: str | None) -> list[StageToken]:
    return stage_partition(_frame_items(frame, key, value), remote)


def to_ebooklet(
    collection: Any,
    remote: RemoteConn,
    on_conflict: Policy = None,
    *,
    key: str | None = "key",
    value: str | None = "value",
    **compute: Any,
) -> PushResult:
    """Write a dask bag of ``(key, value)`` pairs, or a dask dataframe, to the database at
    ``remote`` in one commit.

    Each partition is staged on its worker (values packed into segments and uploaded from
    there); the tokens come back to the caller, which commits them once. For a key in several
    partitions the last partition wins. A failed partition discards its own uploads; those of
    partitions that finished are left for garbage collection (``ebooklet.gc``) when the whole
    computation fails. The database must exist (create it with :func:`ebooklet.open` and a
    push, which also fixes its value serializer).

    Parameters
    ----------
    collection : dask.bag.Bag or dask.dataframe.DataFrame
        A bag of (key, value) pairs, or a dataframe: its column ``key`` (None: the index)
        holds the keys, its column ``value`` the values (None: each row, as a dict of the
        other columns).
    remote : str, path or connection
        The database, as :func:`ebooklet.open` takes it; it is sent to the workers.
    on_conflict
        As :func:`ebooklet.commit`: for keys someone changed since the partitions were staged.
    **compute
        Passed to ``dask.compute`` (e.g. ``scheduler="processes"``).

    Returns
    -------
    PushResult
    """
    if isinstance(collection, dask.bag.Bag):
        tasks = [dask.delayed(stage_partition)(part, remote) for part in collection.to_delayed()]
    else:
        tasks = [dask.delayed(_stage_frame)(part, remote, key, value) for part in collection.to_delayed()]
    tokens = [t for part in dask.compute(*tasks, **compute) for t in part]
    return commit(remote, tokens, on_conflict)


def _latest(remote: RemoteConn) -> Head:
    location, head = latest_head(remote)
    if head is None:
        raise RemoteNotFoundError(f"there is no database at {location}")
    return head


def read_partition(remote: RemoteConn, part_names: Sequence[str], serializer: str | None,
                   value_serializer: Any = None) -> list[tuple[str, Any]]:
    """The (key, value) pairs of some index parts (one partition of :func:`read_bag`)."""
    codec = codec_for(serializer, value_serializer)
    conn = connect(remote)
    try:
        scan = Scan(conn, part_names)
        if codec.name == "bytes":
            return list(scan)  # raw bytes: nothing to decode
        return [(k, codec.decode(raw, k)) for k, raw in scan]
    finally:
        conn.transport.close()


def read_bag(remote: RemoteConn, npartitions: int | None = None, value_serializer: Any = None) -> Any:
    """The latest commit of the database at ``remote`` as a dask bag of (key, value) pairs.

    Each partition is a contiguous group of index parts (``npartitions`` of them; default
    about 64 MiB of values each), read on a worker with ranged GETs coalesced in segment
    order and checked against the values' hashes. The commit is fixed when the bag is made.
    ``value_serializer`` is needed only for a database with a custom serializer.
    """
    head = _latest(remote)
    groups = plan_partitions(head, npartitions)
    parts = [dask.delayed(read_partition)(remote, names, head.value_serializer, value_serializer)
             for names in groups]
    if not parts:
        return dask.bag.from_sequence([], npartitions=1)
    return dask.bag.from_delayed(parts)


def _frame(names: Sequence[str], remote: RemoteConn, serializer: str | None, value_serializer: Any) -> Any:
    import pandas as pd

    pairs = read_partition(remote, names, serializer, value_serializer)
    return pd.DataFrame({"key": pd.Series([k for k, _ in pairs], dtype=object),
                         "value": pd.Series([v for _, v in pairs], dtype=object)})


def read_dataframe(remote: RemoteConn, npartitions: int | None = None, value_serializer: Any = None) -> Any:
    """The latest commit of the database at ``remote`` as a dask dataframe with columns
    ``key`` and ``value`` (objects), partitioned as :func:`read_bag` (needs
    ``dask[dataframe]``)."""
    try:
        import dask.dataframe as dd
        import pandas as pd
    except ImportError as exc:
        raise MissingExtraError(
            f"read_dataframe needs dask's dataframe ({exc.name} is missing): install it with: "
            "pip install 'dask[dataframe]'"
        ) from exc
    head = _latest(remote)
    groups = plan_partitions(head, npartitions) or [[]]
    meta = pd.DataFrame({"key": pd.Series([], dtype=object), "value": pd.Series([], dtype=object)})
    # Values are Python objects: dask's conversion of object columns to strings is kept off.
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_map(_frame, groups, remote=remote, serializer=head.value_serializer,
                           value_serializer=value_serializer, meta=meta, enforce_metadata=False)
