#!/usr/bin/env bash
# Durable enqueue through the edge proxy's 202 path, beside NATS JetStream
# (file store, sync always) and this disk's raw limits, in one run.
#
#   raw     go test -bench Enqueue ./internal/proxy/spool/: one writer doing
#           write+fdatasync, and 64 writers sharing fdatasyncs (the raw
#           group-commit limit), plus the spool package itself
#   misaki  misaki-proxy with spool.sync: always and the route offline (its
#           only link's glob matches no interface); wrk, 64 connections,
#           POST 1 KiB with "Prefer: respond-async": every answer is a 202
#           given after the request was fsynced
#   misaki  again with spool.sync: interval: the same path without waiting
#           for an fsync
#   nginx   "return 202" to the same POSTs, nothing stored: the HTTP ceiling
#           of this machine for this load
#   nats    nats-server -js with sync_interval: always; nats bench, 64
#           synchronous publishers of 1 KiB messages to a file-backed stream
#
# The servers run on PROXY_CPUS (default 0), the load generators on
# LOAD_CPU (default 1).
#
# Usage: bench/spool.sh   (DURATION=10s CONNS=64 PROXY_CPUS=0 LOAD_CPU=1
#                          NATS_MSGS=50000; TMPDIR picks the disk)
# Needs: wrk, nats-server and nats (hack/bench-tools.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10s}" CONNS="${CONNS:-64}" PROXY_CPUS="${PROXY_CPUS:-0}" LOAD_CPU="${LOAD_CPU:-1}"
NMSGS="${NATS_MSGS:-50000}"
export PATH="${MISAKI_BENCH_BIN:-$HOME/.cache/misaki/bin}:$PATH"
for t in wrk nats-server nats taskset curl python3; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (run hack/bench-tools.sh)" >&2; exit 1; }
done
W="$(mktemp -d "${TMPDIR:-/tmp}/misaki-spoolbench.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
log() { printf '[spool-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p bench/results
OUT="bench/results/spool-enqueue-$(date -u +%Y%m%d-%H%M%S).md"

# ---- raw disk and the spool package ------------------------------------------
log "raw disk limits and the spool package (go test -bench Enqueue)"
go test -run '^$' -bench Enqueue -benchtime 3s ./internal/proxy/spool/ >"$W/raw.txt"
rate() { awk -v n="$1" '$1 ~ n { for (i = 1; i < NF; i++) if ($(i+1) == "req/s") print $i }' "$W/raw.txt"; }
RAW1="$(rate raw-fsync-each)"
RAWG="$(rate raw-group-commit-64)"
PKG="$(rate spool-always-64)"

# ---- misaki ------------------------------------------------------------------
log "building misaki-proxy"
go build -trimpath -ldflags='-s -w' -o "$W/misaki-proxy" ./cmd/misaki-proxy
cat >"$W/post.lua" <<'L'
wrk.method = "POST"
wrk.body = string.rep("t", 1024)
wrk.headers["Host"] = "telemetry.cloud.misaki"
wrk.headers["Prefer"] = "respond-async"
wrk.headers["Content-Type"] = "application/json"
L
# misaki SYNC: one run of the 202 path with spool.sync SYNC; sets RATE,
# BAD, SPOOLED, FSYNCS.
misaki() {
  local sync="$1" P ADM pid
  P="$(freeport)"
  ADM="$(freeport)"
  rm -rf "$W/spool"
  cat >"$W/misaki.yaml" <<C
listen: 127.0.0.1:$P
admin: 127.0.0.1:$ADM
links:
  - {name: wlan, match: "spoolbench-none*", class: wifi}
spool: {dir: $W/spool, sync: $sync, maxBytes: 64GiB, maxRequests: 100000000}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: http://127.0.0.1:9
    probe: {type: none}
    offline: {spool: true}
C
  taskset -c "$PROXY_CPUS" "$W/misaki-proxy" --config "$W/misaki.yaml" 2>"$W/misaki-$sync.log" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$ADM/readyz" && break; sleep 0.1; done
  log "misaki (sync $sync): wrk -c$CONNS -d$DURATION POST 1 KiB, respond-async"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" -s "$W/post.lua" "http://127.0.0.1:$P/v1/telemetry" >"$W/wrk-$sync.txt" 2>&1
  RATE="$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$W/wrk-$sync.txt")"
  BAD="$(awk '/Non-2xx/ {print $5}' "$W/wrk-$sync.txt")"
  read -r SPOOLED FSYNCS <<<"$(curl -fs "http://127.0.0.1:$ADM/v1/spool" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(r["depth"] for r in d["routes"]), d["stats"]["Fsyncs"])')"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}
misaki always
MISAKI="$RATE" MBAD="$BAD" MSPOOLED="$SPOOLED" MFSYNCS="$FSYNCS"
misaki interval
MISAKI_IV="$RATE" IVBAD="$BAD"

# ---- nginx: the same requests answered 202 with nothing stored ---------------
# The HTTP ceiling of this machine for this load: what any server pays to
# read a 1 KiB POST and answer it, before storing anything.
NGP="$(freeport)"
mkdir -p "$W/nginx/tmp"
cat >"$W/nginx/nginx.conf" <<C
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $W/nginx/tmp/client;
  proxy_temp_path $W/nginx/tmp/proxy;
  fastcgi_temp_path $W/nginx/tmp/fastcgi;
  uwsgi_temp_path $W/nginx/tmp/uwsgi;
  scgi_temp_path $W/nginx/tmp/scgi;
  server {
    listen 127.0.0.1:$NGP;
    location / { return 202 "{\"status\":\"accepted\"}"; }
  }
}
C
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
taskset -c "$PROXY_CPUS" "$NGINX" -p "$W/nginx" -c "$W/nginx/nginx.conf" -g 'daemon off;' 2>"$W/nginx.log" &
PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$NGP/" && break; sleep 0.1; done
log "nginx: return 202, wrk -c$CONNS -d$DURATION POST 1 KiB"
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" -s "$W/post.lua" "http://127.0.0.1:$NGP/v1/telemetry" >"$W/wrk-nginx.txt" 2>&1
NGX="$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$W/wrk-nginx.txt")"
kill "${PIDS[-1]}"
wait "${PIDS[-1]}" 2>/dev/null || true

