/* statement.c: see statement.h. */
#include "ledger/statement.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/jsonnum.h"
#include "common/money.h"
#include "common/timeutil.h"
#include "ledger/csv.h"
#include "ledger/db.h"
#include "ledger/ops.h"

static const struct {
	const char *kind, *label;
} known[] = {
	{"topup", "top-ups"},      {"grant", "grants"},
	{"usage", "usage"},        {"breakage", "expiries (breakage)"},
	{"adjust", "adjustments"}, {"refund", "refunds"},
	{"clawback", "clawbacks"},
};
#define N_KNOWN (sizeof(known) / sizeof(known[0]))

const char *statement_kind_label(const char *kind)
{
	for (size_t i = 0; i < N_KNOWN; i++)
		if (strcmp(known[i].kind, kind) == 0)
			return known[i].label;
	return kind;
}

void statement_release(struct statement *s)
{
	free(s->moves);
	free(s->models);
	s->moves = NULL;
	s->models = NULL;
	s->n_moves = s->n_models = 0;
}

static struct statement_movement *move_of(struct statement *s, const char *kind)
{
	for (size_t i = 0; i < s->n_moves; i++)
		if (strcmp(s->moves[i].kind, kind) == 0)
			return &s->moves[i];
	return NULL;
}

/* Opening balances (postings before the period) and movements by kind and
 * side within it. */
static int load_movements(PGconn *c, const char *const *p, struct statement *out, struct error *err)
{
	PGresult *r;
	size_t cap;

	r = db_query(c,
		     "SELECT CASE WHEN j.created_at < $2::timestamptz THEN NULL ELSE j.kind END, la.type,"
		     " coalesce(sum(p.amount), 0)"
		     " FROM ledger_accounts la JOIN postings p ON p.ledger_account_id = la.ledger_account_id"
		     " JOIN journal j ON j.txn_id = p.txn_id AND j.created_at = p.created_at"
		     " WHERE la.account_id = $1::bigint AND j.created_at < $3::timestamptz"
		     " GROUP BY 1, 2 ORDER BY 1, 2",
		     3, p, err);
	if (!r)
		return -1;
	cap = N_KNOWN + (size_t)PQntuples(r);
	out->moves = calloc(cap, sizeof(*out->moves));
	if (!out->moves) {
		PQclear(r);
		return error_set(err, 0, "oom", "out of memory");
	}
	for (size_t i = 0; i < N_KNOWN; i++)
		snprintf(out->moves[out->n_moves++].kind, sizeof(out->moves[0].kind), "%s", known[i].kind);
	for (int i = 0; i < PQntuples(r); i++) {
		bool paid = strcmp(PQgetvalue(r, i, 1), "customer_paid") == 0;
		money_total amt = db_total(r, i, 2);
		struct statement_movement *mv;

		if (PQgetisnull(r, i, 0)) {
			*(paid ? &out->opening_paid : &out->opening_promo) += amt;
			continue;
		}
		mv = move_of(out, PQgetvalue(r, i, 0));
		if (!mv) {
			mv = &out->moves[out->n_moves++];
			snprintf(mv->kind, sizeof(mv->kind), "%s", PQgetvalue(r, i, 0));
		}
		*(paid ? &mv->paid : &mv->promo) += amt;
	}
	PQclear(r);
	return 0;
}

/* Transactions per kind in the period (one touching both sides counts once). */
static int count_txns(PGconn *c, const char *const *p, struct statement *out, struct error *err)
{
	PGresult *r;

	r = db_query(
		c,
		"SELECT j.kind, count(DISTINCT j.txn_id)"
		" FROM ledger_accounts la JOIN postings p ON p.ledger_account_id = la.ledger_account_id"
		" JOIN journal j ON j.txn_id = p.txn_id AND j.created_at = p.created_at"
		" WHERE la.account_id = $1::bigint AND j.created_at >= $2::timestamptz AND j.created_at < $3::timestamptz"
		" GROUP BY 1",
		3, p, err);
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++) {
		struct statement_movement *mv = move_of(out, PQgetvalue(r, i, 0));
		if (mv)
			mv->txns = db_int64(r, i, 1);
	}
	PQclear(r);
	return 0;
}

