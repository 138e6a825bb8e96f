#!/usr/bin/env bash
# The plugin doing its job, end to end: builds the release plugin, installs spire-server (and
# the lowkey-vault emulator when it can be had), starts a Key Vault emulator and a real
# spire-server that keeps its keys there through the plugin, mints an X509-SVID, shows where
# the keys are and that the SVID verifies against the bundle, then cleans everything up.
#
#   bash scripts/demo.sh            # CARGO_TARGET_DIR defaults to ~/.cache/azkv-plugin/target
#   AZKV_E2E_VAULT=fake scripts/demo.sh   # force the in-repo fake Key Vault
#   AZKV_PLUGIN_BIN=<binary> / AZKV_FAKE_VAULT_BIN=<binary>: use prebuilt binaries, skip cargo
#
# Needs: cargo, go (spire-server is built from the Go module proxy), openssl, curl; java + mvn
# for lowkey-vault. Everything runs on 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/azkv-plugin/target}"
VAULT_CHOICE="${AZKV_E2E_VAULT:-auto}"
TRUST_DOMAIN="demo.example.org"
T0=$(date +%s)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
for tool in cargo openssl curl; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

WORK="$(mktemp -d /tmp/azkv-demo.XXXXXX)"
SPIRE_PID=""
VAULT_PID=""
cleanup() {
  local rc=$?
  set +e
  if [ -n "$SPIRE_PID" ] && kill -0 "$SPIRE_PID" 2>/dev/null; then
    kill -TERM "$SPIRE_PID"
    for _ in $(seq 1 100); do kill -0 "$SPIRE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SPIRE_PID" 2>/dev/null
  fi
  if [ -n "$VAULT_PID" ] && kill -0 "$VAULT_PID" 2>/dev/null; then
    kill -TERM "$VAULT_PID"
    for _ in $(seq 1 50); do kill -0 "$VAULT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$VAULT_PID" 2>/dev/null
  fi
  if [ "$rc" -ne 0 ]; then
    echo "demo: failed (exit $rc); last spire-server log lines:" >&2
    tail -n 30 "$WORK/spire-server.log" 2>/dev/null >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  # A random high port nobody answers on (bash's /dev/tcp can probe but not bind).
  local p
  for _ in $(seq 1 50); do
    p=$(( (RANDOM % 20000) + 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

wait_until() { # seconds, command...
  local limit=$1; shift
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.5
  done
}

if [ -n "${AZKV_PLUGIN_BIN:-}" ]; then
  step "Using the prebuilt plugin AZKV_PLUGIN_BIN=$AZKV_PLUGIN_BIN"
  PLUGIN="$AZKV_PLUGIN_BIN"
else
  step "Building the static release plugin (scripts/build-release.sh) into $CARGO_TARGET_DIR"
  eval "$(bash "$ROOT/scripts/build-release.sh")"
  PLUGIN="$AZKV_RELEASE_BIN"
fi
[ -x "$PLUGIN" ] || die "plugin binary missing at $PLUGIN"
CHECKSUM="$(sha256sum "$PLUGIN" | cut -d' ' -f1)"
echo "plugin: $PLUGIN"
echo "sha256: $CHECKSUM"

step "Installing peers (.ci/install-peers.sh, cached in ~/.cache/azkv-plugin)"
PEERS="$(bash "$ROOT/.ci/install-peers.sh")" || die "installing the peers failed (see above)"
eval "$PEERS"
echo "$PEERS"
[ -n "${LOWKEY_VAULT_JAR:-}" ] || LOWKEY_VAULT_JAR=""

start_lowkey() {
  step "Starting lowkey-vault ($LOWKEY_VAULT_JAR) with a test CA"
  ( cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
      -subj "/CN=azkv demo CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
      -extfile server.ext -out server.pem 2>/dev/null
    openssl pkcs12 -export -name lowkey-vault -in server.pem -inkey server.key -certfile ca.pem \
      -out keystore.p12 -passout pass:changeit )
  local https_port token_port
  https_port=$(free_port); token_port=$(free_port)
  local java="${LOWKEY_JAVA:-java}"
  "$java" -jar "$LOWKEY_VAULT_JAR" --server.port="$https_port" --app.token.port="$token_port" \
    --server.ssl.key-store="file:$WORK/keystore.p12" --server.ssl.key-store-password=changeit \
    --server.ssl.key-store-type=PKCS12 --LOWKEY_VAULT_RELAXED_PORTS=true \
    >"$WORK/lowkey.log" 2>&1 &
  VAULT_PID=$!
  VAULT_KIND=lowkey
  VAULT_URI="https://127.0.0.1:$https_port/"
  VAULT_CA_FILE="$WORK/ca.pem"
  IDENTITY_ENDPOINT="http://127.0.0.1:$token_port/metadata/identity/oauth2/token"
  IDENTITY_HEADER="lowkey-ignores-this"
  wait_until 180 curl -sf --cacert "$VAULT_CA_FILE" "${VAULT_URI}ping" \
    || { tail -n 40 "$WORK/lowkey.log" >&2; die "lowkey-vault did not come up"; }
}

start_fake() {
  step "Starting the in-repo fake Key Vault (examples/fake_key_vault.rs)"
  echo "NOTE: lowkey-vault is not available here (or AZKV_E2E_VAULT=fake); using the fake."
  local bin="${AZKV_FAKE_VAULT_BIN:-}"
  if [ -z "$bin" ]; then
    # Debug profile: shares the test build, and the fake is no bottleneck for a demo.
    (cd "$ROOT" && cargo build --example fake_key_vault)
    bin="$CARGO_TARGET_DIR/debug/examples/fake_key_vault"
  fi
  "$bin" >"$WORK/vault.env" 2>"$WORK/vault.log" &
  VAULT_PID=$!
  wait_until 30 grep -q '^IDENTITY_HEADER=' "$WORK/vault.env" || die "the fake vault did not start"
  # shellcheck disable=SC1091
  . "$WORK/vault.env"
}

case "$VAULT_CHOICE:${LOWKEY_VAULT_JAR:+jar}" in
  lowkey:jar|auto:jar) start_lowkey ;;
  lowkey:) die "AZKV_E2E_VAULT=lowkey but no lowkey-vault jar is available (set LOWKEY_VAULT_JAR)" ;;
  fake:*|auto:) start_fake ;;
  *) die "AZKV_E2E_VAULT=$VAULT_CHOICE: expected lowkey, fake or auto" ;;
