#!/usr/bin/env bash
# The README's picture of the admin dashboard: the gateway on its demo, some traffic
# (wrk, a few 404s and a slow route), and headless Chromium (Debian's `chromium`)
# photographing http://127.0.0.1:$ADMIN_PORT/ once two readings have been taken.
#   scripts/dashboard-screenshot.sh [OUT.png]   (default docs/dashboard.png)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/dashboard.png}
port=19880 admin=19881
for tool in chromium wrk; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)" >&2; exit 1; }
done
cargo build --quiet --bin beat-gateway
PROXY_HOST=127.0.0.1 PROXY_PORT=$port ADMIN_PORT=$admin RUST_LOG=error target/debug/beat-gateway --demo 2>/dev/null &
gw=$!
trap 'kill $gw 2>/dev/null; rm -rf "$profile"' EXIT
profile=$(mktemp -d)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$admin/healthz" >/dev/null && break; sleep 0.1; done
wrk -t1 -c8 -d20s "http://127.0.0.1:$port/core/api/items" >/dev/null &
wrk -t1 -c2 -d20s "http://127.0.0.1:$port/auth/health" >/dev/null &
wrk -t1 -c1 -d20s "http://127.0.0.1:$port/nowhere" >/dev/null &
sleep 2
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1100,900 \
  --virtual-time-budget=4000 --screenshot="$out" "http://127.0.0.1:$admin/" 2>/dev/null
wait %2 %3 %4 2>/dev/null || true
echo "written: $out"
