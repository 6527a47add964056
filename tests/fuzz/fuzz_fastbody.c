/* fuzz_fastbody.c: the jansson-free authorize body parser and answer writer
 * (billing/http/fastbody.c) against the general path.
 *
 * Properties:
 *   - whatever fastbody_authz_parse accepts, json_loadb (as read_body()
 *     calls it) + authz_body_parse accept too, with the same request_id,
 *     model, api_key or account_id, input_tokens and max_output_tokens;
 *     what it declines costs nothing: the handler takes the general path;
 *   - fastbody_hold_answer, given the input's bytes as a hold id (and an
 *     instant string), writes either nothing or exactly the bytes jansson's
 *     compact dump of the same answer gives (plus reply()'s newline). */
#include <jansson.h>
#include <string.h>

#include "billing/http/bodies.h"
#include "billing/http/fastbody.h"
#include "common/error.h"
#include "tests/fuzz/fuzz.h"

static void check_parse(const uint8_t *data, size_t size)
{
	struct fastbody_authz fb;
	struct authz_body ab;
	struct error e;
	json_error_t je;
	json_t *b;

	if (!fastbody_authz_parse((const char *)data, size, &fb))
		return;
	b = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
	FUZZ_CHECK(b != NULL && json_is_object(b));
	memset(&e, 0, sizeof(e));
	FUZZ_CHECK(authz_body_parse(b, &ab, &e) == 0);
	FUZZ_CHECK(strcmp(ab.request_id, fb.request_id) == 0);
	FUZZ_CHECK(strcmp(ab.model, fb.model) == 0);
	FUZZ_CHECK(ab.api_key ? strcmp(ab.api_key, fb.api_key) == 0 : fb.api_key[0] == '\0');
	FUZZ_CHECK(ab.account_id == fb.account_id);
	FUZZ_CHECK(ab.input_tokens == fb.input_tokens && ab.max_output_tokens == fb.max_output_tokens);
	json_decref(b);
}

static void check_answer(const uint8_t *data, size_t size)
{
	char id[256], out[512], *want;
	size_t n = size < sizeof(id) - 1 ? size : sizeof(id) - 1, got;
	uint64_t u = 0;
	int64_t v, w;
	json_t *j;

	memcpy(id, data, n);
	id[n] = '\0';
	for (size_t i = 0; i < 8 && i < size; i++)
		u = u << 8 | data[i];
	v = (int64_t)u;
	w = (int64_t)~u;
	got = fastbody_hold_answer(out, sizeof(out), id, v, w, v / 3, "2026-11-29T00:10:00.000000Z");
	if (!got)
		return;
	j = json_pack("{s:s,s:I,s:I,s:I,s:s}", "hold_id", id, "account_id", (json_int_t)v, "held_nanos", (json_int_t)w,
		      "available_nanos", (json_int_t)(v / 3), "expires_at", "2026-11-29T00:10:00.000000Z");
	FUZZ_CHECK(j != NULL);
	want = json_dumps(j, JSON_COMPACT);
	FUZZ_CHECK(want && got == strlen(want) + 1 && memcmp(out, want, got - 1) == 0 && out[got - 1] == '\n');
	free(want);
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_parse(data, size);
	check_answer(data, size);
	return 0;
}
