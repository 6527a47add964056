/* fastbody.h: the hot POST /v1/authorize request and answer without a
 * jansson tree (no server state; tests/fuzz/fuzz_fastbody.c holds it to
 * the general path).
 *
 * The parser takes only the plain shape of the body: one object whose
 * members are the six authorize fields, each at most once, strings of
 * printable ASCII without escapes, integers in plain decimal.  On such a
 * body it gives exactly what read_body() + authz_body_parse() give; on
 * anything else (another member, an escape, a number with a fraction, a
 * field out of its rules, malformed JSON) it declines, and the caller takes
 * the general path, which accepts or answers the error as before. */
#ifndef BILLING_FASTBODY_H
#define BILLING_FASTBODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fastbody_authz {
	char request_id[201], model[201], api_key[256]; /* api_key "" when by account */
	int64_t account_id, input_tokens, max_output_tokens;
};

/* true: out holds the body's fields (the general path would accept it with
 * the same values); false: take the general path. */
bool fastbody_authz_parse(const char *buf, size_t len, struct fastbody_authz *out) __attribute__((warn_unused_result));

/* The 200 answer of an authorize, byte for byte what jansson's compact dump
 * of {hold_id, account_id, held_nanos, available_nanos, expires_at} gives,
 * with the newline reply() adds: its length, or 0 when hold_id or
 * expires_at holds a character JSON would escape or it does not fit in n
 * (then the general path). */
size_t fastbody_hold_answer(char *buf, size_t n, const char *hold_id, int64_t account_id, int64_t held_nanos,
			    int64_t available_nanos, const char *expires_at) __attribute__((warn_unused_result));

#endif
