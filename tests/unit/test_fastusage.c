/* test_fastusage.c: the jansson-free usage body parser (billing/usage/
 * fastusage.c) against the general path (json_loads + usage_parse): the
 * plain bodies it takes give the general path's usage_req byte for byte;
 * the bodies it must decline (malformed, refused by usage_parse, or not
 * plain: the general path decides them), each alone; batches likewise.
 * The clock is an explicit instant, the bodies' started_at relative to it. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "billing/usage/fastusage.h"
#include "billing/usage/usage.h"
#include "common/timeutil.h"
#include "tests/unit/tap.h"

static const uint8_t pepper[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
static int64_t now; /* 2026-11-29T00:00:00Z */

#define T "\"started_at\":\"2026-11-28T23:59:00Z\""
#define B(rest) "{\"request_id\":\"r\",\"model\":\"m\",\"input_tokens\":10,\"output_tokens\":2," T "," rest "}"

static const struct {
	const char *name, *body;
} declined[] = {
	{"empty input", ""},
	{"not an object", "[1]"},
	{"an empty object", "{}"},
	{"no request_id", "{\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,\"output_tokens\":2," T "}"},
	{"no model", "{\"request_id\":\"r\",\"account_id\":7,\"input_tokens\":1,\"output_tokens\":2," T "}"},
	{"no input_tokens", "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"output_tokens\":2," T "}"},
	{"no output_tokens", "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1," T "}"},
	{"no started_at",
	 "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,\"output_tokens\":2}"},
	{"neither account nor key", B("\"hold_id\":\"h\"")},
	{"both account and key", B("\"account_id\":7,\"api_key\":\"sk\"")},
	{"account 0", B("\"account_id\":0")},
	{"a negative account", B("\"account_id\":-7")},
	{"account as a string", B("\"account_id\":\"7\"")},
	{"account null with a key", B("\"account_id\":null,\"api_key\":\"sk\"")},
	{"a null status", B("\"account_id\":7,\"status\":null")},
	{"a null hold_id", B("\"account_id\":7,\"hold_id\":null")},
	{"an empty api_key", B("\"api_key\":\"\"")},
	{"an empty hold_id", B("\"account_id\":7,\"hold_id\":\"\"")},
	{"an empty status", B("\"account_id\":7,\"status\":\"\"")},
	{"an unknown status", B("\"account_id\":7,\"status\":\"done\"")},
	{"cached over input", B("\"account_id\":7,\"cached_input_tokens\":11")},
	{"a real number", B("\"account_id\":7,\"cached_input_tokens\":1.0")},
	{"an exponent", B("\"account_id\":7,\"cached_input_tokens\":1e0")},
	{"a leading zero", B("\"account_id\":7,\"cached_input_tokens\":01")},
	{"a negative count", B("\"account_id\":7,\"cached_input_tokens\":-1")},
	{"tokens over 10^9", "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1000000001,"
			     "\"output_tokens\":2," T "}"},
	{"a 19-digit account", B("\"account_id\":1000000000000000000")},
	{"a date without a time", "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,"
				  "\"output_tokens\":2,\"started_at\":\"2026-11-28\"}"},
	{"started 36 days ago", "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,"
				"\"output_tokens\":2,\"started_at\":\"2026-10-24T00:00:00Z\"}"},
	{"started 6 minutes ahead", "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,"
				    "\"output_tokens\":2,\"started_at\":\"2026-11-29T00:06:00Z\"}"},
	{"an escape in a string", B("\"account_id\":7,\"hold_id\":\"h\\u0041\"")},
	{"a raw control character", B("\"account_id\":7,\"hold_id\":\"h\x01\"")},
	{"a non-ASCII byte", B("\"account_id\":7,\"hold_id\":\"h\xc3\xa9\"")},
	{"a duplicate member", B("\"account_id\":7,\"account_id\":8")},
	{"another member", B("\"account_id\":7,\"x\":1")},
	{"a trailing comma", B("\"account_id\":7,")},
	{"trailing bytes", B("\"account_id\":7") "x"},
	{"an unterminated string", "{\"request_id\":\"r"},
	{"a missing colon", "{\"request_id\" \"r\"}"},
	{"an unclosed object", "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":1,"
			       "\"output_tokens\":2," T},
};

/* the general path's record, or -1 */
static int general(const char *body, struct usage_req *r)
{
	struct error e;
	json_error_t je;
	json_t *j = json_loads(body, JSON_REJECT_DUPLICATES, &je);
	int rc = j && json_is_object(j) ? usage_parse(j, now, pepper, r, &e) : -1;

	json_decref(j);
	return rc;
}

static void accepted(const char *name, const char *body)
{
	struct usage_req f, g;
	bool ok;

	memset(&f, 0xa5, sizeof(f)); /* whatever was there before */
	ok = fastusage_parse(body, strlen(body), now, pepper, &f);
	OK(ok && general(body, &g) == 0 && memcmp(&f, &g, sizeof(f)) == 0, "%s: taken, the general path's record",
	   name);
}

