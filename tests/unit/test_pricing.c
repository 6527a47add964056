/* test_pricing.c: the price of a call (billing/usage/pricing.c), table-driven.
 *
 * pricing_cost (the formula of CONTRACT.md §2), pricing_multiplier and the
 * window parser, pricing_min_billable and pricing_select.  Every expected
 * amount is written out by hand in the tables (worked out with exact integer
 * arithmetic outside this code), and the cost table is also checked against
 * a second, independent evaluation of the formula (quotient and remainder
 * instead of adding one half). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/usage/pricing.h"
#include "tests/unit/tap.h"

#define DAY_US (86400LL * 1000000)
#define D0 (1795910400LL * 1000000) /* 2026-11-29T00:00:00Z */
#define AT(h, m, s, us) (D0 + ((h)*3600LL + (m)*60LL + (s)) * 1000000 + (us))

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

#define STD 2 * UNIT, UNIT / 2, 8 * UNIT /* 2 / 0.5 / 8 units per 1M */
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
	{"cached price zero", 2 * UNIT, 0, 8 * UNIT, "", false, 1000, 999, 0, AT(12, 0, 0, 0), 10000, 0, 2000},
	{"odd prices", 1234567891, 123456789, 9876543211, "", false, 777, 333, 4444, AT(12, 0, 0, 0), 10000, 0,
	 44480617},
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
	{"quarter made by window rounds down", 1, 0, 0, "11:00-13:00=2500", false, 1000000, 0, 0, AT(12, 0, 0, 0), 2500,
	 0, 0},
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
	{"1e9 each at std", STD, "", false, 1000000000, 0, 1000000000, AT(12, 0, 0, 0), 10000, 0, 10000 * UNIT},
	{"1e9 each, half cached, 1e15/1M", 1000000 * UNIT, 1000000 * UNIT, 1000000 * UNIT, "", false, 1000000000,
	 500000000, 1000000000, AT(12, 0, 0, 0), 10000, 0, 2000000000000000000LL},
	{"1e9 each at 1e13/1M, x100 window", 10000 * UNIT, 10000 * UNIT, 10000 * UNIT, "11:00-13:00=1000000", false,
	 1000000000, 0, 1000000000, AT(12, 0, 0, 0), 1000000, 0, 2000000000000000000LL},
	{"1e9 cached at 4.6e15/1M", 0, 4600000 * UNIT, 0, "", false, 1000000000, 1000000000, 0, AT(12, 0, 0, 0), 10000,
	 0, 4600000000000000000LL},
	{"cost exactly INT64_MAX", 0, 0, INT64_MAX, "", false, 0, 0, 1000000, AT(12, 0, 0, 0), 10000, 0, INT64_MAX},
	{"cost INT64_MAX + 1 token overflows", 0, 0, INT64_MAX, "", false, 0, 0, 1000001, AT(12, 0, 0, 0), 10000, -1,
	 0},
	{"1e9 at INT64_MAX/1M overflows", INT64_MAX, INT64_MAX, INT64_MAX, "", false, 1000000000, 1000000000,
	 1000000000, AT(12, 0, 0, 0), 10000, -1, 0},
	{"1e9 output at 1e16/1M overflows", 0, 0, 10000000 * UNIT, "", false, 0, 0, 1000000000, AT(12, 0, 0, 0), 10000,
	 -1, 0},
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

static void cost_is_the_contract_formula_by_hand(void)
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

static void a_window_multiplies_the_price_in_its_hours(void)
{
	struct pricing_price p;
	char err[200], buf[512];
	static const char *bad[] = {
		"25:00-01:00=5000",
		"10:00-10:00=5000",
		"10:00-11:00=abc",
		"10:00-11:00=-5",
		"10:00-11:00=1000001",
		"10:00-11:00",
		"1000-1100=5000",
		"10:60-11:00=5000",
		"24:01-01:00=5000",
		"10:00-11:00=5000,,",
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

static void an_empty_authorize_holds_the_least_billable_amount(void)
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

static void the_price_in_force_at_the_call_applies(void)
{
	struct pricing_price p[7];
	const struct pricing_price *s;
	bool known;
	/* deliberately not sorted; v3 and v2 tie on effective_from */
	static const struct {
		int64_t version;
		const char *model;
		int64_t eff;
	} rows[] = {{3, "a", 200}, {4, "a", 300}, {1, "a", 100}, {2, "a", 200},
		    {5, "b", 50},  {7, "c", 500}, {6, "c", 500}};

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

int main(void)
{
	cost_is_the_contract_formula_by_hand();
	a_window_multiplies_the_price_in_its_hours();
	an_empty_authorize_holds_the_least_billable_amount();
	the_price_in_force_at_the_call_applies();
	return tap_done();
}
