# scripts/lib.sh: shell helpers shared by scripts/stack.sh and
# scripts/redis_cluster.sh (sourced, not run).

wait_for() { # wait_for SECONDS CMD...: until CMD succeeds, polled every 0.1 s; 1 on timeout
	local t=$1; shift
	for _ in $(seq 1 $((t * 10))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
