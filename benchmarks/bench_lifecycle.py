"""A database that lasts: many one-key pushes onto a database, measured from outside.

Makes N one-key pushes (default 1,000) onto a database of K keys (default 10,000) on moto,
through a request-counting HTTP proxy of its own, and prints side by side:

* the head's size after 10 pushes and after N pushes;
* the median push time over the first 50 and the last 50 pushes (and their ratio);
* what a fresh reader pays to read every value: requests, bytes and seconds, with the value
  bytes for comparison.

Run from the repository root after the test install::

    .venv/bin/python benchmarks/bench_lifecycle.py            # 10,000 keys, 1,000 pushes
    .venv/bin/python benchmarks/bench_lifecycle.py --quick    # 2,000 keys, 100 pushes

Targets (issue 9): head after N pushes <= 2x its size after 10, or <= 16 KiB; late pushes
<= 1.5x early ones; a fresh full read <= 40 requests and <= 1.5x the value bytes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness import CountingProxy, append_results, machine_info, start_server

import ebooklet


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--pushes", type=int, default=1_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="2,000 keys and 100 pushes")
    parser.add_argument("--save", action="store_true",
                        help="append the report to benchmarks/results/lifecycle-<date>.txt")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.pushes = 2_000, 100
    tmp = Path(tempfile.mkdtemp(prefix="ebooklet-bench-"))
    server = start_server("moto", tmp)
    proxy = CountingProxy(server.endpoint_url)
    try:
        bucket = server.make_bucket()
        conn = ebooklet.S3Connection(server.access_key_id, server.access_key, "dbs/lasting.blt", bucket,
                                     endpoint_url=proxy.url)
        value = b"v" * args.value_bytes
        head_sizes: dict[int, int] = {}
        times: list[float] = []
        with ebooklet.open(conn, tmp / "writer.blt", "c") as db:
            db.update({f"k{i:06d}": value for i in range(args.keys)})
            db.changes().push()
            for n in range(1, args.pushes + 1):
                db[f"k{n % args.keys:06d}"] = value + str(n).encode()
                start = time.perf_counter()
                db.changes().push()
                times.append(time.perf_counter() - start)
                if n in (10, args.pushes):
                    head_sizes[n] = len(_head(server, bucket))
        info = ebooklet.remote_info(conn)
        value_bytes = info.n_bytes
        before = proxy.snapshot()
        start = time.perf_counter()
        with ebooklet.open(conn, tmp / "fresh.blt", "r") as fresh:
            loaded = fresh.load_items()
        read_s = time.perf_counter() - start
        after = proxy.snapshot()
        requests, bytes_down = after["requests"] - before["requests"], after["received"] - before["received"]
        assert loaded == args.keys, loaded
    finally:
        proxy.close()
        server.stop()
    early = statistics.median(times[:50])
    late = statistics.median(times[-50:])
    lines = [*machine_info(server), "",
             f"{args.keys:,} keys x {args.value_bytes} B on moto through a counting proxy; "
             f"{args.pushes:,} one-key pushes; {info.n_segments} segments and {info.n_index_parts} "
             "index part(s) at the end", ""]
    rows = [
        ("head bytes after 10 pushes", f"{head_sizes[10]:,}", ""),
        (f"head bytes after {args.pushes:,} pushes", f"{head_sizes[args.pushes]:,}",
         f"{head_sizes[args.pushes] / head_sizes[10]:.2f}x (target <= 2x or <= 16,384 B)"),
        ("median push, first 50", f"{early * 1000:.1f} ms", ""),
        ("median push, last 50", f"{late * 1000:.1f} ms", f"{late / early:.2f}x (target <= 1.5x)"),
        ("fresh full read: requests", f"{requests:,}", "(target <= 40)"),
        ("fresh full read: bytes down", f"{bytes_down:,}",
         f"{bytes_down / value_bytes:.2f}x the {value_bytes:,} value bytes (target <= 1.5x)"),
        ("fresh full read: time", f"{read_s:.2f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines += [f"  {name:<{width}}  {figure:>14}  {note}" for name, figure, note in rows]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.save:
        append_results("lifecycle", text)


def _head(server, bucket: str) -> bytes:
    import boto3

    s3 = boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key_id,
                      aws_secret_access_key=server.access_key, region_name="us-east-1")
    return s3.get_object(Bucket=bucket, Key="dbs/lasting.blt")["Body"].read()


if __name__ == "__main__":
    main()
