/* usage.c: see usage.h. */
#include "billing/usage/usage.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/usage/burndown.h"
#include "billing/http/metrics.h"
#include "billing/usage/pricedb.h"
#include "common/buf.h"
#include "common/jsonnum.h"
#include "common/log.h"
#include "common/pgarr.h"
#include "common/rclient.h"
#include "common/timeutil.h"
#include "common/rkeys.h"
#include "ledger/db.h"
#include "ledger/journal.h"

/* ---- parsing ---- */

static int get_string(const json_t *body, const char *name, bool required, char *out, size_t cap, size_t min,
		      struct error *err)
{
	const json_t *v = json_object_get(body, name);
	size_t len;

	out[0] = '\0';
	if (!v || json_is_null(v)) {
		if (required) {
			return error_set(err, 400, "invalid_request", "field '%s' is required", name);
		}
		return 0;
	}
	if (!json_is_string(v)) {
		return error_set(err, 400, "invalid_request", "field '%s' must be a string", name);
	}
	len = json_string_length(v);
	if (len < min || len >= cap || memchr(json_string_value(v), '\0', len)) {
		return error_set(err, 400, "invalid_request", "field '%s' must be %zu to %zu characters", name, min,
				 cap - 1);
	}
	memcpy(out, json_string_value(v), len + 1);
	return 1;
}

static int get_tokens(const json_t *body, const char *name, int64_t *out, struct error *err)
{
	const json_t *v = json_object_get(body, name);

	if (!v) {
		return error_set(err, 400, "invalid_request", "field '%s' is required", name);
	}
	if (!json_is_integer(v)) {
		return error_set(err, 400, "invalid_request", "field '%s' must be an integer", name);
	}
	*out = json_integer_value(v);
	if (*out < 0 || *out > PRICING_MAX_TOKENS) {
		return error_set(err, 422, "invalid_tokens", "field '%s' must be between 0 and %lld", name,
				 (long long)PRICING_MAX_TOKENS);
	}
	return 0;
}

int usage_parse(const json_t *body, int64_t now_us, const uint8_t pepper[32], struct usage_req *out, struct error *err)
{
	char key[256], ts[64];
	const json_t *acct;
	int has_key;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(body)) {
		return error_set(err, 400, "invalid_request", "the body must be a JSON object");
	}
	if (get_string(body, "request_id", true, out->request_id, sizeof(out->request_id), 1, err) < 0)
		return -1;
	has_key = get_string(body, "api_key", false, key, sizeof(key), 1, err);
	if (has_key < 0)
		return -1;
	acct = json_object_get(body, "account_id");
	if (acct && !json_is_null(acct)) {
		if (!json_is_integer(acct) || json_integer_value(acct) <= 0) {
			return error_set(err, 400, "invalid_request", "field 'account_id' must be a positive integer");
		}
		out->account_id = json_integer_value(acct);
	}
	if (has_key && out->account_id) {
		return error_set(err, 400, "invalid_request", "give 'api_key' or 'account_id', not both");
	}
	if (!has_key && !out->account_id) {
		return error_set(err, 400, "invalid_request", "field 'api_key' or 'account_id' is required");
	}
	if (has_key) {
		out->has_key = true;
		crypto_generichash(out->key_hash, 32, (const unsigned char *)key, strlen(key), pepper, 32);
		sodium_memzero(key, sizeof(key));
	}
	if (get_string(body, "model", true, out->model, sizeof(out->model), 1, err) < 0)
		return -1;
	if (get_tokens(body, "input_tokens", &out->input_tokens, err) < 0 ||
	    (json_object_get(body, "cached_input_tokens") && /* optional, default 0 */
	     get_tokens(body, "cached_input_tokens", &out->cached_input_tokens, err) < 0) ||
	    get_tokens(body, "output_tokens", &out->output_tokens, err) < 0)
		return -1;
	if (out->cached_input_tokens > out->input_tokens) {
		return error_set(err, 422, "invalid_tokens",
				 "cached_input_tokens (%" PRId64 ") exceeds input_tokens (%" PRId64 ")",
				 out->cached_input_tokens, out->input_tokens);
	}
	if (get_string(body, "started_at", true, ts, sizeof(ts), 1, err) < 0)
		return -1;
	if (time_parse_rfc3339(ts, 0, &out->started_at_us) < 0) {
		return error_set(err, 400, "invalid_request", "field 'started_at' must be an RFC 3339 time");
	}
	if (out->started_at_us < now_us - USAGE_MAX_AGE_US || out->started_at_us > now_us + USAGE_MAX_AHEAD_US) {
		return error_set(err, 422, "invalid_started_at",
				 "started_at must be within the last 35 days and at most 5 minutes ahead");
	}
	if (get_string(body, "hold_id", false, out->hold_id, sizeof(out->hold_id), 1, err) < 0 ||
	    get_string(body, "status", false, out->status, sizeof(out->status), 1, err) < 0)
		return -1;
	if (out->status[0] && strcmp(out->status, "ok") != 0 && strcmp(out->status, "cancelled") != 0 &&
	    strcmp(out->status, "error") != 0) {
		return error_set(err, 422, "invalid_status", "field 'status' must be 'ok', 'cancelled' or 'error'");
	}
	return 0;
}

void usage_body_hash(const struct usage_req *r, uint8_t out[32])
{
	struct buf b;

	buf_init(&b);
	buf_puts(&b, "usage-v1");
	buf_put_u32be(&b, (uint32_t)strlen(r->request_id));
	buf_puts(&b, r->request_id);
	buf_append(&b, r->has_key ? "K" : "A", 1);
	if (r->has_key)
		buf_append(&b, r->key_hash, 32);
	else
		buf_put_i64be(&b, r->account_id);
	buf_put_u32be(&b, (uint32_t)strlen(r->model));
	buf_puts(&b, r->model);
	buf_put_i64be(&b, r->input_tokens);
	buf_put_i64be(&b, r->cached_input_tokens);
	buf_put_i64be(&b, r->output_tokens);
	buf_put_i64be(&b, r->started_at_us);
	buf_put_u32be(&b, (uint32_t)strlen(r->hold_id));
	buf_puts(&b, r->hold_id);
	buf_put_u32be(&b, (uint32_t)strlen(r->status));
	buf_puts(&b, r->status);
	crypto_generichash(out, 32, (const unsigned char *)b.data, b.len, NULL, 0);
	buf_release(&b);
}

void usage_item_release(struct usage_item *it)
{
	free(it->response);
	it->response = NULL;
	it->balance_at = 0;
}

/* v as an exact integer literal, beyond int64 too (as jsonnum_dumps writes it) */
static void put_total(struct buf *b, money_total v)
{
	char t[MONEY_TOTAL_BUF];

	money_total_str(v, t, sizeof(t));
	buf_puts(b, t);
}

