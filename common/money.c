/* money.c: see money.h. */
#include "common/money.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int money_parse(const char *s, int64_t *nanos, struct error *err)
{
	const char *p = s;
	int neg = 0, digits = 0, frac_digits = 0;
	__int128 v = 0;

	if (!s || !*s) {
		return error_set(err, 422, "invalid_amount", "empty amount");
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
			return error_set(err, 422, "invalid_amount", "amount '%s' too large", s);
		}
	}
	if (*p == '.') {
		p++;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (++frac_digits > 9) {
				return error_set(err, 422, "invalid_amount",
						 "amount '%s' has more than 9 decimal places", s);
			}
			v = v * 10 + (*p - '0');
		}
		if (frac_digits == 0) {
			return error_set(err, 422, "invalid_amount", "amount '%s' is not a decimal number", s);
		}
	}
	if (*p || digits == 0) {
		return error_set(err, 422, "invalid_amount", "amount '%s' is not a decimal number", s);
	}
	for (int i = frac_digits; i < 9; i++)
		v *= 10;
	if (v > (__int128)INT64_MAX) {
		return error_set(err, 422, "invalid_amount", "amount '%s' too large", s);
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

int money_total_parse(const char *s, money_total *out)
{
	unsigned __int128 v = 0;
	int neg = 0, digits = 0;

	if (!s)
		return -1;
	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	for (; *s >= '0' && *s <= '9'; s++) {
		if (++digits > 38)
			return -1;
		v = v * 10 + (unsigned)(*s - '0');
	}
	if (*s || digits == 0)
		return -1;
	*out = neg ? -(money_total)v : (money_total)v;
	return 0;
}

void money_total_str(money_total v, char *buf, size_t buflen)
{
	char tmp[MONEY_TOTAL_BUF];
	unsigned __int128 a = v < 0 ? (unsigned __int128)0 - (unsigned __int128)v : (unsigned __int128)v;
	size_t i = sizeof(tmp), n;

	/* 64-bit divisions while the rest fits (every balance of today's
	 * books): a 128-bit division by 10 is a library call a digit */
	while (a > UINT64_MAX) {
		tmp[--i] = (char)('0' + (int)(a % 10));
		a /= 10;
	}
	{
		uint64_t u = (uint64_t)a;
		do {
			tmp[--i] = (char)('0' + (int)(u % 10));
			u /= 10;
		} while (u);
	}
	if (v < 0)
		tmp[--i] = '-';
	if (buflen == 0)
		return;
	/* as snprintf(buf, buflen, "%s") did: cut to buflen - 1 */
	n = sizeof(tmp) - i;
	if (n >= buflen)
		n = buflen - 1;
	memcpy(buf, tmp + i, n);
	buf[n] = '\0';
}

void money_total_format(money_total nanos, char *buf, size_t buflen)
{
	char units[MONEY_TOTAL_BUF];
	unsigned __int128 a = nanos < 0 ? (unsigned __int128)0 - (unsigned __int128)nanos : (unsigned __int128)nanos;

	money_total_str((money_total)(a / 1000000000U), units, sizeof(units));
	snprintf(buf, buflen, "%s%s.%09u", nanos < 0 ? "-" : "", units, (unsigned)(a % 1000000000U));
}

int64_t money_total_clamp(money_total v)
{
	return v > INT64_MAX ? INT64_MAX : v < INT64_MIN ? INT64_MIN : (int64_t)v;
}
