/* export_file.c: see export_file.h.  The line format first (shared with the
 * writer, export.c), then the verifier. */
#include "ledger/export_file.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonnum.h"
#include "common/timeutil.h"
#include "ledger/csv.h"
#include "ledger/journal.h"
#include "ledger/manifest.h"

static const char *const columns[] = {
	"txn_id",
	"created_at",
	"kind",
	"account_id",
	"line",
	"ledger_account_id",
	"ledger_account_type",
	"grant_id",
	"amount_nanos",
	"currency",
	"request_id",
	"model",
	"input_tokens",
	"cached_input_tokens",
	"output_tokens",
	"price_version",
	"writer",
	"seq",
	"idempotency_key",
	"actor",
	"reason",
	"details",
	"prev_hash",
	"hash",
	"row_hash",
};
#define N_COLUMNS (sizeof(columns) / sizeof(columns[0]))
#define N_BODY (N_COLUMNS - 1) /* without row_hash */

/* ---- one posting line ---- */

void export_file_derived_release(struct export_derived *d)
{
	free(d->request_id);
	free(d->model);
	memset(d, 0, sizeof(*d));
}

void export_file_derive(const char *details, struct export_derived *d)
{
	static const char *const ints[4] = {"input_tokens", "cached_input_tokens", "output_tokens", "price_version"};
	json_t *j = json_loads(details, 0, NULL);
	const char *s;

	export_file_derived_release(d);
	if (json_is_object(j)) {
		if ((s = json_string_value(json_object_get(j, "request_id"))))
			d->request_id = strdup(s);
		if ((s = json_string_value(json_object_get(j, "model"))))
			d->model = strdup(s);
		for (int i = 0; i < 4; i++) {
			json_t *v = json_object_get(j, ints[i]);
			if (json_is_integer(v)) {
				d->v[i] = json_integer_value(v);
				d->has[i] = true;
			}
		}
	}
	json_decref(j);
}

struct emitter {
	struct buf *b;
	enum export_format fmt;
	int n;
	bool short_bf; /* \b and \f as the writer of 0b994f4..286f7c0 spelled them (below) */
};

/* A JSON string of an NDJSON export, spelled as every export writer but
 * one has spelled it (buf_json_str_u: 0x08 and 0x0c as \u0008 and \u000c),
 * so an older `ledger verify` accepts today's files.  The writer of commits
 * 0b994f4..286f7c0 used buf_json_str, \b and \f: those files are genuine
 * too, and the verifier accepts a line in either spelling. */
static void json_str(struct emitter *e, const char *s)
{
	if (e->short_bf)
		buf_json_str(e->b, s);
	else
		buf_json_str_u(e->b, s);
}

static void em_sep(struct emitter *e)
{
	if (e->fmt == EXPORT_CSV) {
		if (e->n)
			buf_append(e->b, ",", 1);
	} else {
		buf_append(e->b, e->n ? "," : "{", 1);
		json_str(e, columns[e->n]);
		buf_append(e->b, ":", 1);
	}
	e->n++;
}

static void em_int(struct emitter *e, int64_t v, bool has)
{
	em_sep(e);
	if (has)
		buf_printf(e->b, "%" PRId64, v);
	else if (e->fmt == EXPORT_NDJSON)
		buf_puts(e->b, "null");
}

static void em_str(struct emitter *e, const char *s)
{
	em_sep(e);
	if (!s) {
		if (e->fmt == EXPORT_NDJSON)
			buf_puts(e->b, "null");
	} else if (e->fmt == EXPORT_CSV) {
		csv_put(e->b, s);
	} else {
		json_str(e, s);
	}
}

static void body_of(struct buf *b, enum export_format fmt, const struct export_row *r, const struct export_derived *d,
		    bool short_bf)
{
	struct emitter e = {b, fmt, 0, short_bf};
	char ts[40];

	time_format_rfc3339(r->created_at_us, ts, sizeof(ts));
	em_int(&e, r->txn_id, true);
	em_str(&e, ts);
	em_str(&e, r->kind);
	em_int(&e, r->account_id, r->account_id != 0);
	em_int(&e, r->line, true);
	em_int(&e, r->ledger_account_id, true);
	em_str(&e, r->la_type);
	em_int(&e, r->grant_id, r->grant_id != 0);
	em_int(&e, r->amount, true);
	em_str(&e, EXPORT_CURRENCY);
	em_str(&e, d->request_id);
	em_str(&e, d->model);
	for (int i = 0; i < 4; i++)
		em_int(&e, d->v[i], d->has[i]);
	em_str(&e, r->writer);
	em_int(&e, r->seq, true);
	em_str(&e, r->idempotency_key);
	em_str(&e, r->actor);
	em_str(&e, r->reason);
	em_str(&e, r->details);
	em_str(&e, r->prev_hex);
	em_str(&e, r->hash_hex);
}

