/* test_usage_answer.c: a fresh usage answer gets its live held amount
 * without jansson (usage_answer_held), byte for byte what the decode,
 * balance_set_held and encode it replaces gave; replays keep that path. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "billing/authz/authorize.h"
#include "billing/usage/usage.h"
#include "tests/unit/tap.h"

/* the answer as the writer stores it (held 0) */
#define STORED                                                                                                 \
	"{\"request_id\":\"r-\\\"q\\\\\\n\xc3\xa9\",\"account_id\":7,\"cost_nanos\":4500,\"price_version\":3," \
	"\"charged\":[{\"bucket\":\"grant\",\"grant_id\":11,\"amount_nanos\":1500},"                           \
	"{\"bucket\":\"paid\",\"grant_id\":null,\"amount_nanos\":3000}],"                                      \
	"\"balance\":{\"paid_nanos\":-250,\"promo_nanos\":9000,\"held_nanos\":0,\"available_nanos\":8750},"    \
	"\"duplicate\":false}"

/* what the jansson path makes of text */
static char *old_way(const char *text, bool known, int64_t held)
{
	json_t *j = json_loads(text, 0, NULL);
	char *s;

	if (!j)
		return NULL;
	balance_set_held(json_object_get(j, "balance"), known, held);
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return s;
}

static void item(struct usage_item *it, const char *text, bool duplicate)
{
	memset(it, 0, sizeof(*it));
	it->response = strdup(text);
	it->duplicate = duplicate;
	it->balance_at = (size_t)(strstr(text, "\"balance\":") - text);
	it->paid_after = -250;
	it->promo_after = 9000;
}

int main(void)
{
	static const struct {
		bool known;
		int64_t held;
	} cases[] = {{true, 0}, {true, 1234}, {true, 20000}, {false, 0}};
	struct usage_item it;
	char *want;

	/* the stored text is what jansson writes for its own members */
	{
		json_t *j = json_loads(STORED, 0, NULL);
		char *again = json_dumps(j, JSON_COMPACT);
		OK(again && strcmp(again, STORED) == 0, "the stored form is jansson's own encoding of it");
		free(again);
		json_decref(j);
	}
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		item(&it, STORED, false);
		want = old_way(STORED, cases[k].known, cases[k].held);
		OK(usage_answer_held(&it, cases[k].known, cases[k].held) == 0, "known=%d held=%" PRId64 ": rewritten",
		   cases[k].known, cases[k].held);
		OK(want && strcmp(it.response, want) == 0, "known=%d held=%" PRId64 ": the same bytes as before",
		   cases[k].known, cases[k].held);
		if (want && strcmp(it.response, want) != 0)
			printf("#   got  %s\n#   want %s\n", it.response, want);
		free(want);
		usage_item_release(&it);
		OK(it.balance_at == 0 && it.response == NULL, "release forgets the answer");
	}
	/* a replay (duplicate) or an answer it did not build is left alone */
	item(&it, STORED, true);
	OK(usage_answer_held(&it, true, 5) == -1 && strcmp(it.response, STORED) == 0, "a replay is not rewritten");
	usage_item_release(&it);
	item(&it, STORED, false);
	it.balance_at = 0;
	OK(usage_answer_held(&it, true, 5) == -1 && strcmp(it.response, STORED) == 0,
	   "an answer without its balance offset is not rewritten");
	usage_item_release(&it);
	return tap_done();
}
