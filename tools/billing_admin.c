/* billing_admin.c: the admin CLI (CONTRACT.md §5).  Every change records
 * who (--operator, default the login name), when and why, in the ledger or
 * in audit_log; nothing is edited in place. */
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "billing/pricedb.h"
#include "billing/pricing.h"
#include "common/buf.h"
#include "common/cli.h"
#include "common/config.h"
#include "common/money.h"
#include "common/timeutil.h"
#include "ledger/apikey.h"
#include "ledger/db.h"
#include "ledger/ops.h"
#include "tools/admin_common.h"

#define CLI_WRITER "cli"

static struct config *cfg;

struct cmd {
	const char *name;  /* "account create" */
	const char *args;  /* synopsis after the name */
	const char *help;
	struct cli_opt *opts;
	int max_pos;
	void (*run)(const char **pos, int npos, struct cli_opt *opts);
};

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

	if (s)
		puts(s);
	free(s);
	json_decref(j);
}

static int64_t amount_opt(struct cli_opt *o, const char *name, int required)
{
	const char *v = cli_get(o, name);
	char err[160];
	int64_t n;

	if (!v) {
		if (required)
			tool_usage_error("missing --%s", name);
		return 0;
	}
	if (money_parse(v, &n, err, sizeof(err)) < 0)
		tool_usage_error("--%s: %s", name, err);
	return n;
}

static const char *required(struct cli_opt *o, const char *name)
{
	const char *v = cli_get(o, name);

	if (!v || !*v)
		tool_usage_error("missing --%s", name);
	return v;
}

static void ops_init(struct ops_ctx *x, PGconn *c)
{
	memset(x, 0, sizeof(*x));
	x->conn = c;
	x->writer = CLI_WRITER;
	x->actor = tool_operator(cfg);
}

static json_t *balance_json(const struct ops_balance *b)
{
	json_t *grants = json_array();

	for (size_t i = 0; i < b->n_grants; i++) {
		const struct ops_grant_info *g = &b->grants[i];
		char exp[40] = "";
		if (g->expires_at_us)
			time_format_rfc3339(g->expires_at_us, exp, sizeof(exp));
		json_array_append_new(grants, json_pack("{s:I,s:s,s:I,s:o,s:i}", "grant_id", (json_int_t)g->grant_id,
							"kind", g->kind, "remaining_nanos",
							(json_int_t)g->remaining_nanos, "expires_at",
							g->expires_at_us ? json_string(exp) : json_null(), "priority",
							g->priority));
	}
	return json_pack("{s:{s:I,s:I,s:I,s:I},s:o}", "balance", "paid_nanos", (json_int_t)b->paid_nanos, "promo_nanos",
			 (json_int_t)b->promo_nanos, "held_nanos", (json_int_t)0, "available_nanos",
			 (json_int_t)(b->paid_nanos + b->promo_nanos), "grants", grants);
}

static void print_money(const char *label, int64_t nanos)
{
	char m[40];

	money_format(nanos, m, sizeof(m));
	printf("%-16s %s (%" PRId64 " nanos)\n", label, m, nanos);
}

/* ---- migrate, keygen ---- */

static void cmd_migrate(const char **pos, int npos, struct cli_opt *o)
{
	struct error err;
	PGconn *c = tool_connect(cfg, 1);

	(void)pos, (void)npos, (void)o;
	if (db_migrate(c, config_get(cfg, "migrations_dir"), stdout, &err) < 0) {
		PQfinish(c);
		tool_fail_err(&err);
	}
	PQfinish(c);
}

static void write_file(const char *path, const char *text, mode_t mode, int force)
{
	int fd = open(path, O_WRONLY | O_CREAT | (force ? O_TRUNC : O_EXCL), mode);
	size_t n = strlen(text);

	if (fd < 0)
		tool_fail("cannot create '%s': %m", path);
	if (write(fd, text, n) != (ssize_t)n || fsync(fd) != 0) {
		close(fd);
		tool_fail("cannot write '%s': %m", path);
	}
	close(fd);
}

