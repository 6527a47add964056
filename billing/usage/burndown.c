/* burndown.c: see burndown.h. */
#include "billing/usage/burndown.h"

#include <stdlib.h>

static int cmp(const void *pa, const void *pb)
{
	const struct burndown_bucket *a = pa, *b = pb;

	if ((a->grant_id == 0) != (b->grant_id == 0))
		return a->grant_id == 0 ? 1 : -1;
	if (a->priority != b->priority)
		return a->priority < b->priority ? -1 : 1;
	if (a->expires_at_us != b->expires_at_us) {
		if (a->expires_at_us == 0)
			return 1;
		if (b->expires_at_us == 0)
			return -1;
		return a->expires_at_us < b->expires_at_us ? -1 : 1;
	}
	return a->grant_id < b->grant_id ? -1 : a->grant_id > b->grant_id;
}

void burndown_sort(struct burndown_bucket *b, size_t n)
{
	if (n > 1)
		qsort(b, n, sizeof(*b), cmp);
}

size_t burndown_charge(struct burndown_bucket *b, size_t n, struct burndown_bucket *paid, int64_t cost, bool paid_only,
		       int64_t now_us, struct burndown_line *lines)
{
	int64_t left = cost;
	size_t k = 0;

	for (size_t i = 0; i < n && left > 0 && !paid_only; i++) {
		struct burndown_bucket *g = &b[i];
		int64_t take;

		if (g->grant_id == 0 || g->balance <= 0)
			continue;
		if (g->expires_at_us != 0 && g->expires_at_us <= now_us)
			continue;
		take = g->balance < left ? g->balance : left;
		g->balance -= take;
		left -= take;
		lines[k++] = (struct burndown_line){BURNDOWN_GRANT, g->ledger_account_id, g->grant_id, take};
	}
	if (left > 0 && paid->balance > 0) {
		int64_t take = paid->balance < left ? paid->balance : left;
		paid->balance -= take;
		left -= take;
		lines[k++] = (struct burndown_line){BURNDOWN_PAID, paid->ledger_account_id, 0, take};
	}
	if (left > 0) {
		paid->balance -= left;
		lines[k++] = (struct burndown_line){BURNDOWN_ARREARS, paid->ledger_account_id, 0, left};
	}
	return k;
}
