"""Staged commits: ebooklet.stage() on any process, ebooklet.commit() publishing many stages
in one conditional commit (docs/scaling.rst)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import ebooklet
import ebooklet.format.run as runfmt
import ebooklet.sync.stage as stagemod
import ebooklet.sync.staged as staged
from ebooklet.format import HASH_LEN
from ebooklet.remote import connect
from ebooklet.settings import override
from tests.faults import faulty_remote
from tests.subprocs import conn_code, python


def create(conn, path, items: dict[str, Any] | None = None, serializer: str = "orjson") -> None:
    with ebooklet.open(conn, path, "c", value_serializer=serializer) as db:
        db.update(items or {"seed": 0})
        assert db.changes().push().committed


def remote_items(conn, path) -> dict[str, Any]:
    with ebooklet.open(conn, path, "r") as db:
        return dict(db.items())


def names_of(conn, stage_id: str) -> list[str]:
    remote = connect(conn)
    try:
        return [k for k in remote.transport.list(remote.prefix) if stage_id in k]
    finally:
        remote.transport.close()


def head_commit(conn) -> int:
    return ebooklet.remote_info(conn).commit


# -- round trips -----------------------------------------------------------------------------


def test_staged_writes_from_several_stages_are_one_commit_and_later_tokens_win(remote, tmp_path, monkeypatch):
    # Small runs and blocks: several runs per stage, several blocks per run.
    monkeypatch.setattr(stagemod, "RUN_ENTRIES", 70)
    monkeypatch.setattr(runfmt, "BLOCK_ENTRIES", 16)
    conn = remote.conn()
    create(conn, tmp_path / "w.blt", {"seed": 0, "gone": 1, "kept": 2})
    before = head_commit(conn)
    with ebooklet.stage(conn) as a:
        a.update({f"k{i}": i for i in range(200)})
        a["twice"] = "first"
        a["twice"] = "second"  # the stage's own later write wins
        del a["gone"]
        del a["never-there"]
    b = ebooklet.stage(conn)
    b.update((f"k{i}", -i) for i in range(150, 250))
    token_b = b.close()
    assert len(a.token.runs) > 1
    result = ebooklet.commit(conn, [a.token, token_b])
    assert result.committed and result.commit == before + 1
    assert result.deleted == ["gone"]
    assert len(result.keys) == 251
    got = remote_items(conn, tmp_path / "r.blt")
    want = {"seed": 0, "kept": 2, "twice": "second"}
    want |= {f"k{i}": i for i in range(150)} | {f"k{i}": -i for i in range(150, 250)}
    assert got == want
    assert ebooklet.verify(conn, deep=True)
    # The runs are read once: gone after the commit; segments only referenced ones remain.
    assert not [n for n in names_of(conn, a.token.stage) if "/run/" in n]


def test_a_staged_commit_splits_the_index_into_parts(remote, tmp_path):
    conn = remote.conn()
    create(conn, tmp_path / "w.blt")
    tokens = []
    for w in range(2):
        with ebooklet.stage(conn) as s:
            s.update((f"key-{w}-{i:06d}", i) for i in range(15_000))
        tokens.append(s.token)
    ebooklet.commit(conn, tokens)
    info = ebooklet.remote_info(conn)
    assert info.n_keys == 30_001 and info.n_index_parts >= 2
    with ebooklet.open(conn, tmp_path / "r.blt", "r") as db:
        assert db["key-1-014999"] == 14999 and db["key-0-000000"] == 0 and len(db) == 30_001
    assert ebooklet.verify(conn, deep=True)


def test_values_are_checked_and_refused_as_a_database_write_would_be(tmp_path):
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt")
    with ebooklet.stage(conn) as s, pytest.raises(ebooklet.SerializationError):
        s["a"] = object()
    with pytest.raises(ebooklet.KeyTypeError), ebooklet.stage(conn) as s:
        s[1] = 1  # type: ignore[index]
    with pytest.raises(ebooklet.RemoteNotFoundError, match="create it first"):
        ebooklet.stage(tmp_path / "remote" / "missing")


def test_an_exception_inside_the_block_discards_the_uploads(tmp_path, monkeypatch):
    monkeypatch.setattr(stagemod, "RUN_ENTRIES", 10)
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt")
    with pytest.raises(RuntimeError), ebooklet.stage(conn) as s:
        s.update({f"k{i}": i for i in range(50)})  # five runs uploaded already
        raise RuntimeError("the job failed")
    assert names_of(conn, s.id) == []
    with pytest.raises(ebooklet.ClosedError):
        s["late"] = 1


def test_tokens_pickle_and_commit_after_the_round_trip(tmp_path):
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt")
    with ebooklet.stage(conn) as s:
        s["a"] = 1
    token = pickle.loads(pickle.dumps(s.token))
    assert token == s.token and len(pickle.dumps(token)) < 1000
    ebooklet.commit(conn, [token])
    assert remote_items(conn, tmp_path / "r.blt") == {"seed": 0, "a": 1}


def test_a_local_writer_pulls_the_staged_keys_and_pushes_beside_them(tmp_path):
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt")
    with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
        with ebooklet.stage(conn) as s:
            s.update({"staged": 1})
        db["local"] = 2
        ebooklet.commit(conn, [s.token])
        assert db.changes().push().committed  # rebases over the staged commit
        assert db["staged"] == 1
    assert remote_items(conn, tmp_path / "r.blt") == {"seed": 0, "staged": 1, "local": 2}


# -- conflicts -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy, want", [
    (None, None), ("local", "staged"), ("remote", "theirs"),
    (lambda key, staged, remote, base: f"{staged}+{remote}+{base}", "staged+theirs+0"),
])
def test_keys_changed_remotely_since_the_stage_opened_are_settled_by_on_conflict(tmp_path, policy, want):
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt", {"k": 0, "other": 0})
    s = ebooklet.stage(conn)
    s["k"] = "staged"
    s["mine"] = 1
    token = s.close()
    with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
        db["k"] = "theirs"
        db["other"] = "theirs"  # changed remotely, but not staged: no conflict
        db.changes().push()
    if want is None:
        with pytest.raises(ebooklet.ConflictError, match="'k'"):
            ebooklet.commit(conn, [token])
        assert remote_items(conn, tmp_path / "r0.blt")["k"] == "theirs"
        return
    ebooklet.commit(conn, [token], on_conflict=policy)
    got = remote_items(conn, tmp_path / "r.blt")
    assert got == {"k": want, "other": "theirs", "mine": 1}


def test_a_key_written_before_the_stage_opened_is_no_conflict(tmp_path):
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt", {"k": 0})
    with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
        db["k"] = 1
        db.changes().push()
    with ebooklet.stage(conn) as s:
        s["k"] = 2
    with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
        db["z"] = 1
        db.changes().push()  # the remote moves on, on another key
    ebooklet.commit(conn, [s.token])
    assert remote_items(conn, tmp_path / "r.blt") == {"k": 2, "z": 1}


# -- garbage collection ----------------------------------------------------------------------


def test_gc_collects_a_stage_never_committed_and_its_commit_then_refuses(s3_remote, tmp_path):
    conn = s3_remote.conn()
    create(conn, tmp_path / "w.blt")
    with ebooklet.stage(conn) as s:
        s.update({f"k{i}": i for i in range(100)})
    kept = ebooklet.gc(conn)  # the default min_age: a stage in progress is never touched
    assert not [n for n in kept.removed if s.token.stage in n] and kept.too_young >= 2
    report = ebooklet.gc(conn, min_age=0)
    removed = [n for n in report.removed if s.token.stage in n]
    assert sorted(removed) == sorted(s.token.names)
    assert names_of(conn, s.token.stage) == []
    with pytest.raises(ebooklet.SyncError, match="Stage those writes again"):
        ebooklet.commit(conn, [s.token])
    assert remote_items(conn, tmp_path / "r.blt") == {"seed": 0}


def test_a_stage_older_than_gcs_safe_age_by_the_stores_clock_is_not_committed(tmp_path):
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt")
    with ebooklet.stage(conn) as s:
        s["a"] = 1
    before = head_commit(conn)
    # A safe age shorter than the commit margin: every upload counts as too old.
    with override(gc_min_age=1.0), pytest.raises(ebooklet.SyncError, match="hours old by the store's clock"):
        ebooklet.commit(conn, [s.token])
    assert head_commit(conn) == before
    ebooklet.commit(conn, [s.token])
    assert remote_items(conn, tmp_path / "r.blt") == {"seed": 0, "a": 1}


# -- hostile runs ----------------------------------------------------------------------------


def _replace(conn, name: str, data: bytes) -> None:
    remote = connect(conn)
    remote.transport.put(remote.prefix + name, data, "overwrite")
    remote.transport.close()


def _get(conn, name: str) -> bytes:
    remote = connect(conn)
    try:
        return remote.transport.get(remote.prefix + name).data
    finally:
        remote.transport.close()


def _run_of(token, db, keys, segs=None, offs=None, lens=None, stage=None) -> bytes:
    order = runfmt.key_order(keys)
    n = len(keys)
    return runfmt.encode_run(db, stage or token.stage, 0, keys, order, [1] * n, [b"h" * HASH_LEN] * n,
                             segs or [0] * n, offs or [0] * n, lens or [1] * n)


@pytest.mark.parametrize("damage", ["truncated", "cut-block", "unsorted", "duplicate", "reserved",
                                    "other-stage",
                                    "past-segment", "foreign-segment"])
def test_hostile_runs_are_refused_with_remote_format_error(tmp_path, damage):
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt")
    with ebooklet.stage(conn) as s:
        s.update({"a": 1, "b": 2})
    token = s.token
    run = token.runs[0]
    blob = _get(conn, run)
    keys = ["x", "y"]
    order = runfmt.key_order(keys)
    bad = {
        "truncated": lambda: blob[: len(blob) // 2],
        "cut-block": lambda: blob[:-3],
        "unsorted": lambda: runfmt.encode_run(token.db, token.stage, 0, keys[::-1] if order[0] < order[1]
                                              else keys, sorted(order), [1, 1], [b"h" * 16] * 2,
                                              [0, 0], [0, 0], [1, 1]),
        "duplicate": lambda: _run_of(token, token.db, ["x", "x"]),
        "reserved": lambda: _run_of(token, token.db, ["adb01ebc1ba3433eb043527"]),
        "other-stage": lambda: _run_of(token, token.db, ["x"], stage="1-000000000000"),
        "past-segment": lambda: _run_of(token, token.db, ["x"], offs=[10**6]),
        "foreign-segment": lambda: _run_of(token, token.db, ["x"], segs=[5]),
    }[damage]()
    _replace(conn, run, bad)
    before = head_commit(conn)
    with pytest.raises(ebooklet.RemoteFormatError):
        ebooklet.commit(conn, [token])
    assert head_commit(conn) == before


# -- faults ----------------------------------------------------------------------------------


def _puts(conn, kind):
    return lambda r: r.method == "PUT" and r.key.startswith(f"{conn.db_key}.ebooklet/{kind}/")


def test_a_lost_reply_to_the_head_put_is_recognised_as_committed(proxied, tmp_path):
    conn = proxied.conn()
    create(proxied.direct(conn), tmp_path / "w.blt")
    with ebooklet.stage(conn) as s:
        s.update({f"k{i}": i for i in range(20)})
    before = head_commit(proxied.direct(conn))
    rule = proxied.proxy.add_rule(lambda r: r.method == "PUT" and r.key == conn.db_key, "lost_reply")
    result = ebooklet.commit(conn, [s.token])
    assert rule.hits == 1
    assert result.committed and result.commit == before + 1
    assert head_commit(proxied.direct(conn)) == before + 1
    assert len(remote_items(proxied.direct(conn), tmp_path / "r.blt")) == 21


@pytest.mark.parametrize("fault, kind", [("503", "seg"), ("reset", "seg"), ("reset", "run"), ("500", "run"),
                                         ("lost_reply", "seg"), ("lost_reply", "run")])
def test_faults_on_stage_uploads_are_retried(proxied, tmp_path, fault, kind):
    conn = proxied.conn(retries=3)
    create(proxied.direct(conn), tmp_path / "w.blt")
    rule = proxied.proxy.add_rule(_puts(conn, kind), fault, times=1)
    with ebooklet.stage(conn) as s:
        s.update({f"k{i}": "v" * 100 for i in range(300)})
    assert rule.hits == 1
    ebooklet.commit(conn, [s.token])
    assert len(remote_items(proxied.direct(conn), tmp_path / "r.blt")) == 301


def test_a_failed_stage_upload_fails_close_and_leaves_nothing_committable(proxied, tmp_path):
    conn = proxied.conn(retries=0)
    create(proxied.direct(conn), tmp_path / "w.blt")
    proxied.proxy.add_rule(_puts(conn, "run"), "503", times=None)
    s = ebooklet.stage(conn)
    s.update({"a": 1})
    with pytest.raises(ebooklet.RemoteError):
        s.close()
    assert s.token is None
    proxied.proxy.clear_rules()
    assert names_of(proxied.direct(conn), s.id) == []


def test_a_head_put_that_fails_commits_nothing_and_the_commit_can_be_retried(proxied, tmp_path):
    conn = proxied.conn(retries=0)
    create(proxied.direct(conn), tmp_path / "w.blt")
    with ebooklet.stage(conn) as s:
        s["a"] = 1
    before = head_commit(proxied.direct(conn))
    proxied.proxy.add_rule(lambda r: r.method == "PUT" and r.key == conn.db_key, "503")
    with pytest.raises(ebooklet.RemoteError):
        ebooklet.commit(conn, [s.token])
    assert head_commit(proxied.direct(conn)) == before
    ebooklet.commit(conn, [s.token])
    assert remote_items(proxied.direct(conn), tmp_path / "r.blt") == {"seed": 0, "a": 1}


# -- processes -------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_staged_commits_racing_a_local_writers_pushes_lose_nothing(seaweedfs_server, tmp_path):
    bucket = seaweedfs_server.make_bucket()
    conn = ebooklet.S3Connection(seaweedfs_server.access_key_id, seaweedfs_server.access_key,
                                 "dbs/race", bucket, endpoint_url=seaweedfs_server.endpoint_url)
    create(conn, tmp_path / "w.blt")
    stagers = [python(f"""
        import ebooklet
        conn = {conn_code(conn)}
        for round in range(3):
            with ebooklet.stage(conn) as s:
                s.update({{f"s{w}-{{round}}-{{i}}": i for i in range(300)}})
            print(ebooklet.commit(conn, [s.token]).commit)
    """) for w in range(2)]
    local = python(f"""
        import ebooklet
        with ebooklet.open({conn_code(conn)}, {str(tmp_path / "w.blt")!r}, "w") as db:
            for i in range(15):
                db[f"local-{{i}}"] = i
                assert db.changes().push().committed
    """)
    for child in [*stagers, local]:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    got = remote_items(conn, tmp_path / "r.blt")
    want = {"seed": 0} | {f"local-{i}": i for i in range(15)}
    want |= {f"s{w}-{r}-{i}": i for w in range(2) for r in range(3) for i in range(300)}
    assert got == want
    assert ebooklet.verify(conn, deep=True)


# -- identity and memory ---------------------------------------------------------------------


def test_a_token_for_a_database_since_replaced_is_refused(tmp_path):
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt")
    with ebooklet.stage(conn) as s:
        s["a"] = 1
    with ebooklet.open(conn, tmp_path / "w.blt", "w") as db:
        db.delete_remote()
        db.changes().push()  # a new database (a new uuid) at the same key
    with pytest.raises(ebooklet.SyncError, match="another database"):
        ebooklet.commit(conn, [s.token])


def test_the_commit_reads_runs_block_by_block_while_it_writes_parts(tmp_path, monkeypatch):
    """Runs are streamed: when the first index part goes up, each run has been read at most
    two blocks deep (the block in use and the one fetched ahead), not whole."""
    monkeypatch.setattr(runfmt, "BLOCK_ENTRIES", 16)
    monkeypatch.setattr(staged, "bits_for", lambda *args: 3)  # eight parts for few keys
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt")
    tokens = []
    for w in range(3):
        with ebooklet.stage(conn) as s:
            s.update({f"k{w}-{i}": i for i in range(800)})
        tokens.append(s.token)
    blocks_read: list[str] = []
    at_first_part: list[int] = []
    real_build = staged.build_head

    def build_head(*args: Any) -> Any:
        emit = args[7]

        def first_emit(*a: Any) -> None:
            if not at_first_part:
                at_first_part.append(len(blocks_read))
            emit(*a)

        return real_build(*args[:7], first_emit, *args[8:])

    monkeypatch.setattr(staged, "build_head", build_head)
    remote, transport = faulty_remote(conn)
    inner_get_range = transport.get_range

    def get_range(key: str, start: int, length: int) -> bytes:
        if "/run/" in key:
            blocks_read.append(key)
        return inner_get_range(key, start, length)

    monkeypatch.setattr(transport, "get_range", get_range)
    ebooklet.commit(remote, tokens)
    assert len(blocks_read) == 3 * 800 // 16  # every block, once
    # Part 0's entries fill about an eighth of each run: their blocks, the block after them
    # (where part 1 starts) and one fetched ahead.
    first = [sum(1 for k in runfmt.key_order([f"k{w}-{i}" for i in range(800)]) if k >> 61 == 0)
             for w in range(3)]
    assert at_first_part and at_first_part[0] <= sum(n // 16 + 2 for n in first) < len(blocks_read) // 2
    assert len(remote_items(conn, tmp_path / "r.blt")) == 2401


def test_a_run_whose_header_is_longer_than_the_first_read_commits(tmp_path, monkeypatch):
    monkeypatch.setattr(runfmt, "BLOCK_ENTRIES", 4)  # 1,000 blocks: a header of about 30 KB
    conn = tmp_path / "remote" / "db"
    create(conn, tmp_path / "w.blt")
    with ebooklet.stage(conn) as s:
        s.update({f"k{i}": i for i in range(4000)})
    (run,) = s.token.runs
    assert runfmt.header_length(_get(conn, run), run) > staged.HEADER_READ
    ebooklet.commit(conn, [s.token])
    assert len(remote_items(conn, tmp_path / "r.blt")) == 4001
