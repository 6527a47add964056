/* ledger_cli.c: the finance CLI (CONTRACT.md §5): export, verify,
 * statement, trial-balance, reconcile.  Errors are one line on stderr
 * starting with "ledger: "; exit 0 ok, 1 failure, 2 usage. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cli.h"
#include "common/config.h"
#include "common/jsonnum.h"
#include "common/money.h"
#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/export.h"
#include "ledger/export_file.h"
#include "ledger/manifest.h"
#include "ledger/ops.h"
#include "ledger/reconcile.h"
#include "ledger/statement.h"
#include "ledger/verify.h"
#include "tools/admin_common.h"

static struct config *cfg;

struct cmd {
	const char *name;
	const char *args;
	const char *help;
	struct cli_opt *opts;
	int max_pos;
	int (*run)(const char **pos, int npos, struct cli_opt *opts);
};

static int64_t time_opt(struct cli_opt *o, const char *name, int required)
{
	const char *v = cli_get(o, name);
	int64_t us = 0;

	if (!v) {
		if (required)
			tool_usage_error("missing --%s", name);
		return 0;
	}
	if (time_parse_rfc3339(v, 1, &us) < 0)
		tool_usage_error("--%s '%s' is not a date (2026-11-01) or RFC 3339 time", name, v);
	return us;
}

static void print_json(json_t *j)
{
	char *s = j ? jsonnum_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;

	if (s)
		puts(s);
	free(s);
	json_decref(j);
}

/* ---- export ---- */

static int cmd_export(const char **pos, int npos, struct cli_opt *o)
{
	uint8_t sk[crypto_sign_SECRETKEYBYTES];
	struct export_opts eo;
	struct export_result res;
	struct error err;
	const char *fmt = cli_get(o, "format"), *out = cli_get(o, "out");
	char fhex[65];
	PGconn *c;

	(void)pos, (void)npos;
	memset(&eo, 0, sizeof(eo));
	eo.from_us = time_opt(o, "from", 1);
	eo.to_us = time_opt(o, "to", 1);
	if (eo.to_us <= eo.from_us)
		tool_usage_error("--to must be after --from");
	if (cli_get(o, "account"))
		eo.account_id = tool_parse_id("--account", cli_get(o, "account"));
	if (!fmt || strcmp(fmt, "csv") == 0)
		eo.format = EXPORT_CSV;
	else if (strcmp(fmt, "ndjson") == 0)
		eo.format = EXPORT_NDJSON;
	else
		tool_usage_error("--format must be csv or ndjson, not '%s'", fmt);
	if (!out || !*out)
		tool_usage_error("missing --out");
	eo.path = out;
	eo.force = cli_has(o, "force");
	eo.operator= tool_operator(cfg);
	eo.progress = isatty(2) && !cli_has(o, "quiet") ? stderr : NULL;
	{
		long w;
		if (tool_int_opt(o, "wait-ms", 1, 3600000, &w))
			eo.wait_ms = (int)w;
	}
	if (manifest_load_secret_key(config_get(cfg, "signing_key_file"), sk, NULL, &err) < 0)
		tool_fail("%s (create one with 'billing-admin keygen --out FILE' and set signing_key_file)", err.msg);
	eo.sk = sk;
	c = tool_connect(cfg, 0);
	if (eo.account_id) {
		struct ops_account a;
		if (ops_account_get(c, eo.account_id, &a, &err) < 0) {
			sodium_memzero(sk, sizeof(sk));
			PQfinish(c);
			tool_fail_err(&err);
		}
	}
	if (export_write(c, &eo, &res, &err) < 0) {
		sodium_memzero(sk, sizeof(sk));
		PQfinish(c);
		tool_fail_err(&err);
	}
	sodium_memzero(sk, sizeof(sk));
	PQfinish(c);
	sodium_bin2hex(fhex, sizeof(fhex), res.blake2b, sizeof(res.blake2b));
	if (cli_has(o, "json"))
		print_json(json_pack("{s:s,s:s,s:I,s:I,s:I,s:s}", "file", out, "manifest", res.manifest_path, "rows",
				     (json_int_t)res.rows, "transactions", (json_int_t)res.txns, "bytes",
				     (json_int_t)res.bytes, "blake2b_256", fhex));
	else
		printf("exported %" PRId64 " rows (%" PRId64 " transactions, %" PRId64 " bytes) to %s\n"
		       "manifest %s (blake2b-256 %s, signed)\n",
		       res.rows, res.txns, res.bytes, out, res.manifest_path, fhex);
	return 0;
}

