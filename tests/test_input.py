"""Keys, values, timestamps and arguments that ebooklet cannot use are refused up front, with an
ebooklet error that names the key (or argument) and says what to do; nothing is written.

booklet's own errors (UnicodeEncodeError, OverflowError, "can't concat dict to bytes") and a
serializer's (orjson's "Type is not JSON serializable") never reach the caller, and the names
booklet keeps for itself cannot be used as keys.
"""

from __future__ import annotations

import datetime
import os
import pathlib
from datetime import timezone

import booklet
import booklet.utils
import pytest

import ebooklet
from ebooklet import limits

RESERVED = sorted(limits.RESERVED_KEYS)
UTC = timezone.utc


def _open(tmp_path: pathlib.Path, serializer: object = None, name: str = "a.blt") -> ebooklet.EBooklet:
    return ebooklet.open(tmp_path / "remote" / "db", tmp_path / name, "c", value_serializer=serializer)


def _pushed(tmp_path: pathlib.Path, serializer: object = None) -> dict:
    """What a fresh reader of the folder remote sees."""
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "reader.blt", "r",
                       value_serializer=serializer) as reader:
        return dict(reader.items())


# -- the limits are booklet's ----------------------------------------------------------------


def test_the_limits_written_out_in_ebooklet_are_booklets_own():
    assert limits.RESERVED_KEYS == {k.decode() for k in booklet.utils.reserved_key_bytes}
    assert limits.MAX_KEY_BYTES == 2 ** (8 * booklet.utils.n_bytes_key) - 1
    assert limits.MAX_VALUE_BYTES == 2 ** (8 * booklet.utils.n_bytes_value) - 1
    assert limits.MAX_TIMESTAMP == 2 ** (8 * booklet.utils.timestamp_bytes_len) - 1


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("bad \udc80 key", r"lone surrogate.*surrogateescape"),
        ("k" * 70_000, r"70,000 bytes long in UTF-8; keys may be at most 65,535 bytes.*shorter key"),
        ("é" * 32_768, r"65,536 bytes long in UTF-8"),
    ],
    ids=["lone-surrogate", "70-kb", "one-byte-too-long-in-utf8"],
)
def test_a_key_booklet_cannot_store_is_refused_naming_it_and_nothing_is_written(tmp_path, key, message):
    with _open(tmp_path) as db:
        for attempt in (
            lambda: db.__setitem__(key, b"v"),
            lambda: db.set(key, b"v", timestamp=1),
            lambda: db.update({"fine": b"ok", key: b"v"}),
            lambda: db[key],
            lambda: key in db,
            lambda: db.__delitem__(key),
            lambda: db.get_timestamp(key),
        ):
            with pytest.raises(ebooklet.InvalidKeyError, match=message) as info:
                attempt()
            assert isinstance(info.value, ValueError) and info.value.key == key
            assert repr(key[:20])[1:-1] in str(info.value)
        assert list(db.keys()) == ["fine"] and len(db) == 1
        db.changes().push()
    assert _pushed(tmp_path) == {"fine": b"ok"}


def test_the_longest_key_booklet_stores_round_trips_through_the_remote(tmp_path):
    longest = "k" * limits.MAX_KEY_BYTES
    multibyte = "é" * (limits.MAX_KEY_BYTES // 2)
    with _open(tmp_path) as db:
        db[longest] = b"long"
        db[multibyte] = b"accents"
        db[""] = b"empty"
        db.changes().push()
    assert _pushed(tmp_path) == {longest: b"long", multibyte: b"accents", "": b"empty"}


def test_a_key_that_is_not_str_is_a_key_type_error_that_is_also_a_type_error(tmp_path):
    with _open(tmp_path) as db:
        for bad in (1, b"bytes", None):
            with pytest.raises(ebooklet.KeyTypeError, match=f"keys must be str, not {type(bad).__name__}"):
                db[bad] = b"v"
            with pytest.raises(TypeError):
                db[bad]
        with pytest.raises(ebooklet.InvalidKeyError):
            list(db.get_items(["ok", 2]))


# -- reserved keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", RESERVED)
def test_the_names_booklet_keeps_for_itself_are_refused_as_keys(tmp_path, key):
    with _open(tmp_path) as db:
        db.set_metadata({"owner": "me"})
        db["user"] = b"value"
        for attempt in (
            lambda: db.__setitem__(key, b"overwrite"),
            lambda: db.update({key: b"overwrite"}),
            lambda: db.update(**{key: b"overwrite"}),
            lambda: db[key],
            lambda: key in db,
            lambda: db.__delitem__(key),
        ):
            with pytest.raises(ebooklet.InvalidKeyError, match=f"{key}' is reserved.*Choose another key"):
                attempt()
        assert len(db) == 1 and list(db.keys()) == ["user"]
        assert db.get_metadata() == {"owner": "me"}
        result = db.changes().push()
        assert result.keys == ["user"]
    assert ebooklet.remote_info(tmp_path / "remote" / "db").metadata == {"owner": "me"}
    with booklet.open(tmp_path / "a.blt") as raw:
        assert raw.get_metadata() == {"owner": "me"} and list(raw.keys()) == ["user"]


def test_with_pickle_the_metadata_key_cannot_break_get_metadata_or_push(tmp_path):
    with _open(tmp_path, "pickle") as db:
        db.set_metadata({"v": 1})
        with pytest.raises(ebooklet.InvalidKeyError):
            db[RESERVED[0]] = {"not": "metadata"}
        db["x"] = 1
        assert db.get_metadata() == {"v": 1}
        assert db.changes().push().keys == ["x"]


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serializer", "value", "message"),
    [
        (None, {"x": 1}, r"value of 'k' \(dict\) cannot be stored with no value serializer \(raw bytes: "
                         r"value_serializer=None\).*encode the value yourself.*'pickle' or 'orjson'"),
        (None, "text", r"value of 'k' \(str\).*raw bytes.*str.encode"),
        ("orjson", {1, 2}, r"value of 'k' \(set\) cannot be stored with the value serializer 'orjson'.*"
                           r"not JSON serializable.*another value_serializer"),
        ("str", 5, r"value of 'k' \(int\) cannot be stored with the value serializer 'str'"),
        ("pickle", lambda: 1, r"value of 'k' \(function\) cannot be stored with the value serializer"),
        ("uint1", 300, r"value of 'k' \(int\) cannot be stored with the value serializer 'uint1'.*Overflow"),
    ],
    ids=["dict-as-bytes", "str-as-bytes", "set-in-orjson", "int-in-str", "lambda-in-pickle", "too-big-uint1"],
)
def test_a_value_the_serializer_cannot_encode_names_the_key_and_the_serializer(
    tmp_path, serializer, value, message
):
    with _open(tmp_path, serializer) as db:
        with pytest.raises(ebooklet.SerializationError, match=message) as info:
            db["k"] = value
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
        assert info.value.key == "k"
        with pytest.raises(ebooklet.SerializationError):
            db.update({"k": value})
        assert "k" not in db and len(db) == 0
        assert not any(c.key == "k" for c in db.changes().iter_changes())


