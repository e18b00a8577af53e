"""A Hypothesis state machine: two clients and a remote, checked against plain dicts.

The model keeps, per client, its local view and its base (the remote as of its last sync),
and the remote itself; every rule applies the documented sync semantics to those dicts and
the real databases must agree after every step.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import threading

import booklet
import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import ebooklet

from .faults import Gate, faulty_remote

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


# -- pushes held at their head write, and creators racing (issue 16) ----------------------
#
# Rules mixed into TwoClients. A push is stopped just before its head write while garbage
# collection (min_age=0), a compaction or another client's push runs; then it goes on. And two
# creators race on an empty location. Nothing acknowledged may be lost either way.

INTERLEAVED = st.sampled_from(["gc", "compact", "push"])


class HeldPushRules:
    conn: pathlib.Path
    tmp: pathlib.Path
    remote: dict
    local: list[dict]
    base: list[dict]
    paths: list[pathlib.Path]
    dbs: list[ebooklet.EBooklet]
    races: int

    @precondition(lambda self: all(self.local[c] == self.base[c] for c in (0, 1)))
    @rule(c=CLIENTS, what=INTERLEAVED, key=KEYS, other_key=KEYS, value=VALUES)
    def push_held_at_its_head_write(self, c: int, what: str, key: str, other_key: str, value: int) -> None:
        if any(self.local[i] != self.base[i] for i in (0, 1)):
            return
        o = 1 - c
        for i in (c, o) if what != "gc" else (c,):
            if self.base[i] != self.remote:
                self.dbs[i].changes().pull()  # each writer starts from the remote: no conflict
                self.local[i] = dict(self.remote)
                self.base[i] = dict(self.remote)
        taken = {self.remote.get(key)}
        if value in taken:
            value = next(v for v in range(6) if v not in taken)  # a change: there is a commit
        if other_key == key:
            other_key = next(k for k in ("a", "b", "c", "d") if k != key)
        other_value = next(v for v in range(6) if v != self.remote.get(other_key))
        self.dbs[c].close()
        remote, transport = faulty_remote(self.conn)
        gate = Gate(remote.db_key)
        transport.before_put = gate
        # Against gc the held push holds the lease, as pushes do by default (gc below the safe
        # age then keeps to it); against another writer it holds none, or that writer would
        # wait for it.
        lock = "push" if what == "gc" else "none"
        held = ebooklet.open(remote, self.paths[c], "w", allow_pickle=True, remote_lock=lock)
        held[key] = value
        errors: list[BaseException] = []

        def push() -> None:
            try:
                held.changes().push(max_delete=None)
            except BaseException as exc:  # noqa: BLE001 - raised in the test's thread
                errors.append(exc)
                gate.reached.set()  # wake the test: there is nothing to wait for

        thread = threading.Thread(target=push)
        thread.start()
        try:
            assert gate.reached.wait(60), "the push never reached its head write"
            if errors:
                raise errors[0]
            if what == "gc":
                ebooklet.gc(self.conn, min_age=0)
            elif what == "compact":
                self.dbs[o].compact()
                self.local[o] = dict(self.remote)
                self.base[o] = dict(self.remote)
            else:
                self.dbs[o][other_key] = other_value
                self.dbs[o].changes().push(max_delete=None)
                self.remote[other_key] = other_value
                self.local[o] = dict(self.remote)
                self.base[o] = dict(self.remote)
        finally:
            gate.release.set()
            thread.join(60)
            held.close()
            self.dbs[c] = self._open(c)  # type: ignore[attr-defined]
        assert not errors, errors
        self.remote[key] = value
        self.local[c] = dict(self.remote)
        self.base[c] = dict(self.remote)
        self._check_remote()  # type: ignore[attr-defined]

    @rule()
    def two_creators_race_on_an_empty_location(self) -> None:
        self.races = getattr(self, "races", 0) + 1
        where = self.tmp / "races" / f"db-{self.races}"
        start = threading.Barrier(2)
        results: list[object] = [None, None]

        def create(i: int) -> None:
            try:
                with ebooklet.open(where, self.tmp / f"race-{where.name}-{i}.blt", "c",
                                   value_serializer="json", remote_lock="none") as db:
                    db[f"k{i}"] = i
                    start.wait(30)
                    results[i] = db.changes().push().commit
            except BaseException as exc:  # noqa: BLE001 - judged below
                results[i] = exc

        threads = [threading.Thread(target=create, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(results) == [1, 2], results  # type: ignore[type-var]
        with ebooklet.open(where, self.tmp / f"race-{where.name}-check.blt", "r") as db:
            assert dict(db.items()) == {"k0": 0, "k1": 1}


class TwoClients(HeldPushRules, RuleBasedStateMachine):
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
    # EBOOKLET_MODEL_EXAMPLES=2000 explores much further (minutes).
    max_examples=int(os.environ.get("EBOOKLET_MODEL_EXAMPLES", "100")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_two_clients_match_a_plain_dict_model = TwoClients.TestCase
