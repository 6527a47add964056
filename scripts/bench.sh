#!/usr/bin/env bash
# bench.sh: `make bench`.  Starts its own PostgreSQL 15 (fsync on,
# synchronous_commit on), Redis and billingd (-O2) on free loopback ports,
# seeds accounts through the HTTP API, runs every scenario and its baseline
# in this one invocation, prints one table and writes
# bench/results/<timestamp>.json.  Nothing is asserted: the table says which
# goals hold.  Stops everything it started (by PID) on any exit.
#
# Environment: BENCH_SECONDS (measured seconds per scenario, default 12),
# BENCH_WARMUP (2), BENCH_ACCOUNTS (1000), BENCH_IDLE_CONNS (10000),
# BENCH_ONLY (comma list of: kernels,authorize,wrk,cluster,usage,two,batch,export,idle,ha),
# BENCH_DIR (scratch, default var/bench), BENCH_KEEP=1 (leave the stack and
# billingd running at the end, for perf; prints how to stop them).
# What each scenario does and why: tools/bench/README.
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=${BENCH_TOOLS_DIR:-$ROOT/build/bench}
BIN=${BILLING_BIN:-$ROOT/bin}
SECS=${BENCH_SECONDS:-12}
WARM=${BENCH_WARMUP:-2}
ACCTS=${BENCH_ACCOUNTS:-1000}
IDLE=${BENCH_IDLE_CONNS:-10000}
ONLY=${BENCH_ONLY:-kernels,authorize,wrk,cluster,usage,two,batch,export,idle,ha}
WORK=${BENCH_DIR:-$ROOT/var/bench}
KEEP=${BENCH_KEEP:-0}
# concurrency of each scenario (the baselines use the same)
C_AUTH=32 C_USAGE=64 C_BATCH=4 C_CHAT=2
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

for t in loadgen bare_server copybench kernels; do
	[ -x "$TOOLS/$t" ] || { echo "bench: '$TOOLS/$t' is missing: run 'make bench'" >&2; exit 1; }
done
for t in billingd billing-admin ledger; do
	[ -x "$BIN/$t" ] || { echo "bench: '$BIN/$t' is missing: run 'make bench'" >&2; exit 1; }
done
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
log() { echo "bench: $*" >&2; }

# 10,000 idle connections need as many descriptors in billingd and in loadgen
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((IDLE + 300)) ]; then
	IDLE=$((NOFILE - 300))
	log "open-file limit $NOFILE: the idle scenario holds $IDLE connections"
fi

STACK=$WORK/stack
RUN=$WORK/run-$STAMP
mkdir -p "$WORK" "$RUN" "$ROOT/bench/results"
WORK=$(cd "$WORK" && pwd)
RUN=$(cd "$RUN" && pwd)
# the runs before this one: keep the last three
ls -d "$WORK"/run-* 2>/dev/null | sort | head -n -4 | xargs -r rm -rf
# private copies: a rebuild of bin/ during the run changes nothing here, and
# perf still finds the symbols of the running billingd
mkdir -p "$RUN/bin"
cp "$BIN/billingd" "$BIN/billing-admin" "$BIN/ledger" "$TOOLS/loadgen" "$TOOLS/bare_server" "$TOOLS/copybench" \
	"$TOOLS/kernels" "$RUN/bin/"
# the report names binaries that are not this checkout's bin/ (BILLING_BIN)
[ "$(cd "$BIN" && pwd -P)" != "$(cd "$ROOT" && pwd -P)/bin" ] && export BENCH_BINARIES_FROM="$(cd "$BIN" && pwd -P)"
BIN=$RUN/bin TOOLS=$RUN/bin