/* "balance":{...},"duplicate":false} of a fresh charge: as stored (held 0,
 * live 0), or with the live held amount (live 1 known, 2 unknown); written
 * piece by piece, no printf (twice a record: stored, then answered) */
static void balance_tail(struct buf *b, money_total paid, money_total promo, int live, int64_t held)
{
	buf_puts(b, "\"balance\":{\"paid_nanos\":");
	put_total(b, paid);
	buf_puts(b, ",\"promo_nanos\":");
	put_total(b, promo);
	if (live == 2) {
		buf_puts(b, ",\"held_nanos\":null,\"available_nanos\":null,\"held_known\":false,\"note\":"
			    "\"" USAGE_HELD_UNKNOWN_NOTE "\"");
	} else {
		buf_puts(b, ",\"held_nanos\":");
		buf_put_i64(b, held);
		buf_puts(b, ",\"available_nanos\":");
		put_total(b, paid + promo - held);
		if (live)
			buf_puts(b, ",\"held_known\":true");
	}
	buf_puts(b, "},\"duplicate\":false}");
}

int usage_answer_held(struct usage_item *it, bool known, int64_t held)
{
	struct buf t;

	if (!it->response || it->duplicate || it->balance_at == 0 || it->balance_at >= strlen(it->response))
		return -1;
	buf_init(&t);
	buf_reserve(&t, it->balance_at + 256); /* the tail's members: one allocation */
	buf_append(&t, it->response, it->balance_at);
	balance_tail(&t, it->paid_after, it->promo_after, known ? 1 : 2, held);
	free(it->response);
	it->response = t.data;
	return 0;
}

/* ---- the writer ---- */

struct usage_writer {
	struct metrics *metrics;
	char *redis; /* the `redis` setting: one server or cluster seeds */
};

/* The price list, per writer thread (each thread its own copy: no sharing).
 * Reloaded when its newest version is no longer the database's. */
static __thread struct pricing_price *t_prices;
static __thread size_t t_n_prices;
static __thread int64_t t_prices_version = -1;
/* each writer thread's own synchronous Redis client (load generations), and
 * the identity of that Redis (again every 10 s while it could not be read,
 * and after every new connection: another server may answer at the same
 * address): the batch's NOTIFY names it, so instances sharing this Redis
 * keep the mirrors our settles update (send_notify) */
static __thread struct rclient *t_redis;
static __thread char t_redis_id[RCLIENT_ID_LEN + 1];
static __thread int64_t t_redis_id_tried_us;
static __thread uint64_t t_redis_id_conn; /* rclient_connects when it was read */

static void read_redis_id(void)
{
	struct error err;

	t_redis_id_tried_us = time_now_us();
	if (rclient_redis_id(t_redis, t_redis_id, &err) < 0)
		log_debug("redis id not read", "error=\"%s\"", err.msg);
	t_redis_id_conn = rclient_connects(t_redis);
}

struct usage_writer *usage_writer_new(struct metrics *m, const char *redis)
{
	struct usage_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->metrics = m;
	w->redis = strdup(redis);
	if (!w->redis) {
		free(w);
		return NULL;
	}
	return w;
}

/* Reads the load generation ({a:ID}:st lgen) of every account charged
 * (state 2), before COMMIT: a settle applies its delta to the mirror only
 * if no load happened since.  Any failure leaves -1 (the settle then drops
 * the mirror: safe).  true when every one was read, on connections opened
 * before t_redis_id was read: this thread reached the Redis of that id just
 * before COMMIT, so the batch's NOTIFY may name it (send_notify);
 * false when one was not (that Redis, or the node of an account, is cut off
 * from this writer: its settles may not land for as long, and an instance
 * keeping the mirror would decide above the ledger meanwhile). */
static bool read_load_generations(struct usage_writer *w, struct usage_item **items, const int *state, size_t n)
{
	struct rclient_cmd *cmds = calloc(n + 1, sizeof(*cmds));
	redisReply **replies = calloc(n + 1, sizeof(*replies));
	char(*keys)[48] = calloc(n + 1, sizeof(*keys));
	const char **argv = calloc(3 * n + 1, sizeof(*argv));
	size_t *idx = calloc(n + 1, sizeof(*idx));
	size_t k = 0;
	struct error err;
	bool all = false;

	for (size_t i = 0; i < n; i++)
		items[i]->mirror_lgen = -1;
	if (!cmds || !replies || !keys || !argv || !idx)
		goto done;
	if (!t_redis) {
		t_redis = rclient_new(w->redis, 200, &err);
		if (!t_redis)
			goto done;
	}
	if (!t_redis_id[0] && time_now_us() - t_redis_id_tried_us >= 10000000)
		read_redis_id();
	for (size_t i = 0; i < n; i++) {
		if (state[i] != 2)
			continue;
		rkey(keys[k], sizeof(keys[k]), items[i]->account_id, RKEY_ST);
		argv[3 * k] = "HGET";
		argv[3 * k + 1] = keys[k];
		argv[3 * k + 2] = RKEY_ST_LGEN;
		cmds[k] = (struct rclient_cmd){3, &argv[3 * k], NULL};
		idx[k++] = i;
	}
	/* a failed read leaves -1 for that item (its own node may be down) */
	if (k && rclient_pipeline(t_redis, k, cmds, replies, &err) < 0)
		log_debug("load generations not all read", "error=\"%s\"", err.msg);
	all = true;
	for (size_t j = 0; j < k; j++) {
		redisReply *r = replies[j];
		if (r && r->type == REDIS_REPLY_NIL)
			items[idx[j]]->mirror_lgen = 0;
		else if (r && r->type == REDIS_REPLY_STRING)
			items[idx[j]]->mirror_lgen = strtoll(r->str, NULL, 10);
		else
			all = false;
		freeReplyObject(r);
	}
	/* the id names the server these reads reached only if no connection
	 * was opened since it was read (a Redis replaced behind its address
	 * gives the same one a new id): read again on the new connection, and
	 * named only if that one is still the one the reads used */
	if (all && rclient_connects(t_redis) != t_redis_id_conn) {
		uint64_t reads = rclient_connects(t_redis);
		read_redis_id();
		all = t_redis_id_conn == reads;
	}
done:
	free(cmds);
	free(replies);
	free(keys);
	free(argv);
	free(idx);
	return all;
}

void usage_writer_free(struct usage_writer *w)
{
	if (!w)
		return;
	free(w->redis);
	free(w);
}

struct acct {
	int64_t account_id;
	int frozen;
	int found;
	size_t first, n;  /* range in the bucket array */
	int64_t paid_idx; /* index of the paid bucket, -1 none */
};

