"""Keeping a local file and a remote database in step (see docs/sync.rst and
docs/architecture.rst).

The engine is a set of small units, composed by :class:`Replica`:

- :mod:`.heads`: the head object, read and replaced by compare-and-swap;
- :mod:`.objects`: segments and index parts over the transport (ranges, parallel requests);
- :mod:`.index`: the base, its index parts, presence bits and lazy keys;
- :mod:`.reads`: values read by range and checked against their hashes;
- :mod:`.diff`: local, remote and three-way changes, as values;
- :mod:`.conflicts`: the policies, and the one resolver push and pull share;
- :mod:`.commit`: pure functions that build the next commit;
- :mod:`.replica`: the orchestrator (changes, push, pull, discard, delete, copy).
"""

from .conflicts import DELETED, Policy
from .replica import RemoteLock, Replica

__all__ = ["DELETED", "Policy", "RemoteLock", "Replica"]
