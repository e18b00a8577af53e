"""The fault campaign (benchmarks/campaign.py): its judge of the final state, and a short run."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The judge is campaign_check.py, which campaign.py runs after the writers stop.
_spec = importlib.util.spec_from_file_location("campaign_check", ROOT / "benchmarks" / "campaign_check.py")
campaign = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("campaign_check", campaign)  # dataclasses look their module up
_spec.loader.exec_module(campaign)

Push = campaign.Push


def push(writer, pid, t0, writes=None, deletes=(), commit=None, t1=None, merges=None):
    """A journaled push: acknowledged with ``commit`` (what it carried), or never (commit None)."""
    writes = dict(writes or {})
    p = Push(writer, pid, 1, t0, "local", writes, list(deletes), dict(merges or {}))
    p.t1 = t1 if t1 is not None else t0 + 1
    if commit is not None:
        written = sorted(k for k in writes if not (merges and merges.get(k) == [None]))
        p.ack = {"committed": True, "commit": commit, "keys": written, "deleted": sorted(deletes)}
    return p


def judge(pushes, final, ops=None):
    return campaign.judge(["k"], {p.pid: p for p in pushes}, ops or {}, final)


SEED = push("seed", "seed", 0.0, {"k": "seed-k"}, commit=1)


def test_the_judge_takes_the_last_acknowledged_commit_and_finds_a_lost_write():
    a = push("1", "1.1.1", 10.0, {"k": "w1.1-1"}, commit=2)
    assert judge([SEED, a], {"k": "w1.1-1"}).lost == []
    assert len(judge([SEED, a], {"k": "seed-k"}).lost) == 1
    assert len(judge([SEED, a], {"k": None}).lost) == 1


def test_the_judge_finds_a_resurrected_delete():
    b = push("2", "2.1.1", 20.0, deletes=["k"], commit=3)
    a = push("1", "1.1.1", 10.0, {"k": "w1.1-1"}, commit=2)
    assert judge([SEED, a, b], {"k": None}).resurrected == []
    assert len(judge([SEED, a, b], {"k": "w1.1-1"}).resurrected) == 1


def test_the_judge_allows_an_unacknowledged_push_that_may_have_landed_later():
    a = push("1", "1.1.1", 10.0, {"k": "w1.1-1"}, commit=2)
    later = push("2", "2.1.1", 11.0, {"k": "w2.1-1"}, t1=12.0)
    verdict = judge([SEED, a, later], {"k": "w2.1-1"})
    assert (verdict.lost, verdict.ambiguous) == ([], 1)
    earlier = push("2", "2.1.1", 1.0, {"k": "w2.1-1"}, t1=2.0)  # over before a's push began
    assert len(judge([SEED, a, earlier], {"k": "w2.1-1"}).lost) == 1


def test_the_judge_finds_a_stale_value_committed_again_over_a_knowing_delete():
    # Issue 8 defect 2: A's push lands but is never acknowledged; B reads A's value and deletes
    # the key (acknowledged); A's next push commits its stale value again, acknowledged.
    a1 = push("1", "1.1.1", 10.0, {"k": "w1.1-1"}, t1=11.0)
    b = push("2", "2.1.1", 20.0, deletes=["k"], commit=3)
    a2 = push("1", "1.1.2", 30.0, {"k": "w1.1-1"}, commit=4)
    ops = {"2": [{"t": 15.0, "key": "k", "had": "w1.1-1", "new": None}]}
    verdict = judge([SEED, a1, b, a2], {"k": "w1.1-1"}, ops)
    assert len(verdict.resurrected) == 1 and "knowingly" in verdict.resurrected[0]
    assert judge([SEED, a1, b, a2], {"k": "w1.1-1"}).resurrected == []  # B never saw it: legal


def test_the_judge_wants_a_conflict_functions_value_where_one_was_made():
    a = push("1", "1.1.1", 10.0, {"k": "w1.1-1"}, commit=2, merges={"k": ["w1.1-m2"]})
    assert judge([SEED, a], {"k": "w1.1-m2"}).lost == []
    assert len(judge([SEED, a], {"k": "w1.1-1"}).lost) == 1  # issue 8 defect 4


def test_the_judge_tells_a_commit_that_landed_though_its_push_reported_nothing_committed():
    a = push("1", "1.1.1", 10.0, {"k": "w1.1-1"}, commit=2)
    b = push("1", "1.1.2", 20.0, deletes=["k"])
    b.ack = {"committed": False, "commit": None, "keys": [], "deleted": []}  # issue 8 defect 1
    verdict = judge([SEED, a, b], {"k": None})
    assert (verdict.lost, len(verdict.unrecognised)) == ([], 1)


def test_the_judge_reports_a_commit_number_acknowledged_twice():
    a = push("1", "1.1.1", 10.0, {"k": "w1.1-1"}, commit=2)
    b = push("2", "2.1.1", 10.0, {"k": "w2.1-1"}, commit=2)
    assert judge([SEED, a, b], {"k": "w2.1-1"}).twice == {2: ["1.1.1", "2.1.1"]}


@pytest.mark.slow
def test_a_short_fault_campaign_loses_and_resurrects_nothing(tmp_path):
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "campaign.py"), "--server", "moto",
         "--minutes", "0.75", "--seed", "8", "--kill-every", "8", "--grace", "20",
         "--workdir", str(tmp_path / "work"), "--json", str(summary_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert summary_path.exists(), proc.stderr[-3000:]
    s = json.loads(summary_path.read_text())
    # The campaign did what it is for: faults of every kind, kills, commits.
    assert set(s["faults"]) >= {"500", "503", "reset", "truncate", "lost_reply"}, s["faults"]
    assert s["kills"] >= 1 and s["pushes_committed"] >= 10, proc.stdout
    # An acknowledged write is never lost (nor made unreadable), a delete never undone, and
    # a push that says it committed nothing did not.
    figures = ("lost", "read_errors", "objects_missing", "resurrected", "unrecognised_commits")
    assert {f: s[f] for f in figures} == dict.fromkeys(figures, 0), proc.stdout
    assert s["non_ebooklet_exceptions"] == 0, proc.stdout