struct batch {
	struct usage_writer *w;
	struct usage_item **items;
	size_t n;
	int *state; /* per item: 0 pending, 1 done (error or duplicate), 2 charged, 3 in-batch duplicate */
	size_t *dup_of;
	struct acct *accts;
	size_t n_accts;
	struct burndown_bucket *buckets;
	size_t n_buckets;
	struct journal_txn *txns;
	struct journal_posting *posts;
	size_t posts_cap;
	struct buf *details;
	size_t n_txns;
	size_t *txn_item;
};

static void fail_item(struct batch *b, size_t i, int status, const char *code, const char *msg)
{
	error_set(&b->items[i]->job.err, status, code, "%s", msg);
	b->state[i] = 1;
}

static struct acct *find_acct(struct batch *b, int64_t id)
{
	size_t lo = 0, hi = b->n_accts;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (b->accts[mid].account_id == id)
			return &b->accts[mid];
		if (b->accts[mid].account_id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void arr_add_text(struct buf *a, const char *s)
{
	if (a->len > 1)
		buf_append(a, ",", 1);
	buf_pg_array_text(a, s);
}

static void arr_add_i64(struct buf *a, int64_t v)
{
	if (a->len > 1)
		buf_append(a, ",", 1);
	buf_put_i64(a, v);
}

static void arr_add_bytea(struct buf *a, const uint8_t *p)
{
	if (a->len > 1)
		buf_append(a, ",", 1);
	buf_append(a, "\"\\\\x", 4);
	buf_hex(a, p, 32);
	buf_append(a, "\"", 1);
}

static void arr_init(struct buf *a)
{
	buf_init(a);
	buf_append(a, "{", 1);
}

static void arr_close(struct buf *a)
{
	buf_append(a, "}", 1);
}

static int hex32(const char *hex, uint8_t out[32])
{
	size_t got = 0;

	return sodium_hex2bin(out, 32, hex, strlen(hex), NULL, &got, NULL) == 0 && got == 32 ? 0 : -1;
}

/* the writer's statements, prepared once on each connection */
static const char *const usage_stmts[][2] = {
	{"u_price", "SELECT coalesce(max(price_version), 0) FROM prices"},
	{"u_keys", "SELECT encode(key_hash, 'hex'), account_id FROM api_keys WHERE key_hash = ANY($1::bytea[])"},
	{"u_seen", "SELECT 1 FROM ledger_idempotency WHERE idempotency_key = ANY ($1::text[]) LIMIT 1"},
	/* row locks in id order: no deadlock between writers */
	{"u_lock", "SELECT account_id, status FROM customers WHERE account_id = ANY($1::bigint[])"
		   " ORDER BY account_id FOR UPDATE"},
	/* index probes per ledger account of the batch's customers, never a
	 * scan of every balance or grant (a generic plan for a few ids over
	 * small tables chose hash joins that read them all; OFFSET 0 keeps
	 * each probe a parameterized index scan).  ledger_balances: a table
	 * before migration 0009, a view over ledger_balance_rows after it
	 * (the probe reaches its index either way), so this binary also
	 * writes into a database not yet migrated */
	{"u_buckets", "SELECT la.account_id, la.ledger_account_id, coalesce(g.grant_id, 0), b.balance,"
		      " coalesce(g.priority, 0), coalesce((extract(epoch from g.expires_at) * 1000000)::bigint, 0)"
		      " FROM ledger_accounts la"
		      " CROSS JOIN LATERAL (SELECT r.balance FROM ledger_balances r"
		      " WHERE r.ledger_account_id = la.ledger_account_id OFFSET 0) b"
		      " LEFT JOIN LATERAL (SELECT x.grant_id, x.priority, x.expires_at FROM grants x"
		      " WHERE x.ledger_account_id = la.ledger_account_id OFFSET 0) g ON true"
		      " WHERE la.account_id = ANY($1::bigint[]) AND (la.type = 'customer_paid' OR b.balance > 0)"
		      " ORDER BY la.account_id"},
	{"u_chain_lock", JOURNAL_SQL_CHAIN_LOCK},
	{"u_head", JOURNAL_SQL_HEAD},
	{"u_txn_ids", JOURNAL_SQL_TXN_IDS},
	{"u_journal", JOURNAL_SQL_INSERT},
	{"u_postings", JOURNAL_SQL_POSTINGS},
	{"u_notify", JOURNAL_SQL_NOTIFY},
	{"u_records",
	 "INSERT INTO usage_records (request_id, account_id, txn_id, body_hash, model, input_tokens,"
	 " cached_input_tokens, output_tokens, started_at, cost_nanos, price_version, hold_id, status,"
	 " response, created_at)"
	 " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::text[], $6::bigint[],"
	 " $7::bigint[], $8::bigint[], $9::timestamptz[], $10::bigint[], $11::bigint[], $12::text[],"
	 " $13::text[], $14::text[], $15::timestamptz[])"},
	{NULL, NULL},
};

/* the connection (and its backend) the statements were prepared on */
static __thread PGconn *t_prepared;
static __thread int t_prepared_pid;

static int prepare_statements(PGconn *c, struct error *err)
{
	if (t_prepared == c && t_prepared_pid == PQbackendPID(c))
		return 0;
	t_prepared = NULL;
	if (db_prepare(c, usage_stmts, err) < 0)
		return -1;
	t_prepared = c;
	t_prepared_pid = PQbackendPID(c);
	return 0;
}

/* 1) api keys -> accounts: 1 when a lookup was queued, 0 when none is needed */
static int send_keys(struct batch *b, PGconn *c, struct buf *a, struct error *err)
{
	const char *p[1];
	int any = 0;

	arr_init(a);
	for (size_t i = 0; i < b->n; i++) {
		struct usage_item *it = b->items[i];
		it->account_id = it->r.account_id;
		if (b->state[i] == 0 && it->r.has_key) {
			arr_add_bytea(a, it->r.key_hash);
			any = 1;
		}
	}
	arr_close(a);
	if (!any)
		return 0;
	p[0] = a->data;
	return db_send(c, "u_keys", NULL, 1, p, err) < 0 ? -1 : 1;
}

static int read_keys(struct batch *b, PGconn *c, struct error *err)
{
	PGresult *r = db_next(c, err);

	if (!r)
		return -1;
	for (size_t i = 0; i < b->n; i++) {
		struct usage_item *it = b->items[i];
		if (b->state[i] != 0 || !it->r.has_key)
			continue;
		for (int k = 0; k < PQntuples(r); k++) {
			uint8_t h[32];
			if (hex32(PQgetvalue(r, k, 0), h) == 0 && sodium_memcmp(h, it->r.key_hash, 32) == 0) {
				it->account_id = db_int(PQgetvalue(r, k, 1));
				break;
			}
		}
		if (!it->account_id)
			fail_item(b, i, 404, "not_found", "unknown api_key");
	}
	PQclear(r);
	return 0;
}

static char *replay_response(const char *stored)
{
	json_error_t je;
	json_t *j = jsonnum_loads(stored, 0, &je);
	char *s;

	if (!j)
		return NULL;
	json_object_set_new(j, "duplicate", json_true());
	s = jsonnum_dumps(j, JSON_COMPACT);
	json_decref(j);
	return s;
}

/* 2) replays of committed records, and repeats inside the batch.  The key
 * table is probed first (not partitioned: one index probe per id); only when
 * some were seen are the records themselves read, each in the one partition
 * its key's created_at names. */
static int send_seen(struct batch *b, PGconn *c, struct buf *a, struct error *err)
{
	struct buf key;
	const char *p[1];

	arr_init(a);
	buf_init(&key);
	for (size_t i = 0; i < b->n; i++) {
		if (b->state[i] != 0)
			continue;
		buf_reset(&key);
		buf_puts(&key, "usage:");
		buf_puts(&key, b->items[i]->r.request_id);
		arr_add_text(a, key.data);
	}
	arr_close(a);
	buf_release(&key);
	p[0] = a->data;
	return db_send(c, "u_seen", NULL, 1, p, err);
}

/* reads u_seen's result (pipeline); the records themselves, when needed,
 * after the pipeline (seen_keys: the array sent) */
static int read_seen(PGconn *c, bool *seen, struct error *err)
{
	PGresult *r = db_next(c, err);

	if (!r)
		return -1;
	*seen = PQntuples(r) > 0;
	PQclear(r);
	return 0;
}

static int find_replays(struct batch *b, PGconn *c, bool seen, const char *seen_keys, struct error *err)
{
	PGresult *r = NULL;
	const char *p[1] = {seen_keys};

	if (seen) {
		r = db_query(c,
			     "SELECT u.request_id, encode(u.body_hash, 'hex'), u.response FROM ledger_idempotency k"
			     " JOIN usage_records u ON u.request_id = substr(k.idempotency_key, 7)"
			     " AND u.created_at = k.created_at"
			     " WHERE k.idempotency_key = ANY ($1::text[])",
			     1, p, err);
		if (!r)
			return -1;
	}
	for (size_t i = 0; r && i < b->n; i++) {
		struct usage_item *it = b->items[i];
		if (b->state[i] != 0)
			continue;
		for (int k = 0; k < PQntuples(r); k++) {
			uint8_t h[32];
			if (strcmp(PQgetvalue(r, k, 0), it->r.request_id) != 0)
				continue;
			if (hex32(PQgetvalue(r, k, 1), h) < 0 || sodium_memcmp(h, it->body_hash, 32) != 0) {
				fail_item(b, i, 409, "idempotency_conflict",
					  "request_id was already used with a different body");
			} else {
				it->response = replay_response(PQgetvalue(r, k, 2));
				it->duplicate = true;
				b->state[i] = 1;
				if (!it->response)
					fail_item(b, i, 500, "internal", "stored response unreadable");
			}
			break;
		}
	}
	PQclear(r);
	/* the same request_id twice in one batch: the later ones are replays of the first */
	for (size_t i = 0; i < b->n; i++) {
		if (b->state[i] != 0)
			continue;
		for (size_t j = 0; j < i; j++) {
			if (b->state[j] == 0 && strcmp(b->items[j]->r.request_id, b->items[i]->r.request_id) == 0) {
				if (sodium_memcmp(b->items[j]->body_hash, b->items[i]->body_hash, 32) != 0)
					fail_item(b, i, 409, "idempotency_conflict",
						  "request_id was already used with a different body");
				else {
					b->state[i] = 3;
					b->dup_of[i] = j;
				}
				break;
			}
		}
	}
	return 0;
}

/* 3) lock the accounts, load their buckets (every account of the batch:
 * a replay's is locked too, which changes nothing) */
static int send_accounts(struct batch *b, PGconn *c, struct buf *a, struct error *err)
{
	int64_t *ids = calloc(b->n + 1, sizeof(*ids));
	size_t n = 0;
	const char *p[1];

	arr_init(a);
	if (!ids) {
		return error_set(err, 500, "internal", "out of memory");
	}
	for (size_t i = 0; i < b->n; i++)
		if (b->state[i] == 0)
			ids[n++] = b->items[i]->account_id;
	qsort(ids, n, sizeof(*ids), cmp_i64);
	b->n_accts = 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || ids[i] != ids[i - 1]) {
			memset(&b->accts[b->n_accts], 0, sizeof(b->accts[0]));
			b->accts[b->n_accts].account_id = ids[i];
			b->accts[b->n_accts].paid_idx = -1;
			b->n_accts++;
		}
	free(ids);
	for (size_t i = 0; i < b->n_accts; i++)
		arr_add_i64(a, b->accts[i].account_id);
	arr_close(a);
	p[0] = a->data;
	if (db_send(c, "u_lock", NULL, 1, p, err) < 0 || db_send(c, "u_buckets", NULL, 1, p, err) < 0)
		return -1;
	return 0;
}

static int read_accounts(struct batch *b, PGconn *c, struct error *err)
{
	PGresult *r = db_next(c, err);

	if (!r)
		return -1;
	for (int k = 0; k < PQntuples(r); k++) {
		struct acct *ac = find_acct(b, db_int(PQgetvalue(r, k, 0)));
		if (ac) {
			ac->found = 1;
			ac->frozen = strcmp(PQgetvalue(r, k, 1), "frozen") == 0;
		}
	}
	PQclear(r);
	r = db_next(c, err);
	if (!r)
		return -1;
	free(b->buckets);
	b->buckets = calloc((size_t)PQntuples(r) + 1, sizeof(*b->buckets));
	if (!b->buckets) {
		PQclear(r);
		return error_set(err, 500, "internal", "out of memory");
	}
	b->n_buckets = 0;
	for (int k = 0; k < PQntuples(r); k++) {
		struct acct *ac = find_acct(b, db_int(PQgetvalue(r, k, 0)));
		struct burndown_bucket *bk = &b->buckets[b->n_buckets];
		if (!ac)
			continue;
		if (ac->n == 0)
			ac->first = b->n_buckets;
		bk->ledger_account_id = db_int(PQgetvalue(r, k, 1));
		bk->grant_id = db_int(PQgetvalue(r, k, 2));
		{
			/* numeric: exact; a charge works on it saturated to int64 */
			money_total v = 0;
			(void)!money_total_parse(PQgetvalue(r, k, 3), &v);
			bk->balance = money_total_clamp(v);
			bk->beyond = v - bk->balance;
		}
		bk->priority = (int)db_int(PQgetvalue(r, k, 4));
		bk->expires_at_us = db_int(PQgetvalue(r, k, 5));
		ac->n++;
		b->n_buckets++;
	}
	PQclear(r);
	for (size_t i = 0; i < b->n_accts; i++) {
		struct acct *ac = &b->accts[i];
		burndown_sort(&b->buckets[ac->first], ac->n);
		for (size_t k = 0; k < ac->n; k++)
			if (b->buckets[ac->first + k].grant_id == 0)
				ac->paid_idx = (int64_t)(ac->first + k);
	}
	return 0;
}

/* after the replays are known: what is left must have a usable account */
static void check_accounts(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		struct acct *ac;
		if (b->state[i] != 0)
			continue;
		ac = find_acct(b, b->items[i]->account_id);
		/* a frozen account's usage is billed too (CONTRACT.md §3): the call
		 * ran; freezing stops new authorizations, not the bill */
		if (!ac || !ac->found || ac->paid_idx < 0)
			fail_item(b, i, 404, "not_found", "unknown account");
	}
}

