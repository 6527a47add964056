/* test_timeutil.c: RFC 3339 instants (common/timeutil.c), parsed and
 * formatted at explicit instants, table-driven; time_mono_us is the
 * monotonic clock. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/timeutil.h"
#include "tests/unit/tap.h"

/* ---- time ---- */

static void instants_parse_and_format_as_rfc3339(void)
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
			OK(rc == 0 && t == cases[i].want, "time '%s' = %" PRId64 " (got rc %d, %" PRId64 ")",
			   cases[i].s, cases[i].want, rc, t);
		else
			OK(rc == -1, "time '%s'%s refused", cases[i].s, cases[i].allow_date ? " (dates allowed)" : "");
	}
	OK(time_parse_rfc3339(NULL, 0, &t) == -1, "time NULL refused");
	OK(time_parse_rfc3339("9999-12-31T23:59:59-01:00", 0, &t) == -1,
	   "an offset carrying the instant past 9999 refused");
	OK(time_parse_rfc3339("0000-01-01T00:30:00+01:00", 0, &t) == -1,
	   "an offset carrying the instant before 0000 refused");
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
	time_format_rfc3339(253402300799999999LL, buf, sizeof(buf));
	IS_STR(buf, "9999-12-31T23:59:59.999999Z", "format the last microsecond of 9999");
	time_format_rfc3339(time_days_from_civil(0, 1, 1) * 86400 * 1000000, buf, sizeof(buf));
	IS_STR(buf, "0000-01-01T00:00:00.000000Z", "format the first instant of year 0");
	{
		/* every 7777777th second of the years 0..9999 with a fraction: the bytes
		 * of the former snprintf, and each parses back to itself */
		int64_t lo = time_days_from_civil(0, 1, 1) * 86400, hi = time_days_from_civil(10000, 1, 1) * 86400;
		bool same = true;
		for (int64_t s = lo; s < hi && same; s += 7777777) {
			int64_t us = s * 1000000 + (s % 1000000 + 1000000) % 1000000, back = 0;
			int64_t days = s >= 0 ? s / 86400 : -((-s + 86399) / 86400), sod = s - days * 86400;
			char want[64];
			int y = 0;
			/* the civil date by the parser's inverse: find it by formatting with the fallback */
			time_format_rfc3339(us, buf, sizeof(buf));
			y = atoi(buf);
			snprintf(want, sizeof(want), "%04d-%.5sT%02d:%02d:%02d.%06dZ", y, buf + 5, (int)(sod / 3600),
				 (int)(sod / 60 % 60), (int)(sod % 60), (int)(us - s * 1000000));
			same = strcmp(buf, want) == 0 && time_parse_rfc3339(buf, 0, &back) == 0 && back == us;
		}
		OK(same,
		   "format: 40,000 instants of the years 0..9999 round-trip, time and fraction as printf writes them");
	}
	IS_I64(time_days_from_civil(1970, 1, 1), 0, "days_from_civil epoch");
}

static int64_t monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* time_mono_us reads CLOCK_MONOTONIC, whatever the wall clock says: read
 * between two readings of that clock, it lies between them (the wall clock,
 * about 1.7e15 us since 1970, lies far above them: CLOCK_MONOTONIC counts
 * from about the boot) */
static void mono_is_the_monotonic_clock(void)
{
	int64_t before = monotonic_us(), mono = time_mono_us(), after = monotonic_us();

	OK(before <= mono && mono <= after, "time_mono_us is CLOCK_MONOTONIC (%lld <= %lld <= %lld)", (long long)before,
	   (long long)mono, (long long)after);
}

int main(void)
{
	instants_parse_and_format_as_rfc3339();
	mono_is_the_monotonic_clock();
	return tap_done();
}
