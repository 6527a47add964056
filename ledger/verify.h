/* verify.h: checks the books in the database. */
#ifndef LEDGER_VERIFY_H
#define LEDGER_VERIFY_H

#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "common/money.h"

struct verify_report {
	int64_t txns;       /* transactions checked */
	int64_t writers;    /* chains checked */
	int ok;             /* 1 when everything checks out */
	int64_t bad_txn_id; /* first transaction that does not check out (0 if a missing one) */
	char bad_writer[256];
	int64_t bad_seq;
	char problem[512]; /* human text naming the entry */
};

/* Walks every writer's chain in seq order with a cursor (constant memory),
 * recomputing each hash; then checks stored balances against postings.
 * Fills rep; 0 when the walk ran (rep->ok says the verdict), -1 on errors. */
int verify_chain(PGconn *c, FILE *progress, struct verify_report *rep, struct error *err)
	__attribute__((warn_unused_result));

struct trial_row {
	char type[32];
	money_total debits;  /* sum of negative postings, as a positive number (exact) */
	money_total credits; /* sum of positive postings (exact) */
};

/* Sums per ledger account type of postings created at or before *at_us (NULL: all),
 * summed as numeric by PostgreSQL and read exactly (128-bit).
 * Fills up to max rows; returns the count or -1. */
int verify_trial_balance(PGconn *c, const int64_t *at_us, struct trial_row *rows, int max, struct error *err)
	__attribute__((warn_unused_result));

#endif
