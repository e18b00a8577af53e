"""The remote format (ebooklet/format.py): index parts, the head, and key placement."""

from __future__ import annotations

import collections
import json
import zlib

import msgpack
import pytest

from ebooklet.errors import IntegrityError, RemoteFormatError, UnsupportedFormatError
from ebooklet.format import (
    ENTRY_OVERHEAD,
    FORMAT_NAME,
    FORMAT_VERSION,
    PART_SPLIT_BYTES,
    Entry,
    Head,
    Part,
    bits_for,
    checksum,
    part_name,
    part_of,
    segment_name,
    value_hash,
)

# --- index parts ----------------------------------------------------------------------------


def _entry(i: int, segment: str = "seg/18c21-0123456789ab-0") -> Entry:
    return Entry(
        timestamp=1_700_000_000_000_000 + i,
        hash=value_hash(f"value {i}".encode()),
        segment=segment,
        offset=i * 100,
        length=100 + i,
    )


ENTRIES = {
    "station-00001": _entry(1),
    "ключ": _entry(2, "seg/18c22-0123456789ab-0"),
    "🔑 key with spaces": _entry(3),
    "": _entry(4, "seg/18c22-0123456789ab-1"),
    "big": Entry(2**56 - 1, value_hash(b"big"), "seg/18c23-0123456789ab-0", 2**40 + 7, 2**32 - 1),
}


def _encoded_part(payload: object) -> bytes:
    """A part with a valid checksum around an arbitrary msgpack payload."""
    body = zlib.compress(msgpack.packb(payload, use_bin_type=True))
    return b"EBKI" + checksum(body) + body


def test_a_part_round_trips_with_unicode_keys_and_64_bit_offsets():
    part = Part.decode(Part(ENTRIES.items()).encode())
    assert len(part) == len(ENTRIES)
    assert part.keys == sorted(ENTRIES)
    assert dict(part.items()) == ENTRIES
    for key, entry in ENTRIES.items():
        assert key in part
        assert part.get(key) == entry
    assert "missing" not in part and part.get("missing") is None


def test_an_empty_part_round_trips():
    data = Part().encode()
    part = Part.decode(data)
    assert len(part) == 0
    assert list(part.items()) == []
    assert part.get("") is None
    assert part.segment_bytes() == {}


def test_a_decoded_part_counts_the_bytes_it_references_per_segment():
    part = Part.decode(Part(ENTRIES.items()).encode())
    assert part.segment_bytes() == {
        "seg/18c21-0123456789ab-0": 101 + 103,
        "seg/18c22-0123456789ab-0": 102,
        "seg/18c22-0123456789ab-1": 104,
        "seg/18c23-0123456789ab-0": 2**32 - 1,
    }


def test_every_flipped_byte_after_the_magic_raises_integrity_error():
    data = Part(ENTRIES.items()).encode()
    for i in range(4, len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x01
        with pytest.raises(IntegrityError):
            Part.decode(bytes(corrupt), name="index/0-0-c1")


def test_a_truncated_part_raises_integrity_error():
    data = Part(ENTRIES.items()).encode()
    for cut in (len(data) - 1, len(data) // 2, 20):
        with pytest.raises(IntegrityError):
            Part.decode(data[:cut])


@pytest.mark.parametrize(
    "data",
    [b"", b"EBK", b"not an index part at all", b"\x00" * 64, json.dumps({"format": "ebooklet"}).encode()],
    ids=["empty", "short", "text", "zeros", "a-head"],
)
def test_garbage_raises_remote_format_error(data):
    with pytest.raises(RemoteFormatError, match="not an ebooklet index part"):
        Part.decode(data)


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2, 3],
        "a string",
        {"v": 1},
        {"v": 1, "keys": ["a"], "segs": [], "ts": b"\x00", "hash": b"", "seg": b"", "off": b"", "len": b""},
        {"v": 1, "keys": ["a", "b"], "segs": ["s"], "ts": b"\x00" * 8, "hash": b"\x00" * 16,
         "seg": b"\x00" * 4, "off": b"\x00" * 8, "len": b"\x00" * 4},
        {"v": "1", "keys": []},
    ],
    ids=["a-list", "a-string", "no-fields", "bad-array-length", "fewer-entries-than-keys", "text-version"],
)  # fmt: skip
def test_a_well_checksummed_part_of_the_wrong_shape_raises_remote_format_error(payload):
    with pytest.raises(RemoteFormatError):
        Part.decode(_encoded_part(payload))


