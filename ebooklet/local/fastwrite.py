"""Writing entries straight into booklet's layout, with less work per entry than ``set``.

booklet's ``set`` appends an entry to a write buffer and, when the buffer is full, writes it
out and hooks its entries into the hash index one seek, read and write at a time
(``utils.update_index``). The functions here write the same bytes: an entry goes into the same
buffer (so booklet's reads and its own ``sync`` see it as theirs), and full buffers are hooked
in through a memory map of the file (:func:`_link`). They rely on booklet's private attributes
and on the layout of :mod:`.layout`, so :func:`capable` allows them only with a booklet
release the project tested (:data:`.layout.TESTED_BOOKLET`), a file of the header version
those write, and the attributes and hashing rules as expected; otherwise
:class:`.datafile.DataFile` uses booklet's public ``set``. ``tests/test_fastwrite.py`` compares
the two paths on random sessions.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from typing import Any

import booklet.utils

from .layout import (
    BLOCK_TS,
    END_OF_CHAIN,
    FILE_VERSION,
    LAYOUT,
    TESTED_BOOKLET,
    booklet_version,
    header_version,
    key_hasher,
)

#: booklet's private attributes that the fast write path uses.
_FAST_ATTRS = (
    "_file", "_thread_lock", "_mutation_count", "_n_keys", "_n_buckets", "_index_offset",
    "_ts_bytes_len", "_buffer_data", "_buffer_index", "_buffer_index_set", "_write_buffer_size",
    "_n_keys_pos",
)
#: Values at least this long are written by :func:`put` straight to the file.
_DIRECT_VALUE = 64 << 10
#: Bytes of entries written and hooked into the index at a time by :func:`write_many`.
_BULK_CHUNK = 4 << 20


def capable(db: Any) -> bool:
    """Whether the fast write path knows this open booklet file's layout and attributes."""
    u = booklet.utils
    layout = (u.key_hash_len, u.n_bytes_file, u.n_bytes_key, u.n_bytes_value, u.timestamp_bytes_len)
    try:
        # booklet's own key hash and bucket choice must be the ones this path computes.
        probe = b"ebooklet-layout-probe"
        h = key_hasher()
        h.update(probe)
        same_hashing = (
            u.hash_key(probe) == h.digest()
            and u.get_index_bucket(h.digest(), 12007) == int.from_bytes(h.digest(), "little") % 12007
            and u.get_bucket_index_pos(5, 100) == 100 + 5 * 6
        )
    except Exception:  # noqa: BLE001 - a booklet that differs: its public set() is used
        same_hashing = False
    try:
        same_file = header_version(db._file.fileno()) == FILE_VERSION
    except (AttributeError, OSError, ValueError):
        same_file = False
    return (
        booklet_version() in TESTED_BOOKLET and same_file
        and same_hashing and layout == LAYOUT and hasattr(os, "pwrite")
        and getattr(db, "_ts_bytes_len", 0) == 7 and all(hasattr(db, name) for name in _FAST_ATTRS)
    )


