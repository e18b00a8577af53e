"""A no-op ``changes()`` on a 100,000-key database, against opening the local file.

Run from the repository root::

    python benchmarks/bench_changes.py                  # moto, 100,000 keys
    python benchmarks/bench_changes.py --keys 10000     # smaller

A database of N keys is pushed to moto (in a child process, started through
tests/servers.py), then reopened from the synced local file. Nothing changes anywhere, and
``list(db.changes().iter_changes())`` is timed (best of N) and its requests counted; the
baselines, measured in the same run, are opening the same local file with plain booklet
and with ebooklet. Only ratios are meaningful across machines; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import booklet
from harness import best_of, machine_info, start_server

import ebooklet
from ebooklet.remote import connect


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    return best_of(repeat, fn)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ebooklet-bench-"))
    server = start_server("moto", tmp)
    try:
        bucket = server.make_bucket()
        conn = ebooklet.S3Connection(server.access_key_id, server.access_key, "bench/changes", bucket,
                                     endpoint_url=server.endpoint_url)
        path = tmp / "db.blt"
        with ebooklet.open(conn, path, "c") as db:
            db.update({f"key-{i:07d}": b"x" * 100 for i in range(args.keys)})
            db.changes().push()

        def open_booklet() -> None:
            booklet.open(path, "r").close()

        def open_ebooklet() -> None:
            ebooklet.open(conn, path, "r").close()

        t_booklet = best(open_booklet, args.repeat)
        t_ebooklet = best(open_ebooklet, args.repeat)
        with ebooklet.open(conn, path, "r") as db:
            stats = db.stats
            before = stats.requests
            changes = list(db.changes().iter_changes())
            requests = stats.requests - before
            t_changes = best(lambda: list(db.changes().iter_changes()), args.repeat)
            # The baseline: one bare conditional GET of the head, on a transport of its own.
            remote = connect(conn)
            etag = remote.transport.get(remote.db_key).etag
            t_get = best(lambda: remote.transport.get(remote.db_key, if_none_match=etag), args.repeat)
            remote.transport.close()
        assert changes == [], changes
        info = machine_info(server)
    finally:
        server.stop()

    print("\n".join(info))
    print(f"no-op changes() on {args.keys:,} keys (moto on 127.0.0.1), best of {args.repeat}")
    rows = [
        ("booklet.open(path, 'r') + close", t_booklet),
        ("ebooklet.open(conn, path, 'r') + close", t_ebooklet),
        ("one conditional GET of the head", t_get),
        ("changes().iter_changes(), no-op", t_changes),
    ]
    print(f"{'figure':40s} {'time':>10s} {'vs booklet.open':>16s} {'vs ebooklet.open':>17s}")
    for name, t in rows:
        print(f"{name:40s} {t * 1e3:8.2f}ms {t / t_booklet:15.1f}x {t / t_ebooklet:16.1f}x")
    print(f"requests made by the no-op changes(): {requests} (target: 1)")


if __name__ == "__main__":
    main()
