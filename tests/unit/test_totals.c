/* test_totals.c: 128-bit totals (common/money.h) and their JSON form
 * (common/jsonnum.h), contract section 4a. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonnum.h"
#include "common/money.h"
#include "tests/unit/tap.h"

static void test_parse_and_format(void)
{
	static const struct {
		const char *in;
		int ok;
		const char *units; /* money_total_format of the value */
	} cases[] = {
		{"0", 1, "0.000000000"},
		{"-1", 1, "-0.000000001"},
		{"9223372036854775807", 1, "9223372036.854775807"},
		{"9223372036854775808", 1, "9223372036.854775808"},
		{"-9223372036854775809", 1, "-9223372036.854775809"},
		{"18446744073709551616", 1, "18446744073.709551616"},
		{"1000000000000000000000000000000", 1, "1000000000000000000000.000000000"}, /* 10^30 */
		{"99999999999999999999999999999999999999", 1, "99999999999999999999999999999.999999999"},
		{"999999999999999999999999999999999999999", 0, ""}, /* 39 digits */
		{"", 0, ""},
		{"-", 0, ""},
		{"12a", 0, ""},
		{"1.5", 0, ""},
		{" 1", 0, ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		money_total v = 0;
		char s[MONEY_TOTAL_BUF], u[MONEY_TOTAL_BUF];
		int ok = money_total_parse(cases[i].in, &v) == 0;
		OK(ok == cases[i].ok, "parse '%s' %s", cases[i].in, cases[i].ok ? "accepted" : "refused");
		if (!ok || !cases[i].ok)
			continue;
		money_total_str(v, s, sizeof(s));
		IS_STR(s, cases[i].in[0] == '+' ? cases[i].in + 1 : cases[i].in, "round trip");
		money_total_format(v, u, sizeof(u));
		IS_STR(u, cases[i].units, "units");
	}
	{
		char s[MONEY_TOTAL_BUF];
		money_total big = (money_total)INT64_MAX * 4 + 3;
		IS_I64(money_total_clamp(big), INT64_MAX, "clamp above");
		IS_I64(money_total_clamp(-big), INT64_MIN, "clamp below");
		IS_I64(money_total_clamp(-5), -5, "clamp within");
		money_total_str(-big, s, sizeof(s));
		IS_STR(s, "-36893488147419103231", "negative 128-bit");
	}
}

static void test_json(void)
{
	money_total big = (money_total)INT64_MAX + 1;
	json_t *o = json_pack("{s:o,s:o,s:o,s:s}", "a_nanos", jsonnum_total(big), "b_nanos", jsonnum_total(-big - 1),
			      "c_nanos", jsonnum_total(42), "name", "x");
	char *s = jsonnum_dumps(o, JSON_COMPACT | JSON_SORT_KEYS), *s2;
	json_t *back;
	char d[MONEY_TOTAL_BUF];

	IS_STR(s, "{\"a_nanos\":9223372036854775808,\"b_nanos\":-9223372036854775809,\"c_nanos\":42,\"name\":\"x\"}",
	       "totals beyond int64 are bare integer literals");
	OK(json_is_integer(json_object_get(o, "c_nanos")), "within int64: a plain json integer");
	back = jsonnum_loads(s, 0, NULL);
	OK(back != NULL, "jsonnum_loads reads literals beyond int64");
	OK(back && jsonnum_value(json_object_get(back, "a_nanos")) == big, "value read back exactly");
	OK(back && jsonnum_value(json_object_get(back, "b_nanos")) == -big - 1, "negative value read back exactly");
	OK(back && jsonnum_is_big(json_object_get(back, "a_nanos"), d, sizeof(d)) &&
		   strcmp(d, "9223372036854775808") == 0,
	   "jsonnum_is_big gives the digits");
	s2 = back ? jsonnum_dumps(back, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	IS_STR(s2, s, "dump(load(x)) == x");
	free(s2);
	json_decref(back);
	free(s);
	json_decref(o);

	/* strings that only look like totals stay strings; digits in strings and reals stay */
	{
		const char *in = "{\"s\":\"\\u000199999999999999999999\",\"t\":\"99999999999999999999\","
				 "\"r\":99999999999999999999.5,\"e\":1e30,\"q\":\"a\\\"99999999999999999999\"}";
		json_t *j = jsonnum_loads(in, 0, NULL);
		char *out = j ? jsonnum_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		OK(j && json_is_string(json_object_get(j, "t")) &&
			   strcmp(json_string_value(json_object_get(j, "t")), "99999999999999999999") == 0,
		   "a string of digits stays a string");
		OK(j && json_is_real(json_object_get(j, "r")) && json_is_real(json_object_get(j, "e")),
		   "real numbers stay reals");
		OK(j && !jsonnum_is_big(json_object_get(j, "s"), (char[MONEY_TOTAL_BUF]){0}, MONEY_TOTAL_BUF),
		   "a caller's control character does not make a total");
		OK(out && strstr(out, "\"t\":\"99999999999999999999\"") != NULL, "and is written as a string");
		free(out);
		json_decref(j);
	}
	OK(jsonnum_value(NULL) == 0, "NULL reads as 0");
}

/* money_total_str divides in 64 bits once the rest fits: the digits either
 * side of 2^64 and of INT128's ends, and a cut buffer as snprintf cuts it */
static void test_str_edges(void)
{
	static const struct {
		const char *in;
	} cases[] = {
		{"18446744073709551615"},
		{"18446744073709551616"},
		{"-18446744073709551615"},
		{"-18446744073709551616"},
		{"18446744073709551617"},
		{"99999999999999999999999999999999999999"},
		{"-99999999999999999999999999999999999999"},
		{"10000000000000000000"},
		{"9999999999999999999"},
		{"-9223372036854775808"},
		{"7"},
	};
	char s[MONEY_TOTAL_BUF];
	money_total v, min = (money_total)((unsigned __int128)1 << 127);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		OK(money_total_parse(cases[i].in, &v) == 0, "parse %s", cases[i].in);
		money_total_str(v, s, sizeof(s));
		IS_STR(s, cases[i].in, "round trip beside 2^64");
	}
	money_total_str(min, s, sizeof(s));
	IS_STR(s, "-170141183460469231731687303715884105728", "INT128 min");
	money_total_str(~min, s, sizeof(s));
	IS_STR(s, "170141183460469231731687303715884105727", "INT128 max");
	money_total_str(-123456, s, 5);
	IS_STR(s, "-123", "cut to buflen - 1, as snprintf");
	money_total_str(42, s, 1);
	IS_STR(s, "", "buflen 1: empty");
	s[0] = 'x';
	money_total_str(42, s, 0);
	OK(s[0] == 'x', "buflen 0: nothing written");
}

int main(void)
{
	test_parse_and_format();
	test_str_edges();
	test_json();
	return tap_done();
}
