/* admin_common.h: what billing-admin and ledger share: error exits,
 * connection, operator name. */
#ifndef TOOLS_ADMIN_COMMON_H
#define TOOLS_ADMIN_COMMON_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/cli.h"
#include "common/config.h"
#include "common/error.h"

extern const char *tool_name;
/* The command being run ("account create"), "" before one is known: usage
 * errors point to its help. */
extern const char *tool_cmd;

/* Prints "NAME: message" to stderr and exits 1 (failure) or 2 (usage: one
 * line that ends with "(see 'NAME CMD --help')"). */
void tool_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void tool_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void tool_fail_err(const struct error *err) __attribute__((noreturn));

/* The start of a CLI's main: names the program (error lines), initialises
 * libsodium, reads the configuration (CONTRACT.md §1; from the repository
 * root without --config, var/billingd.conf, the stack of `make run`) and
 * removes its flags from argv.  Returns the configuration or exits (1, or 2
 * with the config error).  Then true when argv asks for the program's
 * help (none, --help, -h, help): main prints it and returns argc < 2 ? 2 : 0. */
struct config *tool_start(const char *name, int *argc, char **argv);
bool tool_wants_help(int argc, char **argv);

/* Connects with the config's `pg` (or pg_owner when owner and set); exits on failure. */
PGconn *tool_connect(const struct config *cfg, int owner);
/* The operator: config `operator`, else $SUDO_USER, $USER, the login name. */
const char *tool_operator(const struct config *cfg);
/* The flag NAME as an integer in [min, max] (into *out when not NULL), or
 * NULL when absent; exits 2 ("--NAME must be an integer MIN..MAX, not 'V'")
 * on anything else. */
const char *tool_int_opt(const struct cli_opt *o, const char *name, long min, long max, long *out);
/* A positive id (what names it in the error); exits 2 on garbage. */
int64_t tool_parse_id(const char *what, const char *s);

#endif
