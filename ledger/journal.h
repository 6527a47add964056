/* journal.h: double-entry transactions, their hash chain, and writing them.
 *
 * A transaction has two or more postings that sum to zero (the database
 * refuses anything else).  Each writer (a billingd instance, the CLI) has its
 * own chain: seq 1, 2, 3 ... with hash = BLAKE2b-256 of the canonical
 * encoding (see journal_encode and README.md "Hash chain"), and prev_hash the
 * previous hash of that writer (32 zero bytes for seq 1). */
#ifndef LEDGER_JOURNAL_H
#define LEDGER_JOURNAL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"

#define JOURNAL_HASH_BYTES 32

/* fixed ledger accounts (migrations/0001_ledger.sql) */
enum {
	LA_REVENUE = 1,
	LA_PROMO_EXPENSE = 2,
	LA_BREAKAGE = 3,
	LA_CASH_CLEARING = 4,
	LA_ADJUSTMENTS = 5,
};

struct journal_posting {
	int64_t ledger_account_id;
	int64_t account_id; /* customer of that ledger account, 0 for system accounts */
	int64_t amount;     /* > 0 credit, < 0 debit */
};

struct journal_txn {
	/* in: all strings borrowed, must outlive journal_write() */
	const char *kind;            /* usage, topup, grant, adjust, refund, breakage, ... */
	const char *idempotency_key; /* unique across the journal */
	uint8_t content_hash[JOURNAL_HASH_BYTES];
	int64_t account_id;          /* customer, 0 if none */
	const char *actor;
	const char *reason;
	const char *details;         /* canonical JSON text, hashed as is */
	int64_t created_at_us;
	size_t n_postings;
	struct journal_posting *postings; /* borrowed */
	/* out of journal_write() */
	int64_t txn_id;
	int64_t seq;
	uint8_t hash[JOURNAL_HASH_BYTES];
};

/* Appends the canonical encoding of (prev, writer, seq, t) to out. */
void journal_encode(struct buf *out, const uint8_t prev[JOURNAL_HASH_BYTES], const char *writer, int64_t seq,
		    const struct journal_txn *t);
/* hash = BLAKE2b-256(journal_encode(...)) */
void journal_hash(uint8_t out[JOURNAL_HASH_BYTES], const uint8_t prev[JOURNAL_HASH_BYTES], const char *writer,
		  int64_t seq, const struct journal_txn *t);

/* Content hash helper: BLAKE2b-256 of bytes (for idempotency comparisons). */
void journal_content_hash(uint8_t out[JOURNAL_HASH_BYTES], const void *p, size_t n);

/* Writes n transactions inside the caller's open database transaction:
 * locks the writer's chain (advisory lock, held to commit), reads its head,
 * hashes and inserts the journal rows and all postings with two statements.
 * Fills txn_id, seq and hash of each.  -1 with err; the caller rolls back. */
int journal_write(PGconn *c, const char *writer, struct journal_txn *txns, size_t n, struct error *err)
	__attribute__((warn_unused_result));

/* Looks up an idempotency key: 1 found (txn_id and stored content hash
 * filled), 0 not found, -1 error. */
int journal_find_key(PGconn *c, const char *key, int64_t *txn_id, uint8_t content_hash[JOURNAL_HASH_BYTES],
		     struct error *err) __attribute__((warn_unused_result));

#endif
