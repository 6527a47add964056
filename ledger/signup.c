/* signup.c: see signup.h. */
#include "ledger/signup.h"

#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/journal.h"
#include "ledger/promo.h"

struct signup_job {
	struct ops_ctx *x;
	const struct ops_signup *req;
	struct ops_signup_result *out;
	uint8_t rhash[32];
};

static void new_referral_code(char *out, size_t len)
{
	static const char alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"; /* no 0/O, 1/I */
	uint8_t r[10];

	randombytes_buf(r, sizeof(r));
	for (size_t i = 0; i < 10 && i + 1 < len; i++)
		out[i] = alphabet[r[i] & 31];
	out[len > 10 ? 10 : len - 1] = '\0';
}

/* The outcome of a signup, recorded with it in audit_log so that a replay
 * answers the same (promotion applied or not, and why; balance right after). */
static int signup_record_first(struct ops_ctx *x, struct ops_signup_result *out, struct error *err)
{
	struct ops_balance b;
	char id[32];
	json_t *d;
	char *text;
	int rc;

	if (ops_balance_get(x->conn, out->account_id, 0, &b, err) < 0)
		return -1;
	out->has_first = true;
	/* a new account: its paid balance 0 and at most its signup grant */
	out->first_paid_nanos = money_total_clamp(b.paid_nanos);
	out->first_promo_nanos = money_total_clamp(b.promo_nanos);
	d = json_pack("{s:I,s:I,s:s,s:I,s:I}", "signup_grant_nanos", (json_int_t)out->signup_grant_nanos,
		      "signup_grant_id", (json_int_t)out->signup_grant_id, "note", out->promo_note, "paid_nanos",
		      (json_int_t)out->first_paid_nanos, "promo_nanos", (json_int_t)out->first_promo_nanos);
	text = d ? json_dumps(d, JSON_COMPACT) : NULL;
	json_decref(d);
	if (!text) {
		return error_set(err, 500, "internal", "out of memory");
	}
	snprintf(id, sizeof(id), "account:%" PRId64, out->account_id);
	rc = ops_audit(x->conn, x->actor, "account.signup", id, "signup", text, err);
	free(text);
	return rc;
}

static int signup_read_first(PGconn *c, struct ops_signup_result *out, struct error *err)
{
	char id[32];
	const char *p[1] = {id};
	PGresult *r;
	json_t *d;

	snprintf(id, sizeof(id), "account:%" PRId64, out->account_id);
	r = db_query(c,
		     "SELECT details::text FROM audit_log WHERE target = $1 AND action = 'account.signup'"
		     " ORDER BY audit_id LIMIT 1",
		     1, p, err);
	if (!r)
		return -1;
	d = PQntuples(r) == 1 ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
	PQclear(r);
	if (!d) /* an account created before signups were recorded */
		return 0;
	out->has_first = true;
	out->signup_grant_nanos = json_integer_value(json_object_get(d, "signup_grant_nanos"));
	out->signup_grant_id = json_integer_value(json_object_get(d, "signup_grant_id"));
	snprintf(out->promo_note, sizeof(out->promo_note), "%s",
		 json_string_value(json_object_get(d, "note")) ? json_string_value(json_object_get(d, "note")) : "");
	out->first_paid_nanos = json_integer_value(json_object_get(d, "paid_nanos"));
	out->first_promo_nanos = json_integer_value(json_object_get(d, "promo_nanos"));
	json_decref(d);
	return 0;
}

