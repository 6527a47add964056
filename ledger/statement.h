/* statement.h: a customer's statement for a period (`ledger statement`).
 *
 * Two balances are followed separately: paid (the customer_paid ledger
 * account; negative = arrears) and promotional (every customer_promo grant
 * bucket of the account, expired-but-not-yet-broken ones included until
 * their breakage entry).  For each: opening (postings before `from`) plus
 * the movements in [from, to), grouped by journal kind, equals closing
 * (postings before `to`, summed by a separate query).  Amounts have the
 * ledger's sign seen from the customer: > 0 raises the balance.
 *
 * paid consumed = -(paid part of usage + paid part of refunds): what may be
 * invoiced.  Promotional credit is never in it. */
#ifndef LEDGER_STATEMENT_H
#define LEDGER_STATEMENT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "common/money.h"

struct statement_movement {
	char kind[32];
	money_total paid, promo; /* exact (contract section 4a) */
	int64_t txns;
};

struct statement_model {
	char model[201]; /* "" when the usage carried none */
	int64_t records, input_tokens, cached_input_tokens, output_tokens;
	money_total paid, promo;
};

struct statement {
	int64_t account_id;
	char external_id[201];
	int64_t from_us, to_us;
	/* amounts are exact 128-bit sums (contract section 4a) */
	money_total opening_paid, opening_promo, closing_paid, closing_promo;
	struct statement_movement *moves; /* owned: the known kinds first, in a fixed order, then others */
	size_t n_moves;
	struct statement_model *models; /* owned, by model name */
	size_t n_models;
	money_total paid_consumed, promo_consumed;
	money_total closing_promo_expired; /* of closing_promo: expired by `to`, not yet broken */
	bool balanced;                     /* opening + movements == closing, paid and promo */
};

enum statement_format { STATEMENT_TEXT, STATEMENT_JSON, STATEMENT_CSV };

/* Builds the statement from one snapshot (REPEATABLE READ).  -1 with err
 * (not_found for an unknown account).  Release with statement_release. */
int statement_build(PGconn *c, int64_t account_id, int64_t from_us, int64_t to_us, struct statement *out,
		    struct error *err) __attribute__((warn_unused_result));
void statement_release(struct statement *s);

/* Label of a kind for people ("top-ups"), or the kind itself. */
const char *statement_kind_label(const char *kind);

/* Prints the statement; period names it (e.g. "2026-11"). */
void statement_print(const struct statement *s, const char *period, enum statement_format fmt, FILE *out);

#endif
