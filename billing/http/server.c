/* server.c: see server.h. */
#include "billing/http/server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "billing/server_int.h"
#include "billing/maint.h"
#include "billing/authz/authorize.h"
#include "billing/http/bodies.h"
#include "billing/http/conns.h"
#include "billing/usage/dbpool.h"
#include "billing/usage/fastusage.h"
#include "billing/http/framing.h"
#include "billing/infer/inference.h"
#include "billing/usage/stream.h"
#include "billing/http/metrics.h"
#include "billing/authz/rconn.h"
#include "billing/http/tokens.h"
#include "billing/usage/usage.h"
#include "common/buf.h"
#include "common/jsonnum.h"
#include "common/log.h"
#include "common/rslot.h"
#include "common/timeutil.h"
#include "ledger/apikey.h"
#include "ledger/db.h"
#include "ledger/ops.h"
#include "ledger/signup.h"
#include "ledger/promo.h"

#define MAX_BATCH 1000
/* the usage writers' turn (dbpool_opts.turn_key), taken by every instance;
 * 727001 is the migrations' lock (ledger/db.c) */
#define SERVER_TURN_KEY 727002
/* libevent 2.1's EVHTTP_REQ_UNKNOWN_ (http-internal.h, not installed): the
 * command of a request whose method it does not know */
#define HTTP_REQ_UNKNOWN (1 << 15)

/* ---- framing ---- */

/* A body libevent 2.1 does not read: the methods it reads one for are
 * these; for HEAD, TRACE and a method it does not know it hands the request
 * over at the end of the head, and the bytes a Content-Length or chunked
 * encoding announces would be parsed as the next request on the connection
 * (a proxy in front sends them as this request's body: request smuggling). */
static bool body_announced_not_read(struct evhttp_request *req, struct error *err)
{
	const enum evhttp_cmd_type read = EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
					  EVHTTP_REQ_OPTIONS | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH;
	const struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	const char *cl;

	/* before any header look-up: every request of a method it reads (each
	 * authorize) stops here */
	if (evhttp_request_get_command(req) & read)
		return false;
	cl = evhttp_find_header(h, "Content-Length");
	if (!evhttp_find_header(h, "Transfer-Encoding") && (!cl || cl[strspn(cl, "0")] == '\0'))
		return false;
	error_set(err, 400, "invalid_request", "a body on a request of this method is never read: ambiguous framing");
	return true;
}

/* true when req was answered here, 400 and `Connection: close`, because its
 * framing is ambiguous (billing/http/framing.h, or a body announced that
 * would not be read), or because evhttp could not parse it (then it calls
 * back without a URI). */
static bool framing_refuse(struct server *s, struct evhttp_request *req)
{
	struct error err;
	struct rctx *c;

	if (!evhttp_request_get_uri(req))
		error_set(&err, 400, "invalid_request", "malformed request line or headers");
	else if (framing_check(evhttp_request_get_input_headers(req), conns_head_had_nul(s->conns, req), &err) == 0 &&
		 !body_announced_not_read(req, &err))
		return false;
	c = rctx_new(&s->front, s, req, "bad_framing");
	if (!c) {
		evhttp_send_error(req, 400, NULL);
		return true;
	}
	/* evhttp closes the connection once this answer is written: bytes after
	 * the body (another request, by one reading of the framing) are dropped */
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
	reply_error(c, &err);
	return true;
}

/* ---- auth ---- */

enum auth_need { AUTH_NONE, AUTH_GATEWAY, AUTH_ADMIN };

/* 0 ok; else replies 401/403 and returns -1 */
static int check_auth(struct rctx *c, enum auth_need need)
{
	const char *tok;
	size_t len;
	uint8_t h[TOKENS_HASH_LEN];
	bool is_admin, is_gw;

	if (need == AUTH_NONE)
		return 0;
	if (http_bearer(c->req, &tok, &len) < 0) {
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "WWW-Authenticate", "Bearer");
		reply_err(c, 401, "unauthorized", "missing bearer token");
		return -1;
	}
	/* one hash for both sets (each compare stays constant time) */
	tokens_hash(tok, len, h);
	is_admin = tokens_match_hash(c->s->admin, h);
	is_gw = !is_admin && tokens_match_hash(c->s->gw, h);
	if (!is_admin && !is_gw) {
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "WWW-Authenticate", "Bearer");
		reply_err(c, 401, "unauthorized", "unknown bearer token");
		return -1;
	}
	if (need == AUTH_ADMIN && !is_admin) {
		reply_err(c, 403, "forbidden", "this route needs an admin token");
		return -1;
	}
	return 0;
}

/* ---- database jobs of the HTTP API ---- */

enum op { OP_ACCOUNT_CREATE, OP_ACCOUNT_GET, OP_VERIFY, OP_KEY_CREATE, OP_TOPUP, OP_GRANT, OP_READY };

struct hjob {
	struct dbjob job;
	struct rctx *rc;
	enum op op;
	json_t *body; /* owned */
	int64_t id;
	int out_status;
	json_t *out; /* owned, built on the pool thread */
	struct server *s;
};

/* paid and promotional balance; the held amount is filled in on the event
 * loop (answer_with_held) just before the answer is sent */
static json_t *balance_obj(const struct ops_balance *b)
{
	json_t *o = json_pack("{s:o,s:o}", "paid_nanos", jsonnum_total(b->paid_nanos), "promo_nanos",
			      jsonnum_total(b->promo_nanos));

	balance_set_held(o, false, 0);
	return o;
}

static json_t *grants_arr(const struct ops_balance *b)
{
	json_t *a = json_array();

	for (size_t i = 0; i < b->n_grants; i++) {
		const struct ops_grant_info *g = &b->grants[i];
		char exp[40];
		if (g->expires_at_us)
			time_format_rfc3339(g->expires_at_us, exp, sizeof(exp));
		json_array_append_new(a, json_pack("{s:I,s:s,s:I,s:o,s:i}", "grant_id", (json_int_t)g->grant_id, "kind",
						   g->kind, "remaining_nanos", (json_int_t)g->remaining_nanos,
						   "expires_at", g->expires_at_us ? json_string(exp) : json_null(),
						   "priority", g->priority));
	}
	return a;
}

