/* test_fastbody.c: the jansson-free authorize body parser and answer writer
 * (billing/http/fastbody.c): the plain bodies it takes, with their values;
 * the bodies it must decline (malformed, or not plain: the general path
 * decides them), each alone; answers equal to jansson's dump. */
#include <jansson.h>
#include <string.h>

#include "billing/http/bodies.h"
#include "billing/http/fastbody.h"
#include "tests/unit/tap.h"

#define B(rest) "{\"request_id\":\"r\",\"model\":\"m\"," rest "}"

static const struct {
	const char *name, *body;
} declined[] = {
	{"empty input", ""},
	{"not an object", "[1]"},
	{"an empty object", "{}"},
	{"no request_id", "{\"account_id\":7,\"model\":\"m\",\"input_tokens\":1,\"max_output_tokens\":2}"},
	{"no model", "{\"request_id\":\"r\",\"account_id\":7,\"input_tokens\":1,\"max_output_tokens\":2}"},
	{"no input_tokens", B("\"account_id\":7,\"max_output_tokens\":2")},
	{"no max_output_tokens", B("\"account_id\":7,\"input_tokens\":1")},
	{"neither account nor key", B("\"input_tokens\":1,\"max_output_tokens\":2")},
	{"both account and key", B("\"account_id\":7,\"api_key\":\"sk\",\"input_tokens\":1,\"max_output_tokens\":2")},
	{"account 0", B("\"account_id\":0,\"input_tokens\":1,\"max_output_tokens\":2")},
	{"a negative account", B("\"account_id\":-7,\"input_tokens\":1,\"max_output_tokens\":2")},
	{"account as a string", B("\"account_id\":\"7\",\"input_tokens\":1,\"max_output_tokens\":2")},
	{"account null", B("\"account_id\":null,\"api_key\":\"sk\",\"input_tokens\":1,\"max_output_tokens\":2")},
	{"a real number", B("\"account_id\":7,\"input_tokens\":1.0,\"max_output_tokens\":2")},
	{"an exponent", B("\"account_id\":7,\"input_tokens\":1e3,\"max_output_tokens\":2")},
	{"a leading zero", B("\"account_id\":7,\"input_tokens\":01,\"max_output_tokens\":2")},
	{"tokens over 10^9", B("\"account_id\":7,\"input_tokens\":1000000001,\"max_output_tokens\":2")},
	{"a 19-digit account", B("\"account_id\":1000000000000000000,\"input_tokens\":1,\"max_output_tokens\":2")},
	{"an empty request_id", "{\"request_id\":\"\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,"
				"\"max_output_tokens\":2}"},
	{"an escape in a string", "{\"request_id\":\"r\\u0041\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,"
				  "\"max_output_tokens\":2}"},
	{"a raw control character", "{\"request_id\":\"r\x01\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,"
				    "\"max_output_tokens\":2}"},
	{"a non-ASCII byte", "{\"request_id\":\"r\xc3\xa9\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,"
			     "\"max_output_tokens\":2}"},
	{"a duplicate member", B("\"account_id\":7,\"account_id\":8,\"input_tokens\":1,\"max_output_tokens\":2")},
	{"another member", B("\"account_id\":7,\"input_tokens\":1,\"max_output_tokens\":2,\"x\":1")},
	{"a trailing comma", B("\"account_id\":7,\"input_tokens\":1,\"max_output_tokens\":2,")},
	{"trailing bytes", B("\"account_id\":7,\"input_tokens\":1,\"max_output_tokens\":2") "x"},
	{"an unterminated string", "{\"request_id\":\"r"},
	{"a missing colon", "{\"request_id\" \"r\"}"},
	{"an unclosed object", "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,"
			       "\"max_output_tokens\":2"},
};

static void accepted(const char *name, const char *body)
{
	struct fastbody_authz fb;
	struct authz_body ab;
	struct error e;
	json_error_t je;
	json_t *j = json_loads(body, JSON_REJECT_DUPLICATES, &je);
	bool ok = fastbody_authz_parse(body, strlen(body), &fb);

	OK(ok && j && authz_body_parse(j, &ab, &e) == 0 && strcmp(fb.request_id, ab.request_id) == 0 &&
		   strcmp(fb.model, ab.model) == 0 &&
		   (ab.api_key ? strcmp(fb.api_key, ab.api_key) == 0 : !fb.api_key[0]) &&
		   fb.account_id == ab.account_id && fb.input_tokens == ab.input_tokens &&
		   fb.max_output_tokens == ab.max_output_tokens,
	   "%s: taken, with the general path's values", name);
	json_decref(j);
}

static void answer(const char *name, const char *hold_id, int64_t acct, int64_t held, int64_t avail, bool fast)
{
	const char *exp = "2026-11-29T00:10:00.000000Z";
	char out[512], *want;
	size_t n = fastbody_hold_answer(out, sizeof(out), hold_id, acct, held, avail, exp);
	json_t *j = json_pack("{s:s,s:I,s:I,s:I,s:s}", "hold_id", hold_id, "account_id", (json_int_t)acct, "held_nanos",
			      (json_int_t)held, "available_nanos", (json_int_t)avail, "expires_at", exp);

	want = json_dumps(j, JSON_COMPACT);
	if (fast)
		OK(n == strlen(want) + 1 && memcmp(out, want, n - 1) == 0 && out[n - 1] == '\n',
		   "%s: the answer is jansson's bytes", name);
	else
		OK(n == 0, "%s: left to jansson", name);
	free(want);
	json_decref(j);
}

int main(void)
{
	struct fastbody_authz fb;

	for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++)
		OK(!fastbody_authz_parse(declined[i].body, strlen(declined[i].body), &fb), "declines %s",
		   declined[i].name);
	accepted("by account", "{\"request_id\":\"r-1\",\"account_id\":7,\"model\":\"m\",\"input_tokens\":100,"
			       "\"max_output_tokens\":20}");
	accepted("by key, spaces, any order",
		 " { \"max_output_tokens\" : 1000000000 ,\"api_key\":\"sk-x\",\r\n"
		 "\"model\":\"deepseek-chat\", \"input_tokens\":0,\"request_id\":\"a/b\" }\n");
	{
		char body[900];
		snprintf(body, sizeof(body),
			 "{\"request_id\":\"%0200d\",\"api_key\":\"%0255d\",\"model\":\"%0200d\",\"input_tokens\":1,"
			 "\"max_output_tokens\":2}",
			 0, 0, 0);
		accepted("the longest strings", body);
		snprintf(body, sizeof(body),
			 "{\"request_id\":\"%0201d\",\"account_id\":1,\"model\":\"m\",\"input_tokens\":1,"
			 "\"max_output_tokens\":2}",
			 0);
		OK(!fastbody_authz_parse(body, strlen(body), &fb), "declines a request_id of 201 bytes");
	}
	answer("a plain hold", "req-1/a", 7, 1000, 13999999000, true);
	answer("negative and large amounts", "r", INT64_MAX, INT64_MIN, -5, true);
	answer("a quote in the id", "r\"x", 7, 1, 1, false);
	answer("a backslash in the id", "r\\x", 7, 1, 1, false);
	answer("a non-ASCII id", "r\xc3\xa9", 7, 1, 1, false);
	{
		char out[16];
		OK(fastbody_hold_answer(out, sizeof(out), "r", 1, 1, 1, "2026") == 0, "an answer that does not fit: 0");
	}
	return tap_done();
}
