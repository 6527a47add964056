/* test_bodies.c: the request body rules, each alone (no server, no
 * database): authz_body_parse, signup_body_check, want_string/want_int
 * (billing/http/bodies.c) and usage_parse (billing/usage/usage.c).  One
 * table per rule: a body, the status and code it must get (0 = accepted). */
#include <jansson.h>
#include <string.h>

#include "billing/http/bodies.h"
#include "billing/usage/usage.h"
#include "common/timeutil.h"
#include "tests/unit/tap.h"

struct c {
	const char *name, *body;
	int status;
	const char *code;
};

static json_t *load(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);

	if (!j)
		printf("# bad fixture %s: %s\n", text, je.text);
	return j;
}

static void check(const char *what, const struct c *c, int rc, const struct error *e)
{
	if (c->status == 0)
		OK(rc == 0, "%s: %s is accepted%s%s", what, c->name, rc ? ", got " : "", rc ? e->code : "");
	else
		OK(rc == -1 && e->status == c->status && strcmp(e->code, c->code) == 0 && e->msg[0] &&
			   !strchr(e->msg, '\n'),
		   "%s: %s -> %d %s (got %d %s: %s)", what, c->name, c->status, c->code, rc ? e->status : 0,
		   rc ? e->code : "-", rc ? e->msg : "");
}

static const struct c authz_cases[] = {
	{"by account",
	 "{\"request_id\":\"r\",\"account_id\":7,\"model\":\"m\",\"input_tokens\":1,\"max_output_tokens\":2}", 0, NULL},
	{"by api_key",
	 "{\"request_id\":\"r\",\"api_key\":\"sk\",\"model\":\"m\",\"input_tokens\":0,\"max_output_tokens\":0}", 0,
	 NULL},
	{"no request_id", "{\"account_id\":7,\"model\":\"m\",\"input_tokens\":1,\"max_output_tokens\":2}", 400,
	 "invalid_request"},
	{"an empty request_id",
	 "{\"request_id\":\"\",\"account_id\":7,\"model\":\"m\",\"input_tokens\":1,"
	 "\"max_output_tokens\":2}",
	 400, "invalid_request"},
	{"a NUL in the model",
	 "{\"request_id\":\"r\",\"account_id\":7,\"model\":\"m\\u0000x\",\"input_tokens\":1,"
	 "\"max_output_tokens\":2}",
	 400, "invalid_request"},
	{"both account and key",
	 "{\"request_id\":\"r\",\"account_id\":7,\"api_key\":\"sk\",\"model\":\"m\","
	 "\"input_tokens\":1,\"max_output_tokens\":2}",
	 400, "invalid_request"},
	{"neither account nor key", "{\"request_id\":\"r\",\"model\":\"m\",\"input_tokens\":1,\"max_output_tokens\":2}",
	 400, "invalid_request"},
	{"account 0",
	 "{\"request_id\":\"r\",\"account_id\":0,\"model\":\"m\",\"input_tokens\":1,\"max_output_tokens\":2}", 400,
	 "invalid_request"},
	{"account as a string",
	 "{\"request_id\":\"r\",\"account_id\":\"7\",\"model\":\"m\",\"input_tokens\":1,"
	 "\"max_output_tokens\":2}",
	 400, "invalid_request"},
	{"tokens as a real number",
	 "{\"request_id\":\"r\",\"account_id\":7,\"model\":\"m\",\"input_tokens\":1.0,"
	 "\"max_output_tokens\":2}",
	 400, "invalid_request"},
	{"negative tokens",
	 "{\"request_id\":\"r\",\"account_id\":7,\"model\":\"m\",\"input_tokens\":-1,"
	 "\"max_output_tokens\":2}",
	 422, "invalid_tokens"},
	{"tokens above 10^9",
	 "{\"request_id\":\"r\",\"account_id\":7,\"model\":\"m\",\"input_tokens\":1,"
	 "\"max_output_tokens\":1000000001}",
	 422, "invalid_tokens"},
	{"no max_output_tokens", "{\"request_id\":\"r\",\"account_id\":7,\"model\":\"m\",\"input_tokens\":1}", 400,
	 "invalid_request"},
};

