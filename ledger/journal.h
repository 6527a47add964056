/* journal.h: double-entry transactions, their hash chain, and writing them.
 *
 * A transaction has two or more postings that sum to zero (the database
 * refuses anything else).  Each writer (a billingd instance, the CLI) has its
 * own chain: seq 1, 2, 3 ... with hash = BLAKE2b-256 of the canonical
 * encoding (see journal_encode and docs/ledger.md "Hash chain"), and prev_hash the
 * previous hash of that writer (32 zero bytes for seq 1). */
#ifndef LEDGER_JOURNAL_H
#define LEDGER_JOURNAL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/pgarr.h"
#include "common/error.h"
#include "ledger/db.h"

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
	int64_t account_id; /* customer, 0 if none */
	const char *actor;
	const char *reason;
	const char *details; /* canonical JSON text, hashed as is */
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

/* ---- the pieces of journal_write, for a caller that pipelines them ----
 * (the usage writer: billing/usage/usage.c).  In order: JOURNAL_SQL_CHAIN_LOCK
 * ($1 writer), JOURNAL_SQL_HEAD ($1 writer) -> journal_parse_head; txn_ids
 * from JOURNAL_SQL_TXN_IDS; journal_link + JOURNAL_SQL_INSERT ($1 writer,
 * $2.. the txn arrays in enum order); journal_postings + JOURNAL_SQL_POSTINGS
 * ($1.. the posting arrays); JOURNAL_SQL_NOTIFY ($1 posting account ids,
 * $2 writer). */
#define JOURNAL_SQL_CHAIN_LOCK "SELECT pg_advisory_xact_lock(hashtextextended('chain:' || $1, 0))"
#define JOURNAL_SQL_HEAD "SELECT seq, hash FROM ledger_idempotency WHERE writer = $1 ORDER BY seq DESC LIMIT 1"
#define JOURNAL_SQL_TXN_IDS "SELECT nextval('journal_txn_id_seq') FROM generate_series(1, $1::integer)"
#define JOURNAL_SQL_INSERT                                                                                          \
	"INSERT INTO journal (txn_id, writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason," \
	" details, created_at, prev_hash, hash)"                                                                    \
	" SELECT t, $1, s, k, ik, ch, a, ac, re, d, ca, ph, h FROM unnest($2::bigint[], $3::text[], $4::text[],"    \
	" $5::bytea[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::bytea[],"         \
	" $12::bytea[], $13::bigint[]) AS u(s, k, ik, ch, a, ac, re, d, ca, ph, h, t)"
#define JOURNAL_SQL_POSTINGS                                                                           \
	"INSERT INTO postings (txn_id, line, ledger_account_id, account_id, amount, created_at)"       \
	" SELECT * FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::bigint[], $5::bigint[]," \
	" $6::timestamptz[])"
#define JOURNAL_SQL_NOTIFY                                          \
	"SELECT pg_notify('billing_balance', a::text || ' ' || $2)" \
	" FROM (SELECT DISTINCT a FROM unnest($1::bigint[]) a WHERE a IS NOT NULL) s"

/* PostgreSQL arrays of a batch (binary parameters, common/pgarr.h): txn[] in the order of
 * JOURNAL_SQL_INSERT's $2..$13, post[] in the order of JOURNAL_SQL_POSTINGS. */
enum {
	JA_SEQ,
	JA_KIND,
	JA_KEY,
	JA_CHASH,
	JA_ACCT,
	JA_ACTOR,
	JA_REASON,
	JA_DETAILS,
	JA_AT,
	JA_PREV,
	JA_HASH,
	JA_TXN,
	JOURNAL_NA
};
enum { JP_TXN, JP_LINE, JP_LA, JP_ACCT, JP_AMOUNT, JP_AT, JOURNAL_NP };
struct journal_arrays {
	struct pgarr txn[JOURNAL_NA];
	struct pgarr post[JOURNAL_NP];
};
void journal_arrays_init(struct journal_arrays *ja);
void journal_arrays_release(struct journal_arrays *ja);
/* Gives txns seq head_seq + 1 .. and their hashes (head: the hash of
 * head_seq, zeros for none) and fills ja->txn; txn_id as set by the caller. */
void journal_link(const char *writer, int64_t head_seq, const uint8_t head[JOURNAL_HASH_BYTES],
		  struct journal_txn *txns, size_t n, struct journal_arrays *ja);
/* Fills ja->post from the txns' postings (txn_id set). */
void journal_postings(const struct journal_txn *txns, size_t n, struct journal_arrays *ja);
/* The parameters of JOURNAL_SQL_INSERT ($1 writer, text; the arrays
 * binary), JOURNAL_SQL_POSTINGS and JOURNAL_SQL_NOTIFY from ja (borrowed:
 * valid while ja is, until its next change). */
void journal_insert_params(struct journal_arrays *ja, const char *writer, struct db_params *p);
void journal_postings_params(struct journal_arrays *ja, struct db_params *p);
void journal_notify_params(struct journal_arrays *ja, const char *writer, struct db_params *p);
/* Reads JOURNAL_SQL_HEAD's result: seq 0 and zeros when the chain is empty.
 * -1 with err on a malformed hash. */
int journal_parse_head(PGresult *r, int64_t *seq, uint8_t head[JOURNAL_HASH_BYTES], const char *writer,
		       struct error *err) __attribute__((warn_unused_result));

/* Looks up an idempotency key: 1 found (txn_id and stored content hash
 * filled), 0 not found, -1 error. */
int journal_find_key(PGconn *c, const char *key, int64_t *txn_id, uint8_t content_hash[JOURNAL_HASH_BYTES],
		     struct error *err) __attribute__((warn_unused_result));

#endif
