/* clawback.h: reversing promotional credit of an abusive account
 * (`billing-admin account freeze ID --clawback`).
 *
 * Inside the caller's transaction (the account's row already locked): for
 * each grant bucket of the account with a positive balance, and for the
 * referral reward this account's signup earned its inviter (referrals row
 * with a grant), a journal transaction of kind "clawback" moving the unused
 * remainder back from the bucket to promotional expense (the grant's
 * posting reversed for what is left of it).  Credit already spent stays
 * spent.  Keys "clawback:GRANT_ID" (":2"... if done again later). */
#ifndef LEDGER_CLAWBACK_H
#define LEDGER_CLAWBACK_H

#include <stdint.h>

#include "common/error.h"
#include "ledger/ops.h"

struct clawback_result {
	int64_t grants, nanos;                /* the account's own buckets */
	int64_t inviter_id, inviter_grant_id; /* 0 when there was no rewarded inviter */
	int64_t inviter_nanos;                /* taken back from the inviter's reward */
};

int clawback_in_tx(struct ops_ctx *x, int64_t account_id, const char *reason, struct clawback_result *out,
		   struct error *err) __attribute__((warn_unused_result));

#endif