static void run_account_create(struct hjob *j, struct ops_ctx *x)
{
	struct ops_signup req;
	struct ops_signup_result res;
	struct ops_balance b;
	const char *idents[16];
	json_t *ids = json_object_get(j->body, "identity"), *v;
	size_t i;

	memset(&req, 0, sizeof(req));
	req.external_id = json_string_value(json_object_get(j->body, "external_id"));
	req.referral_code = json_string_value(json_object_get(j->body, "referral_code"));
	json_array_foreach(ids, i, v) idents[i] = json_string_value(v);
	req.identity = idents;
	req.n_identity = json_array_size(ids);
	if (ops_account_create(x, &req, &res, &j->job.err) < 0)
		return;
	if (res.has_first) {
		/* the balance right after the signup (also on a replay): a new
		 * account holds nothing */
		b.paid_nanos = res.first_paid_nanos;
		b.promo_nanos = res.first_promo_nanos;
	} else if (ops_balance_get(x->conn, res.account_id, 0, &b, &j->job.err) < 0) {
		return;
	}
	j->out_status = res.duplicate ? 200 : 201;
	j->out = json_pack("{s:I,s:s,s:o,s:b}", "account_id", (json_int_t)res.account_id, "referral_code",
			   res.referral_code, "balance", balance_obj(&b), "duplicate", res.duplicate);
	if (res.has_first)
		balance_set_held(json_object_get(j->out, "balance"), true, 0);
	if (res.has_first)
		json_object_set_new(j->out, "promotion",
				    json_pack("{s:b,s:I,s:o,s:s}", "applied", res.signup_grant_nanos > 0,
					      "amount_nanos", (json_int_t)res.signup_grant_nanos, "grant_id",
					      res.signup_grant_id ? json_integer(res.signup_grant_id) : json_null(),
					      "note", res.promo_note));
}

static void run_account_get(struct hjob *j, struct ops_ctx *x)
{
	struct ops_account a;
	struct ops_balance b;
	json_t *limits = NULL;

	if (ops_account_get(x->conn, j->id, &a, &j->job.err) < 0 ||
	    ops_balance_get(x->conn, j->id, 0, &b, &j->job.err) < 0 ||
	    ops_limits_view(x->conn, j->id, a.tier, &limits, &j->job.err) < 0)
		return;
	j->out_status = 200;
	j->out = json_pack("{s:I,s:s,s:s,s:b,s:s,s:s,s:o,s:o,s:o}", "account_id", (json_int_t)a.account_id,
			   "external_id", a.external_id, "status", a.status, "verified", a.verified, "tier", a.tier,
			   "referral_code", a.referral_code, "balance", balance_obj(&b), "grants", grants_arr(&b),
			   "limits", limits);
}

static void run_verify(struct hjob *j, struct ops_ctx *x)
{
	int64_t grant_id, nanos;
	char note[160] = "";

	if (promo_verify(x, j->id, !j->s->referral_on_topup, &grant_id, &nanos, note, sizeof(note), &j->job.err) < 0)
		return;
	j->out_status = 200;
	j->out = json_pack("{s:I,s:b,s:{s:b,s:I,s:s}}", "account_id", (json_int_t)j->id, "verified", 1, "referral",
			   "rewarded", grant_id != 0, "amount_nanos", (json_int_t)nanos, "note", note);
}

static void run_key_create(struct hjob *j, struct ops_ctx *x)
{
	char key[APIKEY_LEN + 1];
	const char *name = json_string_value(json_object_get(j->body, "name"));
	int64_t key_id;

	if (apikey_create(x->conn, j->s->pepper, j->id, name, "gateway", key, &key_id, &j->job.err) < 0)
		return;
	j->out_status = 201;
	j->out = json_pack("{s:I,s:I,s:s,s:s}", "key_id", (json_int_t)key_id, "account_id", (json_int_t)j->id, "name",
			   name ? name : "", "api_key", key);
	sodium_memzero(key, sizeof(key));
}

static void run_topup(struct hjob *j, struct ops_ctx *x)
{
	struct ops_balance b;
	bool dup;
	int64_t amount = json_integer_value(json_object_get(j->body, "amount_nanos"));
	const char *ref = json_string_value(json_object_get(j->body, "payment_ref"));

	if (ops_topup(x, j->id, amount, ref, &b, &dup, &j->job.err) < 0)
		return;
	/* also on a replay: a first attempt may have committed the top-up and
	 * failed before the reward (promo_on_qualify is idempotent) */
	if (j->s->referral_on_topup) {
		int64_t grant_id, nanos;
		char note[160];
		if (promo_after_topup(x, j->id, &grant_id, &nanos, note, sizeof(note), &j->job.err) < 0)
			return;
	}
	j->out_status = dup ? 200 : 201;
	j->out = json_pack("{s:I,s:s,s:I,s:o,s:b}", "account_id", (json_int_t)j->id, "payment_ref", ref, "amount_nanos",
			   (json_int_t)amount, "balance", balance_obj(&b), "duplicate", dup);
}

