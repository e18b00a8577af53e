"""What a remote says is checked, not trusted.

A head and its index parts come from whoever can write to the bucket (or from a damaged
object): every field is checked before anything is read, written, allocated or deleted
through it, and a reader decides whether values are unpickled, not the remote.

Heads and parts are damaged here with plain file writes on the folder remote and boto3 on the
S3 servers, as an attacker or a bad copy would.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import zlib
from typing import Any

import booklet
import msgpack
import pytest

import ebooklet
from ebooklet import api, codec, format
from ebooklet.format import Entry, Head, Part, checksum, value_hash

from .conftest import RemoteKind
from .test_cli import ebk, ebk_all, error_line

# -- writing a remote's objects directly -----------------------------------------------------


def _key(conn: Any, name: str | None = None) -> str:
    """The object key of the head (``name`` None) or of an object of the database."""
    return conn.db_key if name is None else f"{conn.db_key}.ebooklet/{name}"


def _path(conn: pathlib.Path, name: str | None = None) -> pathlib.Path:
    return conn if name is None else conn.with_name(conn.name + ".ebooklet") / name


def read_object(remote: RemoteKind, conn: Any, name: str | None = None) -> bytes:
    if remote.server is None:
        return _path(conn, name).read_bytes()
    client = remote.server.admin_client
    return client.get_object(Bucket=conn.bucket, Key=_key(conn, name))["Body"].read()


def write_object(remote: RemoteKind, conn: Any, data: bytes, name: str | None = None) -> None:
    if remote.server is None:
        path = _path(conn, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        remote.server.admin_client.put_object(Bucket=conn.bucket, Key=_key(conn, name), Body=data)


def data_objects(remote: RemoteKind, conn: Any) -> set[str]:
    """The segments and index parts stored under the database's prefix."""
    if remote.server is None:
        root = _path(conn, "")
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                and p.parts[len(root.parts)] in ("seg", "index")}
    client = remote.server.admin_client
    prefix = _key(conn, "")
    listed = client.list_objects_v2(Bucket=conn.bucket, Prefix=prefix).get("Contents", [])
    names = {o["Key"][len(prefix):] for o in listed}
    return {n for n in names if n.startswith(("seg/", "index/"))}


def edit_head(remote: RemoteKind, conn: Any, **fields: Any) -> dict[str, Any]:
    head = json.loads(read_object(remote, conn))
    head.update(fields)
    write_object(remote, conn, json.dumps(head).encode())
    return head


def _bytes_db(conn: Any, path: pathlib.Path, values: dict[str, bytes]) -> None:
    with ebooklet.open(conn, path, "c") as db:
        db.update(values)
        db.changes().push()


# -- a malformed head ------------------------------------------------------------------------

CID = "18c2a-0123456789ab"

MALFORMED = [
    ("parts", "x", "'parts' is str, not a list"),
    ("parts", [None, None], r"'parts' holds 2 entries, not 2\*\*part_bits = 1"),
    ("part_bits", 64, "'part_bits' is 64, outside 0..20"),
    ("segments", [1], "'segments' is list, not a mapping"),
    ("segments", {f"seg/{CID}-0": "big"}, "'segments' gives 'big'"),
    ("n_keys", "many", "'n_keys' is str, not an int"),
    ("n_keys", -1, "'n_keys' is -1, outside 0.."),
    ("value_serializer", 5, "'value_serializer' is 5, not a serializer name"),
    ("uuid", None, "'uuid' is None, not a database uuid"),
    ("commit", 1.5, "'commit' is float"),
    ("commit_id", "../x", "'commit_id' is '../x', not a commit id"),
    ("timestamp", -5, "'timestamp' is -5"),
    ("recent", [["x"]], r"'recent' holds \['x'\]"),
    ("recent", [[1, CID]] * 65, "'recent' is .*not a list of at most 64 commits"),
    ("written", -1, "'written' is -1"),
    ("author", "\x1b]0;owned\x07", "'author' is .*not a printable name"),
    ("retention", {"days": 1e300}, r"'retention' gives 1e\+300 days"),
    ("retention", {"commits": 0}, "'retention' is"),
    ("metadata_timestamp", "now", "'metadata_timestamp' is str"),
    ("lease_token", True, "'lease_token' is bool"),
]


