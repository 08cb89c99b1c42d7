#!/usr/bin/env bash
# Build the gateway once per step of the vendored patch series, for bench/series.py's
# per-patch table: step NNNN is the crates as published plus every patch numbered up to
# NNNN (the later ones left out), with the gateway's own code as it is now.
#
#   bench/series.sh [--floor] OUT_DIR NNNN [NNNN...]     e.g. bench/series.sh /tmp/series 0008 0011
#
# Each OUT_DIR/NNNN/ gets `beat-gateway` and `examples/bare_proxy`; with --floor only the
# bare floor (bench/src/bare_proxy.rs, stock Pingora API, built as a crate of its own: it
# builds at every step, where the gateway needs the options of the patches it uses, 0040
# and 0042 among them). The builds run in a
# scratch copy of this checkout (the checkout itself is not touched), with their own target
# directory under OUT_DIR (kept: the next run of the same steps rebuilds only what changed).
set -euo pipefail
cd "$(dirname "$0")/.."
floor=false
if [ "${1:-}" = --floor ]; then floor=true; shift; fi
[ $# -ge 2 ] || { sed -n 2,11p "$0"; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
src=$out/src
rm -rf "$src" && mkdir -p "$src"
git ls-files -z | xargs -0 cp --parents -t "$src"
if $floor; then
  # The floor alone, as a crate of its own: the gateway's library (which every example of
  # this package links) needs the options of the later patches and would not build.
  rm -rf "$src/src" "$src/tests"
  {
    printf '[package]\nname = "bare-floor"\nversion = "0.1.0"\nedition = "2024"\n\n'
    printf '[workspace]\nexclude = ["vendor"]\n\n[patch.crates-io]\n'
    grep -E '^pingora-(core|http|proxy) = \{ path' Cargo.toml
    printf '\n[dependencies]\n'
    sed -n '/^\[dependencies\]/,/^\[/p' Cargo.toml \
      | grep -E '^(async-trait|http|mimalloc|pingora-core|pingora-http|pingora-proxy|rand|uuid) = ' 
    printf '\n[[bin]]\nname = "bare_proxy"\npath = "bench/src/bare_proxy.rs"\n\n'
    sed -n '/^\[profile.release\]/,/^$/p' Cargo.toml
  } > "$src/Cargo.toml"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for step in "$@"; do
  [[ $step =~ ^[0-9]{4}$ ]] || { echo "series.sh: a step is a 4-digit patch number: $step" >&2; exit 2; }
  for dir in vendor/*/; do
    crate=$(basename "$dir")
    [ "$crate" = patches ] && continue
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' "vendor/$crate/Cargo.toml" | head -n 1)
    crate_file=$tmp/$crate-$version.crate
    [ -f "$crate_file" ] || curl -fsSL -o "$crate_file" "https://static.crates.io/crates/$crate/$crate-$version.crate"
    rm -rf "$tmp/x" "$src/vendor/$crate" && mkdir -p "$tmp/x"
    tar -xzf "$crate_file" -C "$tmp/x"
    mv "$tmp/x/$crate-$version" "$src/vendor/$crate"
    shopt -s nullglob
    for patch in vendor/patches/"$crate"/[0-9][0-9][0-9][0-9]-*.patch; do
      n=$(basename "$patch"); n=${n%%-*}
      if ((10#$n <= 10#$step)); then
        (cd "$src/vendor" && patch -s -p1 -F0 --no-backup-if-mismatch < "$OLDPWD/$patch")
      fi
    done
    shopt -u nullglob
  done
  echo "series.sh: building step $step" >&2
  mkdir -p "$out/$step/examples"
  if $floor; then
    (cd "$src" && CARGO_TARGET_DIR=$out/target cargo build --quiet --release --bin bare_proxy)
    cp "$out/target/release/bare_proxy" "$out/$step/examples/"
  else
    (cd "$src" && CARGO_TARGET_DIR=$out/target cargo build --quiet --release --bin beat-gateway --example bare_proxy)
    cp "$out/target/release/beat-gateway" "$out/$step/"
    cp "$out/target/release/examples/bare_proxy" "$out/$step/examples/"
  fi
done