static void run_grant(struct hjob *j, struct ops_ctx *x)
{
	struct ops_grant_req g;
	struct ops_grant_info info;
	const char *exp = json_string_value(json_object_get(j->body, "expires_at"));
	json_t *prio = json_object_get(j->body, "priority");
	char e[40];
	bool dup;

	memset(&g, 0, sizeof(g));
	g.account_id = j->id;
	g.amount_nanos = json_integer_value(json_object_get(j->body, "amount_nanos"));
	g.reason = json_string_value(json_object_get(j->body, "reason"));
	g.kind = "admin";
	g.priority = prio ? (int)json_integer_value(prio) : 100;
	g.idempotency_key = json_string_value(json_object_get(j->body, "idempotency_key"));
	if (exp)
		(void)!time_parse_rfc3339(exp, 1, &g.expires_at_us); /* validated on the loop */
	x->actor = json_string_value(json_object_get(j->body, "operator"));
	if (ops_grant(x, &g, &info, &dup, &j->job.err) < 0)
		return;
	if (info.expires_at_us)
		time_format_rfc3339(info.expires_at_us, e, sizeof(e));
	j->out_status = dup ? 200 : 201;
	j->out = json_pack("{s:I,s:I,s:s,s:I,s:I,s:o,s:i,s:b}", "grant_id", (json_int_t)info.grant_id, "account_id",
			   (json_int_t)j->id, "kind", info.kind, "amount_nanos", (json_int_t)info.amount_nanos,
			   "remaining_nanos", (json_int_t)info.remaining_nanos, "expires_at",
			   info.expires_at_us ? json_string(e) : json_null(), "priority", info.priority, "duplicate",
			   dup);
}

static void hjob_run(struct dbjob *job, PGconn *conn, const char *writer)
{
	struct hjob *j = (struct hjob *)job;
	struct ops_ctx x = {conn, writer, "gateway", 0, j->s->max_topup_nanos, j->s->max_grant_nanos};

	if (!conn) {
		error_set(&j->job.err, 503, "unavailable", "the ledger database is unreachable");
		return;
	}
	switch (j->op) {
	case OP_ACCOUNT_CREATE:
		run_account_create(j, &x);
		break;
	case OP_ACCOUNT_GET:
		run_account_get(j, &x);
		break;
	case OP_VERIFY:
		run_verify(j, &x);
		break;
	case OP_KEY_CREATE:
		run_key_create(j, &x);
		break;
	case OP_TOPUP:
		run_topup(j, &x);
		break;
	case OP_GRANT:
		x.actor = "admin";
		run_grant(j, &x);
		break;
	case OP_READY:
		if (db_exec(conn, "SELECT 1", 0, NULL, &j->job.err) == 0)
			j->out_status = 200;
		break;
	}
	if (!j->out && !j->job.err.status && j->op != OP_READY)
		error_set(&j->job.err, 500, "internal", "no answer");
	if (db_conn_broken(conn) && j->job.err.status)
		error_set(&j->job.err, 503, "unavailable", "the ledger database connection was lost");
}

static void hjob_free(struct hjob *j)
{
	json_decref(j->body);
	json_decref(j->out);
	free(j);
}

static void hjob_reply_held(void *arg, bool known, int64_t held)
{
	struct hjob *j = arg;

	balance_set_held(json_object_get(j->out, "balance"), known, held);
	reply(j->rc, j->out_status, j->out);
	j->out = NULL;
	hjob_free(j);
}

/* the answer's balance gets the account's live held amount, then is sent */
static void hjob_reply_later(void *arg)
{
	struct hjob *j = arg;
	json_t *bal = json_object_get(j->out, "balance");
	json_t *acct = json_object_get(j->out, "account_id");

	if (bal && !json_is_true(json_object_get(bal, "held_known")) && json_is_integer(acct))
		authz_held(j->s, json_integer_value(acct), hjob_reply_held, j);
	else
		hjob_reply_held(j, json_is_true(json_object_get(bal, "held_known")),
				json_integer_value(json_object_get(bal, "held_nanos")));
}

static void hjob_done(struct dbjob *job)
{
	struct hjob *j = (struct hjob *)job;

	if (j->op == OP_READY) {
		bool redis = j->s->redis && rconn_ready(j->s->redis); /* NULL when finished during shutdown */
		bool ok = j->out_status == 200 && redis;
		reply(j->rc, ok ? 200 : 503,
		      json_pack("{s:s,s:b,s:b}", "status", ok ? "ready" : "unavailable", "postgresql",
				j->out_status == 200, "redis", redis));
	} else if (j->job.err.status) {
		struct error e = j->job.err;
		if (e.code[0] >= '0' && e.code[0] <= '9') {
			/* a raw SQLSTATE: answer with a stable code */
			bool transient = strncmp(e.code, "57", 2) == 0 || strncmp(e.code, "08", 2) == 0 ||
					 strncmp(e.code, "53", 2) == 0 || strncmp(e.code, "40", 2) == 0;
			log_error("database error", "code=%s error=\"%s\"", e.code, e.msg);
			error_set(&e, transient ? 503 : 500, transient ? "unavailable" : "internal", "%s",
				  transient ? "the database is busy or away; retry" : "internal error");
		}
		reply_error(j->rc, &e);
	} else if (j->op == OP_ACCOUNT_GET || j->op == OP_ACCOUNT_CREATE) {
		hjob_reply_later(j);
		return;
	} else if (j->op == OP_TOPUP || j->op == OP_GRANT) {
		/* the balance grew: drop the account's mirror before answering, so
		 * the caller's next authorize sees the new balance (NOTIFY would
		 * arrive a few milliseconds later) */
		authz_forget_then(j->s, j->id, hjob_reply_later, j);
		return;
	} else {
		reply(j->rc, j->out_status, j->out);
		j->out = NULL;
	}
	hjob_free(j);
}

static void submit_hjob(struct rctx *c, enum op op, json_t *body, int64_t id)
{
	struct hjob *j = calloc(1, sizeof(*j));

	if (!j) {
		json_decref(body);
		reply_err(c, 503, "unavailable", "out of memory");
		return;
	}
	j->job.run = hjob_run;
	j->job.done = hjob_done;
	j->rc = c;
	j->op = op;
	j->body = body;
	j->id = id;
	j->s = c->s;
	if (dbpool_submit(c->s->pool, &j->job) < 0) {
		json_decref(body);
		free(j);
		reply_err(c, 503, "unavailable", "the request queue is full");
	}
}

/* ---- handlers ---- */