static void cmd_keygen(const char **pos, int npos, struct cli_opt *o)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
	char skhex[2 * crypto_sign_SECRETKEYBYTES + 2], pkhex[2 * crypto_sign_PUBLICKEYBYTES + 2], pubpath[4096];
	const char *out = required(o, "out");

	(void)pos, (void)npos;
	crypto_sign_keypair(pk, sk);
	sodium_bin2hex(skhex, sizeof(skhex), sk, sizeof(sk));
	sodium_bin2hex(pkhex, sizeof(pkhex), pk, sizeof(pk));
	strcat(skhex, "\n");
	strcat(pkhex, "\n");
	snprintf(pubpath, sizeof(pubpath), "%s.pub", out);
	write_file(out, skhex, 0600, cli_has(o, "force"));
	write_file(pubpath, pkhex, 0644, cli_has(o, "force"));
	sodium_memzero(sk, sizeof(sk));
	sodium_memzero(skhex, sizeof(skhex));
	printf("secret key %s\npublic key %s: %s", out, pubpath, pkhex);
}

/* ---- accounts ---- */

static void show_account(PGconn *c, int64_t id, int json)
{
	struct ops_account a;
	struct ops_balance b;
	struct error err;

	if (ops_account_get(c, id, &a, &err) < 0 || ops_balance_get(c, id, 0, &b, &err) < 0)
		tool_fail_err(&err);
	if (json) {
		json_t *j = balance_json(&b);
		json_object_set_new(j, "account_id", json_integer(a.account_id));
		json_object_set_new(j, "external_id", json_string(a.external_id));
		json_object_set_new(j, "status", json_string(a.status));
		json_object_set_new(j, "verified", json_boolean(a.verified));
		json_object_set_new(j, "tier", json_string(a.tier));
		json_object_set_new(j, "referral_code", json_string(a.referral_code));
		print_json(j);
		return;
	}
	printf("account_id       %" PRId64 "\nexternal_id      %s\nstatus           %s\nverified         %s\n"
	       "tier             %s\nreferral_code    %s\n",
	       a.account_id, a.external_id, a.status, a.verified ? "yes" : "no", a.tier, a.referral_code);
	print_money("paid", b.paid_nanos);
	print_money("promotional", b.promo_nanos);
	print_money("available", b.paid_nanos + b.promo_nanos);
	for (size_t i = 0; i < b.n_grants; i++) {
		char exp[40] = "never", m[40];
		if (b.grants[i].expires_at_us)
			time_format_rfc3339(b.grants[i].expires_at_us, exp, sizeof(exp));
		money_format(b.grants[i].remaining_nanos, m, sizeof(m));
		printf("grant %-10" PRId64 " %-8s remaining %s priority %d expires %s\n", b.grants[i].grant_id,
		       b.grants[i].kind, m, b.grants[i].priority, exp);
	}
}

static void cmd_account_create(const char **pos, int npos, struct cli_opt *o)
{
	struct ops_ctx x;
	struct ops_signup req;
	struct ops_signup_result res;
	struct error err;
	PGconn *c = tool_connect(cfg, 0);

	(void)pos, (void)npos;
	memset(&req, 0, sizeof(req));
	req.external_id = required(o, "external-id");
	req.referral_code = cli_get(o, "referral-code");
	for (struct cli_opt *p = o; p->name; p++)
		if (strcmp(p->name, "identity") == 0) {
			req.identity = p->values;
			req.n_identity = (size_t)p->count;
		}
	ops_init(&x, c);
	if (ops_account_create(&x, &req, &res, &err) < 0)
		tool_fail_err(&err);
	if (!res.duplicate && ops_audit(c, x.actor, "account.create", req.external_id, "", "{}", &err) < 0)
		tool_fail_err(&err);
	if (res.promo_note[0])
		fprintf(stderr, "%s: %s\n", tool_name, res.promo_note);
	show_account(c, res.account_id, cli_has(o, "json"));
	PQfinish(c);
}

