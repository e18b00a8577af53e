"""The in-flight commit record: a commit whose outcome this local file may never have learnt.

A push records the head it is about to commit in the local sync state, durably, before the
head's conditional PUT goes out (docs/sync.rst, "Commits whose outcome was lost"). If the
reply is lost, or the process is killed, the next ``push()``, ``pull()`` or ``changes()``
settles the record first: a commit that landed becomes the base, so what it carried stops
being a local change and is never pushed a second time over what others committed since.
:class:`InFlight` owns the record: written by :meth:`InFlight.record`, settled by
:meth:`InFlight.settle`, dropped by :meth:`InFlight.forget`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from ..format import Head
from ..local import LocalStore
from .diff import local_changes
from .heads import HeadStore
from .index import BaseIndex

logger = logging.getLogger(__name__)


class InFlight:
    """The in-flight commit record of one local file, against the remote ``heads`` reads."""

    def __init__(self, local: LocalStore, index: BaseIndex, heads: HeadStore) -> None:
        self.local = local
        self.index = index
        self.heads = heads

    def record(self, head: Head, pulled: set[str], overruled: set[str]) -> None:
        """Record, durably, that ``head`` is about to be committed; call before its PUT.

        ``pulled`` are the cached keys the commit's rebase makes stale; ``overruled`` the
        pending keys whose local change it gives up for the remote's side (a conflict settled
        for the remote).
        """
        local = self.local
        # Each overruled change is named with its time, so that settling can tell it from a
        # change made after the push.
        changed_at = {}
        for key in overruled:
            pending = local.pending_change(key)
            if pending is not None:
                changed_at[key] = pending.timestamp
        record = {"head": local.state.split_head(asdict(head)), "pulled": sorted(pulled)}
        local.state.inflight = {**record, "overruled": changed_at}
        local.save_state()

    def forget(self, durably: bool = True) -> None:
        """Drop the record: the commit's outcome is known. With ``durably=False`` the record
        goes with the next save of the sync state (the one that saves the new base)."""
        had = self.local.state.inflight is not None
        self.local.state.inflight = None
        if had and durably:
            self.local.save_state()

    def settle(self) -> None:
        """Learn whether the recorded commit landed, if a push never found out, and make the
        local state agree.

        A commit that landed becomes the base: what it carried stops being a local change, so
        it can never be pushed a second time over what others committed since.
        """
        intent = self.local.state.inflight
        if not intent:
            return
        local, index = self.local, self.index
        head = Head.from_saved(local.state.join_head(intent["head"]))
        latest, _ = self.heads.read_latest()
        landed = self.heads.landed(head, latest)
        if landed is None:
            logger.warning(
                "could not tell whether commit %d on %s landed: the log of commits that would "
                "tell is gone; its changes stay pending", head.commit, self.heads.remote.location,
            )
        if not landed:
            self.forget()
            return
        # Edits made behind ebooklet's back are recorded against the old base first, as pull()
        # does: adopting the commit replaces index parts, and a replaced part's presence bits
        # are what remembers a key deleted with plain booklet (without them the key would read
        # as never fetched, and come back from the remote).
        scanned = local_changes(index).scanned if local.external_edits else None
        # Keys written since are kept whatever the commit pulled in; the next sync compares them.
        # A change the commit overruled (the remote's side won its conflict) is not one of them,
        # unless the key was written again since.
        overruled = intent.get("overruled", {})
        touched = set()
        for key in local.touched:
            pending = local.pending_change(key) if key in overruled else None
            if pending is None or pending.timestamp != overruled[key]:
                touched.add(key)
        stale = set(intent["pulled"]) - touched
        self.forget(durably=False)  # saved with the new base
        index.adopt(head, None, {}, stale, still_pending=touched, scanned=scanned)
        settled = touched - set(local_changes(index).changes)
        local.clear_touched(settled)
        local.sync()
        logger.info("commit %d on %s had landed; %d change(s) settled", head.commit,
                    self.heads.remote.location, len(settled))