void export_file_body(struct buf *b, enum export_format fmt, const struct export_row *r, const struct export_derived *d)
{
	body_of(b, fmt, r, d, false);
}

void export_file_row_hash_init(uint8_t h[32], enum export_format fmt, const char *header, size_t hlen)
{
	crypto_generichash_state st;
	const char *name = fmt == EXPORT_CSV ? "csv" : "ndjson";

	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const unsigned char *)EXPORT_ROW_TAG,
				  sizeof(EXPORT_ROW_TAG)); /* with its NUL */
	crypto_generichash_update(&st, (const unsigned char *)name, strlen(name));
	if (header)
		crypto_generichash_update(&st, (const unsigned char *)header, hlen);
	crypto_generichash_final(&st, h, 32);
}

void export_file_row_hash_step(uint8_t h[32], const char *body, size_t n)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, h, 32);
	crypto_generichash_update(&st, (const unsigned char *)body, n);
	crypto_generichash_final(&st, h, 32);
}

void export_file_header(struct buf *b)
{
	for (size_t i = 0; i < N_COLUMNS; i++) {
		if (i)
			buf_append(b, ",", 1);
		buf_puts(b, columns[i]);
	}
}

static void hex(char *out, const uint8_t *p, size_t n)
{
	sodium_bin2hex(out, 2 * n + 1, p, n);
}

/* ---- totals per ledger account type, chains per writer ---- */

void export_file_totals_add(struct export_totals *tt, const char *type, int64_t amount)
{
	struct export_total *t = NULL;
	money_total *side, a;

	for (size_t i = 0; i < tt->n; i++)
		if (strcmp(tt->t[i].type, type) == 0)
			t = &tt->t[i];
	if (!t) {
		if (tt->n == sizeof(tt->t) / sizeof(tt->t[0])) {
			tt->overflow = true;
			return;
		}
		t = &tt->t[tt->n++];
		snprintf(t->type, sizeof(t->type), "%s", type);
	}
	a = amount < 0 ? -(money_total)amount : (money_total)amount;
	side = amount < 0 ? &t->debits : &t->credits;
	*side += a;
	side = amount < 0 ? &tt->debits : &tt->credits;
	*side += a;
}

json_t *export_file_totals_json(const struct export_totals *tt)
{
	json_t *by = json_object();

	for (size_t i = 0; i < tt->n; i++)
		json_object_set_new(by, tt->t[i].type,
				    json_pack("{s:o,s:o}", "debits_nanos", jsonnum_total(tt->t[i].debits),
					      "credits_nanos", jsonnum_total(tt->t[i].credits)));
	return json_pack("{s:o,s:o,s:o}", "by_type", by, "debits_nanos", jsonnum_total(tt->debits), "credits_nanos",
			 jsonnum_total(tt->credits));
}

void export_file_chains_release(struct export_chains *cs)
{
	for (size_t i = 0; i < cs->n; i++)
		free(cs->v[i].writer);
	free(cs->v);
	memset(cs, 0, sizeof(*cs));
}

struct export_chain *export_file_chain_get(struct export_chains *cs, const char *writer, bool *created)
{
	*created = false;
	for (size_t i = cs->n; i-- > 0;)
		if (strcmp(cs->v[i].writer, writer) == 0)
			return &cs->v[i];
	if (cs->n == cs->cap) {
		size_t cap = cs->cap ? cs->cap * 2 : 8;
		struct export_chain *v = realloc(cs->v, cap * sizeof(*v));
		if (!v)
			return NULL;
		cs->v = v;
		cs->cap = cap;
	}
	memset(&cs->v[cs->n], 0, sizeof(cs->v[0]));
	cs->v[cs->n].writer = strdup(writer);
	if (!cs->v[cs->n].writer)
		return NULL;
	*created = true;
	return &cs->v[cs->n++];
}

json_t *export_file_chains_json(const struct export_chains *cs)
{
	json_t *o = json_object();

	for (size_t i = 0; i < cs->n; i++)
		json_object_set_new(o, cs->v[i].writer,
				    json_pack("{s:I,s:I,s:I,s:s,s:s}", "first_seq", (json_int_t)cs->v[i].first_seq,
					      "last_seq", (json_int_t)cs->v[i].last_seq, "transactions",
					      (json_int_t)cs->v[i].txns, "first_prev_hash", cs->v[i].first_prev,
					      "last_hash", cs->v[i].last_hash));
	return o;
}

json_t *export_file_entry_json(const struct export_row *r)
{
	char ts[40];

	time_format_rfc3339(r->created_at_us, ts, sizeof(ts));
	return json_pack("{s:I,s:s,s:s,s:I,s:s}", "txn_id", (json_int_t)r->txn_id, "created_at", ts, "writer",
			 r->writer, "seq", (json_int_t)r->seq, "hash", r->hash_hex);
}

json_t *export_file_columns_json(void)
{
	json_t *cols = json_array();

	for (size_t i = 0; cols && i < N_COLUMNS; i++)
		json_array_append_new(cols, json_string(columns[i]));
	return cols;
}

