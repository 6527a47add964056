/* chatauth.c: see chatauth.h. */
#include "billing/infer/chatauth.h"
#include "billing/server_int.h"

#include <event2/http.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ledger/apikey.h"
#include "ledger/db.h"

struct keycheck {
	struct dbjob job;
	struct rctx *c;
	void (*next)(struct rctx *c);
	uint8_t hash[APIKEY_HASH_BYTES];
	bool ok;
};

static void keycheck_run(struct dbjob *job, PGconn *conn, const char *writer)
{
	struct keycheck *k = (struct keycheck *)job;
	char hex[2 * APIKEY_HASH_BYTES + 1];
	const char *p[1] = {hex};
	PGresult *r;

	(void)writer;
	if (!conn) {
		error_set(&k->job.err, 503, "unavailable", "the ledger database is unreachable");
		return;
	}
	sodium_bin2hex(hex, sizeof(hex), k->hash, sizeof(k->hash));
	r = db_query(conn, "SELECT 1 FROM api_keys WHERE key_hash = decode($1, 'hex') AND revoked_at IS NULL", 1, p,
		     &k->job.err);
	if (!r) {
		error_set(&k->job.err, 503, "unavailable", "the key lookup failed; retry");
		return;
	}
	k->ok = PQntuples(r) == 1;
	PQclear(r);
}

static void keycheck_done(struct dbjob *job)
{
	struct keycheck *k = (struct keycheck *)job;
	struct rctx *c = k->c;
	void (*next)(struct rctx *) = k->next;
	bool ok = k->ok;
	struct error e = k->job.err;

	free(k);
	if (e.status)
		return reply_error(c, &e);
	if (!ok) {
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "WWW-Authenticate", "Bearer");
		return reply_err(c, 401, "unauthorized", "unknown or revoked API key");
	}
	next(c);
}

void chatauth_check(struct rctx *c, const char *key, void (*next)(struct rctx *c))
{
	struct keycheck *k = calloc(1, sizeof(*k));

	if (!k)
		return reply_err(c, 503, "unavailable", "out of memory");
	k->job.run = keycheck_run;
	k->job.done = keycheck_done;
	k->c = c;
	k->next = next;
	apikey_hash(c->s->pepper, key, strlen(key), k->hash);
	if (dbpool_submit(c->s->pool, &k->job) < 0) {
		free(k);
		reply_err(c, 503, "unavailable", "the request queue is full");
	}
}