def test_a_part_from_a_newer_format_raises_unsupported_format_error_saying_to_upgrade():
    raw = msgpack.unpackb(zlib.decompress(Part(ENTRIES.items()).encode()[20:]), raw=False)
    raw["v"] = FORMAT_VERSION + 1
    with pytest.raises(UnsupportedFormatError, match="(?i)upgrade"):
        Part.decode(_encoded_part(raw))


def test_the_part_magic_and_checksum_are_stable():
    data = Part(ENTRIES.items()).encode()
    assert data[:4] == b"EBKI"
    assert data[4:20] == checksum(data[20:])
    assert len(value_hash(b"")) == 16


# --- the head -------------------------------------------------------------------------------


def _head() -> Head:
    head = Head.new("pickle")
    head.commit = 7
    head.commit_id = "18c2a-0123456789ab"
    head.parent = "18c29-ba9876543210"
    head.timestamp = 1_700_000_000_000_000
    head.n_keys, head.n_bytes, head.key_bytes = 3, 300, 30
    head.part_bits = 1
    head.parts = ["index/1-0-18c2a-0123456789ab", None]
    head.segments = {"seg/18c2a-0123456789ab-0": [300, 250]}
    head.recent = [[6, head.parent, 1_699_999_999_000_000, 2, 0], [7, head.commit_id, head.timestamp, 1, 1]]
    head.written, head.deleted, head.author = 1, 1, "ann@station"
    head.metadata = {"title": "Ünïcode", "tags": [1, 2.5, None]}
    head.metadata_timestamp = 1_700_000_000_000_001
    return head


def test_a_head_round_trips():
    head = _head()
    decoded = Head.decode(head.encode())
    assert decoded == head
    assert decoded is not head


def test_a_format_1_head_is_still_read_and_names_itself_and_its_parent():
    v1 = json.loads(_head().encode())
    for name in ("recent", "written", "deleted", "author", "retention"):
        del v1[name]
    v1["version"] = 1
    v1["retired"] = [["seg/c6-0", 1_699_999_999_000_000]]
    head = Head.decode(json.dumps(v1).encode())
    assert head.version == 1 and head.commit == 7
    assert head.known_commits() == {7: "18c2a-0123456789ab", 6: "18c29-ba9876543210"}


def test_a_new_head_round_trips_and_is_unique():
    a, b = Head.new(None), Head.new(None)
    assert a.uuid != b.uuid
    assert Head.decode(a.encode()) == a
    assert a.format == FORMAT_NAME and a.version == FORMAT_VERSION


def test_a_head_is_json_with_the_format_marker():
    raw = json.loads(_head().encode())
    assert raw["format"] == "ebooklet"
    assert raw["version"] == FORMAT_VERSION


def test_a_head_ignores_fields_it_does_not_know():
    head = _head()
    raw = json.loads(head.encode())
    raw["added_by_a_later_minor_release"] = {"x": 1}
    assert Head.decode(json.dumps(raw).encode()) == head


def test_a_head_from_a_newer_format_raises_unsupported_format_error_saying_to_upgrade():
    raw = json.loads(_head().encode())
    raw["version"] = FORMAT_VERSION + 1
    with pytest.raises(UnsupportedFormatError, match="(?i)upgrade ebooklet") as info:
        Head.decode(json.dumps(raw).encode(), where="s3://bucket/db")
    message = str(info.value)
    assert "s3://bucket/db" in message
    assert str(FORMAT_VERSION + 1) in message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        b'"ebooklet"',
        b"null",
        json.dumps({"version": 1, "uuid": "x"}).encode(),
        json.dumps({"format": "zarr", "version": 1, "uuid": "x"}).encode(),
        b"EBKI" + b"\x00" * 40,
    ],
    ids=["empty", "binary", "a-list", "a-string", "null", "no-marker", "another-format", "an-index-part"],
)
def test_json_that_is_not_an_ebooklet_head_raises_remote_format_error(data):
    with pytest.raises(RemoteFormatError, match="not an ebooklet database") as info:
        Head.decode(data)
    assert not isinstance(info.value, UnsupportedFormatError)


