#!/usr/bin/env bash
# Builds (once) the peer the agent benchmark measures beside misaki-agent
# and prints the directory that holds it:
#
#   kustomize-controller  Flux's, from the Go module proxy: the module's own
#                         source with its go.mod and go.sum, the ./api
#                         replace pointed at the api module of the same
#                         version (a module zip leaves nested modules out).
#                         v1.9.6 is the newest whose go.mod asks for Go 1.26;
#                         v1.10 wants 1.27.
#
# kubectl, the other peer, is hack/kube-tools.sh's.
#
# Cached in $HOME/.cache/misaki/flux/$FLUX_KC_VERSION (about 5 minutes on 2
# cores the first time). Progress goes to stderr; stdout is the directory.
set -euo pipefail

FLUX_KC_VERSION="${FLUX_KC_VERSION:-v1.9.6}"
DIR="${MISAKI_FLUX_DIR:-$HOME/.cache/misaki/flux/$FLUX_KC_VERSION}"
log() { printf '[agentbench peer-tools] %s\n' "$*" >&2; }

if [ ! -x "$DIR/kustomize-controller" ]; then
  log "building kustomize-controller $FLUX_KC_VERSION (first run only)"
  mkdir -p "$DIR"
  src="$(go mod download -json "github.com/fluxcd/kustomize-controller@$FLUX_KC_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  [ -n "$src" ] || { log "no source for kustomize-controller@$FLUX_KC_VERSION"; exit 1; }
  work="$(mktemp -d)"
  trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  cd "$work"
  go mod edit "-replace=github.com/fluxcd/kustomize-controller/api=github.com/fluxcd/kustomize-controller/api@$FLUX_KC_VERSION"
  go mod download github.com/fluxcd/kustomize-controller/api >&2
  GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$DIR/kustomize-controller" . >&2
  cp config/crd/bases/*.yaml "$DIR/"
fi
echo "$DIR"
