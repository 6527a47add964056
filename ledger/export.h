/* export.h: signed ledger exports (`ledger export`, `ledger verify --export`).
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
#ifndef LEDGER_EXPORT_H
#define LEDGER_EXPORT_H

#include <libpq-fe.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"

#define EXPORT_CHECKPOINT_EVERY 10000
#define EXPORT_MAX_RECORD (4u << 20) /* a longer line is refused by the verifier */

enum export_format { EXPORT_CSV, EXPORT_NDJSON };

struct export_opts {
	int64_t from_us, to_us; /* [from, to) */
	int64_t account_id;     /* 0: every account */
	enum export_format format;
	const char *path;     /* the manifest goes to path + ".manifest.json" */
	bool force;           /* overwrite existing files */
	const char *operator; /* recorded in the manifest */
	FILE *progress;       /* a terminal for the progress line, or NULL */
	const uint8_t *sk;    /* Ed25519 secret key, crypto_sign_SECRETKEYBYTES (borrowed) */
};

struct export_result {
	int64_t rows, txns, bytes;
	uint8_t blake2b[32];
	char manifest_path[4200];
};

/* Streams the export (constant memory: a cursor fetched in chunks) inside
 * one REPEATABLE READ READ ONLY transaction, then writes and signs the
 * manifest.  On failure nothing is left behind.  0 or -1 with err. */
int export_write(PGconn *c, const struct export_opts *o, struct export_result *res, struct error *err)
	__attribute__((warn_unused_result));

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
