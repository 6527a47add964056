/* cli.h: subcommand options for the CLIs: `--name value`, `--name=value`, `--flag`.
 * Options may repeat (each value kept, in order).  Pure logic. */
#ifndef COMMON_CLI_H
#define COMMON_CLI_H

#include <stddef.h>

#define CLI_MAX_VALUES 16

struct cli_opt {
	const char *name; /* without dashes, e.g. "account" */
	int has_arg;      /* 1 takes a value, 0 is a flag */
	const char *help;
	/* filled by cli_parse */
	int count;
	const char *values[CLI_MAX_VALUES];
};

/* Rows of an option table (clang-format would spread these over lines). */
/* clang-format off */
#define CLI_OPT(name, has_arg, help) {name, has_arg, help, 0, {NULL}}
#define CLI_OPTS_END {NULL, 0, NULL, 0, {NULL}}
/* clang-format on */

/* Parses argv[0..argc) into opts (terminated by name == NULL) and positional
 * arguments.  0, or -1 with a message in err (an unknown option, a missing
 * value, too many positionals). */
int cli_parse(int argc, char **argv, struct cli_opt *opts, const char **pos, int max_pos, int *npos, char *err,
	      size_t errlen) __attribute__((warn_unused_result));
/* Last value of an option, or NULL. */
const char *cli_get(const struct cli_opt *opts, const char *name);
int cli_has(const struct cli_opt *opts, const char *name);
/* Prints "  --name VALUE  help" lines. */
void cli_print_opts(const struct cli_opt *opts);

#endif
