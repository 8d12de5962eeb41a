#!/usr/bin/env bash
# Fleet-mode benchmarks (issue 14), over a NATS JetStream engine on loopback.
#
#   bench/fleet.sh [HOSTS [MAX_PARALLEL]]          (default 20 25)
#     HOSTS real agents (1 worker, empty install) that roll a push out among themselves
#     (canary 0): total wall time, the waves' critical path and the coordination overhead.
#
#   bench/fleet.sh sim [HOSTS [MAX_PARALLEL [CANARY [DEPLOY]]]]   (default 1000 25 1 500ms)
#     HOSTS simulated hosts (`deployer-agent simulate-fleet`: the agent's own fleet code, one
#     connection each, a deploy that waits DEPLOY) and `deployer push --json` under /usr/bin/time:
#     the push's wall time against the ideal critical path, and the CLI's CPU time.
#     Release build (goals: coordination overhead < 1 s per wave, the CLI's CPU < 1 s).
#
# Needs: cargo, git, node (real agents), python3, nats-server >= 2.11 on PATH or in
# $DEPLOYER_NATS_SERVER (.ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" != sim ]]; then
  cargo build --quiet -p agent -p deployer --bins
  exec cargo run --quiet -p deployer-tests --example fleet_bench -- "${1:-20}" "${2:-25}"
fi

HOSTS=${2:-1000} MAX=${3:-25} CANARY=${4:-1} DEPLOY=${5:-500ms}
cargo build --quiet --release -p agent -p deployer --bins
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
NATS=${DEPLOYER_NATS_SERVER:-nats-server}
WORK=$(mktemp -d /tmp/deployer-fleet-sim.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
NATS_PID="" SIM_PID=""
cleanup() {
  [[ -n "$SIM_PID" ]] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
  [[ -n "$NATS_PID" ]] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$NATS" -js -a 127.0.0.1 -p "$PORT" -sd "$WORK/store" >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
git init -q "$WORK/repo"
git -C "$WORK/repo" -c user.name=bench -c user.email=bench@localhost commit -q --allow-empty -m one
git -C "$WORK/repo" -c user.name=bench -c user.email=bench@localhost commit -q --allow-empty -m two
OLD=$(git -C "$WORK/repo" rev-parse HEAD~1)
printf 'app: web\nenvironments:\n  sim:\n    nats: [nats://127.0.0.1:%s]\n    rollout: { canary: %s, max_parallel: %s }\n' \
  "$PORT" "$CANARY" "$MAX" >"$WORK/repo/deployer.yaml"
sleep 1
"$BIN/deployer-agent" simulate-fleet --nats "nats://127.0.0.1:$PORT" --env sim --hosts "$HOSTS" --sha "$OLD" \
  --deploy-time "$DEPLOY" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
cd "$WORK/repo"
for _ in $(seq 1 60); do
  n=$("$BIN/deployer" status sim --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' || echo 0)
  [[ "$n" == "$HOSTS" ]] && break
  sleep 1
done
[[ "$n" == "$HOSTS" ]] || { echo "only $n of $HOSTS simulated hosts joined" >&2; exit 1; }

/usr/bin/time -f "%e %U %S" -o "$WORK/time" "$BIN/deployer" push sim --json >"$WORK/push.json" 2>"$WORK/push.err" \
  || { cat "$WORK/push.err" >&2; exit 1; }
read -r WALL USER SYS <"$WORK/time"
python3 - "$WORK/push.json" "$HOSTS" "$MAX" "$CANARY" "$DEPLOY" "$WALL" "$USER" "$SYS" <<'PY'
import json, math, re, sys
path, hosts, maxp, canary, deploy, wall, user, sys_ = sys.argv[1:]
hosts, maxp, canary = int(hosts), int(maxp), int(canary)
deploy_s = float(re.match(r"[\d.]+", deploy).group()) / (1000 if deploy.endswith("ms") else 1)
results = json.load(open(path))
live = sum(1 for r in results if r["state"] == "live")
waves = (1 if canary else 0) + math.ceil((hosts - min(canary, hosts)) / maxp)
ideal = waves * deploy_s
print(f"hosts:                 {hosts} simulated (canary {canary}, max_parallel {maxp}, deploy {deploy})")
print(f"live:                  {live} of {len(results)}")
print(f"push wall time:        {float(wall):.2f}s")
print(f"ideal critical path:   {ideal:.2f}s ({waves} waves of {deploy_s:.2f}s)")
print(f"coordination overhead: {float(wall) - ideal:.2f}s ({(float(wall) - ideal) / waves:.3f}s per wave)")
print(f"the CLI's CPU:         {float(user) + float(sys_):.2f}s (user {user}s, sys {sys_}s)")
PY
echo "the simulating process: $(ps -o rss= -p "$SIM_PID" | awk '{printf "%.0f MB RSS", $1/1024}') for $HOSTS hosts"
