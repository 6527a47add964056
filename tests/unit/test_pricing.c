/* test_pricing.c: the pure money logic, table-driven.
 *
 * pricing_cost (the formula of CONTRACT.md §2), pricing_multiplier and the
 * window parser, pricing_select, burndown_sort/burndown_charge (§3),
 * money_parse/money_format/money_muldiv_round, time_parse_rfc3339 and
 * config_parse_text.  Every expected amount is written out by hand in the
 * tables (worked out with exact integer arithmetic outside this code), and
 * the cost table is also checked against a second, independent evaluation
 * of the formula (quotient and remainder instead of adding one half). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/usage/burndown.h"
#include "billing/usage/pricing.h"
#include "common/config.h"
#include "common/money.h"
#include "common/timeutil.h"
#include "tests/unit/tap.h"

#define U 1000000000LL                 /* one currency unit in nanos */
#define DAY_US (86400LL * 1000000)
#define D0 (1795910400LL * 1000000)    /* 2026-11-29T00:00:00Z */
#define AT(h, m, s, us) (D0 + ((h) * 3600LL + (m) * 60LL + (s)) * 1000000 + (us))

/* ---- pricing_cost ---- */

struct cost_case {
	const char *name;
	int64_t in_price, cached_price, out_price; /* nanos per 1M tokens */
	const char *windows;
	bool paid_only;
	int64_t in, cached, out;
	int64_t t_us;
	int64_t m;    /* the multiplier this instant must get, by hand */
	int rc;       /* 0 or -1 */
	int64_t want; /* nanos, by hand */
};

#define STD 2 * U, U / 2, 8 * U /* 2 / 0.5 / 8 units per 1M */
#define OFFPEAK "22:00-02:00=5000"
#define TWO_WIN "16:30-00:30=5000,09:00-10:00=7500"

