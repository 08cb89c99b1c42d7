#!/usr/bin/env python3
"""User-space instructions per request of gateway-nolog and the floor, counters on only under load.

bench.py's callgrind figure spreads startup over the requests; this one starts each server
under `valgrind --tool=callgrind --instr-atstart=no`, warms it up, switches the counters on
(`callgrind_control -i on`) for a 10 s wrk run (16 connections) and off again, so the figure
is the steady state: repeatable to ~0.3% from run to run. It keeps the callgrind files for
`callgrind_annotate` (`--inclusive=yes`, `--tree=caller`) and prints where they are.

  target/bench-venv/bin/python bench/callgrind.py [gateway|bare|both] [DIR] [-- VALGRIND_ARGS]

DIR holds `beat-gateway` and `examples/bare_proxy` (default target/release); extra valgrind
arguments such as `--cache-sim=yes --branch-sim=yes` follow `--`.
"""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import bench


def measure(work, name, cmd, env, port, extra):
    out = work / f"callgrind.{name}.out"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", *extra,
                             f"--callgrind-out-file={out}", *cmd], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=open(work / f"callgrind.{name}.log", "w"),
                            start_new_session=True)
    try:
        bench.wait_port(port, timeout=60)
        url = f"http://127.0.0.1:{port}/core/api/items"
        bench.run_wrk(url, 16, 2, 1)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
        res = bench.run_wrk(url, 16, 10, 1)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    total = sum(int(line.split()[1]) for line in out.read_text(errors="replace").splitlines()
                if line.startswith("totals:"))
    print(f"{name}: {total / max(res['requests'], 1):.0f} instructions/request over {res['requests']} "
          f"requests -> {out}", flush=True)


def main():
    args = sys.argv[1:]
    extra = args[args.index("--") + 1:] if "--" in args else []
    args = args[:args.index("--")] if "--" in args else args
    which = args[0] if args else "both"
    if len(args) > 1:
        bench.TARGET = Path(args[1])
    work = Path(tempfile.mkdtemp(prefix="beat-callgrind-"))
    work.chmod(0o755)
    up, echo = bench.free_port(), bench.free_port()
    upstream = bench.upstream_nginx(work, up)
    try:
        if which in ("gateway", "both"):
            port = bench.free_port()
            cmd, env = bench.gateway_cmd(work, port, up, echo, False)
            measure(work, "gateway-nolog", cmd, env, port, extra)
        if which in ("bare", "both"):
            port = bench.free_port()
            cmd = [str(bench.TARGET / "examples" / "bare_proxy"), str(port), str(up)]
            measure(work, "pingora-bare", cmd, {}, port, extra)
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
