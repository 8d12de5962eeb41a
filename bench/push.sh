#!/usr/bin/env bash
# Fleet push benchmark: `deployer push` to 20 agents on loopback (empty install, max_parallel: 20).
# Prints the total wall time and the slowest host's deploy time; goal: total < slowest + 2 s.
# Usage: bench/push.sh [HOSTS]     Needs: cargo, git, node.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p agent -p deployer --bins
exec cargo run --quiet -p deployer-tests --example push_bench -- "${1:-20}"
