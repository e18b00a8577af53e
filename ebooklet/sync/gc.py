"""Garbage collection: removing the objects no retained commit references.

A commit references its index parts, its segments and its log object. Commits stay readable
for the database's retention window (see :mod:`.history`); everything under the database's
prefix that none of them references, and that is older than ``min_age``, is garbage: objects
replaced by later commits, leftovers of pushes that failed or were interrupted, and the log
objects of commits past retention. Objects younger than ``min_age`` may belong to a push still
in flight and are never removed (a push that takes longer than that refuses to commit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..format import Head, created_at
from ..remote import Remote
from ..settings import now_us as clock_now_us
from ..settings import settings
from ..words import counted
from .commit import references
from .heads import HeadStore
from .history import retained_heads

#: Objects younger than this are never collected: a push must commit within this age.


@dataclass
class GcReport:
    """What a garbage collection found and removed."""

    location: str
    #: Objects removed (or, in a dry run, that would be), relative to the database's prefix.
    removed: list[str] = field(default_factory=list)
    bytes_removed: int = 0
    #: Commits kept readable, and the objects they reference.
    commits_kept: int = 0
    objects_kept: int = 0
    #: Garbage left because it is younger than the safe age.
    too_young: int = 0
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{self.location}: {verb} {counted(len(self.removed), 'object')}, "
            f"{counted(self.bytes_removed, 'byte')}; "
            f"kept {counted(self.objects_kept, 'object')} for {counted(self.commits_kept, 'commit')}"
            + (f"; {self.too_young:,} unreferenced but too recent to remove" if self.too_young else "")
        )


def collect(
    remote: Remote,
    heads: HeadStore,
    head: Head | None = None,
    *,
    min_age: float | None = None,
    dry_run: bool = False,
    now_us: int | None = None,
) -> GcReport:
    """Remove what no retained commit of the database at ``remote`` references."""
    report = GcReport(remote.location, dry_run=dry_run)
    if head is None:
        head, _ = heads.read_latest()
    if head is None:
        return report
    min_age = settings.gc_min_age if min_age is None else min_age
    now_us = now_us if now_us is not None else clock_now_us()
    kept = retained_heads(heads, head, now_us)
    live: set[str] = set()
    for h in kept:
        live |= references(h)
    report.commits_kept = len(kept)
    report.objects_kept = len(live)
    cutoff = now_us - int(min_age * 1e6)
    garbage: list[str] = []
    for key, size in remote.transport.list_sizes(remote.prefix):
        name = key[len(remote.prefix):]
        born = created_at(name)
        if name in live or born is None:
            continue  # referenced, or not an object of the format (the lease, for one)
        if born > cutoff:
            report.too_young += 1
            continue
        garbage.append(name)
        report.bytes_removed += size
    report.removed = sorted(garbage)
    if garbage and not dry_run:
        # The log objects go last: until then the history that explains the rest stays whole.
        garbage.sort(key=lambda n: n.startswith("log/"))
        remote.transport.delete([remote.prefix + name for name in garbage])
    return report