static int grow_posts(struct batch *b, size_t need)
{
	size_t cap = b->posts_cap ? b->posts_cap : 64;
	struct journal_posting *p;

	while (cap < need)
		cap *= 2;
	p = realloc(b->posts, cap * sizeof(*p));
	if (!p)
		return -1;
	b->posts = p;
	b->posts_cap = cap;
	return 0;
}

static const char *bucket_name(enum burndown_kind k)
{
	return k == BURNDOWN_GRANT ? "grant" : k == BURNDOWN_PAID ? "paid" : "arrears";
}

/* 4) price, charge, build the journal transactions and responses */
static int charge_items(struct batch *b, int64_t now_us, struct error *err)
{
	size_t np = 0;

	b->n_txns = 0;
	for (size_t i = 0; i < b->n; i++) {
		struct usage_item *it = b->items[i];
		const struct pricing_price *pr;
		struct pricing_tokens tk = {it->r.input_tokens, it->r.cached_input_tokens, it->r.output_tokens};
		struct burndown_line *lines;
		struct acct *ac;
		struct burndown_bucket *paid;
		size_t nl, tx, first_post = np;
		bool known;
		int64_t cost, spend_now;
		money_total promo = 0;
		struct buf resp;
		char ts[40];
		struct buf *d;

		if (b->state[i] != 0)
			continue;
		pr = pricing_select(t_prices, t_n_prices, it->r.model, it->r.started_at_us, &known);
		if (!pr) {
			if (known)
				fail_item(b, i, 422, "no_price_in_effect", "the model had no price at started_at");
			else
				fail_item(b, i, 422, "unknown_model", "unknown model");
			continue;
		}
		if (pricing_cost(pr, &tk, it->r.started_at_us, &cost) < 0) {
			fail_item(b, i, 422, "invalid_tokens", "token counts out of range");
			continue;
		}
		ac = find_acct(b, it->account_id);
		paid = &b->buckets[ac->paid_idx];
		/* expired credit is never spent, not even by a record started before the expiry */
		spend_now = now_us > it->r.started_at_us ? now_us : it->r.started_at_us;
		lines = calloc(ac->n + 2, sizeof(*lines));
		if (!lines || (np + ac->n + 2 > b->posts_cap && grow_posts(b, np + ac->n + 2) < 0)) {
			free(lines);
			return error_set(err, 503, "unavailable", "out of memory");
		}
		nl = burndown_charge(&b->buckets[ac->first], ac->n, paid, cost, pr->paid_only, spend_now, lines);
		tx = b->n_txns++;
		b->txn_item[tx] = i;
		/* the answer, written once (as jansson would: members in this order) */
		buf_init(&resp);
		buf_reserve(&resp, 512); /* an answer of one or two buckets, in one allocation */
		buf_puts(&resp, "{\"request_id\":");
		buf_json_str(&resp, it->r.request_id);
		buf_puts(&resp, ",\"account_id\":");
		buf_put_i64(&resp, it->account_id);
		buf_puts(&resp, ",\"cost_nanos\":");
		buf_put_i64(&resp, cost);
		buf_puts(&resp, ",\"price_version\":");
		buf_put_i64(&resp, pr->version);
		buf_puts(&resp, ",\"charged\":[");
		it->d_paid = it->d_promo = 0;
		for (size_t k = 0; k < nl; k++) {
			if (lines[k].kind == BURNDOWN_GRANT)
				it->d_promo -= lines[k].amount;
			else
				it->d_paid -= lines[k].amount;
			/* arrears and paid share the paid ledger account: one posting */
			if (k > 0 && lines[k].kind == BURNDOWN_ARREARS && lines[k - 1].kind == BURNDOWN_PAID)
				b->posts[np - 1].amount -= lines[k].amount;
			else
				b->posts[np++] = (struct journal_posting){lines[k].ledger_account_id, it->account_id,
									  -lines[k].amount};
			buf_puts(&resp, k ? ",{\"bucket\":\"" : "{\"bucket\":\"");
			buf_puts(&resp, bucket_name(lines[k].kind));
			buf_puts(&resp, "\",\"grant_id\":");
			if (lines[k].grant_id)
				buf_put_i64(&resp, lines[k].grant_id);
			else
				buf_puts(&resp, "null");
			buf_puts(&resp, ",\"amount_nanos\":");
			buf_put_i64(&resp, lines[k].amount);
			buf_puts(&resp, "}");
		}
		free(lines);
		if (np == first_post) /* a free call still moves through the books: a zero posting */
			b->posts[np++] = (struct journal_posting){paid->ledger_account_id, it->account_id, 0};
		b->posts[np++] = (struct journal_posting){1 /* revenue */, 0, cost};
		for (size_t k = 0; k < ac->n; k++) {
			struct burndown_bucket *g = &b->buckets[ac->first + k];
			if (g->grant_id && g->balance > 0 && (g->expires_at_us == 0 || g->expires_at_us > now_us))
				promo += g->balance;
		}
		time_format_rfc3339(it->r.started_at_us, ts, sizeof(ts));
		buf_puts(&resp, "],");
		it->balance_at = resp.len;
		/* exact: either may be beyond int64 (common/money.h) */
		it->paid_after = paid->balance + paid->beyond;
		it->promo_after = promo;
		balance_tail(&resp, it->paid_after, promo, 0, 0);
		it->response = resp.data; /* owned */
		it->cost_nanos = cost;
		it->price_version = pr->version;
		d = &b->details[tx];
		buf_reset(d);
		buf_puts(d, "{\"request_id\":");
		buf_json_str(d, it->r.request_id);
		buf_puts(d, ",\"model\":");
		buf_json_str(d, it->r.model);
		buf_puts(d, ",\"input_tokens\":");
		buf_put_i64(d, it->r.input_tokens);
		buf_puts(d, ",\"cached_input_tokens\":");
		buf_put_i64(d, it->r.cached_input_tokens);
		buf_puts(d, ",\"output_tokens\":");
		buf_put_i64(d, it->r.output_tokens);
		buf_puts(d, ",\"started_at\":\"");
		buf_puts(d, ts);
		buf_puts(d, "\",\"price_version\":");
		buf_put_i64(d, pr->version);
		buf_puts(d, ",\"cost_nanos\":");
		buf_put_i64(d, cost);
		buf_puts(d, "}");
		{
			struct journal_txn *t = &b->txns[tx];
			memset(t, 0, sizeof(*t));
			t->kind = "usage";
			t->account_id = it->account_id;
			memcpy(t->content_hash, it->body_hash, 32);
			t->actor = "gateway";
			t->reason = "usage";
			t->details = d->data;
			t->created_at_us = now_us;
			t->n_postings = np - first_post;
			t->postings = (struct journal_posting *)(uintptr_t)first_post; /* fixed up below */
		}
		b->state[i] = 2;
	}
	for (size_t t = 0; t < b->n_txns; t++)
		b->txns[t].postings = b->posts + (uintptr_t)b->txns[t].postings;
	(void)err;
	return 0;
}