static void cmd_account_show(const char **pos, int npos, struct cli_opt *o)
{
	PGconn *c;

	if (npos != 1)
		tool_usage_error("account show needs an account id");
	c = tool_connect(cfg, 0);
	show_account(c, tool_parse_id("account id", pos[0]), cli_has(o, "json"));
	PQfinish(c);
}

static void set_status(const char **pos, int npos, struct cli_opt *o, const char *status)
{
	struct error err;
	const char *reason = required(o, "reason");
	char details[64];
	PGconn *c;
	int64_t id;

	if (npos != 1)
		tool_usage_error("account %s needs an account id", strcmp(status, "frozen") == 0 ? "freeze" : "unfreeze");
	id = tool_parse_id("account id", pos[0]);
	c = tool_connect(cfg, 0);
	{
		const char *p[2] = {pos[0], status};
		snprintf(details, sizeof(details), "{\"status\":\"%s\"}", status);
		if (db_exec(c, "BEGIN", 0, NULL, &err) < 0 || ops_lock_customer(c, id, NULL, &err) < 0 ||
		    db_exec(c, "UPDATE customers SET status = $2 WHERE account_id = $1", 2, p, &err) < 0 ||
		    ops_audit(c, tool_operator(cfg), strcmp(status, "frozen") == 0 ? "account.freeze" : "account.unfreeze",
			      pos[0], reason, details, &err) < 0 ||
		    db_exec(c, "SELECT pg_notify('billing_change', 'customers:' || $1)", 1, p, &err) < 0 ||
		    db_exec(c, "COMMIT", 0, NULL, &err) < 0)
			tool_fail_err(&err);
	}
	printf("account %" PRId64 " %s\n", id, status);
	PQfinish(c);
}

static void cmd_account_freeze(const char **pos, int npos, struct cli_opt *o)
{
	set_status(pos, npos, o, "frozen");
}

static void cmd_account_unfreeze(const char **pos, int npos, struct cli_opt *o)
{
	set_status(pos, npos, o, "active");
}

/* ---- keys ---- */

