#!/usr/bin/env bash
# callgrind.sh: instructions (callgrind's Ir) per authorize of billingd, or
# of bare_server, on a kept bench stack, for one or more binaries in turn.
#
#   BENCH_KEEP=1 BENCH_ONLY=none make bench        # a seeded stack, left running
#   tools/bench/callgrind.sh [-n REQUESTS] [--bare] BINARY...
#
# For each BINARY: stop the kept billingd (the process running with the kept
# run's billingd.conf), start BINARY under valgrind --tool=callgrind with
# that billingd.conf (with --bare: BINARY is a bare_server, on a free port),
# warm up with 3,000 authorize requests (32 connections, accounts 1..1000),
# zero the counters, drive REQUESTS more (default 20,000), dump, and print
# the instructions of every thread of the process over the requests answered,
# and the profile file (callgrind_annotate FILE shows where they go).
#
# Instructions are what this shared machine cannot blur: CPU time per request
# moves with the other work on the two cores (cache, preemption), the count
# of instructions a request executes does not.  Kernel time (system calls,
# the TCP stack) is not counted: cost.sh --syscalls counts those.  Under
# callgrind billingd runs about 50x slower, so its loop turns carry more
# decisions per Redis call than at full speed: compare binaries with each
# other in one invocation, not with a run of their own.  Leaves the last
# billingd BINARY running (without valgrind) for the kept stack.
set -euo pipefail
cd "$(dirname "$0")/../.."

n=20000 bare=0
while [ $# -gt 0 ]; do
	case $1 in
	-n) n=$2; shift 2 ;;
	--bare) bare=1; shift ;;
	-h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "callgrind.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || { echo "callgrind.sh: name at least one binary (see --help)" >&2; exit 2; }
command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null ||
	{ echo "callgrind.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }

run=$(ls -d "$PWD"/var/bench/run-* 2>/dev/null | tail -1)
[ -n "$run" ] && [ -f "$run/billingd.conf" ] || { echo "callgrind.sh: no kept bench run under var/bench (BENCH_KEEP=1 make bench)" >&2; exit 1; }
conf=$run/billingd.conf
port=$(sed -n 's/^listen = 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$conf")
gw=$(tail -1 var/bench/etc/gateway.tokens)
lg=$run/bin/loadgen
body='{"request_id":"cg-{run}-a{seq}","account_id":{acct},"model":"deepseek-chat","input_tokens":1200,"max_output_tokens":1000}'
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

stop_kept() {
	local old
	for old in $(pgrep -f -- "--config $conf\$" || true); do
		kill "$old" 2>/dev/null || continue
		while kill -0 "$old" 2>/dev/null; do sleep 0.1; done
	done
}

last=
for bin in "$@"; do
	out=$run/callgrind.$(date +%s%N).out
	p=$port
	if [ $bare = 1 ]; then
		p=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
		valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" 127.0.0.1 "$p" >>"$run/callgrind.log" 2>&1 &
	else
		stop_kept
		valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --config "$conf" >>"$run/callgrind.log" 2>&1 &
		last=$bin
	fi
	vp=$!
	for _ in $(seq 600); do
		"$lg" --port "$p" --method GET --path /healthz --once >/dev/null 2>&1 && break
		sleep 0.2
	done
	"$lg" --port "$p" --token "$gw" --path /v1/authorize --body "$body" -c 32 -n 3000 -d 120 \
		--acct-lo 1 --acct-hi 1000 --label warm >/dev/null
	callgrind_control -z "$vp" >/dev/null 2>&1
	res=$("$lg" --port "$p" --token "$gw" --path /v1/authorize --body "$body" -c 32 -n "$n" -d 600 --warmup 0 \
		--acct-lo 1 --acct-hi 1000 --label callgrind)
	callgrind_control -d "$vp" >/dev/null 2>&1
	sleep 1
	kill "$vp"
	wait "$vp" 2>/dev/null || true
	ok=$(sed -n 's/.*"ok":\([0-9]*\).*/\1/p' <<<"$res")
	f=$(ls -t "$out".* | head -1)
	tot=$(callgrind_annotate "$f" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
	printf '%-40s ok=%s Ir/request=%s profile %s\n' "$bin" "$ok" "$((tot / ok))" "$f"
done
if [ -n "$last" ]; then
	"$last" --config "$conf" >>"$run/callgrind.log" 2>&1 &
fi