/* 5) journal + usage_records: queued after the chain head and the txn_ids
 * are known; ja and a[] must live until the pipeline is read */
struct chain {
	int64_t seq;                      /* the writer's last seq before this batch */
	uint8_t head[JOURNAL_HASH_BYTES]; /* and its hash */
	int64_t *txn_ids;                 /* one per pending record */
};

static int clear_ok(PGresult *r)
{
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

enum {
	R_ID,
	R_ACCT,
	R_TXN,
	R_HASH,
	R_MODEL,
	R_IN,
	R_CACHED,
	R_OUT,
	R_AT,
	R_COST,
	R_PV,
	R_HOLD,
	R_STATUS,
	R_RESP,
	R_CREATED,
	NR
};

/* element types of the record arrays, in R_ order */
static const uint32_t rec_types[NR] = {
	[R_ID] = PGARR_TEXT,     [R_ACCT] = PGARR_INT8,  [R_TXN] = PGARR_INT8,
	[R_HASH] = PGARR_BYTEA,  [R_MODEL] = PGARR_TEXT, [R_IN] = PGARR_INT8,
	[R_CACHED] = PGARR_INT8, [R_OUT] = PGARR_INT8,   [R_AT] = PGARR_TIMESTAMPTZ,
	[R_COST] = PGARR_INT8,   [R_PV] = PGARR_INT8,    [R_HOLD] = PGARR_TEXT,
	[R_STATUS] = PGARR_TEXT, [R_RESP] = PGARR_TEXT,  [R_CREATED] = PGARR_TIMESTAMPTZ,
};

/* text or NULL when empty */
static void arr_opt_text(struct pgarr *a, const char *s)
{
	if (s[0])
		pgarr_text(a, s);
	else
		pgarr_null(a);
}

static int send_records(struct batch *b, PGconn *c, const char *writer, char **keys, const struct chain *ch,
			struct journal_arrays *ja, struct pgarr a[NR], struct error *err)
{
	struct db_params p;

	for (size_t t = 0; t < b->n_txns; t++) {
		struct usage_item *it = b->items[b->txn_item[t]];
		size_t idl = strlen(it->r.request_id);
		free(keys[t]);
		keys[t] = malloc(sizeof("usage:") + idl); /* "usage:" + the id, no printf */
		if (!keys[t])
			return error_set(err, 500, "internal", "out of memory");
		memcpy(keys[t], "usage:", sizeof("usage:") - 1);
		memcpy(keys[t] + sizeof("usage:") - 1, it->r.request_id, idl + 1);
		b->txns[t].idempotency_key = keys[t];
		b->txns[t].txn_id = ch->txn_ids[t];
	}
	journal_link(writer, ch->seq, ch->head, b->txns, b->n_txns, ja);
	journal_postings(b->txns, b->n_txns, ja);
	journal_insert_params(ja, writer, &p);
	if (db_send_params(c, "u_journal", NULL, &p, err) < 0)
		return -1;
	journal_postings_params(ja, &p);
	if (db_send_params(c, "u_postings", NULL, &p, err) < 0)
		return -1;
	for (size_t t = 0; t < b->n_txns; t++) {
		struct usage_item *it = b->items[b->txn_item[t]];
		pgarr_text(&a[R_ID], it->r.request_id);
		pgarr_i64(&a[R_ACCT], it->account_id);
		pgarr_i64(&a[R_TXN], b->txns[t].txn_id);
		pgarr_bytes(&a[R_HASH], it->body_hash, 32);
		pgarr_text(&a[R_MODEL], it->r.model);
		pgarr_i64(&a[R_IN], it->r.input_tokens);
		pgarr_i64(&a[R_CACHED], it->r.cached_input_tokens);
		pgarr_i64(&a[R_OUT], it->r.output_tokens);
		pgarr_ts(&a[R_AT], it->r.started_at_us);
		pgarr_i64(&a[R_COST], it->cost_nanos);
		pgarr_i64(&a[R_PV], it->price_version);
		arr_opt_text(&a[R_HOLD], it->r.hold_id);
		arr_opt_text(&a[R_STATUS], it->r.status);
		pgarr_text(&a[R_RESP], it->response);
		/* the journal row's instant: the partition key, and half of the reference to it */
		pgarr_ts(&a[R_CREATED], b->txns[t].created_at_us);
	}
	p.n = NR;
	for (int k = 0; k < NR; k++) {
		p.v[k] = pgarr_finish(&a[k], &p.len[k]);
		p.fmt[k] = 1;
	}
	return db_send_params(c, "u_records", NULL, &p, err);
}

/* The other instances' balance mirrors learn of the batch ("ACCOUNT
 * WRITER" on billing_balance) from a NOTIFY in a transaction of its own,
 * right after the COMMIT (queued behind it, so it runs only if the COMMIT
 * did).  Inside the batch's transaction it serialized every writer's
 * commit: PostgreSQL holds its one notify-queue lock from the NOTIFY's
 * pre-commit to the end of the commit, WAL flush included, so two writers
 * (or two instances) committed one after the other (docs/benchmarks.md).
 * Alone, the NOTIFY's transaction writes no WAL but its commit record and
 * waits for no flush.  Its failure fails nothing: the records are
 * committed; the other instances' mirrors then expire or reload as after a
 * lost LISTEN connection. */
static int send_notify(PGconn *c, const char *writer, bool reached, struct journal_arrays *ja, struct error *err)
{
	struct db_params p;
	char named[256];

	/* "ACCOUNT WRITER REDIS_ID": an instance that reads the same id from its
	 * Redis leaves the mirror to our settle (billing/authz/authorize.c).
	 * Only when this batch just reached that Redis (reached: every load
	 * generation read): a writer cut off from it names none, so the others
	 * drop the mirrors its settles cannot update */
	if (reached && t_redis_id[0] &&
	    (size_t)snprintf(named, sizeof(named), "%s %s", writer, t_redis_id) < sizeof(named))
		writer = named;
	journal_notify_params(ja, writer, &p);
	return db_send_params(c, "u_notify", NULL, &p, err);
}

/* false when the NOTIFY failed after the COMMIT: the records are committed,
 * and the event loop announces their accounts instead (notify_lost) */
static bool notify_done(PGresult *r, const struct error *err)
{
	if (!r)
		log_warn("balance notification not sent after a usage commit", "error=\"%s\"", err->msg);
	PQclear(r);
	return r != NULL;
}

static void notify_lost(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->state[i] == 2)
			b->items[i]->notify_lost = true;
}

