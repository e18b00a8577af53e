"""Garbage collection: removing the objects no retained commit references.

A commit references its index parts, its segments and its log object. Commits stay readable
for the database's retention window (see :mod:`.history`); everything under the database's
prefix that none of them references, and that is older than ``min_age``, is garbage: objects
replaced by later commits, leftovers of pushes that failed or were interrupted (uploads in
parts they never completed are aborted), the segments
and runs of staged writes never committed (or already committed: runs are read once), and the log
objects of commits past retention. Objects younger than ``min_age`` may belong to a push still
in flight and are never removed (a push whose first upload is older than that, by the store's
clock, refuses to commit).

An object's age is judged by the store's clock alone: the time the store wrote it
(``LastModified``, a file's mtime) against the store's time now. Names are chosen by clients,
whose clocks may be hours off, so they never tell an age. Only names that fully match one of
the format's patterns (:func:`~ebooklet.format.object_kind`) are ever removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LeaseHeldError, RemoteError, RemoteNotFoundError, SyncError
from ..format import Head, object_kind
from ..lock import Lease
from ..remote import Remote
from ..settings import now_us as clock_now_us
from ..settings import settings
from ..words import counted
from .commit import references
from .heads import HeadStore
from .history import retained_heads

#: Objects younger than this are never collected: a push must commit within this age.
#: A push commits only while its first upload is younger than settings.gc_min_age less this margin, by
#: the store's clock: time for the head write after the check.
COMMIT_MARGIN_S = 600.0
#: Kinds of object that garbage collection may remove (never the lease).
COLLECTABLE = frozenset({"segment", "piece", "part", "log", "run", "probe"})


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
    #: A push held the lease, so the collection kept to the safe age (settings.gc_min_age) whatever
    #: ``min_age`` asked.
    lease_held: bool = False
    #: Uploads in parts that were started and never completed (their process died), older than
    #: ``min_age``: aborted (or, in a dry run, that would be), which frees their parts.
    uploads_aborted: int = 0

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{self.location}: {verb} {counted(len(self.removed), 'object')}, "
            f"{counted(self.bytes_removed, 'byte')}; "
            f"kept {counted(self.objects_kept, 'object')} for {counted(self.commits_kept, 'commit')}"
            + (f"; {self.too_young:,} unreferenced but too recent to remove" if self.too_young else "")
            + (f"; {'would abort' if self.dry_run else 'aborted'} "
               f"{counted(self.uploads_aborted, 'unfinished upload')}" if self.uploads_aborted else "")
            + ("; a push held the lock: nothing younger than 6 hours went" if self.lease_held else "")
        )


def collect(
    remote: Remote,
    heads: HeadStore,
    head: Head | None = None,
    *,
    min_age: float | None = None,
    dry_run: bool = False,
) -> GcReport:
    """Remove what no retained commit of the database at ``remote`` references.

    A ``min_age`` below settings.gc_min_age holds the database's lease while collecting (a push checks
    that its uploads are still there while it holds the lease); when a push holds it, the
    collection keeps to settings.gc_min_age instead. Raises RemoteError when the store cannot tell its
    objects' ages by its own clock.
    """
    report = GcReport(remote.location, dry_run=dry_run)
    if head is None:
        head, _ = heads.read_latest()
    if head is None:
        return report
    min_age = settings.gc_min_age if min_age is None else min_age
    transport = remote.transport
    if not transport.knows_ages:
        raise RemoteError(
            f"{remote.location} cannot tell when its objects were written by its own clock, so "
            "ebooklet cannot judge which are old enough to collect; nothing was removed"
        )
    if min_age >= settings.gc_min_age or dry_run:
        _collect(remote, head, heads, report, min_age)
        return report
    # Below the safe age, a push in flight could lose uploads it has checked and is about to
    # commit: hold the lease meanwhile (a push checks its uploads while it holds it), or, when
    # a push holds it now, keep to the safe age.
    lease = Lease(remote, wait=0)
    try:
        lease.__enter__()
    except LeaseHeldError:
        report.lease_held = True
        _collect(remote, head, heads, report, settings.gc_min_age)
        return report
    try:
        _collect(remote, head, heads, report, min_age)
    finally:
        lease.__exit__()
    return report


def _collect(remote: Remote, head: Head, heads: HeadStore, report: GcReport, min_age: float) -> None:
    transport = remote.transport
    # The store's clock, read before the listing: an object written after this moment is
    # younger than any cutoff derived from it.
    now = transport.store_time()
    kept = retained_heads(heads, head, int(now * 1e6))
    live: set[str] = set()
    for h in kept:
        live |= references(h)
    report.commits_kept = len(kept)
    report.objects_kept = len(live)
    cutoff = now - min_age
    garbage: list[str] = []
    for info in transport.list_stats(remote.prefix):
        name = info.key[len(remote.prefix):]
        if name in live or object_kind(name) not in COLLECTABLE:
            continue  # referenced, or not an object gc may remove (the lease, a stranger's)
        if info.modified > cutoff:
            report.too_young += 1
            continue
        garbage.append(name)
        report.bytes_removed += info.size
    report.removed = sorted(garbage)
    # Uploads in parts never completed (a push killed while sending a large segment) become no
    # object, but their parts stay on the store until aborted. Only those of objects gc could
    # remove, and started before the cutoff, by the store's clock.
    stale = [u for u in transport.uploads(remote.prefix)
             if object_kind(u.key[len(remote.prefix):]) in COLLECTABLE and u.initiated <= cutoff]
    report.uploads_aborted = len(stale)
    if not report.dry_run:
        for upload in stale:
            transport.abort_upload(upload)
    if garbage and not report.dry_run:
        # The log objects go last: until then the history that explains the rest stays whole.
        garbage.sort(key=lambda n: n.startswith("log/"))
        transport.delete([remote.prefix + name for name in garbage])


def check_uploads_kept(remote: Remote, first_upload: str | None, started_us: int) -> None:
    """Before a push writes its head: make sure garbage collection cannot have taken (and
    will not take) what the head is about to reference.

    A collection removes unreferenced objects older than settings.gc_min_age by the store's clock, so
    the push asks the store for its first upload (the oldest): it must still be there, and
    younger than settings.gc_min_age less COMMIT_MARGIN_S by the store's clock. The writer's clock
    plays no part; a clock hours off, or a machine suspended mid-push, cannot fool it. A
    store that cannot tell ages falls back to the writer's own clock (the push's duration).

    Raises SyncError when the push must not commit (nothing is committed; push again).
    """
    transport = remote.transport
    limit = settings.gc_min_age - COMMIT_MARGIN_S
    if first_upload is None or not transport.knows_ages:
        if clock_now_us() - started_us <= limit * 1e6:
            return
        why = f"this push took longer than {settings.gc_min_age / 3600:.0f} hours"
    else:
        try:
            info = transport.stat(remote.prefix + first_upload)
        except RemoteNotFoundError:
            why = f"its upload {first_upload} is gone (removed by garbage collection)"
        else:
            now = info.now if info.now is not None else transport.store_time()
            if now - info.modified <= limit:
                return
            why = (
                f"its first upload is {(now - info.modified) / 3600:.1f} hours old by the store's "
                f"clock, and garbage collection may take objects over "
                f"{settings.gc_min_age / 3600:.0f} hours old"
            )
    raise SyncError(
        f"{remote.location}: {why}, so the commit could reference removed objects; nothing was "
        "committed. Push again."
    )
