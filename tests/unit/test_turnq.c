/* test_turnq.c: the turn queue (billing/authz/turnq.c) on a loop of its
 * own, with a send function that keeps the calls instead of writing them
 * (the rconn points at a closed loopback port: a single server that never
 * connects, so no slot split and nothing to flush): the entries of one turn
 * go in order, at most max a call, one flush per turn; each entry gets its
 * own element of the call's answer, in order; a call that fails, or an
 * answer out of shape, gives each of its entries NULL; an element that is
 * an error reply reaches the entry or becomes NULL as the queue was made;
 * owned arguments are released once each; an entry queued from a callback
 * goes in the next turn; entries still queued at free get NULL. */
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/authz/rconn.h"
#include "billing/authz/turnq.h"
#include "tests/unit/tap.h"

#define N 70
#define MAX 32

struct world {
	struct turnq_call *calls[16];
	int n_calls, fail_call; /* send answers -1 for call number fail_call */
	int got[N + 8];         /* per entry: -1 not answered, -2 NULL, -3 an error reply, else the integer */
	int order[N + 8], n_order;
	int released;
	struct turnq *t;
	int requeue; /* entry number queued again from its own callback */
};

static struct world w;
static const char *const argv_borrowed[1] = {"x"};

static int keep_send(void *owner, struct turnq_call *g)
{
	(void)owner;
	if (w.n_calls == w.fail_call) {
		w.n_calls++;
		return -1;
	}
	w.calls[w.n_calls++] = g;
	return 0;
}

static void release(const char *const *argv)
{
	w.released++;
	free((void *)argv);
}

static void entry_cb(void *arg, redisReply *r)
{
	int i = (int)(intptr_t)arg;

	w.order[w.n_order++] = i;
	w.got[i] = !r                              ? -2
		   : r->type == REDIS_REPLY_ERROR  ? -3
		   : r->type == REDIS_REPLY_STRING ? 1000 + atoi(r->str + 3)
						   : (int)r->integer;
	if (i == w.requeue && turnq_push(w.t, 1000, argv_borrowed, entry_cb, (void *)(intptr_t)(N + 1)) < 0)
		printf("# push from a callback failed\n");
}

/* An answer of n elements: element k the integer 100 + k (or an error at err_at). */
static redisReply *answer(size_t n, int err_at)
{
	redisReply *r = calloc(1, sizeof(*r));

	r->type = REDIS_REPLY_ARRAY;
	r->elements = n;
	r->element = calloc(n, sizeof(*r->element));
	for (size_t k = 0; k < n; k++) {
		redisReply *e = calloc(1, sizeof(*e));
		if ((int)k == err_at) {
			e->type = REDIS_REPLY_ERROR;
			e->str = (char *)"WRONGTYPE Operation against a key holding the wrong kind of value";
			e->len = (size_t)strlen(e->str);
		} else {
			e->type = REDIS_REPLY_INTEGER;
			e->integer = 100 + (long long)k;
		}
		r->element[k] = e;
	}
	return r;
}

static void answer_free(redisReply *r)
{
	for (size_t k = 0; k < r->elements; k++)
		free(r->element[k]);
	free(r->element);
	free(r);
}

static void reset(void)
{
	memset(&w, 0, sizeof(w));
	w.fail_call = -1;
	w.requeue = -1;
	for (int i = 0; i < N + 8; i++)
		w.got[i] = -1;
}

static void turn(struct event_base *base)
{
	event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
}

static void groups_in_order_at_most_max(struct event_base *base, struct rconn *r)
{
	uint64_t calls, entries;
	bool in_order = true, answered = true;

	reset();
	w.t = turnq_new(r, base, MAX, keep_send, NULL, NULL, false, "test");
	for (int i = 0; i < N; i++)
		if (turnq_push(w.t, i % 5, argv_borrowed, entry_cb, (void *)(intptr_t)i) < 0)
			in_order = false;
	IS_I64(w.n_calls, 0, "nothing is sent before the turn ends");
	turn(base);
	IS_I64(w.n_calls, 3, "70 entries, at most 32 a call: three calls");
	IS_I64(w.calls[0]->n, MAX, "the first call is full");
	IS_I64(w.calls[1]->n, MAX, "the second call is full");
	IS_I64(w.calls[2]->n, N - 2 * MAX, "the third takes the rest");
	for (int c = 0, i = 0; c < 3; c++)
		for (int k = 0; k < w.calls[c]->n; k++, i++)
			if (w.calls[c]->e[k].account != i % 5 || (int)(intptr_t)w.calls[c]->e[k].arg != i)
				in_order = false;
	OK(in_order, "the calls carry the entries in the order they came");
	turnq_stats(w.t, &calls, &entries);
	IS_I64(calls, 3, "calls counted");
	IS_I64(entries, N, "entries counted");
	for (int c = 0; c < 3; c++) {
		int n = w.calls[c]->n;
		redisReply *a = answer((size_t)n, c == 1 ? 3 : -1);
		turnq_answer(w.calls[c], a);
		answer_free(a);
	}
	for (int i = 0; i < N; i++) {
		int k = i % MAX;
		if (i == MAX + 3 ? w.got[i] != -3 : w.got[i] != 100 + k)
			answered = false;
		if (w.order[i] != i)
			in_order = false;
	}
	OK(answered, "each entry gets its own element; an error element reaches its entry as it is");
	OK(in_order, "the callbacks run in the entries' order");
	turnq_free(w.t);
}

