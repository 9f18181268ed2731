#!/usr/bin/env bash
# Side-by-side proxy benchmark: direct vs nginx vs Caddy vs Misaki, all in front
# of one nginx upstream serving a fixed 1 KiB body on loopback.
#
# Prints a Markdown results section on stdout and writes it to
# bench/results/proxy-<date>.md. Progress goes to stderr.
#
# Usage: bench/proxy.sh            (tools: hack/bench-tools.sh)
#
# Env knobs:
#   DURATION=10s          wrk / h2load measured duration
#   WARMUP=2s             wrk warm-up run and h2load --warm-up-time
#   QPS=1000              fortio open-loop rate
#   FORTIO_DURATION=20s   fortio run length
#   FORTIO_CONNS=16       fortio connections (-c)
#   ARRIVALS=uniform,step fortio arrival patterns: uniform (-uniform: the
#                         connections' requests evenly spread, one every
#                         1/QPS s) and step (fortio's default: all
#                         connections send at the same instant, bursts of
#                         FORTIO_CONNS requests)
#   LOADS=wrk,h2load,fortio  which loads to run
#   ONLY=direct,nginx,caddy,misaki   peers to run (comma list, default all)
#   MISAKI_PROXY=bin/misaki-proxy    Misaki binary (built from ./cmd/misaki-proxy if missing)
#   IDLE_SECS=3           idle seconds before the idle RSS reading
#   PROXY_CPU=0 LOAD_CPU=1  CPU pinning (proxy under test / load generator + upstream)
#   REBUILD=0             1 rebuilds MISAKI_PROXY from ./cmd/misaki-proxy even if it exists
#   SIZES=1               0 skips the cross-compiled binary size report
#   KEEP_WORK=0           1 keeps the temp dir (configs, raw tool output, logs)
#   RESULTS_DIR=bench/results
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
QPS="${QPS:-1000}"
FORTIO_DURATION="${FORTIO_DURATION:-20s}"
FORTIO_CONNS="${FORTIO_CONNS:-16}"
ARRIVALS="${ARRIVALS:-uniform,step}"
LOADS="${LOADS:-wrk,h2load,fortio}"
ONLY="${ONLY:-direct,nginx,caddy,misaki}"
MISAKI_PROXY="${MISAKI_PROXY:-bin/misaki-proxy}"
IDLE_SECS="${IDLE_SECS:-3}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
SIZES="${SIZES:-1}"
REBUILD="${REBUILD:-0}"
RESULTS_DIR="${RESULTS_DIR:-$ROOT/bench/results}"
TOOLS_BIN="${MISAKI_BENCH_BIN:-$HOME/.cache/misaki/bin}"
export PATH="$TOOLS_BIN:$PATH:/usr/sbin:/sbin"

HOST_HDR="bench.mesh"
ALL_PEERS=(direct nginx caddy misaki)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- preflight -----------------------------------------------------------------
missing=()
for t in nginx wrk h2load taskset caddy fortio python3 curl getconf; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
[ "${#missing[@]}" -eq 0 ] || die "missing tools: ${missing[*]} (run hack/bench-tools.sh)"

NCPU="$(nproc)"
if [ "$NCPU" -lt 2 ]; then
  log "only $NCPU CPU: proxy and load share CPU 0"
  PROXY_CPU=0; LOAD_CPU=0
fi
CLK_TCK="$(getconf CLK_TCK)"

for p in ${ONLY//,/ }; do
  case " ${ALL_PEERS[*]} " in *" $p "*) ;; *) die "unknown peer in ONLY: $p (known: ${ALL_PEERS[*]})";; esac
done
want() { case ",$ONLY," in *",$1,"*) return 0;; *) return 1;; esac; }
load_on() { case ",$LOADS," in *",$1,"*) return 0;; *) return 1;; esac; }
for a in ${ARRIVALS//,/ }; do
  case "$a" in uniform|step) ;; *) die "unknown arrival pattern in ARRIVALS: $a (known: uniform, step)";; esac
