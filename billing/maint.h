/* maint.h: the ledger's upkeep in billingd, on its own timer: ledger
 * partitions made ahead of time (LEDGER_PARTITIONS_AHEAD months) and
 * promotional credit of expired grants moved to breakage.  One run at a
 * time, on a thread of the API pool; a failure is logged and the next tick
 * tries again.  Event loop thread only. */
#ifndef BILLING_MAINT_H
#define BILLING_MAINT_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct dbpool;
struct maint;

/* Runs every interval_s seconds on pool (borrowed; it must outlive the
 * maint).  NULL when out of memory. */
struct maint *maint_new(struct event_base *base, struct dbpool *pool, int64_t interval_s);
/* No new run from now on (billingd drains); a run under way finishes. */
void maint_stop(struct maint *m);
/* After the pool has finished its jobs.  Accepts NULL. */
void maint_free(struct maint *m);

#endif
