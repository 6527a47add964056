#!/usr/bin/env bash
# redis_cluster.sh start|stop|start-node|status DIR [I]
#
# A throwaway Redis Cluster of three masters (no replicas) on free loopback
# ports, data under DIR/n1..n3 (no persistence: a restarted master comes back
# empty, with its slots: its nodes.conf is kept).  `start` writes DIR/env:
# CLUSTER_PORTS="p1 p2 p3" and CLUSTER_SEEDS=127.0.0.1:p1,127.0.0.1:p2,...
# `start-node DIR I` starts master I again (after a kill) with the same
# options and port.  `stop` ends exactly the processes it started, by the
# PIDs they wrote.  cluster-require-full-coverage is off: with one master
# down, the others keep serving their slots.
set -eu
cmd=${1:?usage: redis_cluster.sh start|stop|start-node|status DIR [I]}
dir=${2:?usage: redis_cluster.sh start|stop|start-node|status DIR [I]}
N=3

# a port p with p and its cluster bus port p+10000 both free
free_port() {
	python3 - <<'PY'
import random, socket
for _ in range(200):
    p = random.randint(20000, 29999)
    ok = True
    for q in (p, p + 10000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", q))
        except OSError:
            ok = False
        finally:
            s.close()
    if ok:
        print(p)
        break
PY
}

. "$(dirname "$0")/lib.sh" # wait_for

start_node() { # start_node I
	local i=$1 port; port=$(cat "$dir/n$i/port")
	redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
		--cluster-config-file "$dir/n$i/nodes.conf" --cluster-node-timeout 5000 \
		--cluster-require-full-coverage no --save '' --appendonly no --dir "$dir/n$i" \
		--daemonize yes --pidfile "$dir/n$i/redis.pid" --logfile "$dir/n$i/redis.log" >/dev/null
	wait_for 20 redis-cli -h 127.0.0.1 -p "$port" ping || { cat "$dir/n$i/redis.log" >&2; exit 1; }
}

state_ok() {
	local p
	for p in "$@"; do
		redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
	done
}

start() {
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	local ports=() addrs=() seeds="" i p
	for i in $(seq 1 $N); do
		p=$(free_port)
		while [ -z "$p" ] || [[ " ${ports[*]:-} " == *" $p "* ]]; do p=$(free_port); done
		ports+=("$p"); addrs+=("127.0.0.1:$p")
		mkdir -p "$dir/n$i"
		echo "$p" >"$dir/n$i/port"
		start_node "$i"
	done
	redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 \
		|| { cat "$dir/create.log" >&2; exit 1; }
	wait_for 30 state_ok "${ports[@]}" || { echo "redis_cluster.sh: cluster_state never ok" >&2; exit 1; }
	seeds=$(IFS=,; echo "${addrs[*]}")
	cat >"$dir/env" <<ENV
CLUSTER_DIR=$dir
CLUSTER_PORTS="${ports[*]}"
CLUSTER_SEEDS=$seeds
ENV
	echo "redis cluster: $seeds under $dir" >&2
}

stop() {
	[ -d "$dir" ] || return 0
	local i rp
	for i in $(seq 1 $N); do
		[ -f "$dir/n$i/redis.pid" ] || continue
		rp=$(cat "$dir/n$i/redis.pid")
		kill "$rp" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$rp" 2>/dev/null || break; sleep 0.1; done
		rm -f "$dir/n$i/redis.pid"
	done
}

case "$cmd" in
start) start ;;
stop) stop ;;
start-node) dir=$(cd "$dir" && pwd); start_node "${3:?node number}" ;;
status) [ -f "$dir/env" ] && cat "$dir/env" ;;
*) echo "redis_cluster.sh: unknown command '$cmd'" >&2; exit 2 ;;
esac
