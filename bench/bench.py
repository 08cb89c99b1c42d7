#!/usr/bin/env python3
"""Side-by-side benchmark: beat-gateway against nginx and haproxy doing the same job.

Everything runs on loopback. One upstream nginx (1 worker) serves a 1 KiB JSON body and a
10 MiB file; a small echo server (bench/src/echo_upstream.rs) plays the WebSocket echo and
the upload sink. In front of them, each doing the gateway's job (strip the /core prefix, add
X-Request-ID upstream, add the two security headers, keep upstream connections alive):

  direct        wrk straight to the upstream (the ceiling)
  nginx         1 worker, no access log
  nginx-log     the same with its access log on (buffered, to a file): the like-for-like
                peer of the logging gateway
  haproxy       1 thread
  gateway       beat-gateway, 1 worker thread, access log on (to a file, as in production)
  gateway-nolog the same with the access log off
  pingora-bare  a bare Pingora proxy that only forwards (bench/src/bare_proxy.rs): the cost
                of the gateway's features is measured against it

and, in the HTTP rounds only, gateway-nolog with one thing changed, to price it:

  gateway-jwt        a route with required auth and a valid RS256 token per request
  gateway-session    gateway-jwt with JWT_SESSION_CHECK=current against a redis-server on
                     loopback holding the token (a busy client: one lookup a second)
  gateway-nometrics  ADMIN_METRICS=off
  gateway-3          three instances behind /core (round robin) instead of one

and pingora-bare-timeouts: the floor with the gateway's upstream timeouts (Pingora's timers);
pingora-bare-required: that, also starting a W3C trace per request (one more header insert).

Besides wall-clock figures, the gateway (log on and off) and the bare proxy are run under
callgrind for a fixed load: user-space instructions per request are repeatable where req/s
on a shared VM is not, so the cost of each feature shows without noise.

Rounds are interleaved (every target once per round, in rotating order) so that machine
noise hits all alike. Medians over rounds are reported, with each proxy's ratio to nginx.

Usage: bench/run.sh [--quick] (installs what is missing, builds, then runs this).
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET = ROOT / "target" / "release"
BODY_1K = json.dumps({"status": "ok", "data": "x" * 990})[:1024]
BIG = 10 * 1024 * 1024
TICKS = os.sysconf("SC_CLK_TCK")


# With two or more cores, the proxy under test gets a core of its own and the load
# generator and the upstreams share another, so that a proxy's throughput is its own
# efficiency rather than the luck of the scheduler.
PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
PROXY_CPU, LOAD_CPU = "1", "0"


def pinned(cpu, cmd):
    return ["taskset", "-c", cpu, *cmd] if PIN else cmd


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total / TICKS


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
    except OSError:
        return []


class Proc:
    """A server process group; `pids` are the processes whose CPU and memory count."""

    def __init__(self, name, cmd, port, env=None, stderr=None, worker_children=False, cpu=PROXY_CPU):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(
            pinned(cpu, cmd), env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
            stderr=stderr or subprocess.DEVNULL, start_new_session=True)
        wait_port(port)
        time.sleep(0.2)
        self.pids = [self.proc.pid] + (children(self.proc.pid) if worker_children else [])

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def nginx_conf(work, port, body, master=True):
    return f"""