/* ---- verify ---- */

/* The trusted public key: --pubkey, else signing_key_file + ".pub" (by
 * default etc/ledger.key.pub).  1 loaded, 0 none found, exits on a bad file. */
static int trusted_key(struct cli_opt *o, uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *src, size_t srclen)
{
	struct error err;
	const char *explicit_path = cli_get(o, "pubkey");

	if (explicit_path) {
		if (manifest_load_public_key(explicit_path, pk, &err) < 0)
			tool_fail_err(&err);
		snprintf(src, srclen, "%s", explicit_path);
		return 1;
	}
	snprintf(src, srclen, "%s.pub", config_get(cfg, "signing_key_file"));
	if (manifest_load_public_key(src, pk, &err) == 0)
		return 1;
	if (strcmp(err.code, "not_found") != 0)
		tool_fail_err(&err);
	return 0;
}

static int verify_export(const char *path, struct cli_opt *o)
{
	uint8_t pk[crypto_sign_PUBLICKEYBYTES];
	char src[4200];
	struct export_verdict v;
	struct error err;
	int have = trusted_key(o, pk, src, sizeof(src));

	/* the key a manifest carries proves nothing about who signed it: a
	 * rewritten file is re-signed with the rewriter's key */
	if (!have && config_get_bool(cfg, "require_trusted_key"))
		tool_fail("verify refused: %s: no trusted public key (--pubkey FILE, or %s): the manifest's signature "
			  "could only be checked against the key it carries itself (require_trusted_key)",
			  path, src);
	if (export_verify(path, have ? pk : NULL, &v, &err) < 0)
		tool_fail_err(&err);
	if (cli_has(o, "json")) {
		print_json(json_pack("{s:s,s:b,s:I,s:s,s:I,s:I,s:s,s:o}", "file", path, "ok", v.ok, "line",
				     (json_int_t)v.line, "problem", v.problem, "rows", (json_int_t)v.rows,
				     "transactions", (json_int_t)v.txns, "public_key", v.public_key, "trusted_key",
				     have ? json_string(src) : json_null()));
	} else if (v.ok) {
		printf("ok: %s: %" PRId64 " rows, %" PRId64 " transactions; hashes, chain links, totals and size match "
		       "the manifest, signed by %s (%s)\n",
		       path, v.rows, v.txns, v.public_key,
		       have ? "the trusted key" : "its own key only: no trusted public key found");
		if (have)
			printf("trusted key: %s\n", src);
	} else {
		printf("FAILED: %s: %s\n", path, v.problem);
	}
	if (!v.ok) {
		fprintf(stderr, "ledger: verify failed: %s: %s\n", path, v.problem);
		return 1;
	}
	if (!have)
		fprintf(stderr,
			"ledger: warning: %s: the signature was checked against the key its manifest carries, which "
			"anyone who rewrote the file could have made; give --pubkey FILE (or %s), and set "
			"require_trusted_key = true to refuse this\n",
			path, src);
	return 0;
}

