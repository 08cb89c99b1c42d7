#!/usr/bin/env bash
# The side-by-side benchmark (see bench/README.md): installs nginx, haproxy, wrk and curl
# when missing (Debian), Python's matplotlib and websockets in a venv under target/, builds
# the gateway and the helpers in release mode, then runs bench/bench.py.
#   bench/run.sh [--quick] [--rounds N] [--seconds S] [--conns 16,64,256] [--idle N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" python3-venv >/dev/null
fi

venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q matplotlib websockets

cargo build --release --bin beat-gateway --examples
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$venv/bin/python" bench/bench.py "$@"