@pytest.mark.parametrize(("field", "value", "message"), MALFORMED,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(MALFORMED)])
def test_a_malformed_head_is_a_remote_format_error_naming_the_remote_and_the_field(
    remote, tmp_path, field, value, message
):
    conn = remote.conn()
    _bytes_db(conn, tmp_path / "writer.blt", {"k": b"v"})
    edit_head(remote, conn, **{field: value})
    objects = data_objects(remote, conn)
    with ebooklet.open(conn, tmp_path / "writer.blt", "r") as db:
        location = db.remote

    with pytest.raises(ebooklet.RemoteFormatError, match=message) as info:
        ebooklet.remote_info(conn)
    assert location in str(info.value) and "malformed head" in str(info.value)
    with pytest.raises(ebooklet.RemoteFormatError, match=message):
        ebooklet.open(conn, tmp_path / "reader.blt", "r")
    assert not (tmp_path / "reader.blt").exists()
    with ebooklet.open(conn, tmp_path / "writer.blt", "w") as db:
        db["k2"] = b"v2"
        with pytest.raises(ebooklet.RemoteFormatError, match=message):
            db.changes().push()
        with pytest.raises(ebooklet.RemoteFormatError, match=message):
            db.changes().pull()
        assert db["k2"] == b"v2"
    assert data_objects(remote, conn) == objects  # nothing was uploaded


def test_every_field_of_the_head_has_a_rule():
    assert set(format.HEAD_RULES) == set(Head.__dataclass_fields__)


def test_a_head_written_by_ebooklet_follows_every_rule(tmp_path):
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "a.blt", "c", value_serializer="str") as db:
        db.update({f"k{i}": "v" for i in range(100)})
        db.set_metadata({"m": [1, None]})
        db.changes().push()
        db.clear()
        db.changes().push()
    format.check_head(Head.decode(conn.read_bytes()))


# -- object names that lead outside the database ---------------------------------------------

ESCAPES = [
    ("parts", ["../../outside"]),
    ("parts", ["/etc/passwd"]),
    ("parts", [f"index/0-0-{CID}/../../../outside"]),
    ("parts", [f"other.ebooklet/index/0-0-{CID}"]),
    ("parts", [f"index/1-1-{CID}"]),  # the right shape, for another part
    ("segments", {"../../outside": [1, 1]}),
    ("segments", {f"seg/{CID}-0/../../x": [1, 1]}),
    ("recent", [[1, "../victim"]]),
    ("recent", [[1, f"{CID}/../../victim"]]),
    ("commit_id", f"{CID}\n"),
    ("parent", "/etc/passwd"),
]


@pytest.mark.parametrize(("field", "value"), ESCAPES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(ESCAPES)])
def test_an_object_name_in_a_head_must_be_one_of_the_formats_own(remote, tmp_path, field, value):
    conn = remote.conn()
    victim = remote.conn()  # another database beside this one, which no name may reach
    _bytes_db(victim, tmp_path / "victim.blt", {"keep": b"me"})
    _bytes_db(conn, tmp_path / "writer.blt", {"k": b"v"})
    edit_head(remote, conn, **{field: value})

    with pytest.raises(ebooklet.RemoteFormatError, match=f"'{field}'"):
        ebooklet.open(conn, tmp_path / "reader.blt", "r")
    with ebooklet.open(conn, tmp_path / "writer.blt", "w") as db:
        db["k2"] = b"v2"
        with pytest.raises(ebooklet.RemoteFormatError, match=f"'{field}'"):
            db.changes().push()
    with ebooklet.open(victim, tmp_path / "victim-check.blt", "r") as db:
        assert dict(db.items()) == {"keep": b"me"}


