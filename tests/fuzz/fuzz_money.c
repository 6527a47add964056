/* fuzz_money.c: money_parse() (common/money.h), the CLI's amounts.
 *
 * Properties: an accepted amount matches the grammar `[-+]?D+(.D{1,9})?`
 * (checked here independently), its value equals the exact decimal value
 * computed here with 128-bit arithmetic, money_format() of it parses back
 * to the same nanos, and anything else is refused with a message.  Also
 * money_muldiv_round() against a 128-bit reference. */
#include <string.h>

#include "common/money.h"
#include "tests/fuzz/fuzz.h"

/* The reference: -1 if not an amount, else 0 with *out. */
static int ref_parse(const char *s, int64_t *out)
{
	const char *p = s;
	int neg = 0, nd = 0, nf = 0;
	__int128 v = 0;

	if (*p == '-' || *p == '+')
		neg = *p++ == '-';
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (*p++ - '0');
		nd++;
		if (v > INT64_MAX) /* too large whatever the decimals */
			return -1;
	}
	if (nd == 0)
		return -1;
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9') {
			if (++nf > 9)
				return -1;
			v = v * 10 + (*p++ - '0');
		}
		if (nf == 0)
			return -1;
	}
	if (*p)
		return -1;
	for (; nf < 9; nf++)
		v *= 10;
	if (v > INT64_MAX)
		return -1;
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[96], back[64];
	struct error err;
	int64_t v = 0, w = 0, r = 0;
	int rc, ref;

	if (size >= sizeof(s))
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	memset(&err, 0, sizeof(err));
	rc = money_parse(s, &v, &err);
	ref = ref_parse(s, &r);
	if (rc != ref)
		fprintf(stderr, "'%s': money_parse %d, reference %d (%s)\n", s, rc, ref, err.msg);
	FUZZ_CHECK(rc == ref);
	if (rc == 0) {
		FUZZ_CHECK(v == r);
		money_format(v, back, sizeof(back));
		FUZZ_CHECK(money_parse(back, &w, &err) == 0 && w == v);
	} else {
		FUZZ_CHECK(err.msg[0] != '\0');
	}
	/* muldiv on the first 24 bytes as three int64 */
	if (size >= 24) {
		int64_t a, b, c, out = 0;
		memcpy(&a, data, 8);
		memcpy(&b, data + 8, 8);
		memcpy(&c, data + 16, 8);
		if (money_muldiv_round(a, b, c, &out) == 0) {
			__int128 x = ((__int128)a * b + c / 2) / c;
			FUZZ_CHECK(a >= 0 && b >= 0 && c > 0 && x <= INT64_MAX && out == (int64_t)x);
		} else {
			FUZZ_CHECK(a < 0 || b < 0 || c <= 0 || ((__int128)a * b + c / 2) / c > INT64_MAX);
		}
	}
	return 0;
}