static void h_accounts_create(struct rctx *c)
{
	struct error err;
	json_t *b = read_body(c, &err);

	if (!b)
		return reply_error(c, &err);
	if (signup_body_check(b, &err) < 0) {
		json_decref(b);
		return reply_error(c, &err);
	}
	submit_hjob(c, OP_ACCOUNT_CREATE, b, 0);
}

static void h_keys(struct rctx *c)
{
	struct error err;
	json_t *b = read_body(c, &err);

	if (!b)
		return reply_error(c, &err);
	if (want_int(b, "account_id", true, 1, INT64_MAX, &err) < 0 || want_string(b, "name", false, 200, &err) < 0) {
		json_decref(b);
		return reply_error(c, &err);
	}
	submit_hjob(c, OP_KEY_CREATE, b, json_integer_value(json_object_get(b, "account_id")));
}

static void h_topups(struct rctx *c)
{
	struct error err;
	json_t *b = read_body(c, &err);

	if (!b)
		return reply_error(c, &err);
	if (want_int(b, "account_id", true, 1, INT64_MAX, &err) < 0 ||
	    want_int(b, "amount_nanos", true, 1, INT64_MAX / 4, &err) < 0 ||
	    want_string(b, "payment_ref", true, 200, &err) < 0) {
		json_decref(b);
		return reply_error(c, &err);
	}
	submit_hjob(c, OP_TOPUP, b, json_integer_value(json_object_get(b, "account_id")));
}

static void h_admin_grants(struct rctx *c)
{
	struct error err;
	json_t *b = read_body(c, &err);
	const char *exp;
	int64_t t;

	if (!b)
		return reply_error(c, &err);
	if (want_int(b, "account_id", true, 1, INT64_MAX, &err) < 0 ||
	    want_int(b, "amount_nanos", true, 1, INT64_MAX / 4, &err) < 0 ||
	    want_string(b, "reason", true, 500, &err) < 0 || want_string(b, "operator", true, 200, &err) < 0 ||
	    want_string(b, "expires_at", false, 64, &err) < 0 || want_int(b, "priority", false, 0, 1000000, &err) < 0 ||
	    want_string(b, "idempotency_key", false, 200, &err) < 0)
		goto bad;
	exp = json_string_value(json_object_get(b, "expires_at"));
	if (exp && time_parse_rfc3339(exp, 1, &t) < 0) {
		error_set(&err, 400, "invalid_request", "field 'expires_at' must be an RFC 3339 time");
		goto bad;
	}
	/* already past: the credit would go straight to breakage */
	if (exp && t <= time_now_us()) {
		error_set(&err, 422, "invalid_expires_at", "field 'expires_at' is already past");
		goto bad;
	}
	return submit_hjob(c, OP_GRANT, b, json_integer_value(json_object_get(b, "account_id")));
bad:
	json_decref(b);
	reply_error(c, &err);
}

/* usage */

/* at least one writer holds a connection (as one pool of writer threads did) */
static bool writers_connected(struct server *s)
{
	for (int w = 0; w < s->n_writers; w++)
		if (dbpool_connected(s->writers[w]))
			return true;
	return false;
}

static int64_t writers_depth(struct server *s)
{
	int64_t d = 0;

	for (int w = 0; w < s->n_writers; w++)
		d += (int64_t)dbpool_depth(s->writers[w]);
	return d;
}

struct ubatch {
	struct rctx *rc;
	size_t n, pending;
	struct usage_item *items;
	char **results; /* JSON text of each answer, in order */
};

/* A usage answer's balance with the account's live held amount: the item's
 * response text is rewritten, then done(it) runs.  The held amount is read
 * after the settle was sent (same connection, so after the hold's release). */
static void usage_held_cb(void *arg, bool known, int64_t held)
{
	struct usage_item *it = arg;
	json_t *j;
	char *text;

	/* a fresh charge: its text is rewritten without jansson (usage.c) */
	if (usage_answer_held(it, known, held) == 0) {
		it->job.done(&it->job);
		return;
	}
	j = jsonnum_loads(it->response, 0, NULL);
	balance_set_held(json_object_get(j, "balance"), known, held);
	text = j ? jsonnum_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (text) {
		free(it->response);
		it->response = text;
	}
	it->job.done(&it->job);
}

static void usage_answer_with_held(struct server *s, struct usage_item *it, dbjob_done_fn done)
{
	it->job.done = done;
	authz_settle_held(s, it, usage_held_cb, it);
}

static void usage_single_reply(struct dbjob *job)
{
	struct usage_item *it = (struct usage_item *)job;

	reply_text(it->owner, 200, it->response, strlen(it->response));
	usage_item_release(it);
	free(it);
}

static void usage_single_done(struct dbjob *job)
{
	struct usage_item *it = (struct usage_item *)job;
	struct rctx *c = it->owner;

	if (!it->job.err.status)
		return usage_answer_with_held(c->s, it, usage_single_reply);
	/* a lost connection may have committed it: the mirror must not miss that */
	if (it->job.err.status == 503)
		authz_forget_announce(c->s, it->account_id);
	reply_error(c, &it->job.err);
	usage_item_release(it);
	free(it);
}

/* The request's body, when it is small enough to parse (read_body answers
 * the others): fastusage.h's plain bodies are taken from it. */
static const char *plain_body(struct rctx *c, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(c->req);

	*len = evbuffer_get_length(in);
	return *len > 0 && *len <= HTTP_MAX_BODY ? (const char *)evbuffer_pullup(in, -1) : NULL;
}

