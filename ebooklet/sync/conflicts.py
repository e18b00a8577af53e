"""Keys changed on both sides, and the policies that settle them; one resolver for push and pull.

A key is in conflict when the local file and the remote both changed it since the base, to
different bytes. Without a policy, :func:`resolve` raises :class:`~ebooklet.ConflictError`
naming every such key. A policy is ``"local"``, ``"remote"``, ``"newest"``, or a function
``(key, local, remote, base) -> value`` that may return :data:`DELETED`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..errors import ConflictError, InvalidArgumentError
from ..format import Entry, value_hash
from ..settings import now_us
from .diff import ChangeSet, LocalChange, same

if TYPE_CHECKING:
    from ..codec import Codec
    from ..local import LocalStore
    from .index import BaseIndex
    from .reads import ValueReader


class _Deleted:
    """The marker a conflict function returns to delete a key."""

    _instance: _Deleted | None = None

    def __new__(cls) -> _Deleted:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ebooklet.DELETED"


#: Returned by a conflict function to delete the key; also the value side of a deletion.
DELETED: Any = _Deleted()

Resolver = Callable[[str, Any, Any, Any], Any]
Policy = Literal["local", "remote", "newest"] | Resolver | None


def check_policy(policy: Policy) -> None:
    if policy is None or policy in ("local", "remote", "newest") or callable(policy):
        return
    raise InvalidArgumentError(
        f"on_conflict must be 'local', 'remote', 'newest', a function (key, local, remote, base) "
        f"-> value or ebooklet.DELETED, or None; not {policy!r}"
    )


class MergeInputs(Protocol):
    """What a conflict function is given: each side's value, decoded."""

    def encode(self, value: Any) -> bytes: ...

    def local_value(self, change: LocalChange) -> Any: ...

    def remote_value(self, key: str, entry: Entry | None) -> Any: ...

    def base_value(self, key: str) -> Any: ...


@dataclass
class Resolution:
    """How each key changed on both sides is settled.

    ``same``: both sides made the same change; ``remote``: the remote's change wins;
    ``local``: the local change wins; ``merged``: a conflict function's result, which
    replaces the local change.
    """

    same: set[str] = field(default_factory=set)
    remote: set[str] = field(default_factory=set)
    local: set[str] = field(default_factory=set)
    merged: dict[str, LocalChange] = field(default_factory=dict)


def resolve(changes: ChangeSet, policy: Policy, inputs: MergeInputs, remote_time: int = 0) -> Resolution:
    """Settle every key that both sides changed, or raise ConflictError without a policy.

    ``remote_time`` is the commit time of the remote head the changes lead to: ``"newest"``
    dates a remote delete by it (a delete carries no timestamp of its own).
    """
    out = Resolution()
    conflicts = []
    for key in changes.both:
        if same(changes.local[key], changes.remote[key]):
            out.same.add(key)
        else:
            conflicts.append(key)
    if conflicts and policy is None:
        raise ConflictError(conflicts)
    for key in conflicts:
        lc, rc = changes.local[key], changes.remote[key]
        if policy in ("local", "remote"):
            getattr(out, policy).add(key)  # type: ignore[arg-type]
        elif policy == "newest":
            remote_ts = rc.timestamp if rc is not None else remote_time
            local_ts = lc.timestamp if lc.timestamp is not None else now_us()
            (out.local if local_ts >= remote_ts else out.remote).add(key)
        else:
            assert callable(policy)
            chosen = policy(key, inputs.local_value(lc), inputs.remote_value(key, rc), inputs.base_value(key))
            if chosen is DELETED:
                out.merged[key] = LocalChange(None, now_us(), None)
            else:
                raw = inputs.encode(chosen)
                out.merged[key] = LocalChange(raw, now_us(), value_hash(raw))
    return out


class DecodedInputs:
    """The decoded values a conflict function is given."""

    def __init__(self, codec: Codec, index: BaseIndex, values: ValueReader) -> None:
        self.codec = codec
        self.index = index
        self.values = values

    def encode(self, value: Any) -> bytes:
        return self.codec.encode(value)

    def local_value(self, change: LocalChange) -> Any:
        return DELETED if change.raw is None else self.codec.decode(change.raw)

    def remote_value(self, key: str, entry: Entry | None) -> Any:
        return DELETED if entry is None else self.codec.decode(self.values.read({key: entry})[key])

    def base_value(self, key: str) -> Any:
        found = self.index.entry(key)
        if found is None:
            return DELETED
        return self.codec.decode(self.values.read({key: found[0]})[key])


def apply_merged(local: LocalStore, resolution: Resolution) -> None:
    """Write a conflict function's results to the local file, as local changes."""
    for key, change in resolution.merged.items():
        if change.raw is None:
            local.delete(key, change.timestamp)  # type: ignore[arg-type]
        else:
            local.set_raw(key, change.raw, change.timestamp)  # type: ignore[arg-type]