def init_bucket_indexes(file: Any, n_buckets: int, index_pos: int, write_buffer_size: int) -> None:
    """booklet's ``utils.write_init_bucket_indexes``: the same bytes (every bucket empty),
    written a buffer at a time instead of one bucket per Python step. A new file with the
    default 360,007 buckets is made in a few milliseconds instead of 60 to 80."""
    empty = (1).to_bytes(booklet.utils.n_bytes_file, "little")
    file.seek(index_pos)
    per_write = max(1, write_buffer_size // len(empty))
    for done in range(0, n_buckets, per_write):
        file.write(empty * min(per_write, n_buckets - done))


def install() -> None:
    """Use :func:`init_bucket_indexes` in booklet (which calls its function by its module
    name when it creates or re-indexes a file), with a booklet release the project tested
    only; ``tests/test_fastwrite.py`` checks that both make the same file."""
    global booklets_init_bucket_indexes
    current = getattr(booklet.utils, "write_init_bucket_indexes", None)
    if booklet_version() in TESTED_BOOKLET and current is not None and current is not init_bucket_indexes:
        booklets_init_bucket_indexes = current
        booklet.utils.write_init_bucket_indexes = init_bucket_indexes


#: booklet's own function, as it was before :func:`install` (for the tests).
booklets_init_bucket_indexes: Any = None


def put(db: Any, key: str, value: bytes, timestamp: int) -> None:
    """``db.set(key, value, timestamp, encode_value=False)`` for a writable file. A large
    value goes to the file at once, from where it is (:func:`write_many`), rather than
    being copied into booklet's write buffer first."""
    if len(value) >= _DIRECT_VALUE:
        write_many(db, ((key, value, timestamp),))
        return
    kb = key.encode("utf-8")
    h = key_hasher()
    h.update(kb)
    key_hash = h.digest()
    head = BLOCK_TS.pack(
        END_OF_CHAIN, len(kb), len(value), timestamp & 0xFFFFFFFF, timestamp >> 32 & 0xFFFF, timestamp >> 48
    )
    with db._thread_lock:
        db._mutation_count += 1
        data = db._buffer_data
        if len(data) + 32 + len(kb) + len(value) > db._write_buffer_size and data:
            flush(db)
        pos = db._file.seek(0, 2) + len(data)
        data += key_hash
        data += head
        data += kb
        data += value
        index = db._buffer_index
        index += key_hash
        index += pos.to_bytes(6, "little")
        db._buffer_index_set.add(key_hash)


def flush(db: Any) -> None:
    """Write booklet's buffered entries and hook them into the index (under its lock)."""
    if not db._buffer_index:
        return
    f = db._file
    booklet.utils.flush_data_buffer(f, db._buffer_data, f.seek(0, 2))
    db._n_keys += _link(f.fileno(), db._buffer_index, db._n_buckets, db._index_offset)
    db._buffer_index.clear()
    db._buffer_index_set.clear()
    os.pwrite(f.fileno(), db._n_keys.to_bytes(4, "little"), db._n_keys_pos)  # as booklet's sync()


def write_many(db: Any, records: Iterable[tuple[str, bytes, int]]) -> None:
    """:func:`put` for many ``(key, value, timestamp)`` records, in order, each chunk of
    them written straight to the file and hooked in at once."""
    with db._thread_lock:
        db._mutation_count += 1
        flush(db)  # booklet's own buffered writes come first
        fd = db._file.fileno()
        n_buckets, index_offset = db._n_buckets, db._index_offset
        pieces: list[bytes] = []
        links = bytearray()
        add, hasher, block, eoc = pieces.extend, key_hasher, BLOCK_TS.pack, END_OF_CHAIN
        start = pos = db._file.seek(0, 2)
        for text, value, ts in records:
            key = text.encode("utf-8")
            kl, vl = len(key), len(value)
            head = block(eoc, kl, vl, ts & 0xFFFFFFFF, ts >> 32 & 0xFFFF, ts >> 48)
            h = hasher()
            h.update(key)
            key_hash = h.digest()
            add((key_hash, head, key, value))
            links += key_hash
            links += pos.to_bytes(6, "little")
            pos += 32 + kl + vl
            if pos - start >= _BULK_CHUNK:
                start = _append(fd, pieces, start)
                db._n_keys += _link(fd, links, n_buckets, index_offset)
                pieces.clear()
                links.clear()
        if pieces:
            _append(fd, pieces, start)
            db._n_keys += _link(fd, links, n_buckets, index_offset)
        os.pwrite(fd, db._n_keys.to_bytes(4, "little"), db._n_keys_pos)  # as booklet's sync()


#: Buffers one ``pwritev`` takes at most (POSIX's IOV_MAX is at least this).
_IOV_MAX = 1024
#: Pieces at least this long on average are written as they are, with ``pwritev``; shorter
#: ones are joined first (one copy costs less than many small buffers).
_GATHER_PIECE = 4096


def _append(fd: int, pieces: list[bytes], at: int) -> int:
    """Write ``pieces`` back to back from byte ``at`` (the end of the file); return the new
    end. Large values go to the kernel from where they are, without being joined first."""
    gather = hasattr(os, "pwritev") and sum(map(len, pieces)) >= _GATHER_PIECE * len(pieces)
    step = _IOV_MAX if gather else len(pieces)
    for i in range(0, len(pieces), step):
        group = pieces[i : i + step]
        want = sum(map(len, group))
        done = os.pwritev(fd, group, at) if gather else 0
        if done < want:  # joined pieces, or what a short write left
            with memoryview(b"".join(group)) as view:
                while done < want:
                    done += os.pwrite(fd, view[done:], at + done)
        at += want
    return at


#: Chain walks after which :func:`_link` lets go of the file's pages it touched (they stay
#: in the page cache, written or not), so that a large file never becomes resident.
_WALKS_PER_RELEASE = 8192


def _link(fd: int, links: bytearray, n_buckets: int, index_offset: int) -> int:
    """Hook entries already in the file into the hash index, in order; return how many keys
    are new. ``links`` holds a key hash and a position (19 bytes) per entry, as booklet's
    index buffer does. The rules are those of booklet's ``utils.update_index``: a key
    already in its bucket's chain is replaced in place (the old entry's pointer zeroed), a
    new key goes at the chain's end."""
    mm = mmap.mmap(fd, os.fstat(fd).st_size)
    release = getattr(mmap, "MADV_DONTNEED", None)
    from_bytes = int.from_bytes
    new = walks = 0
    try:
        for i in range(0, len(links), 19):
            key_hash = links[i : i + 13]
            pos = links[i + 13 : i + 19]
            slot = index_offset + from_bytes(key_hash, "little") % n_buckets * 6
            at = from_bytes(mm[slot : slot + 6], "little")
            if at <= 1:
                mm[slot : slot + 6] = pos
                new += 1
                continue
            walks += 1
            if walks % _WALKS_PER_RELEASE == 0 and release is not None:
                mm.madvise(release)  # a shared file mapping: nothing written is lost
            prev = slot
            while True:
                nxt = from_bytes(mm[at + 13 : at + 19], "little")
                if not nxt:  # a replaced entry still in the chain: booklet hooks in here
                    mm[prev : prev + 6] = pos
                    new += 1
                    break
                if mm[at : at + 13] == key_hash:
                    mm[at + 13 : at + 19] = bytes(6)
                    mm[prev : prev + 6] = pos
                    if nxt > 1:
                        at_new = from_bytes(pos, "little")
                        mm[at_new + 13 : at_new + 19] = nxt.to_bytes(6, "little")
                    break
                if nxt == 1:
                    mm[at + 13 : at + 19] = pos
                    new += 1
                    break
                prev, at = at + 13, nxt
    finally:
        mm.close()
    return new