/* ---- verifying ---- */

struct lreader {
	FILE *f;
	char buf[65536];
	size_t pos, len;
};

/* Appends one physical line (through its '\n', or what is left at EOF) to
 * out: 1, or 0 at EOF, -1 when out would exceed max, -2 on a read error. */
static int read_line(struct lreader *lr, struct buf *out, size_t max)
{
	int got = 0;

	for (;;) {
		char *nl;
		size_t n;

		if (lr->pos == lr->len) {
			lr->len = fread(lr->buf, 1, sizeof(lr->buf), lr->f);
			lr->pos = 0;
			if (lr->len == 0)
				return ferror(lr->f) ? -2 : got;
		}
		got = 1;
		nl = memchr(lr->buf + lr->pos, '\n', lr->len - lr->pos);
		n = nl ? (size_t)(nl - (lr->buf + lr->pos)) + 1 : lr->len - lr->pos;
		if (out->len + n > max)
			return -1;
		buf_append(out, lr->buf + lr->pos, n);
		lr->pos += n;
		if (nl)
			return 1;
	}
}

struct txn_state {
	bool open;
	int64_t txn_id, created_at_us, account_id, seq, last_line, first_line_no;
	char *kind, *writer, *idempotency_key, *actor, *reason, *details;
	char prev_hex[65], hash_hex[65];
	struct journal_posting *posts;
	size_t np, cap;
};

struct vstate {
	enum export_format fmt;
	const json_t *m;
	struct export_verdict *v;
	struct export_totals tt;
	struct export_chains cs;
	struct txn_state cur;
	int64_t last_txn_id, rows, txns;
	int64_t from_us, to_us, account_filter, manifest_rows;
	const json_t *checkpoints;
	size_t next_cp;
	json_t *first, *last;
};

static void fail(struct vstate *s, int64_t line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(struct vstate *s, int64_t line, const char *fmt, ...)
{
	va_list ap;
	char msg[500];

	if (!s->v->ok)
		return; /* keep the first problem */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->v->ok = 0;
	s->v->line = line;
	if (line)
		snprintf(s->v->problem, sizeof(s->v->problem), "line %" PRId64 ": %s", line, msg);
	else
		snprintf(s->v->problem, sizeof(s->v->problem), "%s", msg);
}

static void txn_clear(struct txn_state *t)
{
	free(t->kind);
	free(t->writer);
	free(t->idempotency_key);
	free(t->actor);
	free(t->reason);
	free(t->details);
	t->kind = t->writer = t->idempotency_key = t->actor = t->reason = t->details = NULL;
	t->open = false;
	t->np = 0;
}

static int hex32_lower(const char *s, uint8_t out[32])
{
	size_t got = 0;

	if (strlen(s) != 64)
		return -1;
	for (const char *q = s; *q; q++)
		if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f')))
			return -1;
	return sodium_hex2bin(out, 32, s, 64, NULL, &got, NULL) == 0 && got == 32 ? 0 : -1;
}

/* The transaction is complete: recompute its hash, link it into its writer's chain. */
static void txn_finish(struct vstate *s)
{
	struct txn_state *t = &s->cur;
	struct journal_txn jt;
	uint8_t prev[32], stored[32], h[32];
	struct export_chain *ch;
	bool created;

	if (!t->open)
		return;
	if (hex32_lower(t->prev_hex, prev) < 0 || hex32_lower(t->hash_hex, stored) < 0) {
		fail(s, t->first_line_no, "transaction %" PRId64 ": prev_hash or hash is not 64 lower-case hex digits",
		     t->txn_id);
		return;
	}
	memset(&jt, 0, sizeof(jt));
	jt.kind = t->kind;
	jt.idempotency_key = t->idempotency_key;
	jt.account_id = t->account_id;
	jt.actor = t->actor;
	jt.reason = t->reason;
	jt.details = t->details;
	jt.created_at_us = t->created_at_us;
	jt.n_postings = t->np;
	jt.postings = t->posts;
	journal_hash(h, prev, t->writer, t->seq, &jt);
	if (sodium_memcmp(h, stored, 32) != 0) {
		fail(s, t->first_line_no,
		     "transaction %" PRId64 " (writer %s, seq %" PRId64 "): hash does not match its content", t->txn_id,
		     t->writer, t->seq);
		return;
	}
	ch = export_file_chain_get(&s->cs, t->writer, &created);
	if (!ch) {
		fail(s, t->first_line_no, "out of memory");
		return;
	}
	if (created) {
		ch->first_seq = t->seq;
		snprintf(ch->first_prev, sizeof(ch->first_prev), "%s", t->prev_hex);
	} else if (t->seq <= ch->last_seq) {
		fail(s, t->first_line_no,
		     "transaction %" PRId64 ": writer %s seq %" PRId64 " comes after seq %" PRId64 " (line %" PRId64
		     "): duplicated or out of order",
		     t->txn_id, t->writer, t->seq, ch->last_seq, ch->last_line);
		return;
	} else if (t->seq == ch->last_seq + 1 && strcmp(t->prev_hex, ch->last_hash) != 0) {
		fail(s, t->first_line_no,
		     "transaction %" PRId64 " (writer %s, seq %" PRId64 "): prev_hash does not link to seq %" PRId64
		     " (line %" PRId64 ")",
		     t->txn_id, t->writer, t->seq, ch->last_seq, ch->last_line);
		return;
	}
	if (t->seq == 1 && sodium_is_zero(prev, 32) != 1) {
		fail(s, t->first_line_no, "transaction %" PRId64 ": seq 1 of writer %s must have a zero prev_hash",
		     t->txn_id, t->writer);
		return;
	}
	ch->last_seq = t->seq;
	ch->last_line = t->first_line_no;
	ch->txns++;
	snprintf(ch->last_hash, sizeof(ch->last_hash), "%s", t->hash_hex);
	s->txns++;
}

static int parse_i64(const char *str, int64_t *out)
{
	char *end;
	long long x;

	if (!*str)
		return -1;
	errno = 0;
	x = strtoll(str, &end, 10);
	if (errno || *end)
		return -1;
	*out = x;
	return 0;
}

/* Fields of a CSV body (no row_hash) into row; strings borrowed from f. */
static int row_from_csv(struct vstate *s, int64_t line_no, const struct csv_fields *f, struct export_row *row)
{
	static const int ints[] = {0, 3, 4, 5, 7, 8, 17};
	int64_t *dst[] = {&row->txn_id,   &row->account_id, &row->line, &row->ledger_account_id,
			  &row->grant_id, &row->amount,     &row->seq};

	if (f->n != N_BODY) {
		fail(s, line_no, "%zu fields, expected %zu", f->n + 1, N_COLUMNS);
		return -1;
	}
	memset(row, 0, sizeof(*row));
	for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
		const char *v = csv_field(f, (size_t)ints[k]);
		if ((ints[k] == 3 || ints[k] == 7) && !*v)
			continue; /* null */
		if (parse_i64(v, dst[k]) < 0) {
			fail(s, line_no, "column '%s' is not an integer", columns[ints[k]]);
			return -1;
		}
	}
	if (time_parse_rfc3339(csv_field(f, 1), 0, &row->created_at_us) < 0) {
		fail(s, line_no, "column 'created_at' is not an RFC 3339 time");
		return -1;
	}
	row->kind = csv_field(f, 2);
	row->la_type = csv_field(f, 6);
	row->writer = csv_field(f, 16);
	row->idempotency_key = csv_field(f, 18);
	row->actor = csv_field(f, 19);
	row->reason = csv_field(f, 20);
	row->details = csv_field(f, 21);
	row->prev_hex = csv_field(f, 22);
	row->hash_hex = csv_field(f, 23);
	return 0;
}

