"""The remote format: head, index parts and segments (see docs/format.rst).

All objects but the head are immutable and named uniquely by the commit that wrote them
(names inside the head and the index are relative to ``{db_key}.ebooklet/``):

``{db_key}``                           the head: JSON, the single commit point
``{db_key}.ebooklet/seg/{commit}-{n}``  a segment: values packed back to back
``{db_key}.ebooklet/index/{bits}-{part}-{commit}``  one index part
``{db_key}.ebooklet/log/{number}-{commit}``  the head of each commit, kept immutable

A key belongs to index part ``blake2b(key)[:8] >> (64 - bits)``; there are ``2**bits`` parts.

:mod:`.names` holds the constants, limits and object names, :mod:`.part` the index parts and
:mod:`.head` the head with the rule of each of its fields.
"""

from __future__ import annotations

from .head import (
    HEAD_RULES,
    Head,
    HeadRule,
    check_head,
    head_size_limit,
)
from .names import (
    COMMIT_ID_RE,
    DEFAULT_RETENTION,
    ENTRY_OVERHEAD,
    FORMAT_NAME,
    FORMAT_VERSION,
    HASH_LEN,
    HEAD_BASE_BYTES,
    HEAD_BYTES_PER_PART,
    LOG_NAME_RE,
    MAX_HEAD_BYTES,
    MAX_METADATA_BYTES,
    MAX_PART_BITS,
    MAX_PART_BYTES,
    MAX_PART_KEYS,
    MAX_PART_OBJECT_BYTES,
    N_KEYS_SLACK,
    PART_NAME_RE,
    PART_SPLIT_BYTES,
    PART_TARGET_BYTES,
    RECENT_COMMITS,
    SEGMENT_BYTES,
    SEGMENT_NAME_RE,
    SHA256_FROM,
    SHA256_SUFFIX,
    bits_for,
    checksum,
    hash_in,
    legacy_segment,
    log_name,
    new_commit_id,
    object_kind,
    part_name,
    part_of,
    parts_of,
    same_value,
    segment_name,
    value_hash,
    value_hashes,
)
from .part import (
    Entry,
    Part,
)

__all__ = [
    "COMMIT_ID_RE",
    "DEFAULT_RETENTION",
    "ENTRY_OVERHEAD",
    "Entry",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HASH_LEN",
    "HEAD_BASE_BYTES",
    "HEAD_BYTES_PER_PART",
    "HEAD_RULES",
    "Head",
    "HeadRule",
    "LOG_NAME_RE",
    "MAX_HEAD_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_PART_BITS",
    "MAX_PART_BYTES",
    "MAX_PART_KEYS",
    "MAX_PART_OBJECT_BYTES",
    "N_KEYS_SLACK",
    "PART_NAME_RE",
    "PART_SPLIT_BYTES",
    "PART_TARGET_BYTES",
    "Part",
    "RECENT_COMMITS",
    "SEGMENT_BYTES",
    "SEGMENT_NAME_RE",
    "SHA256_FROM",
    "SHA256_SUFFIX",
    "bits_for",
    "check_head",
    "checksum",
    "hash_in",
    "legacy_segment",
    "same_value",
    "head_size_limit",
    "log_name",
    "new_commit_id",
    "object_kind",
    "part_name",
    "part_of",
    "parts_of",
    "segment_name",
    "value_hash",
    "value_hashes",
]
