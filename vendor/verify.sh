#!/usr/bin/env bash
# Prove that each vendored crate (vendor/<crate>/) is the crate published on crates.io plus
# exactly its patch series (vendor/patches/<crate>/NNNN-*.patch, applied in name order),
# byte for byte and nothing else; and that every patch carries its header (what, why, the
# measured effect, the upstream issue, where it stands upstream, when to drop it).
# Downloads the published .crate files into a temporary directory.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "vendor/verify.sh: $*" >&2; exit 1; }

crates=()
for dir in */; do
  crate=${dir%/}
  [ "$crate" = patches ] && continue
  [ -f "$crate/Cargo.toml" ] || fail "vendor/$crate has no Cargo.toml"
  crates+=("$crate")
  grep -q "^$crate = { path = \"vendor/$crate\" }" ../Cargo.toml \
    || fail "vendor/$crate is not in Cargo.toml's [patch.crates-io]"
done
for dir in patches/*/; do
  crate=$(basename "$dir")
  [ -d "$crate" ] || fail "patches/$crate/ has no vendored crate vendor/$crate"
done

for crate in "${crates[@]}"; do
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$crate/Cargo.toml" | head -n 1)
  rm -rf "$tmp/a" && mkdir -p "$tmp/a"
  curl -fsSL "https://static.crates.io/crates/$crate/$crate-$version.crate" | tar -xz -C "$tmp/a"
  mv "$tmp/a/$crate-$version" "$tmp/a/$crate"
  applied=()
  shopt -s nullglob
  for patch in patches/"$crate"/[0-9][0-9][0-9][0-9]-*.patch; do
    for field in Description Measured Bug Forwarded Drop-When; do
      grep -q "^$field:" "$patch" || fail "$patch has no '$field:' header"
    done
    # No fuzz: each patch must apply exactly where it says (line offsets are fine).
    (cd "$tmp/a" && patch -s -p1 -F0 --no-backup-if-mismatch < "$OLDPWD/$patch") \
      || fail "$patch does not apply to $crate $version + the patches before it"
    applied+=("$(basename "$patch")")
  done
  shopt -u nullglob
  if ! diff -r "$tmp/a/$crate" "$crate" >"$tmp/diff.txt"; then
    echo "vendor/$crate differs from $crate $version + patches/$crate/*.patch:" >&2
    cat "$tmp/diff.txt" >&2
    exit 1
  fi
  echo "vendor/$crate = $crate $version + ${#applied[@]} patches: ${applied[*]:-none}"
done