static const struct cost_case cost_cases[] = {
	/* plain arithmetic */
	{"zero tokens", STD, "", false, 0, 0, 0, AT(12, 0, 0, 0), 10000, 0, 0},
	{"one input token", STD, "", false, 1, 0, 0, AT(12, 0, 0, 0), 10000, 0, 2000},
	{"one output token", STD, "", false, 0, 0, 1, AT(12, 0, 0, 0), 10000, 0, 8000},
	{"1000 in 500 out", STD, "", false, 1000, 0, 500, AT(12, 0, 0, 0), 10000, 0, 6000000},
	{"cache hit 400 of 1000", STD, "", false, 1000, 400, 500, AT(12, 0, 0, 0), 10000, 0, 5400000},
	{"all input cached", STD, "", false, 1000, 1000, 0, AT(12, 0, 0, 0), 10000, 0, 500000},
	{"cached price zero", 2 * U, 0, 8 * U, "", false, 1000, 999, 0, AT(12, 0, 0, 0), 10000, 0, 2000},
	{"odd prices", 1234567891, 123456789, 9876543211, "", false, 777, 333, 4444, AT(12, 0, 0, 0), 10000, 0, 44480617},
	{"paid_only does not change cost", STD, "", true, 1000, 400, 500, AT(12, 0, 0, 0), 10000, 0, 5400000},
	{"paid_only in a window", STD, OFFPEAK, true, 1000, 400, 500, AT(23, 0, 0, 0), 5000, 0, 2700000},
	/* rounding: floor(x + 1/2), exactly one half goes up */
	{"0.5 nano rounds up", 1, 0, 0, "", false, 500000, 0, 0, AT(12, 0, 0, 0), 10000, 0, 1},
	{"0.499999 rounds down", 1, 0, 0, "", false, 499999, 0, 0, AT(12, 0, 0, 0), 10000, 0, 0},
	{"0.500001 rounds up", 1, 0, 0, "", false, 500001, 0, 0, AT(12, 0, 0, 0), 10000, 0, 1},
	{"1.5 rounds to 2", 1, 0, 0, "", false, 1500000, 0, 0, AT(12, 0, 0, 0), 10000, 0, 2},
	{"1.499999 rounds to 1", 1, 0, 0, "", false, 1499999, 0, 0, AT(12, 0, 0, 0), 10000, 0, 1},
	{"2.5 rounds to 3 (not to even)", 1, 0, 0, "", false, 2500000, 0, 0, AT(12, 0, 0, 0), 10000, 0, 3},
	{"half from cached part", 0, 1, 0, "", false, 500000, 500000, 0, AT(12, 0, 0, 0), 10000, 0, 1},
	{"half from output part", 0, 0, 3, "", false, 0, 0, 500000, AT(12, 0, 0, 0), 10000, 0, 2},
	{"half made by the window", 1, 0, 0, OFFPEAK, false, 1000000, 0, 0, AT(23, 0, 0, 0), 5000, 0, 1},
	{"quarter made by window rounds down", 1, 0, 0, "11:00-13:00=2500", false, 1000000, 0, 0, AT(12, 0, 0, 0), 2500, 0, 0},
	/* an off-peak window across midnight, [22:00, 02:00) */
	{"window start inclusive 22:00", STD, OFFPEAK, false, 1000, 0, 500, AT(22, 0, 0, 0), 5000, 0, 3000000},
	{"just before window 21:59:59.999999", STD, OFFPEAK, false, 1000, 0, 500, AT(21, 59, 59, 999999), 10000, 0,
	 6000000},
	{"window at midnight", STD, OFFPEAK, false, 1000, 0, 500, AT(0, 0, 0, 0), 5000, 0, 3000000},
	{"window 23:59:59.999999", STD, OFFPEAK, false, 1000, 0, 500, AT(23, 59, 59, 999999), 5000, 0, 3000000},
	{"window last instant 01:59:59.999999", STD, OFFPEAK, false, 1000, 0, 500, AT(1, 59, 59, 999999), 5000, 0,
	 3000000},
	{"window end exclusive 02:00", STD, OFFPEAK, false, 1000, 0, 500, AT(2, 0, 0, 0), 10000, 0, 6000000},
	{"midday outside window", STD, OFFPEAK, false, 1000, 0, 500, AT(12, 0, 0, 0), 10000, 0, 6000000},
	{"window before the epoch", STD, OFFPEAK, false, 1000, 0, 500, -1, 5000, 0, 3000000},
	/* two windows, one wrapping */
	{"16:30 starts the half-price window", STD, TWO_WIN, false, 1000, 0, 500, AT(16, 30, 0, 0), 5000, 0, 3000000},
	{"16:29:59.999999 full price", STD, TWO_WIN, false, 1000, 0, 500, AT(16, 29, 59, 999999), 10000, 0, 6000000},
	{"00:29:59 still half", STD, TWO_WIN, false, 1000, 0, 500, AT(0, 29, 59, 0), 5000, 0, 3000000},
	{"00:30 full again", STD, TWO_WIN, false, 1000, 0, 500, AT(0, 30, 0, 0), 10000, 0, 6000000},
	{"09:00 second window 75%", STD, TWO_WIN, false, 1000, 0, 500, AT(9, 0, 0, 0), 7500, 0, 4500000},
	{"09:59:59.999999 still 75%", STD, TWO_WIN, false, 1000, 0, 500, AT(9, 59, 59, 999999), 7500, 0, 4500000},
	{"10:00 full", STD, TWO_WIN, false, 1000, 0, 500, AT(10, 0, 0, 0), 10000, 0, 6000000},
	{"window to 24:00, 23:59:59", STD, "22:00-24:00=5000", false, 1000, 0, 500, AT(23, 59, 59, 0), 5000, 0,
	 3000000},
	{"window to 24:00, midnight is out", STD, "22:00-24:00=5000", false, 1000, 0, 500, AT(0, 0, 0, 0), 10000, 0,
	 6000000},
	{"free window (0 bp)", STD, "00:00-06:00=0", false, 1000, 0, 500, AT(3, 0, 0, 0), 0, 0, 0},
	{"surcharge window 150%", 1, 0, 0, "11:00-13:00=15000", false, 1000000, 0, 0, AT(12, 0, 0, 0), 15000, 0, 2},
	{"cache hit in off-peak", STD, OFFPEAK, false, 1000000, 750000, 250000, AT(1, 0, 0, 0), 5000, 0, 1437500000},
	/* 10^9 tokens, large prices: the intermediate needs 128 bits */
	{"1e9 each at std", STD, "", false, 1000000000, 0, 1000000000, AT(12, 0, 0, 0), 10000, 0, 10000 * U},
	{"1e9 each, half cached, 1e15/1M", 1000000 * U, 1000000 * U, 1000000 * U, "", false, 1000000000, 500000000,
	 1000000000, AT(12, 0, 0, 0), 10000, 0, 2000000000000000000LL},
	{"1e9 each at 1e13/1M, x100 window", 10000 * U, 10000 * U, 10000 * U, "11:00-13:00=1000000", false, 1000000000,
	 0, 1000000000, AT(12, 0, 0, 0), 1000000, 0, 2000000000000000000LL},
	{"1e9 cached at 4.6e15/1M", 0, 4600000 * U, 0, "", false, 1000000000, 1000000000, 0, AT(12, 0, 0, 0), 10000,
	 0, 4600000000000000000LL},
	{"cost exactly INT64_MAX", 0, 0, INT64_MAX, "", false, 0, 0, 1000000, AT(12, 0, 0, 0), 10000, 0, INT64_MAX},
	{"cost INT64_MAX + 1 token overflows", 0, 0, INT64_MAX, "", false, 0, 0, 1000001, AT(12, 0, 0, 0), 10000, -1,
	 0},
	{"1e9 at INT64_MAX/1M overflows", INT64_MAX, INT64_MAX, INT64_MAX, "", false, 1000000000, 1000000000,
	 1000000000, AT(12, 0, 0, 0), 10000, -1, 0},
	{"1e9 output at 1e16/1M overflows", 0, 0, 10000000 * U, "", false, 0, 0, 1000000000, AT(12, 0, 0, 0), 10000, -1,
	 0},
	/* invalid tokens */
	{"negative input", STD, "", false, -1, 0, 0, AT(12, 0, 0, 0), 10000, -1, 0},
	{"negative cached", STD, "", false, 10, -1, 0, AT(12, 0, 0, 0), 10000, -1, 0},
	{"negative output", STD, "", false, 0, 0, -1, AT(12, 0, 0, 0), 10000, -1, 0},
	{"cached above input", STD, "", false, 10, 11, 0, AT(12, 0, 0, 0), 10000, -1, 0},
	{"input 1e9+1", STD, "", false, 1000000001, 0, 0, AT(12, 0, 0, 0), 10000, -1, 0},
	{"output 1e9+1", STD, "", false, 0, 0, 1000000001, AT(12, 0, 0, 0), 10000, -1, 0},
};