/* the price list: reloaded when its newest version is no longer the
 * database's (one cheap probe per batch: a price set a moment ago is used
 * at once) */
static int reload_prices(PGconn *c, int64_t v, struct error *err)
{
	struct pricing_price *p = NULL;
	size_t n = 0;

	if (v == t_prices_version)
		return 0;
	if (pricedb_load(c, &p, &n, err) < 0)
		return -1;
	free(t_prices);
	t_prices = p;
	t_n_prices = n;
	t_prices_version = v;
	return 0;
}

static void reset_results(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		usage_item_release(b->items[i]);
		b->items[i]->duplicate = false;
		b->items[i]->notify_lost = false;
		memset(&b->items[i]->job.err, 0, sizeof(b->items[i]->job.err));
		b->state[i] = 0;
	}
}

/* the writer's chain: head before this batch and txn_ids for its journal rows */
static int read_chain(PGconn *c, const char *writer, struct chain *ch, size_t n, struct error *err)
{
	PGresult *r = db_next(c, err);
	int rc = -1;

	if (!r)
		return -1;
	PQclear(r); /* the advisory lock */
	r = db_next(c, err);
	if (!r || journal_parse_head(r, &ch->seq, ch->head, writer, err) < 0)
		goto done;
	PQclear(r);
	r = db_next(c, err);
	if (!r)
		goto done;
	if ((size_t)PQntuples(r) != n) {
		error_set(err, 500, "internal", "got %d txn_ids for %zu", PQntuples(r), n);
		goto done;
	}
	for (int k = 0; k < PQntuples(r); k++)
		ch->txn_ids[k] = db_int(PQgetvalue(r, k, 0));
	rc = 0;
done:
	PQclear(r);
	return rc;
}

