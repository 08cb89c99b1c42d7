#!/usr/bin/env bash
# Install what building the gateway needs on Debian or Ubuntu, if it is missing:
# cmake (Pingora builds zlib-ng with it) and a C toolchain. Rust itself must already be
# installed (https://rustup.rs). Safe to run again: it installs nothing that is present.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)

if ((${#need[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo not found; install Rust first: https://rustup.rs" >&2
  exit 1
}