/* floor(num / 10^10 + 1/2) by quotient and remainder; -1 past int64 */
static int ref_cost(const struct cost_case *c, int64_t *out)
{
	unsigned __int128 num, q, r, ten10 = 10000000000ULL;
	int64_t u = c->in - c->cached;

	num = (unsigned __int128)u * (unsigned __int128)c->in_price +
	      (unsigned __int128)c->cached * (unsigned __int128)c->cached_price +
	      (unsigned __int128)c->out * (unsigned __int128)c->out_price;
	num *= (unsigned __int128)c->m;
	q = num / ten10;
	r = num % ten10;
	if (2 * r >= ten10)
		q++;
	if (q > (unsigned __int128)INT64_MAX)
		return -1;
	*out = (int64_t)q;
	return 0;
}

static void make_price(struct pricing_price *p, int64_t in, int64_t cached, int64_t out, const char *windows,
		       bool paid_only)
{
	char err[200];

	memset(p, 0, sizeof(*p));
	p->version = 1;
	snprintf(p->model, sizeof(p->model), "m");
	p->input = in;
	p->cached_input = cached;
	p->output = out;
	p->paid_only = paid_only;
	if (pricing_parse_windows(windows, p, err, sizeof(err)) < 0) {
		printf("# bad windows '%s': %s\n", windows, err);
		exit(2);
	}
}

