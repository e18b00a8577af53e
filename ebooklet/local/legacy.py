"""The side files of ebooklet 0.6.0 (sync state version 1), read to upgrade them."""

from __future__ import annotations

import pathlib
import struct

# -- the touched.log of ebooklet 0.6.0 (state version 1) ---------------------------------

#: The deletion-time field of a touched.log record that marks a write (not a delete).
LEGACY_WRITTEN = 0xFFFFFFFFFFFFFFFF


def read_legacy_touched(path: pathlib.Path) -> tuple[dict[str, int | None], bool]:
    """The keys of a version-1 ``touched.log`` (key -> deletion time, None for a write), and
    whether all of it could be read (it has no checksums: undecodable keys mean damage)."""
    touched: dict[str, int | None] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return touched, True
    pos = 0
    # A torn record at the end belongs to a sync that never returned: ignore it.
    while pos + 12 <= len(data):
        ts, n = struct.unpack_from("<QI", data, pos)
        if pos + 12 + n > len(data):
            break
        try:
            key = data[pos + 12 : pos + 12 + n].decode("utf-8")
        except UnicodeDecodeError:
            return touched, False
        touched[key] = None if ts == LEGACY_WRITTEN else ts
        pos += 12 + n
    return touched, True
