/* server_int.h: what the HTTP modules of billingd share (server.c,
 * authorize.c).  Event loop thread only. */
#ifndef BILLING_SERVER_INT_H
#define BILLING_SERVER_INT_H

#include <event2/http.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "billing/dbpool.h"
#include "billing/server.h"
#include "common/error.h"
#include "ledger/apikey.h"

struct authz_state;
struct inference;
struct stream;
struct usage_item;

#define SERVER_MAX_WRITERS 64

struct usage_req;

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
	struct usage_writer *uw;
	struct rconn *redis;
	struct metrics *metrics;
	int64_t inflight;
	int64_t busy; /* work to finish before exit that no request waits for (chat calls whose client left) */
	bool draining, closing;
	int64_t drain_deadline_us;
	struct event *drain_timer, *gauge_timer, *expire_timer;
	bool expiring;
	bool referral_on_topup;
	int64_t max_topup_nanos, max_grant_nanos; /* config max_topup, max_grant */
	/* authorization (authorize.c) */
	struct authz_state *az;
	/* embedded model (inference.c) */
	struct inference *inf;
	/* usage from a Redis Stream (stream.c) */
	struct stream *stream;
};

/* One HTTP request in flight: owned by its handler until reply() frees it. */
struct rctx {
	struct server *s;
	struct evhttp_request *req;
	const char *route; /* static label for metrics */
	int64_t t0;
};

/* The usage writer of a record: by its account_id, or by its api key's hash
 * when it names no account.  Records of one account always meet in one
 * writer, so two writers of an instance never wait on each other's row
 * locks (the customer row, its balances). */
struct dbpool *server_writer(struct server *s, const struct usage_req *r);

struct rctx *rctx_new(struct server *s, struct evhttp_request *req, const char *route);
/* Sends the one reply of the request and frees c.  body is stolen. */
void reply(struct rctx *c, int status, json_t *body);
void reply_text(struct rctx *c, int status, const char *text, size_t len);
/* The client is gone (libevent freed the request): count it, free c. */
void rctx_drop(struct rctx *c);
/* Ends a reply started with evhttp_send_reply_start and frees c. */
void rctx_end_chunked(struct rctx *c, int status);
json_t *error_json(const struct error *e);
void reply_error(struct rctx *c, const struct error *e);
void reply_err(struct rctx *c, int status, const char *code, const char *msg);
/* The request body as a JSON object, or NULL with err (400/413). */
json_t *read_body(struct rctx *c, struct error *err);
int want_string(json_t *b, const char *k, bool required, size_t max, struct error *err);
int want_int(json_t *b, const char *k, bool required, int64_t min, int64_t max, struct error *err);

/* bodies.c: body checks without server state (the fuzz targets call them) */
struct authz_body {
	const char *request_id, *model, *api_key; /* borrowed from the body; api_key NULL or account_id > 0 */
	int64_t account_id, input_tokens, max_output_tokens;
};
/* POST /v1/authorize: 0, or -1 with 400 invalid_request / 422 invalid_tokens. */
int authz_body_parse(json_t *b, struct authz_body *out, struct error *err) __attribute__((warn_unused_result));
/* POST /v1/accounts: 0, or -1 with 400 invalid_request. */
int signup_body_check(json_t *b, struct error *err) __attribute__((warn_unused_result));

/* authorize.c */
int authz_init(struct server *s, struct error *err) __attribute__((warn_unused_result));
void authz_free(struct server *s);
void h_authorize(struct rctx *c);

/* The same decision for in-process callers (the embedded model).  done gets
 * the answer (status, body stolen, Retry-After seconds or NULL) once. */
typedef void (*authz_done_fn)(void *arg, int status, json_t *body, const char *retry_after);
struct authz_params {
	const char *request_id; /* copied */
	const char *model;      /* copied */
	int64_t input_tokens, max_output_tokens;
	bool has_key;
	bool key_is_bearer; /* the key authenticates the caller: 401 when bad */
	uint8_t key_hash[32];
	int64_t account_id;
};
int authz_start(struct server *s, const struct authz_params *p, authz_done_fn done, void *arg)
	__attribute__((warn_unused_result));
/* model has a price list entry (any version): billingd knows it. */
bool authz_model_known(struct server *s, const char *model);
/* After a usage record is answered: release its hold, apply its charge to the mirror. */
void authz_settle(struct server *s, const struct usage_item *it);
/* The account's mirror may have missed a change: drop it as soon as Redis answers. */
void authz_forget(struct server *s, int64_t account);
/* The same, now: done(arg) once Redis has dropped the mirror (or failed to,
 * then the account is left for the next tick), so an answer sent from done
 * is never followed by a decision on the old balance. */
void authz_forget_then(struct server *s, int64_t account, void (*done)(void *arg), void *arg);
/* The account's live held amount (its unexpired holds in Redis): done(arg,
 * true, held), or done(arg, false, 0) when Redis cannot tell; done may run
 * before authz_held returns. */
typedef void (*authz_held_fn)(void *arg, bool known, int64_t held);
void authz_held(struct server *s, int64_t account, authz_held_fn done, void *arg);
/* Sets held_nanos, available_nanos (paid + promo - held) and held_known of
 * a balance object; unknown: both null and a note saying why. */
void balance_set_held(json_t *balance, bool known, int64_t held);

#endif
