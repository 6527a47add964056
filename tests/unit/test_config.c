/* test_config.c: the configuration (common/config.c): the file syntax, the
 * key table's types and ranges (config_check, config_int). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "tests/unit/tap.h"

/* ---- config ---- */

static void the_file_syntax_and_its_errors_name_the_line(void)
{
	struct config *cfg = config_new();
	struct error err;
	const char *good = "# billingd test config\n"
			   "\n"
			   "   # indented comment\n"
			   "listen = 0.0.0.0:9999\n"
			   "  pg=host=x port=1 dbname=b   # trailing comment\n"
			   "redis = a#b\r\n"
			   "batch_max\t=\t17\n"
			   "log_level = debug"; /* no final newline */
	const char *unknown = "listen = 1.2.3.4:5\n# c\nnosuch_key = 1\nredis = x\n";
	const char *noeq = "listen = 1.2.3.4:5\n\n\njust words\n";
	int64_t v;

	OK(cfg != NULL, "config_new");
	IS_STR(config_get(cfg, "batch_max"), "256", "default batch_max");
	memset(&err, 0, sizeof(err));
	OK(config_parse_text(cfg, good, strlen(good), &err) == 0, "good config parses (%s)", err.msg);
	IS_STR(config_get(cfg, "listen"), "0.0.0.0:9999", "listen");
	IS_STR(config_get(cfg, "pg"), "host=x port=1 dbname=b", "value keeps '=', trailing comment cut");
	IS_STR(config_get(cfg, "redis"), "a#b", "'#' not after a space is part of the value; CR stripped");
	IS_STR(config_get(cfg, "log_level"), "debug", "last line without newline");
	OK(config_get_int(cfg, "batch_max", 1, 100, &v, &err) == 0 && v == 17, "batch_max = 17 with tabs");
	OK(config_get_int(cfg, "batch_max", 1, 10, &v, &err) == -1, "out of range integer refused");
	memset(&err, 0, sizeof(err));
	OK(config_parse_text(cfg, unknown, strlen(unknown), &err) == -1, "unknown key refused");
	OK(strncmp(err.msg, "line 3: ", 8) == 0 && strcmp(err.code, "config") == 0,
	   "unknown key: line number first (%s)", err.msg);
	OK(strstr(err.msg, "nosuch_key") && strstr(err.msg, "line 3"), "unknown key named with its line (%s)", err.msg);
	memset(&err, 0, sizeof(err));
	OK(config_parse_text(cfg, noeq, strlen(noeq), &err) == -1, "line without '=' refused");
	OK(strncmp(err.msg, "line 4: ", 8) == 0, "line without '=': line number first (%s)", err.msg);
	memset(&err, 0, sizeof(err));
	{
		static const char withnul[] = "listen = 1.2.3.4:5\nredis = a\0b\n";
		OK(config_parse_text(cfg, withnul, sizeof(withnul) - 1, &err) == -1, "a NUL byte in the file refused");
		OK(strncmp(err.msg, "line 2: ", 8) == 0, "NUL byte: line number first (%s)", err.msg);
	}
	OK(config_set(cfg, "nosuch", "1") == -1, "config_set unknown key");
	OK(config_is_key("signing_key_file") && !config_is_key("signing_key"), "config_is_key");
	config_free(cfg);
}

static void values_are_held_to_the_key_table(void)
{
	struct config *cfg = config_new();
	struct error err;
	int64_t v = 0;
	static const struct {
		const char *key, *value, *msg; /* msg NULL: accepted */
	} cases[] = {
		{"batch_max", "1", NULL},
		{"batch_max", "10000", NULL},
		{"batch_max", "0", "config key 'batch_max': expected an integer in [1, 10000]"},
		{"batch_max", "10001", "config key 'batch_max': expected an integer in [1, 10000]"},
		{"batch_max", "12x", "config key 'batch_max': expected an integer in [1, 10000]"},
		{"batch_max", "", "config key 'batch_max': expected an integer in [1, 10000]"},
		{"redis_fail_open", "yes", NULL},
		{"redis_fail_open", "off", NULL},
		{"redis_fail_open", "maybe", "config key 'redis_fail_open': expected true or false"},
		{"referral_trigger", "topup", NULL},
		{"referral_trigger", "top", "config key 'referral_trigger': expected one of verify|topup"},
		{"referral_trigger", "verify|topup", "config key 'referral_trigger': expected one of verify|topup"},
		{"referral_trigger", "", "config key 'referral_trigger': expected one of verify|topup"},
		{"max_topup", "0.5", NULL},
		{"max_topup", "0", "config key 'max_topup': expected a positive amount in currency units"},
		{"log_level", "warn", NULL},
		{"log_level", "trace", "config key 'log_level': expected one of debug|info|warn|error"},
		{"listen", "anything at all", NULL},
	};

	OK(cfg && config_check(cfg, &err) == 0, "every default passes its own key table");
	OK(config_int(cfg, "batch_max", &v, &err) == 0 && v == 256, "config_int reads the default in range");
	OK(config_int(cfg, "listen", &v, &err) == -1 &&
		   strcmp(err.msg, "config key 'listen' is not an integer key") == 0,
	   "config_int refuses a key that is not an integer (%s)", err.msg);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *c = config_new();
		int rc;

		memset(&err, 0, sizeof(err));
		OK(c && config_set(c, cases[i].key, cases[i].value) == 0, "set %s", cases[i].key);
		rc = config_check(c, &err);
		if (cases[i].msg)
			OK(rc == -1 && strcmp(err.msg, cases[i].msg) == 0 && strcmp(err.code, "config") == 0,
			   "%s = '%s' refused: %s", cases[i].key, cases[i].value, err.msg);
		else
			OK(rc == 0, "%s = '%s' accepted (%s)", cases[i].key, cases[i].value, err.msg);
		config_free(c);
	}
	config_free(cfg);
}

int main(void)
{
	the_file_syntax_and_its_errors_name_the_line();
	values_are_held_to_the_key_table();
	return tap_done();
}