/* The closing balances, by their own query (the statement checks its sums against them). */
static int load_closing(PGconn *c, const char *const *p, struct statement *out, struct error *err)
{
	PGresult *r;

	r = db_query(
		c,
		"SELECT coalesce(sum(p.amount) FILTER (WHERE la.type = 'customer_paid'), 0),"
		" coalesce(sum(p.amount) FILTER (WHERE la.type = 'customer_promo'), 0),"
		" coalesce(sum(p.amount) FILTER (WHERE g.expires_at <= $3::timestamptz), 0)"
		" FROM ledger_accounts la JOIN postings p ON p.ledger_account_id = la.ledger_account_id"
		" JOIN journal j ON j.txn_id = p.txn_id AND j.created_at = p.created_at"
		" LEFT JOIN grants g ON g.ledger_account_id = la.ledger_account_id"
		" WHERE la.account_id = $1::bigint AND j.created_at < $3::timestamptz AND $2::timestamptz IS NOT NULL",
		3, p, err);
	if (!r)
		return -1;
	out->closing_paid = db_total(r, 0, 0);
	out->closing_promo = db_total(r, 0, 1);
	out->closing_promo_expired = db_total(r, 0, 2);
	PQclear(r);
	return 0;
}

/* Usage in the period by model: records, tokens, paid and promo charged. */
static int load_models(PGconn *c, const char *const *p, struct statement *out, struct error *err)
{
	PGresult *r;

	r = db_query(
		c,
		"WITH u AS (SELECT j.txn_id, j.created_at, j.details::jsonb AS d FROM journal j"
		"   WHERE j.account_id = $1::bigint AND j.kind = 'usage'"
		"   AND j.created_at >= $2::timestamptz AND j.created_at < $3::timestamptz)"
		" SELECT coalesce(u.d->>'model', ''), count(*),"
		" coalesce(sum(CASE WHEN jsonb_typeof(u.d->'input_tokens') = 'number' THEN (u.d->>'input_tokens')::bigint END), 0),"
		" coalesce(sum(CASE WHEN jsonb_typeof(u.d->'cached_input_tokens') = 'number'"
		"   THEN (u.d->>'cached_input_tokens')::bigint END), 0),"
		" coalesce(sum(CASE WHEN jsonb_typeof(u.d->'output_tokens') = 'number' THEN (u.d->>'output_tokens')::bigint END), 0),"
		" coalesce(sum(x.paid), 0), coalesce(sum(x.promo), 0)"
		" FROM u CROSS JOIN LATERAL (SELECT"
		"   coalesce(sum(p.amount) FILTER (WHERE la.type = 'customer_paid'), 0) AS paid,"
		"   coalesce(sum(p.amount) FILTER (WHERE la.type = 'customer_promo'), 0) AS promo"
		"   FROM postings p JOIN ledger_accounts la ON la.ledger_account_id = p.ledger_account_id"
		"   WHERE p.txn_id = u.txn_id AND p.created_at = u.created_at AND la.account_id = $1::bigint) x"
		" GROUP BY 1 ORDER BY 1",
		3, p, err);
	if (!r)
		return -1;
	out->models = calloc((size_t)PQntuples(r) + 1, sizeof(*out->models));
	if (!out->models) {
		PQclear(r);
		return error_set(err, 0, "oom", "out of memory");
	}
	for (int i = 0; i < PQntuples(r); i++) {
		struct statement_model *m = &out->models[out->n_models++];
		snprintf(m->model, sizeof(m->model), "%s", PQgetvalue(r, i, 0));
		m->records = db_int64(r, i, 1);
		m->input_tokens = db_int64(r, i, 2);
		m->cached_input_tokens = db_int64(r, i, 3);
		m->output_tokens = db_int64(r, i, 4);
		m->paid = db_total(r, i, 5);
		m->promo = db_total(r, i, 6);
	}
	PQclear(r);
	return 0;
}

/* Opening plus movements must give the closing balances; what was consumed. */
static void sum_up(struct statement *out)
{
	money_total paid = out->opening_paid, promo = out->opening_promo;
	struct statement_movement *u = move_of(out, "usage"), *rf = move_of(out, "refund");

	for (size_t i = 0; i < out->n_moves; i++) {
		paid += out->moves[i].paid;
		promo += out->moves[i].promo;
	}
	out->balanced = paid == out->closing_paid && promo == out->closing_promo;
	out->paid_consumed = -(u->paid + rf->paid);
	out->promo_consumed = -(u->promo + rf->promo);
}

