#!/usr/bin/env bash
# Run every test: unit tests beside the code, and integration tests that start the real
# gateway binary against real upstream servers on 127.0.0.1, and checks of the platform
# files with real tools (docker-compose config, PostgreSQL, just).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
# The plain binary first: `just serve` (tested below) runs `cargo run`, which builds
# without the dev-dependencies' features; building it here keeps that test fast.
cargo build --bin beat-gateway
exec cargo test --all-targets "$@"