static void test_authz_body(void)
{
	for (size_t i = 0; i < sizeof(authz_cases) / sizeof(authz_cases[0]); i++) {
		struct error e = {0};
		struct authz_body ab;
		json_t *b = load(authz_cases[i].body);

		check("authorize", &authz_cases[i], b ? authz_body_parse(b, &ab, &e) : -2, &e);
		if (authz_cases[i].status == 0 && b) {
			OK(strcmp(ab.request_id, "r") == 0 && strcmp(ab.model, "m") == 0,
			   "authorize: %s: fields borrowed", authz_cases[i].name);
			OK((ab.api_key != NULL) != (ab.account_id > 0), "authorize: %s: exactly one principal",
			   authz_cases[i].name);
		}
		json_decref(b);
	}
}

static const struct c signup_cases[] = {
	{"an external id", "{\"external_id\":\"u1\"}", 0, NULL},
	{"with identities and a code",
	 "{\"external_id\":\"u1\",\"referral_code\":\"ABC\",\"identity\":[\"h1\",\"h2\"]}", 0, NULL},
	{"identity null", "{\"external_id\":\"u1\",\"identity\":null}", 0, NULL},
	{"no external id", "{\"referral_code\":\"ABC\"}", 400, "invalid_request"},
	{"identity not an array", "{\"external_id\":\"u1\",\"identity\":\"h1\"}", 400, "invalid_request"},
	{"an empty identity", "{\"external_id\":\"u1\",\"identity\":[\"\"]}", 400, "invalid_request"},
	{"an identity number", "{\"external_id\":\"u1\",\"identity\":[7]}", 400, "invalid_request"},
	{"17 identities",
	 "{\"external_id\":\"u1\",\"identity\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\","
	 "\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
	 400, "invalid_request"},
};

static void test_signup_body(void)
{
	for (size_t i = 0; i < sizeof(signup_cases) / sizeof(signup_cases[0]); i++) {
		struct error e = {0};
		json_t *b = load(signup_cases[i].body);

		check("signup", &signup_cases[i], b ? signup_body_check(b, &e) : -2, &e);
		json_decref(b);
	}
	{
		char id[202];
		struct error e = {0};
		json_t *b;

		memset(id, 'x', 200);
		id[200] = '\0';
		b = json_pack("{s:s}", "external_id", id);
		OK(signup_body_check(b, &e) == 0, "signup: a 200-byte external id is accepted");
		json_decref(b);
		id[200] = 'x';
		id[201] = '\0';
		b = json_pack("{s:s}", "external_id", id);
		OK(signup_body_check(b, &e) == -1 && e.status == 400, "signup: a 201-byte external id is 400");
		json_decref(b);
	}
}

static void test_want(void)
{
	json_t *b = load("{\"s\":\"abc\",\"n\":null,\"i\":5,\"r\":5.0,\"big\":9223372036854775807}");
	struct error e = {0};

	OK(want_string(b, "s", true, 3, &e) == 0, "want_string: 3 bytes within 3");
	OK(want_string(b, "s", true, 2, &e) == -1 && e.status == 400, "want_string: 3 bytes over 2 is 400");
	OK(want_string(b, "n", false, 3, &e) == 0, "want_string: null is absent");
	OK(want_string(b, "n", true, 3, &e) == -1 && e.status == 400, "want_string: null but required is 400");
	OK(want_string(b, "i", true, 3, &e) == -1 && e.status == 400, "want_string: a number is 400");
	OK(want_int(b, "i", true, 5, 5, &e) == 0, "want_int: the bounds are inclusive");
	OK(want_int(b, "i", true, 6, 9, &e) == -1 && e.status == 422 && strcmp(e.code, "invalid_amount") == 0,
	   "want_int: out of range is 422 invalid_amount");
	OK(want_int(b, "r", true, 0, 9, &e) == -1 && e.status == 400, "want_int: a real number is 400");
	OK(want_int(b, "big", true, 0, INT64_MAX, &e) == 0, "want_int: INT64_MAX within [0, INT64_MAX]");
	OK(want_int(b, "missing", false, 0, 1, &e) == 0, "want_int: absent and optional");
	json_decref(b);
}

