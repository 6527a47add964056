#!/usr/bin/env bash
# ha_stack.sh start|stop|status DIR [--fsync]
# ha_stack.sh restart-node DIR N
#
# The high-availability stack: a pg_auto_failover monitor and three
# PostgreSQL 15 nodes (node_1 primary, node_2 and node_3 synchronous
# standbys, formation number_sync_standbys = 1) plus one Redis 7, all on
# free loopback ports with their data under DIR.  Creates the roles
# billing_owner and billing and the database billing as stack.sh does, and
# writes DIR/env with libpq multi-host strings
# (host=127.0.0.1,127.0.0.1,127.0.0.1 port=P1,P2,P3
# target_session_attrs=read-write) that always reach the current primary.
#
# Why three data nodes: with one standby, pg_auto_failover only allows
# number_sync_standbys = 0 and, when that standby is unhealthy, moves the
# primary to wait_primary with synchronous_standby_names = '' -- commits
# are then acknowledged with a single copy.  With two standbys and
# number_sync_standbys = 1 (synchronous_standby_names 'ANY 1 (...)') every
# commit waits for one standby, losing any one machine keeps writes going,
# and losing both standbys blocks writes instead of dropping the guarantee.
# pg_auto_failover still runs a just-promoted primary without synchronous
# replication (wait_primary) until a standby has caught up: billingd and the
# CLIs close that window with pg_standby_confirm_ms (docs/deployment.md).
#
# `stop` ends exactly what `start` started: each `pg_autoctl run` and its
# postmaster by the PIDs recorded under DIR/pids, and Redis by its pidfile.
# DIR/env also gives HA_NODE_<n>_PGDATA and HA_NODE_<n>_PORT so a test can
# kill one node (`kill -9` of its pg_autoctl and postmaster) and restart it
# with `ha_stack.sh restart-node DIR N` (it rejoins as a standby).
# As root, everything PostgreSQL runs as the `postgres` user.  Without
# --fsync, the nodes run with fsync=off (tests); synchronous_commit stays on.
set -eu
usage="usage: ha_stack.sh start|stop|status|restart-node DIR [--fsync | N]"
cmd=${1:?$usage}
dir=${2:?$usage}
fsync=off
[ "${3:-}" = "--fsync" ] && fsync=on
PGBIN=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v postgres)")
NODES="1 2 3"

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

. "$(dirname "$0")/lib.sh" # wait_for

# pg_autoctl keeps its configuration, state and pidfiles under the XDG
# folders: ours live under DIR, never in the postgres user's home.  As root,
# setpriv switches to postgres and execs (runuser would fork): `$!` of a
# background exec_as_pg is then the program's own PID.
pg_cmd() {
	pgc=(env "HOME=$dir/xdg" "XDG_CONFIG_HOME=$dir/xdg/config" "XDG_DATA_HOME=$dir/xdg/data"
		"XDG_RUNTIME_DIR=$dir/xdg/run" "PG_CONFIG=$PGBIN/pg_config" "PATH=$PGBIN:$PATH" "$@")
	[ "$(id -u)" -ne 0 ] || pgc=(setpriv --reuid=postgres --regid=postgres --init-groups -- "${pgc[@]}")
}
as_pg() { pg_cmd "$@"; "${pgc[@]}"; }
exec_as_pg() { pg_cmd "$@"; exec "${pgc[@]}"; }

# run_node NAME PGDATA: `pg_autoctl run` in the background, its PID recorded
run_node() {
	(exec_as_pg setsid pg_autoctl run --pgdata "$2" >>"$dir/log/$1.log" 2>&1 </dev/null) &
	echo $! >"$dir/pids/$1.autoctl"
}

monitor_uri() { echo "postgres://autoctl_node@127.0.0.1:$(cat "$dir/ports/monitor")/pg_auto_failover?sslmode=disable"; }

# node_state N: the node's current state as the monitor sees it
node_state() {
	"$PGBIN/psql" -h 127.0.0.1 -p "$(cat "$dir/ports/monitor")" -U autoctl_node -d pg_auto_failover -tAc \
		"SELECT reportedstate FROM pgautofailover.node WHERE nodename = 'node_$1'" 2>/dev/null
}

wait_state() { # wait_state SECONDS N STATE...
	local t=$1 n=$2; shift 2
	for _ in $(seq 1 $((t * 5))); do
		local s; s=$(node_state "$n")
		for want in "$@"; do [ "$s" = "$want" ] && return 0; done
		sleep 0.2
	done
	echo "ha_stack.sh: node_$n is '$(node_state "$n")' after ${t}s, wanted $*" >&2
	tail -20 "$dir/log/node_$n.log" >&2
	return 1
}