BPID="" B2PID="" BARE_PID="" CHAT_PID="" HPID="" CPID=""
started_stack=0 started_ha=0 started_cluster=0
HA=$WORK/ha CL=$WORK/cluster
stop_pid() { # stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL
	local p=$1
	[ -n "$p" ] || return 0
	kill "$p" 2>/dev/null || return 0
	for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_pid "$CHAT_PID"
	stop_pid "$BARE_PID"
	if [ "$KEEP" = 1 ] && [ $rc -eq 0 ]; then
		log "BENCH_KEEP=1: billingd (pid $BPID) and the stack under $STACK are still running;"
		log "  stop them with: kill $BPID; scripts/stack.sh stop $STACK"
		exit 0
	fi
	stop_pid "$B2PID"
	stop_pid "$BPID"
	stop_pid "$HPID"
	stop_pid "$CPID"
	if [ $started_cluster = 1 ]; then
		scripts/redis_cluster.sh stop "$CL" || true
		rm -rf "$CL"
	fi
	if [ $started_ha = 1 ]; then
		scripts/ha_stack.sh stop "$HA" || true
		rm -rf "$HA"
	fi
	if [ $started_stack = 1 ]; then
		# ~2 GB of WAL and tables (also when outside $STACK); the results are in $RUN and bench/results
		scripts/stack.sh remove "$STACK" || true
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	$PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ---- stack ----
scripts/stack.sh remove "$STACK" 2>/dev/null || true
started_stack=1
scripts/stack.sh start "$STACK" --fsync
. "$STACK/env"
PSQL="psql -X -q -v ON_ERROR_STOP=1"
sql() { $PSQL "$PG_SUPER" -At -c "$1"; }

mkdir -p "$WORK/etc"
ETC=$WORK/etc
GW=gw-bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '# bench\n%s\n' "$GW" > "$ETC/gateway.tokens"
printf '# bench\nadmin-bench-%s\n' "$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$ETC/admin.tokens"
chmod 600 "$ETC"/*.tokens
BPORT=$(free_port)
CONF=$RUN/billingd.conf
cat > "$CONF" <<CONF
# written by scripts/bench.sh
listen = 127.0.0.1:$BPORT
pg = $BILLING_PG
pg_owner = $BILLING_PG_OWNER
redis = $BILLING_REDIS
gateway_tokens_file = $ETC/gateway.tokens
admin_tokens_file = $ETC/admin.tokens
signing_key_file = $ETC/ledger.key
key_pepper_file = $ETC/key.pepper
migrations_dir = $ROOT/migrations
tokenizer_file = $ROOT/data/tokenizer.json
model_file = $ROOT/data/internal-tiny.bin
CONF
admin() { "$BIN/billing-admin" --config "$CONF" --operator bench "$@"; }
admin migrate >/dev/null
[ -f "$ETC/ledger.key" ] || admin keygen --out "$ETC/ledger.key" >/dev/null
admin price set --model deepseek-chat --input 2 --cached-input 0.5 --output 8 \
	--effective 2026-01-01T00:00:00Z --window 16:30-00:30=5000 >/dev/null
admin price set --model internal-tiny --input 0.1 --cached-input 0.1 --output 0.2 \
	--effective 2026-01-01T00:00:00Z >/dev/null

"$BIN/billingd" --config "$CONF" >"$RUN/billingd.log" 2>&1 &
BPID=$!
lg() { "$TOOLS/loadgen" --port "$BPORT" --token "$GW" "$@"; }
wait_http() { # wait_http PORT PATH SECONDS
	for _ in $(seq 1 $(($3 * 10))); do
		"$TOOLS/loadgen" --port "$1" --method GET --path "$2" --once >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
wait_http "$BPORT" /readyz 60 || { cat "$RUN/billingd.log" >&2; log "billingd did not become ready"; exit 1; }
log "billingd pid $BPID on 127.0.0.1:$BPORT; postgres 127.0.0.1:$PGPORT (fsync on); redis $BILLING_REDIS"

# ---- accounts: through the API, each with the signup grant and a top-up ----
t0=$(date +%s.%N)
lg --path /v1/accounts --body '{"external_id":"bench-{seq}"}' -c 8 -n "$ACCTS" -d 600 --label seed-accounts \
	>"$RUN/seed_accounts.json"
read -r A_LO A_HI A_N <<<"$(sql "SELECT min(account_id), max(account_id), count(*) FROM customers" | tr '|' ' ')"
[ "$A_N" -ge 1 ] || { log "no accounts were created"; cat "$RUN/seed_accounts.json" >&2; exit 1; }
[ $((A_HI - A_LO + 1)) -eq "$A_N" ] || { log "account ids are not contiguous ($A_LO..$A_HI, $A_N)"; exit 1; }
lg --path /v1/topups --seq-start "$A_LO" -n "$A_N" -c 8 -d 600 --label seed-topups \
	--body '{"account_id":{seq},"amount_nanos":1000000000000000,"payment_ref":"bench-topup-{seq}"}' \
	>"$RUN/seed_topups.json"
APIKEY=$(lg --once --path /v1/keys --body "{\"account_id\":$A_LO,\"name\":\"bench-chat\"}" |
	sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p')
[ -n "$APIKEY" ] || { log "cannot create an API key"; exit 1; }
log "seeded $A_N accounts ($A_LO..$A_HI), each with the signup grant and a top-up, in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"

# ---- baseline tables (schema owned by the superuser; the product's tables are untouched) ----
$PSQL "$PG_SUPER" >/dev/null <<SQL
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_gw CASCADE;
CREATE SCHEMA bench_gw;
-- what a typical LLM gateway keeps: a balance row per account, a log row per call
CREATE TABLE bench_gw.balances (account_id bigint PRIMARY KEY, balance_nanos bigint NOT NULL);
INSERT INTO bench_gw.balances SELECT g, 1000000000000000 FROM generate_series($A_LO, $A_HI) g;
CREATE TABLE bench_gw.usage_log (
    request_id text PRIMARY KEY, account_id bigint NOT NULL, model text NOT NULL,
    input_tokens bigint NOT NULL, cached_input_tokens bigint NOT NULL, output_tokens bigint NOT NULL,
    cost_nanos bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
DROP SCHEMA IF EXISTS bench_copy CASCADE;
CREATE SCHEMA bench_copy;
CREATE TABLE bench_copy.journal (LIKE public.journal INCLUDING ALL);
CREATE TABLE bench_copy.postings (LIKE public.postings INCLUDING ALL);
CREATE TABLE bench_copy.usage_records (LIKE public.usage_records INCLUDING ALL);
ANALYZE;
SQL

checkpoint() { sql "CHECKPOINT" >/dev/null; sleep 0.5; }
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

AUTH_BODY='{"request_id":"bench-{run}-a{seq}","account_id":{acct},"model":"deepseek-chat","input_tokens":1200,"max_output_tokens":1000}'
USAGE_BODY='{"request_id":"bench-{run}-u{seq}","account_id":{acct},"model":"deepseek-chat","input_tokens":1200,"cached_input_tokens":200,"output_tokens":300,"started_at":"{now}"}'
CHAT_BODY='{"model":"internal-tiny","messages":[{"role":"user","content":"Write a short poem about double-entry bookkeeping."}],"max_tokens":64,"temperature":0}'
TIMED=(-d "$SECS" --warmup "$WARM" --acct-lo "$A_LO" --acct-hi "$A_HI")

start_bare() {
	BARE_PORT=$(free_port)
	"$TOOLS/bare_server" 127.0.0.1 "$BARE_PORT" &
	BARE_PID=$!
	wait_http "$BARE_PORT" / 10 || { log "bare_server did not start"; exit 1; }
}
stop_bare() { stop_pid "$BARE_PID"; BARE_PID=""; }
bare() { "$TOOLS/loadgen" --port "$BARE_PORT" --token "$GW" "$@"; }

# ---- kernels: tokenizer and model on one thread, nothing else running ----
if want kernels; then
	log "kernels: tokenizer MB/s, model tokens/s"
	"$TOOLS/kernels" "$ROOT/data/tokenizer.json" "$ROOT/data/internal-tiny.bin" \
		"$ROOT/tests/fixtures/tokenizer/cases.json" 4 >"$RUN/kernels.json"
fi

# ---- authorize vs bare evhttp; then with chat calls running ----
if want authorize; then
	start_bare
	log "authorize: bare evhttp baseline, $C_AUTH connections"
	bare --path /v1/authorize --body "$AUTH_BODY" -c $C_AUTH "${TIMED[@]}" --label bare-authorize >"$RUN/bare_authorize.json"
	stop_bare
	log "authorize: billingd, $C_AUTH connections"
	lg --path /v1/authorize --body "$AUTH_BODY" -c $C_AUTH "${TIMED[@]}" --label authorize >"$RUN/authorize.json"
	# how the decisions were grouped into Redis calls (counters reach /metrics every second)
	sleep 1.1
	lg --once --method GET --path /metrics >"$RUN/authorize_metrics.txt" 2>/dev/null || true
	log "authorize: billingd while $C_CHAT chat calls run on the embedded model"
	"$TOOLS/loadgen" --port "$BPORT" --token "$APIKEY" --path /internal/v1/chat/completions --body "$CHAT_BODY" \
		-c $C_CHAT -d $((SECS + WARM + 1)) --warmup 0 --sum-field completion_tokens --label chat >"$RUN/chat.json" &
	CHAT_PID=$!
	sleep 1
	lg --path /v1/authorize --body "$AUTH_BODY" -c $C_AUTH "${TIMED[@]}" --label authorize-during-chat \
		>"$RUN/authorize_chat.json"
	# the time the model's workers paused for billing (inference_busy_share)
	lg --once --method GET --path /metrics >"$RUN/authorize_chat_metrics.txt" 2>/dev/null || true
	wait "$CHAT_PID" || true
	CHAT_PID=""
fi

# ---- authorize vs bare evhttp under wrk (issue 16's second load generator) ----
# wrk -t2, the same connections, every request its own id
# (tools/bench/wrk_authorize.lua): one hot account, then the seeded accounts
# in turn; the bare server under the same script.  A warm-up of WARM seconds
# first (wrk has none of its own); report.py reads wrk's --latency output.
if want wrk; then
	if ! command -v wrk >/dev/null; then
		log "wrk: not installed (apt-get install wrk; make bench's deps install it): skipped"
	else
		wrk_one() { # LABEL PORT HOT
			local port=$2 env=(TOKEN="$GW" ACCOUNT_LO="$A_LO" ACCOUNTS="$A_N" HOT="$3")
			env "${env[@]}" RUN="$STAMP-$1-w" wrk -t2 -c$C_AUTH -d"${WARM}s" -s "$ROOT/tools/bench/wrk_authorize.lua" \
				"http://127.0.0.1:$port/v1/authorize" >/dev/null 2>&1 || true
			env "${env[@]}" RUN="$STAMP-$1" wrk -t2 -c$C_AUTH -d"${SECS}s" --latency \
				-s "$ROOT/tools/bench/wrk_authorize.lua" "http://127.0.0.1:$port/v1/authorize" >"$RUN/$1.txt" 2>&1 || true
			$PY "$ROOT/tools/bench/report.py" wrk "$RUN/$1.txt" "$1" $C_AUTH >"$RUN/$1.json"
		}
		start_bare
		log "wrk: bare evhttp baseline, $C_AUTH connections"
		wrk_one wrk-bare "$BARE_PORT" 0
		stop_bare
		log "wrk: authorize, one hot account, $C_AUTH connections"
		wrk_one wrk-hot "$BPORT" 1
		log "wrk: authorize, $A_N accounts in turn, $C_AUTH connections"
		wrk_one wrk-accounts "$BPORT" 0
	fi
fi

# ---- authorize on a three-master Redis Cluster vs single Redis, same load ----
# A second billingd (its own instance_id) on the same PostgreSQL, its Redis a
# three-master cluster (scripts/redis_cluster.sh, as `make integration-cluster`
# starts it); the same authorize load against the first billingd (single
# Redis) and then against it, back to back; each warms up its own mirrors.
if want cluster; then
	scripts/redis_cluster.sh stop "$CL" 2>/dev/null || true
	rm -rf "$CL"
	started_cluster=1
	scripts/redis_cluster.sh start "$CL"
	CSEEDS=$(. "$CL/env" && echo "$CLUSTER_SEEDS")
	CPORT=$(free_port)
	sed -e "s/^listen = .*/listen = 127.0.0.1:$CPORT/" -e "s|^redis = .*|redis = $CSEEDS|" "$CONF" \
		>"$RUN/billingd-cluster.conf"
	echo "instance_id = billingd-cluster" >>"$RUN/billingd-cluster.conf"
	"$BIN/billingd" --config "$RUN/billingd-cluster.conf" >"$RUN/billingd-cluster.log" 2>&1 &
	CPID=$!
	wait_http "$CPORT" /readyz 60 ||
		{ cat "$RUN/billingd-cluster.log" >&2; log "billingd on the cluster did not become ready"; exit 1; }
	log "cluster: authorize, $C_AUTH connections, billingd on single Redis"
	lg --path /v1/authorize --body "$AUTH_BODY" -c $C_AUTH "${TIMED[@]}" --label cluster-single \
		>"$RUN/cluster_single.json"
	log "cluster: authorize, $C_AUTH connections, billingd on the 3-master Redis Cluster ($CSEEDS)"
	"$TOOLS/loadgen" --port "$CPORT" --token "$GW" --path /v1/authorize --body "$AUTH_BODY" -c $C_AUTH \
		"${TIMED[@]}" --label cluster >"$RUN/cluster.json"
	grep -E 'level=(warn|error)' "$RUN/billingd-cluster.log" | head -5 >&2 || true
	stop_pid "$CPID"
	CPID=""
	scripts/redis_cluster.sh stop "$CL" || true
	rm -rf "$CL"
	started_cluster=0
fi

# ---- single-record usage (durable) vs bare evhttp and vs one transaction per record ----
if want usage; then
	start_bare
	log "usage: bare evhttp baseline, $C_USAGE connections"
	bare --path /v1/usage --body "$USAGE_BODY" -c $C_USAGE "${TIMED[@]}" --label bare-usage >"$RUN/bare_usage.json"
	stop_bare
	checkpoint
	log "usage: billingd, one record per request, $C_USAGE connections"
	lg --path /v1/usage --body "$USAGE_BODY" -c $C_USAGE "${TIMED[@]}" --label usage >"$RUN/usage.json"
	checkpoint
	log "usage: pgbench, one transaction per record (UPDATE balance + INSERT log), $C_USAGE clients"
	mkdir -p "$RUN/pgbench"
	( cd "$RUN/pgbench" && pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -n -M prepared -c $C_USAGE -j 1 \
		-T $((SECS + WARM)) -D lo="$A_LO" -D hi="$A_HI" -f "$ROOT/bench/gateway_usage.sql" \
		-l --log-prefix=pgb billing >"$RUN/pgbench.out" 2>&1 ) || { cat "$RUN/pgbench.out" >&2; exit 1; }
	$PY "$ROOT/tools/bench/report.py" pgbench "$RUN/pgbench" "$WARM" "$SECS" $C_USAGE >"$RUN/pgbench.json"
fi

# ---- two billingd instances on the same PostgreSQL and Redis ----
# Each figure comes from two load generators with half the connections each:
# both against instance 1 (one instance), then one against each (two
# instances), so only the number of billingd processes differs.
pair() { # pair LABEL PORT_A PORT_B CONNS LOADGEN-ARGS...: two loadgens at once
	local label=$1 pa=$2 pb=$3 c=$4 pid
	shift 4
	"$TOOLS/loadgen" --port "$pa" --token "$GW" --run "${label}a" "$@" -c $((c / 2)) "${TIMED[@]}" \
		--label "$label-a" >"$RUN/$label-a.json" &
	pid=$!
	"$TOOLS/loadgen" --port "$pb" --token "$GW" --run "${label}b" "$@" -c $((c - c / 2)) "${TIMED[@]}" \
		--label "$label-b" >"$RUN/$label-b.json"
	wait "$pid"
}
mixed() { # mixed LABEL USAGE_PORT AUTHORIZE_PORT: usage and authorize at once, same accounts
	local label=$1 pu=$2 pa=$3 pid
	"$TOOLS/loadgen" --port "$pu" --token "$GW" --run "${label}u" --path /v1/usage --body "$USAGE_BODY" \
		-c $((C_USAGE / 2)) "${TIMED[@]}" --label "$label-usage" >"$RUN/$label-usage.json" &
	pid=$!
	"$TOOLS/loadgen" --port "$pa" --token "$GW" --run "${label}a" --path /v1/authorize --body "$AUTH_BODY" \
		-c $((C_AUTH / 2)) "${TIMED[@]}" --label "$label-authorize" >"$RUN/$label-authorize.json"
	wait "$pid"
}
if want two; then
	# the gateway's real mix: usage and authorize of the same accounts at
	# once, on one instance alone (billingd-2 not yet started), later usage
	# on one and authorize on the other (each usage commit is announced to
	# the other instance: docs/billingd.md)
	log "two: usage and authorize at once on one instance"
	checkpoint
	mixed mix1 "$BPORT" "$BPORT"
	B2PORT=$(free_port)
	sed -e "s/^listen = .*/listen = 127.0.0.1:$B2PORT/" "$CONF" >"$RUN/billingd2.conf"
	echo "instance_id = billingd-2" >>"$RUN/billingd2.conf"
	"$BIN/billingd" --config "$RUN/billingd2.conf" >"$RUN/billingd2.log" 2>&1 &
	B2PID=$!
	wait_http "$B2PORT" /readyz 60 || { cat "$RUN/billingd2.log" >&2; log "billingd-2 did not become ready"; exit 1; }
	log "two: authorize, $C_AUTH connections on one instance, then split over two"
	pair two1-authorize "$BPORT" "$BPORT" $C_AUTH --path /v1/authorize --body "$AUTH_BODY"
	pair two2-authorize "$BPORT" "$B2PORT" $C_AUTH --path /v1/authorize --body "$AUTH_BODY"
	checkpoint
	log "two: usage, $C_USAGE connections on one instance, then split over two"
	pair two1-usage "$BPORT" "$BPORT" $C_USAGE --path /v1/usage --body "$USAGE_BODY"
	checkpoint
	pair two2-usage "$BPORT" "$B2PORT" $C_USAGE --path /v1/usage --body "$USAGE_BODY"
	log "two: usage on one instance and authorize on the other, at once"
	checkpoint
	mixed mix2 "$BPORT" "$B2PORT"
	grep -E 'level=(warn|error)' "$RUN/billingd2.log" | head -5 >&2 || true
	stop_pid "$B2PID"
	B2PID=""
fi

# ---- batch usage (1000 records a request) vs COPY of the same rows ----
if want batch; then
	checkpoint
	log "batch: billingd, 1000 records a request, $C_BATCH connections"
	lg --path /v1/usage/batch --batch 1000 --body "$USAGE_BODY" -c $C_BATCH "${TIMED[@]}" --label batch \
		>"$RUN/batch.json"
	checkpoint
	log "batch: COPY baseline, 1000 records a transaction, $C_BATCH connections"
	"$TOOLS/copybench" "$PG_SUPER" -c $C_BATCH -d "$SECS" --warmup "$WARM" --records 1000 \
		--accounts "$A_N" --label copy >"$RUN/copy.json"
fi

# ---- ledger export vs COPY (SELECT ...) TO STDOUT of the same rows ----
if want export; then
	FROM=$(date -u -d '-2 days' +%Y-%m-%d)
	TO=$(date -u -d '+2 days' +%Y-%m-%d)
	checkpoint
	if "$BIN/ledger" export --help >/dev/null 2>&1; then
		log "export: ledger export --format csv"
		t0=$(date +%s%N)
		if "$BIN/ledger" --config "$CONF" --operator bench export --from "$FROM" --to "$TO" --format csv \
			--out "$RUN/export.csv" --force --quiet --json >"$RUN/export.out" 2>"$RUN/export.err"; then
			t1=$(date +%s%N)
			rows=$(sed -n 's/.*"rows": *\([0-9]*\).*/\1/p; s/^exported \([0-9]*\) rows.*/\1/p' "$RUN/export.out" | head -1)
			echo "{\"available\":true,\"rows\":${rows:-0},\"seconds\":$(echo "$t0 $t1" | awk '{printf "%.3f", ($2-$1)/1e9}'),\"bytes\":$(stat -c %s "$RUN/export.csv")}" >"$RUN/export.json"
		else
			log "export failed: $(head -c 300 "$RUN/export.err")"
			echo "{\"available\":false,\"reason\":\"ledger export failed\"}" >"$RUN/export.json"
		fi
	else
		log "export: 'ledger export' is not in this build: n/a"
		echo '{"available":false,"reason":"ledger export is not in this build"}' >"$RUN/export.json"
	fi
	checkpoint
	log "export: COPY (SELECT ...) TO STDOUT, csv"
	t0=$(date +%s%N)
	$PSQL "$BILLING_PG" -c "COPY (
	  SELECT j.txn_id, j.created_at, j.kind, j.account_id, p.line, p.ledger_account_id, la.type, g.grant_id,
	         p.amount, 'CNY', j.details::json->>'request_id', j.details::json->>'model',
	         j.details::json->>'input_tokens', j.details::json->>'cached_input_tokens',
	         j.details::json->>'output_tokens', j.details::json->>'price_version', j.writer, j.seq,
	         j.idempotency_key, j.actor, j.reason, j.details, encode(j.prev_hash, 'hex'), encode(j.hash, 'hex')
	    FROM journal j
	    JOIN postings p ON p.txn_id = j.txn_id AND p.created_at = j.created_at
	    JOIN ledger_accounts la ON la.ledger_account_id = p.ledger_account_id
	    LEFT JOIN grants g ON g.ledger_account_id = p.ledger_account_id
	   WHERE j.created_at >= '$FROM' AND j.created_at < '$TO'
	     AND p.created_at >= '$FROM' AND p.created_at < '$TO'
	   ORDER BY j.txn_id, p.line) TO STDOUT WITH (FORMAT csv, HEADER)" >"$RUN/copy_to.csv"
	t1=$(date +%s%N)
	rows=$(($(wc -l <"$RUN/copy_to.csv") - 1))
	echo "{\"rows\":$rows,\"seconds\":$(echo "$t0 $t1" | awk '{printf "%.3f", ($2-$1)/1e9}'),\"bytes\":$(stat -c %s "$RUN/copy_to.csv")}" >"$RUN/copy_to.json"
	rm -f "$RUN/export.csv" "$RUN/copy_to.csv"