static void a_failed_call_answers_each_entry_null(struct event_base *base, struct rconn *r)
{
	bool nulls = true, others = true;
	redisReply *a;

	reset();
	w.fail_call = 0;
	w.t = turnq_new(r, base, 4, keep_send, NULL, release, true, "test");
	for (int i = 0; i < 8; i++) {
		const char **own = malloc(sizeof(*own));
		own[0] = "owned";
		if (turnq_push(w.t, 7, own, entry_cb, (void *)(intptr_t)i) < 0)
			nulls = false;
	}
	turn(base);
	IS_I64(w.n_calls, 2, "two calls of four");
	for (int i = 0; i < 4; i++)
		if (w.got[i] != -2 || w.order[i] != i)
			nulls = false;
	OK(nulls, "a call not sent: each of its entries gets NULL, in order, at the flush");
	IS_I64(w.released, 8, "owned arguments released once each, sent or not");
	a = answer(4, 2);
	turnq_answer(w.calls[1], a);
	answer_free(a);
	for (int i = 4; i < 8; i++)
		if (w.got[i] != (i == 6 ? -2 : 100 + i - 4))
			others = false;
	OK(others, "errors_null: an error element becomes NULL for its entry alone");
	turnq_free(w.t);
}

static void out_of_shape_and_one_and_later_turns(struct event_base *base, struct rconn *r)
{
	bool nulls = true;
	redisReply *a, one = {0};

	reset();
	w.requeue = 1;
	w.t = turnq_new(r, base, MAX, keep_send, NULL, NULL, false, "test");
	for (int i = 0; i < 3; i++)
		if (turnq_push(w.t, 1, argv_borrowed, entry_cb, (void *)(intptr_t)i) < 0)
			nulls = false;
	turn(base);
	a = answer(2, -1); /* three entries, two elements */
	turnq_answer(w.calls[0], a);
	answer_free(a);
	for (int i = 0; i < 3; i++)
		if (w.got[i] != -2)
			nulls = false;
	OK(nulls, "an answer out of shape: each entry gets NULL");
	IS_I64(w.n_calls, 1, "an entry queued from a callback waits for the next turn");
	turn(base);
	IS_I64(w.n_calls, 2, "... and goes in it");
	IS_I64(w.calls[1]->n, 1, "alone");
	one.type = REDIS_REPLY_INTEGER;
	one.integer = 77;
	turnq_answer_one(w.calls[1], &one);
	IS_I64(w.got[N + 1], 77, "turnq_answer_one: the reply is the entry's own answer");
	if (turnq_push(w.t, 2, argv_borrowed, entry_cb, (void *)(intptr_t)5) < 0)
		printf("# push failed\n");
	turnq_free(w.t);
	IS_I64(w.got[5], -2, "an entry still queued at free gets NULL");
}

/* ---- a group's answers in one string (turnq_split) ---- */

struct split_got {
	int n, rc, unchanged;
	int type[8];
	char str[8][32];
	size_t len[8];
};

static void split_each(void *arg, int i, redisReply *e)
{
	struct split_got *g = arg;

	if (g->n < 8) {
		g->type[g->n] = e->type;
		snprintf(g->str[g->n], sizeof(g->str[0]), "%s", e->str);
		g->len[g->n] = e->len;
	}
	g->n += i == g->n;
}

static void split(const char *in, size_t len, int n, struct split_got *g)
{
	char buf[128];

	memset(g, 0, sizeof(*g));
	memcpy(buf, in, len);
	buf[len] = '\0';
	g->rc = turnq_split(buf, len, n, split_each, g);
	g->unchanged = memcmp(buf, in, len) == 0;
}