/* An NDJSON object into row; strings borrowed from j. */
static int row_from_json(struct vstate *s, int64_t line_no, json_t *j, struct export_row *row)
{
	struct {
		int col;
		int64_t *dst;
		bool nullable;
	} ints[] = {{0, &row->txn_id, false},  {3, &row->account_id, true},
		    {4, &row->line, false},    {5, &row->ledger_account_id, false},
		    {7, &row->grant_id, true}, {8, &row->amount, false},
		    {17, &row->seq, false}};
	struct {
		int col;
		const char **dst;
	} strs[] = {{2, &row->kind},     {6, &row->la_type}, {16, &row->writer},  {18, &row->idempotency_key},
		    {19, &row->actor},   {20, &row->reason}, {21, &row->details}, {22, &row->prev_hex},
		    {23, &row->hash_hex}};
	const char *ts;

	memset(row, 0, sizeof(*row));
	if (!json_is_object(j)) {
		fail(s, line_no, "not a JSON object");
		return -1;
	}
	for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
		json_t *v = json_object_get(j, columns[ints[k].col]);
		if (ints[k].nullable && json_is_null(v))
			continue;
		if (!json_is_integer(v)) {
			fail(s, line_no, "member '%s' is not an integer", columns[ints[k].col]);
			return -1;
		}
		*ints[k].dst = json_integer_value(v);
	}
	for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
		*strs[k].dst = json_string_value(json_object_get(j, columns[strs[k].col]));
		if (!*strs[k].dst) {
			fail(s, line_no, "member '%s' is not a string", columns[strs[k].col]);
			return -1;
		}
	}
	ts = json_string_value(json_object_get(j, "created_at"));
	if (!ts || time_parse_rfc3339(ts, 0, &row->created_at_us) < 0) {
		fail(s, line_no, "member 'created_at' is not an RFC 3339 time");
		return -1;
	}
	return 0;
}

static char *dup_or_null(const char *x)
{
	return x ? strdup(x) : NULL;
}

