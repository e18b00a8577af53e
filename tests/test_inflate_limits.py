"""Values a serializer inflates are inflated with a limit, on every way of reading them: the
zstd-framed ``*_zstd`` serializers by their frame's declared size, the pandas ones (Feather
files of zstd-compressed buffers) by what their metadata declares (ebooklet/feather.py)."""

from __future__ import annotations

import io
import json
import random

import pytest

import ebooklet
from ebooklet.codec import MIN_INFLATE_LIMIT, Codec
from ebooklet.feather import inflated_size

#: More than MIN_INFLATE_LIMIT of zeros: a few KB once compressed.
BOMB_BYTES = MIN_INFLATE_LIMIT + 16 * 1024 * 1024


READS = ["getitem", "items", "values", "get_items"]


def _read(db: ebooklet.EBooklet, read: str) -> None:
    if read == "getitem":
        db["bomb"]
    elif read == "get_items":
        dict(db.get_items(["bomb"]))
    else:
        list(getattr(db, read)())


@pytest.mark.parametrize("read", READS)
def test_a_zstd_value_that_declares_gigabytes_is_refused_on_every_read(tmp_path, read):
    conn = tmp_path / "remote" / "db.blt"
    bomb = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (2**31).to_bytes(8, "little") + b"\x00" * 65_000
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer="bytes") as db:
        db["bomb"] = bomb
        db.changes().push()
    head = json.loads(conn.read_bytes())
    head["value_serializer"] = "msgpack_zstd"  # needs no consent to read
    conn.write_bytes(json.dumps(head).encode())
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        with pytest.raises(ebooklet.DeserializationError, match="declares that it inflates to 2,147,483,648"):
            _read(db, read)


pa = pytest.importorskip("pyarrow")
feather = pytest.importorskip("pyarrow.feather")


def _feather(table, **kwargs) -> bytes:
    out = io.BytesIO()
    feather.write_feather(table, out, **kwargs)
    return out.getvalue()


def _codec(name: str = "pd_zstd") -> Codec:
    """The serializer's name with pyarrow's reader (booklet's needs pandas as well)."""
    return Codec(name, _feather, lambda raw: feather.read_table(io.BytesIO(raw)))


def _sample():
    n = 2000
    return pa.table({
        "id": list(range(n)),
        "name": [f"station-{i}" for i in range(n)],
        "rain": [None if i % 7 else i / 3 for i in range(n)],
        "kind": pa.array(["a", "b", "c", "d"] * (n // 4)).dictionary_encode(),
    })


@pytest.mark.parametrize("kwargs", [{"compression": "zstd"}, {"compression": "zstd", "chunksize": 300},
                                    {"compression": "uncompressed"}, {"compression": "lz4"}])
def test_feather_files_as_to_feather_writes_them_are_sized_and_read(kwargs):
    table = _sample()
    raw = _feather(table, **kwargs)
    # At least what pyarrow holds once it has read the file (every buffer inflated).
    assert inflated_size(raw) >= table.nbytes
    for name in ("pd_zstd", "gpd_zstd"):
        assert _codec(name).decode(raw, "k").equals(table)


@pytest.mark.parametrize("name", ["pd_zstd", "gpd_zstd"])
def test_a_feather_value_whose_buffers_inflate_past_the_limit_is_refused(name):
    zeros = pa.Array.from_buffers(pa.int64(), BOMB_BYTES // 8, [None, pa.py_buffer(bytes(BOMB_BYTES))])
    raw = _feather(pa.table({"z": zeros}), compression="zstd")
    del zeros
    assert len(raw) < 64 * 1024
    declared = 2 * BOMB_BYTES  # its buffers as inflated, and a cell per row
    with pytest.raises(ebooklet.DeserializationError, match=f"declares that it inflates to {declared:,}"):
        _codec(name).decode(raw, "bomb")


@pytest.mark.parametrize("read", READS)
def test_a_pd_zstd_value_that_inflates_past_the_limit_is_refused_on_every_read(tmp_path, read):
    pd = pytest.importorskip("pandas")  # booklet's pd_zstd serializer needs it
    conn = tmp_path / "remote" / "db.blt"
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer="pd_zstd") as db:
        db.set("bomb", pd.DataFrame({"z": [0] * (BOMB_BYTES // 8)}))
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        with pytest.raises(ebooklet.DeserializationError, match="declares that it inflates to"):
            _read(db, read)


def test_a_feather_value_whose_dictionary_inflates_past_the_limit_is_refused():
    dictionary = pa.array([bytes(BOMB_BYTES)], pa.binary())
    column = pa.DictionaryArray.from_arrays(pa.array([0, 0, 0], pa.int32()), dictionary)
    raw = _feather(pa.table({"d": column}), compression="zstd")
    del dictionary, column
    assert len(raw) < 64 * 1024
    with pytest.raises(ebooklet.DeserializationError, match="declares that it inflates to"):
        _codec().decode(raw, "bomb")


def test_a_feather_value_of_billions_of_null_rows_is_refused():
    """A column of nulls is stored as nothing, but pandas makes a cell of each row."""
    raw = _feather(pa.table({"z": pa.nulls(10**10)}), compression="zstd")
    with pytest.raises(ebooklet.DeserializationError, match="declares that it inflates to 80,000,000,000"):
        _codec().decode(raw, "nulls")


def test_a_feather_buffer_that_declares_more_than_it_holds_is_refused():
    table = pa.table({"z": list(range(1000))})
    raw = bytearray(_feather(table, compression="zstd"))
    declared = (1000 * 8).to_bytes(8, "little")
    at = raw.index(declared)  # the data buffer's inflated size, before its zstd frame
    assert raw[at + 8 : at + 12] == b"\x28\xb5\x2f\xfd"
    raw[at : at + 8] = (2**40).to_bytes(8, "little")
    with pytest.raises(ebooklet.DeserializationError, match="declares that it inflates to 1,099,5"):
        _codec().decode(bytes(raw), "k")


def test_damaged_feather_values_are_a_deserialization_error_never_another_exception():
    raw = _feather(_sample(), compression="zstd")
    rng = random.Random(16)
    candidates = [raw[:n] for n in range(0, len(raw), 97)] + [b"not a feather file"]
    for _ in range(300):
        damaged = bytearray(raw)
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        candidates.append(bytes(damaged))
    for data in candidates:
        try:
            _codec().decode(data, "k")
        except ebooklet.DeserializationError:
            pass
