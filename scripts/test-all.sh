#!/usr/bin/env bash
# Runs every test: formatting and lint gates, unit and integration tests (fake Key Vault over
# TLS), and the end-to-end tests against the real spire-server and lowkey-vault (installed by
# name from the Go module proxy and Maven Central into ~/.cache/azkv-plugin on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/azkv-plugin/target}"

need() { command -v "$1" >/dev/null 2>&1 || { echo "test-all: '$1' is required ($2)" >&2; exit 1; }; }
need cargo "Rust toolchain, https://rustup.rs"
need cmake "grpcio builds its C core with cmake: apt-get install cmake"
need g++ "grpcio builds its C core with a C++ compiler: apt-get install g++"
need go "spire-server is built from the Go module proxy"
need java "lowkey-vault (the Key Vault emulator) runs on Java 17+"
need mvn "lowkey-vault is fetched from Maven Central with Maven"
need openssl "the end-to-end tests verify SVIDs and build the emulator's keystore with openssl"
need unshare "tests/spire_image.rs runs the release binary in a private mount namespace (util-linux)"
need chroot "tests/spire_image.rs runs the release binary in an image-shaped root (coreutils)"

# The real peers, cached outside the clone (fails loudly when a registry refuses).
eval "$(bash .ci/install-peers.sh)"
export SPIRE_SERVER_BIN LOWKEY_VAULT_JAR

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features peers -- -D warnings
# The shipped static binary (checked by tests/release_binary.rs; used by the benchmark).
eval "$(bash scripts/build-release.sh)"
export AZKV_RELEASE_BIN
# Integration and end-to-end tests start processes and servers; two at a time fits 2 cores.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --features peers --lib --bins --tests -- --test-threads="${AZKV_TEST_THREADS:-2}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The shared test support's own tests (testkit/).
cargo test -p azkv-testkit 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