worker_processes 1;
daemon off;
master_process {"on" if master else "off"};
pid {work}/nginx-{port}.pid;
error_log {work}/nginx-{port}.err warn;
worker_rlimit_nofile {resource.getrlimit(resource.RLIMIT_NOFILE)[1]};
events {{ worker_connections 30000; }}
http {{
  access_log off;
  client_body_temp_path {work}/body-{port};
  proxy_temp_path {work}/proxy-{port};
  fastcgi_temp_path {work}/fcgi-{port};
  uwsgi_temp_path {work}/uwsgi-{port};
  scgi_temp_path {work}/scgi-{port};
  keepalive_requests 100000;
  {body}
}}
"""


def upstream_nginx(work, port, more_ports=()):
    """The upstream; `more_ports` are the same server on other ports (the instances of the
    three-instance gateway: one process, so the upstream's cost does not change)."""
    (work / "www").mkdir(exist_ok=True)
    (work / "www" / "big.bin").write_bytes(os.urandom(BIG))
    more = "".join(f"\n    listen 127.0.0.1:{p} backlog=4096;" for p in more_ports)
    conf = nginx_conf(work, port, f"""
  server {{
    listen 127.0.0.1:{port} backlog=4096;{more}
    root {work}/www;
    client_max_body_size 0;
    location /big.bin {{ }}
    location / {{ default_type application/json; return 200 '{BODY_1K}'; }}
  }}""")
    path = work / f"nginx-{port}.conf"
    path.write_text(conf)
    return Proc("upstream", ["nginx", "-c", str(path), "-e", str(work / "nginx-early.err")], port,
                worker_children=True, cpu=LOAD_CPU)


def nginx_proxy_cmd(work, port, up, echo, name="nginx", log=False, master=True):
    """nginx doing the gateway's job; `master=False` runs the one worker in the first process
    (the same request path, for callgrind, which then follows a single process)."""
    access_log = f"access_log {work}/{name}-access.log combined buffer=64k flush=1s;" if log else ""
    conf = nginx_conf(work, port, f"""
  {access_log}
  upstream up {{ server 127.0.0.1:{up}; keepalive 128; }}
  upstream echo {{ server 127.0.0.1:{echo}; keepalive 32; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    add_header X-Frame-Options DENY always;
    add_header X-Content-Type-Options nosniff always;
    proxy_http_version 1.1;
    proxy_set_header X-Request-ID $request_id;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    location /core/ {{ proxy_pass http://up/; proxy_set_header Connection ""; }}
    location /up/ {{ proxy_pass http://echo/; proxy_set_header Connection ""; }}
    location /socket/ {{
      proxy_pass http://echo;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
    }}
  }}""", master)
    path = work / f"nginx-{port}{'' if master else '-single'}.conf"
    path.write_text(conf)
    return ["nginx", "-c", str(path), "-e", str(work / "nginx-early.err")]


def nginx_proxy(work, port, up, echo, name="nginx", log=False):
    return Proc(name, nginx_proxy_cmd(work, port, up, echo, name, log), port, worker_children=True)


def haproxy_cmd(work, port, up, echo):
    conf = f"""
global
  nbthread 1
  maxconn 12000
  no strict-limits
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  http-request set-header X-Request-ID %[uuid()]
  http-request set-header X-Forwarded-For %[src]
  http-response set-header X-Frame-Options DENY
  http-response set-header X-Content-Type-Options nosniff
  use_backend be_up if {{ path_beg /core/ }}
  use_backend be_echo_strip if {{ path_beg /up/ }}
  default_backend be_echo
backend be_up
  http-request replace-path /core(/.*) \\1
  server s1 127.0.0.1:{up}
backend be_echo_strip
  http-request replace-path /up(/.*) \\1
  server s1 127.0.0.1:{echo}
backend be_echo
  server s1 127.0.0.1:{echo}
"""
    path = work / f"haproxy-{port}.cfg"
    path.write_text(conf)
    return ["haproxy", "-f", str(path), "-db"]


def haproxy(work, port, up, echo):
    return Proc("haproxy", haproxy_cmd(work, port, up, echo), port, stderr=open(work / "haproxy.err", "w"))


def jwt_fixture(work):
    """An RSA key made with the openssl command line (as the auth service's), its JWKS served
    on a free loopback port, and an RS256 access token signed with it (openssl signs the
    JWT's signing input). Returns (JWKS URL, token, server)."""
    import base64
    import hashlib
    import http.server
    import threading

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def openssl(*args, data=None):
        return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout

    key = work / "jwt-key.pem"
    openssl("genrsa", "-out", str(key), "2048")
    kid = hashlib.sha256(openssl("rsa", "-in", str(key), "-pubout", "-outform", "DER")).hexdigest()
    modulus = openssl("rsa", "-in", str(key), "-noout", "-modulus").decode().strip().split("=", 1)[1]
    jwks = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                                 "n": b64(bytes.fromhex(modulus)), "e": "AQAB"}]}).encode()
    now = int(time.time())
    header = {"alg": "RS256", "typ": "access", "kid": kid}
    claims = {"iss": "bench-issuer", "aud": ["bench-audience"], "sub": "bench-user", "iat": now,
              "exp": now + 86400, "jti": "bench", "email": "bench@example.org", "role": "client",
              "profile_id": "p-1", "profile_ids": ["p-1"], "scope": ["orders:read", "orders:write"]}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = openssl("dgst", "-sha256", "-sign", str(key), data=signing_input.encode())
    token = f"{signing_input}.{b64(signature)}"

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", token, server


