#!/usr/bin/env bash
# Installs the real Kubernetes parts the control-plane tests run against and
# prints the directory to use as KUBEBUILDER_ASSETS:
#
#   etcd            built from the Go module proxy at $ETCD_VERSION (about a
#                   minute once; Debian's 3.4.23 is too old for kwok, below)
#   kube-apiserver  built from the Go module proxy: a throwaway module requires
#   kubectl         k8s.io/kubernetes $KUBE_VERSION and replaces every
#                   k8s.io/<staging> module with v0.<minor>.<patch>, as the
#                   kubernetes repo's own go.mod does with ./staging paths.
#   helm            go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION, for the
#                   chart tests and make generate (about 4 minutes once).
#
# With KUBE_TOOLS_CLUSTER=1, also the parts of a whole (simulated) cluster, for
# the agent's tests (issue 18): Deployments that really become Ready.
#   kube-controller-manager, kube-scheduler
#                   built as kube-apiserver is (they build at 1.37, not 1.31).
#   kwok            go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION: nodes
#                   with capacity whose pods it marks running (about 3 min once).
#
# The binaries are cached in $HOME/.cache/misaki/k8s/$KUBE_VERSION, so only the
# first run pays for the build (about 10 minutes on 2 cores). Progress goes to
# stderr; stdout is the assets directory and nothing else.
#
# Env:
#   KUBE_VERSION     k8s.io/kubernetes version (default v1.37.2)
#   MISAKI_K8S_DIR   cache dir (default $HOME/.cache/misaki/k8s/$KUBE_VERSION)
#   HELM_VERSION     helm version (default v4.3.1), cached in $HOME/.cache/misaki/helm
#   KUBE_TOOLS_CLUSTER  1: also kube-controller-manager, kube-scheduler and kwok
#   KWOK_VERSION     kwok version (default v0.8.0)
#   ETCD_VERSION     go.etcd.io/etcd/server/v3 version (default v3.6.17), cached
#                    in $HOME/.cache/misaki/etcd
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.17}"
DIR="${MISAKI_K8S_DIR:-$HOME/.cache/misaki/k8s/$KUBE_VERSION}"
log() { printf '[kube-tools] %s\n' "$*" >&2; }

mkdir -p "$DIR"

# ---- etcd (Go module proxy) ------------------------------------------------
# Not Debian's etcd-server: its 3.4.23 lacks the progress notifications
# kube-apiserver 1.37 needs for watch-list requests (etcd 3.4.31+ or
# 3.5.13+). Without them kwok's watches fail ("RequestWatchProgress is
# disabled") and it sees pods only when it lists again, so a Deployment
# takes 20-60 s instead of about a second to become ready.
etcd_dir="$HOME/.cache/misaki/etcd/$ETCD_VERSION"
if [ ! -x "$etcd_dir/etcd" ]; then
  etcd_work="$(mktemp -d)"
  log "building etcd $ETCD_VERSION in $etcd_work (first run only, about a minute)"
  mkdir -p "$etcd_dir"
  (
    cd "$etcd_work"
    go mod init misaki.local/etcd >/dev/null 2>&1
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' >main.go
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$etcd_dir/etcd.tmp" .
  ) >"$etcd_work/build.log" 2>&1 || { cat "$etcd_work/build.log" >&2; rm -rf "$etcd_work"; log "building etcd failed"; exit 1; }
  rm -rf "$etcd_work"
  mv "$etcd_dir/etcd.tmp" "$etcd_dir/etcd"
fi
ln -sf "$etcd_dir/etcd" "$DIR/etcd"

# ---- kube-apiserver and kubectl (Go module proxy) ----------------------------
if [ ! -x "$DIR/kube-apiserver" ] || [ ! -x "$DIR/kubectl" ]; then
  staging_version="v0.${KUBE_VERSION#v1.}"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "building kube-apiserver and kubectl $KUBE_VERSION in $work (first run only, ~10 min)"
  cd "$work"
  go mod init misaki.local/kube-tools >/dev/null 2>&1
  # The staging modules, as kubernetes' own go.mod lists them.
  mods="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  grep -o 'k8s.io/[a-z0-9-]* => ./staging' "$mods" | cut -d' ' -f1 | sort -u >staging.txt
  [ -s staging.txt ] || { log "no staging modules found in $mods"; exit 1; }
  args=()
  while read -r m; do args+=("-replace=$m=$m@$staging_version"); done <staging.txt
  go mod edit "${args[@]}" "-require=k8s.io/kubernetes@$KUBE_VERSION"
  printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n' >tools.go
  go mod tidy >&2
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$DIR/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$DIR/kubectl" k8s.io/kubernetes/cmd/kubectl >&2
fi

# ---- kube-controller-manager, kube-scheduler, kwok (KUBE_TOOLS_CLUSTER=1) -------
if [ "${KUBE_TOOLS_CLUSTER:-}" = 1 ]; then
  if [ ! -x "$DIR/kube-controller-manager" ] || [ ! -x "$DIR/kube-scheduler" ]; then
    staging_version="v0.${KUBE_VERSION#v1.}"
    cwork="$(mktemp -d)"
    log "building kube-controller-manager and kube-scheduler $KUBE_VERSION in $cwork (first run only)"
    (
      cd "$cwork"
      go mod init misaki.local/kube-tools >/dev/null 2>&1
      mods="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
      grep -o 'k8s.io/[a-z0-9-]* => ./staging' "$mods" | cut -d' ' -f1 | sort -u >staging.txt
      args=()
      while read -r m; do args+=("-replace=$m=$m@$staging_version"); done <staging.txt
      go mod edit "${args[@]}" "-require=k8s.io/kubernetes@$KUBE_VERSION"
      printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler/app"\n)\n' >tools.go
      go mod tidy >&2
      ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
      CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$DIR/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager >&2
      CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$DIR/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler >&2
    )
    rm -rf "$cwork"
  fi
  KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
  kwok_dir="$HOME/.cache/misaki/kwok/$KWOK_VERSION"
  if [ ! -x "$kwok_dir/kwok" ]; then
    log "building kwok $KWOK_VERSION (first run only, ~3 min)"
    mkdir -p "$kwok_dir"
    GOBIN="$kwok_dir" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
  fi
  ln -sf "$kwok_dir/kwok" "$DIR/kwok"
fi

# ---- helm (Go module proxy) ----------------------------------------------------
HELM_VERSION="${HELM_VERSION:-v4.3.1}"
helm_dir="$HOME/.cache/misaki/helm/$HELM_VERSION"
if [ ! -x "$helm_dir/helm" ]; then
  log "building helm $HELM_VERSION (first run only, ~4 min)"
  mkdir -p "$helm_dir"
  GOBIN="$helm_dir" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
fi
ln -sf "$helm_dir/helm" "$DIR/helm"

log "$("$DIR/kube-apiserver" --version) ; $("$DIR/etcd" --version | head -1) ; helm $("$DIR/helm" version --short)"
echo "$DIR"