done
for l in ${LOADS//,/ }; do
  case "$l" in wrk|h2load|fortio) ;; *) die "unknown load in LOADS: $l (known: wrk, h2load, fortio)";; esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/misaki-bench.XXXXXX")"
RES="$WORK/res"; mkdir -p "$RES"
PIDFILE="$WORK/pids"; : >"$PIDFILE"
CMDLOG="$WORK/commands"; : >"$CMDLOG"

# ---- process management ----------------------------------------------------------
# Every background process is recorded in $PIDFILE; stop_pid kills it and any
# children (nginx workers), TERM first, KILL after a grace period.
descendants() { # pid -> pid and all descendants
  local p="$1" c
  echo "$p"
  for c in $(pgrep -P "$p" 2>/dev/null || true); do descendants "$c"; done
}

stop_pid() {
  local pid="$1" all p
  kill -0 "$pid" 2>/dev/null || return 0
  all="$(descendants "$pid" | tr '\n' ' ')"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  for p in $all; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  if [ -s "$PIDFILE" ]; then
    # newest first: proxies before the upstream
    for pid in $(tac "$PIDFILE"); do stop_pid "$pid"; done
  fi
  # Anything else still below this script (a peer subshell and its wrk /
  # h2load / fortio after an interrupt): TERM, then KILL.
  local rest
  rest="$(for pid in $(pgrep -P $$ || true); do descendants "$pid"; done | tr '\n' ' ')"
  if [ -n "${rest// /}" ]; then
    kill -TERM $rest 2>/dev/null || true
    sleep 0.5
    kill -KILL $rest 2>/dev/null || true
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg NAME CPU CMD... : start CMD pinned to CPU, logs in $WORK/NAME.log,
# pid in $WORK/NAME.pid (and $PIDFILE).
start_bg() {
  local name="$1" cpu="$2"; shift 2
  quote_cmd taskset -c "$cpu" "$@" >>"$CMDLOG"
  taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  echo "$pid" >>"$PIDFILE"
  echo "$pid" >"$WORK/$name.pid"
}

# shell-quote a command line for the report
quote_cmd() {
  local a out=()
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}

# run_cmd CMD... : record and run a foreground command.
run_cmd() { quote_cmd "$@" >>"$CMDLOG"; "$@"; }

wait_http() { # url [host] [timeout_s] [pid]
  local url="$1" host="${2:-}" to="${3:-20}" pid="${4:-}"
  for _ in $(seq 1 $((to * 10))); do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    if curl -fsS -o /dev/null --max-time 1 ${host:+-H "Host: $host"} "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

check_body() { # peer url host -> fail unless 200 with the 1024-byte body
  local peer="$1" url="$2" host="$3" code size
  read -r code size < <(curl -sS -o /dev/null -w '%{http_code} %{size_download}\n' --max-time 5 \
    ${host:+-H "Host: $host"} "$url" 2>/dev/null || echo "000 0")
  if [ "$code" != 200 ] || [ "$size" != 1024 ]; then
    note "$peer: sanity GET $url returned HTTP $code with $size bytes (want 200, 1024); row skipped"
    return 1
  fi
}

free_ports() { # n -> n distinct free loopback ports
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
PY
}

# ---- /proc readings --------------------------------------------------------------
rss_kb() { # pid -> summed VmRSS (kB) of pid and descendants
  local sum=0 p v
  for p in $(descendants "$1"); do
    v="$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || true)"
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
cpu_ticks() { # pid -> summed utime+stime (ticks) of pid and descendants
  local sum=0 p v
  for p in $(descendants "$1"); do
    # fields after the ")" : state=1 ... utime=12 stime=13
    v="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)"
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
nprocs() { descendants "$1" | wc -l; }
now_s() { date +%s.%N; }

# ---- parsers ---------------------------------------------------------------------
to_ms() { # "452.12us" / "1.23ms" / "1.02s" / "2.00m" -> ms
  awk -v v="$1" 'BEGIN{
    n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u);
    if(u=="us") n/=1000; else if(u=="s") n*=1000; else if(u=="m") n*=60000;
    printf "%.3f", n }'
}

parse_wrk() { # file -> "rps p50ms p99ms errors"
  local f="$1" rps p50 p99 non2xx sock
  rps="$(awk '/^Requests\/sec:/{print $2}' "$f")"
  p50="$(awk '$1=="50%"{print $2}' "$f")"
  p99="$(awk '$1=="99%"{print $2}' "$f")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$f")"
  sock="$(awk '/Socket errors:/{gsub(",","");s=$4+$6+$8+$10; print s}' "$f")"
  echo "${rps:-0} $(to_ms "${p50:-0us}") $(to_ms "${p99:-0us}") $(( ${non2xx:-0} + ${sock:-0} ))"
}

parse_h2load() { # file -> "rps failed non2xx proto"
  local f="$1" rps failed non2xx proto
  rps="$(awk '/^finished in/{for(i=1;i<=NF;i++) if($(i+1) ~ /^req\/s/){gsub(",","",$i); print $i}}' "$f")"
  failed="$(awk '/^requests:/{for(i=1;i<=NF;i++){if($(i+1) ~ /^(failed|errored|timeout)/) s+=$i}} END{print s+0}' "$f")"
  non2xx="$(awk '/^status codes:/{gsub(",",""); print $5+$7+$9}' "$f")"
  proto="$(awk '/^Application protocol:/{print $3}' "$f")"
  echo "${rps:-0} ${failed:-0} ${non2xx:-0} ${proto:-none}"
}

parse_fortio() { # json -> "actual_qps p50ms p90ms p99ms count non200 p99.9ms"
  python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
h = d["DurationHistogram"]
pc = {round(p["Percentile"], 1): p["Value"] * 1000 for p in h.get("Percentiles") or []}
codes = d.get("RetCodes") or {}
ok = sum(v for k, v in codes.items() if str(k) == "200")
print("%.1f %.3f %.3f %.3f %d %d %.3f" % (d.get("ActualQPS", 0), pc.get(50.0, 0), pc.get(90.0, 0),
                                          pc.get(99.0, 0), h.get("Count", 0), h.get("Count", 0) - ok,
                                          pc.get(99.9, 0)))
PY
}

# ---- load steps --------------------------------------------------------------------
# run_loads PEER H1_URL H2_URL HOST PROXY_PID
run_loads() {
  local peer="$1" h1="$2" h2="$3" host="$4" ppid="${5:-}" hdr=() proto
  [ -n "$host" ] && hdr=(-H "Host: $host")

  if load_on wrk; then
    log "$peer: wrk warm-up ($WARMUP)"
    run_cmd taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"$WARMUP" "${hdr[@]}" "$h1" >"$WORK/$peer.wrk-warm.txt" 2>&1
    log "$peer: wrk -t1 -c50 -d$DURATION"
    run_cmd taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"$DURATION" --latency "${hdr[@]}" "$h1" >"$WORK/$peer.wrk.txt" 2>&1
    parse_wrk "$WORK/$peer.wrk.txt" >"$RES/$peer.wrk"
  fi

  if load_on h2load; then
    local h2hdr=()
    [ -n "$host" ] && h2hdr=(-H ":authority: $host")
    log "$peer: h2load -c10 -m10 -D $DURATION (h2c)"
    run_cmd taskset -c "$LOAD_CPU" h2load -c10 -m10 -t1 --warm-up-time="$WARMUP" -D "$DURATION" "${h2hdr[@]}" "$h2" \
      >"$WORK/$peer.h2load.txt" 2>&1 || log "$peer: h2load exited non-zero"
    parse_h2load "$WORK/$peer.h2load.txt" >"$RES/$peer.h2load"
    read -r _ _ _ proto <"$RES/$peer.h2load"
    [ "$proto" = h2c ] || note "$peer: h2load negotiated '$proto', not h2c"
  fi

  load_on fortio || return 0
  local mode t0 t1 c0 c1 extra
  for mode in ${ARRIVALS//,/ }; do
    extra=()
    [ "$mode" = uniform ] && extra=(-uniform)
    log "$peer: fortio $QPS qps x $FORTIO_DURATION, $mode arrivals"
    if [ -n "$ppid" ]; then t0="$(now_s)"; c0="$(cpu_ticks "$ppid")"; fi
    # -r: 10 µs histogram buckets (the default, 1 ms, interpolates every
    # sub-millisecond latency linearly inside one bucket).
    run_cmd taskset -c "$LOAD_CPU" fortio load -quiet -qps "$QPS" -c "$FORTIO_CONNS" -t "$FORTIO_DURATION" \
      "${extra[@]}" -r 0.00001 -p 50,90,99,99.9 -json "$WORK/$peer.fortio.$mode.json" "${hdr[@]}" "$h1" \
      >"$WORK/$peer.fortio.$mode.txt" 2>&1
    if [ -n "$ppid" ]; then
      c1="$(cpu_ticks "$ppid")"; t1="$(now_s)"
      echo "$(rss_kb "$ppid") $(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
        'BEGIN{printf "%.3f", (b-a)/hz/(t1-t0)}') $(nprocs "$ppid")" >"$RES/$peer.load.$mode"
    fi
    parse_fortio "$WORK/$peer.fortio.$mode.json" >"$RES/$peer.fortio.$mode"
  done
}

idle_rss() { # peer pid
  sleep "$IDLE_SECS"
  rss_kb "$2" >"$RES/$1.idle"
  awk '/^Cpus_allowed_list:/{print $2}' "/proc/$2/status" >"$RES/$1.cpus"
}

# ---- upstream ----------------------------------------------------------------------
BODY="$(head -c 1024 /dev/zero | tr '\0' 'x')"

nginx_common() { # dir -> shared nginx main/http preamble
  local d="$1"
  mkdir -p "$d/tmp"
  cat <<EOF
worker_processes 1;
worker_rlimit_nofile 16384;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; multi_accept on; }
EOF
}
nginx_http_common() {
  local d="$1"
  cat <<EOF
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $d/tmp/client;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
EOF
}

