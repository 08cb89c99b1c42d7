#!/usr/bin/env python3
"""Soak: the release gateway under mixed load for a fixed time, with failures injected.

Behind the gateway (2 worker threads), on loopback:
  /core    the demo echo service (bench/src/echo_upstream.rs): keep-alive GETs
  /up      the same, for 256 KiB uploads
  /socket  the same, for WebSocket echo sessions (opened, 50 round trips, closed)
  /flaky   a service that stops listening for 5 s out of every 20 (injected failures:
           502/503 while it is down, 200 otherwise)

Every second the gateway's RSS is sampled. At the end: the RSS curve (PNG), a report
(markdown) in bench/results/, and the checks: no request to a healthy route failed, every
/flaky answer was 200, 502 or 503 (never a hang), and no panic in the log.

Usage: bench/soak.sh [--minutes 10]
"""

import argparse
import asyncio
import datetime
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import free_port, wait_port  # the benchmark's helpers, same folder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET = ROOT / "target" / "release"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Tally:
    def __init__(self):
        self.counts = {}

    def add(self, kind, outcome):
        key = (kind, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1


async def http(port, method, path, body=b""):
    """One request on a fresh connection; returns the status (0: no answer)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        w.write(head.encode() + body)
        await w.drain()
        data = await asyncio.wait_for(r.read(), 30)
        return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0
    finally:
        w.close()


async def keepalive_worker(port, stop, tally):
    """Keep-alive GETs on one connection, reconnecting when it ends."""
    while not stop.is_set():
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(200):
                if stop.is_set():
                    break
                w.write(b"GET /core/items?page=1 HTTP/1.1\r\nHost: soak\r\n\r\n")
                await w.drain()
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await asyncio.wait_for(r.readexactly(length), 30)
                tally.add("keepalive", "ok" if head.startswith(b"HTTP/1.1 200") else head[9:12].decode())
                await asyncio.sleep(0.005)
            w.close()
        except Exception as e:  # noqa: BLE001 - every failure is counted
            tally.add("keepalive", f"error: {type(e).__name__}")


async def upload_worker(port, stop, tally):
    body = os.urandom(256 * 1024)
    while not stop.is_set():
        try:
            status = await http(port, "POST", "/up/upload", body)
            tally.add("upload", "ok" if status == 200 else str(status))
        except Exception as e:  # noqa: BLE001
            tally.add("upload", f"error: {type(e).__name__}")
        await asyncio.sleep(0.05)


async def websocket_worker(port, stop, tally):
    import websockets  # installed by bench/soak.sh
    while not stop.is_set():
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/socket/websocket", max_size=None) as ws:
                for i in range(50):
                    msg = f"frame {i} " + "x" * 200
                    await ws.send(msg)
                    if await asyncio.wait_for(ws.recv(), 30) != msg:
                        raise RuntimeError("echo mismatch")
            tally.add("websocket", "ok")
        except Exception as e:  # noqa: BLE001
            tally.add("websocket", f"error: {type(e).__name__}")
        await asyncio.sleep(0.1)


async def flaky_worker(port, stop, tally):
    while not stop.is_set():
        try:
            status = await asyncio.wait_for(http(port, "GET", "/flaky/x"), 30)
            tally.add("flaky", "ok" if status == 200 else str(status))
        except Exception as e:  # noqa: BLE001
            tally.add("flaky", f"error: {type(e).__name__}")
        await asyncio.sleep(0.02)


async def flaky_service(port, stop):
    """Answers 200 for 15 s, then goes away for 5 s (its open connections closed, nothing
    listening), and again."""
    open_writers = set()

    async def handle(r, w):
        open_writers.add(w)
        try:
            while True:
                await r.readuntil(b"\r\n\r\n")
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await w.drain()
        except Exception:  # noqa: BLE001
            pass
        finally:
            open_writers.discard(w)
            w.close()

    try:
        while not stop.is_set():
            server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
            await asyncio.sleep(15)
            server.close()
            for w in list(open_writers):
                w.close()
            await asyncio.sleep(5)
    except asyncio.CancelledError:
        pass


async def sample_rss(pid, stop, samples):
    start = time.time()
    while not stop.is_set():
        samples.append((time.time() - start, rss_kib(pid)))
        await asyncio.sleep(1)


async def soak(port, pid, seconds):
    stop = asyncio.Event()
    tally = Tally()
    samples = []
    tasks = [asyncio.create_task(sample_rss(pid, stop, samples))]
    tasks += [asyncio.create_task(keepalive_worker(port, stop, tally)) for _ in range(16)]
    tasks += [asyncio.create_task(upload_worker(port, stop, tally)) for _ in range(2)]
    tasks += [asyncio.create_task(websocket_worker(port, stop, tally)) for _ in range(4)]
    tasks += [asyncio.create_task(flaky_worker(port, stop, tally)) for _ in range(2)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return tally, samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="beat-soak-"))
    echo_port, flaky_port, port = free_port(), free_port(), free_port()
    services = {"services": [
        {"name": "core", "host": "127.0.0.1", "port": echo_port, "prefix": "/core", "strip_prefix": True},
        {"name": "upload", "host": "127.0.0.1", "port": echo_port, "prefix": "/up", "strip_prefix": True},
        {"name": "socket", "host": "127.0.0.1", "port": echo_port, "prefix": "/socket"},
        {"name": "flaky", "host": "127.0.0.1", "port": flaky_port, "prefix": "/flaky", "strip_prefix": True,
         "read_timeout_ms": 2000, "connect_timeout_ms": 500},
    ]}
    (work / "services.json").write_text(json.dumps(services))
    echo = subprocess.Popen([str(TARGET / "examples" / "echo_upstream"), str(echo_port)])
    log = open(work / "gateway.log", "w")
    env = dict(os.environ, PROXY_HOST="127.0.0.1", PROXY_PORT=str(port), ADMIN_PORT=str(free_port()),
               PROXY_THREADS="2", RUST_LOG="warn", PROXY_GRACE_SECONDS="1")
    gw = subprocess.Popen([str(TARGET / "beat-gateway"), "--services", str(work / "services.json")],
                          env=env, stderr=log)
    try:
        wait_port(echo_port)
        wait_port(port)
        loop_result = asyncio.run(soak_with_flaky(port, gw.pid, flaky_port, args.minutes * 60))
    finally:
        gw.terminate()
        echo.terminate()
        gw.wait(10)
        echo.wait(10)
        log.close()
    tally, samples = loop_result
    report(args, tally, samples, (work / "gateway.log").read_text())


async def soak_with_flaky(port, pid, flaky_port, seconds):
    stop = asyncio.Event()
    flaky = asyncio.create_task(flaky_service(flaky_port, stop))
    result = await soak(port, pid, seconds)
    stop.set()
    flaky.cancel()
    return result


def report(args, tally, samples, log):
    now = datetime.datetime.now()
    stamp = f"{now:%Y%m%d-%H%M}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    rss = [kib for _, kib in samples]
    minute = max(1, len(rss) // int(args.minutes)) if args.minutes >= 1 else len(rss)
    # Plateau: the mean of the second minute against the mean of the last minute.
    second = rss[minute:2 * minute] or rss
    last = rss[-minute:]
    drift = statistics.mean(last) / statistics.mean(second) - 1
    failures = {k: v for k, v in tally.counts.items() if k[0] != "flaky" and k[1] != "ok"}
    flaky_bad = {k: v for k, v in tally.counts.items() if k[0] == "flaky" and k[1] not in ("ok", "502", "503")}
    panics = log.count("panicked")
    lines = [f"# Soak, {now:%Y-%m-%d %H:%M}", "",
             f"{args.minutes:g} minutes; gateway with 2 worker threads; 16 keep-alive GET loops, 2 upload loops "
             "(256 KiB), 4 WebSocket session loops (50 echoes each), 2 loops on a service that is down 5 s of "
             "every 20.", "",
             "| outcome | count |", "|---|---|"]
    for (kind, outcome), n in sorted(tally.counts.items()):
        lines.append(f"| {kind} {outcome} | {n} |")
    lines += ["", f"RSS: first sample {rss[0] / 1024:.1f} MiB, mean of minute 2 {statistics.mean(second) / 1024:.1f} MiB, "
              f"mean of the last minute {statistics.mean(last) / 1024:.1f} MiB, max {max(rss) / 1024:.1f} MiB: "
              f"drift {drift * 100:+.1f}% from minute 2 to the end.", "",
              f"Failed requests on healthy routes: {sum(failures.values())} {failures or ''}",
              f"Answers on the flaky route other than 200/502/503: {sum(flaky_bad.values())} {flaky_bad or ''}",
              f"Panics in the log: {panics}", "", f"![RSS]({stamp}-soak.png)", ""]
    md = "\n".join(lines)
    (RESULTS / f"{stamp}-soak.md").write_text(md)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot([t / 60 for t, _ in samples], [k / 1024 for k in rss])
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.set_title("beat-gateway RSS under mixed load with failures injected")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stamp}-soak.png", dpi=100)
    print(md)
    print(f"written: bench/results/{stamp}-soak.md and .png")
    if failures or flaky_bad or panics:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