def test_a_format_1_retired_list_cannot_make_a_writer_delete_another_databases_head(s3_remote, tmp_path):
    conn = s3_remote.conn()
    victim_name = conn.db_key.rsplit("/", 1)[1] + "-victim"
    victim = ebooklet.S3Connection(conn.access_key_id, conn.access_key, f"dbs/{victim_name}", conn.bucket,
                                   endpoint_url=conn.endpoint_url, retries=1)
    _bytes_db(victim, tmp_path / "victim.blt", {"keep": b"me"})
    _bytes_db(conn, tmp_path / "writer.blt", {"k": b"v"})
    # dbs/<db>.ebooklet/../<victim> is the victim's head once a server cleans the path. Format 2
    # deletes nothing a head names: garbage is what gc finds unreferenced under the prefix.
    edit_head(s3_remote, conn, version=1, retired=[[f"../{victim_name}", 0]])
    with ebooklet.open(conn, tmp_path / "writer.blt", "w") as db:
        db["k2"] = b"v2"
        assert db.changes().push().committed
    ebooklet.gc(conn, min_age=0)
    assert ebooklet.remote_info(victim).n_keys == 1


# -- counts used for sizing ------------------------------------------------------------------


def test_a_key_count_out_of_proportion_to_the_index_is_refused_before_anything_is_allocated(remote, tmp_path):
    conn = remote.conn()
    _bytes_db(conn, tmp_path / "writer.blt", {"k": b"v"})
    edit_head(remote, conn, n_keys=1_000_000)  # one index part holds a few ten thousand keys
    with pytest.raises(ebooklet.RemoteFormatError, match="'n_keys' is 1000000, outside 0..104856"):
        ebooklet.open(conn, tmp_path / "reader.blt", "r")
    assert not (tmp_path / "reader.blt").exists()
    edit_head(remote, conn, n_keys=0, parts=[None], segments={})  # no parts: no keys
    edit_head(remote, conn, n_keys=1)
    with pytest.raises(ebooklet.RemoteFormatError, match="'n_keys' is 1, outside 0..0"):
        ebooklet.remote_info(conn)


def test_the_local_table_a_head_can_make_a_reader_allocate_is_capped(tmp_path, monkeypatch):
    conn = tmp_path / "remote" / "db"
    _bytes_db(conn, tmp_path / "writer.blt", {"k": b"v"})
    # A head with many index parts may claim many keys; what it makes a reader presize is capped.
    head = json.loads(conn.read_bytes())
    bits = 7
    edit_head(RemoteKind("folder", tmp_path), conn, part_bits=bits, n_keys=3_000_000,
              parts=[f"index/{bits}-{p}-{CID}" for p in range(2**bits)])
    monkeypatch.setattr(api, "MAX_PRESIZED_KEYS", 20_000)
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        assert len(db) == 3_000_000  # what the head says, not allocated
    assert (tmp_path / "reader.blt").stat().st_size < 1_000_000  # not ~26 MB for 3.6 M buckets
    assert head["n_keys"] == 1


# -- a malformed index part ------------------------------------------------------------------


def _replace_part(conn: pathlib.Path, entries: dict[str, Entry]) -> None:
    """Overwrite the database's only index part with one holding ``entries``."""
    [name] = json.loads(conn.read_bytes())["parts"]
    _path(conn, name).write_bytes(Part(entries).encode())


def _entry(conn: pathlib.Path, **changes: Any) -> Entry:
    [segment] = json.loads(conn.read_bytes())["segments"]
    return Entry(1_700_000_000_000_000, value_hash(b"v"), segment, 0, 1)._replace(**changes)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (lambda c: {"adb01ebc1ba3433eb043527": _entry(c), "k": _entry(c)},
         "malformed index: .*'adb01ebc1ba3433eb043527' is reserved"),
        (lambda c: {"7c40d2ea915b4f3a8e6d201": _entry(c)}, "malformed index: .*is reserved"),
        (lambda c: {"k" * 70_000: _entry(c)}, r"cannot be decoded: 70000 exceeds max_str_len\(65535\)"),
        (lambda c: {"k": _entry(c, segment="../../outside-0")}, "malformed index: .*segment names are not"),
        (lambda c: {"k": _entry(c, segment="/etc/passwd")}, "malformed index: .*segment names are not"),
        (lambda c: {"k": _entry(c, timestamp=-1)}, "malformed index: .*a timestamp is outside"),
        (lambda c: {"k": _entry(c, timestamp=2**56)}, "malformed index: .*a timestamp is outside"),
    ],
    ids=["metadata-key", "slot-key", "70-kb-key", "segment-outside", "absolute-segment",
         "negative-timestamp", "timestamp-past-year-4253"],
)  # fmt: skip
def test_a_malformed_index_part_is_a_remote_format_error(tmp_path, entries, message):
    conn = tmp_path / "remote" / "db"
    _bytes_db(conn, tmp_path / "writer.blt", {"k": b"v"})
    _replace_part(conn, entries(conn))
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        with pytest.raises(ebooklet.RemoteFormatError, match=message):
            list(db.keys())
        with pytest.raises(ebooklet.RemoteFormatError, match=message):
            db["k"]
    with booklet.open(tmp_path / "reader.blt") as raw:
        assert raw.get_metadata() is None and list(raw.keys()) == []


