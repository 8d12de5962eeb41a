#!/usr/bin/env bash
# The supervisor's numbers, in one run:
#   1. failed requests over 20 reloads in a row under 50 concurrent clients (goal: 0), with a new
#      connection per request and with keep-alive clients, on the unmodified example app;
#   2. throughput of each front (http, tcp, fd) vs. PM2 7 cluster mode, nginx and HAProxy, same
#      0 ms app, 2 workers, wrk -t1 -c64 with keep-alive and with `Connection: close`. All of them
#      are up at once (idle when not measured) and measured in turns, ROUNDS (5) rounds: on a
#      shared host a burst of other work then hits every contender alike, instead of whichever
#      one happened to run during it. The order of the turns rotates from round to round. A
#      ratio is the median of the rounds' ratios, and each round's ratio is printed too;
#   3. the agent's RSS with one app of 2 workers, at once and once settled (3 s later).
# nginx (2 worker processes, upstream keepalive 64) and HAProxy (nbthread 2, http-reuse always)
# run from temp configs on free loopback ports, as `nobody` when the script runs as root, and are
# started and killed here: no system service is used or touched.
# Usage: bench/reload.sh [--quick]   (--quick: 5 reloads, 2 rounds of 3 s wrk runs)
# Needs: cargo, node, npm, python3, wrk, nginx (Debian nginx-light), haproxy (installed with apt-get
# when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/haproxy.sh
source bench/haproxy.sh
RELOADS=20 WRK_SECONDS=5 ROUNDS=5
[[ "${1:-}" == "--quick" ]] && RELOADS=5 WRK_SECONDS=3 ROUNDS=2

