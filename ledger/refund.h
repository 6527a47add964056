/* refund.h: refunding one usage record (`billing-admin refund`).
 *
 * A refund is a new journal transaction of kind "refund" with the original
 * usage transaction's postings reversed (line for line, zero lines left
 * out); the original stays as it is.  Key "refund:" + request_id: a request
 * is refunded at most once, a second attempt fails with already_refunded.
 * A posting on a grant bucket that has expired by now is reversed onto the
 * breakage account instead: expired credit never comes back to life (the
 * breakage entry it would otherwise need is folded into the refund). */
#ifndef LEDGER_REFUND_H
#define LEDGER_REFUND_H

#include <stdint.h>

#include "common/error.h"
#include "ledger/ops.h"

struct refund_result {
	int64_t txn_id, account_id, original_txn_id;
	int64_t cost_nanos;     /* of the original record */
	int64_t paid_nanos;     /* back to the paid balance */
	int64_t promo_nanos;    /* back to unexpired grant buckets */
	int64_t breakage_nanos; /* onto breakage (expired buckets) */
	char model[201];
};

/* Runs in its own transaction on x->conn, writer x->writer.  -1 with err:
 * not_found (no such request), already_refunded (409), nothing_to_refund
 * (a free call, 422), or a database error. */
int refund_request(struct ops_ctx *x, const char *request_id, const char *reason, struct refund_result *out,
		   struct error *err) __attribute__((warn_unused_result));

#endif
