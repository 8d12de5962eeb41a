#!/usr/bin/env bash
# A deploy, commit to the new version serving, side by side with the flow it replaces:
#   seed:  a working copy under PM2 7 cluster mode (2 workers), `git pull && npm install &&
#          pm2 reload app --update-env`;
#   agent: deployer-agent deploying the same repository (`deployer deploy web`), 2 workers,
#          `install: npm install --no-audit --no-fund` with the install cache (`warm: true`).
# The app is an express app with real dependencies from the npm registry (express, lodash,
# moment, axios). For each flow and each case (the lockfile unchanged: only the app's version
# changes; the lockfile changed: one small dependency moves between versions), DEPLOYS deploys
# in a row under 30 keep-alive clients (bench/loadcheck.py): seconds from the commit being on the
# origin to 5 answers in a row carrying the new version, and the failed requests.
# Goals: unchanged <= 0.5x the seed's time, changed <= 1.2x, 0 failed.
# Usage: bench/deploy.sh [DEPLOYS]   (default 3; BIN_DIR=target/debug to use binaries built already)
# Needs: cargo, git, node, npm (and the npm registry), python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPLOYS=${1:-3}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

WORK=$(mktemp -d /tmp/deployer-deploy-bench.XXXXXX)
AGENT_PID=""
cleanup() {
  [[ -n "$AGENT_PID" ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  [[ -x "$WORK/pm2/node_modules/.bin/pm2" ]] && PM2_HOME=$WORK/pm2home "$WORK/pm2/node_modules/.bin/pm2" kill >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
LOADCHECK=$ROOT/../shared/bench/loadcheck.py
[[ -f $LOADCHECK ]] || LOADCHECK=$ROOT/bench/loadcheck.py
NPM_FLAGS=(--no-audit --no-fund --loglevel=error)

BIN=${BIN_DIR:-$TARGET/release}
if [[ -z "${BIN_DIR:-}" ]]; then echo "building (release)..." >&2; cargo build --release -q -p agent -p deployer; fi
AGENT=$BIN/deployer-agent
CLI=$BIN/deployer
echo "installing pm2@7 into $WORK/pm2..." >&2
(mkdir -p "$WORK/pm2" && cd "$WORK/pm2" && npm init -y >/dev/null && npm install --silent "${NPM_FLAGS[@]}" pm2@7 >/dev/null 2>&1)
PM2=$WORK/pm2/node_modules/.bin/pm2
export PM2_HOME=$WORK/pm2home

# The app's repository: `origin.git`, written from the work tree `src`.
SRC=$WORK/src
mkdir -p "$SRC"
cd "$SRC"
git init -q --initial-branch=main
git config user.email bench@example.invalid && git config user.name bench
cat > app.js <<'JS'
const express = require('express');
const _ = require('lodash');
const moment = require('moment');
const axios = require('axios');
const version = require('fs').readFileSync(__dirname + '/version.txt', 'utf8').trim();
const app = express();
app.get('/', (req, res) => res.send(`${version} ${_.kebabCase('deploy bench')} ${moment.utc(0).year()} ${typeof axios.get}\n`));
app.listen(Number(process.env.PORT || 3000));
JS
echo v0 > version.txt
echo node_modules > .gitignore
npm init -y >/dev/null
echo "installing the app's dependencies from the registry..." >&2
npm install "${NPM_FLAGS[@]}" express lodash moment axios is-number@7.0.0 >/dev/null
echo "node_modules: $(find node_modules -type f | wc -l) files, $(du -sh node_modules | cut -f1)" >&2
git add -A && git commit -qm v0
git clone -q --bare "$SRC" "$WORK/origin.git"
git remote add origin "$WORK/origin.git"
cd "$ROOT"

API_PORT=7491 AGENT_PORT=3491 SEED_PORT=3492
export DEPLOYER_TOKEN=bench-token-$$ DEPLOYER_AGENT=http://127.0.0.1:$API_PORT

# The seed: a working copy, npm install, PM2 cluster of 2.
git clone -q "$WORK/origin.git" "$WORK/seed"
(cd "$WORK/seed" && npm install "${NPM_FLAGS[@]}" >/dev/null)
(cd "$WORK/seed" && PORT=$SEED_PORT "$PM2" start app.js -i 2 --name app >/dev/null 2>&1)

cat > "$WORK/agent.yaml" <<YAML
listen: 127.0.0.1:$API_PORT
state_dir: $WORK/state
tokens: [{ name: bench, token_env: DEPLOYER_TOKEN, scopes: [read, deploy] }]
apps:
  web:
    repo: $WORK/origin.git
    branch: main
    install: npm install --no-audit --no-fund --loglevel=error
    install_cache: { warm: true }
    start: node app.js
    instances: 2
    port: $AGENT_PORT
    bind: 127.0.0.1
YAML
"$AGENT" --config "$WORK/agent.yaml" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!

# serving PORT VERSION T0: wait until 5 answers in a row carry VERSION; print seconds since T0.
serving() {
  python3 - "$@" <<'PY'
import sys, time, urllib.request
port, want, t0 = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
streak, deadline = 0, time.time() + 300
while time.time() < deadline:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
    except Exception:
        body = ""
    streak = streak + 1 if body.startswith(want + " ") else 0
    if streak == 5:
        print(f"{time.time() - t0:.2f}")
        sys.exit(0)
    time.sleep(0.01)
sys.exit("never served " + want)
PY
}
serving "$SEED_PORT" v0 "$(date +%s.%N)" >/dev/null
serving "$AGENT_PORT" v0 "$(date +%s.%N)" >/dev/null || { cat "$WORK/agent.log" >&2; exit 1; }

N=0 CHANGES=0
# commit CASE: the next version; for `changed` also another version of is-number in the lockfile
# (7.0.0 at first, then 6.0.0, 7.0.0, ...: each differs from the one before).
commit() {
  N=$((N + 1))
  cd "$SRC"
  echo "v$N" > version.txt
  if [[ $1 == changed ]]; then
    CHANGES=$((CHANGES + 1))
    npm install --package-lock-only "${NPM_FLAGS[@]}" "is-number@$((CHANGES % 2 ? 6 : 7)).0.0" >/dev/null
  fi
  git add -A && git commit -qm "v$N" && git push -q origin main
  cd "$ROOT"
}

# deploy FLOW: trigger the deploy of the commit just pushed the way FLOW does.
deploy() {
  case $1 in
    seed) (cd "$WORK/seed" && git pull -q && npm install "${NPM_FLAGS[@]}" >/dev/null && "$PM2" reload app --update-env >/dev/null 2>&1) ;;
    agent) "$CLI" deploy web >/dev/null ;;
  esac
}

declare -A TIMES FAILED
for case in unchanged changed; do
  for flow in seed agent; do
    port=$SEED_PORT; [[ $flow == agent ]] && port=$AGENT_PORT
    per=6; [[ $case == changed ]] && per=12
    window=$(( 4 + DEPLOYS * per ))
    python3 "$LOADCHECK" --port "$port" --conns 30 --seconds "$window" --keepalive > "$WORK/load.json" &
    LOAD=$!
    sleep 1
    times=()
    start=$(date +%s)
    for _ in $(seq "$DEPLOYS"); do
      commit "$case"
      t0=$(date +%s.%N)
      deploy "$flow"
      times+=("$(serving "$port" "v$N" "$t0")")
    done
    (( $(date +%s) - start + 1 > window )) && echo "warning: the deploys outlasted the load window" >&2
    wait $LOAD
    TIMES[$flow-$case]="${times[*]}"
    FAILED[$flow-$case]=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d of %d" % (r["failed"], r["ok"] + r["failed"]))' "$WORK/load.json")
  done
done

echo
echo "## Commit to the new version serving, $DEPLOYS deploys each, 30 keep-alive clients, 2 workers"
echo "node_modules: $(find "$WORK/seed/node_modules" -type f | wc -l) files; node $(node --version); npm $(npm --version)"
python3 - "${TIMES[seed-unchanged]}" "${FAILED[seed-unchanged]}" "${TIMES[agent-unchanged]}" "${FAILED[agent-unchanged]}" \
  "${TIMES[seed-changed]}" "${FAILED[seed-changed]}" "${TIMES[agent-changed]}" "${FAILED[agent-changed]}" <<'PY'
import sys, statistics
a = sys.argv[1:]
rows = {("seed", "unchanged"): (a[0], a[1]), ("agent", "unchanged"): (a[2], a[3]),
        ("seed", "changed"): (a[4], a[5]), ("agent", "changed"): (a[6], a[7])}
print("| lockfile | flow | seconds per deploy | median | x seed | failed requests |")
print("|---|---|---|---|---|---|")
for case, goal in (("unchanged", 0.5), ("changed", 1.2)):
    seed = statistics.median(float(t) for t in rows[("seed", case)][0].split())
    for flow in ("seed", "agent"):
        times, failed = rows[(flow, case)]
        med = statistics.median(float(t) for t in times.split())
        name = "deploy.sh + PM2 7" if flow == "seed" else "deployer-agent"
        print(f"| {case} | {name} | {', '.join(times.split())} | {med:.2f} | {med / seed:.2f} | {failed} |")
    agent = statistics.median(float(t) for t in rows[("agent", case)][0].split())
    print(f"- goal {case}: <= {goal}x the seed with 0 failed: {agent / seed:.2f}x", file=sys.stderr)
PY
echo
echo "## The agent's deploy events (last deploy)"
"$CLI" history web --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])' | xargs -I{} "$CLI" show {} 2>/dev/null | tail -n 15 || true
