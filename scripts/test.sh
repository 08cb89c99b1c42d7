#!/usr/bin/env bash
# Run every test: unit tests beside the code, and integration tests that start the real
# gateway binary against real upstream servers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo test --all-targets "$@"
