/* money.h: amounts are int64 nanos (10^-9 of the currency unit); no floating point.
 *
 * Pure functions, safe from any thread. */
#ifndef COMMON_MONEY_H
#define COMMON_MONEY_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define MONEY_NANOS_PER_UNIT 1000000000LL

/* Parses a decimal amount in currency units: "14", "14.00", "-1.50",
 * "0.000001", "+2".  At most 9 decimal places; no exponent, no spaces;
 * must fit in int64 nanos.  Returns 0, or -1 with err (may be NULL)
 * filled: 422 invalid_amount and a lower-case reason. */
int money_parse(const char *s, int64_t *nanos, struct error *err) __attribute__((warn_unused_result));

/* Formats nanos as units with 9 decimals ("-1.500000000") into buf (>= 32 bytes). */
void money_format(int64_t nanos, char *buf, size_t buflen);

/* a*b/c rounded half up (c > 0, a,b >= 0) with a 128-bit intermediate; -1 on overflow of the result. */
int money_muldiv_round(int64_t a, int64_t b, int64_t c, int64_t *out) __attribute__((warn_unused_result));

/* ---- totals (contract section 4a) ----
 * A balance or a total adds int64 postings up over the life of the books and
 * is kept as a signed 128-bit integer (exact to about 1.7 * 10^38 nanos;
 * PostgreSQL keeps it as numeric(40,0)). */
typedef __int128 money_total;

/* Parses an optionally signed decimal integer ("-123", numeric text from
 * PostgreSQL) of at most 38 digits into *out.  -1 on anything else. */
int money_total_parse(const char *s, money_total *out) __attribute__((warn_unused_result));
/* Formats v as a decimal integer into buf (>= MONEY_TOTAL_BUF bytes). */
#define MONEY_TOTAL_BUF 48
void money_total_str(money_total v, char *buf, size_t buflen);
/* Formats nanos as units with 9 decimals, exactly, into buf (>= MONEY_TOTAL_BUF bytes). */
void money_total_format(money_total nanos, char *buf, size_t buflen);
/* v clamped to int64: for the paths that work in int64 (a hold, a charge, the
 * Redis mirror), where a balance beyond int64 admits what INT64_MAX admits. */
int64_t money_total_clamp(money_total v);

#endif
