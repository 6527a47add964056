/* pricing.h: the cost formula of CONTRACT.md §2 and price-version selection.
 * Pure logic: no I/O, safe from any thread. */
#ifndef BILLING_PRICING_H
#define BILLING_PRICING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PRICING_MAX_WINDOWS 8
#define PRICING_MAX_TOKENS 1000000000LL /* 10^9 per field */

struct pricing_window {
	int start_s, end_s;    /* seconds of the UTC day, [start, end); end < start wraps midnight */
	int64_t multiplier_bp; /* 10000 = full price */
};

struct pricing_price {
	int64_t version;
	char model[201];
	int64_t input, cached_input, output; /* nanos per 1M tokens */
	int64_t effective_from_us;
	bool paid_only;
	size_t n_windows;
	struct pricing_window windows[PRICING_MAX_WINDOWS];
};

struct pricing_tokens {
	int64_t input, cached_input, output; /* input includes cached_input */
};

/* Parses "16:30-00:30=5000,02:00-04:00=7500" (may be empty).  0 or -1 with err. */
int pricing_parse_windows(const char *s, struct pricing_price *p, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Formats windows back to that text form. */
void pricing_format_windows(const struct pricing_price *p, char *buf, size_t buflen);

/* The multiplier (basis points) in force at instant t_us: the first window containing it, else 10000. */
int64_t pricing_multiplier(const struct pricing_price *p, int64_t t_us);

/* cost_nanos = floor((u*input + cached*cached_input + output*output) * m / 10^10 + 1/2),
 * u = input - cached, 128-bit intermediate.  -1 if the tokens are invalid
 * (negative, cached > input, any above 10^9) or the cost overflows int64. */
int pricing_cost(const struct pricing_price *p, const struct pricing_tokens *t, int64_t started_at_us,
		 int64_t *cost_nanos) __attribute__((warn_unused_result));

/* The least a call of this model can cost, the hold of a call announced
 * with 0 tokens: the cheapest single token (uncached input, cached input or
 * output) at the multiplier in force at t_us, at least 1 nano; 0 only for a
 * model whose prices are all 0. */
int64_t pricing_min_billable(const struct pricing_price *p, int64_t t_us);

/* Picks, among n prices (any order, any models), the version in effect for
 * model at t_us: greatest effective_from <= t_us, ties to the greatest
 * version.  NULL with *model_known telling whether the model has any price. */
const struct pricing_price *pricing_select(const struct pricing_price *prices, size_t n, const char *model,
					   int64_t t_us, bool *model_known);

#endif
