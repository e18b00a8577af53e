"""One large value pushed and read back: in parts (the default) against one PUT, per stream pace.

Run from the repository root::

    python benchmarks/bench_multipart.py                   # 128 MB, SeaweedFS, 3 runs
    python benchmarks/bench_multipart.py --mb 64 --runs 1  # a quick look
    python benchmarks/bench_multipart.py --save            # also append to benchmarks/results/

On loopback one request moves hundreds of MB a second, so parts can only show what they cost.
Between a machine and a distant store, one TCP stream rarely fills the link: each run is
therefore made twice, straight to the server, and through a proxy that holds every request to
``--rate`` MB/s (a network of streams, each capped, none sharing a link: see
``CountingProxy``). Each way, the push of a fresh database holding one value of ``--mb`` MB is
timed with the value in parts (``settings.multipart_from`` as shipped) and in one PUT (the
threshold above the value), in turn; then a fresh read of it (parallel ranged GETs either way),
against one GET of the same bytes through the same proxy. Medians of ``--runs``; nothing
asserts on time.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time
import uuid

from harness import CountingProxy, append_results, fmt_s, log, machine_info, start_server, table

import ebooklet
from ebooklet.remote.s3 import S3Transport
from ebooklet.settings import override, settings

MB = 1_000_000


def _conn(server, bucket: str, endpoint: str) -> ebooklet.S3Connection:  # type: ignore[no-untyped-def]
    return ebooklet.S3Connection(server.access_key_id, server.access_key, f"bench/{uuid.uuid4().hex[:10]}",
                                 bucket, endpoint_url=endpoint)


def push(server, bucket: str, endpoint: str, value: bytes, workdir: pathlib.Path, parts: bool):  # type: ignore[no-untyped-def]
    conn = _conn(server, bucket, endpoint)
    path = workdir / f"{uuid.uuid4().hex}.blt"
    threshold = settings.multipart_from if parts else len(value) + 1
    with ebooklet.open(conn, path, "n", value_serializer="bytes") as db:
        db["value"] = value
        with override(multipart_from=threshold):
            t0 = time.perf_counter()
            assert db.changes().push().committed
            took = time.perf_counter() - t0
    return took, conn


def fresh_read(conn: ebooklet.S3Connection, workdir: pathlib.Path, size: int) -> float:
    t0 = time.perf_counter()
    with ebooklet.open(conn, workdir / f"{uuid.uuid4().hex}.blt", "r") as db:
        assert len(db["value"]) == size
    return time.perf_counter() - t0


def one_get(server, bucket: str, endpoint: str, key: str, size: int) -> float:  # type: ignore[no-untyped-def]
    transport = S3Transport(server.access_key_id, server.access_key, bucket, endpoint_url=endpoint)
    t0 = time.perf_counter()
    assert len(transport.get(key).data) == size  # type: ignore[union-attr]
    took = time.perf_counter() - t0
    transport.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--rate", type=float, default=40.0, help="MB/s per request through the proxy")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server", choices=["seaweedfs", "moto"], default="seaweedfs")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-multipart-"))
    server = start_server(args.server, workdir)
    proxy = CountingProxy(server.endpoint_url, rate=args.rate * MB)
    try:
        bucket = server.make_bucket()
        size = args.mb * MB
        value = bytes(range(256)) * (size // 256) + bytes(size % 256)
        raw_key = "bench/one-object"
        S3Transport(server.access_key_id, server.access_key, bucket,
                    endpoint_url=server.endpoint_url).put(raw_key, value)  # in parts: it is large
        rows = []
        for label, endpoint in (("straight to the server", server.endpoint_url),
                                (f"{args.rate:g} MB/s per request (proxy)", proxy.url)):
            one, split, reads, gets = [], [], [], []
            for r in range(args.runs):
                log(f"{label}: run {r + 1}")
                took, _ = push(server, bucket, endpoint, value, workdir, parts=False)
                one.append(took)
                took, conn = push(server, bucket, endpoint, value, workdir, parts=True)
                split.append(took)
                reads.append(fresh_read(conn, workdir, size))
                gets.append(one_get(server, bucket, endpoint, raw_key, size))
            m_one, m_split = statistics.median(one), statistics.median(split)
            m_read, m_get = statistics.median(reads), statistics.median(gets)
            rows.append([label, "push, one PUT", fmt_s(m_one), "1.00x", " ".join(map(fmt_s, one))])
            rows.append([label, "push, in parts", fmt_s(m_split), f"{m_one / m_split:.2f}x",
                         " ".join(map(fmt_s, split))])
            rows.append([label, "one GET of the bytes", fmt_s(m_get), "1.00x", " ".join(map(fmt_s, gets))])
            rows.append([label, "fresh read (ranged GETs)", fmt_s(m_read), f"{m_get / m_read:.2f}x",
                         " ".join(map(fmt_s, reads))])
        parts = -(-size // settings.multipart_part)
        lines = [
            "bench_multipart: one large value, in parts against one PUT", *machine_info(server),
            f"value     : {args.mb} MB (parts of {settings.multipart_part // (1 << 20)} MiB: {parts}); "
            f"median of {args.runs}", "",
            *table(rows, ["network", "operation", "median", "speedup", "runs"]),
        ]
        text = "\n".join(lines)
        print(text)
        if args.save:
            append_results("large", text)
    finally:
        proxy.close()
        server.stop()


if __name__ == "__main__":
    main()
