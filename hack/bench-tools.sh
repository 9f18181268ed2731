#!/usr/bin/env bash
# Idempotent installer for the proxy benchmark tools (bench/proxy.sh).
#
#   Debian: nginx, wrk, h2load (nghttp2-client), taskset (util-linux), procps,
#           dnsperf, unbound, dnsmasq (dnsmasq-base), dig (dnsutils)
#   Go:     caddy, fortio v1.63.x, nats-server and nats (the spool benchmark's
#           peer), coredns-min (CoreDNS with only the cache and forward
#           plugins, bench/dns.sh's peer)  -> cached in $HOME/.cache/misaki/bin
#
# Re-running is cheap: apt is skipped when every command is present, and a Go
# binary is only built when it is missing from the cache dir. Nothing is left
# running: the Debian nginx service is stopped if the package started it.
#
# Env:
#   MISAKI_BENCH_BIN   cache dir for Go-built tools (default $HOME/.cache/misaki/bin)
#   CADDY_VERSION      module version for caddy (default: latest)
#   FORTIO_VERSION     module version for fortio (default: newest v1.63.x)
set -euo pipefail

BIN_DIR="${MISAKI_BENCH_BIN:-$HOME/.cache/misaki/bin}"
mkdir -p "$BIN_DIR"

log() { printf '[bench-tools] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    log "not root and no sudo: apt installs will fail"; fi
fi

# ---- Debian packages ---------------------------------------------------------
need_apt=()
command -v nginx   >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v wrk     >/dev/null 2>&1 || need_apt+=(wrk)
command -v h2load  >/dev/null 2>&1 || need_apt+=(nghttp2-client)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v pgrep   >/dev/null 2>&1 || need_apt+=(procps)
command -v dnsperf >/dev/null 2>&1 || need_apt+=(dnsperf)
command -v unbound >/dev/null 2>&1 || [ -x /usr/sbin/unbound ] || need_apt+=(unbound)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
command -v dig     >/dev/null 2>&1 || need_apt+=(dnsutils)

if [ "${#need_apt[@]}" -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"; then
    # nginx-light is a transitional/absent package on some releases: fall back.
    log "retrying with nginx instead of nginx-light"
    pkgs=("${need_apt[@]/nginx-light/nginx}")
    $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  fi
  # The Debian package may start the system service; the benchmark runs its
  # own instances, so make sure nothing is left listening on :80.
  $SUDO service nginx stop >/dev/null 2>&1 || true
  $SUDO service unbound stop >/dev/null 2>&1 || true
  if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
    $SUDO systemctl disable --now unbound >/dev/null 2>&1 || true
  fi
else
  log "Debian tools present (nginx wrk h2load taskset pgrep dnsperf unbound dnsmasq dig)"
fi

# ---- Go-built tools ----------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
  log "go not found in PATH"; exit 1
fi

# Build outside any module so the project's go.mod/go.sum are never touched.
go_install() { # name module@version
  local name="$1" modver="$2"
  if [ -x "$BIN_DIR/$name" ]; then
    log "$name cached: $BIN_DIR/$name"
    return 0
  fi
  log "go install $modver -> $BIN_DIR"
  (cd / && GOBIN="$BIN_DIR" GOFLAGS=-mod=mod CGO_ENABLED=0 go install "$modver")
}

CADDY_VERSION="${CADDY_VERSION:-latest}"
go_install caddy "github.com/caddyserver/caddy/v2/cmd/caddy@${CADDY_VERSION}"

if [ ! -x "$BIN_DIR/fortio" ]; then
  if [ -z "${FORTIO_VERSION:-}" ]; then
    FORTIO_VERSION="$(cd / && go list -m -versions fortio.org/fortio 2>/dev/null \
      | tr ' ' '\n' | grep -E '^v1\.63\.[0-9]+$' | sort -t. -k3,3n | tail -n1 || true)"
    FORTIO_VERSION="${FORTIO_VERSION:-v1.63.10}"
  fi
  go_install fortio "fortio.org/fortio@${FORTIO_VERSION}"
else
  log "fortio cached: $BIN_DIR/fortio"
fi

go_install nats-server "github.com/nats-io/nats-server/v2@${NATS_SERVER_VERSION:-latest}"
go_install nats "github.com/nats-io/natscli/nats@${NATSCLI_VERSION:-latest}"

# CoreDNS with only cache and forward: the issue's "minimal build", made the
# way CoreDNS documents builds with a chosen plugin list (a main package
# that sets dnsserver.Directives), in a throwaway module under the cache.
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
if [ ! -x "$BIN_DIR/coredns-min" ]; then
  src="$(dirname "$BIN_DIR")/src/coredns-min"
  log "building coredns-min (CoreDNS $COREDNS_VERSION, cache + forward) -> $BIN_DIR"
  rm -rf "$src" && mkdir -p "$src"
  cat >"$src/main.go" <<'GO'
// A CoreDNS with only the cache and forward plugins, for bench/dns.sh.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/forward"
)

func init() { dnsserver.Directives = []string{"cache", "forward"} }

func main() { coremain.Run() }
GO
  (cd "$src" && go mod init coredns-min >/dev/null 2>&1 && go get "github.com/coredns/coredns@$COREDNS_VERSION" \
    && go mod tidy && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$BIN_DIR/coredns-min" .)
else
  log "coredns-min cached: $BIN_DIR/coredns-min"
fi

log "versions:"
{
  nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1
  wrk --version 2>&1 | head -n1 || true
  h2load --version 2>&1 | head -n1
  echo "caddy $(go version -m "$BIN_DIR/caddy" | awk '$1=="mod" && $2 ~ /caddyserver\/caddy/{print $3}')"
  echo "fortio $("$BIN_DIR/fortio" version)"
  echo "$("$BIN_DIR/nats-server" --version)"
  echo "natscli $("$BIN_DIR/nats" --version 2>&1)"
  dnsperf -h 2>&1 | grep -m1 Version | sed 's/^/dnsperf /'
  echo "unbound $(PATH="$PATH:/usr/sbin" unbound -V | head -n1)"
  PATH="$PATH:/usr/sbin" dnsmasq --version | head -n1
  "$BIN_DIR/coredns-min" -version | head -n1
} | sed 's/^/  /' >&2
log "done. Add to PATH: export PATH=\"$BIN_DIR:\$PATH\""