static void h_usage(struct rctx *c)
{
	struct error err;
	struct usage_item *it = calloc(1, sizeof(*it));
	int64_t now = time_now_us();
	size_t len;
	const char *body = plain_body(c, &len);

	if (!it)
		return reply_err(c, 503, "unavailable", "out of memory");
	/* the plain body of gateway traffic: no jansson tree (fastusage.h) */
	if (!body || !fastusage_parse(body, len, now, c->s->pepper, &it->r)) {
		json_t *b = read_body(c, &err);
		if (!b || usage_parse(b, now, c->s->pepper, &it->r, &err) < 0) {
			json_decref(b);
			free(it);
			return reply_error(c, &err);
		}
		json_decref(b);
	}
	usage_body_hash(&it->r, it->body_hash);
	it->job.done = usage_single_done;
	it->owner = c;
	if (dbpool_submit(server_single_writer(c->s, &it->r), &it->job) < 0) {
		free(it);
		return reply_err(c, 503, "unavailable", "the usage queue is full");
	}
}

static void ubatch_finish(struct ubatch *ub)
{
	struct buf out;

	buf_init(&out);
	buf_puts(&out, "{\"results\":[");
	for (size_t i = 0; i < ub->n; i++) {
		if (i)
			buf_append(&out, ",", 1);
		buf_puts(&out, ub->results[i] ? ub->results[i] : "null");
		free(ub->results[i]);
		usage_item_release(&ub->items[i]);
	}
	buf_puts(&out, "]}");
	reply_text(ub->rc, 200, out.data, out.len);
	buf_release(&out);
	free(ub->results);
	free(ub->items);
	free(ub);
}

static void usage_batch_item_answered(struct dbjob *job)
{
	struct usage_item *it = (struct usage_item *)job;
	struct ubatch *ub = it->owner;

	ub->results[it->index] = it->response;
	it->response = NULL;
	if (--ub->pending == 0)
		ubatch_finish(ub);
}

static void usage_batch_item_done(struct dbjob *job)
{
	struct usage_item *it = (struct usage_item *)job;
	struct ubatch *ub = it->owner;
	json_t *res;

	if (!it->job.err.status)
		return usage_answer_with_held(ub->rc->s, it, usage_batch_item_answered);
	if (it->job.err.status == 503)
		authz_forget_announce(ub->rc->s, it->account_id);
	res = error_json(&it->job.err);
	json_object_set_new(json_object_get(res, "error"), "status", json_integer(it->job.err.status));
	ub->results[it->index] = jsonnum_dumps(res, JSON_COMPACT);
	json_decref(res);
	if (--ub->pending == 0)
		ubatch_finish(ub);
}

static void h_usage_batch(struct rctx *c)
{
	struct error err;
	json_t *b = NULL, *recs = NULL;
	struct ubatch *ub;
	struct dbjob **jobs, **mine;
	int64_t now = time_now_us();
	size_t n, nj = 0, took, len;
	const char *body = plain_body(c, &len);
	/* every record plain and valid: no jansson tree (fastusage.h) */
	struct usage_req *fast = body ? malloc(MAX_BATCH * sizeof(*fast)) : NULL;

	if (!fast || !fastusage_parse_batch(body, len, now, c->s->pepper, fast, MAX_BATCH, &n)) {
		free(fast);
		fast = NULL;
		if (!(b = read_body(c, &err)))
			return reply_error(c, &err);
		recs = json_object_get(b, "records");
		if (!json_is_array(recs) || json_array_size(recs) == 0 || json_array_size(recs) > MAX_BATCH) {
			json_decref(b);
			return reply_err(c, 400, "invalid_request",
					 "field 'records' must be an array of 1 to 1000 usage bodies");
		}
		n = json_array_size(recs);
	}
	ub = calloc(1, sizeof(*ub));
	jobs = calloc(n, sizeof(*jobs));
	mine = calloc(n, sizeof(*mine));
	if (ub) {
		ub->items = calloc(n, sizeof(*ub->items));
		ub->results = calloc(n, sizeof(*ub->results));
	}
	if (!ub || !jobs || !mine || !ub->items || !ub->results) {
		if (ub) {
			free(ub->items);
			free(ub->results);
		}
		free(ub);
		free(jobs);
		free(mine);
		free(fast);
		json_decref(b);
		return reply_err(c, 503, "unavailable", "out of memory");
	}
	ub->rc = c;
	ub->n = n;
	ub->pending = n + 1; /* +1 while submitting */
	for (size_t i = 0; i < n; i++) {
		struct usage_item *it = &ub->items[i];
		it->owner = ub;
		it->index = i;
		it->job.done = usage_batch_item_done;
		if (fast) {
			it->r = fast[i];
		} else if (usage_parse(json_array_get(recs, i), now, c->s->pepper, &it->r, &it->job.err) < 0) {
			usage_batch_item_done(&it->job);
			continue;
		}
		usage_body_hash(&it->r, it->body_hash);
		jobs[nj++] = &it->job;
	}
	free(fast);
	json_decref(b);
	/* per writer, one lock and one wake-up for its share of the request: it
	 * takes it in batch_max slices */
	for (int w = 0; w < c->s->n_writers; w++) {
		struct dbpool *p = c->s->writers[w];
		size_t m = 0;
		for (size_t k = 0; k < nj; k++)
			if (server_writer(c->s, &((struct usage_item *)jobs[k])->r) == p)
				mine[m++] = jobs[k];
		took = dbpool_submit_many(p, mine, m);
		for (size_t k = took; k < m; k++) {
			error_set(&mine[k]->err, 503, "unavailable", "the usage queue is full");
			usage_batch_item_done(mine[k]);
		}
	}
	free(jobs);
	free(mine);
	if (--ub->pending == 0)
		ubatch_finish(ub);
}

/* ---- router ---- */

static int parse_id(const char *s, size_t len, int64_t *out)
{
	int64_t v = 0;

	if (len == 0 || len > 18)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return v > 0 ? 0 : -1;
}

/* ---- routes ---- */

static void r_healthz(struct rctx *c)
{
	reply(c, 200, json_pack("{s:s}", "status", "ok"));
}

static void r_readyz(struct rctx *c)
{
	struct server *s = c->s;

	if (s->draining || !rconn_ready(s->redis) || authz_redis_foreign() || !writers_connected(s))
		return reply(c, 503,
			     json_pack("{s:s,s:b,s:b}", "status", "unavailable", "postgresql", writers_connected(s),
				       "redis", rconn_ready(s->redis) && !authz_redis_foreign()));
	submit_hjob(c, OP_READY, NULL, 0);
}