static void check_row(struct vstate *s, int64_t line_no, const struct export_row *row)
{
	struct txn_state *t = &s->cur;

	if (!t->open || row->txn_id != t->txn_id) {
		txn_finish(s);
		if (!s->v->ok)
			return;
		if (row->txn_id <= s->last_txn_id) {
			fail(s, line_no, "transaction %" PRId64 " comes after transaction %" PRId64 ": out of order",
			     row->txn_id, s->last_txn_id);
			return;
		}
		if (row->line != 1) {
			fail(s, line_no,
			     "transaction %" PRId64 " starts at posting line %" PRId64 " (postings missing before it)",
			     row->txn_id, row->line);
			return;
		}
		if (row->created_at_us < s->from_us || row->created_at_us >= s->to_us) {
			fail(s, line_no, "transaction %" PRId64 " lies outside the manifest's range", row->txn_id);
			return;
		}
		if (s->account_filter && row->account_id != s->account_filter) {
			fail(s, line_no, "transaction %" PRId64 " is not of account %" PRId64, row->txn_id,
			     s->account_filter);
			return;
		}
		txn_clear(t);
		t->open = true;
		t->txn_id = row->txn_id;
		t->created_at_us = row->created_at_us;
		t->account_id = row->account_id;
		t->seq = row->seq;
		t->last_line = 0;
		t->first_line_no = line_no;
		t->kind = dup_or_null(row->kind);
		t->writer = dup_or_null(row->writer);
		t->idempotency_key = dup_or_null(row->idempotency_key);
		t->actor = dup_or_null(row->actor);
		t->reason = dup_or_null(row->reason);
		t->details = dup_or_null(row->details);
		snprintf(t->prev_hex, sizeof(t->prev_hex), "%s", row->prev_hex);
		snprintf(t->hash_hex, sizeof(t->hash_hex), "%s", row->hash_hex);
		if (!t->kind || !t->writer || !t->idempotency_key || !t->actor || !t->reason || !t->details) {
			fail(s, line_no, "out of memory");
			return;
		}
		s->last_txn_id = row->txn_id;
		json_decref(s->last);
		s->last = export_file_entry_json(row);
		if (!s->first)
			s->first = json_incref(s->last);
	} else {
		/* later postings of the same transaction repeat its fields */
		if (row->line != t->last_line + 1) {
			fail(s, line_no, "transaction %" PRId64 ": posting line %" PRId64 " follows line %" PRId64,
			     row->txn_id, row->line, t->last_line);
			return;
		}
		if (row->created_at_us != t->created_at_us || row->account_id != t->account_id || row->seq != t->seq ||
		    strcmp(row->kind, t->kind) || strcmp(row->writer, t->writer) ||
		    strcmp(row->idempotency_key, t->idempotency_key) || strcmp(row->actor, t->actor) ||
		    strcmp(row->reason, t->reason) || strcmp(row->details, t->details) ||
		    strcmp(row->prev_hex, t->prev_hex) || strcmp(row->hash_hex, t->hash_hex)) {
			fail(s, line_no,
			     "transaction %" PRId64 ": its fields differ from its first line (line %" PRId64 ")",
			     row->txn_id, t->first_line_no);
			return;
		}
	}
	if (t->np == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct journal_posting *np = realloc(t->posts, cap * sizeof(*np));
		if (!np) {
			fail(s, line_no, "out of memory");
			return;
		}
		t->posts = np;
		t->cap = cap;
	}
	t->posts[t->np++] = (struct journal_posting){row->ledger_account_id, 0, row->amount};
	t->last_line = row->line;
	export_file_totals_add(&s->tt, row->la_type, row->amount);
}

static const char *mstr(const json_t *m, const char *k)
{
	return json_string_value(json_object_get(m, k));
}

static int64_t mint(const json_t *m, const char *k, bool *ok)
{
	json_t *v = json_object_get(m, k);

	if (!json_is_integer(v))
		*ok = false;
	return json_integer_value(v);
}

/* One data record (line_no its first line): row hash, canonical form, content. */
static void check_record(struct vstate *s, int64_t line_no, const char *rec, size_t n, uint8_t rh[32],
			 struct csv_fields *f, struct buf *canon, struct export_derived *d)
{
	const char *body, *hash_text;
	size_t body_len;
	char want[65], err[200];
	struct export_row row;
	json_t *j = NULL;

