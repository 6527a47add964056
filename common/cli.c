/* cli.c: see cli.h. */
#include "common/cli.h"

#include <stdio.h>
#include <string.h>

static struct cli_opt *find(struct cli_opt *opts, const char *name, size_t len)
{
	for (; opts->name; opts++)
		if (strlen(opts->name) == len && strncmp(opts->name, name, len) == 0)
			return opts;
	return NULL;
}

int cli_parse(int argc, char **argv, struct cli_opt *opts, const char **pos, int max_pos, int *npos, char *err,
	      size_t errlen)
{
	*npos = 0;
	for (struct cli_opt *o = opts; o->name; o++)
		o->count = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--", 2) == 0 && a[2]) {
			const char *eq = strchr(a + 2, '=');
			size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
			struct cli_opt *o = find(opts, a + 2, len);
			const char *v = NULL;

			if (!o) {
				snprintf(err, errlen, "unknown option '%s'", a);
				return -1;
			}
			if (o->has_arg) {
				if (eq)
					v = eq + 1;
				else if (i + 1 < argc)
					v = argv[++i];
				else {
					snprintf(err, errlen, "option '--%s' needs a value", o->name);
					return -1;
				}
			} else if (eq) {
				snprintf(err, errlen, "option '--%s' takes no value", o->name);
				return -1;
			}
			if (o->count == CLI_MAX_VALUES) {
				snprintf(err, errlen, "option '--%s' given too often", o->name);
				return -1;
			}
			o->values[o->count++] = v ? v : "";
		} else {
			if (*npos == max_pos) {
				snprintf(err, errlen, "unexpected argument '%s'", a);
				return -1;
			}
			pos[(*npos)++] = a;
		}
	}
	return 0;
}

const char *cli_get(const struct cli_opt *opts, const char *name)
{
	for (; opts->name; opts++)
		if (strcmp(opts->name, name) == 0)
			return opts->count ? opts->values[opts->count - 1] : NULL;
	return NULL;
}

int cli_has(const struct cli_opt *opts, const char *name)
{
	for (; opts->name; opts++)
		if (strcmp(opts->name, name) == 0)
			return opts->count > 0;
	return 0;
}

void cli_print_opts(const struct cli_opt *opts)
{
	for (; opts->name; opts++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s%s", opts->name, opts->has_arg ? " VALUE" : "");
		printf("  %-26s %s\n", left, opts->help ? opts->help : "");
	}
}
