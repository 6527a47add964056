#!/usr/bin/env bash
# cost.sh: CPU (and system calls) per request of billingd, PostgreSQL and
# Redis on a kept bench stack, for one or more billingd binaries in turn.
#
#   BENCH_KEEP=1 BENCH_ONLY=none make bench        # a seeded stack, left running
#   tools/bench/cost.sh [-s authorize|usage|batch] [-c CONNS] [-d SECONDS] [-r ROUNDS] [--syscalls] BINARY...
#
# For each round and each BINARY (in turn, so old and new alternate): stop
# the kept billingd (the process running with the kept run's billingd.conf),
# start BINARY with that billingd.conf, warm up for
# 2 s, then drive it with loadgen for SECONDS and print one line: requests,
# req/s, and each process's CPU time (utime + stime from /proc; billingd's
# utime alone in brackets) divided by the requests answered (batch:
# 1000-record requests, 4 connections, per record).  PostgreSQL counts the
# postmaster and every child.
# --syscalls adds perf's count of billingd's epoll_ctl, epoll_wait, readv,
# writev, read, write, sendto, recvfrom and poll per request.
#
# On this shared 2-core machine req/s moves 2x with other work; CPU per
# request moves far less, which is why the figures in docs/benchmarks.md
# that say "CPU per request" come from here.  The billingd left running at
# the end is the last BINARY (stop it with the kill line bench.sh printed, or
# pkill -f "--config <run>/billingd.conf").
set -euo pipefail
cd "$(dirname "$0")/../.."

scen=usage conns= secs=8 rounds=1 sys=0 batch=()
while [ $# -gt 0 ]; do
	case $1 in
	-s) scen=$2; shift 2 ;;
	-c) conns=$2; shift 2 ;;
	-d) secs=$2; shift 2 ;;
	-r) rounds=$2; shift 2 ;;
	--syscalls) sys=1; shift ;;
	-h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "cost.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || { echo "cost.sh: name at least one billingd binary (see --help)" >&2; exit 2; }
case $scen in
authorize)
	path=/v1/authorize
	body='{"request_id":"cost-{run}-a{seq}","account_id":{acct},"model":"deepseek-chat","input_tokens":1200,"max_output_tokens":1000}'
	conns=${conns:-32} ;;
usage)
	path=/v1/usage
	body='{"request_id":"cost-{run}-u{seq}","account_id":{acct},"model":"deepseek-chat","input_tokens":1200,"cached_input_tokens":200,"output_tokens":300,"started_at":"{now}"}'
	conns=${conns:-64} ;;
batch)
	path=/v1/usage/batch
	body='{"request_id":"cost-{run}-b{seq}","account_id":{acct},"model":"deepseek-chat","input_tokens":1200,"cached_input_tokens":200,"output_tokens":300,"started_at":"{now}"}'
	batch=(--batch 1000)
	conns=${conns:-4} ;;
*) echo "cost.sh: -s is authorize, usage or batch, not '$scen'" >&2; exit 2 ;;
esac

