/* export.h: the writer of signed ledger exports (`ledger export`): reads the
 * journal in PostgreSQL and writes an export file and its signed manifest.
 * The file's format, and the verifier that checks a file against its
 * manifest without a database (`ledger verify --export`), are export_file.h. */
#ifndef LEDGER_EXPORT_H
#define LEDGER_EXPORT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "ledger/export_file.h"

struct export_opts {
	int64_t from_us, to_us; /* [from, to) */
	int64_t account_id;     /* 0: every account */
	enum export_format format;
	const char *path;     /* the manifest goes to path + ".manifest.json" */
	bool force;           /* overwrite existing files */
	const char *operator; /* recorded in the manifest */
	FILE *progress;       /* a terminal for the progress line, or NULL */
	const uint8_t *sk;    /* Ed25519 secret key, crypto_sign_SECRETKEYBYTES (borrowed) */
	int wait_ms;          /* how long to wait for writers in flight (0: EXPORT_WAIT_MS) */
};

/* How long an export waits at most for the transactions that may still
 * commit entries into its range (export_write). */
#define EXPORT_WAIT_MS 60000

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

#endif
