"""ebooklet.dask: staged commits from a bag's or dataframe's partitions, and reads on the workers."""

from __future__ import annotations

import sys

import pytest

import ebooklet
from ebooklet.remote import connect
from ebooklet.sync.heads import HeadStore
from ebooklet.sync.scan import Scan, plan_partitions
from tests.subprocs import python

pytest.importorskip("dask")
import dask  # noqa: E402
import dask.bag  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402

import ebooklet.dask as edask  # noqa: E402


def create(conn, path) -> None:
    with ebooklet.open(conn, path, "c", value_serializer="pickle") as db:
        db["seed"] = 0
        assert db.changes().push().committed


def test_importing_ebooklet_does_not_import_dask():
    child = python("""
        import sys
        import ebooklet
        ebooklet.open, ebooklet.stage, ebooklet.commit
        print(sorted(m for m in sys.modules if m == "dask" or m.startswith(("dask.", "distributed"))))
    """)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.strip() == "[]"


def test_a_bag_and_a_dataframe_round_trip_with_the_synchronous_scheduler(tmp_path):
    remote = tmp_path / "remote" / "db"
    create(remote, tmp_path / "w.blt")
    bag = dask.bag.from_sequence([(f"k{i}", {"i": i}) for i in range(500)], npartitions=4)
    with dask.config.set(scheduler="synchronous"):
        result = edask.to_ebooklet(bag, remote)
        assert result.committed and len(result.keys) == 500
        frame = dd.from_pandas(pd.DataFrame({"key": [f"f{i}" for i in range(20)], "a": range(20)}),
                               npartitions=2)
        edask.to_ebooklet(frame, remote, value=None)
        got = dict(edask.read_bag(remote, npartitions=3).compute())
        table = edask.read_dataframe(remote).compute()
    assert len(got) == 521 and got["k7"] == {"i": 7} and got["f3"] == {"a": 3}
    assert dict(zip(table["key"], table["value"], strict=True)) == got
    with ebooklet.open(remote, tmp_path / "r.blt", "r", "pickle") as db:
        assert dict(db.items()) == got


def test_a_later_partition_wins_for_a_key_in_two(tmp_path):
    remote = tmp_path / "remote" / "db"
    create(remote, tmp_path / "w.blt")
    bag = dask.bag.from_sequence([("k", 1), ("j", 1), ("k", 2)], npartitions=2)
    assert bag.npartitions == 2
    with dask.config.set(scheduler="synchronous"):
        edask.to_ebooklet(bag, remote)
        assert dict(edask.read_bag(remote).compute()) == {"seed": 0, "k": 2, "j": 1}


def test_a_partitions_reads_carry_few_bytes_it_does_not_need(tmp_path, monkeypatch):
    """Staged values are packed sorted by index part, so a group of parts is read in few,
    dense requests even though each stage wrote keys in an order unrelated to their hashes."""
    remote = tmp_path / "remote" / "db"
    create(remote, tmp_path / "w.blt")
    tokens = []
    for w in range(2):
        with ebooklet.stage(remote) as s:
            s.update((f"key-{i:06d}-{w}", "v" * 100) for i in range(20_000))
        tokens.append(s.token)
    ebooklet.commit(remote, tokens)
    conn = connect(remote)
    head, _ = HeadStore(conn).read_latest()
    groups = plan_partitions(head, 4)
    assert len(groups) == 4
    values = 0
    for names in groups:
        scan = Scan(conn, names)
        wanted = scan.value_bytes
        values += wanted
        assert scan.bytes <= 1.05 * wanted
        assert len(scan.requests) <= 2 * len({r.name for r in scan.requests}) + 2
        assert sum(1 for _ in scan) == len(scan)
    conn.transport.close()
    assert values == head.n_bytes


def test_a_corrupt_value_fails_the_partition_with_an_integrity_error(tmp_path):
    remote = tmp_path / "remote" / "db"
    create(remote, tmp_path / "w.blt")
    with ebooklet.stage(remote) as s:
        s["a"] = "x" * 50
    ebooklet.commit(remote, [s.token])
    seg = remote.with_name("db.ebooklet") / s.token.segments[0][0]
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0xFF
    seg.write_bytes(bytes(data))
    with dask.config.set(scheduler="synchronous"), pytest.raises(ebooklet.IntegrityError):
        edask.read_bag(remote).compute()


@pytest.mark.slow
def test_a_local_cluster_of_worker_processes_writes_and_reads_on_seaweedfs(seaweedfs_server, tmp_path):
    from dask.distributed import Client, LocalCluster

    bucket = seaweedfs_server.make_bucket()
    conn = ebooklet.S3Connection(seaweedfs_server.access_key_id, seaweedfs_server.access_key,
                                 "dbs/dask", bucket, endpoint_url=seaweedfs_server.endpoint_url)
    create(conn, tmp_path / "w.blt")
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        bag = dask.bag.from_sequence([(f"k{i}", i) for i in range(4000)], npartitions=8)
        result = edask.to_ebooklet(bag, conn)
        assert result.committed and len(result.keys) == 4000
        with dask.config.set({"dataframe.convert-string": False}):  # the lists stay lists
            frame = dd.from_pandas(pd.DataFrame({"key": [f"d{i}" for i in range(100)],
                                                 "value": [[i] for i in range(100)]}), npartitions=4)
        edask.to_ebooklet(frame, conn)
        # The work ran in the workers' processes, not here.
        assert len(client.run(lambda: sys.modules.get("ebooklet.sync.stage") is not None)) == 2
        got = dict(edask.read_bag(conn, npartitions=4).compute())
        table = edask.read_dataframe(conn, npartitions=2).compute()
    want = {"seed": 0} | {f"k{i}": i for i in range(4000)} | {f"d{i}": [i] for i in range(100)}
    assert got == want
    assert len(table) == len(want)
    assert ebooklet.verify(conn, deep=True)