def test_a_head_missing_a_required_field_raises_remote_format_error():
    raw = json.loads(_head().encode())
    del raw["uuid"]
    with pytest.raises(RemoteFormatError, match="malformed"):
        Head.decode(json.dumps(raw).encode())


@pytest.mark.parametrize("version", [None, "1", 1.5, [1]])
def test_a_head_with_a_malformed_version_is_not_called_newer(version):
    raw = json.loads(_head().encode())
    raw["version"] = version
    with pytest.raises(RemoteFormatError) as info:
        Head.decode(json.dumps(raw).encode())
    assert not isinstance(info.value, UnsupportedFormatError), info.value


# --- where keys live ------------------------------------------------------------------------


def test_part_of_is_pinned_to_blake2b_so_existing_remotes_stay_readable():
    # Changing these moves keys to other parts: every existing remote index would be unreadable.
    assert [part_of("station-00007", b) for b in (1, 4, 8, 16)] == [1, 15, 253, 64783]
    assert [part_of("ключ", b) for b in (1, 4, 8, 16)] == [0, 4, 76, 19668]
    assert [part_of("", b) for b in (1, 4, 8, 16)] == [1, 14, 228, 58534]


@pytest.mark.parametrize("bits", [0, 1, 2, 5, 8, 12, 16, 24])
def test_part_of_is_stable_and_within_range(bits):
    keys = [f"key-{i}" for i in range(500)] + ["", "ключ", "🔑", "a" * 1000]
    first = [part_of(k, bits) for k in keys]
    assert first == [part_of(k, bits) for k in keys]
    assert all(0 <= p < 2**bits for p in first)
    if bits == 0:
        assert set(first) == {0}
    else:
        assert len(set(first)) > 1


def test_part_of_splits_each_part_into_two_when_a_bit_is_added():
    for i in range(2000):
        key = f"k{i}"
        for bits in range(0, 20):
            assert part_of(key, bits + 1) >> 1 == part_of(key, bits)


@pytest.mark.parametrize("bits", [1, 4, 6])
def test_part_of_spreads_keys_evenly(bits):
    n_parts = 2**bits
    n_keys = 2000 * n_parts
    counts = collections.Counter(part_of(f"station-{i:07d}", bits) for i in range(n_keys))
    assert len(counts) == n_parts
    # 2000 keys expected per part; binomial sd ~45, so +-15% is > 6 sd.
    assert min(counts.values()) > 1700 and max(counts.values()) < 2300, counts


def test_bits_for_a_small_index_is_zero():
    assert bits_for(0, 0) == 0
    assert bits_for(1000, 20_000) == 0


def test_bits_for_grows_with_the_index_and_keeps_parts_under_the_split_size():
    previous = 0
    for n_keys in [10**3, 10**4, 5 * 10**4, 10**5, 10**6, 10**7, 10**8]:
        key_bytes = n_keys * 20
        bits = bits_for(n_keys, key_bytes)
        assert bits >= previous
        size = n_keys * ENTRY_OVERHEAD + key_bytes
        assert size / 2**bits <= PART_SPLIT_BYTES
        previous = bits
    assert previous > 10


@pytest.mark.parametrize("current", [0, 1, 3, 7, 12])
def test_bits_for_never_shrinks(current):
    for n_keys in [0, 1, 10**3, 10**5, 10**7]:
        assert bits_for(n_keys, n_keys * 20, current) >= current
    assert bits_for(0, 0, current) == current


def test_bits_for_does_not_split_parts_that_are_still_under_the_split_size():
    # One part of just under PART_SPLIT_BYTES stays one part; just over, it splits.
    n_keys = PART_SPLIT_BYTES // ENTRY_OVERHEAD
    assert bits_for(n_keys, 0) == 0
    assert bits_for(n_keys + 1, 0) >= 1


def test_object_names_are_relative_so_a_database_can_move():
    assert segment_name("c1", 0) == "seg/c1-0s"  # format 3: its large values hashed with SHA-256
    assert segment_name("c1", 0, legacy=True) == "seg/c1-0"
    assert part_name(3, 5, "c1") == "index/3-5-c1"