read -r UP_PORT UP_H2_PORT <<<"$(free_ports 2)"
UPD="$WORK/upstream"; mkdir -p "$UPD"
{
  nginx_common "$UPD"
  echo "http {"
  nginx_http_common "$UPD"
  cat <<EOF
  server {
    listen 127.0.0.1:$UP_PORT default_server;
    listen 127.0.0.1:$UP_H2_PORT http2 default_server;
    server_name _;
    location / { default_type text/plain; return 200 "$BODY"; }
  }
}
EOF
} >"$UPD/nginx.conf"
log "upstream nginx on 127.0.0.1:$UP_PORT (h2c :$UP_H2_PORT), CPU $LOAD_CPU"
start_bg upstream "$LOAD_CPU" nginx -p "$UPD" -e "$UPD/error.log" -c "$UPD/nginx.conf" -g 'daemon off;'
wait_http "http://127.0.0.1:$UP_PORT/" "" 20 "$(cat "$WORK/upstream.pid")" \
  || { cat "$WORK/upstream.log" "$UPD/error.log" >&2 2>/dev/null || true; die "upstream nginx did not start"; }
got="$(curl -fsS "http://127.0.0.1:$UP_PORT/" | wc -c)"
[ "$got" -eq 1024 ] || die "upstream body is $got bytes, want 1024"

