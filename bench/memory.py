#!/usr/bin/env python3
"""Memory per connection: what an idle keep-alive client connection and an open WebSocket
tunnel cost each proxy, and whether its RSS comes back down after a spike.

For each target (gateway-nolog, the pingora-bare floor, nginx, haproxy), each phase in a
fresh process, every process of the target counted (nginx's master and worker):

  idle   warm up (a few hundred requests on a few connections, closed again), then the base
         RSS; open N keep-alive client connections that each make one request (1 KiB JSON
         from the nginx upstream) and then wait: (RSS - base) / N. Close them all; the RSS
         10 s later against the base (the issue's target: within 20% of it, or 4 MiB,
         whichever is larger).
  ws     warm up (as above, and a few WebSocket round trips), then the base RSS; open N
         WebSocket tunnels through /socket to the echo upstream (bench/src/echo_upstream.rs),
         each sends one message and gets it back, then waits: (RSS - base) / N.

Connections are opened a few dozen at a time, so that the upstream pools hold few
connections and the figure is the client connection's own. The gateway's connection limit
is set out of the way (PROXY_MAX_CONNECTIONS); the open-file limit is raised as bench.py
does. The floor forwards everything to one upstream, so for the WebSocket phase it is
started with the echo upstream as its upstream.

  target/bench-venv/bin/python bench/memory.py [--conns N] [--targets a,b] [--dir DIR]
                                               [--build LABEL=DIR ...] [--label TEXT] [--no-write]

DIR holds `beat-gateway` and `examples/bare_proxy` (default target/release). With --build
(repeatable), the gateway and the floor of each build are measured side by side in the same
run, labelled `gateway-nolog@LABEL`, `pingora-bare@LABEL` (nginx and haproxy once). The table
is printed and written to bench/results/<stamp>-memory.md (unless --no-write).
"""

import argparse
import asyncio
import contextlib
import datetime
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import bench

TARGETS = ["gateway-nolog", "pingora-bare", "nginx", "haproxy"]
# Connections being opened at once: few enough that the proxies' upstream pools stay small.
OPENING = 32
# After the last connection is open (or closed), the time given to the proxy to settle.
SETTLE = 1.0
AFTER_CLOSE = 10.0
REQUEST = b"GET /core/x HTTP/1.1\r\nHost: bench\r\n\r\n"


async def one_request(reader, writer):
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:200]!r}")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    await reader.readexactly(length)


async def open_idle(port, count):
    """`count` keep-alive connections, one request each, left open (their writers)."""
    sem = asyncio.Semaphore(OPENING)

    async def one():
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await one_request(reader, writer)
            return writer

    return await asyncio.gather(*(one() for _ in range(count)))


async def close_all(writers):
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


async def open_tunnels(port, count):
    """`count` WebSocket tunnels through /socket, one message each way, left open."""
    import websockets  # installed by bench/run.sh

    sem = asyncio.Semaphore(OPENING)
    url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
    msg = '["1","1","room:lobby","ping",{"body":"' + "x" * 100 + '"}]'

    async def one():
        async with sem:
            ws = await websockets.connect(url, max_size=None, compression=None, ping_interval=None,
                                          open_timeout=30)
            await ws.send(msg)
            if await ws.recv() != msg:
                raise RuntimeError("the echo answered something else")
            return ws

    return await asyncio.gather(*(one() for _ in range(count)))