int statement_build(PGconn *c, int64_t account_id, int64_t from_us, int64_t to_us, struct statement *out,
		    struct error *err)
{
	char id[32], from[40], to[40];
	const char *p[3] = {id, from, to};
	struct ops_account a;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	out->account_id = account_id;
	out->from_us = from_us;
	out->to_us = to_us;
	snprintf(id, sizeof(id), "%" PRId64, account_id);
	time_format_rfc3339(from_us, from, sizeof(from));
	time_format_rfc3339(to_us, to, sizeof(to));
	if (db_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, err) < 0)
		return -1;
	if (ops_account_get(c, account_id, &a, err) == 0) {
		snprintf(out->external_id, sizeof(out->external_id), "%s", a.external_id);
		if (load_movements(c, p, out, err) == 0 && count_txns(c, p, out, err) == 0 &&
		    load_closing(c, p, out, err) == 0 && load_models(c, p, out, err) == 0) {
			sum_up(out);
			rc = 0;
		}
	}
	db_exec_quiet(c, "ROLLBACK");
	if (rc < 0)
		statement_release(out);
	return rc;
}

/* ---- printing ---- */

static void money_col(char *buf, size_t n, money_total v)
{
	money_total_format(v, buf, n);
}

static void print_text(const struct statement *s, const char *period, FILE *out)
{
	char from[40], to[40], a[MONEY_TOTAL_BUF], b[MONEY_TOTAL_BUF], t[MONEY_TOTAL_BUF];

	time_format_rfc3339(s->from_us, from, sizeof(from));
	time_format_rfc3339(s->to_us, to, sizeof(to));
	fprintf(out, "Statement for account %" PRId64 " (%s), %s: [%s, %s), amounts in CNY\n\n", s->account_id,
		s->external_id, period, from, to);
	fprintf(out, "%-26s %6s %22s %22s %22s\n", "", "txns", "paid", "promotional", "total");
#define ROW(label, n, p, q)                                                                                \
	do {                                                                                               \
		money_col(a, sizeof(a), p);                                                                \
		money_col(b, sizeof(b), q);                                                                \
		money_col(t, sizeof(t), (p) + (q));                                                        \
		if ((n) < 0)                                                                               \
			fprintf(out, "%-26s %6s %22s %22s %22s\n", label, "", a, b, t);                    \
		else                                                                                       \
			fprintf(out, "%-26s %6" PRId64 " %22s %22s %22s\n", label, (int64_t)(n), a, b, t); \
	} while (0)
	ROW("opening balance", -1, s->opening_paid, s->opening_promo);
	for (size_t i = 0; i < s->n_moves; i++) {
		const struct statement_movement *m = &s->moves[i];
		char label[64];
		snprintf(label, sizeof(label), "  %s", statement_kind_label(m->kind));
		ROW(label, m->txns, m->paid, m->promo);
	}
	ROW("closing balance", -1, s->closing_paid, s->closing_promo);
#undef ROW
	if (!s->balanced)
		fprintf(out, "WARNING: opening balance plus movements does not equal the closing balance\n");
	if (s->closing_promo_expired)
		fprintf(out, "(of the closing promotional balance, %s has expired and awaits its breakage entry)\n",
			(money_col(a, sizeof(a), s->closing_promo_expired), a));
	fprintf(out, "\nusage by model:\n%-24s %8s %14s %14s %14s %20s %20s %20s\n", "model", "records", "input tok",
		"cached tok", "output tok", "cost", "paid", "promotional");
	if (s->n_models == 0)
		fprintf(out, "  (no usage)\n");
	for (size_t i = 0; i < s->n_models; i++) {
		const struct statement_model *m = &s->models[i];
		money_col(a, sizeof(a), -m->paid);
		money_col(b, sizeof(b), -m->promo);
		money_col(t, sizeof(t), -(m->paid + m->promo));
		fprintf(out, "%-24s %8" PRId64 " %14" PRId64 " %14" PRId64 " %14" PRId64 " %20s %20s %20s\n",
			m->model[0] ? m->model : "(none)", m->records, m->input_tokens, m->cached_input_tokens,
			m->output_tokens, t, a, b);
	}
	money_col(a, sizeof(a), s->paid_consumed);
	money_col(b, sizeof(b), s->promo_consumed);
	fprintf(out, "\npaid amount consumed (invoiceable): %s CNY\n", a);
	fprintf(out, "promotional credit consumed (never invoiced): %s CNY\n", b);
}

static json_t *side(money_total paid, money_total promo)
{
	return json_pack("{s:o,s:o,s:o}", "paid_nanos", jsonnum_total(paid), "promo_nanos", jsonnum_total(promo),
			 "total_nanos", jsonnum_total(paid + promo));
}

