"""History and verify tell the truth: every retained commit is checked, a forged chain ends
with an error, ``at=`` opens exactly what ``log()`` lists, and each commit keeps its author."""

from __future__ import annotations

import json
import pathlib

import pytest

import ebooklet
from ebooklet.format import log_name


def _three_commits(tmp_path: pathlib.Path, retention: int = 10) -> tuple[pathlib.Path, list]:
    conn = tmp_path / "remote" / "db.blt"
    for i, name in enumerate(["alice", "bob", "carol"]):
        with ebooklet.open(conn, tmp_path / f"{name}.blt", "c", value_serializer="json") as db:
            if i == 0:
                db.set_retention(commits=retention, days=0)
            db[f"k{i}"] = i
            db.changes().push()
    with ebooklet.open(conn, tmp_path / "log.blt", "r") as db:
        log = db.log()
    return conn, log


def _log_path(conn: pathlib.Path, number: int, commit_id: str) -> pathlib.Path:
    return conn.with_name(conn.name + ".ebooklet") / log_name(number, commit_id)


def test_verify_reports_a_missing_log_object_and_checks_every_other_commit(tmp_path):
    conn, log = _three_commits(tmp_path)
    middle = log[1]
    _log_path(conn, middle.number, middle.commit_id).unlink()
    report = ebooklet.verify(conn)
    assert not report.ok
    assert report.commits_checked == 3
    assert any(f"log object of commit {middle.number}" in p and "missing" in p for p in report.problems)
    assert len(report.problems) == 1


def test_verify_reports_a_truncated_log_object_and_goes_on(tmp_path):
    conn, log = _three_commits(tmp_path)
    path = _log_path(conn, log[2].number, log[2].commit_id)
    path.write_bytes(path.read_bytes()[:20])
    report = ebooklet.verify(conn)  # no exception
    assert report.commits_checked == 3
    assert [p for p in report.problems if log_name(log[2].number, log[2].commit_id) in p]


def test_a_log_object_that_names_itself_as_its_parent_ends_with_an_error(tmp_path):
    conn, log = _three_commits(tmp_path)
    newest, middle = log[0], log[1]
    path = _log_path(conn, middle.number, middle.commit_id)
    forged = json.loads(path.read_bytes())
    forged["parent"] = forged["commit_id"]  # a loop
    path.write_bytes(json.dumps(forged).encode())
    # The parent's log object is named after commit 1 but now names commit 2: refused.
    oldest = log[2]
    _log_path(conn, oldest.number, oldest.commit_id).unlink()
    _log_path(conn, oldest.number, middle.commit_id).write_bytes(json.dumps(forged).encode())
    with pytest.raises(ebooklet.RemoteError):
        ebooklet.open(conn, tmp_path / "old.blt", "r", at=1).close()
    with ebooklet.open(conn, tmp_path / "d.blt", "r") as db:
        assert db.diff(newest.number - 1) is not None
    assert not ebooklet.verify(conn).ok


def test_at_opens_exactly_the_commits_log_lists(tmp_path):
    conn, _ = _three_commits(tmp_path, retention=1)
    with ebooklet.open(conn, tmp_path / "w.blt", "r") as db:
        assert [c.number for c in db.log()] == [3]
    with pytest.raises(ebooklet.RemoteNotFoundError, match="not kept"):
        ebooklet.open(conn, tmp_path / "old.blt", "r", at=2).close()  # still there before gc
    with pytest.raises(ebooklet.RemoteNotFoundError, match="does not exist: the latest is 3"):
        ebooklet.open(conn, tmp_path / "new.blt", "r", at=99).close()
    with ebooklet.open(conn, tmp_path / "cur.blt", "r", at=3) as db:
        assert sorted(db) == ["k0", "k1", "k2"]


def test_each_commit_keeps_its_author(tmp_path, monkeypatch):
    conn = tmp_path / "remote" / "db.blt"
    for i, author in enumerate(["alice", "bob", "carol"]):
        monkeypatch.setattr("ebooklet.sync.push._author", lambda author=author: author)
        with ebooklet.open(conn, tmp_path / f"{author}.blt", "c", value_serializer="json") as db:
            db[f"k{i}"] = i
            db.changes().push()
    with ebooklet.open(conn, tmp_path / "log.blt", "r") as db:
        assert [(c.number, c.author) for c in db.log()] == [(3, "carol"), (2, "bob"), (1, "alice")]


def test_a_log_object_holding_another_commit_is_refused(tmp_path):
    conn, log = _three_commits(tmp_path)
    newest, oldest = log[0], log[2]
    # The log object of commit 1 replaced by the head of commit 3: at=1 would open the wrong data.
    _log_path(conn, oldest.number, oldest.commit_id).write_bytes(
        _log_path(conn, newest.number, newest.commit_id).read_bytes()
    )
    with pytest.raises(ebooklet.RemoteFormatError, match="not the commit it is named after"):
        ebooklet.open(conn, tmp_path / "old.blt", "r", at=1)
    assert any("not the commit it is named after" in p for p in ebooklet.verify(conn).problems)