	if (s->fmt == EXPORT_CSV) {
		const char *comma;
		if (n < 2 || rec[n - 2] != '\r' || rec[n - 1] != '\n') {
			fail(s, line_no, "the line does not end in CRLF");
			return;
		}
		n -= 2;
		comma = memrchr(rec, ',', n);
		if (!comma || (size_t)(rec + n - comma - 1) != 64) {
			fail(s, line_no, "the last field is not a 64-digit row_hash");
			return;
		}
		body = rec;
		body_len = (size_t)(comma - rec);
		hash_text = comma + 1;
	} else {
		static const char suffix[] = ",\"row_hash\":\"";
		size_t sl = sizeof(suffix) - 1;
		if (n < 1 || rec[n - 1] != '\n') {
			fail(s, line_no, "the line does not end in LF");
			return;
		}
		n -= 1;
		if (n < sl + 66 || memcmp(rec + n - 66 - sl, suffix, sl) != 0 || rec[n - 2] != '"' ||
		    rec[n - 1] != '}') {
			fail(s, line_no, "the line does not end in a \"row_hash\" member");
			return;
		}
		body = rec;
		body_len = n - 66 - sl;
		hash_text = rec + n - 66;
	}
	export_file_row_hash_step(rh, body, body_len);
	hex(want, rh, 32);
	if (memcmp(want, hash_text, 64) != 0) {
		fail(s, line_no, "row hash does not match: this line was altered, inserted, removed or moved");
		return;
	}
	s->rows++;
	if (s->rows > s->manifest_rows) {
		fail(s, line_no, "row %" PRId64 " is beyond the manifest's %" PRId64 " rows", s->rows,
		     s->manifest_rows);
		return;
	}
	if (s->rows % EXPORT_CHECKPOINT_EVERY == 0) {
		const json_t *cp = json_array_get(s->checkpoints, s->next_cp++);
		const char *ch = mstr(cp, "row_hash");
		if (json_integer_value(json_object_get(cp, "row")) != s->rows || !ch || strcmp(ch, want) != 0) {
			fail(s, line_no,
			     "row hash differs from the manifest's checkpoint for row %" PRId64
			     ": a line up to here was altered (row hashes recomputed)",
			     s->rows);
			return;
		}
	}
	if (s->fmt == EXPORT_CSV) {
		if (csv_split(body, body_len, f, err, sizeof(err)) < 0) {
			fail(s, line_no, "%s", err);
			return;
		}
		if (row_from_csv(s, line_no, f, &row) < 0)
			return;
	} else {
		json_error_t je;
		j = json_loadb(rec, n, JSON_REJECT_DUPLICATES, &je);
		if (!j) {
			fail(s, line_no, "not JSON: %s", je.text);
			return;
		}
		if (json_object_size(j) != N_COLUMNS) {
			fail(s, line_no, "%zu members, expected %zu", json_object_size(j), N_COLUMNS);
			json_decref(j);
			return;
		}
		if (row_from_json(s, line_no, j, &row) < 0) {
			json_decref(j);
			return;
		}
	}
	/* one formatting function: the line must be exactly what the exporter writes */
	if (!s->cur.open || row.txn_id != s->cur.txn_id)
		export_file_derive(row.details, d);
	buf_reset(canon);
	export_file_body(canon, s->fmt, &row, d);
	if ((canon->len != body_len || memcmp(canon->data, body, body_len) != 0) && s->fmt == EXPORT_NDJSON) {
		/* written by 0b994f4..286f7c0: \b and \f for the bytes 0x08 and 0x0c */
		buf_reset(canon);
		body_of(canon, s->fmt, &row, d, true);
	}
	if (canon->len != body_len || memcmp(canon->data, body, body_len) != 0)
		fail(s, line_no, "the line is not in canonical form (a field was changed)");
	else
		check_row(s, line_no, &row);
	json_decref(j);
}

static bool same_json(const json_t *a, const json_t *b)
{
	return (!a && !b) || (a && b && json_equal((json_t *)a, (json_t *)b));
}

/* After the last line: everything the manifest states about the whole file. */
static void check_totals(struct vstate *s, const uint8_t fh[32], int64_t bytes, const uint8_t rh[32], int64_t lines)
{
	char fhex[65], rhex[65];
	json_t *tt, *ch;
	bool ok = true;
	const json_t *m = s->m;

	hex(fhex, fh, 32);
	hex(rhex, rh, 32);
	if (s->rows != s->manifest_rows) {
		fail(s, lines + 1, "the file ends after %" PRId64 " rows; the manifest says %" PRId64 " (truncated?)",
		     s->rows, s->manifest_rows);
		return;
	}
	if (mint(m, "bytes", &ok) != bytes || !ok) {
		fail(s, 0, "the file has %" PRId64 " bytes; the manifest says %" PRId64, bytes,
		     (int64_t)json_integer_value(json_object_get(m, "bytes")));
		return;
	}
	if (!mstr(m, "blake2b_256") || strcmp(mstr(m, "blake2b_256"), fhex) != 0) {
		fail(s, 0, "the file's BLAKE2b-256 %s differs from the manifest's", fhex);
		return;
	}
	if (!mstr(json_object_get(m, "row_hash"), "last") ||
	    strcmp(mstr(json_object_get(m, "row_hash"), "last"), rhex)) {
		fail(s, 0, "the last row hash differs from the manifest's");
		return;
	}
	if (mint(m, "transactions", &ok) != s->txns || !ok) {
		fail(s, 0, "the file has %" PRId64 " transactions; the manifest says %" PRId64, s->txns,
		     (int64_t)json_integer_value(json_object_get(m, "transactions")));
		return;
	}
	tt = export_file_totals_json(&s->tt);
	ch = export_file_chains_json(&s->cs);
	/* the verifier tracks last_line too: compare only what the manifest holds */
	if (s->tt.overflow || !same_json(tt, json_object_get(m, "totals")))
		fail(s, 0, "the totals per ledger account type differ from the manifest's");
	else if (!same_json(ch, json_object_get(m, "chains")))
		fail(s, 0, "the chain heads per writer differ from the manifest's");
	else if (!same_json(s->first, json_is_null(json_object_get(m, "first")) ? NULL : json_object_get(m, "first")) ||
		 !same_json(s->last, json_is_null(json_object_get(m, "last")) ? NULL : json_object_get(m, "last")))
		fail(s, 0, "the first or last entry differs from the manifest's");
	json_decref(tt);
	json_decref(ch);
}

