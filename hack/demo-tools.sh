#!/usr/bin/env bash
# Prints a directory with what `make demo` runs its clusters from (the
# directory misaki-demo system takes as --assets):
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kwok
#                   from hack/kube-tools.sh (KUBE_TOOLS_CLUSTER=1), linked
#   etcd            built from the Go module proxy at $ETCD_VERSION, because
#                   Debian's etcd (3.4.23, what kube-tools.sh installs) lacks
#                   the progress notifications kube-apiserver 1.37 needs for
#                   watch-list requests (etcd 3.4.31+ or 3.5.13+). Without
#                   them kwok's watches fail ("RequestWatchProgress is
#                   disabled") and it sees pods only when it lists again, so
#                   a Deployment takes 20-60 s instead of about a second to
#                   become ready.
#
# The first run builds the kube binaries (about 10 minutes on 2 cores) and
# etcd (about 1 minute); both are cached under $HOME/.cache/misaki. Progress
# goes to stderr; stdout is the directory and nothing else.
#
# Env:
#   ETCD_VERSION     go.etcd.io/etcd/server/v3 version (default v3.6.17)
#   KUBE_VERSION     passed to hack/kube-tools.sh (default v1.37.2)
set -euo pipefail

ETCD_VERSION="${ETCD_VERSION:-v3.6.17}"
log() { printf '[demo-tools] %s\n' "$*" >&2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

kube="$(KUBE_TOOLS_CLUSTER=1 bash "$here/kube-tools.sh")"

etcd_dir="$HOME/.cache/misaki/etcd/$ETCD_VERSION"
if [ ! -x "$etcd_dir/etcd" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "building etcd $ETCD_VERSION in $work (first run only, about a minute)"
  mkdir -p "$etcd_dir"
  (
    cd "$work"
    go mod init misaki.local/etcd >/dev/null 2>&1
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' >main.go
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$etcd_dir/etcd.tmp" .
  ) >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; log "building etcd failed"; exit 1; }
  mv "$etcd_dir/etcd.tmp" "$etcd_dir/etcd"
fi

dir="$HOME/.cache/misaki/demo/$(basename "$kube")"
mkdir -p "$dir"
for b in kube-apiserver kube-controller-manager kube-scheduler kwok; do
  ln -sf "$(readlink -f "$kube/$b")" "$dir/$b"
done
ln -sf "$etcd_dir/etcd" "$dir/etcd"
log "$("$dir/etcd" --version | head -1) ; $("$dir/kube-apiserver" --version)"
echo "$dir"
