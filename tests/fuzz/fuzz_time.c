/* fuzz_time.c: time_parse_rfc3339() (common/timeutil.h): started_at,
 * expires_at and every CLI time.
 *
 * Properties: never reads past the string; an accepted time lies in years
 * 0000..9999 UTC (an offset cannot carry it out); one in years 1..9999
 * formats (time_format_rfc3339) to a string that parses back to the same
 * microsecond; the date part of an accepted string is a real calendar date
 * (checked here independently); a bare date is accepted only with
 * allow_date, at midnight UTC. */
#include <string.h>

#include "common/timeutil.h"
#include "tests/fuzz/fuzz.h"

static int real_date(const char *s)
{
	int y, m, d;
	static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (strlen(s) < 10 || sscanf(s, "%4d-%2d-%2d", &y, &m, &d) != 3)
		return 0;
	if (m < 1 || m > 12 || d < 1)
		return 0;
	return d <= dm[m - 1] + (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;
	char back[64];
	int64_t t = 0, t2 = 0, t3 = 0;
	const int64_t year0 = -62167219200000000LL;     /* 0000-01-01T00:00:00Z */
	const int64_t year1 = -62135596800000000LL;     /* 0001-01-01T00:00:00Z */
	const int64_t year10000 = 253402300800000000LL; /* 10000-01-01T00:00:00Z: RFC 3339 has 4-digit years */

	if (size > 128)
		return 0;
	s = malloc(size + 1); /* exact size: ASan catches any over-read */
	FUZZ_CHECK(s != NULL);
	memcpy(s, data, size);
	s[size] = '\0';
	if (time_parse_rfc3339(s, 0, &t) == 0) {
		FUZZ_CHECK(real_date(s));
		FUZZ_CHECK(strlen(s) > 10); /* a bare date needs allow_date */
		FUZZ_CHECK(time_parse_rfc3339(s, 1, &t3) == 0 && t3 == t);
		FUZZ_CHECK(t >= year0 && t < year10000);
		if (t >= year1 && t < year10000) {
			time_format_rfc3339(t, back, sizeof(back));
			if (time_parse_rfc3339(back, 0, &t2) != 0 || t2 != t) {
				fprintf(stderr, "'%s' -> %lld -> '%s' -> %lld\n", s, (long long)t, back, (long long)t2);
				FUZZ_CHECK(0);
			}
		}
	}
	if (time_parse_rfc3339(s, 1, &t) == 0) {
		FUZZ_CHECK(real_date(s));
		if (strlen(s) == 10)
			FUZZ_CHECK(t % 86400000000LL == 0);
	}
	free(s);
	return 0;
}