static int cmd_verify(const char **pos, int npos, struct cli_opt *o)
{
	struct verify_report rep;
	struct error err;
	PGconn *c;

	(void)pos, (void)npos;
	if (cli_get(o, "export"))
		return verify_export(cli_get(o, "export"), o);
	c = tool_connect(cfg, 0);
	if (verify_chain(c, isatty(2) ? stderr : NULL, &rep, &err) < 0)
		tool_fail_err(&err);
	PQfinish(c);
	if (cli_has(o, "json")) {
		print_json(json_pack("{s:b,s:I,s:I,s:o,s:o,s:o,s:o}", "ok", rep.ok, "transactions",
				     (json_int_t)rep.txns, "chains", (json_int_t)rep.writers, "problem",
				     rep.ok ? json_null() : json_string(rep.problem), "txn_id",
				     rep.ok || !rep.bad_txn_id ? json_null() : json_integer(rep.bad_txn_id), "writer",
				     rep.ok || !rep.bad_writer[0] ? json_null() : json_string(rep.bad_writer), "seq",
				     rep.ok || !rep.bad_writer[0] ? json_null() : json_integer(rep.bad_seq)));
	} else if (!rep.ok) {
		printf("FAILED after %" PRId64 " transactions: %s\n", rep.txns, rep.problem);
	} else {
		printf("ok: %" PRId64 " transactions in %" PRId64
		       " chains verified; ledger accounts and balances match postings\n",
		       rep.txns, rep.writers);
	}
	if (!rep.ok) {
		fprintf(stderr, "ledger: verify failed: %s\n", rep.problem);
		return 1;
	}
	return 0;
}

/* ---- statement ---- */

static int cmd_statement(const char **pos, int npos, struct cli_opt *o)
{
	const char *month = cli_get(o, "month"), *fmt = cli_get(o, "format");
	struct statement s;
	struct error err;
	enum statement_format f = STATEMENT_TEXT;
	int64_t id = tool_parse_id("--account", cli_get(o, "account")), from, to;
	unsigned y, m;
	char tail;
	PGconn *c;

	(void)pos, (void)npos;
	if (!month)
		tool_usage_error("missing --month (e.g. 2026-11)");
	/* digits only: sscanf's %u also takes a sign or a space ("2026-+1", "-202-11") */
	if (strlen(month) != 7 || strspn(month, "0123456789") != 4 || month[4] != '-' ||
	    strspn(month + 5, "0123456789") != 2 || sscanf(month, "%4u-%2u%c", &y, &m, &tail) != 2 || m < 1 || m > 12 ||
	    y < 1970)
		tool_usage_error("--month '%s' is not YYYY-MM", month);
	from = time_days_from_civil(y, m, 1) * 86400LL * 1000000LL;
	to = time_days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) * 86400LL * 1000000LL;
	if (cli_has(o, "json") || (fmt && strcmp(fmt, "json") == 0))
		f = STATEMENT_JSON;
	else if (fmt && strcmp(fmt, "csv") == 0)
		f = STATEMENT_CSV;
	else if (fmt && strcmp(fmt, "text") != 0)
		tool_usage_error("--format must be text, json or csv, not '%s'", fmt);
	c = tool_connect(cfg, 0);
	if (statement_build(c, id, from, to, &s, &err) < 0) {
		PQfinish(c);
		tool_fail_err(&err);
	}
	PQfinish(c);
	statement_print(&s, month, f, stdout);
	if (!s.balanced) {
		statement_release(&s);
		tool_fail("statement of account %" PRId64 " does not balance: opening plus movements != closing", id);
	}
	statement_release(&s);
	return 0;
}

/* ---- trial balance ---- */