static void test_cost_table(void)
{
	size_t n = sizeof(cost_cases) / sizeof(cost_cases[0]);

	OK(n >= 30, "cost table has %zu cases", n);
	for (size_t i = 0; i < n; i++) {
		const struct cost_case *c = &cost_cases[i];
		struct pricing_price p;
		struct pricing_tokens t = {c->in, c->cached, c->out};
		int64_t got = -12345, ref = -12345;
		int rc, rrc;
		char name[200];

		make_price(&p, c->in_price, c->cached_price, c->out_price, c->windows, c->paid_only);
		snprintf(name, sizeof(name), "cost: %s: multiplier", c->name);
		IS_I64(pricing_multiplier(&p, c->t_us), c->m, name);
		rc = pricing_cost(&p, &t, c->t_us, &got);
		snprintf(name, sizeof(name), "cost: %s: rc", c->name);
		IS_I64(rc, c->rc, name);
		if (c->rc == 0) {
			snprintf(name, sizeof(name), "cost: %s: nanos", c->name);
			IS_I64(got, c->want, name);
			/* the hand value agrees with the independent evaluation */
			if (c->in >= 0 && c->cached >= 0 && c->out >= 0 && c->cached <= c->in) {
				rrc = ref_cost(c, &ref);
				snprintf(name, sizeof(name), "cost: %s: reference agrees", c->name);
				OK(rrc == 0 && ref == c->want, "%s", name);
			}
		} else {
			snprintf(name, sizeof(name), "cost: %s: output untouched on error", c->name);
			IS_I64(got, -12345, name);
		}
	}
}

/* ---- windows ---- */

static void test_windows(void)
{
	struct pricing_price p;
	char err[200], buf[512];
	static const char *bad[] = {
		"25:00-01:00=5000", "10:00-10:00=5000", "10:00-11:00=abc", "10:00-11:00=-5", "10:00-11:00=1000001",
		"10:00-11:00", "1000-1100=5000", "10:60-11:00=5000", "24:01-01:00=5000", "10:00-11:00=5000,,",
		"10:00-11:00=5000;11:00-12:00=5000",
		"00:00-01:00=1,01:00-02:00=1,02:00-03:00=1,03:00-04:00=1,04:00-05:00=1,05:00-06:00=1,06:00-07:00=1,"
		"07:00-08:00=1,08:00-09:00=1",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&p, 0, sizeof(p));
		OK(pricing_parse_windows(bad[i], &p, err, sizeof(err)) == -1 && err[0], "windows '%.40s' refused (%s)",
		   bad[i], err);
	}
	memset(&p, 0, sizeof(p));
	OK(pricing_parse_windows("", &p, err, sizeof(err)) == 0 && p.n_windows == 0, "empty windows");
	OK(pricing_parse_windows("16:30-00:30=5000,09:00-10:00=7500", &p, err, sizeof(err)) == 0, "two windows parse");
	IS_I64(p.n_windows, 2, "two windows");
	IS_I64(p.windows[0].start_s, 16 * 3600 + 30 * 60, "window 0 start");
	IS_I64(p.windows[0].end_s, 30 * 60, "window 0 end");
	IS_I64(p.windows[0].multiplier_bp, 5000, "window 0 multiplier");
	pricing_format_windows(&p, buf, sizeof(buf));
	IS_STR(buf, "16:30-00:30=5000,09:00-10:00=7500", "windows round trip");
	OK(pricing_parse_windows("22:00-24:00=5000", &p, err, sizeof(err)) == 0, "24:00 as an end");
	IS_I64(p.windows[0].end_s, 0, "24:00 is midnight");
	/* overlapping windows: the first listed wins */
	OK(pricing_parse_windows("08:00-12:00=5000,10:00-11:00=9000", &p, err, sizeof(err)) == 0, "overlap parse");
	IS_I64(pricing_multiplier(&p, AT(10, 30, 0, 0)), 5000, "overlap: first window wins");
	IS_I64(pricing_multiplier(&p, AT(12, 0, 0, 0) + 3 * DAY_US), 10000, "another day, 12:00 outside");
	IS_I64(pricing_multiplier(&p, AT(8, 0, 0, 0) - 40 * DAY_US), 5000, "40 days earlier, 08:00 inside");
}

/* ---- pricing_min_billable: the hold of a 0/0-token authorize ---- */

static void test_min_billable(void)
{
	struct pricing_price p;
	char err[200];

	memset(&p, 0, sizeof(p));
	p.input = 2000000000, p.cached_input = 500000000, p.output = 8000000000; /* 2 / 0.5 / 8 per 1M */
	IS_I64(pricing_min_billable(&p, AT(12, 0, 0, 0)), 500, "one cached input token is the least cost");
	p.cached_input = 0;
	IS_I64(pricing_min_billable(&p, AT(12, 0, 0, 0)), 2000, "a free cached price does not count");
	OK(pricing_parse_windows("10:00-14:00=5000", &p, err, sizeof(err)) == 0, "half price window");
	IS_I64(pricing_min_billable(&p, AT(12, 0, 0, 0)), 1000, "inside the window: half");
	IS_I64(pricing_min_billable(&p, AT(15, 0, 0, 0)), 2000, "outside the window: full");
	memset(&p, 0, sizeof(p));
	p.output = 1; /* 1 nano per 1M tokens: one token rounds to 0, still a positive hold */
	IS_I64(pricing_min_billable(&p, AT(12, 0, 0, 0)), 1, "at least 1 nano when a price is positive");
	p.output = 0;
	IS_I64(pricing_min_billable(&p, AT(12, 0, 0, 0)), 0, "a free model holds nothing");
}