# ---- peers -----------------------------------------------------------------------
note() { printf '%s\n' "$*" >>"$RES/notes"; }

peer_direct() {
  log "== direct"
  echo "1" >"$RES/direct.ran"
  run_loads direct "http://127.0.0.1:$UP_PORT/" "http://127.0.0.1:$UP_H2_PORT/" "" ""
}

peer_nginx() {
  log "== nginx"
  local d="$WORK/nginx" p p2 pid
  mkdir -p "$d"
  read -r p p2 <<<"$(free_ports 2)"
  {
    nginx_common "$d"
    echo "http {"
    nginx_http_common "$d"
    cat <<EOF
  upstream bench_upstream {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$p default_server;
    listen 127.0.0.1:$p2 http2 default_server;
    server_name _;
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  } >"$d/nginx.conf"
  cp "$d/nginx.conf" "$RES/nginx.conf"
  start_bg nginx "$PROXY_CPU" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;'
  pid="$(cat "$WORK/nginx.pid")"
  wait_http "http://127.0.0.1:$p/" "$HOST_HDR" 20 "$pid" || { cat "$d/error.log" >&2 || true; return 1; }
  check_body nginx "http://127.0.0.1:$p/" "$HOST_HDR" || { stop_pid "$pid"; return 0; }
  echo "1" >"$RES/nginx.ran"
  idle_rss nginx "$pid"
  run_loads nginx "http://127.0.0.1:$p/" "http://127.0.0.1:$p2/" "$HOST_HDR" "$pid"
  stop_pid "$pid"
}

peer_caddy() {
  log "== caddy"
  local d="$WORK/caddy" p pid
  mkdir -p "$d"
  read -r p <<<"$(free_ports 1)"
  cat >"$d/Caddyfile" <<EOF
{
	admin off
	auto_https off
	persist_config off
	log {
		output discard
	}
	servers {
		protocols h1 h2c
	}
}

http://:$p {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$UP_PORT {
		transport http {
			keepalive_idle_conns_per_host 64
		}
	}
}
EOF
  cp "$d/Caddyfile" "$RES/Caddyfile"
  start_bg caddy "$PROXY_CPU" env -u GOMAXPROCS XDG_DATA_HOME="$d/data" XDG_CONFIG_HOME="$d/config" \
    caddy run --adapter caddyfile --config "$d/Caddyfile"
  pid="$(cat "$WORK/caddy.pid")"
  wait_http "http://127.0.0.1:$p/" "$HOST_HDR" 30 "$pid" || { cat "$WORK/caddy.log" >&2 || true; return 1; }
  check_body caddy "http://127.0.0.1:$p/" "$HOST_HDR" || { stop_pid "$pid"; return 0; }
  echo "1" >"$RES/caddy.ran"
  idle_rss caddy "$pid"
  run_loads caddy "http://127.0.0.1:$p/" "http://127.0.0.1:$p/" "$HOST_HDR" "$pid"
  stop_pid "$pid"
}