static void one_string_answers(struct event_base *base, struct rconn *r)
{
	static const char good[] = "OK 5 9 1700000000000 0\n-WRONGTYPE bad key\nBALANCE 12";
	static const struct {
		const char *s;
		size_t len;
		int n;
		const char *what;
	} bad[] = {
		{"OK 1\nOK 2", 9, 3, "fewer answers than entries"},
		{"OK 1\nOK 2\nOK 3", 14, 2, "more answers than entries"},
		{"OK 1\n\nOK 3", 10, 3, "an empty answer inside"},
		{"OK 1\nOK 2\n", 10, 2, "a newline at the end (an empty last answer)"},
		{"\nOK 1", 5, 1, "a newline first"},
		{"\nOK 1", 5, 2, "a newline first, counted"},
		{"", 0, 1, "an empty string"},
		{"-", 1, 1, "an error without its message"},
		{"OK 1\n-\nOK 3", 10, 3, "an error without its message, inside"},
		{"OK\0 1\nOK 2", 10, 2, "a NUL byte"},
		{"OK 1", 4, 0, "no entries"},
		{"\n", 1, 2, "only a newline"},
	};
	struct split_got g;
	redisReply *a;
	bool nulls = true;

	split(good, sizeof(good) - 1, 3, &g);
	IS_I64(g.rc, 0, "turnq_split: three answers for three entries");
	IS_I64(g.n, 3, "... each handed out, in order");
	OK(g.type[0] == REDIS_REPLY_STRING && strcmp(g.str[0], "OK 5 9 1700000000000 0") == 0 && g.len[0] == 22,
	   "... the first a string, NUL-terminated, its length");
	OK(g.type[1] == REDIS_REPLY_ERROR && strcmp(g.str[1], "WRONGTYPE bad key") == 0 && g.len[1] == 17,
	   "... '-' makes an error reply of the rest");
	OK(g.type[2] == REDIS_REPLY_STRING && strcmp(g.str[2], "BALANCE 12") == 0 && g.len[2] == 10,
	   "... the last up to the end");
	split("NOMIRROR", 8, 1, &g);
	OK(g.rc == 0 && g.n == 1 && strcmp(g.str[0], "NOMIRROR") == 0, "one answer without a newline");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		split(bad[i].s, bad[i].len, bad[i].n, &g);
		OK(g.rc == -1 && g.n == 0 && g.unchanged, "out of shape (%s): -1, nothing handed out, unchanged",
		   bad[i].what);
	}
	IS_I64(turnq_split(NULL, 0, 1, split_each, &g), -1, "no string: -1");

	/* turnq_answer with a string reply: each entry its own line */
	reset();
	w.t = turnq_new(r, base, MAX, keep_send, NULL, NULL, false, "test");
	for (int i = 0; i < 3; i++)
		if (turnq_push(w.t, 1, argv_borrowed, entry_cb, (void *)(intptr_t)i) < 0)
			printf("# push failed\n");
	for (int i = 3; i < 5; i++)
		if (turnq_push(w.t, 1, argv_borrowed, entry_cb, (void *)(intptr_t)i) < 0)
			printf("# push failed\n");
	turn(base);
	IS_I64(w.n_calls, 1, "five entries, one call");
	w.calls[0]->n = 3; /* answer the first three in a call of their own */
	a = calloc(1, sizeof(*a));
	a->type = REDIS_REPLY_STRING;
	a->str = strdup("OK 7\n-ERR no\nOK 9");
	a->len = strlen(a->str);
	{
		struct turnq_call *two = malloc(sizeof(*two) + 2 * sizeof(two->e[0]));
		two->t = w.calls[0]->t;
		two->n = 2;
		two->e[0] = w.calls[0]->e[3];
		two->e[1] = w.calls[0]->e[4];
		turnq_answer(w.calls[0], a);
		IS_I64(w.got[0], 1007, "a string answer: the first entry gets its line");
		IS_I64(w.got[1], -3, "... the second its error, as an error reply");
		IS_I64(w.got[2], 1009, "... the third its line");
		free(a->str);
		a->str = strdup("OK 1\nOK 2\nOK 3");
		a->len = strlen(a->str);
		turnq_answer(two, a);
		for (int i = 3; i < 5; i++)
			if (w.got[i] != -2)
				nulls = false;
		OK(nulls, "a string answer out of shape (three lines, two entries): each entry gets NULL");
	}
	free(a->str);
	free(a);
	turnq_free(w.t);
}

int main(void)
{
	struct event_base *base = event_base_new();
	/* a single server that is never reached (port 1 refuses): no cluster */
	struct rconn *r = rconn_new(base, "127.0.0.1:1", 100);

	OK(base && r, "loop and rconn");
	if (!base || !r)
		return tap_done();
	groups_in_order_at_most_max(base, r);
	a_failed_call_answers_each_entry_null(base, r);
	out_of_shape_and_one_and_later_turns(base, r);
	one_string_answers(base, r);
	rconn_free(r);
	event_base_free(base);
	return tap_done();
}