/* One batch in one transaction, in two round trips (libpq pipeline mode):
 *   1. BEGIN, price probe, [api keys], replay probe, lock the accounts and
 *      read their buckets, lock the writer's chain and read its head, take
 *      txn_ids; (rare extra trips: the api keys' accounts, replays, a new
 *      price list)
 *   2. journal rows, postings, usage records (sent; the mirrors' load
 *      generations are read from Redis meanwhile), the writers' turn given
 *      back when this thread holds it (dbpool_turn_unlock_sql), COMMIT, and in a
 *      transaction of its own the NOTIFY (send_notify).
 * -2: the price list cannot be loaded. */
static int try_batch(struct batch *b, PGconn *c, const char *writer, char **keys, struct error *err)
{
	int64_t now = time_now_us();
	struct buf keys_a, seen_a, accts_a;
	struct pgarr rec_a[NR];
	struct journal_arrays ja;
	struct chain ch = {0};
	const char *p[1];
	PGresult *r = NULL;
	int has_keys, rc = -1;
	bool seen = false, commit_apart, reached;
	char nbuf[24];
	const char *unlock;
	size_t n_pending = 0;

	reset_results(b);
	buf_init(&keys_a);
	buf_init(&seen_a);
	buf_init(&accts_a);
	for (int k = 0; k < NR; k++)
		pgarr_init(&rec_a[k], rec_types[k]);
	journal_arrays_init(&ja);
	ch.txn_ids = calloc(b->n + 1, sizeof(*ch.txn_ids));
	if (!ch.txn_ids) {
		error_set(err, 503, "unavailable", "out of memory");
		goto out;
	}
	if (prepare_statements(c, err) < 0 || db_pipeline_begin(c, err) < 0)
		goto out;
	if (db_send(c, NULL, "BEGIN", 0, NULL, err) < 0 || db_send(c, "u_price", NULL, 0, NULL, err) < 0 ||
	    (has_keys = send_keys(b, c, &keys_a, err)) < 0)
		goto fail;
	if (has_keys) {
		/* the accounts of api keys are needed before the locks: one more trip */
		if (db_pipeline_sync(c, err) < 0 || (clear_ok(db_next(c, err)) < 0) || (r = db_next(c, err)) == NULL ||
		    read_keys(b, c, err) < 0)
			goto fail;
		db_pipeline_end(c);
		if (db_pipeline_begin(c, err) < 0)
			goto fail;
	}
	for (size_t i = 0; i < b->n; i++)
		n_pending += b->state[i] == 0;
	snprintf(nbuf, sizeof(nbuf), "%zu", n_pending);
	p[0] = writer;
	if (send_seen(b, c, &seen_a, err) < 0 || send_accounts(b, c, &accts_a, err) < 0 ||
	    db_send(c, "u_chain_lock", NULL, 1, p, err) < 0 || db_send(c, "u_head", NULL, 1, p, err) < 0)
		goto fail;
	p[0] = nbuf;
	if (db_send(c, "u_txn_ids", NULL, 1, p, err) < 0 || db_pipeline_sync(c, err) < 0)
		goto fail;
	if (!has_keys && (clear_ok(db_next(c, err)) < 0 || (r = db_next(c, err)) == NULL))
		goto fail;
	if (read_seen(c, &seen, err) < 0 || read_accounts(b, c, err) < 0 ||
	    read_chain(c, writer, &ch, n_pending, err) < 0)
		goto fail;
	db_pipeline_end(c);
	if (reload_prices(c, strtoll(PQgetvalue(r, 0, 0), NULL, 10), err) < 0) {
		if (err->status != 503)
			error_set(err, 503, "unavailable", "cannot load prices");
		rc = -2;
		goto fail;
	}
	if (find_replays(b, c, seen, seen_a.data, err) < 0)
		goto fail;
	check_accounts(b);
	if (charge_items(b, now, err) < 0)
		goto fail;
	if (b->n_txns == 0) {
		if (db_exec(c, "COMMIT", 0, NULL, err) < 0)
			goto fail;
		rc = 0;
		goto out;
	}
	/* with a synchronous standby (pg_standby_confirm_ms) the COMMIT goes
	 * through db_exec, which bounds its wait for the standby and confirms
	 * that one has it: one round trip more, never a 200 on the primary alone */
	commit_apart = db_standby_confirm() > 0;
	/* the writers' turn goes back once the statements have run, before the
	 * COMMIT: the next writer's statements run during this one's WAL flush
	 * and answers (dbpool_turn_unlock_sql) */
	unlock = dbpool_turn_unlock_sql(c);
	if (db_pipeline_begin(c, err) < 0 || send_records(b, c, writer, keys, &ch, &ja, rec_a, err) < 0 ||
	    (unlock && db_send(c, NULL, unlock, 0, NULL, err) < 0) || db_pipeline_flush(c, err) < 0)
		goto fail;
	/* the balance mirror's load generations, read before COMMIT and only
	 * now that the accounts' rows are locked FOR UPDATE (read_accounts): read
	 * while the lock was still being waited for, a locked load that held the
	 * row FOR SHARE could store its mirror (without this charge) and its new
	 * generation in between, and the settle would then skip the charge as
	 * already in the mirror (faults-short: a mirror above the ledger).
	 * Read while PostgreSQL runs the inserts just sent: Redis's round trip
	 * is off the batch's path. */
	reached = read_load_generations(b->w, b->items, b->state, b->n);
	if ((!commit_apart &&
	     (db_send(c, NULL, "COMMIT", 0, NULL, err) < 0 || send_notify(c, writer, reached, &ja, err) < 0)) ||
	    db_pipeline_sync(c, err) < 0)
		goto fail;
	for (int k = 0; k < 3; k++)
		if (clear_ok(db_next(c, err)) < 0)
			goto fail;
	if (unlock) {
		PGresult *u = db_next(c, err);
		if (!u)
			goto fail;
		dbpool_turn_unlocked(u);
		PQclear(u);
	}
	if (!commit_apart && clear_ok(db_next(c, err)) < 0)
		goto fail;
	if (!commit_apart) {
		struct error nerr = {0};
		if (!notify_done(db_next(c, &nerr), &nerr))
			notify_lost(b);
	}
	db_pipeline_end(c);
	if (commit_apart) {
		struct db_params np;
		struct error nerr = {0};
		if (db_exec(c, "COMMIT", 0, NULL, err) < 0)
			goto fail;
		journal_notify_params(&ja, writer, &np);
		if (!notify_done(db_query_params(c, JOURNAL_SQL_NOTIFY, &np, &nerr), &nerr))
			notify_lost(b);
	}
	rc = 0;
	goto out;
fail:
	db_pipeline_end(c);
	db_exec_quiet(c, "ROLLBACK");
out:
	PQclear(r);
	buf_release(&keys_a);
	buf_release(&seen_a);
	buf_release(&accts_a);
	for (int k = 0; k < NR; k++)
		pgarr_release(&rec_a[k]);
	journal_arrays_release(&ja);
	free(ch.txn_ids);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < b->n; i++) {
		if (b->state[i] == 3) {
			struct usage_item *src = b->items[b->dup_of[i]];
			b->items[i]->account_id = src->account_id;
			if (src->response) {
				b->items[i]->response = replay_response(src->response);
				b->items[i]->duplicate = true;
			} else {
				b->items[i]->job.err = src->job.err;
			}
		}
	}
	return 0;
}

