#!/usr/bin/env bash
# Installs the linters `make lint` runs, at pinned versions:
#
#   staticcheck     go install honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION
#                   (about a minute once)
#   golangci-lint   go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION
#                   (about 5 minutes once on 2 cores)
#
# The binaries are cached in $HOME/.cache/misaki/bin; a tool is built only
# when it is missing there, or its version or the Go it was built with
# differs from the wanted one (go version -m): an analyser built with an
# older Go cannot load a newer standard library. A warm run prints nothing;
# progress goes to stderr.
#
# Env:
#   MISAKI_LINT_BIN        cache dir (default $HOME/.cache/misaki/bin)
#   STATICCHECK_VERSION    default v0.8.2
#   GOLANGCI_LINT_VERSION  default v2.15.0
set -euo pipefail

BIN_DIR="${MISAKI_LINT_BIN:-$HOME/.cache/misaki/bin}"
STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"
log() { printf '[lint-tools] %s\n' "$*" >&2; }

mkdir -p "$BIN_DIR"
GO_VERSION="$(go env GOVERSION)"

# go_install NAME MODULE/PATH VERSION: builds outside any module, so the
# project's go.mod and go.sum are never touched.
go_install() {
  local name="$1" pkg="$2" version="$3"
  if [ -x "$BIN_DIR/$name" ] &&
    [ "$(go version -m "$BIN_DIR/$name" 2>/dev/null | awk 'NR == 1 {print $2} $1 == "mod" {print $3; exit}' | paste -sd' ')" = "$GO_VERSION $version" ]; then
    return 0
  fi
  log "building $name $version (first run only)"
  (cd / && GOBIN="$BIN_DIR" GOFLAGS=-mod=mod CGO_ENABLED=0 go install -trimpath "$pkg@$version") >&2
}

go_install staticcheck honnef.co/go/tools/cmd/staticcheck "$STATICCHECK_VERSION"
go_install golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint "$GOLANGCI_LINT_VERSION"
