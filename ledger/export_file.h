/* export_file.h: a signed ledger export file, without a database: the one
 * definition of its lines (columns, canonical bytes, row-hash chain, totals per
 * ledger account type, chain heads per writer), shared by the writer
 * (export.h) and the verifier (export_verify, below).
 *
 * An export is one line per posting, in (txn_id, line) order, of every
 * journal transaction with created_at in [from, to) (and, when given, of one
 * customer: journal.account_id).  Formats: CSV (RFC 4180, UTF-8, CRLF, one
 * header row) or NDJSON (one JSON object per LF-terminated line, same
 * names).  Columns, in order:
 *
 *   txn_id, created_at (RFC 3339, microseconds, UTC), kind, account_id
 *   (customer of the transaction; empty/null if none), line (1-based posting
 *   number), ledger_account_id, ledger_account_type, grant_id (the promotional
 *   bucket's grant, if the ledger account is one), amount_nanos (> 0 credits
 *   the ledger account), currency (CNY), request_id, model, input_tokens,
 *   cached_input_tokens, output_tokens, price_version (these six copied from
 *   `details` when it has them: usage and refunds), writer, seq,
 *   idempotency_key, actor, reason, details (the journal's canonical JSON
 *   text, verbatim), prev_hash, hash (hex), row_hash (hex).
 *
 * The journal fields (writer, seq, kind, idempotency_key, account_id, actor,
 * reason, details, created_at, the postings' ledger_account_id and amount in
 * line order, prev_hash) are exactly the inputs of journal_hash(), so an
 * auditor recomputes every transaction's hash and the prev_hash links of
 * each writer's chain from the file alone.
 *
 * row_hash chains the lines so that one changed, inserted, removed or
 * reordered line is named: h0 = BLAKE2b-256("billing-ledger-export-v1" NUL
 * FORMAT [CSV: the header line without CRLF]), then for data line i
 * h_i = BLAKE2b-256(h_{i-1} || body_i), body_i being the line's bytes before
 * the row_hash field (CSV: before the last comma; NDJSON: before
 * `,"row_hash":"`).  The manifest (manifest.h) signs the file's BLAKE2b-256,
 * the last row hash and one checkpoint every EXPORT_CHECKPOINT_EVERY rows. */
#ifndef LEDGER_EXPORT_FILE_H
#define LEDGER_EXPORT_FILE_H

#include <jansson.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/money.h"

#define EXPORT_CHECKPOINT_EVERY 10000
#define EXPORT_MAX_RECORD (4u << 20) /* a longer line is refused by the verifier */
#define EXPORT_ROW_TAG "billing-ledger-export-v1"
#define EXPORT_CURRENCY "CNY"

enum export_format { EXPORT_CSV, EXPORT_NDJSON };

/* One posting line; the strings are borrowed (from a PGresult, a CSV record
 * or a JSON object). */
struct export_row {
	int64_t txn_id, created_at_us, account_id, line, ledger_account_id, grant_id, amount,
		seq; /* 0 = null for ids */
	const char *kind, *la_type, *writer, *idempotency_key, *actor, *reason, *details, *prev_hex, *hash_hex;
};

/* request_id, model and token counts, copied from a transaction's details */
struct export_derived {
	char *request_id, *model; /* owned */
	int64_t v[4];             /* input, cached input, output tokens, price version */
	bool has[4];
};

void export_file_derive(const char *details, struct export_derived *d);
void export_file_derived_release(struct export_derived *d);

/* The column names in order, as a new JSON array (the manifest's "columns"). */
json_t *export_file_columns_json(void);
/* The CSV header line, without CRLF, appended to b. */
void export_file_header(struct buf *b);
/* The canonical bytes of a line before its row_hash field, appended to b. */
void export_file_body(struct buf *b, enum export_format fmt, const struct export_row *r,
		      const struct export_derived *d);
/* h0 (header: the CSV header line without CRLF, NULL for NDJSON), then h_i. */
void export_file_row_hash_init(uint8_t h[32], enum export_format fmt, const char *header, size_t hlen);
void export_file_row_hash_step(uint8_t h[32], const char *body, size_t n);
/* {"txn_id","created_at","writer","seq","hash"}: the manifest's first/last entry. */
json_t *export_file_entry_json(const struct export_row *r);

/* 128-bit sums per ledger account type (contract section 4a): exact far
 * beyond any range's rows */
struct export_total {
	char type[32];
	money_total debits, credits;
};

struct export_totals {
	struct export_total t[32];
	size_t n;
	money_total debits, credits;
	bool overflow; /* more types than t holds */
};

void export_file_totals_add(struct export_totals *tt, const char *type, int64_t amount);
json_t *export_file_totals_json(const struct export_totals *tt);

/* The head of one writer's hash chain within the file. */
struct export_chain {
	char *writer; /* owned */
	int64_t first_seq, last_seq, txns, last_line;
	char first_prev[65], last_hash[65];
};

struct export_chains {
	struct export_chain *v;
	size_t n, cap;
};

/* The chain of writer; when new, one is added and *created is set.  NULL
 * when out of memory. */
struct export_chain *export_file_chain_get(struct export_chains *cs, const char *writer, bool *created);
json_t *export_file_chains_json(const struct export_chains *cs);
void export_file_chains_release(struct export_chains *cs);

struct export_verdict {
	int ok;            /* 1: the file, its manifest and its signature check out */
	int64_t line;      /* first bad line (1-based) when the problem is a line's, else 0 */
	char problem[600]; /* human text */
	int64_t rows, txns;
	char public_key[65];
};

/* Checks path against path + ".manifest.json": the signature (with the
 * manifest's key and, when trusted is not NULL, that the key is the trusted
 * one), then in one streaming pass the row hashes and checkpoints, the
 * canonical form of every line, each transaction's journal hash, the
 * prev_hash links per writer, the range, the totals, the chain heads, the
 * row count, the size and the file's BLAKE2b-256.  Needs no database and no
 * secret key.  0 with v filled (v->ok is the verdict), -1 with err when the
 * files cannot be read at all. */
int export_verify(const char *path, const uint8_t *trusted, struct export_verdict *v, struct error *err)
	__attribute__((warn_unused_result));

#endif