run=$(ls -d "$PWD"/var/bench/run-* 2>/dev/null | tail -1)
[ -n "$run" ] && [ -f "$run/billingd.conf" ] || { echo "cost.sh: no kept bench run under var/bench (BENCH_KEEP=1 make bench)" >&2; exit 1; }
conf=$run/billingd.conf
port=$(sed -n 's/^listen = 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$conf")
pgport=$(sed -n 's/^pg = .*port=\([0-9]*\) .*/\1/p' "$conf")
rport=$(sed -n 's/^redis = 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$conf")
gw=$(tail -1 var/bench/etc/gateway.tokens)
lg=$run/bin/loadgen
pm=$(pgrep -f -- "postgres -D .* -c port=$pgport( |\$)" | head -1 || true)
rpid=$(pgrep -f -- "redis-server 127.0.0.1:$rport\$" | head -1 || true)
[ -n "$pm" ] && [ -n "$rpid" ] || { echo "cost.sh: the kept PostgreSQL (port $pgport) or Redis ($rport) is not running" >&2; exit 1; }

ticks() { awk '{s += $14 + $15} END {print s + 0}' "$@" 2>/dev/null || echo 0; }
uticks() { awk '{s += $14} END {print s + 0}' "$@" 2>/dev/null || echo 0; } # user time only
pg_ticks() { ticks /proc/"$pm"/stat $(pgrep -P "$pm" | sed 's|.*|/proc/&/stat|'); }
# billing_commit_batch_records' sum and count from billingd's /metrics
commits() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^billing_commit_batch_records_(sum|count) / {printf "%s ", $2}'; }
per_commit() { awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); c = y[2] - x[2]; printf "%.1f", c ? (y[1] - x[1]) / c : 0}'; }
us_per() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f", n ? t * 1e6 / hz / n : 0}'; }

bpid=
swap() { # the billingd of this run's config, whichever binary: stop it, start $1
	local old
	for old in $(pgrep -f -- "--config $conf\$" || true); do
		kill "$old" 2>/dev/null || continue
		while kill -0 "$old" 2>/dev/null; do sleep 0.1; done
	done
	"$1" --config "$conf" >>"$run/cost-billingd.log" 2>&1 &
	bpid=$!
	for _ in $(seq 100); do
		"$lg" --port "$port" --method GET --path /healthz --once >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "cost.sh: $1 did not answer /healthz on port $port" >&2
	exit 1
}

for r in $(seq "$rounds"); do
	for bin in "$@"; do
		swap "$bin"
		"$lg" --port "$port" --token "$gw" --path "$path" --body "$body" "${batch[@]}" -c "$conns" -d 2 \
			--acct-lo 1 --acct-hi 1000 --label warm >/dev/null
		if [ $sys = 1 ]; then
			perf stat -x, -o "$run/cost-sys.txt" -e 'syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_readv,syscalls:sys_enter_writev,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_poll' -p "$bpid" &
			spid=$!
		fi
		m0=$(commits)
		b0=$(ticks /proc/"$bpid"/stat) u0=$(uticks /proc/"$bpid"/stat) p0=$(pg_ticks) r0=$(ticks /proc/"$rpid"/stat)
		out=$("$lg" --port "$port" --token "$gw" --path "$path" --body "$body" "${batch[@]}" -c "$conns" -d "$secs" \
			--acct-lo 1 --acct-hi 1000 --label cost)
		b1=$(ticks /proc/"$bpid"/stat) u1=$(uticks /proc/"$bpid"/stat) p1=$(pg_ticks) r1=$(ticks /proc/"$rpid"/stat)
		m1=$(commits)
		n=$(sed -n 's/.*"ok":\([0-9]*\).*/\1/p' <<<"$out")
		rps=$(sed -n 's/.*"ok_rps":\([0-9.]*\).*/\1/p' <<<"$out")
		if [ ${#batch[@]} -gt 0 ]; then # per record
			n=$((n * 1000))
			rps=$(sed -n 's/.*"items_per_s":\([0-9.]*\).*/\1/p' <<<"$out")
		fi
		p99=$(sed -n 's/.*"p99_ms":\([0-9.]*\).*/\1/p' <<<"$out")
		printf '%s round %s %-28s ok=%s req/s=%s p99=%sms us/req: billingd %s (user %s) postgres %s redis %s records/commit %s (load %s)\n' \
			"$scen" "$r" "$bin" "$n" "$rps" "$p99" "$(us_per $((b1 - b0)) "$n")" "$(us_per $((u1 - u0)) "$n")" "$(us_per $((p1 - p0)) "$n")" \
			"$(us_per $((r1 - r0)) "$n")" "$(per_commit "$m0" "$m1")" "$(cut -d' ' -f1 /proc/loadavg)"
		if [ $sys = 1 ]; then
			kill -INT "$spid"
			wait "$spid" || true
			awk -F, -v n="$n" '$3 ~ /syscalls/ {sub("syscalls:sys_enter_", "", $3); printf "  %s %.2f/req", $3, $1 / n} END {print ""}' "$run/cost-sys.txt"
		fi
	done
done
