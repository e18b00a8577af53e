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
from ..format import HASH_LEN, Head, Part, legacy_segment, value_hashes
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
        blobs = self.objects.get_many(part_names)  # in parallel
        for name in part_names:
            part = Part.decode(blobs.pop(name), name)
            k, _, h, segs, seg_names, o, n = part.columns()
            first = len(keys)
            keys += k
            hashes += h
            offs += o
            lens += n
            for i, s in enumerate(segs, first):
                by_segment.setdefault(seg_names[s], []).append(i)
        # The columns are put in request order (segment, then offset), so that each request's
        # entries are one slice of them.
        order: list[int] = []
        for _, members in sorted(by_segment.items()):
            members.sort(key=offs.__getitem__)
            order += members
        h = HASH_LEN
        self.keys = [keys[i] for i in order]
        self._hash = b"".join([hashes[i * h:i * h + h] for i in order])
        self._off = array("Q", [offs[i] for i in order])
        self._len = array("I", [lens[i] for i in order])
        self.requests: list[RangeRequest] = []
        size = request_size(sum(lens))
        first = 0
        for seg, members in sorted(by_segment.items()):
            end = first + len(members)
            for start, length, lo, hi in coalesce(self._off[first:end], self._len[first:end], size):
                self.requests.append(RangeRequest(seg, start, length, range(first + lo, first + hi)))
            first = end

    @property
    def bytes(self) -> int:
        """Bytes the requests fetch: the values, and the gaps coalescing bridges."""
        return sum(r.length for r in self.requests)

    @property
    def value_bytes(self) -> int:
        """Bytes of the values themselves."""
        return sum(self._len)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        h = HASH_LEN
        for req, data in self.objects.get_ranges(self.requests):
            lo, hi, start = req.members.start, req.members.stop, req.start
            spans = zip(self._off[lo:hi], self._len[lo:hi], strict=True)
            raws = [data[o - start:o - start + n] for o, n in spans]
            got, want = value_hashes(raws, legacy_segment(req.name)), self._hash[lo * h:hi * h]
            if got != want:
                bad = next(j for j in range(hi - lo) if got[j * h:j * h + h] != want[j * h:j * h + h])
                raise IntegrityError(
                    f"the value of {self.keys[lo + bad]!r} from {self.objects.remote.location} "
                    f"does not match its content hash: {req.name} is corrupt. Ask the database's "
                    "writer to write that key again"
                )
            yield from zip(self.keys[lo:hi], raws, strict=True)
