#!/usr/bin/env python3
"""User-space instructions per request of gateway-nolog and the floor, counters on only under load.

Counted as in bench.py's full report (`bench.instructions_per_request`: only during the load,
after a warm-up; repeatable to ~0.3%), here during a 10 s wrk run (16 connections), for the
targets chosen, without the rest of the benchmark. It keeps the callgrind files for
`callgrind_annotate` (`--inclusive=yes`, `--tree=caller`) and prints where they are.

  target/bench-venv/bin/python bench/callgrind.py [gateway|bare|both|floors|all|session] [DIR] [-- VALGRIND_ARGS]

`floors` runs pingora-bare, pingora-bare-timeouts and pingora-bare-required; `all`, those and
the gateway; `session`, gateway-jwt and gateway-session (bench.py's: a token on every
request, verified; and checked against a Redis on loopback).

DIR holds `beat-gateway` and `examples/bare_proxy` (default target/release); extra valgrind
arguments such as `--cache-sim=yes --branch-sim=yes` follow `--`.
"""

import sys
import tempfile
from pathlib import Path

import bench


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
    stops = []
    try:
        runs = []
        if which in ("gateway", "both", "all"):
            port = bench.free_port()
            runs.append(("gateway-nolog", *bench.gateway_cmd(work, port, up, echo, False), port))
        floors = {"floors": list(bench.FLOORS), "all": list(bench.FLOORS), "bare": ["pingora-bare"],
                  "both": ["pingora-bare"]}.get(which, [])
        for name in floors:
            port = bench.free_port()
            runs.append((name, bench.bare_cmd(name, port, up), {}, port))
        header = None
        if which == "session":
            jwks_url, token, _jwks = bench.jwt_fixture(work)
            header = f"Authorization: Bearer {token}"
            store, redis_url = bench.session_store(bench.free_port(), token)
            stops.append(store)
            for name, session in [("gateway-jwt", None), ("gateway-session", redis_url)]:
                port = bench.free_port()
                runs.append((name, *bench.gateway_cmd(work, port, up, echo, False, jwks_url,
                                                      session_redis=session), port))
        for name, cmd, env, port in runs:
            per_request, requests = bench.instructions_per_request(
                work, name, cmd, env, port, f"http://127.0.0.1:{port}/core/api/items", 10, extra=extra,
                header=header)
            print(f"{name}: {per_request:.0f} instructions/request over {requests} requests -> "
                  f"{work / f'callgrind.{name}.out'}", flush=True)
    finally:
        for p in stops:
            p.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
