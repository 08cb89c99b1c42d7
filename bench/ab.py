#!/usr/bin/env python3
"""Paired A/B of two gateway builds: is a change faster, in the time it takes to read this?

Starts the upstream nginx and `gateway-nolog` from each of two directories holding a
`beat-gateway` binary (say, a copy of target/release from before the change, and
target/release), pinned as in bench.py, and runs wrk (64 connections) against them in
alternating order, round by round. Prints B/A for req/s and CPU per request: the median of
the per-round ratios and its 90% bootstrap interval. Nothing is written.

  target/bench-venv/bin/python bench/ab.py DIR_A DIR_B [ROUNDS]   (default 14, ~2.5 min)
"""

import statistics
import sys
import tempfile
from pathlib import Path

import bench


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    dirs = [Path(d) for d in sys.argv[1:3]]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 14
    for d in dirs:
        if not (d / "beat-gateway").is_file():
            sys.exit(f"{d}: no beat-gateway binary")
    work = Path(tempfile.mkdtemp(prefix="beat-ab-"))
    work.chmod(0o755)
    up, echo = bench.free_port(), bench.free_port()
    procs = [bench.upstream_nginx(work, up)]
    try:
        urls, gateways = [], []
        for i, d in enumerate(dirs):
            bench.TARGET = d
            port = bench.free_port()
            gateways.append(bench.gateway(work, f"gateway-{'AB'[i]}", port, up, echo, False))
            procs.append(gateways[-1])
            urls.append(f"http://127.0.0.1:{port}/core/api/items")
        for url in urls:  # warm-up
            bench.run_wrk(url, 64, 2, 1)
        runs = ([], [])
        for r in range(rounds):
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                before = bench.cpu_seconds(gateways[i].pids)
                res = bench.run_wrk(urls[i], 64, 4, 1)
                res["cpu"] = (bench.cpu_seconds(gateways[i].pids) - before) / max(res["requests"], 1) * 1e5
                runs[i].append(res)
        for key, label in (("rps", "req/s"), ("cpu", "CPU s/100k req")):
            ratio, lo, hi = bench.median_ci([b[key] / a[key] for a, b in zip(*runs) if a[key]])
            a, b = (statistics.median(x[key] for x in run) for run in runs)
            print(f"{label}: A {a:.2f}, B {b:.2f}; B/A {ratio:.3f} (90% CI {lo:.3f}-{hi:.3f}), "
                  f"{rounds} paired rounds")
    finally:
        for p in procs:
            p.stop()


if __name__ == "__main__":
    main()