create_node() { # create_node N
	local n=$1 port
	port=$(cat "$dir/ports/node_$n")
	as_pg pg_autoctl create postgres --pgdata "$dir/node_$n" --pgport "$port" --pghost 127.0.0.1 \
		--listen 127.0.0.1 --hostname 127.0.0.1 --name "node_$n" --dbname billing --username postgres \
		--monitor "$(monitor_uri)" --auth trust --no-ssl --pgctl "$PGBIN/pg_ctl" \
		>>"$dir/log/node_$n.log" 2>&1 || { tail -30 "$dir/log/node_$n.log" >&2; exit 1; }
	run_node "node_$n" "$dir/node_$n"
}

start() {
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	chmod 755 "$dir"
	mkdir -p "$dir/redis" "$dir/run" "$dir/pids" "$dir/ports" "$dir/log" "$dir/xdg/config" "$dir/xdg/data" "$dir/xdg/run"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres "$dir" "$dir/run" "$dir/log" "$dir/xdg" "$dir/xdg/config" "$dir/xdg/data" "$dir/xdg/run"
		runuser -u postgres -- test -w "$dir/run" || {
			echo "ha_stack.sh: the postgres user cannot reach '$dir' (a parent folder is private)" >&2; exit 1; }
	fi
	chmod 700 "$dir/xdg/run"
	local used="" p
	for name in monitor node_1 node_2 node_3 redis; do
		p=$(free_port)
		while echo "$used" | grep -qw "$p"; do p=$(free_port); done
		used="$used $p"
		echo "$p" >"$dir/ports/$name"
	done
	local mport rport
	mport=$(cat "$dir/ports/monitor"); rport=$(cat "$dir/ports/redis")

	redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no --dir "$dir/redis" \
		--daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis/redis.log" >/dev/null
	wait_for 20 redis-cli -h 127.0.0.1 -p "$rport" ping || { cat "$dir/redis/redis.log" >&2; exit 1; }

	# the monitor: a PostgreSQL with the pgautofailover extension that keeps
	# the nodes' states and decides failovers (health checks every second)
	as_pg pg_autoctl create monitor --pgdata "$dir/monitor" --pgport "$mport" --hostname 127.0.0.1 \
		--auth trust --no-ssl --pgctl "$PGBIN/pg_ctl" >>"$dir/log/monitor.log" 2>&1 \
		|| { tail -30 "$dir/log/monitor.log" >&2; exit 1; }
	cat >>"$dir/monitor/postgresql.conf" <<CONF
fsync = $fsync
full_page_writes = $fsync
shared_buffers = 16MB
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 2000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 5000
pgautofailover.primary_demote_timeout = 3000
CONF
	run_node monitor "$dir/monitor"
	wait_for 60 "$PGBIN/pg_isready" -h 127.0.0.1 -p "$mport" -d pg_auto_failover || {
		tail -30 "$dir/log/monitor.log" >&2; exit 1; }

	# node_1: our own initdb (trust on loopback, our settings), which
	# pg_autoctl adopts as the primary; the standbys copy it by base backup
	as_pg "$PGBIN/initdb" --nosync -D "$dir/node_1" -U postgres --auth=trust -E UTF8 --locale=C \
		>"$dir/log/initdb.log" 2>&1 || { cat "$dir/log/initdb.log" >&2; exit 1; }
	cat >>"$dir/node_1/postgresql.conf" <<CONF
fsync = $fsync
full_page_writes = $fsync
synchronous_commit = on
max_connections = 200
shared_buffers = 64MB
wal_keep_size = 256MB
CONF
	create_node 1
	wait_state 90 1 single primary wait_primary || exit 1
	wait_for 30 "$PGBIN/pg_isready" -h 127.0.0.1 -p "$(cat "$dir/ports/node_1")" || exit 1
	local psql="$PGBIN/psql -h 127.0.0.1 -p $(cat "$dir/ports/node_1") -U postgres -v ON_ERROR_STOP=1 -q"
	$psql -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing_owner') THEN CREATE ROLE billing_owner LOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing') THEN CREATE ROLE billing LOGIN; END IF;
