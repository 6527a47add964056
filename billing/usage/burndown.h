/* burndown.h: which buckets pay for a charge (CONTRACT.md §3).  Pure logic.
 *
 * Order: grants the model may use (none for a paid_only model), lowest
 * priority first, then earliest expiry (never-expiring last), then oldest;
 * then the paid balance while positive; the rest is arrears on the paid
 * balance.  Expired grants (expires_at <= now) are never used. */
#ifndef BILLING_BURNDOWN_H
#define BILLING_BURNDOWN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/money.h"

struct burndown_bucket {
	int64_t ledger_account_id;
	int64_t grant_id; /* 0 for the paid balance */
	int64_t balance;  /* updated by burndown_charge; saturated at int64 */
	int priority;
	int64_t expires_at_us; /* 0: never */
	money_total beyond;    /* the books' exact balance minus balance (0 but for
				* a paid balance beyond int64); burndown leaves it */
};

enum burndown_kind { BURNDOWN_GRANT, BURNDOWN_PAID, BURNDOWN_ARREARS };

struct burndown_line {
	enum burndown_kind kind;
	int64_t ledger_account_id;
	int64_t grant_id;
	int64_t amount; /* > 0: what this bucket paid */
};

/* Sorts grant buckets into burn-down order (paid buckets, grant_id 0, last). */
void burndown_sort(struct burndown_bucket *b, size_t n);

/* Charges cost (>= 0) against sorted buckets; reduces their balances; writes
 * at most n + 2 lines (grants, paid, arrears; nothing for a zero part).  Returns the number of lines.
 * paid is the account's paid bucket (also in b or not). */
size_t burndown_charge(struct burndown_bucket *b, size_t n, struct burndown_bucket *paid, int64_t cost, bool paid_only,
		       int64_t now_us, struct burndown_line *lines);

#endif
