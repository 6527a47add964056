/* authorize.h: authorization of model calls (authorize.c): the key and
 * account caches, limits, the Redis holds and the balance mirror, settling
 * a recorded call.  Event loop thread only. */
#ifndef BILLING_AUTHORIZE_H
#define BILLING_AUTHORIZE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "billing/http/http.h"
#include "common/error.h"

struct server;
struct usage_item;

int authz_init(struct server *s, struct error *err) __attribute__((warn_unused_result));
/* This process's database (ledger/db.h db_identity), set once before
 * authz_init: each new connection to Redis checks the Redis still holds
 * this database's mirrors (common/rclient.h rclient_redis_owner; billingd
 * checked it at start, billing/main.c). */
void authz_set_db_identity(const char *ident);
/* A new connection found the Redis holding another database's mirrors:
 * no decision, settle, mirror drop or held read goes to it (authorize
 * answers 503, /readyz 503) until billingd is restarted. */
bool authz_redis_foreign(void);
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
/* The same for a charge we committed but may not have settled (its settle
 * failed, or the commit's answer was lost): also announced at once to the
 * other instances through PostgreSQL, naming no Redis, so one that kept the
 * mirror on our writer's word drops it while our own path to Redis is down. */
void authz_forget_announce(struct server *s, int64_t account);
/* The same, now: done(arg) once Redis has dropped the mirror (or failed to,
 * then the account is left for the next tick), so an answer sent from done
 * is never followed by a decision on the old balance. */
void authz_forget_then(struct server *s, int64_t account, void (*done)(void *arg), void *arg);
/* The account's live held amount (its unexpired holds in Redis): done(arg,
 * true, held), or done(arg, false, 0) when Redis cannot tell; done may run
 * before authz_held returns. */
typedef void (*authz_held_fn)(void *arg, bool known, int64_t held);
void authz_held(struct server *s, int64_t account, authz_held_fn done, void *arg);
/* authz_settle, then authz_held of its account, as one entry of a grouped
 * Redis call (quota_settles: the usage answers of one loop turn in one
 * script call per connection, per slot on a cluster).  done runs once, never
 * before this returns unless Redis is not configured, the server is closing
 * or memory ran out (then the two run on their own as before). */
void authz_settle_held(struct server *s, const struct usage_item *it, authz_held_fn done, void *arg);
/* Sets held_nanos, available_nanos (paid + promo - held) and held_known of
 * a balance object; unknown: both null and a note saying why. */
void balance_set_held(json_t *balance, bool known, int64_t held);

#endif