def test_a_bytes_database_takes_bytearray_and_memoryview_and_gives_back_bytes(tmp_path):
    with _open(tmp_path) as db:
        db["a"] = bytearray(b"array")
        db["m"] = memoryview(b"view")
        assert db["a"] == b"array" and type(db["m"]) is bytes
        db.changes().push()
    assert _pushed(tmp_path) == {"a": b"array", "m": b"view"}


def test_a_value_larger_than_booklet_can_record_is_refused_before_it_is_written(tmp_path, monkeypatch):
    # 4 GiB cannot be allocated in a test: the same check, at a smaller limit.
    monkeypatch.setattr(limits, "MAX_VALUE_BYTES", 10)
    with _open(tmp_path) as db:
        with pytest.raises(ebooklet.InvalidArgumentError, match=r"'big' is 11 bytes.*at most 10 bytes"):
            db["big"] = b"x" * 11
        assert "big" not in db


def test_a_stored_value_the_serializer_cannot_decode_names_the_key(tmp_path):
    with _open(tmp_path, "orjson") as db:
        db["good"] = [1]
    with booklet.open(tmp_path / "a.blt", "w") as raw:  # plain booklet, around the serializer
        raw.set("bad", b"\xff not json", encode_value=False)
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", "w") as db:
        assert db["good"] == [1]
        with pytest.raises(ebooklet.DeserializationError, match=r"'bad' .*'orjson'.*Overwrite or delete"):
            db["bad"]
        with pytest.raises(ValueError):
            dict(db.items())
        db["bad"] = ["fixed"]
        assert dict(db.items()) == {"good": [1], "bad": ["fixed"]}


def test_metadata_that_is_not_json_is_a_serialization_error(tmp_path):
    with _open(tmp_path) as db:
        with pytest.raises(ebooklet.SerializationError, match=r"metadata \(set\) cannot be stored: .*JSON"):
            db.set_metadata({1, 2})
        db.set_metadata({"fine": [1]})
        assert db.get_metadata() == {"fine": [1]}


# -- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "error", "message"),
    [
        (-1, ebooklet.InvalidArgumentError, "timestamp -1 is out of range.*since 1970"),
        (2**56, ebooklet.InvalidArgumentError, "out of range.*year 4253"),
        (datetime.datetime(1960, 1, 1, tzinfo=UTC), ebooklet.InvalidArgumentError, "out of range"),
        (datetime.datetime(2024, 1, 1), ebooklet.InvalidArgumentError, "needs a timezone"),
        ("2024-01-01T00:00:00", ebooklet.InvalidArgumentError, "needs a timezone"),
        ("yesterday", ebooklet.InvalidArgumentError, "'yesterday' is not an ISO 8601"),
        (1.5, ebooklet.ArgumentTypeError, "not float"),
        (True, ebooklet.ArgumentTypeError, "not bool"),
    ],
    ids=["negative", "past-year-4253", "before-1970", "naive-datetime", "naive-string", "not-a-date", "float",
         "bool"],
)  # fmt: skip
def test_a_timestamp_the_file_cannot_record_is_refused(tmp_path, timestamp, error, message):
    with _open(tmp_path) as db:
        db["k"] = b"v"
        before = db.get_timestamp("k")
        for attempt in (
            lambda: db.set("new", b"v", timestamp=timestamp),
            lambda: db.set_timestamp("k", timestamp),
            lambda: db.set_metadata({"m": 1}, timestamp=timestamp),
        ):
            with pytest.raises(error, match=message):
                attempt()
        assert "new" not in db and db.get_timestamp("k") == before and db.get_metadata() is None


