#!/usr/bin/env bash
# Benchmarks the shipped binary (README "Benchmarks").
#
#   bash scripts/bench.sh [--quick] [--only sign,concurrent,getkey,configure,throttle,throttle2]
#       Side by side with SPIRE's built-in azure_key_vault (examples/go-bench): both loaded
#       through SPIRE's catalog in one Go process, on the fake Key Vault
#       (examples/fake_key_vault.rs), rounds alternating between the two.
#   bash scripts/bench.sh --plugin-only [--quick] [--only sign|start] [...]
#       This plugin alone against direct HTTPS (examples/bench.rs; options in its header).
#
# Both build the static release binary first; the Rust examples are built with the same target
# and flags, so they reuse the release build's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/azkv-plugin/target}"
target=x86_64-unknown-linux-gnu
built="$(bash scripts/build-release.sh)"
release_bin="$(printf '%s\n' "$built" | sed -n 's/^AZKV_RELEASE_BIN=//p')"
examples="$CARGO_TARGET_DIR/$target/release/examples"

if [ "${1:-}" = "--plugin-only" ]; then
  shift
  export AZKV_BENCH_BIN="${AZKV_BENCH_BIN:-$release_bin}"
  RUSTFLAGS="-C target-feature=+crt-static ${RUSTFLAGS:-}" \
    cargo build --release --locked --target "$target" --example bench >&2
  # spire-server's own gRPC client (grpc-go), for the rows measured through it.
  if command -v go >/dev/null; then
    (cd examples/go-host && go build -o "$CARGO_TARGET_DIR/go-host" .) >&2
    export AZKV_BENCH_GO_HOST="${AZKV_BENCH_GO_HOST:-$CARGO_TARGET_DIR/go-host}"
  else
    echo "bench: no Go toolchain; the grpc-go rows are skipped" >&2
  fi
  exec "$examples/bench" "$@"
fi

if ! command -v go >/dev/null; then
  echo "bench: the side-by-side benchmark needs Go (SPIRE's built-in is Go); use --plugin-only" >&2
  exit 1
fi
RUSTFLAGS="-C target-feature=+crt-static ${RUSTFLAGS:-}" \
  cargo build --release --locked --target "$target" --example fake_key_vault >&2
(cd examples/go-bench && go build -o "$CARGO_TARGET_DIR/go-bench" .) >&2
args=()
for a in "$@"; do
  case "$a" in
    --quick) args+=(-quick) ;;
    --only) args+=(-only) ;;
    *) args+=("$a") ;;
  esac
done
exec "$CARGO_TARGET_DIR/go-bench" -plugin "${AZKV_BENCH_BIN:-$release_bin}" \
  -fake "$examples/fake_key_vault" "${args[@]}"