/* ---- pricing_select ---- */

static void test_select(void)
{
	struct pricing_price p[7];
	const struct pricing_price *s;
	bool known;
	/* deliberately not sorted; v3 and v2 tie on effective_from */
	static const struct {
		int64_t version;
		const char *model;
		int64_t eff;
	} rows[] = {{3, "a", 200}, {4, "a", 300}, {1, "a", 100}, {2, "a", 200}, {5, "b", 50}, {7, "c", 500}, {6, "c", 500}};

	for (size_t i = 0; i < 7; i++) {
		memset(&p[i], 0, sizeof(p[i]));
		p[i].version = rows[i].version;
		snprintf(p[i].model, sizeof(p[i].model), "%s", rows[i].model);
		p[i].effective_from_us = rows[i].eff;
	}
	s = pricing_select(p, 7, "a", 250, &known);
	OK(s && s->version == 3 && known, "a at 250: tie at 200 goes to the greater version 3");
	s = pricing_select(p, 7, "a", 200, &known);
	OK(s && s->version == 3, "a at exactly 200: effective_from is inclusive");
	s = pricing_select(p, 7, "a", 199, &known);
	OK(s && s->version == 1, "a at 199: version 1");
	s = pricing_select(p, 7, "a", 100, &known);
	OK(s && s->version == 1, "a at 100: version 1");
	s = pricing_select(p, 7, "a", 1000000, &known);
	OK(s && s->version == 4, "a later: version 4");
	known = false;
	s = pricing_select(p, 7, "a", 99, &known);
	OK(!s && known, "a before its first price: NULL, model known");
	known = true;
	s = pricing_select(p, 7, "zz", 1000, &known);
	OK(!s && !known, "unknown model: NULL, not known");
	s = pricing_select(p, 7, "c", 500, &known);
	OK(s && s->version == 7, "c: tie where the greater version comes first");
	s = pricing_select(p, 7, "b", 60, &known);
	OK(s && s->version == 5, "b: its only version");
	s = pricing_select(p, 7, "A", 1000, &known);
	OK(!s && !known, "model names are case-sensitive");
	s = pricing_select(p, 0, "a", 1000, &known);
	OK(!s && !known, "empty price list");
}

/* ---- money ---- */

