"""The local copies of base index parts, and their presence bits.

``parts/<name>`` is base index part ``<name>`` exactly as downloaded: a cache of a remote
object (a torn or damaged copy fails the part's own checksum and is downloaded again).
``parts/<name>.bits`` marks which of its keys have been present in the data file, so that a
key absent from the file reads as deleted (bit set) or as not fetched yet (bit clear). The
bits are state, not cache: they are written atomically and carry a checksum over the part's
name and the bits. A bits file that is missing, damaged or names another part is rebuilt at
once from the keys the data file holds (when the layer above can list the part's keys): a key
deleted with plain booklet *after* the damage still reads as deleted, and only one deleted
that way before it reads as not fetched (fetched again), never the reverse.

A stored part and its bits live in files named after the part's object, so that replacing a
part is atomic: the new files are written first, the sync state switches to them, and the
old files are swept after that (a crash in between keeps the old pair, never the new part
with the old bits).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
from collections.abc import Callable, Collection, Sequence

from ..files import temp_name, write_atomic, write_atomic_many
from .state import SyncState

logger = logging.getLogger(__name__)

#: The start of a checksummed bits file (state version 3); older files hold the bits alone.
BITS_MAGIC = b"\xebB\x01"
_SUM_LEN = 8


def encode_bits(name: str, bits: bytes) -> bytes:
    body = BITS_MAGIC + bytes(bits)
    return body + hashlib.blake2b(name.encode() + body, digest_size=_SUM_LEN).digest()


def decode_bits(name: str, data: bytes, legacy: bool) -> bytearray | None:
    """The bits in ``data`` (a file of part ``name``), or None when they fail their check.
    ``legacy``: the state predates checksummed bits, so a file without them is taken as is."""
    if data.startswith(BITS_MAGIC) and len(data) >= len(BITS_MAGIC) + _SUM_LEN:
        body, checksum = data[:-_SUM_LEN], data[-_SUM_LEN:]
        if hashlib.blake2b(name.encode() + body, digest_size=_SUM_LEN).digest() == checksum:
            return bytearray(body[len(BITS_MAGIC) :])
        return None
    return bytearray(data) if legacy else None


def empty_bits(n: int) -> bytearray:
    return bytearray((n + 7) // 8)


def present_bits(keys: Sequence[str], contains: Callable[[str], bool],
                 seen: Collection[str] = frozenset()) -> bytearray:
    """Bits set for the keys (rows of a part) that are in ``seen`` or that ``contains``."""
    bits = empty_bits(len(keys))
    for row, key in enumerate(keys):
        if key in seen or contains(key):
            bits[row >> 3] |= 1 << (row & 7)
    return bits


class PartCache:
    """The stored base parts of one local file and their presence bits.

    Parameters
    ----------
    folder : path
        ``parts/`` in the sync state's folder.
    state : SyncState
        Its ``parts`` (part number -> object name) says which stored files are in use.
    note : callable
        Reports a repair, one sentence.
    """

    def __init__(self, folder: pathlib.Path, state: SyncState, note: Callable[[str], None]) -> None:
        self.folder = folder
        self.state = state
        self._note = note
        self._bits: dict[int, bytearray] = {}
        self._dirty: set[int] = set()
        #: Whether bits files without a checksum are read (a state of version 2 or older).
        self.legacy = state.version < 3
        #: Set when damaged bits were found and could not be rebuilt: the caller forgets
        #: presence until a full scan.
        self.found_damage = False
        #: ``rebuild(part, name)``: the bits of a stored part from the keys in the data file
        #: now, or None when its keys cannot be listed (set by the store once it is open).
        self.rebuild: Callable[[int, str], bytearray | None] | None = None

    def file(self, name: str, suffix: str = "") -> pathlib.Path:
        return self.folder / (name.replace("/", "_") + suffix)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def stored(self) -> dict[int, str]:
        """Base parts kept locally: part number -> object name."""
        return {int(p): name for p, name in self.state.parts.items()}

    def has(self, part: int, name: str) -> bool:
        return self.state.parts.get(str(part)) == name

    def blob(self, part: int, name: str) -> bytes | None:
        """The stored bytes of base part ``part`` if they are the object ``name``."""
        if not self.has(part, name):
            return None
        try:
            return self.file(name).read_bytes()
        except FileNotFoundError:
            return None

    def store(
        self,
        part: int,
        name: str,
        blob: bytes,
        keys: list[str],
        contains: Callable[[str], bool],
        seen: set[str] = frozenset(),  # type: ignore[assignment]
        none_present: bool = False,
    ) -> None:
        """Keep base part ``part`` (object ``name``, holding ``keys`` in order).

        Its presence bits are taken now: a key present in the data file at this moment has
        been seen locally, so if it disappears later it was deleted, not left unfetched.
        Keys in ``seen`` (present in the part this one replaces) keep their bit;
        ``none_present`` says no key can be in the data file (all other bits clear).
        """
        bits = present_bits(keys, contains, seen) if not none_present or seen else empty_bits(len(keys))
        self._write_blob(name, blob)
        # Bits all clear say what a missing file says (no key seen): no fsync needed.
        write_atomic(self.file(name, ".bits"), encode_bits(name, bits), durable=bits.count(0) != len(bits))
        self._bits[part] = bits
        self._dirty.discard(part)
        self.state.parts[str(part)] = name

    def _write_blob(self, name: str, blob: bytes) -> None:
        # A cache of a remote object: no fsync (a torn copy fails its checksum and is
        # downloaded again).
        tmp = temp_name(self.file(name))
        tmp.write_bytes(blob)
        os.replace(tmp, self.file(name))

    def stage(self, name: str, blob: bytes, bits: bytes) -> None:
        """Write the files of a part a push is building, before its commit: they are used
        only once :meth:`use_staged` names them (and swept at the next sync if the commit
        never happens). Safe from another thread: it touches no shared state."""
        self._write_blob(name, blob)
        write_atomic(self.file(name, ".bits"), encode_bits(name, bits))

    def use_staged(self, part: int, name: str, bits: bytes) -> bool:
        """Make a staged part base part ``part`` (False if its files are gone since)."""
        if not (self.file(name).exists() and self.file(name, ".bits").exists()):
            return False
        self._bits[part] = bytearray(bits)
        self._dirty.discard(part)
        self.state.parts[str(part)] = name
        return True

    def forget(self, part: int) -> None:
        """Stop using a stored part (its files are swept once the state is saved)."""
        self.state.parts.pop(str(part), None)
        self._bits.pop(part, None)
        self._dirty.discard(part)

    def forget_all(self) -> None:
        for part in list(self.stored()):
            self.forget(part)

    def bits(self, part: int) -> bytearray:
        """Presence bits of base part ``part``: bit i set = its i-th key was in the data file."""
        bits = self._bits.get(part)
        if bits is None:
            name = self.state.parts.get(str(part))
            bits = self._read_bits(part, name) if name else bytearray()
            self._bits[part] = bits
        return bits

    def _read_bits(self, part: int, name: str) -> bytearray:
        path = self.file(name, ".bits")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None  # every stored part has its bits file: removed, or lost to a crash
        bits = decode_bits(name, data, self.legacy) if data is not None else None
        if bits is None:
            self._dirty.add(part)  # written again, checksummed, at the next sync
            how = "missing" if data is None else "damaged"
            rebuilt = self.rebuild(part, name) if self.rebuild is not None else None
            if rebuilt is not None:
                self._note(
                    f"the presence bits {path} were {how}; they were rebuilt from the keys in the "
                    "data file (a key of that index part deleted with plain booklet before the "
                    "damage reads as not fetched, and is fetched again when read)"
                )
                return rebuilt
            self.found_damage = True
            self._note(
                f"the presence bits {path} are {how}; the "
                "keys of that index part that are not in the data file read as not fetched "
                "(they are fetched again when read), never as deleted, and those in it get their "
                "bits again at the next comparison with the remote"
            )
            return bytearray()
        if self.legacy:
            self._dirty.add(part)  # rewritten with a checksum at the next sync
        return bits

    def flush(self) -> None:
        """Write changed presence bits now, durably (before a change that relies on them)."""
        files = []
        for part in sorted(self._dirty):
            name = self.state.parts.get(str(part))
            if name is not None:
                files.append((self.file(name, ".bits"), encode_bits(name, self.bits(part))))
        write_atomic_many(files)
        self._dirty.clear()

    def sweep(self) -> None:
        """Remove part files that the saved state no longer names."""
        keep = set()
        for name in self.state.parts.values():
            keep.add(self.file(name).name)
            keep.add(self.file(name, ".bits").name)
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def zero(self) -> None:
        """Forget which keys were seen in the data file, durably: after a repair, a key
        missing from it may have been lost, not deleted."""
        for p, name in self.stored().items():
            bits = self.file(name, ".bits")
            if bits.exists():
                size = len(self.bits(p))
                write_atomic(bits, encode_bits(name, bytes(size)))
            self._bits.pop(p, None)
            self._dirty.discard(p)

    def mark(self, part: int, row: int, present: bool = True) -> None:
        """Set (or clear) the presence bit of the ``row``-th key of base part ``part``."""
        bits = self.bits(part)
        byte = row >> 3
        if byte >= len(bits):
            bits.extend(bytes(byte + 1 - len(bits)))
        if present:
            bits[byte] |= 1 << (row & 7)
        else:
            bits[byte] &= ~(1 << (row & 7)) & 0xFF
        self._dirty.add(part)

    def mark_rows(self, parts: Sequence[int], rows: Sequence[int]) -> None:
        """:meth:`mark` for many keys: the ``rows[i]``-th key of base part ``parts[i]``."""
        bits_of = {p: self.bits(p) for p in set(parts)}
        for p, row in zip(parts, rows, strict=True):
            bits = bits_of[p]
            try:
                bits[row >> 3] |= 1 << (row & 7)
            except IndexError:
                bits.extend(bytes((row >> 3) + 1 - len(bits)))
                bits[row >> 3] |= 1 << (row & 7)
        self._dirty.update(bits_of)