static void r_metrics(struct rctx *c)
{
	struct server *s = c->s;
	struct buf b;

	buf_init(&b);
	metrics_gauge(s->metrics, "billing_usage_queue_depth", writers_depth(s));
	metrics_gauge(s->metrics, "billing_db_queue_depth", (int64_t)dbpool_depth(s->pool));
	metrics_gauge(s->metrics, "billing_inflight_requests", s->front.inflight);
	metrics_gauge(s->metrics, "billing_http_connections", conns_open(s->conns));
	inference_publish(s->inf);
	metrics_render(s->metrics, &b);
	reply_typed(c, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
	buf_release(&b);
}

static void r_account(struct rctx *c)
{
	submit_hjob(c, OP_ACCOUNT_GET, NULL, c->id);
}

static void r_verify(struct rctx *c)
{
	submit_hjob(c, OP_VERIFY, NULL, c->id);
}

/* Every route on one line: method, path (also the metrics label; {id} is
 * a positive integer segment), who may call it, whether it answers 503
 * while billingd drains, and its handler.  docs/openapi.yaml documents
 * exactly these (tests/integration/test_openapi.py reads this table). */
static const struct route {
	enum evhttp_cmd_type method;
	const char *path;
	enum auth_need auth;
	bool drains;
	void (*run)(struct rctx *c);
} routes[] = {
	{EVHTTP_REQ_GET, "/healthz", AUTH_NONE, false, r_healthz},
	{EVHTTP_REQ_GET, "/readyz", AUTH_NONE, false, r_readyz},
	{EVHTTP_REQ_GET, "/metrics", AUTH_NONE, false, r_metrics},
	{EVHTTP_REQ_POST, "/v1/authorize", AUTH_GATEWAY, true, h_authorize},
	{EVHTTP_REQ_POST, "/v1/tokenize", AUTH_GATEWAY, true, h_tokenize},
	{EVHTTP_REQ_POST, "/internal/v1/chat/completions", AUTH_NONE, true, h_chat}, /* its bearer: an API key */
	{EVHTTP_REQ_GET, "/internal/v1/models", AUTH_NONE, false, h_models},
	{EVHTTP_REQ_POST, "/v1/usage", AUTH_GATEWAY, true, h_usage},
	{EVHTTP_REQ_POST, "/v1/usage/batch", AUTH_GATEWAY, true, h_usage_batch},
	{EVHTTP_REQ_POST, "/v1/accounts", AUTH_GATEWAY, true, h_accounts_create},
	{EVHTTP_REQ_GET, "/v1/accounts/{id}", AUTH_GATEWAY, true, r_account},
	{EVHTTP_REQ_POST, "/v1/accounts/{id}/verify", AUTH_GATEWAY, true, r_verify},
	{EVHTTP_REQ_POST, "/v1/keys", AUTH_GATEWAY, true, h_keys},
	{EVHTTP_REQ_POST, "/v1/topups", AUTH_GATEWAY, true, h_topups},
	{EVHTTP_REQ_POST, "/v1/admin/grants", AUTH_ADMIN, true, h_admin_grants},
};

/* path matches pattern; its {id} segment (if any) into *id */
static bool route_match(const char *pattern, const char *path, int64_t *id)
{
	const char *hole = strstr(pattern, "{id}");
	size_t head, tail, n = strlen(path);
	const char *seg;

	*id = 0;
	if (!hole)
		return strcmp(pattern, path) == 0;
	head = (size_t)(hole - pattern);
	tail = strlen(hole + 4);
	if (n <= head + tail || strncmp(path, pattern, head) != 0 || strcmp(path + n - tail, hole + 4) != 0)
		return false;
	seg = path + head;
	if (memchr(seg, '/', n - head - tail))
		return false;
	return parse_id(seg, n - head - tail, id) == 0;
}

static void gen_cb(struct evhttp_request *req, void *arg)
{
	struct server *s = arg;
	const char *uri = evhttp_request_get_uri(req);
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	char path[512];
	size_t plen;
	struct rctx *c;
	int64_t id;

	conns_request_read(s->conns, req);
	/* ambiguous framing, or no URI (libevent calls back without one after
	 * some parse errors and expects an answer): 400 and close */
	if (framing_refuse(s, req))
		return;
	plen = strcspn(uri, "?");
	if (plen >= sizeof(path))
		plen = sizeof(path) - 1;
	memcpy(path, uri, plen);
	path[plen] = '\0';
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const struct route *r = &routes[i];

		if (!route_match(r->path, path, &id))
			continue;
		c = rctx_new(&s->front, s, req, r->path);
		if (!c) {
			evhttp_send_error(req, 503, "out of memory");
			return;
		}
		if (m != r->method) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
					  r->method == EVHTTP_REQ_GET ? "GET" : "POST");
			return reply_err(c, 405, "method_not_allowed", "method not allowed");
		}
		if (check_auth(c, r->auth) < 0)
			return;
		if (s->draining && r->drains)
			return reply_err(c, 503, "unavailable", "shutting down");
		c->id = id;
		return r->run(c);
	}
	c = rctx_new(&s->front, s, req, "other");
	if (!c) {
		evhttp_send_error(req, 404, NULL);
		return;
	}
	if (strncmp(path, "/v1/admin/", 10) == 0 && check_auth(c, AUTH_ADMIN) < 0)
		return;
	if (strncmp(path, "/v1/", 4) == 0 && check_auth(c, AUTH_GATEWAY) < 0)
		return;
	reply_err(c, 404, "not_found", "no such route");
}

/* ---- lifecycle ---- */

