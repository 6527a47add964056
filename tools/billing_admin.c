/* billing_admin.c: the admin CLI (CONTRACT.md §5).  Every change records
 * who (--operator, default the login name), when and why, in the ledger or
 * in audit_log; nothing is edited in place. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "billing/usage/pricedb.h"
#include "billing/usage/pricing.h"
#include "billing/authz/quota.h"
#include "common/buf.h"
#include "common/cli.h"
#include "common/config.h"
#include "common/jsonnum.h"
#include "common/money.h"
#include "common/timeutil.h"
#include "ledger/apikey.h"
#include "ledger/clawback.h"
#include "ledger/db.h"
#include "ledger/ops.h"
#include "ledger/signup.h"
#include "ledger/promo.h"
#include "ledger/refund.h"
#include "tools/admin_common.h"

#define CLI_WRITER "cli"

static struct config *cfg;

struct cmd {
	const char *name; /* "account create" */
	const char *args; /* synopsis after the name */
	const char *help;
	struct cli_opt *opts;
	int max_pos;
	void (*run)(const char **pos, int npos, struct cli_opt *opts);
};

static void print_json(json_t *j)
{
	char *s = jsonnum_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

	if (s)
		puts(s);
	free(s);
	json_decref(j);
}

static int64_t amount_opt(struct cli_opt *o, const char *name, int required)
{
	const char *v = cli_get(o, name);
	struct error err;
	int64_t n;

	if (!v) {
		if (required)
			tool_usage_error("missing --%s", name);
		return 0;
	}
	if (money_parse(v, &n, &err) < 0)
		tool_usage_error("--%s: %s", name, err.msg);
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
	{
		struct error ce;
		if (config_get_money(cfg, "max_topup", &x->max_topup_nanos, &ce) < 0 ||
		    config_get_money(cfg, "max_grant", &x->max_grant_nanos, &ce) < 0)
			tool_fail("%s", ce.msg);
	}
}

/* The live held amount of an account, read from the Redis of the
 * configuration; false when it cannot be read (printed as unknown). */
static bool held_now(int64_t account_id, int64_t *held)
{
	struct error ce;
	struct error err;
	int64_t t = 1000;

	if (config_get_int(cfg, "redis_timeout_ms", 1, 600000, &t, &ce) < 0 ||
	    quota_held_sync(config_get(cfg, "redis"), account_id, (int)t, held, &err) < 0)
		return false;
	return true;
}

static json_t *balance_json(int64_t account_id, const struct ops_balance *b)
{
	json_t *grants = json_array(), *bal;
	int64_t held = 0;
	bool known = held_now(account_id, &held);

	for (size_t i = 0; i < b->n_grants; i++) {
		const struct ops_grant_info *g = &b->grants[i];
		char exp[40] = "";
		if (g->expires_at_us)
			time_format_rfc3339(g->expires_at_us, exp, sizeof(exp));
		json_array_append_new(
			grants, json_pack("{s:I,s:s,s:I,s:o,s:i}", "grant_id", (json_int_t)g->grant_id, "kind", g->kind,
					  "remaining_nanos", (json_int_t)g->remaining_nanos, "expires_at",
					  g->expires_at_us ? json_string(exp) : json_null(), "priority", g->priority));
	}
	bal = json_pack("{s:o,s:o,s:o,s:o,s:b}", "paid_nanos", jsonnum_total(b->paid_nanos), "promo_nanos",
			jsonnum_total(b->promo_nanos), "held_nanos", known ? json_integer(held) : json_null(),
			"available_nanos", known ? jsonnum_total(b->paid_nanos + b->promo_nanos - held) : json_null(),
			"held_known", known);
	if (!known)
		json_object_set_new(bal, "note",
				    json_string("the live holds are kept in Redis, which cannot be reached"
						" now: held and available amounts are unknown"));
	return json_pack("{s:o,s:o}", "balance", bal, "grants", grants);
}

static void print_money(const char *label, money_total nanos)
{
	char m[MONEY_TOTAL_BUF], n[MONEY_TOTAL_BUF];

	money_total_format(nanos, m, sizeof(m));
	money_total_str(nanos, n, sizeof(n));
	printf("%-16s %s (%s nanos)\n", label, m, n);
}

/* paid, promotional, held (live, from Redis) and available */
static void print_balance(int64_t account_id, const struct ops_balance *b)
{
	int64_t held = 0;

	print_money("paid", b->paid_nanos);
	print_money("promotional", b->promo_nanos);
	if (held_now(account_id, &held)) {
		print_money("held", held);
		print_money("available", b->paid_nanos + b->promo_nanos - held);
	} else {
		printf("%-16s unknown (Redis cannot be reached)\n%-16s unknown\n", "held", "available");
	}
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

/* Creates the folders leading to path (mode 0700, like `mkdir -p`). */
static void make_parents(const char *path)
{
	char dir[4096];

	snprintf(dir, sizeof(dir), "%s", path);
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			tool_fail("cannot create folder '%s': %m", dir);
		*p = '/';
	}
}

/* Writes text to path with exactly mode (also when --force overwrites a
 * file that was wider: open's mode applies only to a new file).  0, or -1
 * with the problem in msg. */
