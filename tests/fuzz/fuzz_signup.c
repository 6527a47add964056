/* fuzz_signup.c: POST /v1/accounts bodies.
 *
 * The handler (h_accounts_create, billing/http/server.c) checks the body with
 * signup_body_check() (billing/http/bodies.c), a function without server
 * state: this target calls it on the body as read_body() parses it, then
 * checks what it accepts and the request hash that ops_account_create()
 * (ledger/ops.c) uses for idempotency.
 *
 * Properties of an accepted body:
 *   - external_id 1..200 bytes, referral_code (if any) 1..64, no NUL;
 *   - identity absent/null or an array of at most 16 strings of 1..200
 *     bytes, each stored as given: no NUL inside (the store and the request
 *     hash are C strings, so "a\u0000b" would silently become "a");
 *   - ops_account_create()'s own check of external_id agrees.
 * A refused body gets 400 invalid_request. */
#include <jansson.h>
#include <string.h>

#include "billing/http/bodies.h"
#include "common/error.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t je;
	json_t *b = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je), *v, *ids;
	struct error e;
	const char *ext;
	size_t i;

	if (!b)
		return 0;
	if (!json_is_object(b)) {
		json_decref(b);
		return 0;
	}
	memset(&e, 0, sizeof(e));
	if (signup_body_check(b, &e) < 0) {
		FUZZ_CHECK(e.status == 400 && strcmp(e.code, "invalid_request") == 0);
		json_decref(b);
		return 0;
	}
	v = json_object_get(b, "external_id");
	ext = json_string_value(v);
	FUZZ_CHECK(ext && json_string_length(v) >= 1 && json_string_length(v) <= 200);
	FUZZ_CHECK(strlen(ext) == json_string_length(v)); /* ops_account_create checks strlen */
	v = json_object_get(b, "referral_code");
	if (v && !json_is_null(v))
		FUZZ_CHECK(json_is_string(v) && json_string_length(v) >= 1 && json_string_length(v) <= 64 &&
			   strlen(json_string_value(v)) == json_string_length(v));
	ids = json_object_get(b, "identity");
	if (ids && !json_is_null(ids)) {
		FUZZ_CHECK(json_is_array(ids) && json_array_size(ids) <= 16);
		json_array_foreach(ids, i, v)
		{
			FUZZ_CHECK(json_is_string(v));
			FUZZ_CHECK(json_string_length(v) >= 1 && json_string_length(v) <= 200);
			/* stored verbatim: a C string must hold all of it */
			FUZZ_CHECK(strlen(json_string_value(v)) == json_string_length(v));
		}
	}
	json_decref(b);
	return 0;
}
