/* fuzz_fastusage.c: the jansson-free usage body parser (billing/usage/
 * fastusage.c) against the general path.
 *
 * Properties, at one fixed clock and pepper:
 *   - whatever fastusage_parse accepts, json_loadb (as read_body() calls
 *     it) + usage_parse accept too, with the very same usage_req, byte for
 *     byte (so the same body hash and the same record);
 *   - whatever fastusage_parse_batch accepts, the general batch path takes
 *     as a "records" array of as many bodies, each accepted by usage_parse
 *     with the same usage_req as the fast parser's, in order;
 *   - what either declines costs nothing: the handler takes the general
 *     path, which gives every error answer. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "billing/usage/fastusage.h"
#include "billing/usage/usage.h"
#include "common/error.h"
#include "tests/fuzz/fuzz.h"

static const uint8_t pepper[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
				   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void same_as_general(const json_t *body, const struct usage_req *fast)
{
	struct usage_req r;
	struct error e;

	memset(&e, 0, sizeof(e));
	FUZZ_CHECK(usage_parse(body, FUZZ_NOW_US, pepper, &r, &e) == 0);
	FUZZ_CHECK(memcmp(&r, fast, sizeof(r)) == 0);
}

static void check_one(const uint8_t *data, size_t size)
{
	struct usage_req fast;
	json_error_t je;
	json_t *b;

	if (!fastusage_parse((const char *)data, size, FUZZ_NOW_US, pepper, &fast))
		return;
	b = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
	FUZZ_CHECK(b != NULL && json_is_object(b));
	same_as_general(b, &fast);
	json_decref(b);
}

static void check_batch(const uint8_t *data, size_t size)
{
	enum { MAX = 8 };
	struct usage_req *fast = malloc(MAX * sizeof(*fast));
	json_error_t je;
	json_t *b, *recs;
	size_t n;

	FUZZ_CHECK(fast != NULL);
	if (!fastusage_parse_batch((const char *)data, size, FUZZ_NOW_US, pepper, fast, MAX, &n)) {
		free(fast);
		return;
	}
	b = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
	FUZZ_CHECK(b != NULL && json_is_object(b));
	recs = json_object_get(b, "records");
	FUZZ_CHECK(json_is_array(recs) && json_array_size(recs) == n && n >= 1 && n <= MAX);
	for (size_t i = 0; i < n; i++)
		same_as_general(json_array_get(recs, i), &fast[i]);
	json_decref(b);
	free(fast);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_one(data, size);
	check_batch(data, size);
	return 0;
}
