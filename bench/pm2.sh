#!/usr/bin/env bash
# An app written for PM2, unchanged (tests/fixtures/pm2-app.js: `process.send('ready')` after
# listen, closes on the 'shutdown' message), under load through N reloads: failed requests (goal 0)
# and the time per reload, with `ready: { message: true }` (Node's IPC channel).
# Usage: bench/pm2.sh [RELOADS]   (default 20; AGENT= and CLI= pick the binaries, else a release build)
# Needs: cargo, node, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RELOADS=${1:-20}
WORK=$(mktemp -d /tmp/deployer-pm2.XXXXXX)
AGENT_PID=""
cleanup() {
  [[ -n "$AGENT_PID" ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if [[ -z "${AGENT:-}" || -z "${CLI:-}" ]]; then
  echo "building (release)..." >&2
  cargo build --release -q -p agent -p deployer
  AGENT=${CARGO_TARGET_DIR:-$ROOT/target}/release/deployer-agent
  CLI=${CARGO_TARGET_DIR:-$ROOT/target}/release/deployer
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port) APP_PORT=$(free_port)
export DEPLOYER_TOKEN=bench-token-$$ DEPLOYER_AGENT=http://127.0.0.1:$API_PORT
mkdir -p "$WORK/app" && cp "$ROOT/tests/fixtures/pm2-app.js" "$WORK/app/"
cat > "$WORK/agent.yaml" <<YAML
listen: 127.0.0.1:$API_PORT
state_dir: $WORK/state
tokens: [{ name: bench, token_env: DEPLOYER_TOKEN, scopes: [read, deploy] }]
apps:
  web:
    cwd: $WORK/app
    start: node pm2-app.js
    instances: 2
    port: $APP_PORT
    bind: 127.0.0.1
    env: { DELAY_MS: "200" }
    ready: { message: true, timeout: 10s }
    reload: { drain_timeout: 30s, kill_timeout: 10s }
YAML
"$AGENT" --config "$WORK/agent.yaml" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$APP_PORT/" >/dev/null && break; sleep 0.1; done
window=$(( RELOADS * 4 + 6 ))
python3 "$ROOT/bench/loadcheck.py" --port "$APP_PORT" --conns 50 --seconds "$window" > "$WORK/load.json" &
LOAD=$!
sleep 1
t0=$(date +%s.%N)
fails=0
for _ in $(seq "$RELOADS"); do "$CLI" reload web >/dev/null || fails=$((fails + 1)); done
t1=$(date +%s.%N)
wait $LOAD
shutdowns=$(grep -c "shutdown message received" "$WORK"/state/logs/web.log || true)
python3 - "$WORK/load.json" "$RELOADS" "$fails" "$t0" "$t1" "$shutdowns" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); n, fails, shutdowns = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[6])
took = float(sys.argv[5]) - float(sys.argv[4])
print(f"- PM2 app (ready + shutdown by message), 50 clients, a connection per request: {n} reloads in "
      f"{took:.1f}s ({took/n:.2f}s each, {fails} failed), {shutdowns} workers closed on 'shutdown', "
      f"requests ok {r['ok']}, FAILED {r['failed']} {r['fail'] or ''}, p99 {r['p99_ms']} ms")
PY
