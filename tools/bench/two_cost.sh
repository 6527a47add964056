#!/usr/bin/env bash
# two_cost.sh: single records on two billingd instances of a kept bench
# stack (BENCH_KEEP=1 BENCH_ONLY=none make bench), for one or more billingd
# binaries in turn.
#
#   [SECS=10] [ROUNDS=1] tools/bench/two_cost.sh BINARY...
#
# For each round and BINARY: stop the kept billingd, start BINARY twice (the
# kept billingd.conf, and a copy on the next port with instance_id
# billingd-2), warm up 2 s, drive 32 connections of single records at each
# for SECS, print req/s of both, records per commit (both, and each
# instance's, from billing_commit_batch_records) and PostgreSQL CPU per
# request.  The second instance is stopped; the first is left running, as
# cost.sh leaves it.
set -u
cd "$(dirname "$0")/../.."
SECS=${SECS:-10}
run=$(ls -d var/bench/run-* | tail -1); conf=$run/billingd.conf
port=$(sed -n 's/^listen = 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$conf")
pgport=$(sed -n 's/^pg = .*port=\([0-9]*\) .*/\1/p' "$conf")
gw=$(tail -1 var/bench/etc/gateway.tokens); lg=$run/bin/loadgen
pm=$(pgrep -f -- "postgres -D .* -c port=$pgport( |\$)" | head -1)
port2=$((port + 7)); conf2=$run/billingd2-two.conf
sed -e "s/^listen = .*/listen = 127.0.0.1:$port2/" "$conf" > "$conf2"; echo "instance_id = billingd-2" >> "$conf2"
body='{"request_id":"two-{run}-u{seq}","account_id":{acct},"model":"deepseek-chat","input_tokens":1200,"cached_input_tokens":200,"output_tokens":300,"started_at":"{now}"}'
ticks() { awk '{s += $14 + $15} END {print s + 0}' "$@" 2>/dev/null || echo 0; }
pg_ticks() { ticks /proc/"$pm"/stat $(pgrep -P "$pm" | sed 's|.*|/proc/&/stat|'); }
commits() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^billing_commit_batch_records_(sum|count) / {printf "%s ", $2}'; }
up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done; return 1; }
for r in $(seq ${ROUNDS:-1}); do
for bin in "$@"; do
  for old in $(pgrep -f -- "--config $conf\$" || true) $(pgrep -f -- "--config $conf2\$" || true); do kill $old; while kill -0 $old 2>/dev/null; do sleep 0.1; done; done
  "$bin" --config "$conf" >>"$run/two-billingd.log" 2>&1 & p1=$!
  "$bin" --config "$conf2" >>"$run/two-billingd2.log" 2>&1 & p2=$!
  up $port; up $port2
  "$lg" --port $port --token "$gw" --path /v1/usage --body "$body" -c 32 -d 2 --acct-lo 1 --acct-hi 1000 --label warm >/dev/null & w=$!
  "$lg" --port $port2 --token "$gw" --path /v1/usage --body "$body" -c 32 -d 2 --acct-lo 1 --acct-hi 1000 --label warm >/dev/null; wait $w
  a0=$(commits $port); b0=$(commits $port2); p0=$(pg_ticks)
  "$lg" --port $port --token "$gw" --path /v1/usage --body "$body" -c 32 -d $SECS --acct-lo 1 --acct-hi 1000 --label two > /tmp/w8two-a.json & w=$!
  "$lg" --port $port2 --token "$gw" --path /v1/usage --body "$body" -c 32 -d $SECS --acct-lo 1 --acct-hi 1000 --label two > /tmp/w8two-b.json; wait $w
  p1t=$(pg_ticks); a1=$(commits $port); b1=$(commits $port2)
  na=$(sed -n 's/.*"ok":\([0-9]*\).*/\1/p' /tmp/w8two-a.json); nb=$(sed -n 's/.*"ok":\([0-9]*\).*/\1/p' /tmp/w8two-b.json)
  awk -v bin="$bin" -v a0="$a0" -v a1="$a1" -v b0="$b0" -v b1="$b1" -v na="$na" -v nb="$nb" -v pt=$((p1t - p0)) -v hz=$(getconf CLK_TCK) -v s=$SECS -v ld="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
    split(a0,x," "); split(a1,y," "); split(b0,u," "); split(b1,v," ");
    c = y[2]-x[2] + v[2]-u[2]; rec = y[1]-x[1] + v[1]-u[1];
    printf "two instances %-28s req/s=%.0f records/commit %.1f (%.1f, %.1f) postgres us/req %.0f (load %s)\n", bin, (na+nb)/s, rec/c, (y[1]-x[1])/(y[2]-x[2]), (v[1]-u[1])/(v[2]-u[2]), pt*1e6/hz/(na+nb), ld }'
  kill $p2; wait $p2 2>/dev/null
done
done
