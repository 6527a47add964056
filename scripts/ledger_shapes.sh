#!/usr/bin/env bash
# ledger_shapes.sh: what a usage record costs PostgreSQL in two shapes of the
# books, measured side by side (issue 15, the subledger lever).  Not part of
# `make bench`; needs bin/billing-admin (`make`).
#
#   today      per record: one journal row (+ its key row), two postings,
#              one usage record (bench/shapes/today.sql)
#   naive      the `make bench` baseline: one UPDATE of a balance row + one
#              INSERT of a log row per record, one commit each, with
#              SHAPES_NAIVE_CLIENTS clients (bench/gateway_usage.sql)
#   subledger  per commit batch: one journal row, postings summed per ledger
#              account; per record: one usage record, one usage_keys row
#              (bench/shapes/subledger.sql, schema subledger_schema.sql)
#
# For each round and shape: a fresh PostgreSQL 15 (fsync on, synchronous_commit
# on; scripts/stack.sh), the real migrations, 1000 customers, then pgbench with
# SHAPES_CLIENTS clients (the usage writer threads) each committing batches of
# SHAPES_N records for SHAPES_SECONDS.  Prints records/s and PostgreSQL CPU per
# record (user+system of the postmaster's children, from /proc): on a shared
# machine the throughput moves with the load, the CPU per record much less.
# Scratch under var/shapes, removed at the end; stops what it started.
#
# Environment: SHAPES_N (records per commit, 32), SHAPES_ACCOUNTS (distinct
# customers the records fall on, 1000; each client has its own, as each usage
# writer thread has its accounts), SHAPES_CLIENTS (2), SHAPES_SECONDS
# (15), SHAPES_ROUNDS (2; the shapes alternate), SHAPES_NAIVE_CLIENTS (64,
# as `make bench`), SHAPES (the shapes to run, in order: naive today subledger).
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${SHAPES_N:-32}
ACCTS=${SHAPES_ACCOUNTS:-1000}
C=${SHAPES_CLIENTS:-2}
SECS=${SHAPES_SECONDS:-15}
ROUNDS=${SHAPES_ROUNDS:-2}
NAIVE_C=${SHAPES_NAIVE_CLIENTS:-64}
SHAPE_LIST=${SHAPES:-naive today subledger}
WORK=$ROOT/var/shapes
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
[ -x "$ROOT/bin/billing-admin" ] || { echo "ledger_shapes: bin/billing-admin is missing: run 'make'" >&2; exit 1; }
[ "$ACCTS" -ge 1 ] && [ "$ACCTS" -le 1000 ] || { echo "ledger_shapes: SHAPES_ACCOUNTS must be 1..1000" >&2; exit 1; }
mkdir -p "$WORK"
S=""
cleanup() { [ -z "$S" ] || "$ROOT/scripts/stack.sh" remove "$S" >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU ticks of a PostgreSQL: the postmaster's own and its reaped children's,
# plus its live children's (checkpointer, WAL writer, ...)
pg_ticks() {
	local pm=$1 t=0 p
	t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
	for p in $(pgrep -P "$pm"); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}

# after pgbench, until the postmaster has reaped its client backends (their
# CPU counts only then)
wait_reaped() {
	local pm=$1 n0=$2
	for _ in $(seq 1 100); do
		[ "$(pgrep -P "$pm" | wc -l)" -le "$n0" ] && return 0
		sleep 0.1
	done
	echo "ledger_shapes: backends still running after pgbench" >&2
	return 1
}

HZ=$(getconf CLK_TCK)
printf '%-10s %5s %8s %6s %12s %14s %10s\n' shape round records/commit clients records/s "PG cpu us/rec" load
for round in $(seq 1 "$ROUNDS"); do
	for shape in $SHAPE_LIST; do
		S=$WORK/stack-$shape
		"$ROOT/scripts/stack.sh" remove "$S" >/dev/null 2>&1 || true
		"$ROOT/scripts/stack.sh" start "$S" --fsync >/dev/null
		. "$S/env"
		printf 'pg = %s\npg_owner = %s\nmigrations_dir = %s/migrations\n' "$BILLING_PG" "$BILLING_PG_OWNER" "$ROOT" \
			>"$S/conf"
		"$ROOT/bin/billing-admin" --config "$S/conf" --operator shapes migrate >/dev/null
		psql -X -q -v ON_ERROR_STOP=1 "$PG_SUPER" -f bench/shapes/setup.sql
		[ $shape = subledger ] && psql -X -q -v ON_ERROR_STOP=1 "$PG_SUPER" -f bench/shapes/subledger_schema.sql
		[ $shape = naive ] && psql -X -q -v ON_ERROR_STOP=1 "$PG_SUPER" -f bench/shapes/naive_schema.sql
		script=bench/shapes/$shape.sql n=$N c=$C table=usage_records
		[ $shape = naive ] && script=bench/gateway_usage.sql n=1 c=$NAIVE_C table=bench_gw.usage_log
		psql -X -q "$PG_SUPER" -c CHECKPOINT
		pm=$(cat "$S/pg.pid")
		sleep 0.5
		n0=$(pgrep -P "$pm" | wc -l)
		t0=$(pg_ticks "$pm")
		load=$(cut -d' ' -f1 /proc/loadavg)
		out=$(runuser -u postgres -- "$PGBENCH" -n -h 127.0.0.1 -p "$PGPORT" -U postgres -c "$c" -j "$C" -T "$SECS" \
			-D n="$n" -D accounts="$ACCTS" -D clients="$c" -D lo=1 -D hi="$ACCTS" -f "$script" billing 2>&1) ||
			{ echo "$out" >&2; exit 1; }
		wait_reaped "$pm" "$n0"
		t1=$(pg_ticks "$pm")
		recs=$(psql -X -At "$PG_SUPER" -c "SELECT count(*) FROM $table")
		bad=$(psql -X -At "$PG_SUPER" -c "SELECT count(*) FROM ledger_balance_mismatches()")
		[ "$bad" = 0 ] || { echo "ledger_shapes: $shape: $bad balance mismatches" >&2; exit 1; }
		tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
		awk -v s=$shape -v r="$round" -v n="$n" -v c="$c" -v tps="$tps" -v recs="$recs" -v dt=$((t1 - t0)) \
			-v hz="$HZ" -v l="$load" 'BEGIN {
				printf "%-10s %5d %8d %6d %12.0f %14.1f %10s\n", s, r, n, c, tps * n, dt / hz * 1e6 / recs, l }'
		"$ROOT/scripts/stack.sh" remove "$S" >/dev/null 2>&1 || true
		S=""
	done
done
