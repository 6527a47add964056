/* ops.h: the money movements and account operations shared by billingd and
 * billing-admin.  Each runs in its own database transaction on the given
 * connection (retried on deadlock, serialization failure and racing unique
 * keys), takes the customer's row lock first, and writes its journal
 * transaction through journal_write() on the given writer's chain.
 *
 * Idempotency: every operation has a key (explicit or derived); the same key
 * with the same content returns the original result with *duplicate = true;
 * the same key with other content fails with code idempotency_conflict. */
#ifndef LEDGER_OPS_H
#define LEDGER_OPS_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/money.h"

struct ops_ctx {
	PGconn *conn;       /* borrowed */
	const char *writer; /* chain identity, e.g. "billingd-1" or "cli" */
	const char *actor;  /* who: operator login, "gateway", "billingd" */
	int64_t now_us;     /* 0: the current time */
	/* ceilings of one top-up and of one admin grant (config keys max_topup,
	 * max_grant); 0: the defaults below.  Above: 422 invalid_amount. */
	int64_t max_topup_nanos, max_grant_nanos;
};
#define OPS_MAX_TOPUP_DEFAULT (10000000LL * 1000000000LL) /* 10,000,000 units */
#define OPS_MAX_GRANT_DEFAULT (1000000LL * 1000000000LL)  /* 1,000,000 units */

struct ops_grant_info {
	int64_t grant_id;
	int64_t ledger_account_id;
	char kind[32];
	int64_t amount_nanos;
	int64_t remaining_nanos;
	int64_t expires_at_us; /* 0: never */
	int priority;
	int64_t created_at_us;
	char campaign[64];
};

struct ops_balance {
	/* exact (contract section 4a: a balance may pass int64) */
	money_total paid_nanos;             /* may be negative: arrears */
	money_total promo_nanos;            /* unexpired grant buckets */
	money_total expired_unbroken_nanos; /* expired, not yet moved to breakage: never spendable */
	/* the earliest expiry of an unexpired grant with money left, of all of
	 * them (grants lists the first 64 only); 0: none expires */
	int64_t first_expiry_us;
	size_t n_grants;
	struct ops_grant_info grants[64]; /* unexpired grants with money left, burn-down order (first 64) */
};

struct ops_account {
	int64_t account_id;
	char external_id[201];
	char status[16];
	bool verified;
	char tier[64];
	char referral_code[32];
	int64_t referred_by;
	int64_t created_at_us;
};

/* ---- reads ---- */
int ops_account_get(PGconn *c, int64_t account_id, struct ops_account *out, struct error *err)
	__attribute__((warn_unused_result));
int ops_account_by_external(PGconn *c, const char *external_id, struct ops_account *out, struct error *err)
	__attribute__((warn_unused_result));
/* Balance now (expiry judged at now_us, 0 = now). */
int ops_balance_get(PGconn *c, int64_t account_id, int64_t now_us, struct ops_balance *out, struct error *err)
	__attribute__((warn_unused_result));

/* ---- writes ---- */
/* The rate and concurrency limits that apply to an account (tier tier):
 * {"tier", "all_models": {rpm, tpm, rpd, tpd, concurrency}, "models":
 * {MODEL: {...}}}, each limit {"value", "source": "account"|"tier",
 * "limit_id"} or null (no limit).  Per scope (account or tier, all models
 * or one model) the newest row is in force; an account row's unset limit
 * falls back to the tier's (as billingd's authorize decides). */
int ops_limits_view(PGconn *c, int64_t account_id, const char *tier, json_t **out, struct error *err)
	__attribute__((warn_unused_result));

struct ops_grant_req {
	int64_t account_id;
	int64_t amount_nanos;
	const char *reason;
	const char *kind;            /* admin, signup, referral */
	const char *campaign;        /* NULL */
	int64_t expires_at_us;       /* 0: never */
	int priority;                /* lower burns first */
	const char *idempotency_key; /* NULL: a fresh one; a caller's key becomes "grant:KEY" */
	bool internal_key;           /* promotions: the key is used as it is ("signup:N", "referral:N") */
};
int ops_grant(struct ops_ctx *x, const struct ops_grant_req *req, struct ops_grant_info *out, bool *duplicate,
	      struct error *err) __attribute__((warn_unused_result));
/* Same, inside the caller's open transaction (customer row already locked). */
int ops_grant_in_tx(struct ops_ctx *x, const struct ops_grant_req *req, struct ops_grant_info *out, bool *duplicate,
		    struct error *err) __attribute__((warn_unused_result));

/* Top-up: cash in, paid balance up.  Key "topup:" + payment_ref. */
int ops_topup(struct ops_ctx *x, int64_t account_id, int64_t amount_nanos, const char *payment_ref,
	      struct ops_balance *after, bool *duplicate, struct error *err) __attribute__((warn_unused_result));

/* Manual adjustment of the paid balance (signed), against the adjustments
 * account; its size is held to max_topup (422 invalid_amount, as a top-up). */
int ops_adjust(struct ops_ctx *x, int64_t account_id, int64_t amount_nanos, const char *reason,
	       const char *idempotency_key, int64_t *txn_id, bool *duplicate, struct error *err)
	__attribute__((warn_unused_result));

/* Locks a customer row (FOR UPDATE) inside an open transaction; -1 with
 * not_found if there is none. */
int ops_lock_customer(PGconn *c, int64_t account_id, struct ops_account *out, struct error *err)
	__attribute__((warn_unused_result));

/* Locks a customer and its inviter (if any) in account id order. */
int ops_lock_customer_and_inviter(PGconn *c, int64_t account_id, struct error *err) __attribute__((warn_unused_result));

/* Runs fn in BEGIN/COMMIT, retrying retryable failures up to 5 times. */
int ops_in_tx(PGconn *c, int (*fn)(void *arg, struct error *err), void *arg, struct error *err)
	__attribute__((warn_unused_result));

/* Appends one audit row in the caller's transaction (or alone). */
int ops_audit(PGconn *c, const char *actor, const char *action, const char *target, const char *reason,
	      const char *details_json, struct error *err) __attribute__((warn_unused_result));

#endif
