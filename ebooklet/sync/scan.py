"""Reading whole index parts of a commit without a local file: the read of one partition of a
distributed read (:mod:`ebooklet.dask`, or processes of the user's own).

:func:`plan_partitions` cuts a head's index parts into contiguous groups; :func:`scan` reads the
values of one group with coalesced ranged GETs in segment order (:mod:`.objects`), checking
each against its content hash. Staged writes pack their values sorted by index part, so the
values of a group of parts sit side by side in each segment and a partition's requests carry
few bytes it does not need (``Scan.requests`` and ``Scan.bytes`` tell).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

from ..errors import IntegrityError
from ..format import HASH_LEN, Head, Part, value_hashes
from ..remote import Remote
from .objects import ObjectStore, RangeRequest, coalesce, request_size

#: A partition of a distributed read holds about this many bytes of values by default.
PARTITION_BYTES = 64 * 1024 * 1024


def plan_partitions(head: Head, npartitions: int | None = None) -> list[list[str]]:
    """The names of ``head``'s index parts, in order, cut into ``npartitions`` contiguous
    groups (default: about PARTITION_BYTES of values each); empty parts are left out."""
    names = [name for name in head.parts if name is not None]
    if not names:
        return []
    if npartitions is None:
        npartitions = -(-head.n_bytes // PARTITION_BYTES)
    n = max(1, min(len(names), npartitions))
    return [names[i * len(names) // n:(i + 1) * len(names) // n] for i in range(n)]


class Scan:
    """The values of some index parts, in segment order. Iterating yields (key, raw value)."""

    def __init__(self, remote: Remote, part_names: Sequence[str]) -> None:
        self.objects = ObjectStore(remote)
        keys: list[str] = []
        hashes = bytearray()
        offs, lens = array("Q"), array("I")
        by_segment: dict[str, list[int]] = {}
        for name in part_names:
            part = Part.decode(self.objects.get(name), name)
            k, _, h, segs, seg_names, o, n = part.columns()
            first = len(keys)
            keys += k
            hashes += h
            offs += o
            lens += n
            for i, s in enumerate(segs, first):
                by_segment.setdefault(seg_names[s], []).append(i)
        self.keys = keys
        self._hash = bytes(hashes)
        self._off, self._len = offs, lens
        self.requests: list[RangeRequest] = []
        size = request_size(sum(lens))
        for seg, members in sorted(by_segment.items()):
            members.sort(key=offs.__getitem__)
            o = [offs[i] for i in members]
            n = [lens[i] for i in members]
            for start, length, lo, hi in coalesce(o, n, size):
                self.requests.append(RangeRequest(seg, start, length, members[lo:hi]))

    @property
    def bytes(self) -> int:
        """Bytes the requests fetch: the values, and the gaps coalescing bridges."""
        return sum(r.length for r in self.requests)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        h = HASH_LEN
        for req, data in self.objects.get_ranges(self.requests):
            start = req.start
            members = req.members
            raws = [data[self._off[i] - start:self._off[i] - start + self._len[i]] for i in members]
            want = b"".join(self._hash[i * h:(i + 1) * h] for i in members)
            got = value_hashes(raws)
            if got != want:
                bad = next(j for j in range(len(members)) if got[j * h:j * h + h] != want[j * h:j * h + h])
                raise IntegrityError(
                    f"the value of {self.keys[members[bad]]!r} from {self.objects.remote.location} "
                    f"does not match its content hash: {req.name} is corrupt. Ask the database's "
                    "writer to write that key again"
                )
            for i, raw in zip(members, raws, strict=True):
                yield self.keys[i], raw