def test_the_edges_of_the_timestamp_range_are_kept_exactly(tmp_path):
    with _open(tmp_path) as db:
        db.set("first", b"v", timestamp=0)
        db.set("last", b"v", timestamp=limits.MAX_TIMESTAMP)
        db.changes().push()
    with ebooklet.open(tmp_path / "remote" / "db", tmp_path / "b.blt", "r") as db:
        assert dict(db.timestamps()) == {"first": 0, "last": limits.MAX_TIMESTAMP}


# -- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "builtin", "message"),
    [
        ({"flag": "x"}, ebooklet.InvalidArgumentError, ValueError, "flag must be one of"),
        ({"remote_lock": "always"}, ebooklet.InvalidArgumentError, ValueError, "remote_lock must be"),
        ({"value_serializer": "pickel"}, ebooklet.InvalidArgumentError, ValueError,
         "unknown value_serializer"),
        ({"value_serializer": 42}, ebooklet.ArgumentTypeError, TypeError, "value_serializer must .* not 42"),
        ({"value_serializer": object}, ebooklet.ArgumentTypeError, TypeError, "dumps/loads"),
        ({"allow_pickle": "yes"}, ebooklet.ArgumentTypeError, TypeError, "allow_pickle must be True or"),
        ({"remote_conn_group": True, "value_serializer": "pickle"}, ebooklet.InvalidArgumentError, ValueError,
         "stores JSON"),
    ],
    ids=["flag", "remote-lock", "unknown-serializer", "serializer-type", "serializer-class", "allow-pickle",
         "group-serializer"],
)  # fmt: skip
def test_a_bad_argument_to_open_is_an_ebooklet_error_and_the_matching_builtin(
    tmp_path, kwargs, error, builtin, message
):
    kwargs = {"flag": "c", **kwargs}
    with pytest.raises(error, match=message) as info:
        ebooklet.open(tmp_path / "remote" / "db", tmp_path / "a.blt", **kwargs)
    assert isinstance(info.value, ebooklet.EbookletError) and isinstance(info.value, builtin)
    assert list(tmp_path.iterdir()) == []


def test_a_file_path_of_the_wrong_type_is_an_argument_type_error_and_bytes_paths_work(tmp_path):
    with pytest.raises(ebooklet.ArgumentTypeError, match="file_path must be"):
        ebooklet.open(tmp_path / "remote" / "db", 42, "c")
    with ebooklet.open(tmp_path / "remote" / "db", bytes(tmp_path / "a.blt"), "c") as db:
        db["k"] = b"v"
    assert (tmp_path / "a.blt").exists()


def test_an_unknown_conflict_policy_is_an_invalid_argument_error(tmp_path):
    with _open(tmp_path) as db:
        db["k"] = b"v"
        for call in (db.changes().push, db.changes().pull):
            with pytest.raises(ebooklet.InvalidArgumentError, match="on_conflict must be") as info:
                call(on_conflict="mine")
            assert isinstance(info.value, ValueError)
        assert db.changes().push().keys == ["k"]


def test_a_group_refuses_set_with_an_ebooklet_error_that_is_a_type_error(tmp_path):
    remote = tmp_path / "remote" / "group"
    with ebooklet.open(remote, tmp_path / "g.blt", "c", remote_conn_group=True) as group:
        for call in (lambda: group.set("k", {}), lambda: group.update({"k": {}})):
            with pytest.raises(ebooklet.NotSupportedError, match="add") as info:
                call()
            assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "read",
    [lambda db: db["a"], lambda db: dict(db.get_items(["a"])), lambda db: dict(db.items()),
     lambda db: list(db.values())],
    ids=["getitem", "get_items", "items", "values"],
)
def test_every_read_of_a_damaged_cached_value_reports_damage_not_a_serializer_error(tmp_path, read):
    remote = tmp_path / "remote" / "db"
    with ebooklet.open(remote, tmp_path / "w.blt", "c", value_serializer="str") as db:
        db["a"] = "text of a"
        db.changes().push()
    local = tmp_path / "a.blt"
    with ebooklet.open(remote, local, "r") as db:
        db.load_items()
    data = bytearray(local.read_bytes())
    data[data.index(b"text of a") + 2] ^= 0x80  # no longer UTF-8, as a bad disk would leave it
    stat = local.stat()
    local.write_bytes(bytes(data))
    os.utime(local, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    db = ebooklet.open(remote, local, "w")
    with pytest.raises(ebooklet.DamagedLocalFileError, match="open it again"):
        read(db)
    db.close()
    with ebooklet.open(remote, local, "w") as db:
        assert read(db) in ("text of a", {"a": "text of a"}, ["text of a"])
