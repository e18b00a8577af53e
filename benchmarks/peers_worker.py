"""One phase of one implementation of benchmarks/bench_peers.py, in a process of its own.

It runs in the peer's own venv (ebooklet 0.11.1, slatedb, sqlitedict), so it imports nothing
from this repository but what ``ours`` needs: ``python peers_worker.py CONFIG_JSON`` prints
the phase's figures as JSON (time, and the counting proxy's requests and bytes).
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import sys
import time
import urllib.request
from typing import Any

#: Where the workers' data goes on moto (which takes any credentials).
BUCKET = "peers"
ACCESS_KEY_ID = "bench-key-id"
ACCESS_KEY = "bench-secret"


# -- workers: one phase of one implementation, in its own process ----------------------------


def make_data(n: int, size: int) -> tuple[list[str], list[bytes]]:
    keys = [f"key-{i:07d}" for i in range(n)]
    blob = random.Random(42).randbytes(n * size)
    return keys, [blob[i * size : (i + 1) * size] for i in range(n)]


class Clock:
    """Times a region and reads the counting proxy's counters (at ``counters``, a URL) at its ends."""

    def __init__(self, counters: str) -> None:
        self.url = counters
        self.result: dict[str, Any] = {}

    def counters(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def __enter__(self) -> Clock:
        self.before = self.counters()
        self.profile = None
        if os.environ.get("BENCH_PEERS_PROFILE"):
            import cProfile  # noqa: PLC0415 - only when asked for

            self.profile = cProfile.Profile()
            self.profile.enable()
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu0
        if self.profile is not None:
            # BENCH_PEERS_PROFILE=DIR: one .prof file per timed region (python -m pstats).
            self.profile.disable()
            out = pathlib.Path(os.environ["BENCH_PEERS_PROFILE"])
            out.mkdir(parents=True, exist_ok=True)
            self.profile.dump_stats(out / f"{os.getpid()}.prof")
        after = self.counters()
        self.result = {"seconds": seconds, "cpu": cpu, **{k: after[k] - self.before[k] for k in after}}


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    impl, phase = cfg["impl"], cfg["phase"]
    keys, values = make_data(cfg["keys"], cfg["value_bytes"])
    clock = Clock(cfg["counters"])
    out: dict[str, Any] = {}
    if impl in ("ours", "base", "ebooklet"):
        out = _worker_ebooklet(cfg, impl, phase, keys, values, clock)
    elif impl == "slatedb":
        import asyncio

        out = asyncio.run(_worker_slatedb(cfg, phase, keys, values, clock))
    elif impl in ("sqlitedict", "file"):
        out = _worker_sqlitedict(cfg, phase, keys, values, clock)
    return {**clock.result, **out}


def _worker_ebooklet(cfg, impl, phase, keys, values, clock) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    import ebooklet

    args = (ACCESS_KEY_ID, ACCESS_KEY, cfg["db_key"], BUCKET)
    conn = ebooklet.S3Connection(*args, endpoint_url=cfg["proxy"])
    path = pathlib.Path(cfg["path"])
    if impl in ("ours", "base"):
        def open_db(flag: str):  # type: ignore[no-untyped-def]
            return ebooklet.open(conn, path, flag)
    else:
        def open_db(flag: str):  # type: ignore[no-untyped-def]
            return ebooklet.open_ebooklet(conn, path, flag, n_buckets=len(keys))
    out: dict[str, Any] = {"version": ebooklet.__version__}
    if phase == "write_push":
        with clock:
            with open_db("n") as db:
                for k, v in zip(keys, values, strict=True):
                    db[k] = v
                db.changes().push()
    elif phase == "push_alone":
        with open_db("n") as db:
            for k, v in zip(keys, values, strict=True):
                db[k] = v
            db.sync()
            with clock:
                db.changes().push()
    elif phase == "cold_one":
        key = keys[len(keys) // 2]
        with clock:
            with open_db("r") as db:
                value = db[key]
        out["ok"] = value == values[len(keys) // 2]
    elif phase == "read_all":
        with clock:
            with open_db("r") as db:
                n = total = 0
                for v in db.values():
                    n += 1
                    total += len(v)
        out["ok"] = n == len(keys) and total == sum(map(len, values))
    elif phase == "noop_changes":
        with open_db("w") as db:
            with clock:
                changes = list(db.changes().iter_changes())
        out["ok"] = changes == []
    return out


async def _worker_slatedb(cfg, phase, keys, values, clock) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from importlib.metadata import version

    import slatedb.uniffi as s

    def store():  # type: ignore[no-untyped-def]
        builder = s.ObjectStoreBuilder(s.ObjectStoreType.S3)
        for k, v in {
            "access_key_id": ACCESS_KEY_ID, "secret_access_key": ACCESS_KEY, "bucket": BUCKET,
            "region": "us-east-1", "endpoint": cfg["proxy"], "allow_http": "true",
        }.items():
            builder.with_config(k, v)
        return builder.build()

    out: dict[str, Any] = {"version": version("slatedb")}
    path = cfg["db_key"]
    if phase == "write_push":
        settings = s.Settings.default()
        settings.set("wal_enabled", "false")
        with clock:
            builder = s.DbBuilder(path, store())
            builder.with_settings(settings)
            db = await builder.build()
            for i in range(0, len(keys), 1000):
                batch = s.WriteBatch()
                for k, v in zip(keys[i : i + 1000], values[i : i + 1000], strict=True):
                    batch.put(k.encode(), v)
                await db.write(batch)
            await db.flush()
            await db.shutdown()
    elif phase == "cold_one":
        i = len(keys) // 2
        with clock:
            reader = await s.DbReaderBuilder(path, store()).build()
            value = await reader.get(keys[i].encode())
            await reader.shutdown()
        out["ok"] = value == values[i]
    elif phase == "read_all":
        options = s.ScanOptions(
            durability_filter=s.DurabilityLevel.REMOTE, dirty=False,
            read_ahead_bytes=cfg["read_ahead"], cache_blocks=False, max_fetch_tasks=8,
        )
        everything = s.KeyRange(start=None, start_inclusive=True, end=None, end_inclusive=False)
        with clock:
            reader = await s.DbReaderBuilder(path, store()).build()
            rows = await reader.scan_with_options(everything, options)
            n = total = 0
            while batch := await rows.next_batch(10_000):
                n += len(batch)
                total += sum(len(kv.value) for kv in batch)
            await reader.shutdown()
        out["ok"] = n == len(keys) and total == sum(map(len, values))
    return out


def _worker_sqlitedict(cfg, phase, keys, values, clock) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from importlib.metadata import version

    import boto3
    from botocore.config import Config
    from sqlitedict import SqliteDict

    client = boto3.client(
        "s3", endpoint_url=cfg["proxy"], aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=ACCESS_KEY, region_name="us-east-1",
        config=Config(proxies={}, s3={"addressing_style": "path"},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )
    client.list_buckets()  # connect before the clock starts
    path = cfg["path"]

    def same(x: bytes) -> bytes:
        return x

    def open_db(flag: str) -> SqliteDict:
        return SqliteDict(path, flag=flag, encode=same, decode=same, autocommit=False)

    def write() -> None:
        if cfg["impl"] == "file":  # the values as one file: no database at all
            with open(path, "wb") as f:
                f.writelines(values)
            return
        with open_db("n") as db:
            for k, v in zip(keys, values, strict=True):
                db[k] = v
            db.commit()

    def put() -> None:
        client.put_object(Bucket=BUCKET, Key=cfg["db_key"], Body=pathlib.Path(path).read_bytes())

    def get() -> None:
        pathlib.Path(path).write_bytes(client.get_object(Bucket=BUCKET, Key=cfg["db_key"])["Body"].read())

    out: dict[str, Any] = {"version": version("sqlitedict")}
    if phase == "write_push":
        with clock:
            write()
            put()
    elif phase == "push_alone":
        write()
        with clock:
            put()
    elif phase == "cold_one":
        i = len(keys) // 2
        with clock:
            get()
            with open_db("r") as db:
                value = db[keys[i]]
        out["ok"] = value == values[i]
    elif phase == "read_all" and cfg["impl"] == "file":
        with clock:
            get()
        out["ok"] = pathlib.Path(path).stat().st_size == sum(map(len, values))
    elif phase == "read_all":
        with clock:
            get()
            with open_db("r") as db:
                n = total = 0
                for v in db.values():
                    n += 1
                    total += len(v)
        out["ok"] = n == len(keys) and total == sum(map(len, values))
    return out


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
