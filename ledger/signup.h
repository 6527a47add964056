/* signup.h: a new account and its promotion in one transaction (above
 * ops.c, the balances and grants, and promo.c, the signup credit and the
 * referral rules that use them). */
#ifndef LEDGER_SIGNUP_H
#define LEDGER_SIGNUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "ledger/ops.h"

/* identity strings of one signup: at most 16, each 1 to 200 bytes */
#define OPS_IDENTITY_MAX 16
#define OPS_IDENTITY_LEN_MAX 200

struct ops_signup {
	const char *external_id;
	const char *referral_code; /* of the inviter, or NULL */
	const char *const *identity;
	size_t n_identity;
	const char *tier; /* NULL: default */
};
struct ops_signup_result {
	int64_t account_id;
	char referral_code[32];
	bool duplicate;
	/* promotion outcome, filled by the promotions step */
	int64_t signup_grant_nanos;
	int64_t signup_grant_id;
	char promo_note[160];
	/* the balance right after the signup, as recorded with it (the same on
	 * a replay); false for a replay of an account recorded before that */
	bool has_first;
	int64_t first_paid_nanos, first_promo_nanos;
};
/* Creates the account, or on a replay (same external_id, same body) reads
 * the outcome recorded by the first call (duplicate true). */
int ops_account_create(struct ops_ctx *x, const struct ops_signup *req, struct ops_signup_result *out,
		       struct error *err) __attribute__((warn_unused_result));

#endif