WORK=$(mktemp -d /tmp/deployer-bench.XXXXXX)
AGENT_PID=""
EXTRA_PIDS=()
cleanup() {
  [[ -n "$AGENT_PID" ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  for pid in "${EXTRA_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  [[ -x "$WORK/pm2/node_modules/.bin/pm2" ]] && PM2_HOME=$WORK/pm2home "$WORK/pm2/node_modules/.bin/pm2" kill >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

MISSING=()
command -v wrk >/dev/null || MISSING+=(wrk)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || MISSING+=(nginx-light)
[[ -x /usr/sbin/haproxy ]] || command -v haproxy >/dev/null || MISSING+=(haproxy)
if (( ${#MISSING[@]} )); then
  if [[ $(id -u) == 0 ]]; then (apt-get update -qq && apt-get install -y -qq "${MISSING[@]}") >/dev/null
  else echo "missing: apt-get install ${MISSING[*]}" >&2; exit 1; fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
LOADCHECK=$ROOT/../shared/bench/loadcheck.py
[[ -f $LOADCHECK ]] || LOADCHECK=$ROOT/bench/loadcheck.py

echo "building (release)..." >&2
cargo build --release -q -p agent -p deployer
AGENT=$ROOT/target/release/deployer-agent
CLI=$ROOT/target/release/deployer
echo "installing pm2@7 into $WORK/pm2 (for the comparison)..." >&2
(mkdir -p "$WORK/pm2" && cd "$WORK/pm2" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund pm2@7 >/dev/null 2>&1)
PM2=$WORK/pm2/node_modules/.bin/pm2

export DEPLOYER_TOKEN=bench-token-$$
API_PORT=7391 APP_PORT=3391 PM2_PORT=3392
export DEPLOYER_AGENT=http://127.0.0.1:$API_PORT

# start_agent MODE DELAY_MS [N]: the example app, 2 workers, behind the MODE front; agent N (0
# unless given) listens on API_PORT+N and serves the app on APP_PORT+N.
start_agent() {
  local ready="{ tcp: true }" n=${3:-0}
  [[ $1 == fd ]] && ready="{ alive: 500ms }"
  cat > "$WORK/agent-$1.yaml" <<YAML
listen: 127.0.0.1:$((API_PORT + n))
state_dir: $WORK/state-$1
tokens: [{ name: bench, token_env: DEPLOYER_TOKEN, scopes: [read, deploy] }]
apps:
  web:
    cwd: $ROOT/examples/hello-node
    start: node app.js
    instances: 2
    port: $((APP_PORT + n))
    proxy: $1
    env: { DELAY_MS: "$2" }
    ready: $ready
    reload: { drain_timeout: 30s, kill_timeout: 5s }
YAML
  # In its own session, as a service runs (see "own session" below).
  setsid "$AGENT" --config "$WORK/agent-$1.yaml" >"$WORK/agent-$1.log" 2>&1 &
  AGENT_PID=$!
  for _ in $(seq 100); do
    [[ $(DEPLOYER_AGENT=http://127.0.0.1:$((API_PORT + n)) "$CLI" ls --json 2>/dev/null | python3 -c 'import json,sys; a=json.load(sys.stdin); print(sum(w["state"]=="online" for w in a[0]["workers"]))' 2>/dev/null) == 2 ]] && return 0
    sleep 0.1
  done
  echo "the agent did not come up; its log:" >&2; cat "$WORK/agent-$1.log" >&2; exit 1
}
stop_agent() { kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=""; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/" >/dev/null && return 0; sleep 0.1; done; echo "nothing answers on :$1" >&2; return 1; }
# as_nobody CMD... &: run a proxy unprivileged (setpriv to nobody when we are root), in its own
# session like the agent. It execs, so call it only in a background subshell: then $! is the proxy
# itself and killing it stops the proxy.
as_nobody() {
  if [[ $(id -u) == 0 ]]; then exec setsid setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all -- "$@"; fi
  exec setsid "$@"
}
# kill_extra PID...: stop processes this script started (and only those).
kill_extra() { for pid in "$@"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; }
rps() { wrk -t1 -c64 -d"${WRK_SECONDS}s" --latency "$@" | awk '/Requests\/sec/ {print $2}'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo
echo "## 1. Reloads under load (example app: 500 ms per request, no signal handler, 2 workers)"
start_agent http 500
IDLE_RSS=$(rss_kb "$AGENT_PID")
for mode in close keepalive; do
  flag=""; [[ $mode == keepalive ]] && flag="--keepalive"
  window=$(( RELOADS * 2 + 6 ))
  python3 "$LOADCHECK" --port $APP_PORT --conns 50 --seconds "$window" $flag > "$WORK/load-$mode.json" &
  LOAD=$!
  sleep 1
  t0=$(date +%s.%N)
  fails=0
  for _ in $(seq "$RELOADS"); do "$CLI" reload web >/dev/null || fails=$((fails + 1)); done
  t1=$(date +%s.%N)
  wait $LOAD
  python3 - "$WORK/load-$mode.json" "$mode" "$RELOADS" "$fails" "$t0" "$t1" "$window" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); mode, n, fails = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
took = float(sys.argv[6]) - float(sys.argv[5])
client = "keep-alive clients" if mode == "keepalive" else "new connection per request"
print(f"- {client:27}: {n} reloads in {took:.1f}s ({took/n:.2f}s each, {fails} failed), "
      f"requests ok {r['ok']}, FAILED {r['failed']} {r['fail'] or ''}, p99 {r['p99_ms']} ms")
if took + 1 > int(sys.argv[7]): print("  warning: the reloads outlasted the load window")
PY
done
BUSY_RSS=$(rss_kb "$AGENT_PID")
# The agent hands freed heap pages back every 2 s (agent/src/memory.rs): the RSS once settled.
sleep 3
BUSY_SETTLED_RSS=$(rss_kb "$AGENT_PID")
stop_agent

echo
echo "## 2. Throughput, 0 ms app, 2 workers, wrk -t1 -c64 -d${WRK_SECONDS}s, median of $ROUNDS rounds (req/s)"
declare -A KA CL PORT
PM2_HOME=$WORK/pm2home DELAY_MS=0 PORT=$PM2_PORT "$PM2" start "$ROOT/examples/hello-node/app.js" -i 2 --name hello >/dev/null 2>&1
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PM2_PORT/" >/dev/null && break; sleep 0.1; done
PORT[pm2]=$PM2_PORT
# nginx and HAProxy: in front of the same app, 2 plain workers (DELAY_MS=0) on free loopback ports.
# Own session: every worker, proxy and agent runs in its own session, as services and the agent's
# workers (setsid) and PM2 (its daemon) do: with the kernel's autogroups a session is one
# scheduling group, and a process sharing wrk's group shares the load generator's CPU share
# (measured: HAProxy 30.6k keep-alive req/s with its workers in this script's session, 22.6k in
# their own; a proxy in wrk's session gains or loses by how many threads it has).
W1=$(free_port) W2=$(free_port)
(cd "$ROOT/examples/hello-node" && DELAY_MS=0 INSTANCE_ID=0 PORT=$W1 exec setsid node app.js >/dev/null 2>&1) &
EXTRA_PIDS+=($!)
(cd "$ROOT/examples/hello-node" && DELAY_MS=0 INSTANCE_ID=1 PORT=$W2 exec setsid node app.js >/dev/null 2>&1) &
EXTRA_PIDS+=($!)
WORKER_PIDS=("${EXTRA_PIDS[@]}")
wait_http "$W1" && wait_http "$W2" || exit 1
# The proxies' own dir: readable and writable by the unprivileged user (WORK itself stays 0700 but
# traversable so that user can reach it).
chmod 711 "$WORK"
PX=$WORK/proxies
mkdir -p "$PX/nginx-tmp"
[[ $(id -u) == 0 ]] && chown -R nobody:nogroup "$PX"

NGINX_PORT=$(free_port)
cat > "$PX/nginx.conf" <<NGINX
worker_processes 2;
daemon off;
pid $PX/nginx.pid;
error_log $PX/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $PX/nginx-tmp/body;
  proxy_temp_path $PX/nginx-tmp/proxy;
  fastcgi_temp_path $PX/nginx-tmp/fastcgi;
  uwsgi_temp_path $PX/nginx-tmp/uwsgi;
  scgi_temp_path $PX/nginx-tmp/scgi;
  upstream app {
    server 127.0.0.1:$W1;
    server 127.0.0.1:$W2;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
as_nobody "$NGINX" -e "$PX/nginx-error.log" -p "$PX" -c "$PX/nginx.conf" >"$PX/nginx.out" 2>&1 &
NGINX_PID=$!
EXTRA_PIDS+=($NGINX_PID)
wait_http "$NGINX_PORT" || { cat "$PX/nginx.out" "$PX/nginx-error.log" >&2 || true; exit 1; }
PORT[nginx]=$NGINX_PORT

HAPROXY_PORT=$(free_port)
haproxy_config "$HAPROXY_PORT" "$W1" "$W2" > "$PX/haproxy.cfg"
as_nobody "$HAPROXY" -db -f "$PX/haproxy.cfg" >"$PX/haproxy.out" 2>&1 &
HAPROXY_PID=$!
EXTRA_PIDS+=($HAPROXY_PID)
wait_http "$HAPROXY_PORT" || { cat "$PX/haproxy.out" >&2 || true; exit 1; }
PORT[haproxy]=$HAPROXY_PORT
# One agent per front mode, each with one app of 2 workers.
declare -A AGENT_OF
n=10
for mode in http tcp fd; do
  start_agent "$mode" 0 $((n += 1))
  AGENT_OF[$mode]=$AGENT_PID
  EXTRA_PIDS+=("$AGENT_PID")
  AGENT_PID=""
  PORT[$mode]=$((APP_PORT + n))
done
CONTENDERS=(pm2 nginx haproxy http tcp fd)
# Each round measures every contender with keep-alive clients, then every one with a connection
# per request, each pass starting one contender further along than the round before: none
# always runs right after the same other one (or first), so an effect of the position in a round
# falls on all alike.
for round in $(seq 0 $((ROUNDS - 1))); do
  k=$((round % ${#CONTENDERS[@]}))
  ORDER=("${CONTENDERS[@]:k}" "${CONTENDERS[@]:0:k}")
  for c in "${ORDER[@]}"; do KA[$c]+="$(rps "http://127.0.0.1:${PORT[$c]}/") "; done
  for c in "${ORDER[@]}"; do CL[$c]+="$(rps -H 'Connection: close' "http://127.0.0.1:${PORT[$c]}/") "; done
done
LOADED_RSS=$(rss_kb "${AGENT_OF[http]}")
sleep 3
LOADED_SETTLED_RSS=$(rss_kb "${AGENT_OF[http]}")
PM2_RSS=$(ps -o rss= -p "$(pgrep -f 'PM2 v.*God Daemon' | head -1)" | tr -d ' ')
PM2_HOME=$WORK/pm2home "$PM2" kill >/dev/null 2>&1
kill_extra "${EXTRA_PIDS[@]}"
EXTRA_PIDS=()
for c in "${CONTENDERS[@]}"; do
  echo "- $c: keep-alive ${KA[$c]}| conn/request ${CL[$c]}"
done
echo
# Each round measures every contender in turn, so a round's ratios compare runs made seconds
# apart: their median says more than the ratio of two medians on a host whose speed drifts.
python3 - "${CONTENDERS[@]}" <<PY
import statistics
names = {"pm2": "pm2 7 cluster", "nginx": "nginx", "haproxy": "haproxy", "http": "http", "tcp": "tcp", "fd": "fd"}
ka = {$(for c in "${CONTENDERS[@]}"; do printf '"%s": [%s], ' "$c" "$(tr ' ' ',' <<<"${KA[$c]}")"; done)}
cl = {$(for c in "${CONTENDERS[@]}"; do printf '"%s": [%s], ' "$c" "$(tr ' ' ',' <<<"${CL[$c]}")"; done)}
med = statistics.median
def ratio(runs, a, b):
    return med([x / y for x, y in zip(runs[a], runs[b])])
print("| front | keep-alive | x nginx | x HAProxy | x PM2 | conn/request | x nginx | x HAProxy |")
print("|---|---|---|---|---|---|---|---|")
for c, name in names.items():
    print(f"| {name} | {med(ka[c]):.0f} | {ratio(ka, c, 'nginx'):.2f} | {ratio(ka, c, 'haproxy'):.2f} "
          f"| {ratio(ka, c, 'pm2'):.2f} | {med(cl[c]):.0f} | {ratio(cl, c, 'nginx'):.2f} | {ratio(cl, c, 'haproxy'):.2f} |")
print()
print("(req/s: median of the rounds; ratios: median of the rounds' ratios)")
def spread(runs, a, b):
    return " ".join(f"{x / y:.3f}" for x, y in zip(runs[a], runs[b]))
print()
print(f"- http / HAProxy by round: keep-alive {spread(ka, 'http', 'haproxy')}; conn/request {spread(cl, 'http', 'haproxy')}")
print(f"- http / nginx by round: keep-alive {spread(ka, 'http', 'nginx')}; conn/request {spread(cl, 'http', 'nginx')}")
print(f"- http / PM2 by round, keep-alive: {spread(ka, 'http', 'pm2')}")
best = lambda runs: min(ratio(runs, "http", "nginx"), ratio(runs, "http", "haproxy"))
print(f"- goal for http: >= 1.0x nginx and HAProxy with both client kinds, >= 0.97x PM2 keep-alive: "
      f"keep-alive {best(ka):.2f}x, conn/request {best(cl):.2f}x, keep-alive {ratio(ka, 'http', 'pm2'):.2f}x PM2")
PY

echo
echo "## 3. Memory (RSS of the agent, one app of 2 workers)"
mb() { echo "$(($1 / 1024)).$(( ($1 % 1024) * 10 / 1024 )) MB"; }
echo "- agent idle after start: $(mb "$IDLE_RSS") (goal <= 15 MB)"
echo "- agent after ${RELOADS}x2 reloads under load: $(mb "$BUSY_RSS") at once, $(mb "$BUSY_SETTLED_RSS") 3 s later"
echo "- agent after wrk -c64 (keep-alive, then conn/request) through the http front: $(mb "$LOADED_RSS") at once, $(mb "$LOADED_SETTLED_RSS") 3 s later"
echo "- PM2 daemon: $((PM2_RSS / 1024)) MB"
