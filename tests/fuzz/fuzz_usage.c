/* fuzz_usage.c: POST /v1/usage and /v1/usage/batch bodies.
 *
 * The bytes go through the same path as billingd's read_body()
 * (json_loadb with JSON_REJECT_DUPLICATES) and then usage_parse() with a
 * fixed clock.  Properties of every accepted record:
 *   - request_id and model 1..200 bytes, hold_id <= 129, status <= 32, no NUL;
 *   - exactly one principal (api_key or a positive account_id);
 *   - every token count in [0, 10^9], cached_input_tokens <= input_tokens;
 *   - started_at within [now - 35 days, now + 5 minutes];
 *   - parsing is deterministic: the same body gives the same body hash;
 *   - the record prices without error at any sane price (128-bit formula),
 *     and the cost is the formula of CONTRACT.md §2 computed here again;
 *   - the request_id and model are also accepted by /v1/authorize's rules
 *     (a gateway must be able to authorize whatever it may settle).
 * A refused record carries 400 or 422 and a stable code. */
#include <jansson.h>
#include <string.h>

#include "billing/usage/pricing.h"
#include "billing/usage/usage.h"
#include "billing/http/bodies.h"
#include "common/error.h"
#include "tests/fuzz/fuzz.h"

static const uint8_t pepper[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
				   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static int64_t expected_cost(const struct pricing_price *p, const struct usage_req *r, int64_t m)
{
	__int128 u = r->input_tokens - r->cached_input_tokens;
	__int128 num = (u * p->input + (__int128)r->cached_input_tokens * p->cached_input +
			(__int128)r->output_tokens * p->output) *
		       m;
	__int128 q = num / 10000000000LL, rem = num % 10000000000LL;

	return (int64_t)(q + (2 * rem >= 10000000000LL ? 1 : 0));
}

static void check_one(const json_t *body)
{
	struct usage_req r, r2;
	struct error e;
	uint8_t h1[32], h2[32];
	json_t *copy;
	size_t l;

	memset(&e, 0, sizeof(e));
	if (usage_parse(body, FUZZ_NOW_US, pepper, &r, &e) < 0) {
		FUZZ_CHECK(e.status == 400 || e.status == 422);
		FUZZ_CHECK(e.code[0] != '\0' && strlen(e.code) < sizeof(e.code));
		FUZZ_CHECK(strlen(e.msg) < sizeof(e.msg));
		return;
	}
	l = strnlen(r.request_id, sizeof(r.request_id));
	FUZZ_CHECK(l >= 1 && l <= 200);
	FUZZ_CHECK(strcmp(json_string_value(json_object_get(body, "request_id")), r.request_id) == 0);
	l = strnlen(r.model, sizeof(r.model));
	FUZZ_CHECK(l >= 1 && l <= 200);
	FUZZ_CHECK(strnlen(r.hold_id, sizeof(r.hold_id)) < sizeof(r.hold_id));
	FUZZ_CHECK(strnlen(r.status, sizeof(r.status)) < sizeof(r.status));
	FUZZ_CHECK(r.has_key != (r.account_id > 0));
	FUZZ_CHECK(r.account_id >= 0);
	FUZZ_CHECK(r.input_tokens >= 0 && r.input_tokens <= PRICING_MAX_TOKENS);
	FUZZ_CHECK(r.cached_input_tokens >= 0 && r.cached_input_tokens <= r.input_tokens);
	FUZZ_CHECK(r.output_tokens >= 0 && r.output_tokens <= PRICING_MAX_TOKENS);
	FUZZ_CHECK(r.started_at_us >= FUZZ_NOW_US - USAGE_MAX_AGE_US);
	FUZZ_CHECK(r.started_at_us <= FUZZ_NOW_US + USAGE_MAX_AHEAD_US);

	/* what usage accepts, authorize's checks (billing/http/bodies.c want_string) accept too */
	{
		json_t *b = (json_t *)body;
		FUZZ_CHECK(want_string(b, "request_id", true, 200, &e) == 0);
		FUZZ_CHECK(want_string(b, "model", true, 200, &e) == 0);
		FUZZ_CHECK(want_string(b, "api_key", false, 255, &e) == 0);
	}

	/* deterministic, and independent of the JSON object's identity */
	usage_body_hash(&r, h1);
	copy = json_deep_copy(body);
	FUZZ_CHECK(copy != NULL);
	memset(&e, 0, sizeof(e));
	FUZZ_CHECK(usage_parse(copy, FUZZ_NOW_US, pepper, &r2, &e) == 0);
	usage_body_hash(&r2, h2);
	FUZZ_CHECK(memcmp(h1, h2, 32) == 0);
	json_decref(copy);

	/* prices: DeepSeek-like, and the largest a price list may hold (10^12 nanos per 1M tokens), with windows */
	{
		struct pricing_price p;
		struct pricing_tokens t = {r.input_tokens, r.cached_input_tokens, r.output_tokens};
		int64_t cost, m;
		char err[128];

		memset(&p, 0, sizeof(p));
		p.input = 2000000000;
		p.cached_input = 500000000;
		p.output = 8000000000;
		FUZZ_CHECK(pricing_parse_windows("16:30-00:30=5000,02:00-04:00=7500", &p, err, sizeof(err)) == 0);
		FUZZ_CHECK(pricing_cost(&p, &t, r.started_at_us, &cost) == 0);
		m = pricing_multiplier(&p, r.started_at_us);
		FUZZ_CHECK(m == 5000 || m == 7500 || m == 10000);
		FUZZ_CHECK(cost == expected_cost(&p, &r, m));
		p.input = p.cached_input = p.output = 1000000000000LL;
		p.n_windows = 0;
		FUZZ_CHECK(pricing_cost(&p, &t, r.started_at_us, &cost) == 0);
		FUZZ_CHECK(cost == expected_cost(&p, &r, 10000) && cost >= 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t je;
	json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je), *recs, *v;
	size_t i;

	if (!j)
		return 0;
	check_one(j); /* a non-object is refused with 400 */
	recs = json_object_get(j, "records");
	if (json_is_array(recs))
		json_array_foreach(recs, i, v)
		{
			if (i >= 64)
				break;
			check_one(v);
		}
	json_decref(j);
	return 0;
}
