"""Content hashes of values (format 3): in a segment of format 3 (named ``...s``) a value of
SHA256_FROM bytes or more is hashed with SHA-256, a smaller one with blake2b-128; in a
segment of an earlier format every value keeps its blake2b-128.

A database written by the last commit of format 2 (exported from the project's history, as in
test_local_upgrade) is read, verified, rewritten, compacted, damaged, conflicted and staged
into by today's code, and beside the code of format 2.
"""

from __future__ import annotations

import hashlib
import pathlib
import pickle

import pytest

import ebooklet
from ebooklet.errors import IntegrityError
from ebooklet.format import (
    FORMAT_VERSION,
    HASH_LEN,
    SHA256_FROM,
    Entry,
    Part,
    checksum,
    hash_in,
    legacy_segment,
    same_value,
    segment_name,
    value_hash,
    value_hashes,
)
from ebooklet.info import latest_head
from ebooklet.remote import connect
from ebooklet.sync.scan import Scan, plan_partitions

from .test_local_upgrade import _commit, _export, _has_history, run_old_code


def blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:16]


# --- the hash functions ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 100, SHA256_FROM - 1])
def test_values_under_the_threshold_are_hashed_with_blake2b(n):
    data = bytes(range(256)) * (n // 256) + bytes(n % 256)
    assert value_hash(data) == value_hash(data, legacy=True) == blake(data) == checksum(data)
    assert value_hashes([data]) == value_hashes([data], legacy=True) == blake(data)


@pytest.mark.parametrize("n", [SHA256_FROM, SHA256_FROM + 1, 1 << 20])
def test_values_from_the_threshold_on_are_hashed_with_sha256_in_segments_of_format_3(n):
    data = b"\x5a" * n
    assert len(value_hash(data)) == HASH_LEN
    assert value_hash(data) == sha(data) != blake(data) == value_hash(data, legacy=True)
    assert value_hashes([data, b"x"]) == sha(data) + blake(b"x")
    assert value_hashes([data, b"x"], legacy=True) == blake(data) + blake(b"x")
    assert value_hash(memoryview(data)) == sha(data)  # buffers hash like bytes


def test_a_segments_name_says_how_its_values_are_hashed():
    new, old = segment_name("18c0ffee-0123456789ab", 3), "seg/18c0ffee-0123456789ab-3"
    assert new == old + "s" and not legacy_segment(new) and legacy_segment(old)
    assert segment_name("18c0ffee-0123456789ab", 3, legacy=True) == old
    large = b"L" * SHA256_FROM
    assert hash_in(new, large) == sha(large) and hash_in(old, large) == blake(large)
    assert hash_in(new, b"small") == hash_in(old, b"small") == blake(b"small")


def test_same_value_hashes_again_only_for_a_large_value_of_an_older_segment():
    new, old = "seg/18c0ffee-0123456789ab-0s", "seg/18c0ffee-0123456789ab-0"
    large, small = b"L" * SHA256_FROM, b"s" * 100
    assert same_value(large, sha(large), sha(large), new)
    assert same_value(large, sha(large), blake(large), old)
    assert not same_value(large, sha(large), blake(large), new)  # a segment of format 3: SHA-256 only
    assert not same_value(large, sha(large), blake(large[:-1] + b"M"), old)
    assert same_value(small, blake(small), blake(small), old)
    assert not same_value(small, blake(small), sha(small), new)


# --- a database of format 2 ------------------------------------------------------------------

#: The values the old code writes, as code (the old code runs it too; 1 KiB is SHA256_FROM).
OLD_VALUES_CODE = (
    '{"small": b"s" * 100, "edge": b"e" * 1023, "from": b"f" * 1024, '
    '"mid": bytes(range(256)) * 400, "large": b"L" * (1 << 20) + b"end"}'
    ' | {f"pad{i}": bytes([i]) * 20 for i in range(10)}'
)
OLD_VALUES = eval(OLD_VALUES_CODE)  # noqa: S307 - our own literal
assert len(OLD_VALUES["from"]) == SHA256_FROM


@pytest.fixture(scope="module")
def format_2(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A folder remote (as a directory to copy) written by the last commit of format 2."""
    if not _has_history():
        pytest.skip("no git history: the last commit of format 2 cannot be exported")
    root = tmp_path_factory.mktemp("format2")
    code_dir = _export(_commit("last-format-2"), root / "old-code")
    run_old_code(code_dir, f"""
        from ebooklet import format
        assert format.FORMAT_VERSION == 2
        with ebooklet.open({str(root / "remote" / "db")!r}, {str(root / "old.blt")!r}, "n") as db:
            db.update({OLD_VALUES_CODE})
            assert db.changes().push()
    """)
    return root / "remote"


@pytest.fixture
def remote(format_2: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    import shutil

    shutil.copytree(format_2, tmp_path / "remote")
    return tmp_path / "remote" / "db"


def _index(remote: pathlib.Path) -> dict[str, Entry]:
    """Each key's entry in the latest commit, from the folder remote's index parts."""
    head = latest_head(str(remote))[1]
    objects = remote.with_name(remote.name + ".ebooklet")
    out: dict[str, Entry] = {}
    for name in filter(None, head.parts):
        out.update(Part.decode((objects / name).read_bytes(), name).items())
    return out


def _entries(remote: pathlib.Path) -> dict[str, bytes]:
    """Each key's hash in the latest commit."""
    return {k: e.hash for k, e in _index(remote).items()}


def _segments(remote: pathlib.Path) -> dict[str, str]:
    """Each key's segment in the latest commit."""
    return {k: e.segment for k, e in _index(remote).items()}


def test_the_old_database_holds_blake2b_hashes_for_every_value(remote):
    assert latest_head(str(remote))[1].version == 2
    assert _entries(remote) == {k: blake(v) for k, v in OLD_VALUES.items()}
    assert all(legacy_segment(name) for name in _segments(remote).values())


def test_a_format_2_database_reads_whole_one_by_one_and_verifies(remote, tmp_path):
    with ebooklet.open(remote, tmp_path / "bulk.blt", "r") as db:
        assert dict(db.items()) == OLD_VALUES
    with ebooklet.open(remote, tmp_path / "one.blt", "r") as db:
        assert {k: db[k] for k in OLD_VALUES} == OLD_VALUES
    report = ebooklet.verify(remote, deep=True)
    assert report.ok and report.values_checked == len(OLD_VALUES), report.problems
    head = latest_head(str(remote))[1]
    (names,) = plan_partitions(head, 1)
    assert dict(iter(Scan(connect(remote), names))) == OLD_VALUES


def test_the_same_bytes_written_again_over_entries_of_format_2_are_not_a_change(remote, tmp_path):
    """The bytes are hashed again the older way to tell (listing, pull and push agree)."""
    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        db.update(OLD_VALUES)
        assert list(db.changes().iter_changes()) == []
        assert db.changes().pull().updated == []
        assert not db.changes().push()
    assert latest_head(str(remote))[1].commit == 1
    assert _entries(remote) == {k: blake(v) for k, v in OLD_VALUES.items()}


def test_one_key_written_again_among_many_cached_is_not_a_change(remote, tmp_path):
    """With few keys touched among many cached, the comparison looks each one up (the other
    path of the local diff)."""
    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        assert dict(db.items()) == OLD_VALUES  # cached
        db["large"] = OLD_VALUES["large"]
        assert list(db.changes().iter_changes()) == []
        assert not db.changes().push()


@pytest.mark.parametrize("policy", [None, "local", "newest"])
def test_the_same_bytes_written_again_while_the_code_of_format_2_changes_them(remote, tmp_path, policy):
    """Writing the base's bytes again is no change: the other writer's change stands, with
    every policy, and makes no conflict."""
    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        db["large"] = OLD_VALUES["large"]
        _old_push(tmp_path, remote, "large", 'b"theirs" * 1000')
        db.changes().pull(on_conflict=policy)
        assert not db.changes().push()
        assert db["large"] == b"theirs" * 1000
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert db["large"] == b"theirs" * 1000


def test_writing_the_same_bytes_again_does_not_undo_another_writers_change(remote, tmp_path):
    with ebooklet.open(remote, tmp_path / "b.blt", "w") as b:
        b["large"] = b"B's change" * 200
        with ebooklet.open(remote, tmp_path / "a.blt", "w") as a:
            a["large"] = OLD_VALUES["large"]  # the same bytes again
            assert not a.changes().push()
        assert b.changes().push(on_conflict="newest").keys == ["large"]
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert db["large"] == b"B's change" * 200


def test_a_push_upgrades_to_format_3_and_keeps_the_old_hashes(remote, tmp_path):
    new = {"mid": b"m" * 5000, "added": b"a" * 3000, "tiny": b"t"}
    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        db.update(new)
        assert db.changes().push()
    head = latest_head(str(remote))[1]
    assert head.version == FORMAT_VERSION == 3
    hashes, segments = _entries(remote), _segments(remote)
    for key, value in (OLD_VALUES | new).items():
        want = value_hash(value) if key in new else blake(value)
        assert hashes[key] == want, key
        assert legacy_segment(segments[key]) == (key not in new), key
    with ebooklet.open(remote, tmp_path / "again.blt", "r") as db:
        assert dict(db.items()) == OLD_VALUES | new
    assert ebooklet.verify(remote, deep=True).ok


def test_compaction_moves_values_of_format_2_with_their_hashes_into_segments_named_so(remote, tmp_path):
    before = set(_segments(remote).values())
    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        db["small"] = b"changed"  # the old segment now holds garbage
        db["added"] = b"a" * 3000
        db.changes().push()
        assert db.compact()
    hashes, segments = _entries(remote), _segments(remote)
    assert not before & set(segments.values())  # every value moved out of the old segment
    for key in ("edge", "from", "mid", "large"):
        assert hashes[key] == blake(OLD_VALUES[key]) and legacy_segment(segments[key]), key
    assert hashes["added"] == sha(b"a" * 3000) and not legacy_segment(segments["added"])
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert dict(db.items()) == OLD_VALUES | {"small": b"changed", "added": b"a" * 3000}
    assert ebooklet.verify(remote, deep=True).ok


def test_the_last_format_2_code_refuses_a_database_of_format_3(remote, tmp_path):
    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        db["added"] = b"a" * 3000
        db.changes().push()
    code_dir = _export(_commit("last-format-2"), tmp_path / "old-code")
    run_old_code(code_dir, f"""
        import ebooklet.errors
        try:
            ebooklet.open({str(remote)!r}, {str(tmp_path / "old.blt")!r}, "r")
        except ebooklet.errors.UnsupportedFormatError as exc:
            assert "upgrade ebooklet" in str(exc).lower(), exc
        else:
            raise AssertionError("format 3 was read by the code of format 2")
    """)


@pytest.mark.parametrize("key", ["large", "from", "small"])
def test_a_damaged_value_of_a_format_2_database_is_refused(remote, tmp_path, key):
    segments = sorted((remote.with_name(remote.name + ".ebooklet") / "seg").iterdir())
    assert len(segments) == 1
    data = bytearray(segments[0].read_bytes())
    at = data.find(OLD_VALUES[key])
    assert at >= 0
    data[at + len(OLD_VALUES[key]) // 2] ^= 0x01
    segments[0].write_bytes(bytes(data))
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        with pytest.raises(IntegrityError, match="content hash"):
            db[key]
        with pytest.raises(IntegrityError, match="content hash"):
            dict(db.items())
    report = ebooklet.verify(remote, deep=True)
    assert not report.ok and any(repr(key) in p for p in report.problems)
    head = latest_head(str(remote))[1]
    with pytest.raises(IntegrityError, match="content hash"):
        dict(iter(Scan(connect(remote), plan_partitions(head, 1)[0])))


def test_a_comparison_after_a_lost_journal_takes_the_old_hashes_as_intact(remote, tmp_path, caplog):
    """After the journal is lost, the data file is compared with the remote: cached values of
    format 2 are the base's bytes, not damage to fetch again."""
    local = tmp_path / "w.blt"
    with ebooklet.open(remote, local, "w") as db:
        assert dict(db.items()) == OLD_VALUES  # cached
    (local.with_name(local.name + ".ebooklet") / "journal.log").unlink()
    with caplog.at_level("INFO", logger="ebooklet"), ebooklet.open(remote, local, "w") as db:
        assert "comparing the data file with the remote" in caplog.text  # the path under test
        assert list(db.changes().iter_changes()) == []
        assert dict(db.items()) == OLD_VALUES
    assert "damaged" not in caplog.text


def test_the_same_change_made_by_the_code_of_format_2_is_not_a_conflict(remote, tmp_path):
    """Both sides wrote the same bytes, hashed once each way: the same change."""
    value = b"n" * 4000
    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        db["from"] = value
        code_dir = _export(_commit("last-format-2"), tmp_path / "old-code")
        run_old_code(code_dir, f"""
            with ebooklet.open({str(remote)!r}, {str(tmp_path / "old.blt")!r}, "w") as db:
                db["from"] = b"n" * 4000
                assert db.changes().push()
        """)
        result = db.changes().push()  # a conflict would raise
        assert not result.committed and result.pulled == ["from"]  # already made remotely
    assert _entries(remote)["from"] == blake(value)


def test_a_stage_of_the_code_of_format_2_is_committed(remote, tmp_path):
    """Runs of version 1 (blake2b hashes) are still committed, and their values read."""
    code_dir = _export(_commit("last-format-2"), tmp_path / "old-code")
    token_file = tmp_path / "token.pickle"
    run_old_code(code_dir, f"""
        import pickle
        stage = ebooklet.stage({str(remote)!r})
        stage.update({{"staged": b"z" * 5000, "large": b"L2" * 1000}})
        with open({str(token_file)!r}, "wb") as f:
            pickle.dump(stage.close(), f)
    """)
    with open(token_file, "rb") as f:
        token = pickle.load(f)  # noqa: S301 - written by this test
    ebooklet.commit(remote, [token])
    expected = OLD_VALUES | {"staged": b"z" * 5000, "large": b"L2" * 1000}
    assert _entries(remote)["staged"] == blake(b"z" * 5000)
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert dict(db.items()) == expected
    assert ebooklet.verify(remote, deep=True).ok


def _old_push(tmp_path: pathlib.Path, remote: pathlib.Path, key: str, code: str) -> None:
    """The last code of format 2 writes ``key`` (its value as ``code``) and pushes."""
    code_dir = tmp_path / "old-code"
    if not code_dir.exists():
        _export(_commit("last-format-2"), code_dir)
    run_old_code(code_dir, f"""
        with ebooklet.open({str(remote)!r}, {str(tmp_path / "old.blt")!r}, "w") as db:
            db[{key!r}] = {code}
            assert db.changes().push()
    """)


def test_a_conflict_settled_by_a_function_reads_the_values_of_format_2(remote, tmp_path):
    seen = {}

    def settle(key, local, remote_value, base):
        seen[key] = (local, remote_value, base)
        return local + remote_value

    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        db["large"] = b"mine" * 1000
        _old_push(tmp_path, remote, "large", 'b"theirs" * 1000')
        assert db.changes().push(on_conflict=settle).keys == ["large"]
    assert seen == {"large": (b"mine" * 1000, b"theirs" * 1000, OLD_VALUES["large"])}
    assert _entries(remote)["large"] == value_hash(b"mine" * 1000 + b"theirs" * 1000)


def test_a_staged_commit_hashes_with_sha256_and_settles_against_values_of_format_2(remote, tmp_path):
    seen = {}

    def settle(key, mine, now, was):
        seen[key] = (mine, now, was)
        return mine

    stage = ebooklet.stage(remote)
    stage.update({"large": b"S" * 3000, "fresh": b"q" * 5000})
    token = stage.close()
    _old_push(tmp_path, remote, "large", 'b"theirs" * 1000')
    ebooklet.commit(remote, [token], on_conflict=settle)
    assert seen == {"large": (b"S" * 3000, b"theirs" * 1000, OLD_VALUES["large"])}
    hashes = _entries(remote)
    assert hashes["fresh"] == sha(b"q" * 5000) and hashes["large"] == sha(b"S" * 3000)
    assert ebooklet.verify(remote, deep=True).ok


def test_a_stage_and_the_code_of_format_2_making_the_same_change_do_not_conflict(remote, tmp_path):
    stage = ebooklet.stage(remote)
    stage.update({"large": b"same" * 1000})
    token = stage.close()
    _old_push(tmp_path, remote, "large", 'b"same" * 1000')
    ebooklet.commit(remote, [token])  # the same bytes, hashed each way: no ConflictError
    with ebooklet.open(remote, tmp_path / "r.blt", "r") as db:
        assert db["large"] == b"same" * 1000


def test_a_stage_of_the_code_of_format_2_and_a_push_making_the_same_change_do_not_conflict(remote, tmp_path):
    code_dir = _export(_commit("last-format-2"), tmp_path / "old-code")
    token_file = tmp_path / "token.pickle"
    run_old_code(code_dir, f"""
        import pickle
        stage = ebooklet.stage({str(remote)!r})
        stage.update({{"large": b"same" * 1000}})
        with open({str(token_file)!r}, "wb") as f:
            pickle.dump(stage.close(), f)
    """)
    with ebooklet.open(remote, tmp_path / "w.blt", "w") as db:
        db["large"] = b"same" * 1000
        assert db.changes().push().keys == ["large"]
    with open(token_file, "rb") as f:
        ebooklet.commit(remote, [pickle.load(f)])  # noqa: S301 - written by this test
    assert _entries(remote)["large"] == sha(b"same" * 1000)  # the push's entry stands


def test_the_code_of_format_2_refuses_to_commit_a_run_of_version_2(remote, tmp_path):
    stage = ebooklet.stage(remote)
    stage.update({"x": b"y" * 3000})
    token_file = tmp_path / "token.pickle"
    token_file.write_bytes(pickle.dumps(stage.close()))
    code_dir = _export(_commit("last-format-2"), tmp_path / "old-code")
    run_old_code(code_dir, f"""
        import pickle, ebooklet.errors
        token = pickle.loads(open({str(token_file)!r}, "rb").read())
        try:
            ebooklet.commit({str(remote)!r}, [token])
        except ebooklet.errors.UnsupportedFormatError as exc:
            assert "upgrade ebooklet" in str(exc).lower(), exc
        else:
            raise AssertionError("a run of version 2 was committed by the code of format 2")
    """)
