#!/usr/bin/env bash
# script_callgrind.sh: Redis's instructions (callgrind's Ir) per authorize
# decision, for one or more scriptbench binaries (tools/bench/scriptbench.c,
# each compiled with the quota.lua.h under study).
#
#   tools/bench/script_callgrind.sh [-n DECISIONS] [-c] SCRIPTBENCH_BINARY... -- [scriptbench options]
#
# For each binary, two private redis-servers in turn under valgrind
# --tool=callgrind (free loopback port, no persistence, stopped by PID):
# one runs scriptbench with 1,000 decisions, the other with 1,000 +
# DECISIONS (default 20,000); both do the same set-up (FLUSHALL, the script
# loads, one locked load per account), so the difference of the two totals
# over DECISIONS is what a decision costs inside Redis: the command read, the
# script, its redis.calls and the reply, without the other engineers' load
# on the two cores blurring it.  Kernel time is not counted.  -c counts only
# the commands (callgrind's --toggle-collect=processInputBuffer: reading a
# command, running it, queueing its reply), not Redis's timers: those move
# a total by about a thousand Ir a decision between runs of one binary,
# the commands alone by a few Ir.
set -euo pipefail
n=20000
collect=()
[ "${1:-}" = -n ] && { n=$2; shift 2; }
[ "${1:-}" = -c ] && { collect=(--toggle-collect=processInputBuffer); shift; }
bins=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do bins+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#bins[@]} -ge 1 ] || { echo "script_callgrind.sh: name at least one scriptbench binary" >&2; exit 2; }
command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null ||
	{ echo "script_callgrind.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
dir=$(mktemp -d)
rpid=
trap '[ -n "$rpid" ] && kill "$rpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

# total Ir of one redis-server under callgrind while scriptbench runs COUNT decisions
total() {
	local b=$1 count=$2 port out
	shift 2
	port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	out=$dir/cg.$port
	valgrind --tool=callgrind "${collect[@]}" --callgrind-out-file="$out" redis-server --bind 127.0.0.1 --port "$port" --save '' \
		--appendonly no --dir "$dir" --daemonize no >"$dir/redis.$port.log" 2>&1 &
	rpid=$!
	for _ in $(seq 300); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
	"$b" "$port" -n "$count" "$@" >"$dir/sb.$port.log" || { cat "$dir/sb.$port.log" >&2; exit 1; }
	kill "$rpid"
	wait "$rpid" 2>/dev/null || true
	rpid=
	callgrind_annotate "$out" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}

for b in "${bins[@]}"; do
	lo=$(total "$b" 1000 "$@")
	hi=$(total "$b" $((1000 + n)) "$@")
	printf '%-32s decisions=%s redis_Ir/decision=%s\n' "$(basename "$b")" "$n" "$(((hi - lo) / n))"
done