def session_store(port, token):
    """The auth service's Redis on `port`, holding the bench user's current token (on the
    load CPU: its cost is not the gateway's). Returns (process, URL)."""
    proc = Proc("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                          "--appendonly", "no"], port, cpu=LOAD_CPU)
    subprocess.run(["redis-cli", "-p", str(port), "SET", "bench-user:access", token], capture_output=True,
                   check=True)
    return proc, f"redis://127.0.0.1:{port}/0"


def gateway_cmd(work, port, up, echo, log, jwks_url=None, instances=(), metrics=True, target=None,
                session_redis=None):
    """The gateway's command line and environment (the services file is written here).
    With `jwks_url`, `/core` requires a token verified against it; with `instances` (ports),
    `/core` has those upstreams instead of `up`; `metrics=False` sets ADMIN_METRICS=off;
    `session_redis` (a Redis URL) turns the current-session check on."""
    core = {"name": "core-service", "host": "127.0.0.1", "port": up, "prefix": "/core", "strip_prefix": True}
    if jwks_url:
        core["auth"] = {"mode": "required"}
    if instances:
        del core["host"], core["port"]
        core["upstreams"] = [{"host": "127.0.0.1", "port": p} for p in instances]
    services = {"services": [
        core,
        {"name": "upload", "host": "127.0.0.1", "port": echo, "prefix": "/up", "strip_prefix": True},
        {"name": "websocket", "host": "127.0.0.1", "port": echo, "prefix": "/socket"},
    ]}
    path = work / f"services-{port}.json"
    path.write_text(json.dumps(services))
    env = {"PROXY_HOST": "127.0.0.1", "PROXY_PORT": str(port), "ADMIN_PORT": str(free_port()), "PROXY_THREADS": "1",
           "RUST_LOG": "info" if log else "warn", "PROXY_GRACE_SECONDS": "0"}
    if jwks_url:
        env.update({"JWKS_URL": jwks_url, "JWT_ISSUER": "bench-issuer", "JWT_AUDIENCE": "bench-audience"})
    if not metrics:
        env["ADMIN_METRICS"] = "off"
    if session_redis:
        env.update({"JWT_SESSION_CHECK": "current", "JWT_SESSION_REDIS_URL": session_redis})
    return [str((target or TARGET) / "beat-gateway"), "--services", str(path)], env


def gateway(work, name, port, up, echo, log, jwks_url=None, instances=(), metrics=True, target=None,
            session_redis=None):
    cmd, env = gateway_cmd(work, port, up, echo, log, jwks_url, instances, metrics, target, session_redis)
    stderr = open(work / f"{name}.log", "a")
    return Proc(name, cmd, port, env, stderr)


def instructions_per_request(work, name, cmd, env, port, url, seconds, extra=(), header=None):
    """Run `cmd` under callgrind, load it with wrk for `seconds`, and return user-space
    instructions per request and the number of requests. Counted only during that load
    (`--instr-atstart=no`, then `callgrind_control -i on/off`), after a warm-up: startup is
    not spread over the requests, so the figure repeats to ~0.3%. `extra`: more valgrind
    arguments. The callgrind file stays in `work` for `callgrind_annotate`."""
    out_file = work / f"callgrind.{name}.out"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", *extra,
                             f"--callgrind-out-file={out_file}", *cmd],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=open(work / f"callgrind.{name}.log", "w"), start_new_session=True)
    try:
        wait_port(port, timeout=60)
        run_wrk(url, 16, 2, 1, header)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
        res = run_wrk(url, 16, seconds, 1, header)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True)
    finally:
        # SIGINT stops Pingora at once; haproxy only stops on it once its clients are gone,
        # so SIGTERM after a few seconds. callgrind writes its file on the way out.
        for sig, wait in ((signal.SIGINT, 5), (signal.SIGTERM, 60)):
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # `totals:` (the first event, instructions); with the counters off at start, the
    # header's `summary:` says 0.
    total = 0
    for line in out_file.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            total = int(line.split()[1])
    return total / max(res["requests"], 1), res["requests"]


def wait_for_200(url, header=None, timeout=15.0):
    """Until the gateway answers 200 (with a token: once it has loaded its keys)."""
    deadline = time.time() + timeout
    while True:
        extra = ["-H", header] if header else []
        out = subprocess.run(["curl", "-si", *extra, url], capture_output=True, text=True).stdout
        if out.startswith("HTTP/1.1 200"):
            return
        assert time.time() < deadline, f"{url}: {out[:300]}"
        time.sleep(0.2)


# The floors (bench/src/bare_proxy.rs) and their flags: the floor; with the
# gateway's upstream timeouts; with those and a W3C trace started per request.
FLOORS = {"pingora-bare": [], "pingora-bare-timeouts": ["timeouts"],
          "pingora-bare-required": ["timeouts", "trace"]}


def bare_cmd(name, port, up):
    return [str(TARGET / "examples" / "bare_proxy"), str(port), str(up), *FLOORS[name]]


def bare(name, port, up):
    return Proc(name, bare_cmd(name, port, up), port)