static int cmd_trial_balance(const char **pos, int npos, struct cli_opt *o)
{
	struct trial_row rows[16];
	struct error err;
	int64_t at_us = time_opt(o, "at", 0);
	bool has_at = cli_get(o, "at") != NULL; /* 1970-01-01T00:00:00Z is an instant too */
	money_total td = 0, tc = 0;
	int n;
	PGconn *c;

	(void)pos, (void)npos;
	c = tool_connect(cfg, 0);
	n = verify_trial_balance(c, has_at ? &at_us : NULL, rows, 16, &err);
	if (n < 0)
		tool_fail_err(&err);
	PQfinish(c);
	/* at most 16 types of sums below 10^38 / 16: the totals cannot wrap */
	if (cli_has(o, "json")) {
		json_t *arr = json_array();
		for (int i = 0; i < n; i++) {
			json_array_append_new(arr, json_pack("{s:s,s:o,s:o,s:o}", "type", rows[i].type, "debits_nanos",
							     jsonnum_total(rows[i].debits), "credits_nanos",
							     jsonnum_total(rows[i].credits), "net_nanos",
							     jsonnum_total(rows[i].credits - rows[i].debits)));
			td += rows[i].debits;
			tc += rows[i].credits;
		}
		print_json(json_pack("{s:o,s:o,s:o,s:b}", "accounts", arr, "total_debits_nanos", jsonnum_total(td),
				     "total_credits_nanos", jsonnum_total(tc), "balanced", td == tc));
	} else {
		char d[MONEY_TOTAL_BUF], cr[MONEY_TOTAL_BUF], net[MONEY_TOTAL_BUF];
		printf("%-16s %22s %22s %22s\n", "account type", "debits", "credits", "net (credit +)");
		for (int i = 0; i < n; i++) {
			money_total_format(rows[i].debits, d, sizeof(d));
			money_total_format(rows[i].credits, cr, sizeof(cr));
			money_total_format(rows[i].credits - rows[i].debits, net, sizeof(net));
			printf("%-16s %22s %22s %22s\n", rows[i].type, d, cr, net);
			td += rows[i].debits;
			tc += rows[i].credits;
		}
		money_total_format(td, d, sizeof(d));
		money_total_format(tc, cr, sizeof(cr));
		money_total_format(tc - td, net, sizeof(net));
		printf("%-16s %22s %22s %22s\n", "total", d, cr, net);
	}
	if (td != tc) {
		char d[MONEY_TOTAL_BUF], cr[MONEY_TOTAL_BUF];
		money_total_str(td, d, sizeof(d));
		money_total_str(tc, cr, sizeof(cr));
		fprintf(stderr, "ledger: trial balance does not balance: debits %s != credits %s\n", d, cr);
		return 1;
	}
	return 0;
}

/* ---- reconcile ---- */

