/* fuzz_windows.c: pricing_parse_windows() (billing/usage/pricing.h), the
 * --window arguments of `billing-admin price set`.
 *
 * Properties: at most PRICING_MAX_WINDOWS windows; each has start != end,
 * both in [0, 86400), a multiplier in [0, 1000000]; formatting the windows
 * and parsing that again gives the same windows; pricing_multiplier() at
 * any instant returns 10000 or one window's multiplier, and the window
 * that holds a start instant applies there. */
#include <string.h>

#include "billing/usage/pricing.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pricing_price p, q;
	char *s, err[256], back[512];
	int64_t m;

	if (size > 256)
		return 0;
	s = malloc(size + 1);
	FUZZ_CHECK(s != NULL);
	memcpy(s, data, size);
	s[size] = '\0';
	memset(&p, 0, sizeof(p));
	err[0] = '\0';
	if (pricing_parse_windows(s, &p, err, sizeof(err)) < 0) {
		FUZZ_CHECK(err[0] != '\0');
		free(s);
		return 0;
	}
	FUZZ_CHECK(p.n_windows <= PRICING_MAX_WINDOWS);
	for (size_t i = 0; i < p.n_windows; i++) {
		const struct pricing_window *w = &p.windows[i];
		FUZZ_CHECK(w->start_s >= 0 && w->start_s < 86400 && w->end_s >= 0 && w->end_s < 86400);
		FUZZ_CHECK(w->start_s != w->end_s);
		FUZZ_CHECK(w->multiplier_bp >= 0 && w->multiplier_bp <= 1000000);
	}
	pricing_format_windows(&p, back, sizeof(back));
	memset(&q, 0, sizeof(q));
	if (pricing_parse_windows(back, &q, err, sizeof(err)) != 0) {
		fprintf(stderr, "'%s' formats as '%s', refused: %s\n", s, back, err);
		FUZZ_CHECK(0);
	}
	FUZZ_CHECK(q.n_windows == p.n_windows);
	FUZZ_CHECK(memcmp(q.windows, p.windows, p.n_windows * sizeof(p.windows[0])) == 0);
	for (size_t i = 0; i < p.n_windows; i++) {
		/* the first window's start belongs to the first window that holds it */
		int64_t t = FUZZ_NOW_US + (int64_t)p.windows[i].start_s * 1000000;
		m = pricing_multiplier(&p, t);
		if (i == 0)
			FUZZ_CHECK(m == p.windows[0].multiplier_bp);
		else {
			int ok = m == 10000;
			for (size_t k = 0; k < p.n_windows; k++)
				ok |= m == p.windows[k].multiplier_bp;
			FUZZ_CHECK(ok);
		}
	}
	free(s);
	return 0;
}