static void cmd_key_create(const char **pos, int npos, struct cli_opt *o)
{
	uint8_t pepper[APIKEY_PEPPER_BYTES], h[APIKEY_HASH_BYTES];
	char key[APIKEY_LEN + 1], hhex[2 * APIKEY_HASH_BYTES + 1], acct[32];
	const char *name = cli_get(o, "name");
	struct ops_account a;
	struct error err;
	PGresult *r;
	PGconn *c;
	int64_t id = tool_parse_id("--account", cli_get(o, "account"));

	(void)pos, (void)npos;
	if (apikey_load_pepper(config_get(cfg, "key_pepper_file"), 1, pepper, &err) < 0)
		tool_fail_err(&err);
	c = tool_connect(cfg, 0);
	if (ops_account_get(c, id, &a, &err) < 0)
		tool_fail_err(&err);
	apikey_generate(key);
	apikey_hash(pepper, key, strlen(key), h);
	sodium_bin2hex(hhex, sizeof(hhex), h, sizeof(h));
	snprintf(acct, sizeof(acct), "%" PRId64, id);
	{
		const char *p[3] = {acct, name ? name : "", hhex};
		r = db_query(c, "INSERT INTO api_keys (account_id, name, key_hash) VALUES ($1, $2, decode($3, 'hex'))"
				" RETURNING key_id", 3, p, &err);
	}
	if (!r)
		tool_fail_err(&err);
	if (ops_audit(c, tool_operator(cfg), "key.create", PQgetvalue(r, 0, 0), "", "{}", &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json"))
		print_json(json_pack("{s:I,s:I,s:s}", "key_id", (json_int_t)strtoll(PQgetvalue(r, 0, 0), NULL, 10),
				     "account_id", (json_int_t)id, "api_key", key));
	else
		printf("key_id  %s\napi_key %s\n(shown once: only its hash is stored)\n", PQgetvalue(r, 0, 0), key);
	PQclear(r);
	sodium_memzero(key, sizeof(key));
	PQfinish(c);
}

static void cmd_key_revoke(const char **pos, int npos, struct cli_opt *o)
{
	struct error err;
	PGresult *r;
	PGconn *c;

	if (npos != 1)
		tool_usage_error("key revoke needs a key id");
	(void)tool_parse_id("key id", pos[0]);
	c = tool_connect(cfg, 0);
	r = db_query(c, "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL RETURNING account_id",
		     1, pos, &err);
	if (!r)
		tool_fail_err(&err);
	if (PQntuples(r) != 1)
		tool_fail("key %s not found or already revoked", pos[0]);
	if (ops_audit(c, tool_operator(cfg), "key.revoke", pos[0], cli_get(o, "reason"), "{}", &err) < 0 ||
	    db_exec(c, "SELECT pg_notify('billing_change', 'api_keys')", 0, NULL, &err) < 0)
		tool_fail_err(&err);
	PQclear(r);
	printf("key %s revoked\n", pos[0]);
	PQfinish(c);
}

/* ---- money ---- */

static void cmd_grant(const char **pos, int npos, struct cli_opt *o)
{
	struct ops_ctx x;
	struct ops_grant_req g;
	struct ops_grant_info info;
	struct error err;
	const char *exp = cli_get(o, "expires"), *prio = cli_get(o, "priority");
	bool dup;
	PGconn *c;

	(void)pos, (void)npos;
	memset(&g, 0, sizeof(g));
	g.account_id = tool_parse_id("--account", cli_get(o, "account"));
	g.amount_nanos = amount_opt(o, "amount", 1);
	if (g.amount_nanos <= 0)
		tool_usage_error("--amount must be positive");
	g.reason = required(o, "reason");
	g.kind = "admin";
	g.priority = 100;
	if (prio) {
		char *end;
		long v = strtol(prio, &end, 10);
		if (*end || end == prio || v < 0 || v > 1000000)
			tool_usage_error("--priority must be an integer 0..1000000");
		g.priority = (int)v;
	}
	if (exp && time_parse_rfc3339(exp, 1, &g.expires_at_us) < 0)
		tool_usage_error("--expires '%s' is not a date or RFC 3339 time", exp);
	g.idempotency_key = cli_get(o, "idempotency-key");
	c = tool_connect(cfg, 0);
	ops_init(&x, c);
	if (ops_grant(&x, &g, &info, &dup, &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json")) {
		print_json(json_pack("{s:I,s:I,s:I,s:b}", "grant_id", (json_int_t)info.grant_id, "account_id",
				     (json_int_t)g.account_id, "amount_nanos", (json_int_t)info.amount_nanos,
				     "duplicate", dup));
	} else {
		printf("grant %" PRId64 "%s\n", info.grant_id, dup ? " (already granted with this idempotency key)" : "");
		print_money("amount", info.amount_nanos);
	}
	PQfinish(c);
}

static void cmd_topup(const char **pos, int npos, struct cli_opt *o)
{
	struct ops_ctx x;
	struct ops_balance b;
	struct error err;
	bool dup;
	int64_t id = tool_parse_id("--account", cli_get(o, "account")), amt = amount_opt(o, "amount", 1);
	const char *ref = required(o, "payment-ref");
	PGconn *c;

	(void)pos, (void)npos;
	if (amt <= 0)
		tool_usage_error("--amount must be positive");
	c = tool_connect(cfg, 0);
	ops_init(&x, c);
	if (ops_topup(&x, id, amt, ref, &b, &dup, &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json")) {
		json_t *j = balance_json(&b);
		json_object_set_new(j, "duplicate", json_boolean(dup));
		print_json(j);
	} else {
		printf("top-up %s%s\n", ref, dup ? " (already recorded)" : "");
		print_money("paid", b.paid_nanos);
	}
	PQfinish(c);
}

static void cmd_adjust(const char **pos, int npos, struct cli_opt *o)
{
	struct ops_ctx x;
	struct error err;
	bool dup;
	int64_t txn, id = tool_parse_id("--account", cli_get(o, "account")), amt = amount_opt(o, "amount", 1);
	const char *reason = required(o, "reason");
	PGconn *c;

	(void)pos, (void)npos;
	if (amt == 0)
		tool_usage_error("--amount must not be zero");
	c = tool_connect(cfg, 0);
	ops_init(&x, c);
	if (ops_adjust(&x, id, amt, reason, cli_get(o, "idempotency-key"), &txn, &dup, &err) < 0)
		tool_fail_err(&err);
	printf("adjustment transaction %" PRId64 "%s\n", txn, dup ? " (already recorded)" : "");
	PQfinish(c);
}

/* ---- prices ---- */

static void cmd_price_set(const char **pos, int npos, struct cli_opt *o)
{
	struct pricing_price p;
	struct error err;
	char werr[200], in[32], cin[32], out[32], eff[40], wins[512] = "";
	const char *model = required(o, "model"), *e = cli_get(o, "effective");
	int64_t eff_us = time_now_us();
	struct buf wb;
	PGresult *r;
	PGconn *c;

	(void)pos, (void)npos;
	memset(&p, 0, sizeof(p));
	if (strlen(model) > 200)
		tool_usage_error("--model is longer than 200 characters");
	p.input = amount_opt(o, "input", 1);
	p.cached_input = amount_opt(o, "cached-input", 1);
	p.output = amount_opt(o, "output", 1);
	if (p.input < 0 || p.cached_input < 0 || p.output < 0)
		tool_usage_error("prices must not be negative");
	if (e && time_parse_rfc3339(e, 1, &eff_us) < 0)
		tool_usage_error("--effective '%s' is not an RFC 3339 time", e);
	buf_init(&wb);
	for (struct cli_opt *q = o; q->name; q++)
		if (strcmp(q->name, "window") == 0)
			for (int i = 0; i < q->count; i++) {
				if (i)
					buf_puts(&wb, ",");
				buf_puts(&wb, q->values[i]);
			}
	if (pricing_parse_windows(wb.data ? wb.data : "", &p, werr, sizeof(werr)) < 0)
		tool_usage_error("--window: %s", werr);
	buf_release(&wb);
	pricing_format_windows(&p, wins, sizeof(wins));
	snprintf(in, sizeof(in), "%" PRId64, p.input);
	snprintf(cin, sizeof(cin), "%" PRId64, p.cached_input);
	snprintf(out, sizeof(out), "%" PRId64, p.output);
	time_format_rfc3339(eff_us, eff, sizeof(eff));
	c = tool_connect(cfg, 0);
	{
		const char *params[8] = {model, in, cin, out, eff, cli_has(o, "paid-only") ? "true" : "false", wins,
					 tool_operator(cfg)};
		r = db_query(c,
			     "INSERT INTO prices (model, input_nanos, cached_input_nanos, output_nanos, effective_from,"
			     " paid_only, windows, actor, reason) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'price set')"
			     " RETURNING price_version",
			     8, params, &err);
	}
	if (!r)
		tool_fail_err(&err);
	printf("price version %s for %s effective %s\n", PQgetvalue(r, 0, 0), model, eff);
	PQclear(r);
	PQfinish(c);
}

static void cmd_price_list(const char **pos, int npos, struct cli_opt *o)
{
	struct pricing_price *p = NULL;
	struct error err;
	size_t n = 0;
	json_t *arr = json_array();
	PGconn *c = tool_connect(cfg, 0);

	(void)pos, (void)npos;
	if (pricedb_load(c, &p, &n, &err) < 0)
		tool_fail_err(&err);
	if (!cli_has(o, "json"))
		printf("%-8s %-24s %-14s %-14s %-14s %-27s %-9s %s\n", "version", "model", "input/1M", "cached/1M",
		       "output/1M", "effective_from", "paid_only", "windows");
	for (size_t i = 0; i < n; i++) {
		char eff[40], a[40], b[40], d[40], w[512];
		time_format_rfc3339(p[i].effective_from_us, eff, sizeof(eff));
		pricing_format_windows(&p[i], w, sizeof(w));
		if (cli_has(o, "json")) {
			json_array_append_new(arr, json_pack("{s:I,s:s,s:I,s:I,s:I,s:s,s:b,s:s}", "price_version",
							     (json_int_t)p[i].version, "model", p[i].model, "input_nanos",
							     (json_int_t)p[i].input, "cached_input_nanos",
							     (json_int_t)p[i].cached_input, "output_nanos",
							     (json_int_t)p[i].output, "effective_from", eff, "paid_only",
							     p[i].paid_only, "windows", w));
			continue;
		}
		money_format(p[i].input, a, sizeof(a));
		money_format(p[i].cached_input, b, sizeof(b));
		money_format(p[i].output, d, sizeof(d));
		printf("%-8" PRId64 " %-24s %-14s %-14s %-14s %-27s %-9s %s\n", p[i].version, p[i].model, a, b, d, eff,
		       p[i].paid_only ? "yes" : "no", w);
	}
	if (cli_has(o, "json"))
		print_json(arr);
	else
		json_decref(arr);
	free(p);
	PQfinish(c);
}

/* ---- table ---- */

#define END_OPTS {NULL, 0, NULL, 0, {NULL}}
#define O(n, a, h) {n, a, h, 0, {NULL}}
static struct cli_opt o_none[] = {END_OPTS};
static struct cli_opt o_keygen[] = {O("out", 1, "secret key file (FILE.pub gets the public key)"),
				    O("force", 0, "overwrite existing files"), END_OPTS};
static struct cli_opt o_acreate[] = {O("external-id", 1, "the customer's id in the platform"),
				     O("referral-code", 1, "the inviter's referral code"),
				     O("identity", 1, "an identity hash (repeatable)"), O("json", 0, "JSON output"),
				     END_OPTS};
static struct cli_opt o_ashow[] = {O("json", 0, "JSON output"), END_OPTS};
static struct cli_opt o_freeze[] = {O("reason", 1, "why (required)"), END_OPTS};
static struct cli_opt o_kcreate[] = {O("account", 1, "account id"), O("name", 1, "a label"),
				     O("json", 0, "JSON output"), END_OPTS};
static struct cli_opt o_krevoke[] = {O("reason", 1, "why"), END_OPTS};
static struct cli_opt o_grant[] = {O("account", 1, "account id"), O("amount", 1, "currency units, e.g. 14.00"),
				   O("reason", 1, "why (required)"), O("expires", 1, "date or RFC 3339 time"),
				   O("priority", 1, "lower burns first (default 100)"),
				   O("idempotency-key", 1, "retry-safe key"), O("json", 0, "JSON output"), END_OPTS};
static struct cli_opt o_topup[] = {O("account", 1, "account id"), O("amount", 1, "currency units"),
				   O("payment-ref", 1, "unique payment reference"), O("json", 0, "JSON output"),
				   END_OPTS};
static struct cli_opt o_adjust[] = {O("account", 1, "account id"), O("amount", 1, "signed currency units"),
				    O("reason", 1, "why (required)"), O("idempotency-key", 1, "retry-safe key"),
				    END_OPTS};
static struct cli_opt o_pset[] = {O("model", 1, "model name"), O("input", 1, "per 1M input tokens"),
				  O("cached-input", 1, "per 1M cached input tokens"),
				  O("output", 1, "per 1M output tokens"),
				  O("effective", 1, "RFC 3339 instant (default now)"),
				  O("paid-only", 0, "promotional credit may not pay"),
				  O("window", 1, "HH:MM-HH:MM=BASIS_POINTS, UTC (repeatable)"), END_OPTS};
static struct cli_opt o_plist[] = {O("json", 0, "JSON output"), END_OPTS};

static const struct cmd cmds[] = {
	{"migrate", "", "apply pending migrations (as pg_owner)", o_none, 0, cmd_migrate},
	{"keygen", "--out FILE", "make the Ed25519 key that signs export manifests", o_keygen, 0, cmd_keygen},
	{"account create", "--external-id X [--referral-code C]", "create an account (signup promotion applies)",
	 o_acreate, 0, cmd_account_create},
	{"account show", "ID [--json]", "show an account and its balance", o_ashow, 1, cmd_account_show},
	{"account freeze", "ID --reason R", "freeze an account", o_freeze, 1, cmd_account_freeze},
	{"account unfreeze", "ID --reason R", "unfreeze an account", o_freeze, 1, cmd_account_unfreeze},
	{"key create", "--account ID [--name N]", "create an API key (shown once)", o_kcreate, 0, cmd_key_create},
	{"key revoke", "KEY_ID", "revoke an API key", o_krevoke, 1, cmd_key_revoke},
	{"grant", "--account ID --amount 14.00 --reason R", "grant promotional credit", o_grant, 0, cmd_grant},
	{"topup", "--account ID --amount 100 --payment-ref REF", "record a payment", o_topup, 0, cmd_topup},
	{"adjust", "--account ID --amount -1.50 --reason R", "adjust the paid balance", o_adjust, 0, cmd_adjust},
	{"price set", "--model M --input 2 --cached-input 0.5 --output 8", "add a price version", o_pset, 0,
	 cmd_price_set},
	{"price list", "[--json]", "list price versions", o_plist, 0, cmd_price_list},
};
#define N_CMDS (sizeof(cmds) / sizeof(cmds[0]))

static void usage(void)
{
	printf("usage: billing-admin [--config FILE] [--KEY VALUE] COMMAND ...\n\ncommands:\n");
	for (size_t i = 0; i < N_CMDS; i++)
		printf("  %-18s %-46s %s\n", cmds[i].name, cmds[i].args, cmds[i].help);
	printf("\nAmounts are decimal currency units (at most 9 decimals).  Every change is\n"
	       "recorded with --operator (default: the login name).  Exit codes: 0 ok, 1 failure, 2 usage.\n"
	       "'billing-admin COMMAND --help' shows a command's options.\n\n");
	config_print_keys();
}

int main(int argc, char **argv)
{
	struct config_error ce;
	char err[256];
	const char *pos[8];
	int npos;

	tool_name = "billing-admin";
	if (sodium_init() < 0)
		tool_fail("cannot initialise libsodium");
	cfg = config_new();
	if (!cfg)
		tool_fail("out of memory");
	if (config_from_args(cfg, &argc, argv, &ce) < 0)
		tool_usage_error("%s", ce.msg);
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		usage();
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < N_CMDS; i++) {
		const struct cmd *c = &cmds[i];
		size_t l1 = strcspn(c->name, " ");
		int words = c->name[l1] ? 2 : 1, k;

		if (strncmp(argv[1], c->name, l1) != 0 || argv[1][l1])
			continue;
		if (words == 2 && (argc < 3 || strcmp(argv[2], c->name + l1 + 1) != 0))
			continue;
		for (k = 1 + words; k < argc; k++)
			if (strcmp(argv[k], "--help") == 0) {
				printf("usage: billing-admin %s %s\n%s\n\noptions:\n", c->name, c->args, c->help);
				cli_print_opts(c->opts);
				return 0;
			}
		if (cli_parse(argc - 1 - words, argv + 1 + words, c->opts, pos, c->max_pos, &npos, err, sizeof(err)) < 0)
			tool_usage_error("%s: %s", c->name, err);
		c->run(pos, npos, c->opts);
		config_free(cfg);
		return 0;
	}
	tool_usage_error("unknown command '%s%s%s'", argv[1], argc > 2 ? " " : "", argc > 2 ? argv[2] : "");
}
