#!/usr/bin/env bash
# Fleet-mode push benchmark (issue 14): `deployer push` over a NATS JetStream engine to N agents
# on loopback that roll it out among themselves (canary 0, max_parallel M). Prints the total wall
# time, the waves' critical path and the coordination overhead (goal: < 1 s).
# Usage: bench/fleet.sh [HOSTS [MAX_PARALLEL]]   (default 20 25)
# Needs: cargo, git, node, nats-server >= 2.11 on PATH or in $DEPLOYER_NATS_SERVER (.ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p agent -p deployer --bins
exec cargo run --quiet -p deployer-tests --example fleet_bench -- "${1:-20}" "${2:-25}"
