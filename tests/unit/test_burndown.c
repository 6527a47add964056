/* test_burndown.c: which balance pays a charge (billing/usage/burndown.c):
 * burndown_sort and burndown_charge (CONTRACT.md §3), every line written by
 * hand. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/usage/burndown.h"
#include "tests/unit/tap.h"

/* ---- burn-down ---- */

static struct burndown_bucket bk(int64_t la, int64_t grant, int64_t bal, int prio, int64_t exp)
{
	struct burndown_bucket b = {la, grant, bal, prio, exp, 0};
	return b;
}

static void expect_lines(const struct burndown_line *l, size_t n, const int64_t (*want)[3], size_t nw, const char *what)
{
	bool ok = n == nw;

	for (size_t i = 0; ok && i < n; i++)
		ok = (int64_t)l[i].kind == want[i][0] && l[i].grant_id == want[i][1] && l[i].amount == want[i][2];
	OK(ok, "%s", what);
	if (!ok) {
		for (size_t i = 0; i < n; i++)
			printf("#   got line %zu: kind %d grant %" PRId64 " amount %" PRId64 "\n", i, (int)l[i].kind,
			       l[i].grant_id, l[i].amount);
		for (size_t i = 0; i < nw; i++)
			printf("#   want line %zu: kind %d grant %" PRId64 " amount %" PRId64 "\n", i, (int)want[i][0],
			       want[i][1], want[i][2]);
	}
}

#define G BURNDOWN_GRANT
#define P BURNDOWN_PAID
#define A BURNDOWN_ARREARS

static void fresh(struct burndown_bucket *b, size_t *n, size_t *paid_i)
{
	size_t k = 0;
	/* la = 100 + grant id; the paid bucket is la 100 */
	b[k++] = bk(107, 7, 0, 10, 0);      /* empty */
	b[k++] = bk(101, 1, 100, 10, 2000); /* prio 10, expires 2000 */
	b[k++] = bk(100, 0, 500, 0, 0);     /* paid, priority 0 must not matter */
	b[k++] = bk(104, 4, 100, 10, 0);    /* prio 10, never expires */
	b[k++] = bk(105, 5, 100, 10, 1000); /* prio 10, expires 1000, younger than 2 */
	b[k++] = bk(102, 2, 100, 10, 1000); /* prio 10, expires 1000 */
	b[k++] = bk(103, 3, 100, 5, 0);     /* prio 5, never: before every prio 10 */
	b[k++] = bk(106, 6, 100, 1, 100);   /* prio 1 but expired at now = 100 */
	b[k++] = bk(108, 8, 100, 1, 101);   /* prio 1, expires 1 us after now */
	*n = k;
	burndown_sort(b, k);
	for (size_t i = 0; i < k; i++)
		if (b[i].grant_id == 0)
			*paid_i = i;
}

