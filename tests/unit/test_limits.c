/* test_limits.c: which rate limits apply to a call.
 *
 * resolve_limits (billing/authz/authorize.c) is a static function of the
 * authorization module; the test includes that file whole and calls the
 * function as it is, on limit rows written out by hand (rows come in
 * limit_id order, oldest first, as the refresh query reads them).  Limits
 * are rpm, tpm, rpd, tpd, concurrency; -1 in a row is "not set", 0 in the
 * result is "none". */
#include "billing/authz/authorize.c"

#include "tests/unit/tap.h"

#define NS -1 /* not set in a row */

static struct limit_row row(const char *tier, int64_t account, const char *model, int64_t rpm, int64_t tpm, int64_t rpd,
			    int64_t tpd, int64_t conc)
{
	struct limit_row r;

	memset(&r, 0, sizeof(r));
	snprintf(r.tier, sizeof(r.tier), "%s", tier);
	r.account_id = account;
	snprintf(r.model, sizeof(r.model), "%s", model);
	r.v[0] = rpm, r.v[1] = tpm, r.v[2] = rpd, r.v[3] = tpd, r.v[4] = conc;
	return r;
}

static struct limits resolve(struct limit_row *rows, size_t n, int64_t account, const char *tier, const char *model)
{
	struct authz_state az;
	struct limits out;

	memset(&az, 0, sizeof(az));
	memset(&out, 0xab, sizeof(out)); /* every field must be written */
	az.limits = rows;
	az.n_limits = n;
	resolve_limits(&az, account, tier, model, &out);
	return out;
}

static bool same(const int64_t got[5], int64_t rpm, int64_t tpm, int64_t rpd, int64_t tpd, int64_t conc)
{
	return got[0] == rpm && got[1] == tpm && got[2] == rpd && got[3] == tpd && got[4] == conc;
}

static void no_rows_means_no_limits(void)
{
	struct limits l = resolve(NULL, 0, 7, "free", "m");

	OK(same(l.all, 0, 0, 0, 0, 0) && same(l.model, 0, 0, 0, 0, 0), "no rows: every limit is none");
}

static void a_tier_row_applies_to_the_accounts_of_that_tier_only(void)
{
	struct limit_row rows[] = {row("free", 0, "", 60, 1000, NS, NS, 2)};
	struct limits l = resolve(rows, 1, 7, "free", "m");

	OK(same(l.all, 60, 1000, 0, 0, 2) && same(l.model, 0, 0, 0, 0, 0), "tier row: its limits, unset ones none");
	l = resolve(rows, 1, 7, "pro", "m");
	OK(same(l.all, 0, 0, 0, 0, 0), "another tier's row does not apply");
}

static void an_account_row_wins_over_its_tier_and_falls_back_where_unset(void)
{
	struct limit_row rows[] = {row("free", 0, "", 60, 1000, 500, NS, NS), row("", 7, "", 10, NS, NS, NS, 1)};
	struct limits l = resolve(rows, 2, 7, "free", "m");

	OK(same(l.all, 10, 1000, 500, 0, 1), "account row: its rpm and concurrency, the tier's tpm and rpd");
	l = resolve(rows, 2, 8, "free", "m");
	OK(same(l.all, 60, 1000, 500, 0, 0), "another account of the tier: the tier's limits only");
}

static void the_newest_row_of_a_scope_is_in_force_whole(void)
{
	/* the newer account row leaves tpm unset: that is the tier's tpm, not
	 * the older account row's */
	struct limit_row rows[] = {row("", 7, "", 10, 111, NS, NS, NS), row("free", 0, "", 60, 1000, NS, NS, NS),
				   row("", 7, "", 20, NS, NS, NS, NS)};
	struct limits l = resolve(rows, 3, 7, "free", "m");

	OK(same(l.all, 20, 1000, 0, 0, 0), "newest account row in force; its unset tpm falls to the tier");
	rows[2] = row("free", 0, "", 30, NS, NS, NS, NS);
	l = resolve(rows, 3, 7, "free", "m");
	OK(same(l.all, 10, 111, 0, 0, 0), "a newer tier row changes nothing an account row sets");
	l = resolve(rows, 3, 8, "free", "m");
	OK(same(l.all, 30, 0, 0, 0, 0), "newest tier row in force whole: the older tier tpm is gone");
}

static void a_model_row_limits_that_model_only(void)
{
	struct limit_row rows[] = {row("free", 0, "m", 5, NS, NS, NS, NS), row("", 7, "m", NS, 50, NS, NS, NS),
				   row("", 7, "", 100, NS, NS, NS, NS)};
	struct limits l = resolve(rows, 3, 7, "free", "m");

	OK(same(l.all, 100, 0, 0, 0, 0) && same(l.model, 5, 50, 0, 0, 0),
	   "model m: account-model tpm, tier-model rpm; the account-wide row stays in all");
	l = resolve(rows, 3, 7, "free", "other");
	OK(same(l.all, 100, 0, 0, 0, 0) && same(l.model, 0, 0, 0, 0, 0), "another model: no model limits");
}

int main(void)
{
	no_rows_means_no_limits();
	a_tier_row_applies_to_the_accounts_of_that_tier_only();
	an_account_row_wins_over_its_tier_and_falls_back_where_unset();
	the_newest_row_of_a_scope_is_in_force_whole();
	a_model_row_limits_that_model_only();
	return tap_done();
}
