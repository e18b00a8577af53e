"""The local side: a booklet data file plus the sync state kept beside it.

The only package that imports booklet. For a data file ``big.blt`` the sync state lives in
the folder ``big.blt.ebooklet/``:

``state.json``       the sync state (:mod:`.state`): the remote head at the last sync (the
                     *base*), the data file's fingerprint at the last sync, the journals'
                     acknowledged lengths, and whether a session ended without syncing;
                     with a checksum
``journal.log``      every key written or deleted through ebooklet since the last push, with
                     each written value, one checksummed record per change, written before
                     the change returns (:mod:`.journal`): the source of truth for pending
                     changes
``mirror.log``       a second copy of the base and of the pending deletes: what the data
                     file cannot tell again if the journal is lost
``parts/N``          base index parts as downloaded, and ``parts/N.bits``, which of their
                     keys have been present in the data file, checksummed (:mod:`.parts`)

The units: :mod:`.store` (``LocalStore``, the facade the sync layer uses), :mod:`.recovery`
(opening, checking, repairing), :mod:`.datafile` (the only caller of booklet's API),
:mod:`.layout` (the only module that knows booklet's bytes) and :mod:`.fastwrite` (writes
straight into that layout), :mod:`.pending` and :mod:`.journal`, :mod:`.parts`, :mod:`.state`.
See docs/architecture.rst.
"""

from .datafile import DEFAULT_N_BUCKETS, check_serializer, codec_for, serializer_name
from .state import STATE_FILE, Synced, SyncState, synced_with
from .store import LocalStore

__all__ = [
    "DEFAULT_N_BUCKETS",
    "STATE_FILE",
    "LocalStore",
    "SyncState",
    "Synced",
    "check_serializer",
    "codec_for",
    "serializer_name",
    "synced_with",
]