END \$\$;
ALTER DATABASE billing OWNER TO billing_owner;
-- pg_stat_replication: billingd and the CLIs confirm each commit on a standby
GRANT pg_read_all_stats TO billing, billing_owner;
SQL
	# pg_autoctl put pg_stat_statements into billing: not ours, the migrations
	# should not meet it
	$psql -d billing -c "DROP EXTENSION IF EXISTS pg_stat_statements" >/dev/null
	$psql -d billing -c "REVOKE CREATE ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO billing_owner" >/dev/null
	create_node 2
	wait_state 120 2 secondary || exit 1
	create_node 3
	wait_state 120 3 secondary || exit 1
	# pg_autoctl 2.0 sets number_sync_standbys to 1 when the second
	# standby registers; make sure of it
	"$PGBIN/psql" -h 127.0.0.1 -p "$mport" -U autoctl_node -d pg_auto_failover -v ON_ERROR_STOP=1 -qtAc \
		"SELECT pgautofailover.set_formation_number_sync_standbys('default', 1)
		 WHERE (SELECT number_sync_standbys FROM pgautofailover.formation WHERE formationid = 'default') <> 1" \
		>/dev/null || exit 1
	wait_state 60 1 primary || exit 1
	local hosts="127.0.0.1,127.0.0.1,127.0.0.1" ports
	ports="$(cat "$dir/ports/node_1"),$(cat "$dir/ports/node_2"),$(cat "$dir/ports/node_3")"
	{
		echo "STACK_DIR=$dir"
		echo "HA_MONITOR_PORT=$mport"
		echo "PG_MONITOR=\"host=127.0.0.1 port=$mport dbname=pg_auto_failover user=autoctl_node\""
		for n in $NODES; do
			echo "HA_NODE_${n}_PORT=$(cat "$dir/ports/node_$n")"
			echo "HA_NODE_${n}_PGDATA=$dir/node_$n"
		done
		echo "REDIS_PORT=$rport"
		echo "BILLING_PG=\"host=$hosts port=$ports target_session_attrs=read-write dbname=billing user=billing\""
		echo "BILLING_PG_OWNER=\"host=$hosts port=$ports target_session_attrs=read-write dbname=billing user=billing_owner\""
		echo "BILLING_PG_STANDBY=\"host=$hosts port=$ports target_session_attrs=prefer-standby dbname=billing user=billing_owner\""
		echo "PG_SUPER=\"host=$hosts port=$ports target_session_attrs=read-write dbname=billing user=postgres\""
		echo "BILLING_REDIS=127.0.0.1:$rport"
		echo "BILLING_PG_STANDBY_CONFIRM_MS=2000"
	} >"$dir/env"
	echo "ha_stack: monitor 127.0.0.1:$mport nodes $ports redis 127.0.0.1:$rport under $dir" >&2
}

# ours PID PGDATA: the process is alive and runs on PGDATA (a node killed
# by a test leaves stale PIDs behind, which may belong to someone else now)
ours() { [ -n "$1" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"; }

# stop_node NAME: pg_autoctl stop (fast), then whatever is left by PID
stop_node() {
	local name=$1 pgdata=$dir/$1 ap pp=""
	[ -f "$pgdata/postmaster.pid" ] && pp=$(head -1 "$pgdata/postmaster.pid")
	if [ -f "$dir/pids/$name.autoctl" ]; then
		ap=$(cat "$dir/pids/$name.autoctl")
		if ours "$ap" "$pgdata"; then
			kill -INT "$ap" 2>/dev/null || true
			for _ in $(seq 1 100); do kill -0 "$ap" 2>/dev/null || break; sleep 0.1; done
			ours "$ap" "$pgdata" && kill -9 "$ap" 2>/dev/null || true
		fi
		rm -f "$dir/pids/$name.autoctl"
	fi
	if ours "$pp" "$pgdata"; then
		as_pg "$PGBIN/pg_ctl" -D "$pgdata" -m immediate -w -t 20 stop >/dev/null 2>&1 || kill -9 "$pp" 2>/dev/null || true
	fi
}

stop() {
	[ -d "$dir" ] || return 0
	dir=$(cd "$dir" && pwd)
	for n in $NODES; do stop_node "node_$n"; done
	stop_node monitor
	if [ -f "$dir/redis.pid" ]; then
		local rp; rp=$(cat "$dir/redis.pid")
		kill "$rp" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$rp" 2>/dev/null || break; sleep 0.1; done
		rm -f "$dir/redis.pid"
	fi
}

restart_node() { # a node killed by a test comes back: it rejoins as a standby
	dir=$(cd "$dir" && pwd)
	local n=${3:?$usage}
	stop_node "node_$n"
	run_node "node_$n" "$dir/node_$n"
}

case "$cmd" in
start)
	if [ -f "$dir/pids/monitor.autoctl" ] && kill -0 "$(cat "$dir/pids/monitor.autoctl")" 2>/dev/null; then
		echo "ha_stack.sh: a stack already runs under '$dir' (ha_stack.sh stop it first)" >&2; exit 1
	fi
	rm -rf "$dir/monitor" "$dir/node_1" "$dir/node_2" "$dir/node_3" "$dir/xdg" "$dir/env"
	# a start that fails half-way stops what it started
	(start) || { stop; exit 1; } ;;
stop) stop ;;
status) [ -f "$dir/env" ] && cat "$dir/env" ;;
restart-node) restart_node "$@" ;;
*) echo "ha_stack.sh: unknown command '$cmd'" >&2; exit 2 ;;
esac
