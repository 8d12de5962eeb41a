#!/usr/bin/env bash
# Issue 11's check: 10 upgrades in a row of the agent (the binary on disk replaced each time)
# under 50 clients of both kinds, on the example app answering in 500 ms; then `kill -9` of the
# agent with its sockets held as systemd's socket units hold them (LISTEN_FDS): refused
# connections (`oserror_111`) apart from the in-flight requests the killed agent carried, and the
# time until the app answered again.
#
# Usage: bench/upgrade.sh [--times 10] [--conns 50] [--delay-ms 500]   (extra flags: bench/restart.py)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p agent
exec python3 bench/restart.py --times 10 --cases upgrade,kill9-held "$@"
