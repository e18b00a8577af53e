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
import datetime
import http.client
import http.server
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ebooklet  # noqa: E402
from tests.servers import start_moto  # noqa: E402


class CountingProxy:
    """Forwards HTTP requests to ``target`` and counts them, with the bytes each way."""

    def __init__(self, target: str) -> None:
        self.target = urllib.parse.urlsplit(target)
        self.requests = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                with proxy._lock:
                    proxy.requests += 1
                    proxy.bytes_up += length
                    proxy.bytes_down += len(data)
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.requests, self.bytes_up, self.bytes_down

    def close(self) -> None:
        self.server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--pushes", type=int, default=1_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="2,000 keys and 100 pushes")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.pushes = 2_000, 100
    server = start_moto()
    proxy = CountingProxy(server.endpoint_url)
    tmp = Path(tempfile.mkdtemp(prefix="ebooklet-bench-"))
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
        requests, bytes_down = after[0] - before[0], after[2] - before[2]
        assert loaded == args.keys, loaded
    finally:
        proxy.close()
        server.stop()
    early = statistics.median(times[:50])
    late = statistics.median(times[-50:])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"ebooklet {ebooklet.__version__} on {platform.platform()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {when}")
    print(f"{args.keys:,} keys x {args.value_bytes} B on moto through a counting proxy; "
          f"{args.pushes:,} one-key pushes; {info.n_segments} segments and {info.n_index_parts} "
          "index part(s) at the end")
    print()
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
    for name, figure, note in rows:
        print(f"  {name:<{width}}  {figure:>14}  {note}")


def _head(server, bucket: str) -> bytes:
    import boto3

    s3 = boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key_id,
                      aws_secret_access_key=server.access_key, region_name="us-east-1")
    return s3.get_object(Bucket=bucket, Key="dbs/lasting.blt")["Body"].read()


if __name__ == "__main__":
    main()