static void fail_all(struct dbjob **jobs, size_t n, const struct error *err)
{
	for (size_t i = 0; i < n; i++) {
		struct usage_item *it = (struct usage_item *)jobs[i];
		usage_item_release(it);
		it->job.err = *err;
	}
}

void usage_write_batch(struct dbjob **jobs, size_t n, PGconn *c, const char *writer, void *arg)
{
	struct usage_writer *w = arg;
	struct error err = {0};
	struct batch b;
	char **keys = NULL;
	int64_t t0 = time_now_us();
	int attempt;

	if (n == 0) {
		/* the pool's thread is leaving: drop its price list and Redis connection */
		rclient_free(t_redis);
		t_redis = NULL;
		free(t_prices);
		t_prices = NULL;
		t_n_prices = 0;
		t_prices_version = -1;
		return;
	}
	if (!c) {
		error_set(&err, 503, "unavailable", "the ledger database is unreachable");
		fail_all(jobs, n, &err);
		return;
	}
	memset(&b, 0, sizeof(b));
	b.w = w;
	b.items = (struct usage_item **)jobs;
	b.n = n;
	b.state = calloc(n, sizeof(*b.state));
	b.dup_of = calloc(n, sizeof(*b.dup_of));
	b.accts = calloc(n, sizeof(*b.accts));
	b.txns = calloc(n, sizeof(*b.txns));
	b.details = calloc(n, sizeof(*b.details));
	b.txn_item = calloc(n, sizeof(*b.txn_item));
	keys = calloc(n, sizeof(*keys));
	if (!b.state || !b.dup_of || !b.accts || !b.txns || !b.details || !b.txn_item || !keys) {
		error_set(&err, 503, "unavailable", "out of memory");
		fail_all(jobs, n, &err);
		goto done;
	}
	for (attempt = 0;; attempt++) {
		int rc = try_batch(&b, c, writer, keys, &err);
		if (rc == 0)
			break;
		if (rc == -2) {
			fail_all(jobs, n, &err);
			goto done;
		}
		if (db_conn_broken(c)) {
			/* the commit may or may not have happened: a retry with the same request_id is safe */
			error_set(&err, 503, "unavailable", "the ledger database connection was lost");
			fail_all(jobs, n, &err);
			goto done;
		}
		if (err.status == 503) {
			/* no standby confirmed the commit (pg_standby_confirm_ms): the same for every record */
			fail_all(jobs, n, &err);
			goto done;
		}
		if (db_error_retryable(&err) && attempt < 5)
			continue;
		log_error("usage batch failed", "records=%zu code=%s error=\"%s\"", n, err.code, err.msg);
		if (n > 1) {
			/* isolate the record that fails: each alone */
			for (size_t i = 0; i < n; i++)
				usage_write_batch(&jobs[i], 1, c, writer, arg);
		} else {
			if (err.status != 503)
				error_set(&err, 500, "internal", "the record could not be written");
			fail_all(jobs, n, &err);
		}
		goto done;
	}
	if (w->metrics) {
		metrics_batch(w->metrics, n, time_now_us() - t0);
		for (size_t t = 0; t < b.n_txns; t++) {
			struct usage_item *it = b.items[b.txn_item[t]];
			metrics_billed(w->metrics, it->r.model, it->cost_nanos);
		}
	}
done:
	if (b.details)
		for (size_t i = 0; i < n; i++)
			buf_release(&b.details[i]);
	if (keys)
		for (size_t i = 0; i < n; i++)
			free(keys[i]);
	free(keys);
	free(b.state);
	free(b.dup_of);
	free(b.accts);
	free(b.buckets);
	free(b.txns);
	free(b.posts);
	free(b.details);
	free(b.txn_item);
}