static int cmd_reconcile(const char **pos, int npos, struct cli_opt *o)
{
	struct reconcile_opts ro;
	struct reconcile_report rep;
	struct error ce;
	struct error err;
	int64_t t = 1000;
	long settle;
	PGconn *c;
	int rc;

	(void)pos, (void)npos;
	memset(&ro, 0, sizeof(ro));
	ro.redis = config_get(cfg, "redis");
	if (config_get_int(cfg, "redis_timeout_ms", 1, 600000, &t, &ce) < 0)
		tool_usage_error("%s", ce.msg);
	ro.timeout_ms = (int)t;
	ro.settle_ms = 1500;
	if (tool_int_opt(o, "settle-ms", 0, 600000, &settle))
		ro.settle_ms = (int)settle;
	ro.repair = cli_has(o, "repair");
	c = tool_connect(cfg, 0);
	if (reconcile_run(c, &ro, &rep, &err) < 0) {
		PQfinish(c);
		tool_fail_err(&err);
	}
	PQfinish(c);
	if (cli_has(o, "json")) {
		json_t *diffs = json_array(), *nl = json_array();
		for (size_t i = 0; i < rep.n_diffs; i++) {
			const struct reconcile_diff *d = &rep.diffs[i];
			json_array_append_new(
				diffs,
				json_pack("{s:I,s:{s:o,s:o,s:s},s:{s:o,s:o,s:o,s:o},s:s}", "account_id",
					  (json_int_t)d->account_id, "ledger", "paid_nanos",
					  jsonnum_total(d->ledger_paid), "promo_nanos", jsonnum_total(d->ledger_promo),
					  "status", d->ledger_status, "mirror", "paid_nanos",
					  d->mirror_has_paid ? jsonnum_total(d->mirror_paid) : json_null(),
					  "promo_nanos",
					  d->mirror_has_promo ? jsonnum_total(d->mirror_promo) : json_null(), "status",
					  d->mirror_status[0] ? json_string(d->mirror_status) : json_null(), "version",
					  d->mirror_v[0] ? json_string(d->mirror_v) : json_null(), "repair",
					  d->repaired == 1  ? "repaired"
					  : d->repaired < 0 ? "skipped"
							    : "none"));
		}
		for (size_t i = 0; i < rep.n_not_loaded_ids; i++)
			json_array_append_new(nl, json_integer(rep.not_loaded_ids[i]));
		print_json(json_pack("{s:I,s:I,s:I,s:o,s:I,s:o,s:I,s:I}", "accounts", (json_int_t)rep.accounts,
				     "matching", (json_int_t)rep.matching, "differences", (json_int_t)rep.n_diffs,
				     "diffs", diffs, "not_loaded", (json_int_t)rep.not_loaded, "not_loaded_ids", nl,
				     "repaired", (json_int_t)rep.repaired, "repair_skipped",
				     (json_int_t)rep.repair_skipped));
	} else {
		for (size_t i = 0; i < rep.n_diffs; i++) {
			const struct reconcile_diff *d = &rep.diffs[i];
			char lp[MONEY_TOTAL_BUF], lq[MONEY_TOTAL_BUF], mp[MONEY_TOTAL_BUF] = "missing",
								       mq[MONEY_TOTAL_BUF] = "missing";
			money_total_format(d->ledger_paid, lp, sizeof(lp));
			money_total_format(d->ledger_promo, lq, sizeof(lq));
			if (d->mirror_has_paid)
				money_total_format(d->mirror_paid, mp, sizeof(mp));
			if (d->mirror_has_promo)
				money_total_format(d->mirror_promo, mq, sizeof(mq));
			printf("differs: account %" PRId64 ": ledger paid %s promo %s %s; mirror paid %s promo %s %s"
			       " (version %s)%s\n",
			       d->account_id, lp, lq, d->ledger_status, mp, mq,
			       d->mirror_status[0] ? d->mirror_status : "-", d->mirror_v[0] ? d->mirror_v : "none",
			       d->repaired == 1  ? ": repaired"
			       : d->repaired < 0 ? ": NOT repaired (version moved; run again)"
						 : "");
		}
		printf("not loaded: %" PRId64 " accounts have no mirror yet (loaded on first use; not a difference)",
		       rep.not_loaded);
		for (size_t i = 0; i < rep.n_not_loaded_ids && i < 20; i++)
			printf("%s%" PRId64, i ? " " : ": ", rep.not_loaded_ids[i]);
		printf("%s\n", rep.not_loaded > 20 ? " ..." : "");
		printf("%" PRId64 " accounts: %" PRId64 " match, %zu differ%s\n", rep.accounts, rep.matching,
		       rep.n_diffs, ro.repair ? "" : (rep.n_diffs ? " (run with --repair to correct the mirror)" : ""));
	}
	rc = rep.n_diffs && (!ro.repair || rep.repair_skipped) ? 1 : 0;
	if (rc)
		fprintf(stderr, "ledger: reconcile: %zu accounts differ between the ledger and the Redis mirror%s\n",
			rep.n_diffs, ro.repair ? " and some could not be repaired" : "");
	reconcile_report_release(&rep);
	return rc;
}

static struct cli_opt o_export[] = {CLI_OPT("from", 1, "first instant, inclusive: date or RFC 3339 (UTC)"),
				    CLI_OPT("to", 1, "end instant, exclusive"),
				    CLI_OPT("account", 1, "only this customer's transactions"),
				    CLI_OPT("format", 1, "csv (default) or ndjson"),
				    CLI_OPT("out", 1, "the file to write"),
				    CLI_OPT("force", 0, "overwrite an existing file"),
				    CLI_OPT("quiet", 0, "no progress line"),
				    CLI_OPT("wait-ms", 1,
					    "wait at most this long for transactions begun before --to that are"
					    " still in progress (default 60000; then exit 1)"),
				    CLI_OPT("json", 0, "JSON summary"),
				    CLI_OPTS_END};
