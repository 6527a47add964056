/* ledger_cli.c: the finance CLI (CONTRACT.md §5): verify, trial-balance,
 * and (see README) export, statement, reconcile. */
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cli.h"
#include "common/config.h"
#include "common/money.h"
#include "common/timeutil.h"
#include "ledger/db.h"
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

static int cmd_verify(const char **pos, int npos, struct cli_opt *o)
{
	struct verify_report rep;
	struct error err;
	PGconn *c;

	(void)pos, (void)npos;
	if (cli_get(o, "export"))
		tool_fail("verify --export is not available in this build yet");
	c = tool_connect(cfg, 0);
	if (verify_chain(c, isatty(2) ? stderr : NULL, &rep, &err) < 0)
		tool_fail_err(&err);
	PQfinish(c);
	if (!rep.ok) {
		fprintf(stderr, "ledger: verify failed: %s\n", rep.problem);
		printf("FAILED after %" PRId64 " transactions: %s\n", rep.txns, rep.problem);
		return 1;
	}
	printf("ok: %" PRId64 " transactions in %" PRId64 " chains verified; balances match postings\n", rep.txns,
	       rep.writers);
	return 0;
}

static int cmd_trial_balance(const char **pos, int npos, struct cli_opt *o)
{
	struct trial_row rows[16];
	struct error err;
	const char *at = cli_get(o, "at");
	int64_t at_us = 0, td = 0, tc = 0;
	int n;
	PGconn *c;

	(void)pos, (void)npos;
	if (at && time_parse_rfc3339(at, 1, &at_us) < 0)
		tool_usage_error("--at '%s' is not a date or RFC 3339 time", at);
	c = tool_connect(cfg, 0);
	n = verify_trial_balance(c, at_us, rows, 16, &err);
	if (n < 0)
		tool_fail_err(&err);
	PQfinish(c);
	if (cli_has(o, "json")) {
		json_t *arr = json_array(), *j;
		char *s;
		for (int i = 0; i < n; i++) {
			json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:I}", "type", rows[i].type, "debits_nanos",
							     (json_int_t)rows[i].debits, "credits_nanos",
							     (json_int_t)rows[i].credits, "net_nanos",
							     (json_int_t)(rows[i].credits - rows[i].debits)));
			td += rows[i].debits;
			tc += rows[i].credits;
		}
		j = json_pack("{s:o,s:I,s:I,s:b}", "accounts", arr, "total_debits_nanos", (json_int_t)td,
			      "total_credits_nanos", (json_int_t)tc, "balanced", td == tc);
		s = json_dumps(j, JSON_INDENT(2));
		puts(s);
		free(s);
		json_decref(j);
	} else {
		printf("%-16s %22s %22s %22s\n", "account type", "debits", "credits", "net (credit +)");
		for (int i = 0; i < n; i++) {
			char d[40], cr[40], net[40];
			money_format(rows[i].debits, d, sizeof(d));
			money_format(rows[i].credits, cr, sizeof(cr));
			money_format(rows[i].credits - rows[i].debits, net, sizeof(net));
			printf("%-16s %22s %22s %22s\n", rows[i].type, d, cr, net);
			td += rows[i].debits;
			tc += rows[i].credits;
		}
		{
			char d[40], cr[40], net[40];
			money_format(td, d, sizeof(d));
			money_format(tc, cr, sizeof(cr));
			money_format(tc - td, net, sizeof(net));
			printf("%-16s %22s %22s %22s\n", "total", d, cr, net);
		}
	}
	if (td != tc) {
		fprintf(stderr, "ledger: trial balance does not balance: debits %" PRId64 " != credits %" PRId64 "\n", td,
			tc);
		return 1;
	}
	return 0;
}

#define END_OPTS {NULL, 0, NULL, 0, {NULL}}
#define O(n, a, h) {n, a, h, 0, {NULL}}
static struct cli_opt o_verify[] = {O("export", 1, "check an export file against its manifest"), END_OPTS};
static struct cli_opt o_tb[] = {O("at", 1, "only entries up to this instant"), O("json", 0, "JSON output"),
				END_OPTS};

static const struct cmd cmds[] = {
	{"verify", "[--export FILE]", "check the hash chains and balances (exit 1 naming the first bad entry)",
	 o_verify, 0, cmd_verify},
	{"trial-balance", "[--at TIMESTAMP]", "sum per ledger account type; exit 1 unless debits equal credits", o_tb,
	 0, cmd_trial_balance},
};
#define N_CMDS (sizeof(cmds) / sizeof(cmds[0]))

static void usage(void)
{
	printf("usage: ledger [--config FILE] [--KEY VALUE] COMMAND ...\n\ncommands:\n");
	for (size_t i = 0; i < N_CMDS; i++)
		printf("  %-15s %-22s %s\n", cmds[i].name, cmds[i].args, cmds[i].help);
	printf("\nAmounts print as currency units with 9 decimals.  Exit codes: 0 ok, 1 failure, 2 usage.\n\n");
	config_print_keys();
}

int main(int argc, char **argv)
{
	struct config_error ce;
	char err[256];
	const char *pos[8];
	int npos, rc;

	tool_name = "ledger";
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
		if (strcmp(argv[1], c->name) != 0)
			continue;
		for (int k = 2; k < argc; k++)
			if (strcmp(argv[k], "--help") == 0) {
				printf("usage: ledger %s %s\n%s\n\noptions:\n", c->name, c->args, c->help);
				cli_print_opts(c->opts);
				return 0;
			}
		if (cli_parse(argc - 2, argv + 2, c->opts, pos, c->max_pos, &npos, err, sizeof(err)) < 0)
			tool_usage_error("%s: %s", c->name, err);
		rc = c->run(pos, npos, c->opts);
		config_free(cfg);
		return rc;
	}
	tool_usage_error("unknown command '%s'", argv[1]);
}