static void print_json(const struct statement *s, const char *period, FILE *out)
{
	char from[40], to[40], *txt;
	json_t *moves = json_array(), *models = json_array(), *j;

	time_format_rfc3339(s->from_us, from, sizeof(from));
	time_format_rfc3339(s->to_us, to, sizeof(to));
	for (size_t i = 0; i < s->n_moves; i++) {
		json_t *m = side(s->moves[i].paid, s->moves[i].promo);
		json_object_set_new(m, "kind", json_string(s->moves[i].kind));
		json_object_set_new(m, "label", json_string(statement_kind_label(s->moves[i].kind)));
		json_object_set_new(m, "transactions", json_integer(s->moves[i].txns));
		json_array_append_new(moves, m);
	}
	for (size_t i = 0; i < s->n_models; i++) {
		const struct statement_model *m = &s->models[i];
		json_array_append_new(models,
				      json_pack("{s:s,s:I,s:I,s:I,s:I,s:o,s:o,s:o}", "model", m->model, "records",
						(json_int_t)m->records, "input_tokens", (json_int_t)m->input_tokens,
						"cached_input_tokens", (json_int_t)m->cached_input_tokens,
						"output_tokens", (json_int_t)m->output_tokens, "cost_nanos",
						jsonnum_total(-(m->paid + m->promo)), "paid_nanos",
						jsonnum_total(-m->paid), "promo_nanos", jsonnum_total(-m->promo)));
	}
	j = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b}", "account_id",
		      (json_int_t)s->account_id, "external_id", s->external_id, "period", period, "from", from, "to",
		      to, "currency", "CNY", "opening", side(s->opening_paid, s->opening_promo), "movements", moves,
		      "closing", side(s->closing_paid, s->closing_promo), "usage_by_model", models,
		      "paid_consumed_nanos", jsonnum_total(s->paid_consumed), "promo_consumed_nanos",
		      jsonnum_total(s->promo_consumed), "closing_promo_expired_nanos",
		      jsonnum_total(s->closing_promo_expired), "balanced", s->balanced);
	txt = j ? jsonnum_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	if (txt)
		fprintf(out, "%s\n", txt);
	free(txt);
	json_decref(j);
}

static void csv_row(FILE *out, const char *section, const char *item, const char *txns, const int64_t tok[4],
		    money_total paid, money_total promo)
{
	struct buf b;

	buf_init(&b);
	csv_put(&b, section);
	buf_append(&b, ",", 1);
	csv_put(&b, item);
	buf_printf(&b, ",%s", txns);
	for (int i = 0; i < 4; i++) {
		if (tok)
			buf_printf(&b, ",%" PRId64, tok[i]);
		else
			buf_append(&b, ",", 1);
	}
	{
		char p[MONEY_TOTAL_BUF], q[MONEY_TOTAL_BUF], t[MONEY_TOTAL_BUF];
		money_total_str(paid, p, sizeof(p));
		money_total_str(promo, q, sizeof(q));
		money_total_str(paid + promo, t, sizeof(t));
		buf_printf(&b, ",%s,%s,%s\r\n", p, q, t);
	}
	fputs(b.data, out);
	buf_release(&b);
}

static void print_csv(const struct statement *s, FILE *out)
{
	char n[32];

	fputs("section,item,transactions,records,input_tokens,cached_input_tokens,output_tokens,paid_nanos,promo_nanos,"
	      "total_nanos\r\n",
	      out);
	csv_row(out, "balance", "opening", "", NULL, s->opening_paid, s->opening_promo);
	for (size_t i = 0; i < s->n_moves; i++) {
		snprintf(n, sizeof(n), "%" PRId64, s->moves[i].txns);
		csv_row(out, "movement", s->moves[i].kind, n, NULL, s->moves[i].paid, s->moves[i].promo);
	}
	csv_row(out, "balance", "closing", "", NULL, s->closing_paid, s->closing_promo);
	for (size_t i = 0; i < s->n_models; i++) {
		const struct statement_model *m = &s->models[i];
		int64_t tok[4] = {m->records, m->input_tokens, m->cached_input_tokens, m->output_tokens};
		csv_row(out, "usage_by_model", m->model, "", tok, -m->paid, -m->promo);
	}
	csv_row(out, "summary", "paid_consumed", "", NULL, s->paid_consumed, 0);
	csv_row(out, "summary", "promo_consumed", "", NULL, 0, s->promo_consumed);
}

void statement_print(const struct statement *s, const char *period, enum statement_format fmt, FILE *out)
{
	if (fmt == STATEMENT_JSON)
		print_json(s, period, out);
	else if (fmt == STATEMENT_CSV)
		print_csv(s, out);
	else
		print_text(s, period, out);
}