static struct cli_opt o_verify[] = {
	CLI_OPT("export", 1, "check an export file against FILE.manifest.json (no database)"),
	CLI_OPT("pubkey", 1, "trusted public key file (default: signing_key_file + .pub)"),
	CLI_OPT("json", 0, "JSON verdict"), CLI_OPTS_END};
static struct cli_opt o_statement[] = {CLI_OPT("account", 1, "account id"), CLI_OPT("month", 1, "YYYY-MM (UTC)"),
				       CLI_OPT("format", 1, "text (default), json or csv"),
				       CLI_OPT("json", 0, "same as --format json"), CLI_OPTS_END};
static struct cli_opt o_tb[] = {CLI_OPT("at", 1, "only entries up to this instant"), CLI_OPT("json", 0, "JSON output"),
				CLI_OPTS_END};
static struct cli_opt o_reconcile[] = {CLI_OPT("repair", 0, "write the ledger's values into the mirror"),
				       CLI_OPT("settle-ms", 1, "re-read differences after this long (default 1500)"),
				       CLI_OPT("json", 0, "JSON output"), CLI_OPTS_END};

static const struct cmd cmds[] = {
	{"export", "--from 2026-11-01 --to 2026-12-01 [--account ID] [--format csv|ndjson] --out FILE",
	 "one line per posting, streamed, with a signed FILE.manifest.json", o_export, 0, cmd_export},
	{"verify", "[--export FILE]",
	 "check the hash chains, ledger accounts and balances, or an export against its manifest (exit 1 naming the"
	 " first bad entry)",
	 o_verify, 0, cmd_verify},
	{"statement", "--account ID --month 2026-11 [--format text|json|csv]",
	 "opening balance, movements, usage by model, closing balance, paid amount consumed", o_statement, 0,
	 cmd_statement},
	{"trial-balance", "[--at TIMESTAMP]", "sum per ledger account type; exit 1 unless debits equal credits", o_tb,
	 0, cmd_trial_balance},
	{"reconcile", "[--repair]", "compare the Redis balance mirror with the ledger (exit 1 on differences)",
	 o_reconcile, 0, cmd_reconcile},
};
#define N_CMDS (sizeof(cmds) / sizeof(cmds[0]))

static void usage(void)
{
	printf("usage: ledger [--config FILE] [--KEY VALUE] COMMAND ...\n\ncommands:\n");
	for (size_t i = 0; i < N_CMDS; i++)
		printf("  %-14s %s\n  %-14s   %s\n", cmds[i].name, cmds[i].args, "", cmds[i].help);
	printf("\nAmounts print as currency units with 9 decimals.  Exit codes: 0 ok, 1 failure, 2 usage.\n"
	       "'ledger COMMAND --help' shows a command's options.\n\n");
	config_print_keys();
}

int main(int argc, char **argv)
{
	char err[256];
	const char *pos[8];
	int npos, rc;

	cfg = tool_start("ledger", &argc, argv);
	if (tool_wants_help(argc, argv)) {
		usage();
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < N_CMDS; i++) {
		const struct cmd *c = &cmds[i];
		if (strcmp(argv[1], c->name) != 0)
			continue;
		tool_cmd = c->name;
		for (int k = 2; k < argc; k++)
			if (strcmp(argv[k], "--help") == 0) {
				printf("usage: ledger %s %s\n%s\n\noptions:\n", c->name, c->args, c->help);
				cli_print_opts(c->opts);
				return 0;
			}
		if (cli_parse(argc - 2, argv + 2, c->opts, pos, c->max_pos, &npos, err, sizeof(err)) < 0)
			tool_usage_error("%s", err);
		rc = c->run(pos, npos, c->opts);
		config_free(cfg);
		return rc;
	}
	tool_usage_error("unknown command '%s'", argv[1]);
}
