"""The report of ``benchmarks/bench_core.py``: its three measurements as tables, each figure
beside its baseline and its target (a target missed is marked, and never fails the run)."""

from __future__ import annotations

from harness import fmt_bytes, fmt_s, table


def verdict(ok: bool) -> str:
    return "within" if ok else "MISSED"


def render(info: list[str], push: dict, cold: dict, local: dict, value_bytes: int) -> str:
    """The report of a full run: the three measurements, each beside its baseline and target."""
    lines = ["ebooklet core benchmarks", "=" * 24, *info, ""]

    # 1. push
    b, base = push["best"], push["base"]
    ratio, few_dozen = b["seconds"] / base["seconds"], 48
    lines.append(f"1. push of {push['n']:,} keys x {value_bytes} B ({fmt_bytes(push['bytes'])} of values)")
    lines += table([
        ["requests (PushResult.requests)", str(b["push_requests"]), "1 PUT", "-", "a few dozen at most",
         verdict(b["push_requests"] <= few_dozen)],
        ["requests (transport stats delta)", str(b["transport_requests"]), "1 PUT", "-",
         "a few dozen at most", verdict(b["transport_requests"] <= few_dozen)],
        ["bytes sent", fmt_bytes(b["bytes_sent"]), fmt_bytes(push["bytes"]),
         f"{b['bytes_sent'] / push['bytes']:.2f}x", "-", "-"],
        ["time (best)", fmt_s(b["seconds"]), fmt_s(base["seconds"]), f"{ratio:.2f}x", "<= 3x",
         verdict(ratio <= 3)],
    ], ["figure", "ebooklet", "baseline", "ratio", "target", "vs target"])
    lines.append(
        f"   baseline = booklet read of the same values {fmt_s(base['read'])} + one PUT "
        f"{fmt_s(base['put'])}; "
        f"push times: {', '.join(fmt_s(p['seconds']) for p in push['pushes'])}; "
        f"baseline times: {', '.join(fmt_s(x['seconds']) for x in push['baselines'])}"
    )
    lines.append("")

    # 2. cold read
    w, bld = cold["worst"], cold["build"]
    lines.append(f"2. cold read of one key from a {cold['n']:,}-key remote on a fresh local path "
                 "(open + read)")
    lines += table([
        ["requests", str(w["requests"]), "<= 4", verdict(w["requests"] <= 4)],
        ["bytes downloaded", f"{w['bytes_received']:,} ({fmt_bytes(w['bytes_received'])})", "< 1 MB",
         verdict(w["bytes_received"] < 1_000_000)],
        ["bytes sent", str(w["bytes_sent"]), "-", "-"],
        ["time (open + read)", fmt_s(min(r["seconds"] for r in cold["reads"])), "-", "-"],
    ], ["figure (worst of the reads)", "ebooklet", "target", "vs target"])
    per_read = "; ".join(f"{r['key']}: {r['requests']} req, {r['bytes_received']:,} B" for r in cold["reads"])
    sizes = ", ".join(fmt_bytes(s) for s in cold["part_sizes"]) or "n/a"
    lines += [
        f"   reads: {per_read}",
        f"   remote: head {fmt_bytes(cold['head_bytes'])}, {cold['n_parts']} index parts "
        f"(bits={cold['part_bits']}; first sizes {sizes}), {cold['segments']} segment(s)",
        f"   build (informational): local writes {fmt_s(bld['write_seconds'])}, one push "
        f"{fmt_s(bld['push_seconds'])} in {bld['push_requests']} requests, "
        f"{fmt_bytes(bld['push_bytes'])} sent",
        "",
    ]

    # 3. local
    best, n = local["best"], local["n"]
    wr, rr = best["eb_write"] / best["raw_write"], best["eb_read"] / best["raw_read"]

    def per_key(seconds: float) -> str:
        return f"{fmt_s(seconds)} ({seconds / n * 1e6:.2f} us/key)"

    lines.append(f"3. local writes and reads of {n:,} keys x {value_bytes} B (str keys, bytes values)")
    lines += table([
        ["writes + close", per_key(best["eb_write"]), per_key(best["raw_write"]), f"{wr:.2f}x", "<= 1.2x",
         verdict(wr <= 1.2)],
        ["reads", per_key(best["eb_read"]), per_key(best["raw_read"]), f"{rr:.2f}x", "<= 1.2x",
         verdict(rr <= 1.2)],
    ], ["figure (best)", "ebooklet", "raw booklet", "ratio", "target", "vs target"])
    rw = best["raw_read_w"]
    lines += [
        f"   informational: raw booklet reads with the file opened 'w' (as ebooklet opens it): {per_key(rw)} "
        f"= {rw / best['raw_read']:.2f}x booklet 'r'; ebooklet reads = {best['eb_read'] / rw:.2f}x of that",
        "   all runs (s): "
        + "; ".join(f"{k} " + ", ".join(f"{x:.3f}" for x in v) for k, v in local["runs"].items()),
        "",
        "Ratios compare runs in this same process; wall-clock figures alone are not comparable across",
        "machines. 'MISSED' marks a target not met; it never changes the exit status.",
    ]
    return "\n".join(lines) + "\n"
