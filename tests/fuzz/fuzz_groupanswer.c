/* fuzz_groupanswer.c: turnq_split() (billing/authz/turnq.h), the reader of
 * a grouped authorize call's one-string answer (quota.lua.h).
 *
 * Input: the first byte gives the entries n (1..40), the rest is the string.
 * Properties, checked against an independent reference (count the '\n'
 * separated pieces): accepted exactly when the string has no NUL byte and
 * holds n pieces, none empty and none a lone '-'; then each piece is handed
 * out once, in order, NUL-terminated with its length, an error reply when it
 * starts with '-' (its message the rest), and the pieces joined back give the
 * input; refused: nothing handed out and the string unchanged. */
#include <stdlib.h>
#include <string.h>

#include "billing/authz/turnq.h"
#include "tests/fuzz/fuzz.h"

struct got {
	const char *in;
	size_t len, at; /* the input, and how far the pieces handed out reach */
	int n;
};

static void each(void *arg, int i, redisReply *e)
{
	struct got *g = arg;
	int err = e->type == REDIS_REPLY_ERROR;

	FUZZ_CHECK(i == g->n);
	FUZZ_CHECK(e->type == REDIS_REPLY_STRING || err);
	FUZZ_CHECK(strlen(e->str) == e->len);
	FUZZ_CHECK(e->len > 0 && !memchr(e->str, '\n', e->len));
	FUZZ_CHECK(err || e->str[0] != '-');
	/* joined back: the separator, the '-' of an error, the piece */
	if (i > 0)
		FUZZ_CHECK(g->in[g->at++] == '\n');
	FUZZ_CHECK(!err || g->in[g->at] == '-');
	g->at += (size_t)err;
	FUZZ_CHECK(g->at + e->len <= g->len && memcmp(g->in + g->at, e->str, e->len) == 0);
	g->at += e->len;
	g->n++;
}

/* the reference: well-formed for n entries? */
static int well_formed(const char *s, size_t len, int n)
{
	size_t start = 0;
	int k = 0;

	if (memchr(s, '\0', len))
		return 0;
	for (size_t i = 0; i <= len; i++)
		if (i == len || s[i] == '\n') {
			size_t l = i - start;
			if (l == 0 || (l == 1 && s[start] == '-'))
				return 0;
			k++;
			start = i + 1;
		}
	return k == n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct got g = {0};
	char *s;
	int n, rc;

	if (size < 1)
		return 0;
	n = 1 + data[0] % 40;
	g.in = (const char *)data + 1;
	g.len = size - 1;
	s = malloc(g.len + 1);
	if (!s)
		return 0;
	memcpy(s, g.in, g.len);
	s[g.len] = '\0';
	rc = turnq_split(s, g.len, n, each, &g);
	FUZZ_CHECK((rc == 0) == well_formed(g.in, g.len, n));
	if (rc == 0) {
		FUZZ_CHECK(g.n == n && g.at == g.len);
	} else {
		FUZZ_CHECK(g.n == 0 && memcmp(s, g.in, g.len) == 0);
	}
	free(s);
	return 0;
}