static void batch(const char *name, const char *body, size_t want_n)
{
	struct usage_req *f = malloc(4 * sizeof(*f));
	size_t n = 99;
	bool ok = f && fastusage_parse_batch(body, strlen(body), now, pepper, f, 4, &n);

	if (!want_n) {
		OK(!ok, "batch: declines %s", name);
	} else {
		json_error_t je;
		json_t *j = json_loads(body, JSON_REJECT_DUPLICATES, &je), *recs = json_object_get(j, "records");
		bool same = ok && n == want_n && json_array_size(recs) == n;
		for (size_t i = 0; same && i < n; i++) {
			struct usage_req g;
			struct error e;
			same = usage_parse(json_array_get(recs, i), now, pepper, &g, &e) == 0 &&
			       memcmp(&f[i], &g, sizeof(g)) == 0;
		}
		OK(same, "batch: %s: taken, each the general path's record", name);
		json_decref(j);
	}
	free(f);
}

#define R1 "{\"request_id\":\"b1\",\"account_id\":1,\"model\":\"m\",\"input_tokens\":1,\"output_tokens\":2," T "}"
#define R2 "{\"request_id\":\"b2\",\"api_key\":\"sk-2\",\"model\":\"m\",\"input_tokens\":3,\"output_tokens\":4," T "}"
#define RBAD "{\"request_id\":\"b3\",\"account_id\":0,\"model\":\"m\",\"input_tokens\":1,\"output_tokens\":2," T "}"

int main(void)
{
	struct usage_req r;

	OK(time_parse_rfc3339("2026-11-29T00:00:00Z", 0, &now) == 0, "the clock of the tests");
	for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
		bool fast = fastusage_parse(declined[i].body, strlen(declined[i].body), now, pepper, &r);
		OK(!fast, "declines %s", declined[i].name);
	}
	accepted("by account",
		 "{\"request_id\":\"r-1\",\"account_id\":7,\"model\":\"deepseek-chat\",\"input_tokens\":1200,"
		 "\"cached_input_tokens\":200,\"output_tokens\":300," T "}");
	accepted("by key, with hold and status, spaces, any order",
		 " { \"status\" : \"cancelled\" ,\"api_key\":\"sk-x\",\r\n\"hold_id\":\"h-1\",\"output_tokens\":0,"
		 "\"model\":\"m\", \"input_tokens\":0,\t\"started_at\":\"2026-11-28T23:00:00.5+01:00\","
		 "\"request_id\":\"a/b\" }\n");
	accepted("status ok", B("\"account_id\":7,\"status\":\"ok\""));
	accepted("status error", B("\"account_id\":9223372036854775,\"status\":\"error\""));
	accepted("the edges of the window", "{\"request_id\":\"r\",\"model\":\"m\",\"account_id\":7,\"input_tokens\":"
					    "1000000000,\"cached_input_tokens\":1000000000,\"output_tokens\":0,"
					    "\"started_at\":\"2026-11-29T00:05:00Z\"}");
	{
		char body[1200];
		snprintf(body, sizeof(body),
			 "{\"request_id\":\"%0200d\",\"api_key\":\"%0255d\",\"model\":\"%0200d\",\"input_tokens\":1,"
			 "\"output_tokens\":2,\"hold_id\":\"%0200d\",\"status\":\"ok\"," T "}",
			 0, 0, 0, 0);
		accepted("the longest strings", body);
		snprintf(body, sizeof(body),
			 "{\"request_id\":\"r\",\"account_id\":1,\"model\":\"m\",\"input_tokens\":1,"
			 "\"output_tokens\":2,\"hold_id\":\"%0201d\"," T "}",
			 0);
		OK(!fastusage_parse(body, strlen(body), now, pepper, &r), "declines a hold_id of 201 bytes");
		OK(general(body, &r) < 0, "which the general path refuses");
	}
	/* each declined body that is valid JSON but refused: the general path refuses it too */
	OK(general(B("\"account_id\":7,\"status\":\"done\""), &r) < 0, "the general path refuses an unknown status");
	OK(general(B("\"account_id\":7,\"cached_input_tokens\":11"), &r) < 0, "and cached over input");
	batch("two records", "{\"records\":[" R1 "," R2 "]}", 2);
	batch("spaces", " {\n\"records\" : [ " R1 " ] } ", 1);
	batch("an empty array", "{\"records\":[]}", 0);
	batch("a record the general path refuses", "{\"records\":[" R1 "," RBAD "]}", 0);
	batch("more records than room", "{\"records\":[" R1 "," R1 "," R1 "," R1 "," R1 "]}", 0);
	batch("another member", "{\"records\":[" R1 "],\"x\":1}", 0);
	batch("not records", "{\"record\":[" R1 "]}", 0);
	batch("a trailing comma", "{\"records\":[" R1 ",]}", 0);
	batch("trailing bytes", "{\"records\":[" R1 "]}]", 0);
	return tap_done();
}
