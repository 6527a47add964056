#!/usr/bin/env bash
# script_cost.sh: the authorize script alone (tools/bench/scriptbench.c) on a
# private redis-server started here on a free loopback port and stopped by
# PID on exit; fresh data for each phase.
#
#   tools/bench/script_cost.sh [-r ROUNDS] SCRIPTBENCH_BINARY... -- [scriptbench options]
#
# Each round runs every binary in turn (old and new alternate), one line
# each: Redis CPU and script time per decision.  Build a binary per script
# version: cc -O2 -I<tree> tools/bench/scriptbench.c -lhiredis.
set -euo pipefail
rounds=1
[ "${1:-}" = -r ] && { rounds=$2; shift 2; }
bins=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do bins+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#bins[@]} -ge 1 ] || { echo "script_cost.sh: name at least one scriptbench binary" >&2; exit 2; }
dir=$(mktemp -d)
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$dir" --daemonize no >"$dir/redis.log" 2>&1 &
rpid=$!
trap 'kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
for r in $(seq "$rounds"); do
	for b in "${bins[@]}"; do
		printf '%s round %s %s (load %s)\n' "$(basename "$b")" "$r" "$("$b" "$port" "$@")" "$(cut -d' ' -f1 /proc/loadavg)"
	done
done
