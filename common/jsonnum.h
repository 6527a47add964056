/* jsonnum.h: JSON integers beyond int64 (balances and totals, contract
 * section 4a), written as exact integer literals.
 *
 * jansson keeps integers as json_int_t (int64).  A total that does not fit
 * is carried in the tree as a string of the form MARK + digits, where MARK
 * is a control character and a random per-process nonce (so no string a
 * caller sent can pass for one); jsonnum_dumps serializes the tree and
 * turns each such string into the bare digits: `"paid_nanos":
 * 12345678901234567890123`.  A value within int64 is a plain json_integer.
 * A reader that parses JSON into doubles loses precision beyond 2^53 for
 * either kind; readers that keep integers exact (Python, jq 1.7, Go's
 * json.Number) get the exact value. */
#ifndef COMMON_JSONNUM_H
#define COMMON_JSONNUM_H

#include <jansson.h>
#include <stdbool.h>

#include "common/money.h"

/* A new reference: json_integer when v fits int64, else the marked string. */
json_t *jsonnum_total(money_total v);
/* json_dumps(j, flags) with marked strings turned into bare integer
 * literals; free() the result.  NULL on allocation failure. */
char *jsonnum_dumps(const json_t *j, size_t flags);
/* json_loads(text, flags) that also reads integer literals beyond int64
 * (as jsonnum_dumps writes them) into marked strings.  NULL on bad JSON. */
json_t *jsonnum_loads(const char *text, size_t flags, json_error_t *je);
/* true when j is a string made by jsonnum_total; then digits gets its
 * decimal integer text (>= MONEY_TOTAL_BUF bytes). */
bool jsonnum_is_big(const json_t *j, char *digits, size_t n);
/* The value of a json_integer or of a string made by jsonnum_total; 0 for
 * anything else (as json_integer_value). */
money_total jsonnum_value(const json_t *j);

#endif
