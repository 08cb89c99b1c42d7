#!/usr/bin/env bash
# Install what building the gateway needs on Debian or Ubuntu, if it is missing:
# cmake (Pingora builds zlib-ng with it) and a C toolchain. Rust itself must already be
# installed (https://rustup.rs). Safe to run again: it installs nothing that is present.
#
#   --test   also what the test suite drives for real: PostgreSQL + PostGIS (the SQL init
#            scripts), docker-compose (merges and validates the compose files; no engine
#            needed), just (the Justfile), the openssl command line (the auth tests
#            generate RSA keys with it), redis-server (the shared rate limits), haproxy
#            (the rolling-restart test's load balancer), chromium (the dashboard, in a
#            real browser), and in target/k8s-venv the
#            Kubernetes checks' tools from PyPI: kubernetes-validate (schemas) and checkov
#            (static policy). kubectl, with its kustomize, must be on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=false
[ "${1:-}" = "--test" ] && with_test=true

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)

if $with_test; then
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  if ! ls /usr/lib/postgresql/*/lib/postgis-3.so >/dev/null 2>&1; then
    need+=(postgis-for-installed-postgres)
  fi
fi

if ((${#need[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  pkgs=()
  for p in "${need[@]}"; do
    if [ "$p" = postgis-for-installed-postgres ]; then
      # PostGIS for whichever PostgreSQL major version the distribution ships.
      major=$(apt-cache show postgresql 2>/dev/null | sed -n 's/^Depends: postgresql-\([0-9]*\).*/\1/p' | head -n 1)
      if [ -n "$major" ] && apt-cache show "postgresql-$major-postgis-3" >/dev/null 2>&1; then
        pkgs+=("postgresql-$major-postgis-3")
      else
        echo "setup: no PostGIS package here; the SQL test will skip CREATE EXTENSION and say so" >&2
      fi
    else
      pkgs+=("$p")
    fi
  done
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo not found; install Rust first: https://rustup.rs" >&2
  exit 1
}

if $with_test && ! command -v just >/dev/null 2>&1; then
  echo "setup: installing just (cargo install just --locked)" >&2
  cargo install just --locked --quiet
fi

# The Kubernetes checks (tests/kubernetes.rs): pinned, in a venv of their own.
k8s_venv=target/k8s-venv
k8s_tools="kubernetes-validate==1.37.0 checkov==3.3.30"
if $with_test && [ "$(cat "$k8s_venv/.tools" 2>/dev/null)" != "$k8s_tools" ]; then
  echo "setup: installing $k8s_tools into $k8s_venv" >&2
  rm -rf "$k8s_venv"
  python3 -m venv "$k8s_venv"
  # shellcheck disable=SC2086
  "$k8s_venv/bin/pip" install --quiet --disable-pip-version-check $k8s_tools
  echo "$k8s_tools" > "$k8s_venv/.tools"
fi
if $with_test && ! command -v kubectl >/dev/null 2>&1; then
  echo "setup: kubectl (with kustomize) is not installed; tests/kubernetes.rs will fail" >&2
fi
