/* fuzz_authorize.c: POST /v1/authorize bodies.
 *
 * The handler (h_authorize, billing/authz/authorize.c) checks the body with
 * authz_body_parse() (billing/http/bodies.c), a function without server state:
 * this target calls that same function on the body as read_body() parses
 * it, and checks what it accepts.
 *
 * Properties of an accepted body:
 *   - request_id and model 1..200 bytes without NUL; api_key (if any)
 *     1..255 bytes without NUL; exactly one of api_key and a positive
 *     account_id; input_tokens and max_output_tokens in [0, 10^9];
 *   - the hold can be priced (pricing_cost succeeds at the largest price);
 *   - /v1/usage accepts a usage record built from the same fields, so
 *     whatever was authorized can be settled.
 * A refused body gets 400 invalid_request or 422 invalid_tokens. */
#include <jansson.h>
#include <string.h>

#include "billing/usage/pricing.h"
#include "billing/http/bodies.h"
#include "billing/usage/usage.h"
#include "common/error.h"
#include "tests/fuzz/fuzz.h"

static const uint8_t pepper[32] = {7};

static void check_string(json_t *b, const char *k, size_t max, int required)
{
	json_t *v = json_object_get(b, k);

	if (!v || json_is_null(v)) {
		FUZZ_CHECK(!required);
		return;
	}
	FUZZ_CHECK(json_is_string(v));
	FUZZ_CHECK(json_string_length(v) >= 1 && json_string_length(v) <= max);
	FUZZ_CHECK(strlen(json_string_value(v)) == json_string_length(v));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t je;
	json_t *b = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je), *u, *acct;
	struct error e;
	struct authz_body ab;
	const char *key;
	int64_t in, out;

	if (!b)
		return 0;
	if (!json_is_object(b)) { /* read_body() refuses it before any check */
		json_decref(b);
		return 0;
	}
	memset(&e, 0, sizeof(e));
	if (authz_body_parse(b, &ab, &e) < 0) {
		FUZZ_CHECK((e.status == 400 && strcmp(e.code, "invalid_request") == 0) ||
			   (e.status == 422 && strcmp(e.code, "invalid_tokens") == 0));
		json_decref(b);
		return 0;
	}
	check_string(b, "request_id", 200, 1);
	check_string(b, "model", 200, 1);
	check_string(b, "api_key", 255, 0);
	key = json_string_value(json_object_get(b, "api_key"));
	acct = json_object_get(b, "account_id");
	FUZZ_CHECK((key != NULL) != (acct && !json_is_null(acct)));
	if (!key)
		FUZZ_CHECK(json_is_integer(acct) && json_integer_value(acct) > 0);
	in = json_integer_value(json_object_get(b, "input_tokens"));
	out = json_integer_value(json_object_get(b, "max_output_tokens"));
	/* what the handler uses is what the body says */
	FUZZ_CHECK(ab.input_tokens == in && ab.max_output_tokens == out);
	FUZZ_CHECK(ab.request_id == json_string_value(json_object_get(b, "request_id")));
	FUZZ_CHECK(ab.model == json_string_value(json_object_get(b, "model")));
	FUZZ_CHECK(ab.api_key == key && (key ? ab.account_id == 0 : ab.account_id == json_integer_value(acct)));
	FUZZ_CHECK(in >= 0 && in <= 1000000000 && out >= 0 && out <= 1000000000);

	/* the hold prices as authorize prices it (input, no cached, max output) */
	{
		struct pricing_price p;
		struct pricing_tokens t = {in, 0, out};
		int64_t cost;
		memset(&p, 0, sizeof(p));
		p.input = p.cached_input = p.output = 1000000000000LL;
		FUZZ_CHECK(pricing_cost(&p, &t, FUZZ_NOW_US, &cost) == 0 && cost >= 0);
	}

	/* and the usage record of the same call is accepted */
	{
		struct usage_req r;
		u = json_pack("{s:O,s:O,s:I,s:I,s:I,s:s}", "request_id", json_object_get(b, "request_id"), "model",
			      json_object_get(b, "model"), "input_tokens", (json_int_t)in, "cached_input_tokens",
			      (json_int_t)0, "output_tokens", (json_int_t)out, "started_at", "2026-11-28T23:59:00Z");
		FUZZ_CHECK(u != NULL);
		if (key)
			json_object_set(u, "api_key", json_object_get(b, "api_key"));
		else
			json_object_set(u, "account_id", acct);
		json_object_set(u, "hold_id", json_object_get(b, "request_id"));
		memset(&e, 0, sizeof(e));
		if (usage_parse(u, FUZZ_NOW_US, pepper, &r, &e) != 0) {
			fprintf(stderr, "usage refused an authorized call: %d %s %s\n", e.status, e.code, e.msg);
			FUZZ_CHECK(0);
		}
		FUZZ_CHECK(strcmp(r.request_id, json_string_value(json_object_get(b, "request_id"))) == 0);
		json_decref(u);
	}
	json_decref(b);
	return 0;
}
