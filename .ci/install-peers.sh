#!/usr/bin/env bash
# Installs the real peers the end-to-end tests need, by name from the registries, into a cache
# outside the clone: spire-server/spire-agent (Go module proxy) and the lowkey-vault jar (Maven
# Central). Prints the paths as shell assignments. Fails loudly when a tool cannot be had.
set -euo pipefail
SPIRE_VERSION="${SPIRE_VERSION:-v1.13.3}"
LOWKEY_VERSION="${LOWKEY_VERSION:-3.4.33}"   # the last line that runs on Java 17
CACHE="${AZKV_CACHE:-$HOME/.cache/azkv-plugin}"
mkdir -p "$CACHE/bin" "$CACHE/jars"

die() { echo "install-peers: $*" >&2; exit 1; }

if [ ! -x "$CACHE/bin/spire-server" ] || [ ! -x "$CACHE/bin/spire-agent" ] \
   || [ "$(cat "$CACHE/bin/.spire-version" 2>/dev/null)" != "$SPIRE_VERSION" ]; then
  command -v go >/dev/null || die "go is not installed; it is needed to build spire-server $SPIRE_VERSION"
  work="$(mktemp -d)"
  (
    cd "$work"
    go mod init azkv-peers >/dev/null 2>&1
    go get -tool "github.com/spiffe/spire/cmd/spire-server@$SPIRE_VERSION" >&2
    go get -tool "github.com/spiffe/spire/cmd/spire-agent@$SPIRE_VERSION" >&2
    GOBIN="$CACHE/bin" go install github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent >&2
  ) || die "could not build spire-server/spire-agent $SPIRE_VERSION from the Go module proxy"
  rm -rf "$work"
  echo "$SPIRE_VERSION" > "$CACHE/bin/.spire-version"
fi

JAR="$CACHE/jars/lowkey-vault-app-$LOWKEY_VERSION.jar"
if [ ! -s "$JAR" ]; then
  command -v mvn >/dev/null || die "mvn is not installed; it is needed to fetch lowkey-vault $LOWKEY_VERSION"
  mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    "-Dartifact=com.github.nagyesta.lowkey-vault:lowkey-vault-app:$LOWKEY_VERSION" \
    "-DoutputDirectory=$CACHE/jars" >&2 \
    || die "could not fetch com.github.nagyesta.lowkey-vault:lowkey-vault-app:$LOWKEY_VERSION from Maven Central"
fi
[ -s "$JAR" ] || die "lowkey-vault jar missing at $JAR"

echo "SPIRE_SERVER_BIN=$CACHE/bin/spire-server"
echo "SPIRE_AGENT_BIN=$CACHE/bin/spire-agent"
echo "LOWKEY_VAULT_JAR=$JAR"
