"""A Hypothesis state machine: two clients and a remote, checked against plain dicts.

The model keeps, per client, its local view and its base (the remote as of its last sync),
and the remote itself; every rule applies the documented sync semantics to those dicts and
the real databases must agree after every step.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile

import booklet
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import ebooklet

from .faults import faulty_remote

KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.integers(0, 5)
CLIENTS = st.sampled_from([0, 1])
GONE = object()


def _merge(key, local, remote, base):
    if local is ebooklet.DELETED:
        return remote
    if remote is ebooklet.DELETED:
        return local
    return max(local, remote)


POLICIES = st.sampled_from([None, "local", "remote", "merge"])


def _model_resolve(policy, local, remote):
    if policy == "local":
        return local
    if policy == "remote":
        return remote
    if local is GONE:
        return remote
    if remote is GONE:
        return local
    return max(local, remote)


class TwoClients(RuleBasedStateMachine):
    """Pushes pass ``max_delete=None``: the model deletes keys with plain booklet on purpose,
    which the guard against mass deletes would otherwise stop (it has tests of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="ebooklet-model-"))
        self.conn = self.tmp / "remote" / "db"
        with ebooklet.open(self.conn, self.tmp / "seed.blt", "c", value_serializer="pickle") as seed:
            seed["a"] = 0
            seed.changes().push()
        self.remote = {"a": 0}
        self.local = [dict(self.remote), dict(self.remote)]
        self.base = [dict(self.remote), dict(self.remote)]
        self.paths = [self.tmp / f"c{i}.blt" for i in range(2)]
        # Each client talks to the remote through a transport that can lose replies.
        self.remotes = [faulty_remote(self.conn) for _ in range(2)]
        self.dbs = [self._open(c) for c in range(2)]
        self.checks = 0
        self.fresh = 0

    def teardown(self) -> None:
        for db in self.dbs:
            db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _changes(self, before: dict, after: dict) -> dict:
        keys = set(before) | set(after)
        return {k: after.get(k, GONE) for k in keys if before.get(k, GONE) != after.get(k, GONE)}

    def _conflicts(self, c: int) -> tuple[dict, dict, set]:
        lc = self._changes(self.base[c], self.local[c])
        rc = self._changes(self.base[c], self.remote)
        return lc, rc, {k for k in set(lc) & set(rc) if lc[k] != rc[k]}

    def _pushed(self, c: int, lc: dict, rc: dict, conflicts: set, policy) -> None:
        """The model after client ``c`` pushed its changes ``lc`` over the remote's ``rc``."""
        for key, value in lc.items():
            if key in conflicts:
                value = _model_resolve(policy, value, rc[key])
            if value is GONE:
                self.remote.pop(key, None)
            else:
                self.remote[key] = value
        self.local[c] = dict(self.remote)
        self.base[c] = dict(self.remote)
        self._check_remote()

    @staticmethod
    def _policy(policy):
        return _merge if policy == "merge" else policy

    @rule(c=CLIENTS, key=KEYS, value=VALUES)
    def write(self, c: int, key: str, value: int) -> None:
        self.dbs[c][key] = value
        self.local[c][key] = value

    @precondition(lambda self: any(self.local))
    @rule(c=CLIENTS, data=st.data())
    def delete(self, c: int, data: st.DataObject) -> None:
        if not self.local[c]:
            return
        key = data.draw(st.sampled_from(sorted(self.local[c])))
        del self.dbs[c][key]
        del self.local[c][key]

    @rule(c=CLIENTS, policy=POLICIES)
    def push(self, c: int, policy) -> None:
        # The model's plain-booklet deletes are meant: no max_delete guard (tested on its own).
        lc, rc, conflicts = self._conflicts(c)
        if not lc:
            self.dbs[c].changes().push(on_conflict=self._policy(policy), max_delete=None)
            return
        if conflicts and policy is None:
            try:
                self.dbs[c].changes().push(max_delete=None)
            except ebooklet.ConflictError as exc:
                assert set(exc.keys) == conflicts
                return
            raise AssertionError(f"push should have raised ConflictError for {conflicts}")
        self.dbs[c].changes().push(on_conflict=self._policy(policy), max_delete=None)
        self._pushed(c, lc, rc, conflicts, policy)

    @rule(c=CLIENTS, policy=POLICIES)
    def pull(self, c: int, policy) -> None:
        lc, rc, conflicts = self._conflicts(c)
        if conflicts and policy is None:
            try:
                self.dbs[c].changes().pull()
            except ebooklet.ConflictError as exc:
                assert set(exc.keys) == conflicts
                return
            raise AssertionError(f"pull should have raised ConflictError for {conflicts}")
        self.dbs[c].changes().pull(on_conflict=self._policy(policy))
        for key, value in rc.items():
            if key in conflicts:
                value = _model_resolve(policy, lc[key], value)
            if value is GONE:
                self.local[c].pop(key, None)
            else:
                self.local[c][key] = value
        self.base[c] = dict(self.remote)

    def _open(self, c: int) -> ebooklet.EBooklet:
        return ebooklet.open(self.remotes[c][0], self.paths[c], "w", allow_pickle=True)

    @rule(c=CLIENTS)
    def reopen(self, c: int) -> None:
        self.dbs[c].close()
        self.dbs[c] = self._open(c)

    @precondition(lambda self: any(self.local[c] == self.base[c] for c in (0, 1)))
    @rule(c=CLIENTS)
    def compact(self, c: int) -> None:
        if self.local[c] != self.base[c]:
            return
        self.dbs[c].compact()
        self.local[c] = dict(self.remote)
        self.base[c] = dict(self.remote)
        self._check_remote()

    @rule()
    def collect_garbage(self) -> None:
        # Every commit of a run is within the default retention: nothing any client can
        # still read may go.
        ebooklet.gc(self.conn, min_age=0)
        self._check_remote()

    @rule(c=CLIENTS, policy=POLICIES, unknown=st.booleans())
    def push_whose_reply_is_lost(self, c: int, policy, unknown: bool) -> None:
        """The head PUT is applied but its reply is lost; with ``unknown`` the server then
        stops answering, so the push cannot learn the outcome until the next operation."""
        lc, rc, conflicts = self._conflicts(c)
        if not lc or (conflicts and policy is None):
            return
        _remote, transport = self.remotes[c]
        head_key = _remote.db_key
        state = {"lost": False}

        def after_put(key: str) -> None:
            if key == head_key and not state["lost"]:
                state["lost"] = True
                if unknown:
                    transport.fail_gets = True
                raise ebooklet.RemoteUnavailableError("the reply was lost")

        transport.after_put = after_put
        try:
            if unknown:
                try:
                    self.dbs[c].changes().push(on_conflict=self._policy(policy), max_delete=None)
                except ebooklet.CommitUnknownError:
                    pass
                else:
                    # Only a push with nothing left to commit after its rebase can know.
                    assert not state["lost"], "the outcome cannot have been known"
            else:
                self.dbs[c].changes().push(on_conflict=self._policy(policy), max_delete=None)
        finally:
            transport.after_put = None
            transport.fail_gets = False
        if unknown:
            self.dbs[c].changes().pull()  # settles the commit first
        self._pushed(c, lc, rc, conflicts, policy)

    @rule(c=CLIENTS, key=KEYS, value=VALUES)
    def offline_booklet_write(self, c: int, key: str, value: int) -> None:
        self.dbs[c].close()
        with booklet.open(self.paths[c], "w") as raw:
            raw[key] = value
        self.local[c][key] = value
        self.dbs[c] = self._open(c)

    @rule(c=CLIENTS, key=KEYS)
    def offline_booklet_delete(self, c: int, key: str) -> None:
        # Plain booklet can only delete what the file holds (fetched or written keys).
        self.dbs[c].close()
        with booklet.open(self.paths[c], "w") as raw:
            if key in raw:
                del raw[key]
                del self.local[c][key]
        self.dbs[c] = self._open(c)

    @precondition(lambda self: any(self.local[c] == self.base[c] for c in (0, 1)))
    @rule(c=CLIENTS)
    def fresh_local_path(self, c: int) -> None:
        if self.local[c] != self.base[c]:
            return
        self.dbs[c].close()
        self.fresh += 1
        self.paths[c] = self.tmp / f"fresh{self.fresh}.blt"
        self.dbs[c] = self._open(c)
        self.local[c] = dict(self.remote)
        self.base[c] = dict(self.remote)

    def _check_remote(self) -> None:
        self.checks += 1
        with ebooklet.open(self.conn, self.tmp / f"check{self.checks}.blt", "r", allow_pickle=True) as reader:
            assert dict(reader.items()) == self.remote

    @invariant()
    def clients_match_the_model(self) -> None:
        for c in (0, 1):
            assert dict(self.dbs[c].items()) == self.local[c], f"client {c}"
            assert len(self.dbs[c]) == len(self.local[c])


TwoClients.TestCase.settings = settings(
    # The number of examples, and whether they are drawn at random, come from the profile
    # (tests/conftest.py): --hypothesis-profile=long explores much further (minutes).
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_two_clients_match_a_plain_dict_model = pytest.mark.slow(TwoClients.TestCase)