/* The manifest file, totals beyond int64 included (common/jsonnum.h). */
static json_t *load_manifest(const char *mpath, json_error_t *je)
{
	FILE *f = fopen(mpath, "rb");
	struct buf b;
	char chunk[8192];
	size_t n;
	json_t *m = NULL;

	memset(je, 0, sizeof(*je));
	if (!f) {
		snprintf(je->text, sizeof(je->text), "%s", strerror(errno));
		return NULL;
	}
	buf_init(&b);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < (64u << 20))
		buf_append(&b, chunk, n);
	if (ferror(f))
		snprintf(je->text, sizeof(je->text), "%s", strerror(errno));
	else if (b.len >= (64u << 20))
		snprintf(je->text, sizeof(je->text), "the manifest is larger than 64 MiB");
	else if (memchr(b.data ? b.data : "", '\0', b.len))
		snprintf(je->text, sizeof(je->text), "the manifest holds a NUL byte");
	else
		m = jsonnum_loads(b.data ? b.data : "", JSON_REJECT_DUPLICATES, je);
	fclose(f);
	buf_release(&b);
	return m;
}

/* The manifest's own fields: its format, its signature (trusted: the key it
 * must be signed with, or NULL), the file format, the range, the rows and
 * the checkpoints, into s.  A problem is a verdict. */
static void check_manifest(struct vstate *s, const json_t *m, const uint8_t *trusted)
{
	const json_t *range = json_object_get(m, "range");
	const char *ff, *from, *to;
	struct error e;
	bool ok = true;

	if (!mstr(m, "format") || strcmp(mstr(m, "format"), MANIFEST_FORMAT) != 0) {
		fail(s, 0, "manifest: 'format' is not %s", MANIFEST_FORMAT);
		return;
	}
	if (manifest_verify(m, trusted, &e) < 0) {
		fail(s, 0, "manifest: %s", e.msg);
		return;
	}
	snprintf(s->v->public_key, sizeof(s->v->public_key), "%s", mstr(m, "public_key"));
	ff = mstr(m, "file_format");
	from = mstr(range, "from");
	to = mstr(range, "to");
	s->manifest_rows = mint(m, "rows", &ok);
	s->checkpoints = json_object_get(json_object_get(m, "row_hash"), "checkpoints");
	if (json_is_integer(json_object_get(range, "account_id")))
		s->account_filter = json_integer_value(json_object_get(range, "account_id"));
	if (!ff || (strcmp(ff, "csv") != 0 && strcmp(ff, "ndjson") != 0) || !from || !to || !ok ||
	    time_parse_rfc3339(from, 0, &s->from_us) < 0 || time_parse_rfc3339(to, 0, &s->to_us) < 0 ||
	    !json_is_array(s->checkpoints) ||
	    json_integer_value(json_object_get(json_object_get(m, "row_hash"), "checkpoint_every")) !=
		    EXPORT_CHECKPOINT_EVERY ||
	    json_array_size(s->checkpoints) != (size_t)(s->manifest_rows / EXPORT_CHECKPOINT_EVERY)) {
		fail(s, 0, "manifest: file_format, range, rows or row_hash checkpoints missing or malformed");
		return;
	}
	s->fmt = strcmp(ff, "csv") == 0 ? EXPORT_CSV : EXPORT_NDJSON;
}

/* The export file as it is read: its lines, their count, size and hash. */
struct vfile {
	struct lreader *lr;
	struct buf rec; /* the current record */
	crypto_generichash_state fh;
	int64_t line_no, bytes;
};

/* Appends one physical line to f->rec, counting and hashing it: as read_line. */
static int vfile_line(struct vfile *f)
{
	size_t before = f->rec.len;
	int got = read_line(f->lr, &f->rec, EXPORT_MAX_RECORD);

	if (got > 0) {
		f->line_no++;
		crypto_generichash_update(&f->fh, (const unsigned char *)f->rec.data + before, f->rec.len - before);
		f->bytes += (int64_t)(f->rec.len - before);
	}
	return got;
}