static int signup_tx(void *arg, struct error *err)
{
	struct signup_job *j = arg;
	PGconn *c = j->x->conn;
	struct ops_account existing;
	struct error e2;
	char hex[65], code[16], inviter[32] = "";
	struct buf ident;
	PGresult *r = NULL;
	int64_t inviter_id = 0;
	int rc = -1;

	buf_init(&ident);
	memset(j->out, 0, sizeof(*j->out));
	/* a replay: same external id */
	if (ops_account_by_external(c, j->req->external_id, &existing, &e2) == 0) {
		const char *p[1] = {j->req->external_id};
		r = db_query(c, "SELECT encode(request_hash, 'hex') FROM customers WHERE external_id = $1", 1, p, err);
		if (!r)
			goto done;
		sodium_bin2hex(hex, sizeof(hex), j->rhash, 32);
		if (strcmp(PQgetvalue(r, 0, 0), hex) != 0) {
			error_set(err, 409, "idempotency_conflict",
				  "external_id '%s' already exists with a different body", j->req->external_id);
			goto done;
		}
		j->out->account_id = existing.account_id;
		snprintf(j->out->referral_code, sizeof(j->out->referral_code), "%s", existing.referral_code);
		j->out->duplicate = true;
		rc = signup_read_first(c, j->out, err);
		goto done;
	} else if (strcmp(e2.code, "not_found") != 0) {
		*err = e2;
		goto done;
	}
	if (j->req->referral_code && *j->req->referral_code) {
		const char *p[1] = {j->req->referral_code};
		r = db_query(c, "SELECT account_id FROM customers WHERE referral_code = $1", 1, p, err);
		if (!r)
			goto done;
		if (PQntuples(r) != 1) {
			error_set(err, 422, "unknown_referral_code", "referral code '%s' does not exist",
				  j->req->referral_code);
			goto done;
		}
		inviter_id = db_int64(r, 0, 0);
		snprintf(inviter, sizeof(inviter), "%" PRId64, inviter_id);
		PQclear(r);
		r = NULL;
	}
	buf_append(&ident, "{", 1);
	for (size_t i = 0; i < j->req->n_identity; i++) {
		if (i)
			buf_append(&ident, ",", 1);
		buf_pg_array_text(&ident, j->req->identity[i]);
	}
	buf_append(&ident, "}", 1);
	sodium_bin2hex(hex, sizeof(hex), j->rhash, 32);
	new_referral_code(code, sizeof(code));
	{
		const char *p[6] = {j->req->external_id, code, inviter[0] ? inviter : NULL,
				    ident.data,          hex,  j->req->tier ? j->req->tier : "default"};
		r = db_query(
			c,
			"INSERT INTO customers (external_id, referral_code, referred_by, identity, request_hash, tier)"
			" VALUES ($1, $2, $3, $4::text[], decode($5, 'hex'), $6) RETURNING account_id",
			6, p, err);
	}
	if (!r)
		goto done;
	j->out->account_id = db_int64(r, 0, 0);
	snprintf(j->out->referral_code, sizeof(j->out->referral_code), "%s", code);
	PQclear(r);
	r = NULL;
	{
		char id[32];
		const char *p[1] = {id};
		snprintf(id, sizeof(id), "%" PRId64, j->out->account_id);
		if (db_exec(c, "INSERT INTO ledger_accounts (type, account_id) VALUES ('customer_paid', $1)", 1, p,
			    err) < 0)
			goto done;
	}
	if (promo_on_signup(j->x, j->out->account_id, inviter_id, j->req->identity, j->req->n_identity,
			    &j->out->signup_grant_id, &j->out->signup_grant_nanos, j->out->promo_note,
			    sizeof(j->out->promo_note), err) < 0 ||
	    signup_record_first(j->x, j->out, err) < 0)
		goto done;
	rc = 0;
done:
	PQclear(r);
	buf_release(&ident);
	return rc;
}

int ops_account_create(struct ops_ctx *x, const struct ops_signup *req, struct ops_signup_result *out,
		       struct error *err)
{
	struct signup_job j = {x, req, out, {0}};
	struct buf b;

	if (!req->external_id || !*req->external_id || strlen(req->external_id) > 200) {
		return error_set(err, 400, "invalid_request", "external_id must be 1 to 200 characters");
	}
	/* the rule of POST /v1/accounts (billing/http/bodies.c), for every
	 * program that signs up: an empty string would be claimed like any
	 * other (CONTRACT.md §4) */
	if (req->n_identity > OPS_IDENTITY_MAX) {
		return error_set(err, 400, "invalid_request", "identity: at most %d strings", OPS_IDENTITY_MAX);
	}
	for (size_t i = 0; i < req->n_identity; i++)
		if (!req->identity[i] || !*req->identity[i] || strlen(req->identity[i]) > OPS_IDENTITY_LEN_MAX) {
			return error_set(err, 400, "invalid_request", "identity strings must be 1 to %d characters",
					 OPS_IDENTITY_LEN_MAX);
		}
	buf_init(&b);
	buf_printf(&b, "signup|%s|%s|%zu", req->external_id, req->referral_code ? req->referral_code : "",
		   req->n_identity);
	for (size_t i = 0; i < req->n_identity; i++) {
		buf_put_u32be(&b, (uint32_t)strlen(req->identity[i]));
		buf_puts(&b, req->identity[i]);
	}
	journal_content_hash(j.rhash, b.data, b.len);
	buf_release(&b);
	return ops_in_tx(x->conn, signup_tx, &j, err);
}