# ---- NATS JetStream ----------------------------------------------------------
NP="$(freeport)"
cat >"$W/nats.conf" <<C
listen: 127.0.0.1:$NP
jetstream { store_dir: "$W/nats", sync_interval: always }
C
taskset -c "$PROXY_CPUS" nats-server -c "$W/nats.conf" 2>"$W/nats.log" &
PIDS+=($!)
sleep 1
log "nats: $CONNS synchronous JetStream publishers, $NMSGS messages of 1 KiB"
taskset -c "$LOAD_CPU" nats --server "nats://127.0.0.1:$NP" bench js pub sync bench.spool --clients "$CONNS" \
  --size 1024 --msgs "$NMSGS" --create --storage file --no-progress >"$W/nats.txt" 2>&1 || cat "$W/nats.txt" >&2
NATS="$(awk '/aggregated stats/ { for (i = 1; i <= NF; i++) if ($i == "msgs/sec") { gsub(",", "", $(i-1)); print $(i-1); exit } }' "$W/nats.txt")"

# ---- report --------------------------------------------------------------------
{
  echo "## Durable enqueue: misaki's 202 path, NATS JetStream, the disk"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), servers on CPU $PROXY_CPUS, load on CPU $LOAD_CPU."
  echo
  echo "| | req/s |"
  echo "|---|---:|"
  echo "| disk: write+fdatasync, 1 writer | $RAW1 |"
  echo "| disk: group commit, 64 writers (the raw limit) | $RAWG |"
  echo "| spool package, \`sync: always\`, 64 goroutines | $PKG |"
  echo "| **misaki-proxy, 202 path, \`sync: always\`, wrk -c$CONNS** | **$MISAKI** (non-2xx: ${MBAD:-0}; spooled: $MSPOOLED; fsyncs: $MFSYNCS) |"
  echo "| misaki-proxy, 202 path, \`sync: interval\` (no fsync waited for) | $MISAKI_IV (non-2xx: ${IVBAD:-0}) |"
  echo "| nginx, \`return 202\`, nothing stored (the HTTP ceiling) | $NGX |"
  echo "| NATS JetStream, file store, \`sync_interval: always\`, $CONNS sync publishers | ${NATS:-?} |"
  echo
  echo "misaki ÷ raw group commit: $(awk -v a="$MISAKI" -v b="$RAWG" 'BEGIN{printf "%.2f", a/b}'); nginx with nothing stored ÷ raw group commit: $(awk -v a="$NGX" -v b="$RAWG" 'BEGIN{printf "%.2f", a/b}'); misaki ÷ nginx: $(awk -v a="$MISAKI" -v b="$NGX" 'BEGIN{printf "%.2f", a/b}')"
  echo
  echo '<details><summary>raw outputs</summary>'
  echo
  echo '```'
  cat "$W/raw.txt" "$W/wrk-always.txt" "$W/wrk-interval.txt" "$W/wrk-nginx.txt"
  tail -n 4 "$W/nats.txt"
  echo '```'
  echo '</details>'
} | tee "$OUT"
log "written: $OUT"