static int write_file(const char *path, const char *text, mode_t mode, int force, char *msg, size_t msglen)
{
	int fd;
	size_t n = strlen(text);

	make_parents(path);
	fd = open(path, O_WRONLY | O_CREAT | (force ? O_TRUNC : O_EXCL), mode);
	if (fd < 0) {
		snprintf(msg, msglen, "cannot create '%s': %s%s", path, strerror(errno),
			 errno == EEXIST ? " (use --force to overwrite)" : "");
		return -1;
	}
	if (fchmod(fd, mode) != 0 || write(fd, text, n) != (ssize_t)n || fsync(fd) != 0) {
		snprintf(msg, msglen, "cannot write '%s': %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static void cmd_keygen(const char **pos, int npos, struct cli_opt *o)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
	char skhex[2 * crypto_sign_SECRETKEYBYTES + 2], pkhex[2 * crypto_sign_PUBLICKEYBYTES + 2], pubpath[4096];
	const char *out = required(o, "out");
	int force = cli_has(o, "force");
	char msg[4400];

	(void)pos, (void)npos;
	crypto_sign_keypair(pk, sk);
	sodium_bin2hex(skhex, sizeof(skhex), sk, sizeof(sk));
	sodium_bin2hex(pkhex, sizeof(pkhex), pk, sizeof(pk));
	strcat(skhex, "\n");
	strcat(pkhex, "\n");
	snprintf(pubpath, sizeof(pubpath), "%s.pub", out);
	/* a pair or nothing: without --force, an existing FILE.pub must stop the
	 * command before FILE is written (else a new secret key sat beside the
	 * old public key, and exports signed with it failed verification) */
	if (!force && (access(out, F_OK) == 0 || access(pubpath, F_OK) == 0))
		tool_fail("'%s' exists (use --force to overwrite)", access(out, F_OK) == 0 ? out : pubpath);
	if (write_file(out, skhex, 0600, force, msg, sizeof(msg)) < 0) {
		sodium_memzero(sk, sizeof(sk));
		sodium_memzero(skhex, sizeof(skhex));
		tool_fail("%s", msg);
	}
	if (write_file(pubpath, pkhex, 0644, force, msg, sizeof(msg)) < 0) {
		/* the new secret key must not stay without its public half */
		unlink(out);
		sodium_memzero(sk, sizeof(sk));
		sodium_memzero(skhex, sizeof(skhex));
		tool_fail("%s (so '%s' was removed again)", msg, out);
	}
	sodium_memzero(sk, sizeof(sk));
	sodium_memzero(skhex, sizeof(skhex));
	if (cli_has(o, "json")) {
		pkhex[2 * crypto_sign_PUBLICKEYBYTES] = '\0';
		print_json(json_pack("{s:s,s:s,s:s}", "secret_key_file", out, "public_key_file", pubpath, "public_key",
				     pkhex));
	} else {
		printf("secret key %s\npublic key %s: %s", out, pubpath, pkhex);
	}
}

/* ---- accounts ---- */

/* json: 0 text, else JSON (with the signup's promotion when res is given) */
static void show_account(PGconn *c, int64_t id, int json, const struct ops_signup_result *res)
{
	struct ops_account a;
	struct ops_balance b;
	struct error err;

	if (ops_account_get(c, id, &a, &err) < 0 || ops_balance_get(c, id, 0, &b, &err) < 0)
		tool_fail_err(&err);
	if (json) {
		json_t *j = balance_json(id, &b);
		json_object_set_new(j, "account_id", json_integer(a.account_id));
		json_object_set_new(j, "external_id", json_string(a.external_id));
		json_object_set_new(j, "status", json_string(a.status));
		json_object_set_new(j, "verified", json_boolean(a.verified));
		json_object_set_new(j, "tier", json_string(a.tier));
		json_object_set_new(j, "referral_code", json_string(a.referral_code));
		if (res)
			json_object_set_new(j, "promotion",
					    json_pack("{s:b,s:I,s:s}", "applied", res->signup_grant_nanos > 0,
						      "amount_nanos", (json_int_t)res->signup_grant_nanos, "note",
						      res->promo_note));
		print_json(j);
		return;
	}
	printf("account_id       %" PRId64 "\nexternal_id      %s\nstatus           %s\nverified         %s\n"
	       "tier             %s\nreferral_code    %s\n",
	       a.account_id, a.external_id, a.status, a.verified ? "yes" : "no", a.tier, a.referral_code);
	print_balance(id, &b);
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
	/* POST /v1/accounts's rule (ops_account_create holds it too): a usage error here */
	if (req.n_identity > OPS_IDENTITY_MAX)
		tool_usage_error("--identity: at most %d", OPS_IDENTITY_MAX);
	for (size_t i = 0; i < req.n_identity; i++)
		if (!*req.identity[i] || strlen(req.identity[i]) > OPS_IDENTITY_LEN_MAX)
			tool_usage_error("--identity must be 1 to %d characters", OPS_IDENTITY_LEN_MAX);
	ops_init(&x, c);
	if (ops_account_create(&x, &req, &res, &err) < 0)
		tool_fail_err(&err);
	if (!res.duplicate && ops_audit(c, x.actor, "account.create", req.external_id, "", "{}", &err) < 0)
		tool_fail_err(&err);
	/* the promotion's outcome is part of the answer (stdout), not a warning */
	if (!cli_has(o, "json"))
		printf("promotion        %s%s%s\n", res.signup_grant_nanos > 0 ? "signup credit applied" : "none",
		       res.promo_note[0] ? ": " : "", res.promo_note);
	show_account(c, res.account_id, cli_has(o, "json") ? 2 : 0, &res);
	PQfinish(c);
}

static void cmd_account_show(const char **pos, int npos, struct cli_opt *o)
{
	PGconn *c;

	if (npos != 1)
		tool_usage_error("account show needs an account id");
	c = tool_connect(cfg, 0);
	show_account(c, tool_parse_id("account id", pos[0]), cli_has(o, "json"), NULL);
	PQfinish(c);
}

struct status_job {
	struct ops_ctx *x;
	int64_t id;
	const char *status, *reason;
	bool clawback;
	bool changed;
	struct clawback_result cb;
};

static int status_tx(void *arg, struct error *err)
{
	struct status_job *j = arg;
	PGconn *c = j->x->conn;
	struct ops_account a;
	char id[32], details[320];
	const char *p[2] = {id, j->status};

	snprintf(id, sizeof(id), "%" PRId64, j->id);
	j->changed = false;
	memset(&j->cb, 0, sizeof(j->cb));
	if (ops_lock_customer(c, j->id, &a, err) < 0)
		return -1;
	if (strcmp(a.status, j->status) != 0) {
		const char *who[2] = {j->x->actor, j->reason};
		/* for the database's own audit row (audit_row_change, 0007) */
		if (db_exec(c, "SELECT set_config('billing.actor', $1, true), set_config('billing.reason', $2, true)",
			    2, who, err) < 0 ||
		    db_exec(c, "UPDATE customers SET status = $2 WHERE account_id = $1::bigint", 2, p, err) < 0)
			return -1;
		j->changed = true;
	} else if (!j->clawback) {
		return error_set(err, 409, "no_change", "account %" PRId64 " is already %s", j->id, j->status);
	}
	if (j->clawback && clawback_in_tx(j->x, j->id, j->reason, &j->cb, err) < 0)
		return -1;
	snprintf(details, sizeof(details),
		 "{\"status\":\"%s\",\"previous_status\":\"%s\",\"clawback\":%s,\"clawback_nanos\":%" PRId64
		 ",\"inviter_clawback_nanos\":%" PRId64 "}",
		 j->status, a.status, j->clawback ? "true" : "false", j->cb.nanos, j->cb.inviter_nanos);
	if (ops_audit(c, j->x->actor,
		      !j->changed                        ? "account.clawback"
		      : strcmp(j->status, "frozen") == 0 ? "account.freeze"
							 : "account.unfreeze",
		      id, j->reason, details, err) < 0)
		return -1;
	return db_exec(c, "SELECT pg_notify('billing_change', 'customers:' || $1)", 1, p, err);
}

static void set_status(const char **pos, int npos, struct cli_opt *o, const char *status)
{
	struct ops_ctx x;
	struct error err;
	struct status_job j;
	PGconn *c;

	if (npos != 1)
		tool_usage_error("account %s needs an account id",
				 strcmp(status, "frozen") == 0 ? "freeze" : "unfreeze");
	memset(&j, 0, sizeof(j));
	j.id = tool_parse_id("account id", pos[0]);
	j.reason = required(o, "reason");
	j.status = status;
	j.clawback = cli_has(o, "clawback");
	c = tool_connect(cfg, 0);
	ops_init(&x, c);
	j.x = &x;
	if (ops_in_tx(c, status_tx, &j, &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json")) {
		json_t *r = json_pack("{s:I,s:s,s:b}", "account_id", (json_int_t)j.id, "status", status, "changed",
				      j.changed);
		if (j.clawback)
			json_object_set_new(
				r, "clawback",
				json_pack("{s:I,s:I,s:o,s:o,s:I}", "grants", (json_int_t)j.cb.grants, "nanos",
					  (json_int_t)j.cb.nanos, "inviter_id",
					  j.cb.inviter_id ? json_integer(j.cb.inviter_id) : json_null(),
					  "inviter_grant_id",
					  j.cb.inviter_grant_id ? json_integer(j.cb.inviter_grant_id) : json_null(),
					  "inviter_nanos", (json_int_t)j.cb.inviter_nanos));
		print_json(r);
	} else {
		printf("account %" PRId64 " %s%s\n", j.id, status, j.changed ? "" : " (already)");
		if (j.clawback) {
			char m[40];
			money_format(j.cb.nanos, m, sizeof(m));
			printf("clawback: %s from %" PRId64 " unused grant(s)\n", m, j.cb.grants);
			if (j.cb.inviter_id) {
				money_format(j.cb.inviter_nanos, m, sizeof(m));
				printf("clawback: %s of the referral reward (grant %" PRId64 ") of inviter %" PRId64
				       "\n",
				       m, j.cb.inviter_grant_id, j.cb.inviter_id);
			}
		}
	}
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
	uint8_t pepper[APIKEY_PEPPER_BYTES];
	char key[APIKEY_LEN + 1];
	struct error err;
	PGconn *c;
	int64_t key_id, id = tool_parse_id("--account", cli_get(o, "account"));

	(void)pos, (void)npos;
	if (apikey_load_pepper(config_get(cfg, "key_pepper_file"), 1, pepper, &err) < 0)
		tool_fail_err(&err);
	c = tool_connect(cfg, 0);
	if (apikey_create(c, pepper, id, cli_get(o, "name"), tool_operator(cfg), key, &key_id, &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json"))
		print_json(json_pack("{s:I,s:I,s:s}", "key_id", (json_int_t)key_id, "account_id", (json_int_t)id,
				     "api_key", key));
	else
		printf("key_id  %" PRId64 "\napi_key %s\n(shown once: only its hash is stored)\n", key_id, key);
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
	{
		const char *reason = cli_get(o, "reason"), *who[2] = {tool_operator(cfg), reason ? reason : ""};
		if (db_exec(c, "BEGIN", 0, NULL, &err) < 0 ||
		    db_exec(c, "SELECT set_config('billing.actor', $1, true), set_config('billing.reason', $2, true)",
			    2, who, &err) < 0)
			tool_fail_err(&err);
	}
	r = db_query(
		c,
		"UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL RETURNING account_id",
		1, pos, &err);
	if (!r)
		tool_fail_err(&err);
	if (PQntuples(r) != 1)
		tool_fail("key %s not found or already revoked", pos[0]);
	if (ops_audit(c, tool_operator(cfg), "key.revoke", pos[0], cli_get(o, "reason"), "{}", &err) < 0 ||
	    db_exec(c, "SELECT pg_notify('billing_change', 'api_keys')", 0, NULL, &err) < 0 ||
	    db_exec(c, "COMMIT", 0, NULL, &err) < 0)
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
	const char *exp = cli_get(o, "expires");
	long prio;
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
	if (tool_int_opt(o, "priority", 0, 1000000, &prio))
		g.priority = (int)prio;
	if (exp && time_parse_rfc3339(exp, 1, &g.expires_at_us) < 0)
		tool_usage_error("--expires '%s' is not a date or RFC 3339 time", exp);
	/* a grant that expired already would go straight to breakage */
	if (exp && g.expires_at_us <= time_now_us())
		tool_usage_error("--expires '%s' is already past", exp);
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
		printf("grant %" PRId64 "%s\n", info.grant_id,
		       dup ? " (already granted with this idempotency key)" : "");
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
	int64_t grant_id = 0, nanos = 0;
	char note[160] = "";
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
	/* a top-up is a top-up, whoever records it: with referral_trigger =
	 * topup it rewards the inviter as billingd's POST /v1/topups does (also
	 * on a replay: a first attempt may have stopped before the reward) */
	if (strcmp(config_get(cfg, "referral_trigger"), "topup") == 0 &&
	    promo_after_topup(&x, id, &grant_id, &nanos, note, sizeof(note), &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json")) {
		json_t *j = balance_json(id, &b);
		json_object_set_new(j, "duplicate", json_boolean(dup));
		if (grant_id)
			json_object_set_new(j, "referral",
					    json_pack("{s:b,s:I,s:s}", "rewarded", 1, "amount_nanos", (json_int_t)nanos,
						      "note", note));
		print_json(j);
	} else {
		printf("top-up %s%s, balance after it:\n", ref, dup ? " (already recorded)" : "");
		print_balance(id, &b);
		if (grant_id)
			printf("referral: the inviter got grant %" PRId64 " (%s)\n", grant_id, note);
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
	if (cli_has(o, "json")) {
		struct ops_balance b;
		json_t *j;
		if (ops_balance_get(c, id, 0, &b, &err) < 0)
			tool_fail_err(&err);
		j = balance_json(id, &b);
		json_object_set_new(j, "txn_id", json_integer(txn));
		json_object_set_new(j, "amount_nanos", json_integer(amt));
		json_object_set_new(j, "duplicate", json_boolean(dup));
		print_json(j);
	} else {
		printf("adjustment transaction %" PRId64 "%s\n", txn, dup ? " (already recorded)" : "");
	}
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
		const char *reason = cli_get(o, "reason") ? cli_get(o, "reason") : "price set";
		const char *params[9] = {
			model, in, cin, out, eff, cli_has(o, "paid-only") ? "true" : "false", wins, tool_operator(cfg),
			reason};
		json_t *d;
		char *dtxt;
		if (db_exec(c, "BEGIN", 0, NULL, &err) < 0)
			tool_fail_err(&err);
		r = db_query(c,
			     "INSERT INTO prices (model, input_nanos, cached_input_nanos, output_nanos, effective_from,"
			     " paid_only, windows, actor, reason) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
			     " RETURNING price_version",
			     9, params, &err);
		if (!r)
			tool_fail_err(&err);
		d = json_pack("{s:I,s:s,s:I,s:I,s:I,s:s,s:b,s:s}", "price_version",
			      (json_int_t)strtoll(PQgetvalue(r, 0, 0), NULL, 10), "model", model, "input_nanos",
			      (json_int_t)p.input, "cached_input_nanos", (json_int_t)p.cached_input, "output_nanos",
			      (json_int_t)p.output, "effective_from", eff, "paid_only", cli_has(o, "paid-only"),
			      "windows", wins);
		dtxt = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
		if (!dtxt || ops_audit(c, tool_operator(cfg), "price.set", model, reason, dtxt, &err) < 0 ||
		    db_exec(c, "COMMIT", 0, NULL, &err) < 0)
			tool_fail_err(&err);
		free(dtxt);
		if (cli_has(o, "json"))
			print_json(d);
		else {
			json_decref(d);
			printf("price version %s for %s effective %s\n", PQgetvalue(r, 0, 0), model, eff);
		}
	}
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
							     (json_int_t)p[i].version, "model", p[i].model,
							     "input_nanos", (json_int_t)p[i].input,
							     "cached_input_nanos", (json_int_t)p[i].cached_input,
							     "output_nanos", (json_int_t)p[i].output, "effective_from",
							     eff, "paid_only", p[i].paid_only, "windows", w));
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

/* ---- refunds ---- */

static void cmd_refund(const char **pos, int npos, struct cli_opt *o)
{
	struct ops_ctx x;
	struct refund_result res;
	struct error err;
	const char *rid = required(o, "request-id"), *reason = required(o, "reason");
	PGconn *c;

	(void)pos, (void)npos;
	if (strlen(rid) > 200)
		tool_usage_error("--request-id is longer than 200 characters");
	c = tool_connect(cfg, 0);
	ops_init(&x, c);
	if (refund_request(&x, rid, reason, &res, &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json")) {
		print_json(json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "request_id", rid, "txn_id",
				     (json_int_t)res.txn_id, "original_txn_id", (json_int_t)res.original_txn_id,
				     "account_id", (json_int_t)res.account_id, "cost_nanos", (json_int_t)res.cost_nanos,
				     "paid_nanos", (json_int_t)res.paid_nanos, "promo_nanos",
				     (json_int_t)res.promo_nanos, "breakage_nanos", (json_int_t)res.breakage_nanos,
				     "model", res.model));
	} else {
		printf("refund transaction %" PRId64 " reverses transaction %" PRId64 " (request %s, account %" PRId64
		       ")\n",
		       res.txn_id, res.original_txn_id, rid, res.account_id);
		print_money("cost", res.cost_nanos);
		print_money("to paid", res.paid_nanos);
		print_money("to promotional", res.promo_nanos);
		if (res.breakage_nanos)
			print_money("to breakage", res.breakage_nanos);
	}
	PQfinish(c);
}

/* ---- limits ---- */

static const char *const limit_names[] = {"rpm", "tpm", "rpd", "tpd", "concurrency"};
#define N_LIMITS 5

struct limits_job {
	PGconn *c;
	const char *actor, *reason, *tier, *model;
	int64_t account_id;
	const char *given[N_LIMITS]; /* NULL: keep the current value; "none": no limit */
	int64_t limit_id;
	json_t *row;
};

static json_t *limit_row_json(PGresult *r, int i)
{
	json_t *j = json_pack(
		"{s:I,s:o,s:o,s:s,s:s,s:s}", "limit_id", (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10), "tier",
		PQgetisnull(r, i, 1) ? json_null() : json_string(PQgetvalue(r, i, 1)), "account_id",
		PQgetisnull(r, i, 2) ? json_null() : json_integer(strtoll(PQgetvalue(r, i, 2), NULL, 10)), "model",
		PQgetvalue(r, i, 3), "actor", PQgetvalue(r, i, 9), "created_at", PQgetvalue(r, i, 10));
	for (int k = 0; k < N_LIMITS; k++)
		json_object_set_new(j, limit_names[k],
				    PQgetisnull(r, i, 4 + k)
					    ? json_null()
					    : json_integer(strtoll(PQgetvalue(r, i, 4 + k), NULL, 10)));
	return j;
}

static const char limit_cols[] = "limit_id, tier, account_id, model, rpm, tpm, rpd, tpd, concurrency, actor,"
				 " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

static int limits_tx(void *arg, struct error *err)
{
	struct limits_job *j = arg;
	PGconn *c = j->c;
	char acct[32], *dtxt;
	const char *p[9];
	PGresult *r;
	struct buf q;
	int rc = -1;

	json_decref(j->row);
	j->row = NULL;
	snprintf(acct, sizeof(acct), "%" PRId64, j->account_id);
	if (j->account_id && ops_lock_customer(c, j->account_id, NULL, err) < 0)
		return -1;
	buf_init(&q);
	/* unspecified limits keep the value of the scope's newest row */
	buf_printf(&q,
		   "WITH cur AS (SELECT * FROM limits WHERE tier IS NOT DISTINCT FROM $1 AND account_id IS NOT DISTINCT"
		   " FROM $2::bigint AND model = $3 ORDER BY limit_id DESC LIMIT 1)"
		   " INSERT INTO limits (tier, account_id, model, rpm, tpm, rpd, tpd, concurrency, actor)"
		   " SELECT $1, $2::bigint, $3");
	for (int k = 0; k < N_LIMITS; k++)
		buf_printf(&q,
			   ", CASE WHEN $%d::text IS NULL THEN (SELECT %s FROM cur) WHEN $%d = 'none' THEN NULL"
			   " ELSE $%d::bigint END",
			   4 + k, limit_names[k], 4 + k, 4 + k);
	buf_printf(&q, ", $9 RETURNING %s", limit_cols);
	p[0] = j->tier;
	p[1] = j->account_id ? acct : NULL;
	p[2] = j->model;
	for (int k = 0; k < N_LIMITS; k++)
		p[3 + k] = j->given[k];
	p[8] = j->actor;
	r = db_query(c, q.data, 9, p, err);
	buf_release(&q);
	if (!r)
		return -1;
	j->row = limit_row_json(r, 0);
	PQclear(r);
	dtxt = json_dumps(j->row, JSON_COMPACT | JSON_SORT_KEYS);
	if (dtxt && ops_audit(c, j->actor, "limits.set", j->account_id ? acct : j->tier, j->reason, dtxt, err) == 0)
		rc = 0;
	free(dtxt);
	return rc;
}

static void cmd_limits_set(const char **pos, int npos, struct cli_opt *o)
{
	struct limits_job j;
	struct error err;
	const char *tier = cli_get(o, "tier"), *acct = cli_get(o, "account");
	int given = 0;
	PGconn *c;

	(void)pos, (void)npos;
	memset(&j, 0, sizeof(j));
	if (!tier == !acct)
		tool_usage_error("give exactly one of --account ID or --tier T");
	if (tier && (!*tier || strlen(tier) > 63))
		tool_usage_error("--tier must be 1 to 63 characters");
	if (acct)
		j.account_id = tool_parse_id("--account", acct);
	j.tier = tier;
	j.model = cli_get(o, "model") ? cli_get(o, "model") : "";
	if (strlen(j.model) > 200)
		tool_usage_error("--model is longer than 200 characters");
	for (int k = 0; k < N_LIMITS; k++) {
		const char *v = cli_get(o, limit_names[k]);
		char *end;
		long long x;
		if (!v)
			continue;
		given++;
		if (strcmp(v, "none") != 0) {
			errno = 0;
			x = strtoll(v, &end, 10);
			/* 0 is refused: billingd reads a limit of 0 as none (the
			 * authorize script's 0 = no limit), so --concurrency 0 meant
			 * to stop an account would let every call through */
			if (errno || end == v || *end || x < 1)
				tool_usage_error(
					"--%s must be a positive integer or 'none' (no limit), not '%s'; to stop"
					" an account's calls, freeze it",
					limit_names[k], v);
		}
		j.given[k] = v;
	}
	if (!given)
		tool_usage_error("give at least one of --rpm, --tpm, --rpd, --tpd, --concurrency");
	j.actor = tool_operator(cfg);
	j.reason = cli_get(o, "reason") ? cli_get(o, "reason") : "";
	c = tool_connect(cfg, 0);
	j.c = c;
	if (ops_in_tx(c, limits_tx, &j, &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json")) {
		print_json(j.row);
	} else {
		printf("limits %s for %s%s%s%s:", json_string_value(json_object_get(j.row, "created_at")),
		       acct ? "account " : "tier ", acct ? acct : tier, *j.model ? " model " : "", j.model);
		for (int k = 0; k < N_LIMITS; k++) {
			json_t *v = json_object_get(j.row, limit_names[k]);
			if (json_is_integer(v))
				printf(" %s=%" JSON_INTEGER_FORMAT, limit_names[k], json_integer_value(v));
			else
				printf(" %s=none", limit_names[k]);
		}
		printf("\n");
		json_decref(j.row);
	}
	PQfinish(c);
}

static void cmd_limits_show(const char **pos, int npos, struct cli_opt *o)
{
	const char *tier = cli_get(o, "tier"), *acct = cli_get(o, "account");
	char id[32] = "";
	const char *p[2];
	struct error err;
	struct buf q;
	PGresult *r;
	PGconn *c;
	json_t *arr = json_array();

	(void)pos, (void)npos;
	if (tier && acct)
		tool_usage_error("give at most one of --account ID or --tier T");
	if (acct)
		snprintf(id, sizeof(id), "%" PRId64, tool_parse_id("--account", acct));
	p[0] = tier;
	p[1] = acct ? id : NULL;
	c = tool_connect(cfg, 0);
	buf_init(&q);
	buf_printf(&q,
		   "SELECT %s FROM (SELECT DISTINCT ON (tier, account_id, model) * FROM limits"
		   " ORDER BY tier, account_id, model, limit_id DESC) l"
		   " WHERE ($1::text IS NULL OR tier = $1) AND ($2::bigint IS NULL OR account_id = $2::bigint"
		   /* an account's tier rows apply to it too */
		   "  OR tier = (SELECT tier FROM customers WHERE account_id = $2::bigint))"
		   " ORDER BY tier NULLS LAST, account_id, model",
		   limit_cols);
	r = db_query(c, q.data, 2, p, &err);
	buf_release(&q);
	if (!r)
		tool_fail_err(&err);
	for (int i = 0; i < PQntuples(r); i++)
		json_array_append_new(arr, limit_row_json(r, i));
	PQclear(r);
	if (cli_has(o, "json")) {
		print_json(arr);
	} else {
		printf("%-20s %-24s %10s %12s %10s %14s %11s\n", "scope", "model", "rpm", "tpm", "rpd", "tpd",
		       "concurrency");
		for (size_t i = 0; i < json_array_size(arr); i++) {
			json_t *l = json_array_get(arr, i);
			char scope[64];
			if (json_is_string(json_object_get(l, "tier")))
				snprintf(scope, sizeof(scope), "tier %s",
					 json_string_value(json_object_get(l, "tier")));
			else
				snprintf(scope, sizeof(scope), "account %" JSON_INTEGER_FORMAT,
					 json_integer_value(json_object_get(l, "account_id")));
			printf("%-20s %-24s", scope,
			       *json_string_value(json_object_get(l, "model"))
				       ? json_string_value(json_object_get(l, "model"))
				       : "(all)");
			for (int k = 0; k < N_LIMITS; k++) {
				json_t *v = json_object_get(l, limit_names[k]);
				char t[32] = "none";
				if (json_is_integer(v))
					snprintf(t, sizeof(t), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
				printf(" %*s", k == 1 ? 12 : k == 3 ? 14 : k == 4 ? 11 : 10, t);
			}
			printf("\n");
		}
		json_decref(arr);
	}
	PQfinish(c);
}

/* ---- promotions ---- */

static const char campaign_cols[] =
	"name, signup_nanos, referral_nanos, expires_days, max_referrals, budget_nanos, granted_nanos, active,"
	" to_char(starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
	" to_char(ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
	" coalesce((to_jsonb(campaigns) ->> 'require_identity')::boolean, false)"; /* off before 0021 (promo.c) */

static json_t *campaign_json(PGresult *r, int i)
{
#define NUM(col) json_integer(strtoll(PQgetvalue(r, i, col), NULL, 10))
#define OPT(col, v) (PQgetisnull(r, i, col) ? json_null() : (v))
	money_total granted = 0;
	(void)!money_total_parse(PQgetvalue(r, i, 6), &granted); /* numeric: exact */
	return json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:b,s:o,s:o,s:b}", "name", PQgetvalue(r, i, 0), "signup_nanos",
			 NUM(1), "referral_nanos", NUM(2), "expires_days", NUM(3), "max_referrals", NUM(4),
			 "budget_nanos", OPT(5, NUM(5)), "granted_nanos", jsonnum_total(granted), "active",
			 PQgetvalue(r, i, 7)[0] == 't', "starts_at", OPT(8, json_string(PQgetvalue(r, i, 8))),
			 "ends_at", OPT(9, json_string(PQgetvalue(r, i, 9))), "require_identity",
			 PQgetvalue(r, i, 10)[0] == 't');
#undef NUM
#undef OPT
}

static void cmd_promo_show(const char **pos, int npos, struct cli_opt *o)
{
	struct error err;
	struct buf q;
	PGresult *r;
	PGconn *c = tool_connect(cfg, 0);
	json_t *arr = json_array();

	(void)pos, (void)npos;
	buf_init(&q);
	buf_printf(&q, "SELECT %s FROM campaigns ORDER BY active DESC, created_at, name", campaign_cols);
	r = db_query(c, q.data, 0, NULL, &err);
	buf_release(&q);
	if (!r)
		tool_fail_err(&err);
	for (int i = 0; i < PQntuples(r); i++)
		json_array_append_new(arr, campaign_json(r, i));
	if (cli_has(o, "json")) {
		print_json(arr);
	} else {
		for (size_t i = 0; i < json_array_size(arr); i++) {
			json_t *cp = json_array_get(arr, i);
			char a[40], b[40], bud[40] = "none", g[MONEY_TOTAL_BUF];
			money_format(json_integer_value(json_object_get(cp, "signup_nanos")), a, sizeof(a));
			money_format(json_integer_value(json_object_get(cp, "referral_nanos")), b, sizeof(b));
			if (json_is_integer(json_object_get(cp, "budget_nanos")))
				money_format(json_integer_value(json_object_get(cp, "budget_nanos")), bud, sizeof(bud));
			money_total_format(jsonnum_value(json_object_get(cp, "granted_nanos")), g, sizeof(g));
			printf("campaign %s%s\n  signup credit    %s\n  referral credit  %s\n  expires after    %" JSON_INTEGER_FORMAT
			       " days\n  max referrals    %" JSON_INTEGER_FORMAT
			       "\n  budget           %s\n  granted so far   %s\n"
			       "  window           %s .. %s\n"
			       "  needs identity   %s\n",
			       json_string_value(json_object_get(cp, "name")),
			       json_is_true(json_object_get(cp, "active")) ? " (active)" : "", a, b,
			       json_integer_value(json_object_get(cp, "expires_days")),
			       json_integer_value(json_object_get(cp, "max_referrals")), bud, g,
			       json_is_string(json_object_get(cp, "starts_at"))
				       ? json_string_value(json_object_get(cp, "starts_at"))
				       : "-",
			       json_is_string(json_object_get(cp, "ends_at"))
				       ? json_string_value(json_object_get(cp, "ends_at"))
				       : "-",
			       json_is_true(json_object_get(cp, "require_identity"))
				       ? "on: no credit for a signup or referral without identity strings"
				       : "off");
		}
		if (json_array_size(arr) == 0)
			printf("no campaigns\n");
		json_decref(arr);
	}
	PQclear(r);
	PQfinish(c);
}

struct promo_job {
	PGconn *c;
	const char *name, *actor, *reason;
	const char *signup, *referral, *expires_days, *max_referrals, *require_identity; /* NULL: keep */
	bool budget_given, starts_given, ends_given;
	const char *budget, *starts, *ends; /* NULL with *_given: clear */
	char target[101];
	bool created;
	json_t *row;
};

static int promo_tx(void *arg, struct error *err)
{
	struct promo_job *j = arg;
	PGconn *c = j->c;
	PGresult *r;
	struct buf q;
	const char *p[12];
	bool exists, active;

	{
		const char *a[2] = {j->actor, j->reason};
		if (db_exec(c, "SELECT set_config('billing.actor', $1, true), set_config('billing.reason', $2, true)",
			    2, a, err) < 0)
			return -1;
	}
	r = db_query(c, "SELECT name FROM campaigns WHERE active FOR UPDATE", 0, NULL, err);
	if (!r)
		return -1;
	if (j->name)
		snprintf(j->target, sizeof(j->target), "%s", j->name);
	else if (PQntuples(r) == 1)
		snprintf(j->target, sizeof(j->target), "%s", PQgetvalue(r, 0, 0));
	else {
		PQclear(r);
		return error_set(err, 422, "no_active_campaign",
				 "there is no active campaign: name one with --campaign");
	}
	PQclear(r);
	p[0] = j->target;
	r = db_query(c, "SELECT active FROM campaigns WHERE name = $1 FOR UPDATE", 1, p, err);
	if (!r)
		return -1;
	exists = PQntuples(r) == 1;
	active = exists && PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!active && db_exec(c, "UPDATE campaigns SET active = false WHERE active", 0, NULL, err) < 0)
		return -1;
	j->created = !exists;
	if (!exists) {
		/* a new campaign starts from the settings of the one it replaces (or the defaults) */
		const char *q0[1] = {j->target};
		if (db_exec(c,
			    "INSERT INTO campaigns (name, signup_nanos, referral_nanos, expires_days, max_referrals, budget_nanos,"
			    " require_identity)"
			    " SELECT $1, coalesce(a.signup_nanos, 14000000000), coalesce(a.referral_nanos, 14000000000),"
			    " coalesce(a.expires_days, 90), coalesce(a.max_referrals, 50), NULL,"
			    " coalesce(a.require_identity, false)"
			    " FROM (SELECT 1) one LEFT JOIN (SELECT * FROM campaigns WHERE name <> $1"
			    "   ORDER BY created_at DESC LIMIT 1) a ON true",
			    1, q0, err) < 0)
			return -1;
	}
	p[1] = j->signup;
	p[2] = j->referral;
	p[3] = j->expires_days;
	p[4] = j->max_referrals;
	p[5] = j->budget_given ? "t" : "f";
	p[6] = j->budget;
	p[7] = j->starts_given ? "t" : "f";
	p[8] = j->starts;
	p[9] = j->ends_given ? "t" : "f";
	p[10] = j->ends;
	p[11] = j->require_identity;
	buf_init(&q);
	buf_printf(
		&q,
		"UPDATE campaigns SET signup_nanos = coalesce($2::bigint, signup_nanos),"
		" referral_nanos = coalesce($3::bigint, referral_nanos),"
		" expires_days = coalesce($4::integer, expires_days), max_referrals = coalesce($5::integer, max_referrals),"
		" budget_nanos = CASE WHEN $6::boolean THEN $7::bigint ELSE budget_nanos END,"
		" starts_at = CASE WHEN $8::boolean THEN $9::timestamptz ELSE starts_at END,"
		" ends_at = CASE WHEN $10::boolean THEN $11::timestamptz ELSE ends_at END,"
		" require_identity = coalesce($12::boolean, require_identity),"
		" active = true WHERE name = $1 RETURNING %s",
		campaign_cols);
	r = db_query(c, q.data, 12, p, err);
	buf_release(&q);
	if (!r) {
		if (strcmp(err->code, "23514") == 0)
			error_set(err, 422, "invalid_budget",
				  "campaign '%s' has granted more than that budget already (see 'promo show')",
				  j->target);
		return -1;
	}
	json_decref(j->row);
	j->row = campaign_json(r, 0);
	PQclear(r);
	return 0;
}

/* A signup or referral credit is a grant: above the max_grant ceiling it
 * is refused like `grant` (CONTRACT.md §4a), exit 1. */
static void promo_within_ceiling(const char *opt, int64_t n)
{
	struct error ce;
	int64_t ceiling;
	char a[40], m[40];

	if (config_get_money(cfg, "max_grant", &ceiling, &ce) < 0)
		tool_fail("%s", ce.msg);
	if (!ceiling)
		ceiling = OPS_MAX_GRANT_DEFAULT;
	if (n <= ceiling)
		return;
	money_format(n, a, sizeof(a));
	money_format(ceiling, m, sizeof(m));
	tool_fail("--%s %s: every %s credit would be a grant above the ceiling %s (max_grant)", opt, a, opt, m);
}

static void cmd_promo_set(const char **pos, int npos, struct cli_opt *o)
{
	struct promo_job j;
	struct error err;
	char sig[32], ref[32], bud[32], st[40], en[40];
	const char *v;
	PGconn *c;

	(void)pos, (void)npos;
	memset(&j, 0, sizeof(j));
	j.name = cli_get(o, "campaign");
	if (j.name && (!*j.name || strlen(j.name) > 100))
		tool_usage_error("--campaign must be 1 to 100 characters");
	if (cli_get(o, "signup")) {
		int64_t n = amount_opt(o, "signup", 0);
		if (n < 0)
			tool_usage_error("--signup must not be negative");
		promo_within_ceiling("signup", n);
		snprintf(sig, sizeof(sig), "%" PRId64, n);
		j.signup = sig;
	}
	if (cli_get(o, "referral")) {
		int64_t n = amount_opt(o, "referral", 0);
		if (n < 0)
			tool_usage_error("--referral must not be negative");
		promo_within_ceiling("referral", n);
		snprintf(ref, sizeof(ref), "%" PRId64, n);
		j.referral = ref;
	}
	j.expires_days = tool_int_opt(o, "expires-days", 1, 36500, NULL);
	j.max_referrals = tool_int_opt(o, "max-referrals", 0, 1000000000, NULL);
	if ((v = cli_get(o, "budget"))) {
		j.budget_given = true;
		if (strcmp(v, "none") != 0) {
			int64_t n = amount_opt(o, "budget", 0);
			if (n < 0)
				tool_usage_error("--budget must not be negative");
			snprintf(bud, sizeof(bud), "%" PRId64, n);
			j.budget = bud;
		}
	}
	if ((v = cli_get(o, "starts"))) {
		int64_t us;
		j.starts_given = true;
		if (strcmp(v, "none") != 0) {
			if (time_parse_rfc3339(v, 1, &us) < 0)
				tool_usage_error("--starts '%s' is not a date or RFC 3339 time", v);
			time_format_rfc3339(us, st, sizeof(st));
			j.starts = st;
		}
	}
	if ((v = cli_get(o, "ends"))) {
		int64_t us;
		j.ends_given = true;
		if (strcmp(v, "none") != 0) {
			if (time_parse_rfc3339(v, 1, &us) < 0)
				tool_usage_error("--ends '%s' is not a date or RFC 3339 time", v);
			time_format_rfc3339(us, en, sizeof(en));
			j.ends = en;
		}
	}
	if ((v = cli_get(o, "require-identity"))) {
		if (strcmp(v, "on") == 0)
			j.require_identity = "true";
		else if (strcmp(v, "off") == 0)
			j.require_identity = "false";
		else
			tool_usage_error("--require-identity must be 'on' or 'off', not '%s'", v);
	}
	if (!j.name && !j.signup && !j.referral && !j.expires_days && !j.max_referrals && !j.budget_given &&
	    !j.starts_given && !j.ends_given && !j.require_identity)
		tool_usage_error("nothing to set: give --campaign or a setting");
	j.actor = tool_operator(cfg);
	j.reason = cli_get(o, "reason") ? cli_get(o, "reason") : "";
	c = tool_connect(cfg, 0);
	j.c = c;
	if (ops_in_tx(c, promo_tx, &j, &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json")) {
		json_object_set_new(j.row, "created", json_boolean(j.created));
		print_json(j.row);
	} else {
		printf("campaign %s %s and active (history in audit_log); 'promo show' lists it\n", j.target,
		       j.created ? "created" : "changed");
		json_decref(j.row);
	}
	PQfinish(c);
}

/* ---- expiry ---- */

static void cmd_expire(const char **pos, int npos, struct cli_opt *o)
{
	struct ops_ctx x;
	struct error err;
	const char *lim = cli_get(o, "limit");
	int64_t max = 0, grants = 0, total = 0;
	PGconn *c;

	(void)pos, (void)npos;
	if (lim)
		max = tool_parse_id("--limit", lim);
	c = tool_connect(cfg, 0);
	ops_init(&x, c);
	/* the same code as billingd's expiry worker (ledger/promo.h), in batches until nothing is left */
	for (;;) {
		int batch = max && max - grants < 1000 ? (int)(max - grants) : 1000, moved = 0;
		int64_t nanos = 0;
		if (batch <= 0)
			break;
		if (promo_expire_due(&x, time_now_us(), batch, &moved, &nanos, &err) < 0)
			tool_fail_err(&err);
		grants += moved;
		total += nanos;
		if (moved == 0)
			break;
	}
	if (cli_has(o, "json"))
		print_json(json_pack("{s:I,s:I}", "grants", (json_int_t)grants, "breakage_nanos", (json_int_t)total));
	else {
		printf("%" PRId64 " expired grant(s) moved to breakage\n", grants);
		print_money("breakage", total);
	}
	PQfinish(c);
}

/* ---- table ---- */

static struct cli_opt o_none[] = {CLI_OPTS_END};
static struct cli_opt o_keygen[] = {CLI_OPT("out", 1, "secret key file (FILE.pub gets the public key)"),
				    CLI_OPT("force", 0, "overwrite existing files"), CLI_OPT("json", 0, "JSON output"),
				    CLI_OPTS_END};
static struct cli_opt o_acreate[] = {CLI_OPT("external-id", 1, "the customer's id in the platform"),
				     CLI_OPT("referral-code", 1, "the inviter's referral code"),
				     CLI_OPT("identity", 1, "an identity hash (repeatable)"),
				     CLI_OPT("json", 0, "JSON output"), CLI_OPTS_END};
static struct cli_opt o_ashow[] = {CLI_OPT("json", 0, "JSON output"), CLI_OPTS_END};
static struct cli_opt o_freeze[] = {
	CLI_OPT("reason", 1, "why (required)"),
	CLI_OPT("clawback", 0, "freeze only: take back unused promotional credit and the inviter's reward"),
	CLI_OPT("json", 0, "JSON output"), CLI_OPTS_END};
static struct cli_opt o_kcreate[] = {CLI_OPT("account", 1, "account id"), CLI_OPT("name", 1, "a label"),
				     CLI_OPT("json", 0, "JSON output"), CLI_OPTS_END};
static struct cli_opt o_krevoke[] = {CLI_OPT("reason", 1, "why"), CLI_OPTS_END};
static struct cli_opt o_grant[] = {CLI_OPT("account", 1, "account id"),
				   CLI_OPT("amount", 1, "currency units, e.g. 14.00"),
				   CLI_OPT("reason", 1, "why (required)"),
				   CLI_OPT("expires", 1, "date or RFC 3339 time"),
				   CLI_OPT("priority", 1, "lower burns first (default 100)"),
				   CLI_OPT("idempotency-key", 1, "retry-safe key"),
				   CLI_OPT("json", 0, "JSON output"),
				   CLI_OPTS_END};
static struct cli_opt o_topup[] = {CLI_OPT("account", 1, "account id"), CLI_OPT("amount", 1, "currency units"),
				   CLI_OPT("payment-ref", 1, "unique payment reference"),
				   CLI_OPT("json", 0, "JSON output"), CLI_OPTS_END};
static struct cli_opt o_adjust[] = {
	CLI_OPT("account", 1, "account id"),    CLI_OPT("amount", 1, "signed currency units"),
	CLI_OPT("reason", 1, "why (required)"), CLI_OPT("idempotency-key", 1, "retry-safe key"),
	CLI_OPT("json", 0, "JSON output"),      CLI_OPTS_END};
static struct cli_opt o_refund[] = {CLI_OPT("request-id", 1, "the usage record's request_id"),
				    CLI_OPT("reason", 1, "why (required)"), CLI_OPT("json", 0, "JSON output"),
				    CLI_OPTS_END};
static struct cli_opt o_pset[] = {CLI_OPT("model", 1, "model name"),
				  CLI_OPT("input", 1, "per 1M input tokens"),
				  CLI_OPT("cached-input", 1, "per 1M cached input tokens"),
				  CLI_OPT("output", 1, "per 1M output tokens"),
				  CLI_OPT("effective", 1, "RFC 3339 instant (default now)"),
				  CLI_OPT("paid-only", 0, "promotional credit may not pay"),
				  CLI_OPT("window", 1, "HH:MM-HH:MM=BASIS_POINTS, UTC (repeatable)"),
				  CLI_OPT("reason", 1, "why"),
				  CLI_OPT("json", 0, "JSON output"),
				  CLI_OPTS_END};
static struct cli_opt o_plist[] = {CLI_OPT("json", 0, "JSON output"), CLI_OPTS_END};
static struct cli_opt o_lset[] = {CLI_OPT("account", 1, "account id (or --tier)"),
				  CLI_OPT("tier", 1, "tier name (or --account)"),
				  CLI_OPT("model", 1, "only this model (default: all models)"),
				  CLI_OPT("rpm", 1, "requests per minute ('none': no limit)"),
				  CLI_OPT("tpm", 1, "tokens per minute"),
				  CLI_OPT("rpd", 1, "requests per day"),
				  CLI_OPT("tpd", 1, "tokens per day"),
				  CLI_OPT("concurrency", 1, "requests in flight"),
				  CLI_OPT("reason", 1, "why"),
				  CLI_OPT("json", 0, "JSON output"),
				  CLI_OPTS_END};
static struct cli_opt o_lshow[] = {CLI_OPT("account", 1, "only this account"), CLI_OPT("tier", 1, "only this tier"),
				   CLI_OPT("json", 0, "JSON output"), CLI_OPTS_END};
static struct cli_opt o_pshow[] = {CLI_OPT("json", 0, "JSON output"), CLI_OPTS_END};
static struct cli_opt o_promo[] = {
	CLI_OPT("signup", 1, "signup credit, currency units"),
	CLI_OPT("referral", 1, "referral reward, currency units"),
	CLI_OPT("expires-days", 1, "promotional credit lifetime in days"),
	CLI_OPT("max-referrals", 1, "rewards per inviter at most"),
	CLI_OPT("budget", 1, "campaign budget, currency units, or 'none'"),
	CLI_OPT("campaign", 1, "create or change this campaign and make it the active one"),
	CLI_OPT("starts", 1, "active from (date or RFC 3339, or 'none')"),
	CLI_OPT("ends", 1, "active until (or 'none')"),
	CLI_OPT("require-identity", 1,
		"on: no signup credit or referral reward without identity strings; off (default)"),
	CLI_OPT("reason", 1, "why"),
	CLI_OPT("json", 0, "JSON output"),
	CLI_OPTS_END};
static struct cli_opt o_expire[] = {CLI_OPT("limit", 1, "at most this many grants"), CLI_OPT("json", 0, "JSON output"),
				    CLI_OPTS_END};

static const struct cmd cmds[] = {
	{"migrate", "", "apply pending migrations (as pg_owner)", o_none, 0, cmd_migrate},
	{"keygen", "--out FILE", "make the Ed25519 key that signs export manifests", o_keygen, 0, cmd_keygen},
	{"account create", "--external-id X [--referral-code C]", "create an account (signup promotion applies)",
	 o_acreate, 0, cmd_account_create},
	{"account show", "ID [--json]", "show an account and its balance", o_ashow, 1, cmd_account_show},
	{"account freeze", "ID --reason R [--clawback]", "freeze an account (and claw back its promotional credit)",
	 o_freeze, 1, cmd_account_freeze},
	{"account unfreeze", "ID --reason R", "unfreeze an account", o_freeze, 1, cmd_account_unfreeze},
	{"key create", "--account ID [--name N]", "create an API key (shown once)", o_kcreate, 0, cmd_key_create},
	{"key revoke", "KEY_ID", "revoke an API key", o_krevoke, 1, cmd_key_revoke},
	{"grant", "--account ID --amount 14.00 --reason R", "grant promotional credit", o_grant, 0, cmd_grant},
	{"topup", "--account ID --amount 100 --payment-ref REF", "record a payment", o_topup, 0, cmd_topup},
	{"adjust", "--account ID --amount -1.50 --reason R", "adjust the paid balance", o_adjust, 0, cmd_adjust},
	{"refund", "--request-id RID --reason R", "reverse a usage record's charge (once)", o_refund, 0, cmd_refund},
	{"price set", "--model M --input 2 --cached-input 0.5 --output 8", "add a price version", o_pset, 0,
	 cmd_price_set},
	{"price list", "[--json]", "list price versions", o_plist, 0, cmd_price_list},
	{"limits set", "(--account ID | --tier T) [--model M] [--rpm N] ...", "set rate and concurrency limits", o_lset,
	 0, cmd_limits_set},
	{"limits show", "[--account ID | --tier T] [--json]", "show the limits in force", o_lshow, 0, cmd_limits_show},
	{"promo show", "[--json]", "show the promotional campaigns", o_pshow, 0, cmd_promo_show},
	{"promo set", "[--signup 14] [--referral 14] ... [--campaign NAME]", "change or start a campaign", o_promo, 0,
	 cmd_promo_set},
	{"expire", "[--limit N]", "move expired promotional credit to breakage now", o_expire, 0, cmd_expire},
};
#define N_CMDS (sizeof(cmds) / sizeof(cmds[0]))

static void usage(void)
{
	printf("usage: billing-admin [--config FILE] [--KEY VALUE] COMMAND ...\n\ncommands:\n");
	for (size_t i = 0; i < N_CMDS; i++)
		printf("  %-17s %-52s %s\n", cmds[i].name, cmds[i].args, cmds[i].help);
	printf("\nAmounts are decimal currency units (at most 9 decimals).  Every change is\n"
	       "recorded with --operator (default: the login name).  Exit codes: 0 ok, 1 failure, 2 usage.\n"
	       "'billing-admin COMMAND --help' shows a command's options.\n\n");
	config_print_keys();
}

int main(int argc, char **argv)
{
	char err[256];
	const char *pos[8];
	int npos;

	cfg = tool_start("billing-admin", &argc, argv);
	if (tool_wants_help(argc, argv)) {
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
		tool_cmd = c->name;
		for (k = 1 + words; k < argc; k++)
			if (strcmp(argv[k], "--help") == 0) {
				printf("usage: billing-admin %s %s\n%s\n\noptions:\n", c->name, c->args, c->help);
				cli_print_opts(c->opts);
				return 0;
			}
		if (cli_parse(argc - 1 - words, argv + 1 + words, c->opts, pos, c->max_pos, &npos, err, sizeof(err)) <
		    0)
			tool_usage_error("%s", err);
		c->run(pos, npos, c->opts);
		config_free(cfg);
		return 0;
	}
	/* a group of commands ("account", "promo" ...) without a known second word: list the group */
	{
		int group = 0, help = argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0);
		for (size_t i = 0; i < N_CMDS; i++) {
			size_t l1 = strcspn(cmds[i].name, " ");
			if (cmds[i].name[l1] && strncmp(argv[1], cmds[i].name, l1) == 0 && !argv[1][l1]) {
				if (!group++ && help)
					printf("usage: billing-admin %s SUBCOMMAND ...\n\nsubcommands:\n", argv[1]);
				if (help)
					printf("  %-17s %-52s %s\n", cmds[i].name, cmds[i].args, cmds[i].help);
			}
		}
		if (group && help)
			return 0;
		if (group && argc == 2) {
			tool_cmd = argv[1];
			tool_usage_error("'%s' needs a subcommand", argv[1]);
		}
	}
	tool_usage_error("unknown command '%s%s%s'", argv[1], argc > 2 ? " " : "", argc > 2 ? argv[2] : "");
}
