"""How much memory a Feather file (Arrow IPC, as booklet's ``pd_zstd`` and ``gpd_zstd`` store
values) declares it needs once read, told from its own metadata before anything is inflated.

A Feather file's buffers are zstd frames, each after the size it inflates to (8 bytes), and
pyarrow allocates that size before it inflates the frame; its record batches give their row
counts, and pandas allocates a cell (8 bytes at most) per row and column even for a column of
nulls that the file stores as nothing. :func:`inflated_size` reads those numbers the way
pyarrow finds them (the footer's blocks, each message's record batch: Arrow's ``File.fbs`` and
``Message.fbs``), checking every offset, so that a crafted file cannot make it read outside
the bytes or loop without end.
"""

from __future__ import annotations

_MAGIC = b"ARROW1"
_CONTINUATION = b"\xff\xff\xff\xff"
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3
#: Bytes a cell may take once read (pandas: an 8-byte number or pointer per row and column).
CELL_BYTES = 8


class _Table:
    """One flatbuffer table of ``buf`` at ``pos`` (little-endian, offsets checked)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - _int(buf, pos, 4, signed=True)
        self.vtable_len = _int(buf, self.vtable, 2)

    def _field(self, i: int) -> int:
        at = 4 + 2 * i
        return 0 if at + 2 > self.vtable_len else _int(self.buf, self.vtable + at, 2)

    def int(self, i: int, size: int, signed: bool = False) -> int:
        field = self._field(i)
        return _int(self.buf, self.pos + field, size, signed) if field else 0

    def table(self, i: int) -> _Table | None:
        field = self._field(i)
        if not field:
            return None
        at = self.pos + field
        return _Table(self.buf, at + _int(self.buf, at, 4))

    def structs(self, i: int, size: int) -> list[int]:
        """The positions of the structs (of ``size`` bytes) of vector field ``i``."""
        field = self._field(i)
        if not field:
            return []
        at = self.pos + field
        start = at + _int(self.buf, at, 4)
        n = _int(self.buf, start, 4)
        if start + 4 + n * size > len(self.buf):
            raise ValueError("a vector runs past the end of the file")
        return [start + 4 + k * size for k in range(n)]


def _int(buf: bytes, at: int, size: int, signed: bool = False) -> int:
    if at < 0 or at + size > len(buf):
        raise ValueError("an offset points outside the file")
    return int.from_bytes(buf[at : at + size], "little", signed=signed)


def inflated_size(data: bytes) -> int:
    """The bytes reading the Feather file ``data`` into a DataFrame may take: its buffers as
    inflated (as each declares) plus a cell per row and column of each batch.

    Raises ValueError when ``data`` is not a Feather file of the Arrow IPC format (version 2,
    as ``to_feather`` writes), or when its metadata points outside it.
    """
    n = len(data)
    if n < 2 * len(_MAGIC) + 4 or data[:6] != _MAGIC or data[-6:] != _MAGIC:
        raise ValueError("it is not a Feather file (Arrow IPC) as to_feather writes one")
    footer_len = _int(data, n - 10, 4, signed=True)
    footer_at = n - 10 - footer_len
    if footer_len <= 0 or footer_at < 8:
        raise ValueError("its footer is malformed")
    footer = _Table(data, footer_at + _int(data, footer_at, 4))
    blocks = footer.structs(2, 24) + footer.structs(3, 24)  # dictionaries, record batches
    total = 0
    for block in blocks:
        offset = _int(data, block, 8, signed=True)
        meta_len = _int(data, block + 8, 4, signed=True)
        total += _batch_size(data, offset, meta_len)
    return total


def _batch_size(data: bytes, offset: int, meta_len: int) -> int:
    """What one block's message (a record or dictionary batch) may take once read."""
    body = offset + meta_len
    if offset < 8 or meta_len < 8 or body > len(data):
        raise ValueError("a block points outside the file")
    at = offset + 8 if data[offset : offset + 4] == _CONTINUATION else offset + 4
    message = _Table(data, at + _int(data, at, 4))
    kind, header = message.int(1, 1), message.table(2)
    if header is None or kind not in (_DICTIONARY_BATCH, _RECORD_BATCH):
        raise ValueError("a block does not hold a record batch")
    batch = header.table(1) if kind == _DICTIONARY_BATCH else header
    if batch is None:
        raise ValueError("a dictionary batch holds no data")
    rows = batch.int(0, 8, signed=True)
    nodes = batch.structs(1, 16)
    compressed = batch.table(3) is not None
    if rows < 0:
        raise ValueError("a batch has a negative number of rows")
    size = rows * max(1, len(nodes)) * CELL_BYTES
    for buffer in batch.structs(2, 16):
        start = body + _int(data, buffer, 8, signed=True)
        length = _int(data, buffer + 8, 8, signed=True)
        if start < body or length < 0 or start + length > len(data):
            raise ValueError("a buffer lies outside the file")
        if not compressed or length == 0:
            size += length
            continue
        declared = _int(data, start, 8, signed=True)  # -1: stored as it is
        if declared < -1:
            raise ValueError("a buffer declares a negative size")
        size += length - 8 if declared == -1 else declared
    return size
