#!/usr/bin/env bash
# The proxy's DNS server beside unbound, dnsmasq and CoreDNS, in one run.
#
# Every resolver forwards to the same authoritative server (bench/dnsbench,
# which answers any name under bench.test. with one A record, TTL 1 day),
# and is filled with NAMES (100,000) names by one pass of dnsperf. Then,
# with every name cached:
#
#   throughput  dnsperf over the NAMES names for DURATION, QUEUE queries
#               outstanding: queries answered a second
#   latency     dnsperf at QPS (10,000) a second for DURATION, every
#               answer's latency recorded (-v): p50, p99, p99.9, max; and
#               the server's CPU time per query
#   memory      the server's resident memory (RSS, and of it anonymous)
#               with the NAMES names cached
#   restart     misaki only: stopped (it writes its cache file), started
#               again with the authoritative server gone; the cache file's
#               load time (from the proxy's log) and the time from starting
#               the process to its first answer (from a client polling
#               every 2 ms)
#
# Peers: unbound (1 thread, iterator only, forward-zone), dnsmasq
# (cache-size 150,000), CoreDNS built with only cache and forward
# (hack/bench-tools.sh), and misaki-proxy with dns.listen. The servers run
# on SERVER_CPU (default 1), dnsperf and the authoritative server on
# LOAD_CPU (default 0).
#
# Usage: bench/dns.sh   (NAMES=100000 DURATION=10 QPS=10000 QUEUE=256
#                        ONLY=misaki,unbound,dnsmasq,coredns KEEP_WORK=1
#                        MISAKI_PROXY=a built binary, e.g. of another commit)
# Needs: dnsperf, unbound, dnsmasq, coredns-min (hack/bench-tools.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NAMES="${NAMES:-100000}" DURATION="${DURATION:-10}" QPS="${QPS:-10000}" QUEUE="${QUEUE:-256}"
SERVER_CPU="${SERVER_CPU:-1}" LOAD_CPU="${LOAD_CPU:-0}" ONLY="${ONLY:-misaki,unbound,dnsmasq,coredns}"
export PATH="${MISAKI_BENCH_BIN:-$HOME/.cache/misaki/bin}:$PATH:/usr/sbin"
for t in dnsperf unbound dnsmasq coredns-min taskset dig python3; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (run hack/bench-tools.sh)" >&2; exit 1; }
done
W="$(mktemp -d "${TMPDIR:-/tmp}/misaki-dnsbench.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP_WORK:-}" ]; then echo "work dir kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
log() { printf '[dns-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p bench/results
OUT="bench/results/dns-$(date -u +%Y%m%d-%H%M%S).md"

if [ -n "${MISAKI_PROXY:-}" ]; then
  cp "$MISAKI_PROXY" "$W/misaki-proxy"
else
  log "building misaki-proxy"
  go build -trimpath -ldflags='-s -w' -o "$W/misaki-proxy" ./cmd/misaki-proxy
fi
log "building the authoritative server"
go build -trimpath -o "$W/dnsbench" ./bench/dnsbench
"$W/dnsbench" -names "$NAMES" >"$W/queries.txt"
LAST="n$((NAMES - 1)).bench.test."

AUTH="$(freeport)"
taskset -c "$LOAD_CPU" "$W/dnsbench" -listen "127.0.0.1:$AUTH" 2>"$W/auth.log" &
AUTH_PID=$!
PIDS+=("$AUTH_PID")

# ready PORT: waits until the server on PORT answers.
ready() {
  for _ in $(seq 100); do
    [ -n "$(dig +short +tries=1 +time=1 @127.0.0.1 -p "$1" n0.bench.test. 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  echo "the server on port $1 does not answer" >&2
  return 1
}
rss() { awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} END {printf "%.1f MiB (anonymous %.1f)", r/1024, a/1024}' "/proc/$1/status"; }
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A QPSR LOST LAT CPU MEM FILL
# measure NAME PID PORT: fills the cache, then the three measurements.
measure() {
  local name="$1" pid="$2" port="$3" t0 t1 hz
  log "$name: filling the cache with $NAMES names"
  taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$W/queries.txt" -n 1 -Q 20000 -t 5 >"$W/$name-fill.txt" 2>&1
  FILL[$name]="$(awk '/Queries lost/ {print $3}' "$W/$name-fill.txt") lost, $(awk '/Queries per second/ {printf "%.0f", $4}' "$W/$name-fill.txt")/s"
  log "$name: throughput, $DURATION s, $QUEUE outstanding"
  taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$W/queries.txt" -l "$DURATION" -c 4 -q "$QUEUE" >"$W/$name-max.txt" 2>&1
  QPSR[$name]="$(awk '/Queries per second/ {printf "%.0f", $4}' "$W/$name-max.txt")"
  LOST[$name]="$(awk '/Queries lost/ {print $3}' "$W/$name-max.txt")"
  log "$name: latency at $QPS/s, $DURATION s"
  hz="$(getconf CLK_TCK)"
  t0="$(cputicks "$pid")"
  taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$W/queries.txt" -l "$DURATION" -Q "$QPS" -v >"$W/$name-lat.txt" 2>&1
  t1="$(cputicks "$pid")"
  local answered
  answered="$(grep -c '^> NOERROR' "$W/$name-lat.txt" || true)"
  CPU[$name]="$(awk -v d="$((t1 - t0))" -v hz="$hz" -v n="$answered" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')"
  LAT[$name]="$(awk '/^> / {print $NF * 1e6}' "$W/$name-lat.txt" | sort -n | awk '
    {v[NR] = $1} END {
      printf "%.0f | %.0f | %.0f | %.0f", v[int(NR*0.5)], v[int(NR*0.99)], v[int(NR*0.999)], v[NR]
    }')"
  MEM[$name]="$(rss "$pid")"
}

SEL=",$ONLY,"

# peer NAME PORT COMMAND...: runs the command on SERVER_CPU, measures it,
# and stops it.
peer() {
  local name="$1" port="$2" pid
  shift 2
  taskset -c "$SERVER_CPU" "$@" 2>"$W/$name.log" &
  pid=$!
  PIDS+=("$pid")
  ready "$port"
  measure "$name" "$pid" "$port"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

# ---- misaki ------------------------------------------------------------------
if [[ $SEL == *,misaki,* ]]; then
  MP="$(freeport)" MA="$(freeport)" MD="$(freeport)"
  mkdir -p "$W/spool" # an older proxy did not make it for the cache file
  cat >"$W/misaki.yaml" <<C
listen: 127.0.0.1:$MP
admin: 127.0.0.1:$MA
spool: {dir: $W/spool}
dns:
  listen: 127.0.0.1:$MD
  upstreams: [127.0.0.1:$AUTH]
routes:
  - name: api
    hosts: [api.mesh]
    upstream: http://127.0.0.1:9
    probe: {type: none}
C
  taskset -c "$SERVER_CPU" "$W/misaki-proxy" --config "$W/misaki.yaml" 2>"$W/misaki.log" &
  pid=$!
  PIDS+=("$pid")
  ready "$MD"
  measure misaki "$pid" "$MD"
  SOURCES="$(curl -fs "http://127.0.0.1:$MA/metrics" | awk '/^misaki_dns_queries_total/ {split($1, a, "source=\""); split(a[2], b, "\""); s[b[1]] += $2} END {for (k in s) printf "%s %d, ", k, s[k]}')"
  ENTRIES="$(curl -fs "http://127.0.0.1:$MA/metrics" | awk '/^misaki_dns_cache_entries/ {print $2}')"
  log "misaki: stopping (the cache is saved), and starting again with the authoritative server gone"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  FILE_BYTES="$(stat -c %s "$W/spool/dns-cache")"
  kill "$AUTH_PID"
  wait "$AUTH_PID" 2>/dev/null || true
  start="$(date +%s%N)"
  taskset -c "$SERVER_CPU" "$W/misaki-proxy" --config "$W/misaki.yaml" 2>"$W/misaki-restart.log" &
  pid=$!
  PIDS+=("$pid")
  taskset -c "$LOAD_CPU" "$W/dnsbench" -probe "127.0.0.1:$MD" -name "$LAST" >"$W/probe.txt"
  end="$(date +%s%N)"
  FIRST_MS="$(( (end - start) / 1000000 ))"
  read -r LOADED LOAD_TOOK < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("msg") == "dns: cache loaded":
        print(e["entries"], "%.1f ms" % (e["took"] / 1e6))' "$W/misaki-restart.log")
  RESTART_MEM="$(rss "$pid")"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  taskset -c "$LOAD_CPU" "$W/dnsbench" -listen "127.0.0.1:$AUTH" 2>>"$W/auth.log" &
  AUTH_PID=$!
  PIDS+=("$AUTH_PID")
  ready_auth=0
  for _ in $(seq 50); do dig +short +tries=1 +time=1 @127.0.0.1 -p "$AUTH" n0.bench.test. >/dev/null 2>&1 && { ready_auth=1; break; }; sleep 0.1; done
  [ "$ready_auth" = 1 ] || { echo "the authoritative server did not come back" >&2; exit 1; }
fi

# ---- unbound -----------------------------------------------------------------
if [[ $SEL == *,unbound,* ]]; then
  UP="$(freeport)"
  cat >"$W/unbound.conf" <<C
server:
  interface: 127.0.0.1@$UP
  port: $UP
  num-threads: 1
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$W"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  msg-cache-size: 128m
  rrset-cache-size: 256m
  num-queries-per-thread: 1024
  so-rcvbuf: 4m
  module-config: "iterator"
  qname-minimisation: no
  local-zone: "test." nodefault
forward-zone:
  name: "bench.test."
  forward-addr: 127.0.0.1@$AUTH
C
  peer unbound "$UP" unbound -d -c "$W/unbound.conf"
fi

# ---- dnsmasq -----------------------------------------------------------------
if [[ $SEL == *,dnsmasq,* ]]; then
  DP="$(freeport)"
  peer dnsmasq "$DP" dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --server="127.0.0.1#$AUTH" \
    --port="$DP" --listen-address=127.0.0.1 --bind-interfaces --cache-size=150000 --dns-forward-max=1000 \
    --user=root --pid-file=
fi

# ---- CoreDNS -----------------------------------------------------------------
if [[ $SEL == *,coredns,* ]]; then
  CP="$(freeport)"
  cat >"$W/Corefile" <<C
.:$CP {
  cache 86400 {
    success 200000
    denial 10000
  }
  forward . 127.0.0.1:$AUTH
}
C
  peer coredns "$CP" coredns-min -conf "$W/Corefile" -quiet
fi

# ---- report --------------------------------------------------------------------
{
  echo "## DNS: cached answers, misaki-proxy beside unbound, dnsmasq and CoreDNS"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), servers on CPU $SERVER_CPU, dnsperf and the authoritative server on CPU $LOAD_CPU; $NAMES names cached in each."
  echo "Versions: $(unbound -V | head -n1), $(dnsmasq --version | head -n1 | cut -d' ' -f1-3), $(coredns-min -version | head -n1) (cache and forward only), $(dnsperf -h 2>&1 | grep -m1 Version)."
  echo
  echo "| server | qps, $QUEUE outstanding | lost | p50 µs at $QPS/s | p99 µs | p99.9 µs | max µs | CPU µs/query | RSS with $NAMES names | fill |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
  for n in misaki unbound dnsmasq coredns; do
    [[ $SEL == *,$n,* ]] || continue
    echo "| $n | ${QPSR[$n]} | ${LOST[$n]} | ${LAT[$n]} | ${CPU[$n]} | ${MEM[$n]} | ${FILL[$n]} |"
  done
  if [[ $SEL == *,misaki,* ]]; then
    echo
    echo "misaki: answers by source over the run: ${SOURCES%, }; cache entries $ENTRIES."
    echo "Restart with the authoritative server gone: cache file $FILE_BYTES bytes, $LOADED entries loaded in $LOAD_TOOK (the proxy's log); process start to the first answer ($LAST): $FIRST_MS ms; RSS after the load: $RESTART_MEM."
  fi
  echo
  echo '<details><summary>dnsperf outputs</summary>'
  echo
  echo '```'
  for n in misaki unbound dnsmasq coredns; do
    [[ $SEL == *,$n,* ]] || continue
    echo "== $n: throughput"
    sed -n '/^Statistics/,$p' "$W/$n-max.txt"
    echo "== $n: latency at $QPS/s"
    sed -n '/^Statistics/,$p' "$W/$n-lat.txt"
  done
  echo '```'
  echo '</details>'
} | tee "$OUT"
log "written: $OUT"
