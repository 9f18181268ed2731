#!/usr/bin/env bash
# A/B of two misaki-proxy builds at a fixed request rate: CPU, system calls and
# context switches per request (perf stat), and fortio's p99. The builds take
# turns, REPS times, in front of one nginx upstream, so that this VM's drift
# hits both alike.
#
# Usage: bench/ab.sh REV_A REV_B      (git revisions; built into a temp dir)
#
# Env knobs:
#   REPS=3 QPS=1000 SECS=10 CONNS=16
#   ARRIVALS=uniform,step   fortio arrival patterns (see bench/proxy.sh)
#   PROXY_CPU=0 LOAD_CPU=1
#   ENV_A= ENV_B=           environment for build A / B (e.g. ENV_B=GOGC=400;
#                           with REV_A = REV_B this compares settings)
# Needs: nginx, fortio (hack/bench-tools.sh), perf (Debian linux-perf), taskset.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ $# -eq 2 ] || { echo "usage: $0 REV_A REV_B" >&2; exit 2; }
REPS="${REPS:-3}" QPS="${QPS:-1000}" SECS="${SECS:-10}" CONNS="${CONNS:-16}"
ARRIVALS="${ARRIVALS:-uniform,step}" PROXY_CPU="${PROXY_CPU:-0}" LOAD_CPU="${LOAD_CPU:-1}"
export PATH="${MISAKI_BENCH_BIN:-$HOME/.cache/misaki/bin}:$PATH:/usr/sbin:/sbin"
for t in nginx fortio perf taskset python3 git; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (hack/bench-tools.sh; perf: apt-get install linux-perf)" >&2; exit 1; }
done

W="$(mktemp -d "${TMPDIR:-/tmp}/misaki-ab.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

build() { # rev -> binary path
  local rev="$1" dir="$W/src-$2"
  git worktree add -q --detach "$dir" "$rev"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$W/bin-$2" ./cmd/misaki-proxy)
  git worktree remove --force "$dir"
  echo "$W/bin-$2"
}
A="$(build "$1" a)"; B="$(build "$2" b)"

read -r UP P ADM <<<"$(python3 -c '
import socket; s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]; print(*[x.getsockname()[1] for x in s])')"
mkdir -p "$W/up/tmp"
BODY="$(head -c 1024 /dev/zero | tr '\0' 'x')"
cat >"$W/up/nginx.conf" <<C
worker_processes 1; pid $W/up/nginx.pid; error_log $W/up/error.log warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $W/up/tmp/c; proxy_temp_path $W/up/tmp/p; fastcgi_temp_path $W/up/tmp/f;
  uwsgi_temp_path $W/up/tmp/u; scgi_temp_path $W/up/tmp/s;
  server { listen 127.0.0.1:$UP; location / { default_type text/plain; return 200 "$BODY"; } } }
C
taskset -c "$LOAD_CPU" nginx -p "$W/up" -e "$W/up/error.log" -c "$W/up/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
cat >"$W/m.yaml" <<C
listen: 127.0.0.1:$P
admin: 127.0.0.1:$ADM
routes:
  - name: bench
    hosts: [bench.mesh]
    upstream: http://127.0.0.1:$UP
C

ROWS="$W/rows"; : >"$ROWS"
echo "| arrivals | build | rep | CPU (cores) | syscalls / req | context switches / req | p99 ms |"
echo "|---|---|---:|---:|---:|---:|---:|"
for mode in ${ARRIVALS//,/ }; do
  extra=(); [ "$mode" = uniform ] && extra=(-uniform)
  for r in $(seq "$REPS"); do
    for which in A B; do
      if [ "$which" = A ]; then bin="$A" rev="$1" envs="${ENV_A:-}"; else bin="$B" rev="$2" envs="${ENV_B:-}"; fi
      rev="$rev${envs:+ $envs}"
      env $envs taskset -c "$PROXY_CPU" "$bin" --config "$W/m.yaml" >"$W/m.log" 2>&1 &
      m=$!
      for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$ADM/readyz" && break; sleep 0.1; done
      taskset -c "$LOAD_CPU" fortio load -quiet -qps "$QPS" -c "$CONNS" -t 3s "${extra[@]}" \
        -H 'Host: bench.mesh' "http://127.0.0.1:$P/" >/dev/null 2>&1
      taskset -c "$LOAD_CPU" fortio load -quiet -qps "$QPS" -c "$CONNS" -t "$((SECS + 2))s" "${extra[@]}" \
        -r 0.00001 -p 99 -json "$W/f.json" -H 'Host: bench.mesh' "http://127.0.0.1:$P/" >/dev/null 2>&1 &
      f=$!
      sleep 1
      out="$(perf stat -x, -e raw_syscalls:sys_enter,context-switches,task-clock -p "$m" -- sleep "$SECS" 2>&1)"
      wait "$f"
      kill "$m"; wait "$m" 2>/dev/null || true
      python3 - "$W/f.json" "$mode" "$rev" "$r" "$SECS" "$QPS" "$out" <<'PY' | tee -a "$ROWS"
import json, sys
f, mode, rev, rep, secs, qps, out = sys.argv[1:]
ev = {}
for line in out.splitlines():
    parts = line.split(",")
    if len(parts) > 2 and parts[0].replace(".", "").isdigit():
        ev[parts[2]] = float(parts[0])
reqs = float(secs) * float(qps)
d = json.load(open(f))
p99 = [p["Value"] * 1000 for p in d["DurationHistogram"]["Percentiles"] if p["Percentile"] == 99][0]
print("| %s | %s | %s | %.3f | %.2f | %.2f | %.3f |" % (mode, rev, rep, ev.get("task-clock", 0) / 1000 / float(secs),
      ev.get("raw_syscalls:sys_enter", 0) / reqs, ev.get("context-switches", 0) / reqs, p99))
PY
    done
  done
done

# Medians per arrival pattern and build.
echo
echo "| arrivals | build | runs | median CPU (cores) | median syscalls / req | median context switches / req | median p99 ms |"
echo "|---|---|---:|---:|---:|---:|---:|"
python3 - "$ROWS" <<'PY'
import statistics, sys
groups = {}
for line in open(sys.argv[1]):
    f = [x.strip() for x in line.strip().strip("|").split("|")]
    groups.setdefault((f[0], f[1]), []).append([float(x) for x in f[3:7]])
for (mode, rev), rows in groups.items():
    med = [statistics.median(c) for c in zip(*rows)]
    print("| %s | %s | %d | %.3f | %.2f | %.2f | %.3f |" % (mode, rev, len(rows), *med))
PY
