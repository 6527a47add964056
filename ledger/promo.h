/* promo.h: signup and referral credit (CONTRACT.md §4), inside the caller's
 * transaction.  Budgets are checked by one conditional UPDATE of the
 * campaign row, so concurrent signups never exceed them by a nano. */
#ifndef LEDGER_PROMO_H
#define LEDGER_PROMO_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "ledger/ops.h"

/* Grants the active campaign's signup credit to a new account (its row is
 * locked by the caller).  *grant_id and *nanos are 0 and note says why when no
 * credit was given (no campaign, budget exhausted, an identity string of
 * the account already received a signup credit: promo_identity_claims,
 * migration 0007; n_identity is 0 and the campaign requires identity
 * strings: 0021).  -1 only on errors. */
int promo_on_signup(struct ops_ctx *x, int64_t account_id, int64_t inviter_id, const char *const *identity,
		    size_t n_identity, int64_t *grant_id, int64_t *nanos, char *note, size_t notelen, struct error *err)
	__attribute__((warn_unused_result));

/* The invitee qualified (verified, or first top-up): reward its inviter once
 * ever, and at most once per invitee identity string ever; nothing while
 * the inviter or the invitee is frozen (then nothing is recorded either);
 * nothing (recorded) when the campaign requires identity strings and either
 * side has none.
 * Same outputs as above; 0 with a note when no reward is due. */
int promo_on_qualify(struct ops_ctx *x, int64_t invitee_id, int64_t *grant_id, int64_t *nanos, char *note,
		     size_t notelen, struct error *err) __attribute__((warn_unused_result));

/* POST /v1/accounts/{id}/verify: marks the account verified and, when
 * reward (referrals are triggered by verification), rewards its inviter as
 * promo_on_qualify does; one transaction of its own, the invitee and its
 * inviter locked in id order.  note says what happened. */
int promo_verify(struct ops_ctx *x, int64_t account_id, bool reward, int64_t *grant_id, int64_t *nanos, char *note,
		 size_t notelen, struct error *err) __attribute__((warn_unused_result));
/* After a top-up, when referrals are triggered by the first top-up: the
 * same reward in a transaction of its own (idempotent: also on a replay). */
int promo_after_topup(struct ops_ctx *x, int64_t account_id, int64_t *grant_id, int64_t *nanos, char *note,
		      size_t notelen, struct error *err) __attribute__((warn_unused_result));

/* Moves the unused remainder of every grant expired at or before now_us to
 * breakage (kind 'breakage', key "breakage:GRANT_ID", one transaction per
 * grant, under the customer's row lock), at most `limit` grants.  *moved
 * counts the grants, *nanos the amount.  0 or -1 with err. */
int promo_expire_due(struct ops_ctx *x, int64_t now_us, int limit, int *moved, int64_t *nanos, struct error *err)
	__attribute__((warn_unused_result));

#endif
