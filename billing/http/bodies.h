/* bodies.h: checks of request bodies, no server state, no event loop (the
 * fuzz targets call them alone). */
#ifndef BILLING_BODIES_H
#define BILLING_BODIES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* 0 when member k of b is absent or null (then -1 with 400 if required) or
 * a string of 1 to max bytes without NUL; else -1 with 400 invalid_request. */
int want_string(json_t *b, const char *k, bool required, size_t max, struct error *err);
/* 0 when member k is absent/null (-1 with 400 if required) or an integer in
 * [min, max]; -1 with 400 (not an integer) or 422 invalid_amount (range). */
int want_int(json_t *b, const char *k, bool required, int64_t min, int64_t max, struct error *err);

struct authz_body {
	const char *request_id, *model, *api_key; /* borrowed from the body; api_key NULL or account_id > 0 */
	int64_t account_id, input_tokens, max_output_tokens;
};
/* POST /v1/authorize: 0, or -1 with 400 invalid_request / 422 invalid_tokens. */
int authz_body_parse(json_t *b, struct authz_body *out, struct error *err) __attribute__((warn_unused_result));
/* POST /v1/accounts: 0, or -1 with 400 invalid_request. */
int signup_body_check(json_t *b, struct error *err) __attribute__((warn_unused_result));

#endif
