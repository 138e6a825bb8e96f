#!/usr/bin/env bash
# Builds the shipped binary: release profile, fully static (glibc with crt-static), and prints
# its path and the SHA-256 for plugin_checksum. Musl users: see README "Static binary".
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/azkv-plugin/target}"
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static ${RUSTFLAGS:-}" \
  cargo build --release --locked --target "$target" --bin azure_key_vault >&2
bin="$CARGO_TARGET_DIR/$target/release/azure_key_vault"
echo "AZKV_RELEASE_BIN=$bin"
echo "AZKV_RELEASE_SHA256=$(sha256sum "$bin" | cut -d' ' -f1)"