static void gauge_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	(void)fd, (void)what;
	metrics_gauge(s->metrics, "billing_usage_queue_depth", writers_depth(s));
	if (memtrim_tick(&s->trim, s->front.started, time_now_us())) {
		long before, after;
		memtrim_run(&before, &after);
		metrics_count(s->metrics, "billing_memory_trims_total", 1);
		log_info("memory given back after a surge", "rss_before_kb=%ld rss_after_kb=%ld", before, after);
	}
}

/* One token file into *slot.  At start (*slot NULL) a refused file is an
 * error; on reload a refused file, or one without a single token, keeps
 * the old set (CONTRACT.md §1) and is logged.  Returns 0 or -1. */
static int load_token_file(struct tokens **slot, const char *key, const char *path, struct error *err)
{
	struct tokens *t = tokens_load(path, err);

	if (!t) {
		if (*slot)
			log_error("token file refused, keeping the old tokens", "key=%s error=\"%s\"", key, err->msg);
		return -1;
	}
	if (tokens_count(t) == 0 && *slot) {
		error_set(err, 0, "config", "token file '%s' holds no token", path);
		log_error("token file holds no token, keeping the old tokens", "key=%s file=\"%s\"", key, path);
		tokens_free(t);
		return -1;
	}
	if (tokens_count(t) == 0)
		log_warn("token file holds no token: every call with these tokens gets 401", "key=%s file=\"%s\"", key,
			 path);
	tokens_free(*slot);
	*slot = t;
	return 0;
}

static int load_tokens(struct server *s, struct error *err)
{
	/* each file on its own: a bad admin file does not stop a gateway rotation */
	struct error second = {0};
	int a = load_token_file(&s->gw, "gateway_tokens_file", config_get(s->cfg, "gateway_tokens_file"), err);
	int b = load_token_file(&s->admin, "admin_tokens_file", config_get(s->cfg, "admin_tokens_file"),
				a < 0 ? &second : err);

	return a < 0 || b < 0 ? -1 : 0;
}

void server_reload(struct server *s)
{
	struct error err;

	if (load_tokens(s, &err) < 0)
		log_warn("token reload incomplete", "gateway=%zu admin=%zu", tokens_count(s->gw),
			 tokens_count(s->admin));
	else
		log_info("tokens reloaded", "gateway=%zu admin=%zu", tokens_count(s->gw), tokens_count(s->admin));
}

struct server *server_new(struct event_base *base, struct config *cfg, struct error *err)
{
	struct server *s = calloc(1, sizeof(*s));
	int64_t batch_max, batch_wait, queue_max, pg_to, standby_ms, redis_to, idle, maxconn, reqto, expiry_s, writers;
	const char *listen = config_get(cfg, "listen"), *colon = strrchr(listen, ':');
	char host[256], writer[160];
	struct timeval tv = {1, 0};

