/* test_money.c: amounts (common/money.c): money_parse, money_format and
 * money_muldiv_round, table-driven, every expected value written by hand. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/money.h"
#include "tests/unit/tap.h"

/* ---- money ---- */

static void amounts_parse_and_format_exactly(void)
{
	static const struct {
		const char *s;
		int rc;
		int64_t want;
	} cases[] = {
		{"14", 0, 14 * UNIT},
		{"14.00", 0, 14 * UNIT},
		{"-1.50", 0, -1500000000},
		{"0.000001", 0, 1000},
		{"0.000000001", 0, 1},
		{"-0.000000001", 0, -1},
		{"0", 0, 0},
		{"0.5", 0, 500000000},
		{"123.456789012", 0, 123456789012},
		{"9223372036.854775807", 0, INT64_MAX},
		{"9223372036", 0, 9223372036000000000LL},
		{"-9223372036.854775807", 0, -INT64_MAX},
		{"9223372036.854775808", -1, 0},
		{"9223372037", -1, 0},
		{"99999999999999999999999999", -1, 0},
		{"0.0000000001", -1, 0},
		{"1.1234567890", -1, 0},
		{"1.000000000", 0, UNIT},
		{"", -1, 0},
		{"-", -1, 0},
		{"abc", -1, 0},
		{"1.", -1, 0},
		{".5", -1, 0},
		{"1e3", -1, 0},
		{" 1", -1, 0},
		{"1 ", -1, 0},
		{"1,5", -1, 0},
		{"--1", -1, 0},
		{"1.2.3", -1, 0},
		{"0x10", -1, 0},
	};
	static const struct {
		int64_t v;
		const char *want;
	} fmt[] = {
		{0, "0.000000000"},
		{1, "0.000000001"},
		{-1500000000, "-1.500000000"},
		{14 * UNIT, "14.000000000"},
		{INT64_MAX, "9223372036.854775807"},
		{INT64_MIN, "-9223372036.854775808"},
		{-1, "-0.000000001"},
	};
	struct error err;
	char buf[64];
	int64_t v, r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;
		v = -777;
		memset(&err, 0, sizeof(err));
		rc = money_parse(cases[i].s, &v, &err);
		if (cases[i].rc == 0) {
			OK(rc == 0 && v == cases[i].want, "money_parse '%s' = %" PRId64 " (got rc %d, %" PRId64 ")",
			   cases[i].s, cases[i].want, rc, v);
		} else {
			OK(rc == -1 && v == -777 && err.msg[0] && err.status == 422 &&
				   strcmp(err.code, "invalid_amount") == 0,
			   "money_parse '%s' refused: 422 invalid_amount (%s)", cases[i].s, err.msg);
		}
	}
	OK(money_parse("0.0000000001", &v, &err) == -1 && strstr(err.msg, "9 decimal"),
	   "10 decimals: the message says why (%s)", err.msg);
	for (size_t i = 0; i < sizeof(fmt) / sizeof(fmt[0]); i++) {
		char name[80];
		money_format(fmt[i].v, buf, sizeof(buf));
		snprintf(name, sizeof(name), "money_format %" PRId64, fmt[i].v);
		IS_STR(buf, fmt[i].want, name);
		/* and back */
		if (fmt[i].v != INT64_MIN) {
			OK(money_parse(buf, &v, &err) == 0 && v == fmt[i].v, "format/parse round trip %s", buf);
		}
	}
	OK(money_muldiv_round(5, 1, 10, &r) == 0 && r == 1, "muldiv 0.5 rounds up");
	OK(money_muldiv_round(4, 1, 10, &r) == 0 && r == 0, "muldiv 0.4 rounds down");
	OK(money_muldiv_round(25, 1, 10, &r) == 0 && r == 3, "muldiv 2.5 rounds to 3");
	OK(money_muldiv_round(INT64_MAX, 1000000, 1000000, &r) == 0 && r == INT64_MAX, "muldiv 128-bit intermediate");
	OK(money_muldiv_round(INT64_MAX, 2, 1, &r) == -1, "muldiv overflow refused");
	OK(money_muldiv_round(1, 1, 0, &r) == -1, "muldiv by zero refused");
	OK(money_muldiv_round(-1, 1, 1, &r) == -1, "muldiv negative refused");
}

int main(void)
{
	amounts_parse_and_format_exactly();
	return tap_done();
}