static void test_money(void)
{
	static const struct {
		const char *s;
		int rc;
		int64_t want;
	} cases[] = {
		{"14", 0, 14 * U},
		{"14.00", 0, 14 * U},
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
		{"1.000000000", 0, U},
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
		{14 * U, "14.000000000"},
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
			OK(rc == -1 && v == -777 && err.msg[0] && err.status == 422 && strcmp(err.code, "invalid_amount") == 0,
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

/* ---- time ---- */

static void test_time(void)
{
	static const struct {
		const char *s;
		int allow_date;
		int rc;
		int64_t want;
	} cases[] = {
		{"1970-01-01T00:00:00Z", 0, 0, 0},
		{"2026-11-29T08:00:00Z", 0, 0, 1795939200000000LL},
		{"2026-11-29T08:00:00.123456+08:00", 0, 0, 1795910400123456LL},
		{"2026-11-29T08:00:00.5-05:30", 0, 0, 1795959000500000LL},
		{"2026-11-29T08:00:00.1234567Z", 0, 0, 1795939200123456LL}, /* truncated, not rounded */
		{"2026-11-29T08:00:00.9999999Z", 0, 0, 1795939200999999LL},
		{"2026-11-29t08:00:00z", 0, 0, 1795939200000000LL},
		{"2026-11-29 08:00:00Z", 0, 0, 1795939200000000LL},
		{"2026-11-29T08:00:00+00:00", 0, 0, 1795939200000000LL},
		{"2026-11-29T08:00:00-00:00", 0, 0, 1795939200000000LL},
		{"2024-02-29T23:59:59.999999Z", 0, 0, 1709251199999999LL},
		{"2000-02-29T00:00:00Z", 0, 0, 951782400000000LL},
		{"2016-12-31T23:59:60Z", 0, 0, 1483228799000000LL}, /* leap second clamps */
		{"1969-12-31T23:59:59Z", 0, 0, -1000000},
		{"9999-12-31T23:59:59.999999Z", 0, 0, 253402300799999999LL},
		{"2026-11-29", 1, 0, 1795910400000000LL},
		{"2026-11-29", 0, -1, 0},
		{"2026-11-29T08:00:00", 0, -1, 0},
		{"2026-11-29T08:00Z", 0, -1, 0},
		{"2026-11-29T08:00:00.Z", 0, -1, 0},
		{"2026-11-29T08:00:00+0800", 0, -1, 0},
		{"2026-11-29T08:00:00+24:00", 0, -1, 0},
		{"2026-11-29T08:00:00+08:60", 0, -1, 0},
		{"2026-11-29T08:00:00Zjunk", 0, -1, 0},
		{"2026-11-29T24:00:00Z", 0, -1, 0},
		{"2026-11-29T23:60:00Z", 0, -1, 0},
		{"2026-11-29T23:59:61Z", 0, -1, 0},
		{"2026-02-29T00:00:00Z", 0, -1, 0},
		{"1900-02-29T00:00:00Z", 0, -1, 0},
		{"2026-04-31T00:00:00Z", 0, -1, 0},
		{"2026-13-01T00:00:00Z", 0, -1, 0},
		{"2026-00-10T00:00:00Z", 0, -1, 0},
		{"2026-01-00T00:00:00Z", 0, -1, 0},
		{"26-11-29T08:00:00Z", 0, -1, 0},
		{"2026/11/29T08:00:00Z", 0, -1, 0},
		{"", 0, -1, 0},
		{"yesterday", 0, -1, 0},
		{"1795939200", 0, -1, 0},
	};
	char buf[64];
	int64_t t;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;
		t = -777;
		rc = time_parse_rfc3339(cases[i].s, cases[i].allow_date, &t);
		if (cases[i].rc == 0)
			OK(rc == 0 && t == cases[i].want, "time '%s' = %" PRId64 " (got rc %d, %" PRId64 ")", cases[i].s,
			   cases[i].want, rc, t);
		else
			OK(rc == -1, "time '%s'%s refused", cases[i].s, cases[i].allow_date ? " (dates allowed)" : "");
	}
	OK(time_parse_rfc3339(NULL, 0, &t) == -1, "time NULL refused");
	OK(time_parse_rfc3339("9999-12-31T23:59:59-01:00", 0, &t) == -1, "an offset carrying the instant past 9999 refused");
	OK(time_parse_rfc3339("0000-01-01T00:30:00+01:00", 0, &t) == -1, "an offset carrying the instant before 0000 refused");
	OK(time_parse_rfc3339("9999-12-31T22:59:59-01:00", 0, &t) == 0 && t == 253402300799000000LL,
	   "the last second of 9999 through an offset");
	time_format_rfc3339(0, buf, sizeof(buf));
	IS_STR(buf, "1970-01-01T00:00:00.000000Z", "format epoch");
	time_format_rfc3339(-1, buf, sizeof(buf));
	IS_STR(buf, "1969-12-31T23:59:59.999999Z", "format one microsecond before the epoch");
	time_format_rfc3339(1795910400123456LL, buf, sizeof(buf));
	IS_STR(buf, "2026-11-29T00:00:00.123456Z", "format with fraction");
	OK(time_parse_rfc3339(buf, 0, &t) == 0 && t == 1795910400123456LL, "format/parse round trip");
	IS_I64(time_days_from_civil(2026, 11, 29), 20786, "days_from_civil 2026-11-29");
	IS_I64(time_days_from_civil(1970, 1, 1), 0, "days_from_civil epoch");
}

/* ---- config ---- */

static void test_config(void)
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
	OK(strncmp(err.msg, "line 3: ", 8) == 0 && strcmp(err.code, "config") == 0, "unknown key: line number first (%s)",
	   err.msg);
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

/* ---- burn-down ---- */

static struct burndown_bucket bk(int64_t la, int64_t grant, int64_t bal, int prio, int64_t exp)
{
	struct burndown_bucket b = {la, grant, bal, prio, exp, 0};
	return b;
}

static void expect_lines(const struct burndown_line *l, size_t n, const int64_t (*want)[3], size_t nw,
			 const char *what)
{
	bool ok = n == nw;

	for (size_t i = 0; ok && i < n; i++)
		ok = (int64_t)l[i].kind == want[i][0] && l[i].grant_id == want[i][1] && l[i].amount == want[i][2];
	OK(ok, "%s", what);
	if (!ok) {
		for (size_t i = 0; i < n; i++)
			printf("#   got line %zu: kind %d grant %" PRId64 " amount %" PRId64 "\n", i, (int)l[i].kind,
			       l[i].grant_id, l[i].amount);
		for (size_t i = 0; i < nw; i++)
			printf("#   want line %zu: kind %d grant %" PRId64 " amount %" PRId64 "\n", i, (int)want[i][0],
			       want[i][1], want[i][2]);
	}
}

#define G BURNDOWN_GRANT
#define P BURNDOWN_PAID
#define A BURNDOWN_ARREARS

static void fresh(struct burndown_bucket *b, size_t *n, size_t *paid_i)
{
	size_t k = 0;
	/* la = 100 + grant id; the paid bucket is la 100 */
	b[k++] = bk(107, 7, 0, 10, 0);       /* empty */
	b[k++] = bk(101, 1, 100, 10, 2000);  /* prio 10, expires 2000 */
	b[k++] = bk(100, 0, 500, 0, 0);      /* paid, priority 0 must not matter */
	b[k++] = bk(104, 4, 100, 10, 0);     /* prio 10, never expires */
	b[k++] = bk(105, 5, 100, 10, 1000);  /* prio 10, expires 1000, younger than 2 */
	b[k++] = bk(102, 2, 100, 10, 1000);  /* prio 10, expires 1000 */
	b[k++] = bk(103, 3, 100, 5, 0);      /* prio 5, never: before every prio 10 */
	b[k++] = bk(106, 6, 100, 1, 100);    /* prio 1 but expired at now = 100 */
	b[k++] = bk(108, 8, 100, 1, 101);    /* prio 1, expires 1 us after now */
	*n = k;
	burndown_sort(b, k);
	for (size_t i = 0; i < k; i++)
		if (b[i].grant_id == 0)
			*paid_i = i;
}

static void test_burndown(void)
{
	struct burndown_bucket b[16];
	struct burndown_line l[20];
	size_t n, pi, nl;
	static const int64_t order[] = {6, 8, 3, 2, 5, 1, 4, 7, 0};
	bool ok = true;

	fresh(b, &n, &pi);
	for (size_t i = 0; i < n; i++)
		ok = ok && b[i].grant_id == order[i];
	OK(ok, "sort: priority, then expiry, never-expiring last, then oldest; paid last");
	IS_I64(pi, n - 1, "paid bucket sorts last");

	/* spans everything usable and ends exactly at zero paid */
	{
		static const int64_t w[][3] = {{G, 8, 100}, {G, 3, 100}, {G, 2, 100}, {G, 5, 100}, {G, 1, 100},
					       {G, 4, 100}, {P, 0, 500}};
		nl = burndown_charge(b, n, &b[pi], 1100, false, 100, l);
		expect_lines(l, nl, w, 7, "1100: every live grant in order, expired and empty skipped, then paid");
		IS_I64(b[pi].balance, 0, "paid balance 0 after");
		IS_I64(b[0].balance, 100, "expired grant untouched");
		ok = true;
		for (size_t i = 0; i < n; i++)
			if (b[i].grant_id != 6)
				ok = ok && b[i].balance == 0;
		OK(ok, "every other bucket emptied");
		for (size_t i = 0; i < nl; i++)
			ok = ok && l[i].ledger_account_id == 100 + l[i].grant_id;
		OK(ok, "lines name their ledger accounts");
	}
	{
		static const int64_t w[][3] = {{A, 0, 50}};
		nl = burndown_charge(b, n, &b[pi], 50, false, 100, l);
		expect_lines(l, nl, w, 1, "then 50: arrears only");
		IS_I64(b[pi].balance, -50, "paid balance -50");
		nl = burndown_charge(b, n, &b[pi], 30, false, 100, l);
		OK(nl == 1 && l[0].kind == A && l[0].amount == 30 && l[0].ledger_account_id == 100, "then 30: arrears 30");
		IS_I64(b[pi].balance, -80, "paid balance -80");
	}
	/* partial use of one grant */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 8, 100}, {G, 3, 50}};
		nl = burndown_charge(b, n, &b[pi], 150, false, 100, l);
		expect_lines(l, nl, w, 2, "150: grant 8 then half of grant 3");
		IS_I64(b[2].balance, 50, "grant 3 keeps 50");
	}
	/* one nano */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 8, 1}};
		nl = burndown_charge(b, n, &b[pi], 1, false, 100, l);
		expect_lines(l, nl, w, 1, "1 nano from the first grant");
	}
	/* zero cost: no lines, nothing moves */
	fresh(b, &n, &pi);
	nl = burndown_charge(b, n, &b[pi], 0, false, 100, l);
	IS_I64(nl, 0, "zero cost: no lines");
	IS_I64(b[pi].balance, 500, "zero cost: paid unchanged");
	/* the expiry instant itself is expired */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 3, 100}};
		nl = burndown_charge(b, n, &b[pi], 100, false, 101, l);
		expect_lines(l, nl, w, 1, "now = expires_at: grant 8 is expired, grant 3 pays");
	}
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 6, 40}};
		nl = burndown_charge(b, n, &b[pi], 40, false, 99, l);
		expect_lines(l, nl, w, 1, "now = expires_at - 1: grant 6 still usable");
	}
	/* everything expired at a late instant: only never-expiring grants remain */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 3, 100}, {G, 4, 100}, {P, 0, 500}, {A, 0, 300}};
		nl = burndown_charge(b, n, &b[pi], 1000, false, 5000, l);
		expect_lines(l, nl, w, 4, "at t=5000: never-expiring grants, paid, then arrears");
		IS_I64(b[pi].balance, -300, "paid -300");
	}
	/* paid_only: no grant, ever */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{P, 0, 150}};
		nl = burndown_charge(b, n, &b[pi], 150, true, 100, l);
		expect_lines(l, nl, w, 1, "paid_only: paid balance only");
		IS_I64(b[1].balance, 100, "paid_only: grant 8 untouched");
	}
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{P, 0, 500}, {A, 0, 100}};
		nl = burndown_charge(b, n, &b[pi], 600, true, 100, l);
		expect_lines(l, nl, w, 2, "paid_only beyond paid: arrears, grants still untouched");
		IS_I64(b[pi].balance, -100, "paid_only: paid -100");
	}
	/* already in arrears: all arrears, no paid line */
	{
		struct burndown_bucket pb = bk(100, 0, -10, 0, 0);
		static const int64_t w[][3] = {{A, 0, 25}};
		nl = burndown_charge(&pb, 1, &pb, 25, false, 100, l);
		expect_lines(l, nl, w, 1, "negative paid balance: arrears only");
		IS_I64(pb.balance, -35, "paid -35");
	}
	/* paid bucket outside the array: grants + paid + arrears = n + 2 lines */
	{
		struct burndown_bucket g[2] = {bk(201, 11, 10, 100, 0), bk(202, 12, 10, 50, 0)};
		struct burndown_bucket pb = bk(200, 0, 5, 0, 0);
		static const int64_t w[][3] = {{G, 12, 10}, {G, 11, 10}, {P, 0, 5}, {A, 0, 5}};
		burndown_sort(g, 2);
		nl = burndown_charge(g, 2, &pb, 30, false, 100, l);
		expect_lines(l, nl, w, 4, "paid outside the array: two grants, paid, arrears");
	}
	/* sort is stable on grant id for equal keys, whatever the input order */
	{
		struct burndown_bucket g[4] = {bk(1, 40, 1, 7, 500), bk(1, 10, 1, 7, 500), bk(1, 30, 1, 7, 500),
					       bk(1, 20, 1, 7, 500)};
		burndown_sort(g, 4);
		OK(g[0].grant_id == 10 && g[1].grant_id == 20 && g[2].grant_id == 30 && g[3].grant_id == 40,
		   "equal priority and expiry: oldest (smallest id) first");
	}
}

int main(void)
{
	test_cost_table();
	test_windows();
	test_min_billable();
	test_select();
	test_money();
	test_time();
	test_config();
	test_burndown();
	return tap_done();
}
