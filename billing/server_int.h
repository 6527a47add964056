/* server_int.h: the state of one billingd (struct server) that its modules
 * share: server.c (routes, maintenance), authorize.c, inference.c,
 * stream.c.  A header only: it calls nothing, so a module that reads the
 * state does not depend on server.c (which includes every module).  Event
 * loop thread only. */
#ifndef BILLING_SERVER_INT_H
#define BILLING_SERVER_INT_H

#include <event2/http.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "billing/usage/dbpool.h"
#include "billing/http/http.h"
#include "billing/usage/usage.h"
#include "common/error.h"
#include "common/memtrim.h"
#include "ledger/apikey.h"

struct authz_state;
struct inference;
struct stream;
struct usage_item;

#define SERVER_MAX_WRITERS 64

struct server {
	struct event_base *base;
	struct config *cfg;
	struct evhttp *http;
	struct evhttp_bound_socket *sock;
	struct conns *conns;
	struct tokens *gw, *admin;
	uint8_t pepper[APIKEY_PEPPER_BYTES];
	struct dbpool *pool;
	/* the usage writers (writer_threads): one thread, queue and hash chain
	 * each; a record goes to the writer of its account (server_writer) */
	struct dbpool *writers[SERVER_MAX_WRITERS];
	int n_writers;
	bool single_writer; /* config single_writer: server_single_writer */
	size_t single_max;  /* records the first writer takes before others do */
	struct usage_writer *uw;
	struct rconn *redis;
	struct metrics *metrics;
	struct http_front front; /* metrics and requests in flight (http.c) */
	int64_t busy; /* work to finish before exit that no request waits for (chat calls whose client left) */
	bool draining, closing;
	int64_t drain_deadline_us;
	struct event *drain_timer, *gauge_timer;
	struct memtrim trim; /* gives memory back after a surge (gauge_cb) */
	struct maint *maint; /* the ledger's upkeep (maint.c) */
	bool referral_on_topup;
	int64_t max_topup_nanos, max_grant_nanos; /* config max_topup, max_grant */
	/* authorization (authorize.c) */
	struct authz_state *az;
	/* embedded model (inference.c) */
	struct inference *inf;
	/* usage from a Redis Stream (stream.c) */
	struct stream *stream;
};

/* The usage writer of a record: by its account_id, or by its api key's hash
 * when it names no account.  Batch and stream records of one account meet
 * in one writer (single records need not: server_single_writer). */
static inline struct dbpool *server_writer(struct server *s, const struct usage_req *r)
{
	uint64_t k;

	if (r->has_key)
		memcpy(&k, r->key_hash, sizeof(k));
	else
		k = (uint64_t)r->account_id;
	return s->writers[k % (uint64_t)s->n_writers];
}

/* The writer of a single record (POST /v1/usage): the first while it holds
 * fewer than single_max records (batch_max, or its share of queue_max if
 * smaller), unless single_writer is off.  Its batches are then as large as
 * the single records in flight, not a share of them (docs/billingd.md,
 * "Writers take turns").  Past that, the writer holding the fewest: a
 * surge spreads over every writer and is refused only when all of
 * queue_max waits, as by account.  An account's single records and its
 * batch records may meet in two writers, which then wait for each other's
 * row locks as two instances' writers do. */
static inline struct dbpool *server_single_writer(struct server *s, const struct usage_req *r)
{
	struct dbpool *best;
	size_t d, least;

	if (!s->single_writer)
		return server_writer(s, r);
	least = dbpool_depth(s->writers[0]);
	if (least < s->single_max)
		return s->writers[0];
	best = s->writers[0];
	for (int w = 1; w < s->n_writers; w++)
		if ((d = dbpool_depth(s->writers[w])) < least) {
			least = d;
			best = s->writers[w];
		}
	return best;
}

#endif