fi

# ---- resident memory while holding idle connections ----
if want idle; then
	log "idle: billingd holding $IDLE idle keep-alive connections"
	"$TOOLS/loadgen" --port "$BPORT" --method GET --path /healthz --idle "$IDLE" --hold 5 --rss-pid "$BPID" \
		--label idle >"$RUN/idle.json"
	start_bare
	log "idle: bare evhttp holding $IDLE idle keep-alive connections"
	"$TOOLS/loadgen" --port "$BARE_PORT" --method GET --path /healthz --idle "$IDLE" --hold 5 \
		--rss-pid "$BARE_PID" --label bare-idle >"$RUN/bare_idle.json"
	stop_bare
fi

# ---- usage durable with a synchronous standby: its own stack (pg_auto_failover:
# monitor, primary, two synchronous standbys, fsync on), its own billingd with
# pg_standby_confirm_ms, the same load as `usage` above ----
if want ha; then
	log "ha: starting scripts/ha_stack.sh (monitor + primary + 2 synchronous standbys, fsync on)"
	scripts/ha_stack.sh stop "$HA" 2>/dev/null || true
	rm -rf "$HA"
	started_ha=1
	scripts/ha_stack.sh start "$HA" --fsync
	HPORT=$(free_port)
	(
		. "$HA/env"
		sed -e "s/^listen = .*/listen = 127.0.0.1:$HPORT/" -e "s|^pg = .*|pg = $BILLING_PG|" \
			-e "s|^pg_owner = .*|pg_owner = $BILLING_PG_OWNER|" -e "s|^redis = .*|redis = $BILLING_REDIS|" "$CONF"
		echo "pg_standby_confirm_ms = $BILLING_PG_STANDBY_CONFIRM_MS"
	) >"$RUN/billingd-ha.conf"
	hadmin() { "$BIN/billing-admin" --config "$RUN/billingd-ha.conf" --operator bench "$@"; }
	hadmin migrate >/dev/null
	hadmin price set --model deepseek-chat --input 2 --cached-input 0.5 --output 8 \
		--effective 2026-01-01T00:00:00Z --window 16:30-00:30=5000 >/dev/null
	"$BIN/billingd" --config "$RUN/billingd-ha.conf" >"$RUN/billingd-ha.log" 2>&1 &
	HPID=$!
	wait_http "$HPORT" /readyz 60 || { cat "$RUN/billingd-ha.log" >&2; log "billingd-ha did not become ready"; exit 1; }
	hlg() { "$TOOLS/loadgen" --port "$HPORT" --token "$GW" "$@"; }
	hlg --path /v1/accounts --body '{"external_id":"bench-{seq}"}' -c 8 -n "$ACCTS" -d 600 --label ha-seed-accounts \
		>"$RUN/ha_seed_accounts.json"
	read -r H_LO H_HI H_N <<<"$($PSQL "$(. "$HA/env"; echo "$PG_SUPER")" -At -c \
		"SELECT min(account_id), max(account_id), count(*) FROM customers" | tr '|' ' ')"
	hlg --path /v1/topups --seq-start "$H_LO" -n "$H_N" -c 8 -d 600 --label ha-seed-topups \
		--body '{"account_id":{seq},"amount_nanos":1000000000000000,"payment_ref":"bench-topup-{seq}"}' \
		>"$RUN/ha_seed_topups.json"
	log "ha: usage, one record per request, $C_USAGE connections, commits on the primary and a standby"
	hlg --path /v1/usage --body "$USAGE_BODY" -c $C_USAGE -d "$SECS" --warmup "$WARM" --acct-lo "$H_LO" \
		--acct-hi "$H_HI" --label ha-usage >"$RUN/ha_usage.json"
	grep -E 'level=(warn|error)' "$RUN/billingd-ha.log" | head -5 >&2 || true
	stop_pid "$HPID"
	HPID=""
	scripts/ha_stack.sh stop "$HA" || true
	rm -rf "$HA"
	started_ha=0
fi

# ---- the table ----
echo "{\"seconds\":$SECS,\"warmup\":$WARM,\"accounts\":$A_N,\"idle_conns\":$IDLE,\"c_auth\":$C_AUTH,\"c_usage\":$C_USAGE,\"c_batch\":$C_BATCH,\"c_chat\":$C_CHAT,\"billingd_rss_end_kb\":$(rss_kb "$BPID"),\"loadavg_start\":$LOAD_START,\"loadavg_end\":$(cut -d' ' -f1 /proc/loadavg),\"stamp\":\"$STAMP\"}" >"$RUN/meta.json"
grep -E 'level=(warn|error)' "$RUN/billingd.log" | head -5 >&2 || true
$PY "$ROOT/tools/bench/report.py" table "$RUN" "$ROOT/bench/results/$STAMP.json"
