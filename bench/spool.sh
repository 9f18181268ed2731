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
P="$(freeport)"
ADM="$(freeport)"
cat >"$W/misaki.yaml" <<C
listen: 127.0.0.1:$P
admin: 127.0.0.1:$ADM
links:
  - {name: wlan, match: "spoolbench-none*", class: wifi}
spool: {dir: $W/spool, sync: always, maxBytes: 64GiB, maxRequests: 100000000}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: http://127.0.0.1:9
    probe: {type: none}
    offline: {spool: true}
C
taskset -c "$PROXY_CPUS" "$W/misaki-proxy" --config "$W/misaki.yaml" 2>"$W/misaki.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$ADM/readyz" && break; sleep 0.1; done
cat >"$W/post.lua" <<'L'
wrk.method = "POST"
wrk.body = string.rep("t", 1024)
wrk.headers["Host"] = "telemetry.cloud.misaki"
wrk.headers["Prefer"] = "respond-async"
wrk.headers["Content-Type"] = "application/json"
L
log "misaki: wrk -c$CONNS -d$DURATION POST 1 KiB, respond-async"
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" -s "$W/post.lua" "http://127.0.0.1:$P/v1/telemetry" >"$W/wrk.txt" 2>&1
MISAKI="$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$W/wrk.txt")"
BAD="$(awk '/Non-2xx/ {print $5}' "$W/wrk.txt")"
read -r SPOOLED FSYNCS <<<"$(curl -fs "http://127.0.0.1:$ADM/v1/spool" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(r["depth"] for r in d["routes"]), d["stats"]["Fsyncs"])')"
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
  echo "| **misaki-proxy, 202 path, \`sync: always\`, wrk -c$CONNS** | **$MISAKI** (non-2xx: ${BAD:-0}; spooled: $SPOOLED; fsyncs: $FSYNCS) |"
  echo "| NATS JetStream, file store, \`sync_interval: always\`, $CONNS sync publishers | ${NATS:-?} |"
  echo
  echo "misaki ÷ raw group commit: $(awk -v a="$MISAKI" -v b="$RAWG" 'BEGIN{printf "%.2f", a/b}')"
  echo
  echo '<details><summary>raw outputs</summary>'
  echo
  echo '```'
  cat "$W/raw.txt" "$W/wrk.txt"
  tail -n 4 "$W/nats.txt"
  echo '```'
  echo '</details>'
} | tee "$OUT"
log "written: $OUT"