static const struct c usage_cases[] = {
	{"a record by account",
	 "{\"request_id\":\"u\",\"account_id\":3,\"model\":\"m\",\"input_tokens\":10,"
	 "\"output_tokens\":5,\"started_at\":\"2026-06-15T12:00:00Z\"}",
	 0, NULL},
	{"cached, hold, status",
	 "{\"request_id\":\"u\",\"api_key\":\"sk\",\"model\":\"m\",\"input_tokens\":10,"
	 "\"cached_input_tokens\":10,\"output_tokens\":0,\"started_at\":\"2026-06-15T12:00:00Z\","
	 "\"hold_id\":\"h\",\"status\":\"cancelled\"}",
	 0, NULL},
	{"cached above input",
	 "{\"request_id\":\"u\",\"account_id\":3,\"model\":\"m\",\"input_tokens\":10,"
	 "\"cached_input_tokens\":11,\"output_tokens\":0,\"started_at\":\"2026-06-15T12:00:00Z\"}",
	 422, "invalid_tokens"},
	{"both principals",
	 "{\"request_id\":\"u\",\"account_id\":3,\"api_key\":\"sk\",\"model\":\"m\",\"input_tokens\":1,"
	 "\"output_tokens\":1,\"started_at\":\"2026-06-15T12:00:00Z\"}",
	 400, "invalid_request"},
	{"no principal",
	 "{\"request_id\":\"u\",\"model\":\"m\",\"input_tokens\":1,\"output_tokens\":1,"
	 "\"started_at\":\"2026-06-15T12:00:00Z\"}",
	 400, "invalid_request"},
	{"a malformed time",
	 "{\"request_id\":\"u\",\"account_id\":3,\"model\":\"m\",\"input_tokens\":1,"
	 "\"output_tokens\":1,\"started_at\":\"2026-06-15 12:00\"}",
	 400, "invalid_request"},
	{"36 days before now",
	 "{\"request_id\":\"u\",\"account_id\":3,\"model\":\"m\",\"input_tokens\":1,"
	 "\"output_tokens\":1,\"started_at\":\"2026-05-10T12:00:00Z\"}",
	 422, "invalid_started_at"},
	{"6 minutes after now",
	 "{\"request_id\":\"u\",\"account_id\":3,\"model\":\"m\",\"input_tokens\":1,"
	 "\"output_tokens\":1,\"started_at\":\"2026-06-15T12:06:00Z\"}",
	 422, "invalid_started_at"},
	{"an unknown status",
	 "{\"request_id\":\"u\",\"account_id\":3,\"model\":\"m\",\"input_tokens\":1,"
	 "\"output_tokens\":1,\"started_at\":\"2026-06-15T12:00:00Z\",\"status\":\"done\"}",
	 422, "invalid_status"},
	{"tokens as a string",
	 "{\"request_id\":\"u\",\"account_id\":3,\"model\":\"m\",\"input_tokens\":\"1\","
	 "\"output_tokens\":1,\"started_at\":\"2026-06-15T12:00:00Z\"}",
	 400, "invalid_request"},
};

static void test_usage_body(void)
{
	/* the clock under test: an explicit instant, the records' times are relative to it */
	int64_t now;
	uint8_t pepper[32] = {1};

	OK(time_parse_rfc3339("2026-06-15T12:00:00Z", 0, &now) == 0, "usage: the test's clock");
	for (size_t i = 0; i < sizeof(usage_cases) / sizeof(usage_cases[0]); i++) {
		struct error e = {0};
		struct usage_req r;
		json_t *b = load(usage_cases[i].body);

		check("usage", &usage_cases[i], b ? usage_parse(b, now, pepper, &r, &e) : -2, &e);
		if (i == 1)
			OK(r.has_key && r.account_id == 0 && r.cached_input_tokens == 10 &&
				   strcmp(r.status, "cancelled") == 0 && strcmp(r.hold_id, "h") == 0,
			   "usage: a key's record keeps its hash, not the key; cached, hold and status read");
		json_decref(b);
	}
}

int main(void)
{
	test_authz_body();
	test_signup_body();
	test_want();
	test_usage_body();
	return tap_done();
}
