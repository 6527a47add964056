#!/usr/bin/env bash
# callgrind.sh: instructions (callgrind's Ir) per authorize (or per single
# usage record) of billingd, or of bare_server, on a kept bench stack, for
# one or more binaries in turn.
#
#   BENCH_KEEP=1 BENCH_ONLY=none make bench        # a seeded stack, left running
#   tools/bench/callgrind.sh [-s authorize|usage] [-n REQUESTS] [--bare] BINARY...
#
# For each BINARY: stop the kept billingd (the process running with the kept
# run's billingd.conf), start BINARY under valgrind --tool=callgrind with
# that billingd.conf (with --bare: BINARY is a bare_server, on a free port),
# warm up with 3,000 requests (authorize: 32 connections; -s usage: POST
# /v1/usage of one record, 64 connections, answered after COMMIT; accounts
# 1..1000), zero the counters, drive REQUESTS more (default 20,000), dump,
# and print the instructions of every thread of the process over the
# requests answered, and the profile file (callgrind_annotate FILE shows
# where they go).  Usage records per commit depend on timing (valgrind
# serializes the threads): the line gives billingd's records a commit over
# the window too, so binaries are compared at like batch sizes.
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

n=20000 bare=0 scen=authorize
while [ $# -gt 0 ]; do
	case $1 in
	-n) n=$2; shift 2 ;;
	-s) scen=$2; shift 2 ;;
	--bare) bare=1; shift ;;
	-h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
case $scen in
authorize)
	path=/v1/authorize conns=32
	body='{"request_id":"cg-{run}-a{seq}","account_id":{acct},"model":"deepseek-chat","input_tokens":1200,"max_output_tokens":1000}' ;;
usage)
	path=/v1/usage conns=64
	body='{"request_id":"cg-{run}-u{seq}","account_id":{acct},"model":"deepseek-chat","input_tokens":1200,"cached_input_tokens":200,"output_tokens":300,"started_at":"{now}"}' ;;
*) echo "callgrind.sh: -s is authorize or usage, not '$scen'" >&2; exit 2 ;;
esac
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

stop_kept() {
	local old
	for old in $(pgrep -f -- "--config $conf\$" || true); do
		kill "$old" 2>/dev/null || continue
		while kill -0 "$old" 2>/dev/null; do sleep 0.1; done
	done
}

# billing_commit_batch_records' sum and count from billingd's /metrics (as cost.sh)
commits() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^billing_commit_batch_records_(sum|count) / {printf "%s ", $2}'; }
per_commit() { awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); c = y[2] - x[2]; printf "%.1f", c ? (y[1] - x[1]) / c : 0}'; }

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
	"$lg" --port "$p" --token "$gw" --path $path --body "$body" -c $conns -n 3000 -d 120 \
		--acct-lo 1 --acct-hi 1000 --label warm >/dev/null
	c0=$(commits "$p")
	callgrind_control -z "$vp" >/dev/null 2>&1
	res=$("$lg" --port "$p" --token "$gw" --path $path --body "$body" -c $conns -n "$n" -d 600 --warmup 0 \
		--acct-lo 1 --acct-hi 1000 --label callgrind)
	callgrind_control -d "$vp" >/dev/null 2>&1
	c1=$(commits "$p")
	sleep 1
	kill "$vp"
	wait "$vp" 2>/dev/null || true
	ok=$(sed -n 's/.*"ok":\([0-9]*\).*/\1/p' <<<"$res")
	f=$(ls -t "$out".* | head -1)
	tot=$(callgrind_annotate "$f" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
	if [ $scen = usage ]; then
		printf '%-40s ok=%s Ir/request=%s records/commit=%s profile %s\n' "$bin" "$ok" "$((tot / ok))" \
			"$(per_commit "$c0" "$c1")" "$f"
	else
		printf '%-40s ok=%s Ir/request=%s profile %s\n' "$bin" "$ok" "$((tot / ok))" "$f"
	fi
done
if [ -n "$last" ]; then
	"$last" --config "$conf" >>"$run/callgrind.log" 2>&1 &
fi
