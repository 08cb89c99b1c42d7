#!/usr/bin/env bash
# The soak (bench/soak.py; not in CI): builds the release gateway and the echo upstream,
# installs Python's websockets and matplotlib in a venv under target/, then runs it.
#   bench/soak.sh [--minutes 10]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q matplotlib websockets
cargo build --release --bin beat-gateway --example echo_upstream
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$venv/bin/python" bench/soak.py "$@"