static void a_charge_burns_buckets_in_order(void)
{
	struct burndown_bucket b[16];
	struct burndown_line l[20];
	size_t n, pi, nl;
	static const int64_t order[] = {6, 8, 3, 2, 5, 1, 4, 7, 0};
	bool ok = true;

	fresh(b, &n, &pi);
	for (size_t i = 0; i < n; i++)
		ok = ok && b[i].grant_id == order[i];
	OK(ok, "sort: priority, then expiry, never-expiring last, then oldest; paid last");
	IS_I64(pi, n - 1, "paid bucket sorts last");

	/* spans everything usable and ends exactly at zero paid */
	{
		static const int64_t w[][3] = {{G, 8, 100}, {G, 3, 100}, {G, 2, 100}, {G, 5, 100},
					       {G, 1, 100}, {G, 4, 100}, {P, 0, 500}};
		nl = burndown_charge(b, n, &b[pi], 1100, false, 100, l);
		expect_lines(l, nl, w, 7, "1100: every live grant in order, expired and empty skipped, then paid");
		IS_I64(b[pi].balance, 0, "paid balance 0 after");
		IS_I64(b[0].balance, 100, "expired grant untouched");
		ok = true;
		for (size_t i = 0; i < n; i++)
			if (b[i].grant_id != 6)
				ok = ok && b[i].balance == 0;
		OK(ok, "every other bucket emptied");
		for (size_t i = 0; i < nl; i++)
			ok = ok && l[i].ledger_account_id == 100 + l[i].grant_id;
		OK(ok, "lines name their ledger accounts");
	}
	{
		static const int64_t w[][3] = {{A, 0, 50}};
		nl = burndown_charge(b, n, &b[pi], 50, false, 100, l);
		expect_lines(l, nl, w, 1, "then 50: arrears only");
		IS_I64(b[pi].balance, -50, "paid balance -50");
		nl = burndown_charge(b, n, &b[pi], 30, false, 100, l);
		OK(nl == 1 && l[0].kind == A && l[0].amount == 30 && l[0].ledger_account_id == 100,
		   "then 30: arrears 30");
		IS_I64(b[pi].balance, -80, "paid balance -80");
	}
	/* partial use of one grant */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 8, 100}, {G, 3, 50}};
		nl = burndown_charge(b, n, &b[pi], 150, false, 100, l);
		expect_lines(l, nl, w, 2, "150: grant 8 then half of grant 3");
		IS_I64(b[2].balance, 50, "grant 3 keeps 50");
	}
	/* one nano */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 8, 1}};
		nl = burndown_charge(b, n, &b[pi], 1, false, 100, l);
		expect_lines(l, nl, w, 1, "1 nano from the first grant");
	}
	/* zero cost: no lines, nothing moves */
	fresh(b, &n, &pi);
	nl = burndown_charge(b, n, &b[pi], 0, false, 100, l);
	IS_I64(nl, 0, "zero cost: no lines");
	IS_I64(b[pi].balance, 500, "zero cost: paid unchanged");
	/* the expiry instant itself is expired */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 3, 100}};
		nl = burndown_charge(b, n, &b[pi], 100, false, 101, l);
		expect_lines(l, nl, w, 1, "now = expires_at: grant 8 is expired, grant 3 pays");
	}
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 6, 40}};
		nl = burndown_charge(b, n, &b[pi], 40, false, 99, l);
		expect_lines(l, nl, w, 1, "now = expires_at - 1: grant 6 still usable");
	}
	/* everything expired at a late instant: only never-expiring grants remain */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{G, 3, 100}, {G, 4, 100}, {P, 0, 500}, {A, 0, 300}};
		nl = burndown_charge(b, n, &b[pi], 1000, false, 5000, l);
		expect_lines(l, nl, w, 4, "at t=5000: never-expiring grants, paid, then arrears");
		IS_I64(b[pi].balance, -300, "paid -300");
	}
	/* paid_only: no grant, ever */
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{P, 0, 150}};
		nl = burndown_charge(b, n, &b[pi], 150, true, 100, l);
		expect_lines(l, nl, w, 1, "paid_only: paid balance only");
		IS_I64(b[1].balance, 100, "paid_only: grant 8 untouched");
	}
	fresh(b, &n, &pi);
	{
		static const int64_t w[][3] = {{P, 0, 500}, {A, 0, 100}};
		nl = burndown_charge(b, n, &b[pi], 600, true, 100, l);
		expect_lines(l, nl, w, 2, "paid_only beyond paid: arrears, grants still untouched");
		IS_I64(b[pi].balance, -100, "paid_only: paid -100");
	}
	/* already in arrears: all arrears, no paid line */
	{
		struct burndown_bucket pb = bk(100, 0, -10, 0, 0);
		static const int64_t w[][3] = {{A, 0, 25}};
		nl = burndown_charge(&pb, 1, &pb, 25, false, 100, l);
		expect_lines(l, nl, w, 1, "negative paid balance: arrears only");
		IS_I64(pb.balance, -35, "paid -35");
	}
	/* paid bucket outside the array: grants + paid + arrears = n + 2 lines */
	{
		struct burndown_bucket g[2] = {bk(201, 11, 10, 100, 0), bk(202, 12, 10, 50, 0)};
		struct burndown_bucket pb = bk(200, 0, 5, 0, 0);
		static const int64_t w[][3] = {{G, 12, 10}, {G, 11, 10}, {P, 0, 5}, {A, 0, 5}};
		burndown_sort(g, 2);
		nl = burndown_charge(g, 2, &pb, 30, false, 100, l);
		expect_lines(l, nl, w, 4, "paid outside the array: two grants, paid, arrears");
	}
	/* sort is stable on grant id for equal keys, whatever the input order */
	{
		struct burndown_bucket g[4] = {bk(1, 40, 1, 7, 500), bk(1, 10, 1, 7, 500), bk(1, 30, 1, 7, 500),
					       bk(1, 20, 1, 7, 500)};
		burndown_sort(g, 4);
		OK(g[0].grant_id == 10 && g[1].grant_id == 20 && g[2].grant_id == 30 && g[3].grant_id == 40,
		   "equal priority and expiry: oldest (smallest id) first");
	}
}

int main(void)
{
	a_charge_burns_buckets_in_order();
	return tap_done();
}