resolve_misaki() { # -> sets MISAKI_BIN or returns 1 with a note
  local b="$MISAKI_PROXY"
  case "$b" in /*) ;; *) b="$ROOT/$b";; esac
  if [ ! -x "$b" ] || { [ "$REBUILD" = 1 ] && [ -d "$ROOT/cmd/misaki-proxy" ]; }; then
    if [ -d "$ROOT/cmd/misaki-proxy" ]; then
      log "building $b from ./cmd/misaki-proxy"
      mkdir -p "$(dirname "$b")"
      if ! run_cmd go build -o "$b" ./cmd/misaki-proxy >"$WORK/misaki-build.log" 2>&1; then
        note "misaki: \`go build ./cmd/misaki-proxy\` failed: $(head -n 3 "$WORK/misaki-build.log" | tr '\n' ' ')"
        return 1
      fi
    else
      note "misaki: skipped, no binary at \`$MISAKI_PROXY\` and no ./cmd/misaki-proxy source"
      return 1
    fi
  fi
  MISAKI_BIN="$b"
  echo "$b" >"$RES/misaki.bin"
}

peer_misaki() {
  log "== misaki"
  resolve_misaki || { log "misaki skipped"; return 0; }
  local d="$WORK/misaki" p a pid
  mkdir -p "$d"
  read -r p a <<<"$(free_ports 2)"
  cat >"$d/misaki.yaml" <<EOF
listen: 127.0.0.1:$p
admin: 127.0.0.1:$a
routes:
  - name: bench
    hosts: [$HOST_HDR]
    upstream: http://127.0.0.1:$UP_PORT
EOF
  cp "$d/misaki.yaml" "$RES/misaki.yaml"
  start_bg misaki "$PROXY_CPU" env -u GOMAXPROCS "$MISAKI_BIN" --config "$d/misaki.yaml"
  pid="$(cat "$WORK/misaki.pid")"
  if ! wait_http "http://127.0.0.1:$a/readyz" "" 30 "$pid" \
     || ! wait_http "http://127.0.0.1:$p/" "$HOST_HDR" 10 "$pid"; then
    note "misaki: did not become ready (readyz / proxied GET); log tail: $(tail -n 3 "$WORK/misaki.log" | tr '\n' ' ')"
    stop_pid "$pid"
    return 0
  fi
  check_body misaki "http://127.0.0.1:$p/" "$HOST_HDR" || { stop_pid "$pid"; return 0; }
  echo "1" >"$RES/misaki.ran"
  idle_rss misaki "$pid"
  run_loads misaki "http://127.0.0.1:$p/" "http://127.0.0.1:$p/" "$HOST_HDR" "$pid"
  stop_pid "$pid"
}

for peer in "${ALL_PEERS[@]}"; do
  want "$peer" || continue
  # A failing peer must not abort the others: run it in a subshell with -e
  # active, record the failure, and kill whatever it left behind. The subshell
  # runs in the background + wait so that INT/TERM reach our trap at once.
  set +e
  ( set -e; "peer_$peer" ) &
  wait $!
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    note "$peer: run failed (exit $rc); see logs with KEEP_WORK=1"
    log "$peer failed (exit $rc)"
    [ -f "$WORK/$peer.pid" ] && stop_pid "$(cat "$WORK/$peer.pid")"
  fi
done

# ---- binary sizes ------------------------------------------------------------------
SIZE_ROWS=()
if [ "$SIZES" = 1 ] && [ -d "$ROOT/cmd/misaki-proxy" ]; then
  for arch in amd64 arm64; do
    bin_out="$WORK/misaki-proxy-$arch"
    log "size: building linux/$arch"
    if run_cmd env CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath -ldflags='-s -w' -o "$bin_out" ./cmd/misaki-proxy \
        >"$WORK/size-$arch.log" 2>&1; then
      sz="$(stat -c %s "$bin_out")"
      SIZE_ROWS+=("| linux/$arch | $sz | $(awk -v s="$sz" 'BEGIN{printf "%.2f", s/1048576}') |")
    else
      SIZE_ROWS+=("| linux/$arch | build failed | |")
    fi
  done
fi

# ---- report ------------------------------------------------------------------------
fmt_mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

caddy_version() {
  local v; v="$(caddy version 2>/dev/null | head -n1)"
  if [ -z "$v" ] || [ "$v" = unknown ]; then
    v="$(go version -m "$(command -v caddy)" 2>/dev/null | awk '$1=="mod" && $2 ~ /caddyserver\/caddy/{print $3}')"
  fi
  echo "${v:-unknown}"
}
misaki_version() {
  [ -n "${MISAKI_BIN:-}" ] || { echo "n/a"; return; }
  local rev mod
  rev="$(go version -m "$MISAKI_BIN" 2>/dev/null | awk '$2=="vcs.revision"{print substr($3,1,12)}')"
  mod="$(go version -m "$MISAKI_BIN" 2>/dev/null | awk '$2=="vcs.modified"{print $3}')"
  if [ -z "$rev" ]; then # built without VCS stamping: describe the work tree instead
    rev="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    [ -n "$(git -C "$ROOT" status --porcelain -- cmd internal go.mod go.sum 2>/dev/null)" ] && mod="true (work tree)"
  fi
  echo "$MISAKI_BIN (git ${rev}${mod:+, modified=$mod}, built $(date -u -r "$MISAKI_BIN" '+%Y-%m-%d %H:%M UTC'))"
}
# MISAKI_BIN is set inside the peer subshell only.
MISAKI_BIN=""
[ -f "$RES/misaki.ran" ] && MISAKI_BIN="$(cat "$RES/misaki.bin")"

label() { case "$1" in direct) echo "direct (no proxy)";; nginx) echo "nginx";; caddy) echo "Caddy";; misaki) echo "Misaki";; esac; }

report() {
  local stamp cpu
  stamp="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  cpu="$(lscpu 2>/dev/null | awk -F: '/Model name/{gsub(/^[ \t]+/,"",$2); print $2; exit}')"
  echo "## Proxy benchmark — $stamp"
  echo
  echo "- Date: $stamp"
  echo "- CPU: ${cpu:-unknown} ($NCPU CPUs online), kernel $(uname -r), $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
  echo "- Pinning: proxy under test on CPU $PROXY_CPU (\`taskset -c $PROXY_CPU\`); load generator (wrk / h2load / fortio) and the upstream nginx (1 worker) on CPU $LOAD_CPU. The direct row uses only load generator + upstream."
  echo "- Upstream: nginx \`return 200\` with a fixed 1024-byte body, HTTP/1.1 keep-alive; proxies send \`Host: $HOST_HDR\` requests."
  echo "- Go proxies run with GOMAXPROCS unset (the runtime sees the 1-CPU affinity mask)."
  echo "- Versions:"
  echo "  - $(nginx -v 2>&1)"
  echo "  - caddy $(caddy_version)"
  echo "  - $(wrk --version 2>&1 | head -n1 | sed 's/ Copyright.*//')"
  echo "  - $(h2load --version 2>&1 | head -n1)"
  echo "  - fortio $(fortio version 2>&1 | head -n1)"
  echo "  - misaki $(misaki_version)"
  echo "  - $(go version)"
  echo "- Knobs: DURATION=$DURATION WARMUP=$WARMUP QPS=$QPS FORTIO_DURATION=$FORTIO_DURATION FORTIO_CONNS=$FORTIO_CONNS ARRIVALS=$ARRIVALS LOADS=$LOADS ONLY=$ONLY"
  echo
  echo "<details><summary>Exact commands</summary>"
  echo
  echo '```sh'
  cat "$CMDLOG"
  echo '```'
  echo
  for f in nginx.conf Caddyfile misaki.yaml; do
    [ -f "$RES/$f" ] || continue
    echo "\`$f\` (proxy under test):"
    echo
    echo '```'
    cat "$RES/$f"
    echo '```'
    echo
  done
  echo "</details>"
  echo
  if load_on wrk || load_on h2load; then
  echo "### Throughput (closed loop)"
  echo
  echo "| peer | wrk h1 req/s | wrk p50 ms | wrk p99 ms | wrk errors | h2load h2c req/s | h2load failed / non-2xx |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  local peer rps p50 p99 err hrps hfail hnon
  for peer in "${ALL_PEERS[@]}"; do
    [ -f "$RES/$peer.wrk" ] || [ -f "$RES/$peer.h2load" ] || continue
    local wcols="- | - | - | -" hcols="- | - / -"
    if [ -f "$RES/$peer.wrk" ]; then
      read -r rps p50 p99 err <"$RES/$peer.wrk"
      wcols="$(printf '%.0f | %.3f | %.3f | %s' "$rps" "$p50" "$p99" "$err")"
    fi
    if [ -f "$RES/$peer.h2load" ]; then
      read -r hrps hfail hnon _ <"$RES/$peer.h2load"
      hcols="$(printf '%.0f | %s / %s' "$hrps" "$hfail" "$hnon")"
    fi
    echo "| $(label "$peer") | $wcols | $hcols |"
  done
  echo
  echo "wrk: \`-t1 -c50 -d$DURATION --latency\` after a $WARMUP warm-up; h2load: \`-t1 -c10 -m10 --warm-up-time=$WARMUP -D $DURATION\` (h2c prior knowledge)."
  echo
  fi
  local mode what
  for mode in ${ARRIVALS//,/ }; do
    case "$mode" in
      uniform) what="uniform arrivals (\`-uniform\`: one request every $(awk -v q="$QPS" 'BEGIN{printf "%g", 1000/q}') ms across the connections)";;
      step) what="arrivals in step (fortio's default: the $FORTIO_CONNS connections send together, a burst of $FORTIO_CONNS every $(awk -v q="$QPS" -v c="$FORTIO_CONNS" 'BEGIN{printf "%g", 1000*c/q}') ms)";;
    esac
    echo "### Open-loop latency at $QPS req/s, $what"
    echo
    echo "fortio, $FORTIO_CONNS connections, $FORTIO_DURATION, 10 µs histogram resolution (\`-r 0.00001\`)."
    echo
    echo "| peer | actual req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 added vs direct ms | requests | non-200 |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    local dp99="" q f50 f90 f99 cnt bad f999 add
    [ -f "$RES/direct.fortio.$mode" ] && read -r _ _ _ dp99 _ _ _ <"$RES/direct.fortio.$mode"
    for peer in "${ALL_PEERS[@]}"; do
      [ -f "$RES/$peer.fortio.$mode" ] || continue
      read -r q f50 f90 f99 cnt bad f999 <"$RES/$peer.fortio.$mode"
      if [ "$peer" = direct ]; then add="—"
      elif [ -n "$dp99" ]; then add="$(awk -v a="$f99" -v b="$dp99" 'BEGIN{printf "%+.3f", a-b}')"
      else add="n/a"; fi
      echo "| $(label "$peer") | $q | $f50 | $f90 | $f99 | $f999 | $add | $cnt | $bad |"
    done
    echo
  done
  echo "### Footprint of the proxy under test"
  echo
  local hdr="| peer | processes | pinned CPUs | RSS idle MiB |" sep="|---|---:|---:|---:|"
  for mode in ${ARRIVALS//,/ }; do
    hdr="$hdr RSS after $QPS req/s $mode MiB | CPU at $QPS req/s $mode (cores) |"; sep="$sep---:|---:|"
  done
  echo "$hdr"
  echo "$sep"
  local idle rssl cores np row
  for peer in nginx caddy misaki; do
    [ -f "$RES/$peer.idle" ] || continue
    idle="$(cat "$RES/$peer.idle" 2>/dev/null || echo 0)"
    row="" np="?"
    for mode in ${ARRIVALS//,/ }; do
      if [ -f "$RES/$peer.load.$mode" ]; then
        read -r rssl cores np <"$RES/$peer.load.$mode"
        row="$row $(fmt_mib "$rssl") | $cores |"
      else
        row="$row - | - |"
      fi
    done
    echo "| $(label "$peer") | $np | $(cat "$RES/$peer.cpus" 2>/dev/null || echo '?') | $(fmt_mib "$idle") |$row"
  done
  echo
  echo "RSS: VmRSS from /proc/PID/status summed over the process and its children (nginx master + worker), idle reading after ${IDLE_SECS}s with no traffic. CPU: utime+stime from /proc/PID/stat across the fortio run, divided by wall time and CLK_TCK=$CLK_TCK."
  echo
  if [ "${#SIZE_ROWS[@]}" -gt 0 ]; then
    echo "### misaki-proxy binary size (stripped)"
    echo
    echo "\`CGO_ENABLED=0 GOOS=linux GOARCH=<arch> go build -trimpath -ldflags='-s -w' ./cmd/misaki-proxy\`"
    echo
    echo "| target | bytes | MiB |"
    echo "|---|---:|---:|"
    printf '%s\n' "${SIZE_ROWS[@]}"
    echo
  fi
  if [ -s "$RES/notes" ]; then
    echo "### Notes"
    echo
    sed 's/^/- /' "$RES/notes"
    echo
  fi
}

mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/proxy-$(date +%Y%m%d-%H%M%S).md"
report | tee "$OUT"
log "written: $OUT"
