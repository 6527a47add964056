/* money.c: see money.h. */
#include "common/money.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int money_parse(const char *s, int64_t *nanos, char *err, size_t errlen)
{
	const char *p = s;
	int neg = 0, digits = 0, frac_digits = 0;
	__int128 v = 0;

	if (!s || !*s) {
		snprintf(err, errlen, "empty amount");
		return -1;
	}
	if (*p == '-') {
		neg = 1;
		p++;
	} else if (*p == '+') {
		p++;
	}
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (*p - '0');
		digits++;
		if (v > (__int128)INT64_MAX) {
			snprintf(err, errlen, "amount '%s' too large", s);
			return -1;
		}
	}
	if (*p == '.') {
		p++;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (++frac_digits > 9) {
				snprintf(err, errlen, "amount '%s' has more than 9 decimal places", s);
				return -1;
			}
			v = v * 10 + (*p - '0');
		}
		if (frac_digits == 0) {
			snprintf(err, errlen, "amount '%s' is not a decimal number", s);
			return -1;
		}
	}
	if (*p || digits == 0) {
		snprintf(err, errlen, "amount '%s' is not a decimal number", s);
		return -1;
	}
	for (int i = frac_digits; i < 9; i++)
		v *= 10;
	if (v > (__int128)INT64_MAX) {
		snprintf(err, errlen, "amount '%s' too large", s);
		return -1;
	}
	*nanos = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

void money_format(int64_t nanos, char *buf, size_t buflen)
{
	uint64_t a = nanos < 0 ? (uint64_t)0 - (uint64_t)nanos : (uint64_t)nanos;

	snprintf(buf, buflen, "%s%" PRIu64 ".%09" PRIu64, nanos < 0 ? "-" : "", (uint64_t)(a / 1000000000U),
		 (uint64_t)(a % 1000000000U));
}

int money_muldiv_round(int64_t a, int64_t b, int64_t c, int64_t *out)
{
	__int128 r;

	if (a < 0 || b < 0 || c <= 0)
		return -1;
	r = ((__int128)a * b + c / 2) / c;
	if (r > INT64_MAX)
		return -1;
	*out = (int64_t)r;
	return 0;
}
