/* reconcile.h: compares the Redis balance mirror with the ledger
 * (`ledger reconcile [--repair]`).
 *
 * Mirror layout (common/mirror_lua.h, written by billingd's loads and by a repair):
 *     {a:ID}:bal   hash  paid   = paid balance, integer nanos (negative: arrears)
 *                        promo  = sum of the account's unexpired grant buckets, nanos
 *                        status = active | frozen
 *                        poff, qoff = what the ledger's paid and promo balances
 *                        held beyond +-RECONCILE_MIRROR_CAP when loaded (decimal,
 *                        absent or "0" for all but huge balances): see below
 *                        (PEXPIRE'd: an idle account's mirror goes away by itself)
 *     {a:ID}:st    hash  field ver: version, bumped by every writer of the mirror; a
 *                        repair lands only if it is unchanged since it was read
 *                        (billingd's own loads are ordered by the customers row
 *                        lock instead: billing/authz/quota.lua.h)
 * Holds, concurrency and rate-limit keys of the account are not compared.
 * The hash tag {a:ID} keeps all keys of one account in one Cluster slot.
 *
 * The ledger side: paid = ledger_balances of the customer_paid account;
 * promo = sum of ledger_balances of grant buckets with expires_at NULL or
 * after now; status = customers.status.  An account without a mirror hash
 * was never loaded (or its mirror expired): billingd loads it before its next
 * decision, so it is reported separately, not as a difference.
 *
 * Differences seen in a first pass are read again after settle_ms (a usage
 * record may be committed but not yet applied to the mirror): the mirror,
 * the ledger, and the mirror again; a difference that lies between the two
 * mirror reads is charges in flight, not reported.  Only those that persist
 * through three such rechecks are reported.  Repair loads the ledger's
 * paid, promo and status with billingd's mirror load (MIRROR_LUA_REPAIR: the
 * same keys, lifetime and recomputed held as billingd's load leaves), in one
 * Lua script that does nothing when the version moved since it was read
 * (billingd changed the mirror meanwhile: run again).
 *
 * Balances beyond the mirror's range (contract section 4a): the ledger keeps
 * balances exactly (numeric, 128-bit in C); Redis cannot (HINCRBY is int64,
 * Lua numbers are doubles, exact to 2^53).  So a load stores paid and promo
 * each saturated at +-RECONCILE_MIRROR_CAP (2^52 nanos, about 4.5 million
 * units: paid + promo - held stays exact in a double) and the excess in
 * poff / qoff, which no script does arithmetic on.  A call whose hold is
 * below 2^51 is admitted exactly as the exact balance would admit it: a
 * settle that takes a saturated paid or promo below 2^51 drops the mirror
 * (billing/authz/quota.lua.h), and the next call loads it again from the books.  Reconcile compares
 * paid + poff and promo + qoff with the ledger, exactly; a repair stores
 * them split the same way. */
#ifndef LEDGER_RECONCILE_H
#define LEDGER_RECONCILE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/money.h"

struct reconcile_diff {
	int64_t account_id;
	money_total ledger_paid, ledger_promo; /* exact */
	char ledger_status[16];
	bool mirror_has_paid, mirror_has_promo;
	money_total mirror_paid, mirror_promo; /* paid + poff, promo + qoff */
	char mirror_status[16];                /* "" when absent */
	int64_t ledger_first_expiry_us;        /* of a grant with credit left, 0 = none */
	char mirror_v[32];                     /* {a:ID}:st ver, "" when absent */
	/* the ver a repair requires: read before the ledger's snapshot of the
	 * last recheck, so a settle since then (a charge the snapshot may not
	 * see) makes the repair skip instead of writing a stale balance */
	char repair_v[32];
	int repaired; /* 1 repaired, 0 not tried, -1 skipped: v moved */
};

struct reconcile_report {
	int64_t accounts, matching, not_loaded;
	struct reconcile_diff *diffs; /* owned */
	size_t n_diffs, cap_diffs;
	int64_t *not_loaded_ids; /* owned: the first RECONCILE_SAMPLE of them */
	size_t n_not_loaded_ids;
	int64_t repaired, repair_skipped;
};

#define RECONCILE_SAMPLE 1000

struct reconcile_opts {
	const char *redis; /* host:port[/db], or Redis Cluster seeds host:port,host:port,... */
	int timeout_ms;
	int settle_ms; /* 0: report first-pass differences as they are */
	bool repair;
	int64_t now_us; /* expiry instant; 0: now */
};

/* 0 with rep filled (free with reconcile_report_release), -1 with err when
 * PostgreSQL or Redis cannot be used (code unavailable). */
int reconcile_run(PGconn *c, const struct reconcile_opts *o, struct reconcile_report *rep, struct error *err)
	__attribute__((warn_unused_result));
void reconcile_report_release(struct reconcile_report *rep);

/* the mirror's range (above) */
#define RECONCILE_MIRROR_CAP ((int64_t)1 << 52)
/* The value a mirror stores for the exact ledger balance v; *excess gets v minus it. */
int64_t reconcile_mirror_split(money_total v, money_total *excess);

#endif
