#!/usr/bin/env bash
# Quick start: install what is missing, then run the gateway on :9000 in demo mode
# (echo services on loopback stand in for auth, core and messaging).
#   curl -i localhost:9000/auth/health
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release -- --demo "$@"
