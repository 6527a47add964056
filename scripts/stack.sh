#!/usr/bin/env bash
# stack.sh start|stop|remove|status DIR [--fsync]
#
# Starts a throwaway PostgreSQL 15 and Redis 7 on free loopback ports with
# their data under DIR, creates the roles billing_owner (schema owner) and
# billing (service), and the database billing; writes DIR/env (shell
# variables) for the caller.  `stop` ends exactly the processes it started,
# by the PIDs it recorded; `remove` stops and deletes DIR and PostgreSQL's
# files.  Without --fsync, PostgreSQL runs with fsync=off (tests);
# synchronous_commit stays on either way.
#
# As root, PostgreSQL runs as the `postgres` user (initdb refuses root).  Its
# files (data, log, socket) are in DIR/pg when `postgres` can reach DIR;
# otherwise (DIR under /root or another private folder) in
# /var/lib/billing-stack/<sha256 of DIR, 16 digits>/, mode 0700, owned by
# postgres, named in DIR/pg.home and in the env file (PG_HOME), so the next
# `start` of the same DIR finds the same database.
set -eu
usage="usage: stack.sh start|stop|remove|status DIR [--fsync]"
cmd=${1:?$usage}
dir=${2:?$usage}
fsync=off
[ "${3:-}" = "--fsync" ] && fsync=on
PGBIN=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v postgres)")

as_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

. "$(dirname "$0")/lib.sh" # wait_for

PG_OUTSIDE=/var/lib/billing-stack

pg_home() { # PostgreSQL's folder of the stack in $dir, as `start` chose it
	if [ -f "$dir/pg.home" ]; then cat "$dir/pg.home"; else echo "$dir/pg"; fi
}

pg_home_new() { # the folder for `start` ($dir resolved): see the header
	if [ -f "$dir/pg.home" ]; then cat "$dir/pg.home"; return; fi
	if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$dir"; then
		echo "$dir/pg"; return
	fi
	local pg; pg="$PG_OUTSIDE/$(printf '%s' "$dir" | sha256sum | cut -c1-16)"
	mkdir -p "$PG_OUTSIDE"
	chmod 755 "$PG_OUTSIDE"
	# no DIR/pg.home: DIR is new, so files left from an earlier DIR of that name are stale
	rm -rf "$pg"
	mkdir -m 700 "$pg"
	echo "$dir" >"$pg/stack-dir"
	echo "$pg"
}

start() {
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	chmod 755 "$dir"
	local pgport rport
	pgport=$(free_port); rport=$(free_port)
	while [ "$rport" = "$pgport" ]; do rport=$(free_port); done
	mkdir -p "$dir/redis"
	local pg; pg=$(pg_home_new)
	mkdir -p "$pg/run"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres:postgres "$pg" "$pg/run"
		runuser -u postgres -- test -w "$pg/run" || {
			echo "stack.sh: the postgres user cannot write '$pg'" >&2; exit 1; }
	fi
	echo "$pg" >"$dir/pg.home"
	if [ ! -f "$pg/data/PG_VERSION" ]; then
		as_pg "$PGBIN/initdb" --nosync -D "$pg/data" -U postgres --auth=trust -E UTF8 \
			--locale=C >"$pg/initdb.log" 2>&1 || { cat "$pg/initdb.log" >&2; exit 1; }
	fi
	# STACK_PG_FAKETIME (the calendar suite): PostgreSQL alone runs on a clock
	# moved by libfaketime's FAKETIME offset (e.g. "+126230400"); Redis keeps
	# the real clock (libfaketime does not work inside it)
	local fake=()
	if [ -n "${STACK_PG_FAKETIME:-}" ]; then
		local lib; lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -1)
		[ -n "$lib" ] || { echo "stack.sh: STACK_PG_FAKETIME needs libfaketime (apt-get install faketime)" >&2; exit 1; }
		fake=(env "LD_PRELOAD=$lib" "FAKETIME=$STACK_PG_FAKETIME" FAKETIME_DONT_FAKE_MONOTONIC=1)
	fi
	as_pg "${fake[@]}" "$PGBIN/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w -t 60 start \
		-o "-c listen_addresses=127.0.0.1 -c port=$pgport -c unix_socket_directories=$pg/run \
		    -c fsync=$fsync -c synchronous_commit=on -c full_page_writes=$fsync \
		    -c max_connections=200 -c shared_buffers=128MB" >/dev/null \
		|| { cat "$pg/postgres.log" >&2; exit 1; }
	head -1 "$pg/data/postmaster.pid" >"$dir/pg.pid"
	redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no --dir "$dir/redis" \
		--daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis/redis.log" >/dev/null
	wait_for 20 redis-cli -h 127.0.0.1 -p "$rport" ping || { cat "$dir/redis/redis.log" >&2; exit 1; }
	wait_for 30 "$PGBIN/pg_isready" -h 127.0.0.1 -p "$pgport" || exit 1
	local psql="$PGBIN/psql -h 127.0.0.1 -p $pgport -U postgres -v ON_ERROR_STOP=1 -q"
	$psql -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing_owner') THEN CREATE ROLE billing_owner LOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing') THEN CREATE ROLE billing LOGIN; END IF;
END \$\$;
SQL
	if ! $psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='billing'" | grep -q 1; then
		$psql -d postgres -c "CREATE DATABASE billing OWNER billing_owner" >/dev/null
		$psql -d billing -c "REVOKE CREATE ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO billing_owner" >/dev/null
	fi
	cat >"$dir/env" <<ENV
STACK_DIR=$dir
PG_HOME=$pg
PGPORT=$pgport
REDIS_PORT=$rport
BILLING_PG="host=127.0.0.1 port=$pgport dbname=billing user=billing"
BILLING_PG_OWNER="host=127.0.0.1 port=$pgport dbname=billing user=billing_owner"
PG_SUPER="host=127.0.0.1 port=$pgport dbname=billing user=postgres"
BILLING_REDIS=127.0.0.1:$rport
ENV
	echo "stack: postgres 127.0.0.1:$pgport (files in $pg) redis 127.0.0.1:$rport under $dir" >&2
}

stop() {
	[ -d "$dir" ] || return 0
	if [ -f "$dir/redis.pid" ]; then
		local rp; rp=$(cat "$dir/redis.pid")
		kill "$rp" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$rp" 2>/dev/null || break; sleep 0.1; done
		rm -f "$dir/redis.pid"
	fi
	local pg; pg=$(pg_home)
	if [ -f "$pg/data/postmaster.pid" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
			|| { [ -f "$dir/pg.pid" ] && kill -9 "$(cat "$dir/pg.pid")" 2>/dev/null || true; }
	fi
	rm -f "$dir/pg.pid"
}

remove() {
	[ -d "$dir" ] || return 0
	dir=$(cd "$dir" && pwd)
	local pg; pg=$(pg_home)
	stop
	case "$pg" in "$PG_OUTSIDE"/*) rm -rf "$pg" ;; esac
	rm -rf "$dir"
}

case "$cmd" in
start) start ;;
stop) stop ;;
remove) remove ;;
status) [ -f "$dir/env" ] && cat "$dir/env" ;;
*) echo "stack.sh: unknown command '$cmd'" >&2; exit 2 ;;
esac
