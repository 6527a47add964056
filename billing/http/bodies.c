/* bodies.c: see bodies.h.  Shared by the HTTP handlers and the fuzz targets
 * (tests/fuzz/fuzz_authorize.c, fuzz_signup.c), so the rules are fuzzed
 * where they live. */
#include "billing/http/bodies.h"

#include <inttypes.h>
#include <string.h>

int want_string(json_t *b, const char *k, bool required, size_t max, struct error *err)
{
	json_t *v = json_object_get(b, k);

	if (!v || json_is_null(v)) {
		if (required)
			error_set(err, 400, "invalid_request", "field '%s' is required", k);
		return required ? -1 : 0;
	}
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		return error_set(err, 400, "invalid_request", "field '%s' must be a string of 1 to %zu characters", k,
				 max);
	}
	return 0;
}

int want_int(json_t *b, const char *k, bool required, int64_t min, int64_t max, struct error *err)
{
	json_t *v = json_object_get(b, k);

	if (!v || json_is_null(v)) {
		if (required)
			error_set(err, 400, "invalid_request", "field '%s' is required", k);
		return required ? -1 : 0;
	}
	if (!json_is_integer(v)) {
		return error_set(err, 400, "invalid_request", "field '%s' must be an integer", k);
	}
	if (json_integer_value(v) < min || json_integer_value(v) > max) {
		return error_set(err, 422, "invalid_amount", "field '%s' must be between %" PRId64 " and %" PRId64, k,
				 min, max);
	}
	return 0;
}

int authz_body_parse(json_t *b, struct authz_body *out, struct error *err)
{
	json_t *acct;
	const char *key;

	memset(out, 0, sizeof(*out));
	if (want_string(b, "request_id", true, 200, err) < 0 || want_string(b, "api_key", false, 255, err) < 0 ||
	    want_string(b, "model", true, 200, err) < 0)
		return -1;
	acct = json_object_get(b, "account_id");
	key = json_string_value(json_object_get(b, "api_key"));
	if (acct && !json_is_null(acct) && (!json_is_integer(acct) || json_integer_value(acct) <= 0)) {
		return error_set(err, 400, "invalid_request", "field 'account_id' must be a positive integer");
	}
	if ((key != NULL) == (acct && !json_is_null(acct))) {
		return error_set(err, 400, "invalid_request", "give exactly one of 'api_key' and 'account_id'");
	}
	if (want_int(b, "input_tokens", true, 0, 1000000000, err) < 0 ||
	    want_int(b, "max_output_tokens", true, 0, 1000000000, err) < 0) {
		if (err->status == 422)
			snprintf(err->code, sizeof(err->code), "invalid_tokens");
		return -1;
	}
	out->request_id = json_string_value(json_object_get(b, "request_id"));
	out->model = json_string_value(json_object_get(b, "model"));
	out->api_key = key;
	out->account_id = key ? 0 : json_integer_value(acct);
	out->input_tokens = json_integer_value(json_object_get(b, "input_tokens"));
	out->max_output_tokens = json_integer_value(json_object_get(b, "max_output_tokens"));
	return 0;
}

int signup_body_check(json_t *b, struct error *err)
{
	json_t *ids, *v;
	size_t i;

	if (want_string(b, "external_id", true, 200, err) < 0 || want_string(b, "referral_code", false, 64, err) < 0)
		return -1;
	ids = json_object_get(b, "identity");
	if (!ids || json_is_null(ids))
		return 0;
	if (!json_is_array(ids) || json_array_size(ids) > 16) {
		return error_set(err, 400, "invalid_request",
				 "field 'identity' must be an array of at most 16 strings");
	}
	json_array_foreach(ids, i, v)
	{
		if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 200) {
			return error_set(err, 400, "invalid_request",
					 "field 'identity' must hold strings of 1 to 200 characters");
		}
	}
	return 0;
}