/* The CSV header row, and h0 into rh.  A problem is a verdict. */
static void check_header(struct vstate *s, struct vfile *f, uint8_t rh[32])
{
	struct buf hdr;
	int got;

	if (s->fmt != EXPORT_CSV) {
		export_file_row_hash_init(rh, s->fmt, NULL, 0);
		return;
	}
	got = vfile_line(f);
	f->line_no = 1;
	buf_init(&hdr);
	export_file_header(&hdr);
	buf_append(&hdr, "\r\n", 2);
	if (got <= 0 || f->rec.len != hdr.len || memcmp(f->rec.data, hdr.data, hdr.len) != 0)
		fail(s, 1, "the header row is not the expected one");
	else
		export_file_row_hash_init(rh, s->fmt, hdr.data, hdr.len - 2);
	buf_release(&hdr);
}

/* The next record into f->rec (empty at the end of the file): one line, or
 * for CSV the lines up to where the quotes balance (a quoted field may hold
 * line breaks).  0, or -1 with err when the file cannot be read; a record
 * too long or unterminated is a verdict. */
static int next_record(struct vstate *s, struct vfile *f, const char *path, struct error *err)
{
	int64_t start = f->line_no + 1;
	size_t quotes_done = 0;

	buf_reset(&f->rec);
	for (;;) {
		size_t before = f->rec.len;
		int got = vfile_line(f);

		if (got == -2)
			return error_set(err, 0, "io", "cannot read '%s': %s", path, strerror(errno));
		if (got == -1) {
			fail(s, start, "record longer than %u bytes", EXPORT_MAX_RECORD);
			return 0;
		}
		if (got == 0 || s->fmt == EXPORT_NDJSON)
			break;
		quotes_done += csv_record_complete(f->rec.data + before, f->rec.len - before) ? 0 : 1;
		if (quotes_done % 2 == 0 || f->rec.data[f->rec.len - 1] != '\n')
			break;
	}
	if (f->rec.len && s->fmt == EXPORT_CSV && quotes_done % 2 == 1)
		fail(s, start, "unterminated quoted field (runs to the end of the file)");
	return 0;
}

int export_verify(const char *path, const uint8_t *trusted, struct export_verdict *v, struct error *err)
{
	char mpath[4200];
	json_error_t je;
	json_t *m = NULL;
	struct vstate s;
	struct vfile f;
	struct csv_fields fields;
	struct buf canon;
	struct export_derived d = {0};
	uint8_t rh[32], fhash[32];
	int rc = -1;

	memset(v, 0, sizeof(*v));
	memset(&s, 0, sizeof(s));
	memset(&f, 0, sizeof(f));
	v->ok = 1;
	s.v = v;
	buf_init(&f.rec);
	buf_init(&canon);
	csv_fields_init(&fields);
	snprintf(mpath, sizeof(mpath), "%s.manifest.json", path);
	m = load_manifest(mpath, &je);
	if (!m) {
		error_set(err, 0, "bad_manifest", "cannot read manifest '%s': %s (line %d)", mpath, je.text, je.line);
		goto done;
	}
	f.lr = calloc(1, sizeof(*f.lr));
	if (!f.lr) {
		error_set(err, 0, "oom", "out of memory");
		goto done;
	}
	f.lr->f = fopen(path, "rb");
	if (!f.lr->f) {
		error_set(err, 0, "io", "cannot open '%s': %s", path, strerror(errno));
		goto done;
	}
	rc = 0; /* from here on, every problem is a verdict */
	s.m = m;
	check_manifest(&s, m, trusted);
	if (!v->ok)
		goto done;
	crypto_generichash_init(&f.fh, NULL, 0, 32);
	check_header(&s, &f, rh);
	while (v->ok) {
		int64_t start = f.line_no + 1;

		if (next_record(&s, &f, path, err) < 0) {
			rc = -1;
			goto done;
		}
		if (!v->ok || f.rec.len == 0)
			break;
		check_record(&s, start, f.rec.data, f.rec.len, rh, &fields, &canon, &d);
	}
	if (!v->ok)
		goto done;
	txn_finish(&s);
	if (!v->ok)
		goto done;
	crypto_generichash_final(&f.fh, fhash, 32);
	check_totals(&s, fhash, f.bytes, rh, f.line_no);
done:
	v->rows = s.rows;
	v->txns = s.txns;
	if (f.lr && f.lr->f)
		fclose(f.lr->f);
	free(f.lr);
	txn_clear(&s.cur);
	free(s.cur.posts);
	export_file_chains_release(&s.cs);
	json_decref(s.first);
	json_decref(s.last);
	export_file_derived_release(&d);
	csv_fields_release(&fields);
	buf_release(&f.rec);
	buf_release(&canon);
	json_decref(m);
	return rc;
}