def test_an_index_part_that_inflates_without_limit_is_refused():
    body = zlib.compress(b"\x00" * (format.MAX_PART_BYTES + 1), 9)
    blob = b"EBKI" + checksum(body) + body
    with pytest.raises(ebooklet.RemoteFormatError, match="inflates to more than"):
        Part.decode(blob, "index/0-0-x")


# -- a remote does not decide that its readers unpickle --------------------------------------


class _Touch:
    """A pickle that, when loaded, creates a file: the harmless stand-in for os.system."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


def test_every_booklet_serializer_is_classed_as_safe_or_needing_consent():
    names = {s for s in booklet.available_serializers if s}
    assert codec.SAFE_SERIALIZERS <= names
    assert {n for n in names if codec.runs_code(n)} == {"pickle", "pickle_zstd"}
    assert codec.runs_code("dill") and not codec.runs_code("custom:my.Serializer")


@pytest.mark.parametrize("flag", ["r", "w", "c"])
def test_a_fresh_reader_of_a_pickle_remote_must_consent(remote, tmp_path, flag):
    conn = remote.conn()
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer="pickle") as db:
        db["k"] = {"any": "object"}
        db.changes().push()
    with pytest.raises(ebooklet.UnsafeSerializerError) as info:
        ebooklet.open(conn, tmp_path / "reader.blt", flag)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'pickle'" in message and "runs code chosen by whoever can write to that remote" in message
    assert "value_serializer='pickle' or allow_pickle=True" in message
    assert not (tmp_path / "reader.blt").exists()

    for name, consent in [("a.blt", {"value_serializer": "pickle"}), ("b.blt", {"allow_pickle": True})]:
        with ebooklet.open(conn, tmp_path / name, flag, **consent) as db:
            assert db["k"] == {"any": "object"}
        with ebooklet.open(conn, tmp_path / name, flag) as db:  # the local file records the consent
            assert db["k"] == {"any": "object"}


@pytest.mark.parametrize("serializer", ["pickle", "pickle_zstd"])
def test_a_head_edited_to_say_pickle_cannot_make_a_fresh_reader_run_code(remote, tmp_path, serializer):
    conn = remote.conn()
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Touch(marker))  # for pickle_zstd, it would be compressed too
    _bytes_db(conn, tmp_path / "writer.blt", {"x": payload})
    edit_head(remote, conn, value_serializer=serializer)
    with pytest.raises(ebooklet.UnsafeSerializerError, match=f"serializer '{serializer}'"):
        ebooklet.open(conn, tmp_path / "reader.blt", "r")
    # A file synced before the edit keeps its own serializer: the bytes stay bytes.
    with ebooklet.open(conn, tmp_path / "writer.blt", "r") as db:
        assert db["x"] == payload
    assert not marker.exists()
    if serializer == "pickle":
        with ebooklet.open(conn, tmp_path / "consented.blt", "r", allow_pickle=True) as db:
            db["x"]
        assert marker.exists()  # consent is what it takes


def test_an_unknown_serializer_needs_consent_and_then_says_it_is_not_installed(tmp_path):
    conn = tmp_path / "remote" / "db"
    _bytes_db(conn, tmp_path / "writer.blt", {"x": b"v"})
    edit_head(RemoteKind("folder", tmp_path), conn, value_serializer="dill")
    with pytest.raises(ebooklet.UnsafeSerializerError):
        ebooklet.open(conn, tmp_path / "reader.blt", "r")
    with pytest.raises(ebooklet.RemoteFormatError, match="serializer 'dill', which this installation"):
        ebooklet.open(conn, tmp_path / "reader.blt", "r", allow_pickle=True)
    assert not (tmp_path / "reader.blt").exists()


def test_a_serializer_that_only_parses_needs_no_consent_and_a_wrong_one_is_a_mismatch(tmp_path):
    conn = tmp_path / "remote" / "db"
    with ebooklet.open(conn, tmp_path / "writer.blt", "c", value_serializer="orjson") as db:
        db["k"] = {"a": [1]}
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "reader.blt", "r") as db:
        assert db["k"] == {"a": [1]}
    with pytest.raises(ebooklet.SerializerMismatchError, match="with serializer 'orjson', not 'pickle'"):
        ebooklet.open(conn, tmp_path / "other.blt", "r", value_serializer="pickle")


def test_the_command_line_asks_for_allow_pickle_and_reads_other_databases_without_it(tmp_path):
    pickled, plain = tmp_path / "bucket" / "pickled.blt", tmp_path / "bucket" / "plain.blt"
    with ebooklet.open(pickled, tmp_path / "p.blt", "c", value_serializer="pickle") as db:
        db["k"] = {"a": 1}
        db.changes().push()
    with ebooklet.open(plain, tmp_path / "s.blt", "c", value_serializer="str") as db:
        db["k"] = "text"
        db.changes().push()
    get, keys, pull, head, plain_get, plain_keys = ebk_all(
        tmp_path,
        ["get", "bucket/pickled.blt", "k"],
        ["keys", "bucket/pickled.blt", "--local", "mine.blt"],
        ["pull", "bucket/pickled.blt", "copy.blt"],
        ["head", "bucket/pickled.blt"],
        ["get", "bucket/plain.blt", "k"],
        ["keys", "bucket/plain.blt"],
    )
    for refused in (get, keys, pull):
        assert "stores pickled values: reading them runs code chosen by whoever can write to it. If you " \
               "trust it, run the command again with --allow-pickle" in error_line(refused)
    assert not (tmp_path / "mine.blt").exists() and not (tmp_path / "copy.blt").exists()
    assert head.code == 0 and "pickle" in head.out
    assert plain_get.out == "text\n" and plain_keys.out == "k\n"

    assert ebk(tmp_path, "get", "bucket/pickled.blt", "k", "--allow-pickle").out == '{"a": 1}\n'
    # The cache file consented to once is the user's own copy: reading it again needs no flag.
    assert ebk(tmp_path, "get", "bucket/pickled.blt", "k").out == '{"a": 1}\n'


def _part_blob(payload: dict[str, Any]) -> bytes:
    body = zlib.compress(msgpack.packb(payload, use_bin_type=True))
    return b"EBKI" + checksum(body) + body


@pytest.mark.parametrize(
    ("keys", "seg", "message"),
    [
        (["a", "a"], [0, 0], "a key appears twice"),
        (["a", 7], [0, 0], "its keys are not a list of str"),
        (["a", "b"], [0, 1], "an entry refers to a segment it does not name"),
    ],
    ids=["duplicate-key", "int-key", "segment-out-of-range"],
)
def test_an_index_part_whose_entries_do_not_add_up_is_refused(keys, seg, message):
    n = len(keys)
    payload = {"v": 1, "keys": keys, "segs": [f"seg/{CID}-0"], "ts": b"\x00" * 8 * n,
               "hash": b"\x00" * 16 * n, "seg": b"".join(s.to_bytes(4, "little") for s in seg),
               "off": b"\x00" * 8 * n, "len": b"\x00" * 4 * n}
    with pytest.raises(ebooklet.RemoteFormatError, match=message):
        Part.decode(_part_blob(payload), "index/0-0-x")
