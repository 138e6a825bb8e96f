#!/usr/bin/env bash
# Benchmarks the shipped binary as spire-server runs it (README "Benchmarks"): builds the static
# release binary, then runs examples/bench.rs built with the same target and flags, so the
# example reuses the release build's dependencies and drives the binary next to it.
# Arguments go to the benchmark (--quick, --only sign|start, --sign-latency-ms N, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/azkv-plugin/target}"
target=x86_64-unknown-linux-gnu
built="$(bash scripts/build-release.sh)"
release_bin="$(printf '%s\n' "$built" | sed -n 's/^AZKV_RELEASE_BIN=//p')"
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
exec "$CARGO_TARGET_DIR/$target/release/examples/bench" "$@"
