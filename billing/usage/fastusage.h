/* fastusage.h: the hot POST /v1/usage and /v1/usage/batch bodies without a
 * jansson tree (no server state; tests/fuzz/fuzz_fastusage.c holds it to
 * the general path, as fastbody.h does for authorize).
 *
 * The parser takes only the plain shape of a usage body: one object whose
 * members are usage fields (request_id, api_key, account_id, model,
 * input_tokens, cached_input_tokens, output_tokens, started_at, hold_id,
 * status), each at most once, strings of printable ASCII without escapes,
 * integers in plain decimal, no null.  On such a body, when usage_parse()
 * would accept it, it gives exactly the usage_req that read_body() +
 * usage_parse() give (same now_us, same pepper); on anything else (another
 * member, an escape, a null, a number with a fraction or a sign, a field out
 * of its rules, malformed JSON) it declines, and the caller takes the
 * general path, which accepts or answers the error as before.  So every
 * error answer still comes from the general path. */
#ifndef BILLING_FASTUSAGE_H
#define BILLING_FASTUSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "billing/usage/usage.h"

/* One usage body (POST /v1/usage): true with out filled, or false: take
 * the general path (out is then undefined). */
bool fastusage_parse(const char *buf, size_t len, int64_t now_us, const uint8_t pepper[32], struct usage_req *out)
	__attribute__((warn_unused_result));

/* A batch body (POST /v1/usage/batch) of exactly one member, "records": an
 * array of 1 to max plain usage bodies, every one of which usage_parse()
 * accepts (at one now_us): true with *n records in out[0..*n), or false:
 * take the general path (which also answers records that fail one by one).
 * out has room for max. */
bool fastusage_parse_batch(const char *buf, size_t len, int64_t now_us, const uint8_t pepper[32], struct usage_req *out,
			   size_t max, size_t *n) __attribute__((warn_unused_result));

#endif
