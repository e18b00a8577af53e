"""The in-flight commit record (ebooklet/sync/inflight.py): a push that never learnt whether
its commit landed is settled by the next operation, before anything else.

Each test takes the way a user meets it: a reply lost on the network (the proxy of
tests/faultproxy.py), a process killed while its head PUT was applied and its answer was on
the way, and edits made with plain booklet in between.
"""

from __future__ import annotations

import signal

import booklet
import pytest

import ebooklet

from .subprocs import conn_code, python
from .test_faults_network import commit, head_put, lose_the_commit_reply, remote_items, seed


def _landed_with_its_outcome_unknown(proxied, conn, db, **push_args) -> None:
    """Push ``db`` so that its head PUT is applied, its reply lost and the server stops
    answering: the push cannot tell whether it landed. Then the server answers again."""
    lost = lose_the_commit_reply(proxied.proxy, conn)
    with pytest.raises(ebooklet.CommitUnknownError):
        db.changes().push(**push_args)
    proxied.proxy.clear_rules()
    assert lost.fired.is_set()


def test_push_itself_settles_a_commit_whose_outcome_was_unknown(moto_proxied, tmp_path):
    # A's commit adds "new"; B deletes it. A push that did not settle A's commit first would
    # see "new" as a local change still, and add it again over B's delete.
    conn = moto_proxied.conn()
    with ebooklet.open(conn, tmp_path / "seed.blt", "c") as db:
        db["old"] = b"0"
        db.changes().push()
    with ebooklet.open(conn, tmp_path / "a.blt", "w", remote_lock="none") as a:
        a["new"] = b"1"
        _landed_with_its_outcome_unknown(moto_proxied, conn, a)
        with ebooklet.open(conn, tmp_path / "b.blt", "w") as b:
            assert b["new"] == b"1"  # A's commit did land
            del b["new"]
            assert b.changes().push().deleted == ["new"]
        result = a.changes().push()  # the first operation after the lost reply
        assert not result.committed and result.keys == []  # nothing left to push
        assert a.changes().pull().deleted == ["new"]
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r") as fresh:
        assert dict(fresh.items()) == {"old": b"0"}


@pytest.mark.parametrize("operation", ["push", "pull", "changes"])
def test_a_plain_booklet_delete_made_while_a_commits_outcome_was_unknown_is_kept(
    moto_proxied, tmp_path, operation
):
    # A's landed commit replaces the index part that holds "gone"; "gone" is then deleted with
    # plain booklet. Settling the commit must record that delete before it adopts the new
    # base, whose part would otherwise read "gone" as never fetched (and fetch it again).
    conn = moto_proxied.conn()
    with ebooklet.open(conn, tmp_path / "a.blt", "n", value_serializer="bytes", remote_lock="none") as a:
        a.update({"gone": b"g", "kept": b"k"})
        a.changes().push()
        a["kept"] = b"k2"
        _landed_with_its_outcome_unknown(moto_proxied, conn, a)
    with booklet.open(tmp_path / "a.blt", "w") as raw:
        del raw["gone"]
    with ebooklet.open(conn, tmp_path / "a.blt", "w") as a:
        # The first operation after the lost reply settles the commit.
        if operation == "pull":
            a.changes().pull()
        elif operation == "changes":
            changes = list(a.changes().iter_changes())
            assert [(c.key, c.local) for c in changes] == [("gone", "deleted")]
        assert a.changes().push().deleted == ["gone"]
        assert "gone" not in a and dict(a.items()) == {"kept": b"k2"}
        assert list(a.changes().iter_changes()) == []
    with ebooklet.open(conn, tmp_path / "fresh.blt", "r") as fresh:
        assert dict(fresh.items()) == {"kept": b"k2"}


def test_a_kill_after_the_head_put_was_applied_never_undoes_a_later_delete(proxied, tmp_path):
    # The victim's head PUT reaches the server, and the victim is killed before the answer
    # arrives: only the record written before the PUT tells the next session that its changes
    # were committed. Without it, "k1" is still a local change, in conflict with another
    # writer's later delete, and on_conflict="local" would write it back.
    conn = proxied.conn()
    seed(conn, tmp_path / "seed.blt", {"k": "k0", "other": "o0"})
    local = tmp_path / "victim.blt"
    with ebooklet.open(conn, local, "w", remote_lock="none") as victim:
        assert victim["k"] == "k0"
    held = proxied.proxy.hold(head_put(conn), where="after")
    proc = python(f"""
        import ebooklet
        db = ebooklet.open({conn_code(conn)}, {str(local)!r}, "w", remote_lock="none")
        db["k"] = "k1"
        db.changes().push()
        print("the push returned", flush=True)
    """)
    try:
        assert held.reached.wait(60), proc.stderr.read() if proc.poll() is not None else "no head PUT"
        # The server has applied the PUT; its answer is held by the proxy.
        assert ebooklet.remote_info(proxied.direct(conn)).commit == 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        proxied.proxy.remove_rule(held)
    commit(proxied.direct(conn), tmp_path / "b.blt", deletes=("k",))
    with ebooklet.open(proxied.direct(conn), local, "w", remote_lock="none") as victim:
        assert victim.changes().push(on_conflict="local").keys == []
        assert victim.changes().pull().deleted == ["k"]
    assert remote_items(proxied.direct(conn), tmp_path / "r.blt") == {"other": "o0"}
