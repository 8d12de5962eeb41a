#!/usr/bin/env bash
# Interleaved A/B runs of the `http` front against HAProxy, for changes too small for
# bench/reload.sh to see: each round runs wrk against every contender in turn, so a round's
# ratios compare runs made seconds apart; also the agent's CPU per request, from /proc.
#
# Usage: bench/front_ab.sh [ROUNDS] [SECONDS]          (defaults 6 and 4)
#   AGENTS="name:VAR=value,VAR=value name2:..."  one agent per entry (default: one agent, the
#   release build); BIN=<path> among an entry's variables runs another build of the agent,
#   e.g. AGENTS="old:BIN=/tmp/agent-old new:BIN=target/release/deployer-agent"
#   or   AGENTS="one:DEPLOYER_FRONT_LOOPS=1 two:DEPLOYER_FRONT_LOOPS=2"
#   WRK_ARGS="-H 'Connection: close'" for a new connection per request.
#   SESSIONS=shared runs the agents and HAProxy in this script's session, with wrk (default: own).
# Each agent and HAProxy runs in its own session, as a service does: with the kernel's autogroups
# a session is one scheduling group, so a proxy in wrk's session would share the CPU share of the
# load generator (and how much that helps depends on how many threads the proxy has).
# Every agent serves examples/hello-node (DELAY_MS=0, 2 workers); HAProxy (nbthread 2,
# http-reuse always) serves 2 workers of its own, as `nobody`. Needs wrk, haproxy (run as root
# for setpriv), node; builds the release agent when BIN is not given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/haproxy.sh
source bench/haproxy.sh
ROUNDS=${1:-6} SECS=${2:-4}
SESSION=(setsid)
[[ ${SESSIONS:-own} == shared ]] && SESSION=()
[[ "${AGENTS:-}" == *BIN=* ]] || cargo build --release -q -p agent
AGENT=$ROOT/target/release/deployer-agent
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
WORK=$(mktemp -d /tmp/front-ab.XXXXXX); chmod 711 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -sf "http://127.0.0.1:$1/" >/dev/null && return 0; sleep 0.1; done; echo "nothing answers on :$1" >&2; return 1; }
declare -A PORT APID R CPU
names=()
for spec in ${AGENTS:-agent:_=1}; do
  name=${spec%%:*} envs=${spec#*:}
  api=$(free_port) port=$(free_port)
  cat > "$WORK/$name.yaml" <<YAML
listen: 127.0.0.1:$api
state_dir: $WORK/state-$name
apps:
  web:
    cwd: $ROOT/examples/hello-node
    start: node app.js
    instances: 2
    port: $port
    proxy: http
    env: { DELAY_MS: "0" }
    ready: { tcp: true }
YAML
  # shellcheck disable=SC2086 # the entry's variables, split on commas
  ( export ${envs//,/ }; exec "${SESSION[@]}" "${BIN:-$AGENT}" --config "$WORK/$name.yaml" >"$WORK/$name.log" 2>&1 ) &
  PIDS+=($!); APID[$name]=$!; PORT[$name]=$port; names+=("$name")
done
W1=$(free_port) W2=$(free_port)
(cd "$ROOT/examples/hello-node" && DELAY_MS=0 PORT=$W1 exec setsid node app.js >/dev/null 2>&1) & PIDS+=($!)
(cd "$ROOT/examples/hello-node" && DELAY_MS=0 PORT=$W2 exec setsid node app.js >/dev/null 2>&1) & PIDS+=($!)
HP=$(free_port)
haproxy_config "$HP" "$W1" "$W2" > "$WORK/haproxy.cfg"
(exec "${SESSION[@]}" setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all -- "$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.out" 2>&1) &
PIDS+=($!); PORT[haproxy]=$HP; names+=(haproxy)
for n in "${names[@]}"; do wait_http "${PORT[$n]}"; done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Each round starts one contender further along (A B, then B A, ...): none always runs right after
# the same other one, or first, so an effect of the position in a round falls on all alike.
for round in $(seq 0 $((ROUNDS - 1))); do
  k=$((round % ${#names[@]}))
  for n in "${names[@]:k}" "${names[@]:0:k}"; do
    [[ -n "${APID[$n]:-}" ]] && c0=$(cpu_ticks "${APID[$n]}")
    # shellcheck disable=SC2086 # WRK_ARGS holds several arguments
    out=$(eval wrk -t1 -c64 -d"${SECS}s" ${WRK_ARGS:-} "http://127.0.0.1:${PORT[$n]}/")
    R[$n]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    [[ -n "${APID[$n]:-}" ]] && CPU[$n]+="$(python3 -c "print(f'{($(cpu_ticks "${APID[$n]}") - $c0) * 1e6 / $(getconf CLK_TCK) / $reqs:.1f}')") "
  done
done
python3 - <<PY
import statistics
names = "${names[*]}".split()
runs = {$(for n in "${names[@]}"; do printf '"%s": [%s], ' "$n" "$(tr ' ' ',' <<<"${R[$n]}")"; done)}
cpu = {$(for n in "${names[@]}"; do printf '"%s": [%s], ' "$n" "$(tr ' ' ',' <<<"${CPU[$n]:-}")"; done)}
print(f"wrk -t1 -c64 -d${SECS}s ${WRK_ARGS:-}, ${ROUNDS} rounds")
for n in names:
    ratios = [a / b for a, b in zip(runs[n], runs["haproxy"])]
    line = f"{n:10} req/s median {statistics.median(runs[n]):8.0f}   x HAProxy by round " + " ".join(f"{r:.3f}" for r in ratios)
    line += f"   median {statistics.median(ratios):.3f}"
    if cpu[n]:
        line += f"   agent CPU/request median {statistics.median(cpu[n]):.1f} us"
    print(line)
PY
