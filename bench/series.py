#!/usr/bin/env python3
"""The per-patch table: each step of the vendored patch series against nginx, in one run.

Takes the builds bench/series.sh made (one directory per step, each with `beat-gateway`),
or any directories holding a `beat-gateway` binary (the build before the series, say), and
runs `gateway-nolog` from each beside nginx doing the same job (bench.py's setup, pinned
the same way). Rounds are interleaved in rotating order; each step's req/s is reported as
the median of its per-round ratios to nginx in the same round, with a 90% interval. Then
each step runs under callgrind for user-space instructions per request (16 connections,
counted only under load; repeatable to ~0.3%). Prints a markdown table and writes it to
bench/results/series-<UTC time>.md.

  target/bench-venv/bin/python bench/series.py LABEL=DIR [LABEL=DIR...] [--rounds N] [--conns C]
                                              [--floor]

With --floor each step's bare floor (`pingora-bare`, DIR/examples/bare_proxy: stock Pingora
API, so it builds at every step; `bench/series.sh --floor`) is measured instead of the
gateway.
"""

import argparse
import datetime
import statistics
import tempfile
from pathlib import Path

import bench


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("steps", nargs="+", help="LABEL=DIR, in series order (the first is the 'before')")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--callgrind-seconds", type=int, default=8)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--floor", action="store_true", help="measure each step's pingora-bare, not the gateway")
    args = ap.parse_args()
    binary = "examples/bare_proxy" if args.floor else "beat-gateway"
    steps = []
    for s in args.steps:
        label, _, d = s.partition("=")
        if not d or not (Path(d) / binary).is_file():
            ap.error(f"{s}: expected LABEL=DIR with DIR/{binary}")
        steps.append((label, Path(d)))

    def command(port):
        """The measured process of the current bench.TARGET: (argv, environment)."""
        if args.floor:
            return bench.bare_cmd("pingora-bare", port, up), {}
        return bench.gateway_cmd(work, port, up, echo, False)

    work = Path(tempfile.mkdtemp(prefix="beat-series-"))
    work.chmod(0o755)
    up, echo, nginx_port = bench.free_port(), bench.free_port(), bench.free_port()
    procs = {"up": bench.upstream_nginx(work, up), "nginx": bench.nginx_proxy(work, nginx_port, up, echo)}
    urls = {"nginx": f"http://127.0.0.1:{nginx_port}/core/api/items"}
    try:
        for label, d in steps:
            bench.TARGET = d
            port = bench.free_port()
            if args.floor:
                procs[label] = bench.bare("pingora-bare", port, up)
            else:
                procs[label] = bench.gateway(work, label, port, up, echo, False)
            urls[label] = f"http://127.0.0.1:{port}/core/api/items"
        targets = ["nginx"] + [label for label, _ in steps]
        runs = {t: [] for t in targets}
        for t in targets:  # warm-up
            bench.run_wrk(urls[t], args.conns, 1, 1)
        for r in range(args.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for t in order:
                before = bench.cpu_seconds(procs[t].pids)
                res = bench.run_wrk(urls[t], args.conns, args.seconds, 1)
                assert res["non2xx"] == 0, f"{t}: {res['non2xx']} non-2xx responses"
                res["cpu_per_100k"] = (bench.cpu_seconds(procs[t].pids) - before) / max(res["requests"], 1) * 1e5
                runs[t].append(res)
            print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{t} {runs[t][-1]['rps']:.0f}" for t in targets),
                  flush=True)
        for label, _ in steps:
            procs.pop(label).stop()

        insns = {}
        if not args.no_callgrind:
            for label, d in steps:
                bench.TARGET = d
                port = bench.free_port()
                cmd, env = command(port)
                insns[label] = bench.instructions_per_request(work, label, cmd, env, port,
                                                              f"http://127.0.0.1:{port}/core/api/items",
                                                              args.callgrind_seconds)[0]
                print(f"  {label}: {insns[label]:.0f} instructions/request", flush=True)
    finally:
        for p in procs.values():
            p.stop()

    now = datetime.datetime.now(datetime.timezone.utc)
    nginx_rps = statistics.median(r["rps"] for r in runs["nginx"])
    nginx_cpu = statistics.median(r["cpu_per_100k"] for r in runs["nginx"])
    lines = [f"# Patch series, step by step, {now:%Y-%m-%d %H:%M} UTC", "",
             f"{'pingora-bare' if args.floor else 'gateway-nolog'} of each step beside nginx (1 worker each, pinned as in bench.py), wrk "
             f"{args.conns} connections, {args.rounds} interleaved rounds of {args.seconds} s; req/s as the "
             f"median of per-round ratios to nginx (90% interval). Instructions: callgrind, 16 connections, "
             f"counted under load only. nginx: {nginx_rps:.0f} req/s, {nginx_cpu:.2f} CPU s per 100k requests.",
             "", "| step | req/s | paired vs nginx | CPU s / 100k req | instructions / request | vs first step |",
             "|---|---|---|---|---|---|"]
    first = steps[0][0]
    for label, _ in steps:
        ratio, lo, hi = bench.median_ci([a["rps"] / n["rps"] for a, n in zip(runs[label], runs["nginx"]) if n["rps"]])
        rps = statistics.median(r["rps"] for r in runs[label])
        cpu = statistics.median(r["cpu_per_100k"] for r in runs[label])
        ins = insns.get(label)
        lines.append(f"| {label} | {rps:.0f} | {ratio:.3f}x ({lo:.3f}-{hi:.3f}) | {cpu:.2f} | "
                     + (f"{ins:,.0f} | {ins / insns[first] - 1:+.1%} |" if ins and insns.get(first) else "- | - |"))
    text = "\n".join(lines) + "\n"
    print(text)
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    out = bench.RESULTS / f"series-{now:%Y%m%d-%H%M}.md"
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