def parse_wrk(text):
    def seconds(v):
        m = re.match(r"([\d.]+)(us|ms|s|m)", v)
        n, unit = float(m.group(1)), m.group(2)
        return n * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    p50 = seconds(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
    p99 = seconds(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {"rps": rps, "requests": total, "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3,
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def run_wrk(url, conns, seconds, threads, header=None):
    extra = ["-H", header] if header else []
    out = subprocess.run(pinned(LOAD_CPU, ["wrk"]) + [f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency",
                                                      *extra, url],
                         capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


async def ws_round_trips(port, count):
    import websockets  # installed by bench/run.sh
    async with websockets.connect(f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0",
                                  max_size=None, compression=None) as ws:
        msg = '["1","1","room:lobby","ping",{"body":"' + "x" * 100 + '"}]'
        for _ in range(100):
            await ws.send(msg)
            await ws.recv()
        start = time.perf_counter()
        for _ in range(count):
            await ws.send(msg)
            assert await ws.recv() == msg
        return count / (time.perf_counter() - start)


def transfer(url, upload=None):
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download}", url]
    if upload:
        cmd[1:1] = ["-X", "POST", "-H", "Expect:", "--data-binary", f"@{upload}"]
    code, secs, size = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    if code != "200" or (not upload and int(size) != BIG):
        raise RuntimeError(f"{url}: status {code}, {size} bytes")
    return BIG / float(secs) / 2**20


async def idle_connections(port, count):
    """Open `count` keep-alive connections, one request each, and leave them open."""
    req = b"GET /core/x HTTP/1.1\r\nHost: bench\r\n\r\n"
    conns = []
    sem = asyncio.Semaphore(500)

    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(req)
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await r.readexactly(length)
            conns.append(w)

    await asyncio.gather(*(one() for _ in range(count)))
    return conns


def median_ci(ratios):
    """The median of per-round ratios and a 90% confidence interval of that median
    (bootstrap over the rounds, seeded so that a report can be reproduced)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return statistics.median(ratios), medians[100], medians[1899]


def machine():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    versions = {
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
        if subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout else "wrk",
        # A floor-only build (bench/series.sh --floor) has no gateway.
        "beat-gateway": subprocess.run([str(TARGET / "beat-gateway"), "--version"], capture_output=True,
                                       text=True).stdout.strip() if (TARGET / "beat-gateway").exists() else "-",
    }
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem, "kernel": platform.release(),
            "os": Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "",
            **versions}


def fmt_ratio(v, base):
    return f"{v / base:.2f}x" if base else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs, for trying the harness")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--conns", default="16,64,256")
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--http-only", action="store_true", help="skip WebSocket, streaming and idle runs")
    ap.add_argument("--targets", default="", help="comma-separated subset of the proxies (nginx is always in)")
    ap.add_argument("--no-callgrind", action="store_true", help="skip the instructions-per-request runs")
    ap.add_argument("--callgrind-seconds", type=int, default=8)
    ap.add_argument("--restart", action="store_true",
                    help="start the gateways and the floors afresh every round (see bench/README.md)")
    ap.add_argument("--before", metavar="DIR", type=Path,
                    help="a directory holding the gateway built before the patch series (beat-gateway): "
                         "run as gateway-before (access log off) in the HTTP rounds and under callgrind")
    args = ap.parse_args()
    if args.before and not (args.before / "beat-gateway").is_file():
        ap.error(f"--before {args.before}: no beat-gateway there")
    if args.quick:
        args.rounds, args.seconds, args.idle = 1, 2, 2000
    conns_list = [int(c) for c in args.conns.split(",")]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < args.idle + 1000:
        sys.exit(f"open-file limit {want} is too low for {args.idle} idle connections")

    work = Path(tempfile.mkdtemp(prefix="beat-bench-"))
    work.chmod(0o755)  # nginx workers run unprivileged when started as root
    ports = {n: free_port() for n in ["up", "up-2", "up-3", "echo", "nginx", "nginx-log", "haproxy", "gateway",
                                           "gateway-nolog", "pingora-bare", "gateway-jwt", "gateway-nometrics",
                                           "gateway-3", "pingora-bare-timeouts", "pingora-bare-required",
                                           "gateway-before", "gateway-session", "redis"]}
    procs = {}
    try:
        procs["up"] = upstream_nginx(work, ports["up"], (ports["up-2"], ports["up-3"]))
        procs["echo"] = Proc("echo", [str(TARGET / "examples" / "echo_upstream"), str(ports["echo"])], ports["echo"],
                             cpu=LOAD_CPU)
        procs["nginx"] = nginx_proxy(work, ports["nginx"], ports["up"], ports["echo"])
        procs["nginx-log"] = nginx_proxy(work, ports["nginx-log"], ports["up"], ports["echo"], "nginx-log", True)
        procs["haproxy"] = haproxy(work, ports["haproxy"], ports["up"], ports["echo"])
        jwks_url, token, jwks_server = jwt_fixture(work)
        procs["redis"], session_redis = session_store(ports["redis"], token)
        # The Rust proxies, as functions: `--restart` starts them afresh every round.
        start = {f: (lambda f=f: bare(f, ports[f], ports["up"])) for f in FLOORS}
        start |= {
            "gateway": lambda: gateway(work, "gateway", ports["gateway"], ports["up"], ports["echo"], True),
            "gateway-nolog": lambda: gateway(work, "gateway-nolog", ports["gateway-nolog"], ports["up"], ports["echo"],
                                             False),
            "gateway-jwt": lambda: gateway(work, "gateway-jwt", ports["gateway-jwt"], ports["up"], ports["echo"], False,
                                           jwks_url),
            "gateway-session": lambda: gateway(work, "gateway-session", ports["gateway-session"], ports["up"],
                                               ports["echo"], False, jwks_url, session_redis=session_redis),
            "gateway-nometrics": lambda: gateway(work, "gateway-nometrics", ports["gateway-nometrics"], ports["up"],
                                                 ports["echo"], False, metrics=False),
            "gateway-3": lambda: gateway(work, "gateway-3", ports["gateway-3"], ports["up"], ports["echo"], False,
                                         instances=(ports["up"], ports["up-2"], ports["up-3"])),
        }
        if args.before:
            start["gateway-before"] = lambda: gateway(work, "gateway-before", ports["gateway-before"], ports["up"],
                                                      ports["echo"], False, target=args.before)
        for name, begin in start.items():
            procs[name] = begin()
        # Only the HTTP rounds, each gateway-nolog with one thing changed: a valid token per
        # request; metrics off; three instances behind /core (round robin).
        header = {"gateway-jwt": f"Authorization: Bearer {token}", "gateway-session": f"Authorization: Bearer {token}"}

        proxies = ["nginx", "nginx-log", "haproxy", "gateway", "gateway-nolog", "pingora-bare"]
        if args.targets:
            keep = set(args.targets.split(",")) | {"nginx"}
            proxies = [p for p in proxies if p in keep]
        http_extra = [t for t in ["gateway-jwt", "gateway-session", "gateway-nometrics", "gateway-3",
                                  "pingora-bare-timeouts", "pingora-bare-required"]
                      if not args.targets or t in args.targets.split(",")]
        http_extra += ["gateway-before"] if args.before else []
        targets = ["direct"] + proxies + http_extra
        url = {t: f"http://127.0.0.1:{ports[t]}/core/api/items" for t in proxies + http_extra}
        url["direct"] = f"http://127.0.0.1:{ports['up']}/api/items"

        # Sanity: every proxy does the job (strips, answers 200 with the security headers).
        for t in proxies:
            out = subprocess.run(["curl", "-si", url[t]], capture_output=True, text=True).stdout
            assert out.startswith("HTTP/1.1 200"), f"{t}: {out[:200]}"
            assert "x-frame-options: deny" in out.lower(), f"{t} lacks the security header"
        for t in http_extra:
            wait_for_200(url[t], header.get(t))

        http = {c: {t: [] for t in targets} for c in conns_list}
        for c in conns_list:
            for t in targets:  # warm-up
                run_wrk(url[t], c, 1, 1, header.get(t))
            for r in range(args.rounds):
                if args.restart and r > 0:
                    # A process's speed depends a little on its own start (memory layout):
                    # fresh processes each round put that into the interval too.
                    for t in targets:
                        if t in start:
                            procs[t].stop()
                            procs[t] = start[t]()
                            wait_for_200(url[t], header.get(t))
                            run_wrk(url[t], c, 1, 1, header.get(t))
                order = targets[r % len(targets):] + targets[:r % len(targets)]
                for t in order:
                    pids = procs["up" if t == "direct" else t].pids
                    before = cpu_seconds(pids)
                    res = run_wrk(url[t], c, args.seconds, 1, header.get(t))
                    assert res["non2xx"] == 0, f"{t}: {res['non2xx']} non-2xx responses"
                    res["cpu_per_100k"] = (cpu_seconds(pids) - before) / max(res["requests"], 1) * 1e5
                    http[c][t].append(res)
                    print(f"  c={c:<4} {t:<14} {res['rps']:>9.0f} req/s  p99 {res['p99_ms']:.2f} ms", flush=True)

        def med(c, t, key):
            return statistics.median(r[key] for r in http[c][t])

        def paired(c, t, key, base="nginx"):
            """Ratios to `base` round by round (the two ran a minute apart at most, so a slow
            spell of the VM hits both), with `median_ci`."""
            return median_ci([r[key] / n[key] for r, n in zip(http[c][t], http[c][base]) if n[key]])

        def count_instructions():
            """Instructions per request: the servers are stopped first so that callgrind's
            runs (one at a time) have the machine to themselves."""
            insns = {}
            if shutil.which("valgrind") and not args.no_callgrind:
                for t in ["gateway", "gateway-nolog", "pingora-bare", "gateway-before", "nginx", "haproxy"]:
                    if t in procs:
                        procs.pop(t).stop()
                cg_port = free_port()
                cg_url = f"http://127.0.0.1:{cg_port}/core/api/items"
                for name, log in (("gateway", True), ("gateway-nolog", False)):
                    cmd, env = gateway_cmd(work, cg_port, ports["up"], ports["echo"], log)
                    insns[name] = instructions_per_request(work, name, cmd, env, cg_port, cg_url, args.callgrind_seconds)
                    print(f"  {name}: {insns[name][0]:.0f} instructions/request (callgrind)", flush=True)
                for name in FLOORS:
                    insns[name] = instructions_per_request(work, name, bare_cmd(name, cg_port, ports["up"]), {}, cg_port,
                                                           cg_url, args.callgrind_seconds)
                    print(f"  {name}: {insns[name][0]:.0f} instructions/request (callgrind)", flush=True)
                peers = {"nginx": (nginx_proxy_cmd(work, cg_port, ports["up"], ports["echo"], master=False), {}),
                         "haproxy": (haproxy_cmd(work, cg_port, ports["up"], ports["echo"]), {})}
                if args.before:
                    peers["gateway-before"] = gateway_cmd(work, cg_port, ports["up"], ports["echo"], False,
                                                          target=args.before)
                for name, (cmd, env) in peers.items():
                    insns[name] = instructions_per_request(work, name, cmd, env, cg_port, cg_url, args.callgrind_seconds)
                    print(f"  {name}: {insns[name][0]:.0f} instructions/request (callgrind)", flush=True)
            return insns

        if args.http_only:
            insns = count_instructions()
            for c in conns_list:
                print(" | ".join(f"{t} {med(c, t, 'rps'):.0f} (paired {paired(c, t, 'rps')[0]:.2f}x, "
                                 f"{med(c, t, 'cpu_per_100k'):.2f} cpu-s/100k)" for t in targets))
            report(args, conns_list, targets, proxies, med, paired, None, None, None, None, None, insns)
            return

        ws = {t: [] for t in proxies}
        down = {t: [] for t in proxies}
        up = {t: [] for t in proxies}
        upload_file = work / "upload.bin"
        upload_file.write_bytes(os.urandom(BIG))
        for r in range(args.rounds):
            for t in proxies:
                if t != "pingora-bare":  # it routes everything to the HTTP upstream
                    ws[t].append(asyncio.run(ws_round_trips(ports[t], 2000 if args.quick else 10000)))
                down[t].append(transfer(f"http://127.0.0.1:{ports[t]}/core/big.bin"))
                up[t].append(transfer(f"http://127.0.0.1:{ports[t]}/up/upload", upload_file))
            print(f"  round {r + 1}: ws/stream done", flush=True)

        idle_rss = {}
        for t in proxies:
            async def hold():
                conns = await idle_connections(ports[t], args.idle)
                await asyncio.sleep(1)
                kib = rss_kib(procs[t].pids)
                for w in conns:
                    w.close()
                return kib
            idle_rss[t] = asyncio.run(hold())
            print(f"  {t}: RSS with {args.idle} idle connections: {idle_rss[t] / 1024:.1f} MiB", flush=True)

        log_lines = sum(1 for _ in open(work / "gateway.log"))
        insns = count_instructions()

        report(args, conns_list, targets, proxies, med, paired, ws, down, up, idle_rss, log_lines, insns)
    finally:
        for p in procs.values():
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(args, conns_list, targets, proxies, med, paired, ws, down, up, idle_rss, log_lines, insns):
    m = machine()
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [f"# beat-gateway benchmark, {now:%Y-%m-%d %H:%M} UTC", ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in m.items()] + [""]
    lines += [f"Rounds: {args.rounds} x {args.seconds} s per target and concurrency, interleaved; medians. "
              f"wrk with 1 thread; every proxy with 1 worker; 1 KiB JSON from an nginx upstream (1 worker). "
              + ("Proxies pinned to CPU 1, wrk and upstreams to CPU 0." if PIN else "No CPU pinning (one core).")
              + (" The gateways and the floors were started afresh every round (`--restart`)." if args.restart else ""),
              ""]
    lines += ["## HTTP (1 KiB JSON)", "",
              "| conns | target | req/s | vs nginx | paired vs nginx (90% CI) | p50 ms | p99 ms | p99 paired vs nginx "
              "| CPU s / 100k req | vs nginx |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in conns_list:
        base_rps, base_cpu = med(c, "nginx", "rps"), med(c, "nginx", "cpu_per_100k")
        for t in targets:
            rps, cpu = med(c, t, "rps"), med(c, t, "cpu_per_100k")
            cpu_cell = "-" if t == "direct" else f"{cpu:.2f}"
            cpu_ratio = "-" if t == "direct" else fmt_ratio(cpu, base_cpu)
            p_rps, lo, hi = paired(c, t, "rps")
            p_p99 = paired(c, t, "p99_ms")[0]
            lines.append(f"| {c} | {t} | {rps:.0f} | {fmt_ratio(rps, base_rps)} | {p_rps:.2f}x ({lo:.2f}-{hi:.2f}) | "
                         f"{med(c, t, 'p50_ms'):.2f} | {med(c, t, 'p99_ms'):.2f} | {p_p99:.2f}x | {cpu_cell} | {cpu_ratio} |")
    lines += ["", "CPU for `direct` is the upstream's alone; for proxies it is the proxy's alone. "
              "\"Paired\" ratios compare each round's figure with nginx's in the same round and give the "
              "median over rounds, with a 90% confidence interval of that median (bootstrap): this VM's "
              "speed drifts by 20% from minute to minute, which moves medians taken separately more than "
              "ratios taken side by side. With few rounds the interval is wide; `--rounds 20` narrows it.", ""]
    have_baseline = {"pingora-bare", "gateway", "gateway-nolog"} <= set(targets)
    lines += [] if not have_baseline else [
              "## Against the floor: a tuned bare Pingora ProxyHttp doing the same job", "",
              "`pingora-bare` (bench/src/bare_proxy.rs) is a plain `ProxyHttp` doing the gateway's "
              "per-request job (strip the prefix, request id both ways, X-Forwarded-*, security "
              "headers) with the gateway's tuning. Ratios are paired round by round with the floor, "
              "median and 90% CI. Targets (issue \"Back on Pingora's ProxyHttp\"): gateway-nolog "
              "req/s >= 0.95x, CPU/request <= 1.05x, idle RSS <= 1.1x (WebSocket table below).", "",
              "| conns | gateway-nolog req/s | gateway-nolog CPU/req | gateway (log on) req/s | "
              "gateway (log on) CPU/req | access log's cost: gateway vs gateway-nolog req/s |",
              "|---|---|---|---|---|---|"]
    for c in conns_list if have_baseline else []:
        def cell(t, key, base="pingora-bare"):
            v, lo, hi = paired(c, t, key, base)
            return f"{v:.2f}x ({lo:.2f}-{hi:.2f})"
        lines.append(f"| {c} | {cell('gateway-nolog', 'rps')} | {cell('gateway-nolog', 'cpu_per_100k')} | "
                     f"{cell('gateway', 'rps')} | {cell('gateway', 'cpu_per_100k')} | "
                     f"{cell('gateway', 'rps', 'gateway-nolog')} |")
    def added_cost(target, base, title, intro):
        """A section pricing `target` against `base`, paired round by round."""
        if target not in targets or base not in targets:
            return
        lines.extend(["", f"## {title}", "", intro, "",
                      f"| conns | req/s vs {base} | CPU/req vs {base} | CPU per request added (us) |",
                      "|---|---|---|---|"])
        for c in conns_list:
            v, lo, hi = paired(c, target, "rps", base)
            cv, clo, chi = paired(c, target, "cpu_per_100k", base)
            added = (med(c, target, "cpu_per_100k") - med(c, base, "cpu_per_100k")) * 10
            lines.append(f"| {c} | {v:.2f}x ({lo:.2f}-{hi:.2f}) | {cv:.2f}x ({clo:.2f}-{chi:.2f}) | {added:.1f} |")

    added_cost("gateway-jwt", "gateway-nolog", "Edge auth: the cost of verifying a token",
               "`gateway-jwt` is `gateway-nolog` with `\"auth\": {\"mode\": \"required\"}` on the route and a "
               "valid RS256 access token (2048-bit key, ~0.8 KiB header) on every request; the ratios are "
               "paired round by round with `gateway-nolog`, which gets no token.")
    added_cost("gateway-session", "gateway-jwt", "Sessions: the cost of the current-session check",
               "`gateway-session` is `gateway-jwt` with `JWT_SESSION_CHECK=current`: the token must be the "
               "value at `bench-user:access` in a redis-server on loopback (pinned to the load CPU, so its "
               "own cost is not counted). Every request carries the same token, as a busy client's do: the "
               "answer is reused for `JWT_SESSION_CACHE_MS` (1 s), so Redis sees one lookup a second. The "
               "ratios are paired round by round with `gateway-jwt`.")
    variants = [("gateway-nometrics", "Metrics: what they cost",
                 "`gateway-nometrics` is `gateway-nolog` with `ADMIN_METRICS=off`: above 1.00x in req/s "
                 "(below in CPU/req), metrics cost that much; 1.03x means they take 3%."),
                ("gateway-3", "Three instances against one",
                 "`gateway-3` is `gateway-nolog` with `/core` on three instances (`upstreams`, round robin; "
                 "the same upstream nginx listening on three ports, so the upstream's cost is unchanged). "
                 "Each instance keeps its own connection pool."),
                ("pingora-bare-timeouts", "Pingora's upstream timers, in the floor",
                 "`pingora-bare-timeouts` is `pingora-bare` with the gateway's default upstream timeouts "
                 "(connect 3 s, read and write 60 s: what answers a stalled service with 504). Each read "
                 "that has to wait registers a Pingora timer, and each read or write with a timeout reads "
                 "the clock; the gateway pays this on every request, the floor above does not."),
                ("pingora-bare-required", "What the required features cost in Pingora, before the gateway's logic",
                 "`pingora-bare-required` is `pingora-bare-timeouts` that also starts a W3C trace on every "
                 "request (random ids, one more `traceparent` header inserted upstream), as issue 11 requires "
                 "of the gateway when a client sends none. Both costs are Pingora's work (its timers, its "
                 "header insert); what this floor loses against `pingora-bare` is gone from the 5% that a "
                 "0.95x target leaves for everything the gateway does itself.")]
    def pair_row(c, t, base):
        v, lo, hi = paired(c, t, "rps", base)
        cv, clo, chi = paired(c, t, "cpu_per_100k", base)
        return f"| {c} | {v:.2f}x ({lo:.2f}-{hi:.2f}) | {cv:.2f}x ({clo:.2f}-{chi:.2f}) |"

    for t, title, text in variants:
        base = "pingora-bare" if t.startswith("pingora-bare") else "gateway-nolog"
        if t in targets and base in targets:
            lines += ["", f"## {title}", "", text + f" Paired round by round with `{base}`.", "",
                      f"| conns | {t} req/s vs {base} | CPU/req vs {base} |", "|---|---|---|"]
            lines += [pair_row(c, t, base) for c in conns_list]
            if t.startswith("pingora-bare-") and "gateway-nolog" in targets:
                lines += ["", "The gateway against this floor (the same Pingora work on both sides):", "",
                          f"| conns | gateway-nolog req/s vs {t} | CPU/req |", "|---|---|---|"]
                lines += [pair_row(c, "gateway-nolog", t) for c in conns_list]
    if "gateway-before" in targets:
        lines += ["", "## Before the patch series", "",
                  "`gateway-before` is `gateway-nolog` built before the vendored patch series' performance "
                  "patches (`--before`); both paired round by round with nginx, and with each other.", "",
                  "| conns | gateway-nolog vs nginx | gateway-before vs nginx | gateway-nolog vs gateway-before, req/s "
                  "| CPU/req |", "|---|---|---|---|---|"]
        for c in conns_list:
            a, alo, ahi = paired(c, "gateway-nolog", "rps")
            b4, blo, bhi = paired(c, "gateway-before", "rps")
            lines.append(f"| {c} | {a:.2f}x ({alo:.2f}-{ahi:.2f}) | {b4:.2f}x ({blo:.2f}-{bhi:.2f}) | "
                         + pair_row(c, "gateway-nolog", "gateway-before").split("| ", 2)[2])
    if insns:
        g, n, b = insns["gateway"][0], insns["gateway-nolog"][0], insns["pingora-bare"][0]
        tm, r = insns["pingora-bare-timeouts"][0], insns["pingora-bare-required"][0]

        def x3(v, base):  # instructions repeat to ~0.3%: three decimals mean something
            return f"{v / base:.3f}x"

        lines += ["", "User-space instructions per request under callgrind (wrk, 16 connections, "
                  f"{args.callgrind_seconds} s each, counted under load only; kernel work, the same for every "
                  "proxy, not counted):", "",
                  "| target | instructions / request | vs pingora-bare | vs pingora-bare-required |",
                  "|---|---|---|---|",
                  f"| pingora-bare | {b:.0f} | 1.00x | {x3(b, r)} |",
                  f"| pingora-bare-timeouts | {tm:.0f} | {x3(tm, b)} | {x3(tm, r)} |",
                  f"| pingora-bare-required | {r:.0f} | {x3(r, b)} | 1.00x |",
                  f"| gateway-nolog | {n:.0f} | {x3(n, b)} | {x3(n, r)} |",
                  f"| gateway (access log on) | {g:.0f} | {x3(g, b)} | {x3(g, r)} |"]
        lines += [f"| {t} | {insns[t][0]:.0f} | {x3(insns[t][0], b)} | {x3(insns[t][0], r)} |"
                  for t in ("gateway-before", "nginx", "haproxy") if t in insns]
        lines += ["",
                  f"The access log costs {(g / n - 1) * 100:+.1f}% of the gateway's user-space instructions. "
                  f"The required features' Pingora work (timers, one more header) takes {(r / b - 1) * 100:+.1f}% "
                  "of the 5% that the issue's 1.05x CPU target allows; the gateway's own logic costs "
                  f"{(n / r - 1) * 100:+.1f}% on top."]
    lines += [""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = f"{now:%Y%m%d-%H%M}"
    if ws is None:  # --http-only: its own file, so that latest.md keeps the last full run
        md = "\n".join(lines) + "\n"
        (RESULTS / f"{stamp}-http.md").write_text(md)
        (RESULTS / "latest-http.md").write_text(md)
        print(md)
        print(f"written: bench/results/{stamp}-http.md (and latest-http.md)")
        return
    lines += ["", "## WebSocket, streaming, idle connections", "",
              "| target | WS round trips/s | vs nginx | 10 MiB download MiB/s | 10 MiB upload MiB/s | RSS, "
              f"{args.idle} idle conns (MiB) | vs nginx | vs pingora-bare |", "|---|---|---|---|---|---|---|---|"]
    for t in proxies:
        ws_cells = (f"{statistics.median(ws[t]):.0f} | {fmt_ratio(statistics.median(ws[t]), statistics.median(ws['nginx']))}"
                    if ws[t] else "- | -")
        lines.append(f"| {t} | {ws_cells} | "
                     f"{statistics.median(down[t]):.0f} | {statistics.median(up[t]):.0f} | {idle_rss[t] / 1024:.1f} | "
                     f"{fmt_ratio(idle_rss[t], idle_rss['nginx'])} | "
                     f"{fmt_ratio(idle_rss[t], idle_rss['pingora-bare']) if 'pingora-bare' in idle_rss else '-'} |")
    lines += ["", f"The logging gateway wrote {log_lines} access lines during the run.", ""]
    md = "\n".join(lines) + "\n"
    (RESULTS / f"{stamp}.md").write_text(md)
    (RESULTS / "latest.md").write_text(md)
    chart(conns_list, targets, med, RESULTS / f"{stamp}.png")
    shutil.copy(RESULTS / f"{stamp}.png", RESULTS / "latest.png")
    print(md)
    print(f"written: bench/results/{stamp}.md, bench/results/{stamp}.png (and latest.*)")


def chart(conns_list, targets, med, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(targets)
    for i, t in enumerate(targets):
        xs = [j + i * width for j in range(len(conns_list))]
        a.bar(xs, [med(c, t, "rps") for c in conns_list], width, label=t)
        b.bar(xs, [med(c, t, "p99_ms") for c in conns_list], width, label=t)
    for ax, title in ((a, "requests/s (higher is better)"), (b, "p99 latency, ms (lower is better)")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(conns_list))])
        ax.set_xticklabels([f"{c} conns" for c in conns_list])
        ax.set_title(title)
    a.legend(fontsize=8)
    fig.suptitle("beat-gateway vs nginx vs haproxy (1 worker each, loopback, 1 KiB JSON)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