esac
echo "vault: $VAULT_KIND at $VAULT_URI (TLS CA $VAULT_CA_FILE)"
echo "managed identity endpoint: $IDENTITY_ENDPOINT"

step "Starting spire-server with KeyManager \"azure_key_vault\""
PORT=$(free_port)
SOCK="$WORK/api.sock"
mkdir -p "$WORK/data"
cat >"$WORK/server.conf" <<EOF
server {
    bind_address = "127.0.0.1"
    bind_port = "$PORT"
    socket_path = "$SOCK"
    trust_domain = "$TRUST_DOMAIN"
    data_dir = "$WORK/data"
    log_level = "INFO"
    ca_ttl = "1h"
    default_x509_svid_ttl = "10m"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "$WORK/data/datastore.sqlite3"
        }
    }
    KeyManager "azure_key_vault" {
        plugin_cmd = "$PLUGIN"
        plugin_checksum = "$CHECKSUM"
        plugin_data {
            key_vault_uri = "$VAULT_URI"
            key_identifier_file = "$WORK/data/azure_kv_server_id"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
EOF
sed -n '/KeyManager/,/^    }/p' "$WORK/server.conf"
# Managed identity (App Service style) for the plugin; the emulator's CA for TLS.
env -i PATH="$PATH" HOME="$HOME" \
  IDENTITY_ENDPOINT="$IDENTITY_ENDPOINT" IDENTITY_HEADER="$IDENTITY_HEADER" \
  SSL_CERT_FILE="$VAULT_CA_FILE" \
  "$SPIRE_SERVER_BIN" run -config "$WORK/server.conf" >"$WORK/spire-server.log" 2>&1 &
SPIRE_PID=$!
spire() { "$SPIRE_SERVER_BIN" "$@" -socketPath "$SOCK"; }
wait_until 90 spire healthcheck || die "spire-server did not become healthy"
spire healthcheck
echo "plugin log lines in spire-server's log:"
grep 'plugin_name=azure_key_vault' "$WORK/spire-server.log" | sed 's/^/  /' | head -n 8

step "Keys in the emulator (Key Vault REST, token from the managed-identity endpoint)"
TOKEN="$(curl -sf -H "X-IDENTITY-HEADER: $IDENTITY_HEADER" \
  "$IDENTITY_ENDPOINT?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net" \
  | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')"
[ -n "$TOKEN" ] || die "no token from $IDENTITY_ENDPOINT"
kv() { curl -sf --cacert "$VAULT_CA_FILE" -H "Authorization: Bearer $TOKEN" "${VAULT_URI}$1"; }
KEYS_JSON="$(kv "keys?api-version=7.6&maxresults=25")"
grep -o '"kid" *: *"[^"]*"' <<<"$KEYS_JSON" | sed 's/.*\/keys\/\([^"/]*\).*/  \1/'
CA_KEY="$(grep -o '"kid" *: *"[^"]*x509-CA-A[^"]*"' <<<"$KEYS_JSON" | sed 's/.*\/keys\/\([^"/]*\).*/\1/' | head -n1)"
[ -n "$CA_KEY" ] || die "no x509-CA-A key in the vault"
CA_JWK="$(kv "keys/$CA_KEY?api-version=7.6")"
JWK_X="$(sed -n 's/.*"x" *: *"\([^"]*\)".*/\1/p' <<<"$CA_JWK")"
JWK_Y="$(sed -n 's/.*"y" *: *"\([^"]*\)".*/\1/p' <<<"$CA_JWK")"

step "The CA in spire-server's bundle"
spire bundle show -format pem >"$WORK/bundle.pem"
openssl x509 -in "$WORK/bundle.pem" -noout -subject -dates
openssl x509 -in "$WORK/bundle.pem" -noout -pubkey | tee "$WORK/ca-pub.pem"
# Compare the raw EC point: the last 64 bytes of the P-256 SubjectPublicKeyInfo are x || y.
hexof() { od -An -v -tx1 | tr -d ' \n'; }
unb64url() { # base64url (no padding) -> bytes
  local s="${1//-/+}"; s="${s//_//}"
  while [ $(( ${#s} % 4 )) -ne 0 ]; do s="$s="; done
  printf '%s' "$s" | base64 -d
}
CA_XY="$(openssl pkey -pubin -in "$WORK/ca-pub.pem" -outform DER | tail -c 64 | hexof)"
JWK_XY="$( { unb64url "$JWK_X"; unb64url "$JWK_Y"; } | hexof)"
echo "bundle CA public point x||y: $CA_XY"
echo "vault key $CA_KEY  x||y: $JWK_XY"
if [ -n "$CA_XY" ] && [ "$CA_XY" = "$JWK_XY" ]; then
  echo "=> the CA's public key IS the Key Vault key $CA_KEY (the private key never left the vault)"
else
  die "the bundle CA's public key does not match vault key $CA_KEY"
fi

step "Minting an X509-SVID for spiffe://$TRUST_DOMAIN/demo-workload"
mkdir -p "$WORK/svid"
spire x509 mint -spiffeID "spiffe://$TRUST_DOMAIN/demo-workload" -write "$WORK/svid" >/dev/null
openssl x509 -in "$WORK/svid/svid.pem" -noout -subject -issuer -dates -ext subjectAltName
openssl verify -CAfile "$WORK/bundle.pem" "$WORK/svid/svid.pem"
echo "=> the SVID was signed through Key Vault and verifies against the bundle"

step "Done in $(( $(date +%s) - T0 ))s; stopping spire-server and the emulator"