	if (!s)
		return NULL;
	s->base = base;
	s->cfg = cfg;
	s->single_writer = config_get_bool(cfg, "single_writer");
	s->referral_on_topup = strcmp(config_get(cfg, "referral_trigger"), "topup") == 0;
	if (config_int(cfg, "batch_max", &batch_max, err) < 0 ||
	    config_int(cfg, "batch_wait_us", &batch_wait, err) < 0 ||
	    config_int(cfg, "queue_max", &queue_max, err) < 0 || config_int(cfg, "pg_timeout_ms", &pg_to, err) < 0 ||
	    config_int(cfg, "pg_standby_confirm_ms", &standby_ms, err) < 0 ||
	    config_int(cfg, "redis_timeout_ms", &redis_to, err) < 0 ||
	    config_int(cfg, "idle_timeout_s", &idle, err) < 0 ||
	    config_int(cfg, "max_connections", &maxconn, err) < 0 ||
	    config_int(cfg, "request_timeout_s", &reqto, err) < 0 ||
	    config_int(cfg, "expiry_interval_s", &expiry_s, err) < 0 ||
	    config_int(cfg, "writer_threads", &writers, err) < 0)
		goto fail;
	if (config_get_money(cfg, "max_topup", &s->max_topup_nanos, err) < 0 ||
	    config_get_money(cfg, "max_grant", &s->max_grant_nanos, err) < 0)
		goto fail;
	db_set_standby_confirm((int)standby_ms);
	if (load_tokens(s, err) < 0)
		goto fail;
	if (apikey_load_pepper(config_get(cfg, "key_pepper_file"), 1, s->pepper, err) < 0)
		goto fail;
	{
		struct rslot_addr seeds[RSLOT_MAX_SEEDS];
		if (rslot_parse_seeds(config_get(cfg, "redis"), seeds, RSLOT_MAX_SEEDS, err) < 0)
			goto fail;
	}
	s->metrics = metrics_new();
	s->front.metrics = s->metrics;
	s->uw = usage_writer_new(s->metrics, config_get(cfg, "redis"));
	if (!s->metrics || !s->uw) {
		error_set(err, 0, "oom", "out of memory");
		goto fail;
	}
	for (int w = 0; w < (int)writers; w++) {
		/* each writer has its own chain: instance_id, instance_id.t1, ...;
		 * the queue bound is shared out */
		struct dbpool_opts o = {"writer",
					config_get(cfg, "pg"),
					writer,
					1,
					(size_t)((queue_max + writers - 1) / writers),
					(int)pg_to,
					usage_write_batch,
					s->uw,
					(size_t)batch_max,
					batch_wait,
					config_get_bool(cfg, "writer_turns") ? SERVER_TURN_KEY : 0};
		if (w == 0)
			snprintf(writer, sizeof(writer), "%s", config_get(cfg, "instance_id"));
		else
			snprintf(writer, sizeof(writer), "%s.t%d", config_get(cfg, "instance_id"), w);
		s->writers[w] = dbpool_new(base, &o);
		if (!s->writers[w]) {
			error_set(err, 0, "oom", "cannot start pools");
			goto fail;
		}
		s->n_writers = w + 1;
	}
	s->single_max = (size_t)batch_max < (size_t)((queue_max + writers - 1) / writers)
				? (size_t)batch_max
				: (size_t)((queue_max + writers - 1) / writers);
	snprintf(writer, sizeof(writer), "%s.api", config_get(cfg, "instance_id"));
	{
		struct dbpool_opts o = {"api", config_get(cfg, "pg"), writer, 2, 4096, (int)pg_to, NULL, NULL, 0, 0, 0};
		s->pool = dbpool_new(base, &o);
	}
	s->redis = rconn_new(base, config_get(cfg, "redis"), (int)redis_to);
	if (!s->pool || !s->redis) {
		error_set(err, 0, "oom", "cannot start pools");
		goto fail;
	}
	s->http = evhttp_new(base);
	if (!s->http)
		goto fail;
	/* libevent answers bodies over its limit with its own HTML 413 (before
	 * reading them when Content-Length says so): let bodies up to 1.5 MiB
	 * through so read_body() answers those in JSON; beyond, libevent's 413 */
	evhttp_set_max_body_size(s->http, HTTP_MAX_BODY + HTTP_MAX_BODY / 2);
	evhttp_set_max_headers_size(s->http, 16384);
	evhttp_set_timeout(s->http, (int)idle);
	/* evhttp's timeout measures silence only: conns bounds a request's age
	 * and the number of open connections */
	s->conns = conns_new(base, s->http, maxconn, reqto ? reqto : 2 * idle, s->metrics);
	if (!s->conns) {
		error_set(err, 0, "oom", "out of memory");
		goto fail;
	}
	/* every method reaches the router, which answers the contract's JSON 405
	 * with Allow (libevent would answer its own HTML 501): the nine it
	 * knows, and every other one (PROPFIND, BREW, a lower-case "get"),
	 * which libevent 2.1 parses as EVHTTP_REQ_UNKNOWN_ and lets through
	 * only when that bit is allowed too */
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
						    EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
						    EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH | HTTP_REQ_UNKNOWN);
	evhttp_set_gencb(s->http, gen_cb, s);
	if (!colon) {
		error_set(err, 0, "config", "listen '%s' must be host:port", listen);
		goto fail;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
	s->sock = evhttp_bind_socket_with_handle(s->http, host, (uint16_t)atoi(colon + 1));
	if (!s->sock) {
		int e = EVUTIL_SOCKET_ERROR();
		error_set(err, 0, "listen", "cannot listen on %s: %s%s", listen, evutil_socket_error_to_string(e),
			  e == EADDRINUSE ? " (another process serves that port: stop it or change 'listen')" : "");
		goto fail;
	}
	if (authz_init(s, err) < 0)
		goto fail;
	s->inf = inference_new(s, err);
	if (!s->inf)
		goto fail;
	if (stream_new(s, &s->stream, err) < 0)
		goto fail;
	s->gauge_timer = event_new(base, -1, EV_PERSIST, gauge_cb, s);
	event_add(s->gauge_timer, &tv);
	/* the ledger's upkeep: partitions ahead, expired credit to breakage */
	s->maint = maint_new(base, s->pool, expiry_s);
	if (!s->maint) {
		error_set(err, 0, "oom", "out of memory");
		goto fail;
	}
	log_info("billingd listening", "listen=%s instance=%s batch_max=%" PRId64 " batch_wait_us=%" PRId64, listen,
		 config_get(cfg, "instance_id"), batch_max, batch_wait);
	return s;
fail:
	server_free(s);
	return NULL;
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	(void)fd, (void)what;
	/* every answer written, not only queued: the loop's exit closes the
	 * connections, and an answer still in a connection's output buffer would
	 * never reach its client (test_sigterm_answers_in_flight_then_exits_0) */
	if ((s->front.inflight <= 0 && s->busy <= 0 && conns_unsent(s->conns) == 0) ||
	    time_now_us() > s->drain_deadline_us) {
		log_info("drained", "inflight=%" PRId64 " busy=%" PRId64, s->front.inflight, s->busy);
		event_base_loopexit(s->base, NULL);
	}
}

void server_drain(struct server *s)
{
	struct timeval tv = {0, 20000};

	if (s->draining)
		return;
	s->draining = true;
	maint_stop(s->maint);
	stream_stop(s->stream);
	s->drain_deadline_us = time_now_us() + 30000000;
	log_info("shutting down: no new connections, finishing requests in flight", "inflight=%" PRId64,
		 s->front.inflight);
	if (s->sock) {
		evhttp_del_accept_socket(s->http, s->sock);
		s->sock = NULL;
	}
	s->drain_timer = event_new(s->base, -1, EV_PERSIST, drain_cb, s);
	event_add(s->drain_timer, &tv);
}

void server_free(struct server *s)
{
	if (!s)
		return;
	if (s->drain_timer)
		event_free(s->drain_timer);
	if (s->gauge_timer)
		event_free(s->gauge_timer);
	maint_stop(s->maint);
	/* Order matters: callbacks still pending in one part may call into the
	 * next.  The usage writer's last answers settle holds in Redis and finish
	 * chat calls (inference and rconn alive); rconn's pending callbacks may
	 * submit to the API pool (closing makes them fail fast); the API pool's
	 * last answers reply on requests (evhttp alive). */
	s->closing = true;
	stream_stop(s->stream);
	for (int w = 0; w < s->n_writers; w++)
		dbpool_free(s->writers[w]);
	stream_free(s->stream);
	inference_free(s->inf);
	rconn_free(s->redis);
	s->redis = NULL;
	dbpool_free(s->pool);
	maint_free(s->maint); /* after the pool: its last run's done uses it */
	authz_free(s);
	if (s->http)
		evhttp_free(s->http);
	conns_free(s->conns); /* after evhttp_free: its connections' close callbacks use it */
	usage_writer_free(s->uw);
	metrics_free(s->metrics);
	tokens_free(s->gw);
	tokens_free(s->admin);
	sodium_memzero(s->pepper, sizeof(s->pepper));
	free(s);
}
