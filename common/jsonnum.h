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

#include "common/money.h"

/* A new reference: json_integer when v fits int64, else the marked string. */
json_t *jsonnum_total(money_total v);
/* json_dumps(j, flags) with marked strings turned into bare integer
 * literals; free() the result.  NULL on allocation failure. */
char *jsonnum_dumps(const json_t *j, size_t flags);

#endif
