# Beat EcoProve: run the gateway, the platform, the tests.  `just --list` shows the recipes.
# Works with CONTAINER_TOOL=docker or podman (from .env or the environment).

set dotenv-load

container_tool := env("CONTAINER_TOOL", "podman")
compose := container_tool + " compose"
dev_files := "-f docker-compose.yml -f docker-compose.dev.yml"
prod_files := "-f docker-compose.yml -f docker-compose.prod.yml"

# List the recipes
default:
    @just --list

# Run the gateway locally against config/services.json (PROXY_PORT, RUST_LOG... from .env)
serve *args:
    cargo run -- --services config/services.json {{args}}

# Build the gateway and service images with Nix and load them into the container tool
build-images:
    CONTAINER_TOOL={{container_tool}} nix run .#build-all

# Start the platform with development overrides (admin UIs, direct ports, debug logs)
compose-dev:
    {{compose}} {{dev_files}} up -d --build

# Start the platform with production overrides (volumes, restarts, limits)
compose-build:
    {{compose}} {{prod_files}} up -d --build

# Build every image, then start the development platform
dev: build-images compose-dev

# Build every image, then start the production platform
prod: build-images compose-build

# Stop the platform (volumes are kept)
down:
    {{compose}} {{dev_files}} down --remove-orphans

# Follow the logs of the platform, or of the services named
logs *services:
    {{compose}} {{dev_files}} logs -f {{services}}

# Run every test (the README's test command)
test *args:
    scripts/test.sh {{args}}

# Run every fuzz target for the given minutes each, in parallel (src/fuzz.rs)
fuzz minutes="10":
    BOLERO_RANDOM_TEST_TIME_MS=$(({{minutes}} * 60000)) cargo test --release --lib fuzz_ -- --nocapture --test-threads 4

# A 10-minute soak: mixed load with failures injected, RSS sampled each second (bench/soak.py)
soak *args:
    bench/soak.sh {{args}}

# Side-by-side benchmark against nginx and haproxy (bench/README.md)
bench *args:
    bench/run.sh {{args}}

# Formatting, lints, and the shipped config
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo run --quiet -- --check --services config/services.json
