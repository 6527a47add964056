#!/usr/bin/env bash
# make run: a local PostgreSQL and Redis under var/ (loopback only, free
# ports), migrations, a demo price list and demo accounts, then billingd in
# the foreground on 127.0.0.1:8080 (BILLING_LISTEN overrides).  Ctrl-C stops
# billingd and the servers this script started.
set -eu
cd "$(dirname "$0")/.."
VAR=${VAR_DIR:-$PWD/var}
mkdir -p "$VAR/etc"
VAR=$(cd "$VAR" && pwd)
STACK="$VAR/stack"
started=0
if [ -f "$STACK/pg.pid" ] && kill -0 "$(cat "$STACK/pg.pid")" 2>/dev/null; then
	echo "run: reusing the stack under $STACK" >&2
else
	scripts/stack.sh stop "$STACK" 2>/dev/null || true
	scripts/stack.sh start "$STACK" --fsync
	started=1
fi
cleanup() {
	[ -n "${bpid:-}" ] && kill "$bpid" 2>/dev/null && wait "$bpid" 2>/dev/null
	[ $started -eq 1 ] && scripts/stack.sh stop "$STACK"
}
trap cleanup EXIT INT TERM
. "$STACK/env"

# secrets of this local instance, made once
[ -f "$VAR/etc/gateway.tokens" ] || { echo "# gateway bearer tokens, one per line" > "$VAR/etc/gateway.tokens"; \
	echo "gw-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" >> "$VAR/etc/gateway.tokens"; }
[ -f "$VAR/etc/admin.tokens" ] || { echo "# admin bearer tokens" > "$VAR/etc/admin.tokens"; \
	echo "admin-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" >> "$VAR/etc/admin.tokens"; }
cat > "$VAR/billingd.conf" <<CONF
# written by scripts/run_local.sh
listen = ${BILLING_LISTEN:-127.0.0.1:8080}
pg = $BILLING_PG
pg_owner = $BILLING_PG_OWNER
redis = $BILLING_REDIS
gateway_tokens_file = $VAR/etc/gateway.tokens
admin_tokens_file = $VAR/etc/admin.tokens
signing_key_file = $VAR/etc/ledger.key
key_pepper_file = $VAR/etc/key.pepper
tokenizer_file = $PWD/data/tokenizer.json
model_file = $PWD/data/internal-tiny.bin
migrations_dir = $PWD/migrations
CONF
unset BILLING_LISTEN
admin() { bin/billing-admin --config "$VAR/billingd.conf" --operator make-run "$@"; }
admin migrate
[ -f "$VAR/etc/ledger.key" ] || admin keygen --out "$VAR/etc/ledger.key" >/dev/null

# demo price list (per 1M tokens, CNY), once
if ! admin price list --json | grep -q '"deepseek-chat"'; then
	admin price set --model deepseek-chat --input 2 --cached-input 0.5 --output 8 \
		--effective 2026-01-01T00:00:00Z --window 16:30-00:30=5000 >/dev/null
	admin price set --model deepseek-reasoner --input 4 --cached-input 1 --output 16 \
		--effective 2026-01-01T00:00:00Z --window 16:30-00:30=2500 --paid-only >/dev/null
	admin price set --model internal-tiny --input 0.1 --cached-input 0.1 --output 0.2 \
		--effective 2026-01-01T00:00:00Z >/dev/null
fi
# demo accounts, each with one API key written to var/etc/demo.keys
for who in alice bob; do
	id=$(admin account create --external-id "demo-$who" --json 2>/dev/null | sed -n 's/.*"account_id": \([0-9]*\).*/\1/p')
	if ! grep -q "^demo-$who " "$VAR/etc/demo.keys" 2>/dev/null; then
		key=$(admin key create --account "$id" --name demo --json | sed -n 's/.*"api_key": "\([^"]*\)".*/\1/p')
		echo "demo-$who $id $key" >> "$VAR/etc/demo.keys"
		[ "$who" = alice ] && admin topup --account "$id" --amount 100 --payment-ref "demo-topup-$id" >/dev/null
	fi
done
chmod 600 "$VAR/etc/"*.tokens "$VAR/etc/demo.keys"
# for a shell at the repository root: `. var/env` (README, "Try it")
first() { grep -v '^#' "$1" | head -1; }
{
	echo "# written by scripts/run_local.sh; in a shell at the repository root: . var/env"
	echo "export BILLING_URL=http://$(sed -n 's/^listen = //p' "$VAR/billingd.conf")"
	echo "export T=$(first "$VAR/etc/gateway.tokens")      # a gateway token (/v1/*)"
	echo "export ADMIN=$(first "$VAR/etc/admin.tokens")  # an admin token (/v1/admin/*)"
	echo "export ALICE=$(awk '$1 == "demo-alice" {print $2}' "$VAR/etc/demo.keys") BOB=$(awk '$1 == "demo-bob" {print $2}' "$VAR/etc/demo.keys")  # demo account ids"
	echo "export API_KEY=$(awk '$1 == "demo-alice" {print $3}' "$VAR/etc/demo.keys")  # alice's API key (/internal/v1/*)"
} > "$VAR/env"
chmod 600 "$VAR/env"
echo "run: gateway token in $VAR/etc/gateway.tokens, demo API keys in $VAR/etc/demo.keys; . var/env sets them in a shell" >&2
bin/billingd --config "$VAR/billingd.conf" &
bpid=$!
wait $bpid