async def warm_up(port, websocket):
    """A few hundred requests on a few connections, closed again; with `websocket`, a few
    tunnels as well (their first use initialises what every later one shares)."""
    async def requests(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(n):
            await one_request(reader, writer)
        return writer

    await close_all(await asyncio.gather(*(requests(50) for _ in range(8))))
    if websocket:
        tunnels = await open_tunnels(port, 8)
        await asyncio.gather(*(ws.close() for ws in tunnels))


class Target:
    """Starts a fresh process of one target, for the idle or the WebSocket phase."""

    def __init__(self, work, ports, builds):
        self.work, self.ports, self.builds = work, ports, builds

    def start(self, name, phase):
        name, _, build = name.partition("@")
        if build or name in ("gateway-nolog", "pingora-bare"):
            bench.TARGET = self.builds[build]
        port = bench.free_port()
        up, echo = self.ports["up"], self.ports["echo"]
        if name == "gateway-nolog":
            cmd, env = bench.gateway_cmd(self.work, port, up, echo, False)
            env["PROXY_MAX_CONNECTIONS"] = "1000000"
            proc = bench.Proc(name, cmd, port, env, open(self.work / f"{name}{build}-{phase}.log", "w"))
        elif name == "pingora-bare":
            proc = bench.Proc(name, bench.bare_cmd(name, port, echo if phase == "ws" else up), port)
        elif name == "nginx":
            proc = bench.nginx_proxy(self.work, port, up, echo)
        elif name == "haproxy":
            proc = bench.haproxy(self.work, port, up, echo)
        else:
            raise SystemExit(f"unknown target {name}")
        return proc, port


def settle_rss(pids):
    time.sleep(SETTLE)
    return bench.rss_kib(pids)


@contextlib.contextmanager
def warmed(target, name, phase):
    """A fresh process of target `name` for `phase` ("idle" or "ws"), warmed up: its
    process, port and base RSS; stopped afterwards."""
    proc, port = target.start(name, phase)
    try:
        asyncio.run(warm_up(port, phase == "ws"))
        yield proc, port, settle_rss(proc.pids)
    finally:
        proc.stop()


def measure(target, name, n):
    row = {}
    # Idle keep-alive connections, then the RSS after they close.
    with warmed(target, name, "idle") as (proc, port, row["base"]):

        async def idle():
            writers = await open_idle(port, n)
            row["idle"] = settle_rss(proc.pids)
            await close_all(writers)
            row["closed_1s"] = settle_rss(proc.pids)
            await asyncio.sleep(AFTER_CLOSE - SETTLE)
            row["closed"] = bench.rss_kib(proc.pids)

        asyncio.run(idle())
    # WebSocket tunnels, in a fresh process.
    with warmed(target, name, "ws") as (proc, port, row["ws_base"]):

        async def tunnels():
            sockets = await open_tunnels(port, n)
            row["ws"] = settle_rss(proc.pids)
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

        asyncio.run(tunnels())
    row["idle_per_conn"] = (row["idle"] - row["base"]) / n
    row["ws_per_conn"] = (row["ws"] - row["ws_base"]) / n
    # The target: back within 20% of the base, or 4 MiB, whichever is larger.
    row["closed_ok"] = row["closed"] - row["base"] <= max(0.2 * row["base"], 4096)
    return row


def rel(path):
    return path.relative_to(bench.ROOT) if path.is_relative_to(bench.ROOT) else path


def report(args, rows):
    now = datetime.datetime.now(datetime.timezone.utc)
    m = bench.machine()
    mib = lambda kib: f"{kib / 1024:.1f}"
    lines = [f"# beat-gateway memory per connection, {now:%Y-%m-%d %H:%M} UTC", ""]
    if args.label:
        lines += [args.label, ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in m.items()] + [""]
    lines += [f"N = {args.conns} connections per phase; every target a fresh process per phase, one worker "
              "(nginx: master and worker counted). RSS growth / N, after a warm-up of 400 requests "
              "(and 8 WebSocket tunnels for the tunnel phase). Binaries from "
              + ", ".join((f"{label}: " if label else "") + f"`{rel(path)}`"
                          for label, path in args.builds.items()) + ".",
              "",
              "| target | base RSS MiB | idle keep-alive KiB/conn | with N idle MiB | 1 s after close MiB "
              f"| {AFTER_CLOSE:.0f} s after close MiB | vs base | back (<= 20% or 4 MiB) | tunnel base MiB "
              "| WebSocket tunnel KiB/conn |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {mib(r['base'])} | {r['idle_per_conn']:.1f} | {mib(r['idle'])} | "
                     f"{mib(r['closed_1s'])} | {mib(r['closed'])} | {r['closed'] / r['base']:.2f}x | "
                     f"{'yes' if r['closed_ok'] else 'no'} | {mib(r['ws_base'])} | {r['ws_per_conn']:.1f} |")
    lines += ["", "Targets (issue 24): <= 8 KiB per idle keep-alive connection (aim 4), <= 24 KiB per "
              "WebSocket tunnel (aim: nginx's), RSS back within 20% (or 4 MiB) of the base 10 s after "
              "the idle connections close.", ""]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        bench.RESULTS.mkdir(parents=True, exist_ok=True)
        path = bench.RESULTS / f"{now:%Y%m%d-%H%M}-memory.md"
        path.write_text(md)
        print(f"written: {path.relative_to(bench.ROOT)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--dir", help="directory of beat-gateway and examples/bare_proxy (default target/release)")
    ap.add_argument("--build", action="append", default=[], metavar="LABEL=DIR",
                    help="a build to measure beside the others (repeatable): its gateway and floor")
    ap.add_argument("--label", default="", help="a line for the report (what build this is)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()
    if args.dir:
        bench.TARGET = Path(args.dir).resolve()
    builds = {}
    for spec in args.build:
        label, sep, path = spec.partition("=")
        if not sep or not label:
            sys.exit(f"--build {spec}: expected LABEL=DIR")
        builds[label] = Path(path).resolve()
    names = []
    for name in args.targets.split(","):
        if builds and name in ("gateway-nolog", "pingora-bare"):
            names += [f"{name}@{label}" for label in builds]
        else:
            names.append(name)
    if not builds:
        builds[""] = bench.TARGET
    echo_dir = next(iter(builds.values()))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    # A tunnel takes 2 descriptors in the proxy, 1 here and 1 in the echo.
    if want < 2 * args.conns + 1000:
        sys.exit(f"open-file limit {want} is too low for {args.conns} connections")

    work = Path(tempfile.mkdtemp(prefix="beat-memory-"))
    work.chmod(0o755)  # nginx workers run unprivileged when started as root
    ports = {"up": bench.free_port(), "echo": bench.free_port()}
    helpers = []
    try:
        helpers.append(bench.upstream_nginx(work, ports["up"]))
        helpers.append(bench.Proc("echo", [str(echo_dir / "examples" / "echo_upstream"), str(ports["echo"])],
                                  ports["echo"], cpu=bench.LOAD_CPU))
        target = Target(work, ports, builds)
        rows = {}
        for name in names:
            rows[name] = measure(target, name, args.conns)
            r = rows[name]
            print(f"  {name}: idle {r['idle_per_conn']:.1f} KiB/conn, base {r['base'] / 1024:.1f} MiB, "
                  f"{AFTER_CLOSE:.0f} s after close {r['closed'] / 1024:.1f} MiB; "
                  f"tunnel {r['ws_per_conn']:.1f} KiB", flush=True)
        args.builds = builds
        bench.TARGET = echo_dir
        report(args, rows)
    finally:
        for p in helpers:
            p.stop()


if __name__ == "__main__":
    main()
