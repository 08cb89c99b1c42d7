#!/usr/bin/env bash
# Check that each vendored crate is the published crate plus exactly its patch
# (vendor/patches/<crate>-<version>.diff), nothing else. Downloads the published .crate
# files from crates.io into a temporary directory.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for crate in pingora-proxy pingora-core; do
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$crate/Cargo.toml" | head -n 1)
  mkdir -p "$tmp/a" "$tmp/b"
  curl -fsSL "https://static.crates.io/crates/$crate/$crate-$version.crate" | tar -xz -C "$tmp/a"
  mv "$tmp/a/$crate-$version" "$tmp/a/$crate"
  cp -r "$tmp/a/$crate" "$tmp/b/$crate"
  (cd "$tmp/b" && patch -s -p1 --no-backup-if-mismatch < "$OLDPWD/patches/$crate-$version.diff")
  if ! diff -r "$tmp/b/$crate" "$crate" >"$tmp/diff.txt"; then
    echo "vendor/$crate differs from $crate $version + patches/$crate-$version.diff:" >&2
    cat "$tmp/diff.txt" >&2
    exit 1
  fi
  echo "vendor/$crate = $crate $version + patches/$crate-$version.diff"
done
