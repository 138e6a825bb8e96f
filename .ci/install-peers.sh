#!/usr/bin/env bash
# Installs the real peers the end-to-end tests need, by name from the registries, into a cache
# outside the clone: spire-server (Go module proxy) and the lowkey-vault jar (Maven
# Central). Prints the paths as shell assignments. Fails loudly when spire cannot be had.
#
# lowkey-vault: `lowkey-vault-app` is published to GitHub Packages, not to Maven Central (only
# its client libraries are there), so on machines that reach only the package registries it
# cannot be fetched. Then LOWKEY_VAULT_JAR is printed empty with a warning, and the tests use
# the in-repo fake Key Vault. Provide a jar with LOWKEY_VAULT_JAR=<path> (it is used as is), or
# set AZKV_REQUIRE_LOWKEY=1 to make its absence an error.
set -euo pipefail
SPIRE_VERSION="${SPIRE_VERSION:-v1.13.3}"
LOWKEY_VERSION="${LOWKEY_VERSION:-3.4.33}"   # the last line that runs on Java 17
CACHE="${AZKV_CACHE:-$HOME/.cache/azkv-plugin}"
mkdir -p "$CACHE/bin" "$CACHE/jars"

die() { echo "install-peers: $*" >&2; exit 1; }

# spire-agent is not built: no test needs it, and building SPIRE dominates a cold run.
if [ ! -x "$CACHE/bin/spire-server" ] \
   || [ "$(cat "$CACHE/bin/.spire-version" 2>/dev/null)" != "$SPIRE_VERSION" ]; then
  command -v go >/dev/null || die "go is not installed; it is needed to build spire-server $SPIRE_VERSION"
  work="$(mktemp -d)"
  (
    cd "$work"
    go mod init azkv-peers >/dev/null 2>&1
    go get -tool "github.com/spiffe/spire/cmd/spire-server@$SPIRE_VERSION" >&2
    GOBIN="$CACHE/bin" go install github.com/spiffe/spire/cmd/spire-server >&2
  ) || die "could not build spire-server $SPIRE_VERSION from the Go module proxy"
  rm -rf "$work"
  echo "$SPIRE_VERSION" > "$CACHE/bin/.spire-version"
fi
"$CACHE/bin/spire-server" --version >/dev/null 2>&1 || die "$CACHE/bin/spire-server does not run"

lowkey_missing() {
  [ "${AZKV_REQUIRE_LOWKEY:-0}" = 1 ] && die "lowkey-vault-app $LOWKEY_VERSION: $1 (AZKV_REQUIRE_LOWKEY=1)"
  echo "install-peers: WARNING: lowkey-vault-app $LOWKEY_VERSION unavailable: $1." \
       "End-to-end runs fall back to the in-repo fake Key Vault;" \
       "set LOWKEY_VAULT_JAR=<path to lowkey-vault-app jar> to use lowkey-vault." >&2
  JAR=""
}

JAR="$CACHE/jars/lowkey-vault-app-$LOWKEY_VERSION.jar"
REFUSED="$CACHE/jars/.lowkey-vault-app-$LOWKEY_VERSION.refused"
if [ -n "${LOWKEY_VAULT_JAR:-}" ]; then
  [ -s "$LOWKEY_VAULT_JAR" ] || die "LOWKEY_VAULT_JAR=$LOWKEY_VAULT_JAR is not a file"
  JAR="$LOWKEY_VAULT_JAR"
elif [ ! -s "$JAR" ]; then
  if [ -n "$(find "$REFUSED" -mmin -1440 2>/dev/null)" ]; then
    # A refusal is final for the day; don't pay for mvn on every test run.
    lowkey_missing "Maven Central did not serve it (cached refusal, $REFUSED; delete it to retry)"
  elif ! command -v mvn >/dev/null; then
    lowkey_missing "mvn is not installed"
  elif mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      "-Dartifact=com.github.nagyesta.lowkey-vault:lowkey-vault-app:$LOWKEY_VERSION" \
      "-DoutputDirectory=$CACHE/jars" >&2 && [ -s "$JAR" ]; then
    :
  else
    touch "$REFUSED"
    lowkey_missing "com.github.nagyesta.lowkey-vault:lowkey-vault-app:$LOWKEY_VERSION is not served by Maven Central"
  fi
fi

echo "SPIRE_SERVER_BIN=$CACHE/bin/spire-server"
echo "LOWKEY_VAULT_JAR=$JAR"
