/* usage.h: usage records: parsing and validation (pure), and the group
 * commit writer that prices, charges and journals them (pool thread).
 *
 * A usage_item is owned by whoever submitted it; the writer fills its
 * result (response JSON or job.err) and the pool calls job.done on the loop. */
#ifndef BILLING_USAGE_H
#define BILLING_USAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "billing/usage/dbpool.h"
#include "billing/usage/pricing.h"
#include "common/error.h"
#include "common/money.h"

#define USAGE_MAX_AGE_US (35LL * 86400 * 1000000)
#define USAGE_MAX_AHEAD_US (5LL * 60 * 1000000)

struct usage_req {
	char request_id[201];
	bool has_key;
	uint8_t key_hash[32]; /* keyed hash of api_key; the key itself is not kept */
	int64_t account_id;   /* 0 when given by api_key */
	char model[201];
	int64_t input_tokens, cached_input_tokens, output_tokens;
	int64_t started_at_us;
	char hold_id[201]; /* as long as an authorize request_id */
	char status[33];
};

/* Validates a usage body.  400 invalid_request for missing or ill-typed
 * fields (a real number where an integer belongs included); 422
 * invalid_tokens / invalid_started_at for values out of range.  pepper
 * hashes the api_key. */
int usage_parse(const json_t *body, int64_t now_us, const uint8_t pepper[32], struct usage_req *out, struct error *err)
	__attribute__((warn_unused_result));
/* BLAKE2b-256 over the normalized fields: a replay must match it. */
void usage_body_hash(const struct usage_req *r, uint8_t out[32]);

struct usage_item {
	struct dbjob job; /* first member: the pool hands back &job */
	struct usage_req r;
	uint8_t body_hash[32];
	/* results (writer thread) */
	char *response; /* owned JSON text on success or replay */
	bool duplicate;
	int64_t account_id;
	int64_t cost_nanos;
	int64_t price_version;
	int64_t d_paid, d_promo; /* what the charge moved (negative), for the balance mirror */
	int64_t mirror_lgen;     /* the mirror's load generation read before COMMIT, -1 unknown */
	/* committed, but the batch's NOTIFY failed: the loop announces the
	 * account (authz_settle: the other instances drop their mirrors) */
	bool notify_lost;
	/* a fresh charge's answer (not a replay): where its "balance" member
	 * starts in response, and the balance it shows; 0 for any other answer */
	size_t balance_at;
	money_total paid_after, promo_after; /* exact, beyond int64 too */
	/* owner's */
	void *owner;
	size_t index;
};

struct usage_writer;
struct metrics;

/* redis: host:port of the balance mirror (read before each COMMIT). */
struct usage_writer *usage_writer_new(struct metrics *m, const char *redis) __attribute__((warn_unused_result));
void usage_writer_free(struct usage_writer *w);
/* The dbpool batch function; arg is the usage_writer.  n == 0: the calling
 * thread is about to exit (frees its per-thread state). */
void usage_write_batch(struct dbjob **jobs, size_t n, PGconn *c, const char *writer, void *arg);
/* Frees the item's results (not the item). */
void usage_item_release(struct usage_item *it);

/* An answer's balance when the live holds cannot be read (Redis down). */
#define USAGE_HELD_UNKNOWN_NOTE \
	"the live holds are kept in Redis, which cannot be reached now: held and available amounts are unknown"
/* A fresh charge's answer with the account's live held amount (known) or
 * without it: rewrites it->response in place of a decode and an encode,
 * with the members, their order and their values balance_set_held() gives.
 * -1 (nothing changed) for an answer it did not build (replays). */
int usage_answer_held(struct usage_item *it, bool known, int64_t held);

#endif
