/* admin_common.c: see admin_common.h.  Linked into both CLIs (not billingd). */
#include "tools/admin_common.h"

#include <errno.h>
#include <pwd.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger/db.h"

const char *tool_name = "tool";
const char *tool_cmd = "";

struct config *tool_start(const char *name, int *argc, char **argv)
{
	struct config *cfg;
	struct error ce;

	tool_name = name;
	if (sodium_init() < 0)
		tool_fail("cannot initialise libsodium");
	cfg = config_new();
	if (!cfg)
		tool_fail("out of memory");
	config_default_file = "var/billingd.conf";
	if (config_from_args(cfg, argc, argv, &ce) < 0)
		tool_usage_error("%s", ce.msg);
	return cfg;
}

bool tool_wants_help(int argc, char **argv)
{
	return argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0;
}

static void vmsg(const char *fmt, va_list ap)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "%s: ", tool_name);
	error_print_line(stderr, prefix, "", fmt, ap);
}

void tool_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	exit(1);
}

void tool_usage_error(const char *fmt, ...)
{
	va_list ap;

	char prefix[64], suffix[160];

	/* one line, as every error of the CLIs */
	snprintf(prefix, sizeof(prefix), "%s: ", tool_name);
	snprintf(suffix, sizeof(suffix), " (see '%s %s%s--help')", tool_name, tool_cmd, *tool_cmd ? " " : "");
	va_start(ap, fmt);
	error_print_line(stderr, prefix, suffix, fmt, ap);
	va_end(ap);
	exit(2);
}

void tool_fail_err(const struct error *err)
{
	tool_fail("%s (%s)", err->msg, err->code);
}

PGconn *tool_connect(const struct config *cfg, int owner)
{
	struct error err;
	const char *ci = config_get(cfg, owner && *config_get(cfg, "pg_owner") ? "pg_owner" : "pg");
	int64_t t = 5000, sc = 0;
	struct error ce;
	PGconn *c;

	/* every value checked as billingd checks it at start (a misspelled
	 * referral_trigger would otherwise read as the default): one line, exit 1
	 * as for any other failure of the command (not 2: the command line was
	 * right, the configuration is not) */
	if (config_check(cfg, &ce) < 0 || config_get_int(cfg, "pg_timeout_ms", 100, 3600000, &t, &ce) < 0 ||
	    config_get_int(cfg, "pg_standby_confirm_ms", 0, 600000, &sc, &ce) < 0) {
		fprintf(stderr, "%s: %s\n", tool_name, ce.msg);
		exit(1);
	}
	db_set_standby_confirm((int)sc);
	c = db_connect(ci, (int)t, &err);
	if (!c)
		tool_fail_err(&err);
	return c;
}

const char *tool_operator(const struct config *cfg)
{
	const char *o = config_get(cfg, "operator");
	struct passwd *pw;

	if (*o)
		return o;
	if ((o = getenv("SUDO_USER")) && *o)
		return o;
	if ((o = getenv("USER")) && *o)
		return o;
	pw = getpwuid(getuid());
	return pw ? pw->pw_name : "unknown";
}

const char *tool_int_opt(const struct cli_opt *o, const char *name, long min, long max, long *out)
{
	const char *v = cli_get(o, name);
	char *end;
	long x;

	if (!v)
		return NULL;
	errno = 0;
	x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < min || x > max)
		tool_usage_error("--%s must be an integer %ld..%ld, not '%s'", name, min, max, v);
	if (out)
		*out = x;
	return v;
}

int64_t tool_parse_id(const char *what, const char *s)
{
	char *end;
	long long v;

	if (!s)
		tool_usage_error("missing %s", what);
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v <= 0)
		tool_usage_error("%s '%s' is not a positive integer", what, s);
	return v;
}
