#!/usr/bin/env bash
# The supervisor's numbers, in one run:
#   1. failed requests over 20 reloads in a row under 50 concurrent clients (goal: 0), with a new
#      connection per request and with keep-alive clients, on the unmodified example app;
#   2. throughput of each front (http, tcp, fd) vs. PM2 7 cluster mode, same 0 ms app, 2 workers,
#      wrk -c64 with keep-alive and with `Connection: close`;
#   3. the agent's RSS with one app of 2 workers.
# Usage: bench/reload.sh [--quick]   (--quick: 5 reloads, 5 s wrk runs)
# Needs: cargo, node, npm, python3, wrk (installed with apt-get when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RELOADS=20 WRK_SECONDS=10
[[ "${1:-}" == "--quick" ]] && RELOADS=5 WRK_SECONDS=5

WORK=$(mktemp -d /tmp/deployer-bench.XXXXXX)
AGENT_PID=""
cleanup() {
  [[ -n "$AGENT_PID" ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  [[ -x "$WORK/pm2/node_modules/.bin/pm2" ]] && PM2_HOME=$WORK/pm2home "$WORK/pm2/node_modules/.bin/pm2" kill >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
  if [[ $(id -u) == 0 ]]; then (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null; else echo "wrk is missing: apt-get install wrk" >&2; exit 1; fi
fi
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

# start_agent MODE DELAY_MS: the example app, 2 workers, behind the MODE front.
start_agent() {
  local ready="{ tcp: true }"
  [[ $1 == fd ]] && ready="{ alive: 500ms }"
  cat > "$WORK/agent.yaml" <<YAML
listen: 127.0.0.1:$API_PORT
state_dir: $WORK/state
tokens: [{ name: bench, token_env: DEPLOYER_TOKEN, scopes: [read, deploy] }]
apps:
  web:
    cwd: $ROOT/examples/hello-node
    start: node app.js
    instances: 2
    port: $APP_PORT
    proxy: $1
    env: { DELAY_MS: "$2" }
    ready: $ready
    reload: { drain_timeout: 30s, kill_timeout: 5s }
YAML
  "$AGENT" --config "$WORK/agent.yaml" >"$WORK/agent-$1.log" 2>&1 &
  AGENT_PID=$!
  for _ in $(seq 100); do
    [[ $("$CLI" ls --json 2>/dev/null | python3 -c 'import json,sys; a=json.load(sys.stdin); print(sum(w["state"]=="online" for w in a[0]["workers"]))' 2>/dev/null) == 2 ]] && return 0
    sleep 0.1
  done
  echo "the agent did not come up; its log:" >&2; cat "$WORK/agent-$1.log" >&2; exit 1
}
stop_agent() { kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=""; }

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
stop_agent

echo
echo "## 2. Throughput, 0 ms app, 2 workers, wrk -t1 -c64 -d${WRK_SECONDS}s (req/s)"
declare -A KA CL
PM2_HOME=$WORK/pm2home DELAY_MS=0 PORT=$PM2_PORT "$PM2" start "$ROOT/examples/hello-node/app.js" -i 2 --name hello >/dev/null 2>&1
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PM2_PORT/" >/dev/null && break; sleep 0.1; done
KA[pm2]=$(rps "http://127.0.0.1:$PM2_PORT/")
CL[pm2]=$(rps -H 'Connection: close' "http://127.0.0.1:$PM2_PORT/")
PM2_RSS=$(ps -o rss= -p "$(pgrep -f 'PM2 v.*God Daemon' | head -1)" | tr -d ' ')
PM2_HOME=$WORK/pm2home "$PM2" kill >/dev/null 2>&1
for mode in http tcp fd; do
  start_agent "$mode" 0
  KA[$mode]=$(rps "http://127.0.0.1:$APP_PORT/")
  CL[$mode]=$(rps -H 'Connection: close' "http://127.0.0.1:$APP_PORT/")
  [[ $mode == http ]] && LOADED_RSS=$(rss_kb "$AGENT_PID")
  stop_agent
done
python3 - "${KA[pm2]}" "${CL[pm2]}" "${KA[http]}" "${CL[http]}" "${KA[tcp]}" "${CL[tcp]}" "${KA[fd]}" "${CL[fd]}" <<'PY'
import sys
v = list(map(float, sys.argv[1:]))
goals = {"http": (0.9, 1.5), "tcp": (0.95, 1.5), "fd": (1.0, 2.0)}
print(f"| front | keep-alive | x PM2 (goal) | conn/request | x PM2 (goal) |")
print(f"|---|---|---|---|---|")
print(f"| pm2 7 cluster | {v[0]:.0f} | 1.00 | {v[1]:.0f} | 1.00 |")
for i, m in enumerate(["http", "tcp", "fd"]):
    ka, cl = v[2 + 2 * i], v[3 + 2 * i]
    g = goals[m]
    print(f"| {m} | {ka:.0f} | {ka / v[0]:.2f} (>= {g[0]}) | {cl:.0f} | {cl / v[1]:.2f} (>= {g[1]}) |")
PY

echo
echo "## 3. Memory (RSS of the agent, one app of 2 workers)"
echo "- agent idle after start: $((IDLE_RSS / 1024)).$(( (IDLE_RSS % 1024) * 10 / 1024 )) MB (goal <= 15 MB)"
echo "- agent after ${RELOADS}x2 reloads under load: $((BUSY_RSS / 1024)).$(( (BUSY_RSS % 1024) * 10 / 1024 )) MB"
echo "- agent after wrk -c64 through the http front: $((LOADED_RSS / 1024)).$(( (LOADED_RSS % 1024) * 10 / 1024 )) MB"
echo "- PM2 daemon: $((PM2_RSS / 1024)) MB"
