/* stream.c: see stream.h. */
#include "billing/usage/stream.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "billing/authz/authorize.h"
#include "billing/server_int.h"
#include "billing/usage/usage.h"
#include "common/config.h"
#include "common/log.h"
#include "common/rclient.h"
#include "common/timeutil.h"

#define STREAM_BATCH 256

struct stream {
	struct server *s;
	char key[200], dead[220], group[100], consumer[160];
	char *redis; /* the `redis` setting: one server or cluster seeds */
	int64_t claim_ms;
	pthread_t th;
	volatile int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t pending; /* items of the current batch not done yet */
};

struct sitem {
	struct usage_item it; /* first: the writer hands back &it.job */
	struct stream *st;
	char id[64];
	int state; /* 0 waiting, 1 done */
	int parse_failed;
};

/* event loop: a record of ours is answered */
static void item_done(struct dbjob *job)
{
	struct sitem *x = (struct sitem *)job;
	struct stream *st = x->st;

	if (!x->it.job.err.status)
		authz_settle(st->s, &x->it);
	else if (x->it.job.err.status == 503 && x->it.account_id > 0)
		/* a lost connection may have committed it (as on the HTTP path,
		 * server.c): its replay applies nothing, so the mirror must not
		 * be left missing the charge */
		authz_forget_announce(st->s, x->it.account_id);
	pthread_mutex_lock(&st->mu);
	x->state = 1;
	st->pending--;
	pthread_cond_signal(&st->cv);
	pthread_mutex_unlock(&st->mu);
}

/* A command by argv (routed by its key in a cluster); NULL on failure. */
static redisReply *cmd(struct rclient *c, int argc, const char **argv)
{
	struct error err;
	redisReply *r = rclient_commandv(c, argc, argv, NULL, &err);

	if (!r)
		log_warn("usage stream redis command failed", "command=%s error=\"%s\"", argv[0], err.msg);
	return r;
}

/* The client (5 s timeout: more than the BLOCK time of XREADGROUP) and the
 * consumer group. */
static struct rclient *connect_redis(struct stream *st)
{
	struct error err;
	struct rclient *c = rclient_new(st->redis, 5000, &err);
	const char *argv[] = {"XGROUP", "CREATE", st->key, st->group, "0", "MKSTREAM"};
	redisReply *r;

	if (!c)
		return NULL;
	if (rclient_connect(c, &err) < 0) {
		rclient_free(c);
		return NULL;
	}
	r = cmd(c, 6, argv);
	if (!r) {
		rclient_free(c);
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
		log_warn("usage stream group", "error=\"%s\"", r->str);
	freeReplyObject(r);
	return c;
}

static const char *field(redisReply *fields, const char *name, size_t *len)
{
	for (size_t i = 0; fields && i + 1 < fields->elements; i += 2)
		if (fields->element[i]->type == REDIS_REPLY_STRING && strcmp(fields->element[i]->str, name) == 0 &&
		    fields->element[i + 1]->type == REDIS_REPLY_STRING) {
			*len = (size_t)fields->element[i + 1]->len;
			return fields->element[i + 1]->str;
		}
	return NULL;
}

/* Processes entries (an array of [id, [field, value, ...]]); XACKs what is
 * settled for good.  Returns the number of entries, -1 on a Redis error. */
static int process(struct stream *st, struct rclient *c, redisReply *entries)
{
	size_t n = entries ? entries->elements : 0, k = 0;
	struct sitem *items;
	int64_t now = time_now_us();

	if (n == 0)
		return 0;
	items = calloc(n, sizeof(*items));
	if (!items)
		return -1;
	pthread_mutex_lock(&st->mu);
	st->pending = 0;
	pthread_mutex_unlock(&st->mu);
	for (size_t i = 0; i < n; i++) {
		redisReply *e = entries->element[i];
		struct sitem *x = &items[k];
		json_error_t je;
		json_t *body;
		const char *b;
		size_t blen = 0;

		if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING)
			continue;
		k++;
		x->st = st;
		snprintf(x->id, sizeof(x->id), "%s", e->element[0]->str);
		x->it.job.done = item_done;
		b = field(e->element[1], "body", &blen);
		body = b ? json_loadb(b, blen, JSON_REJECT_DUPLICATES, &je) : NULL;
		if (!body) {
			error_set(&x->it.job.err, 400, "invalid_request", "entry has no JSON field 'body'");
			x->state = 1;
			x->parse_failed = 1;
			continue;
		}
		if (usage_parse(body, now, st->s->pepper, &x->it.r, &x->it.job.err) < 0) {
			json_decref(body);
			x->state = 1;
			x->parse_failed = 1;
			continue;
		}
		json_decref(body);
		usage_body_hash(&x->it.r, x->it.body_hash);
		pthread_mutex_lock(&st->mu);
		st->pending++;
		pthread_mutex_unlock(&st->mu);
		if (dbpool_submit(server_writer(st->s, &x->it.r), &x->it.job) < 0) {
			pthread_mutex_lock(&st->mu);
			st->pending--;
			pthread_mutex_unlock(&st->mu);
			error_set(&x->it.job.err, 503, "unavailable", "queue full");
			x->state = 1;
		}
	}
	pthread_mutex_lock(&st->mu);
	while (st->pending > 0)
		pthread_cond_wait(&st->cv, &st->mu);
	pthread_mutex_unlock(&st->mu);
	for (size_t i = 0; i < k; i++) {
		struct sitem *x = &items[i];
		int status = x->it.job.err.status;
		redisReply *r;

		if (status >= 500)
			continue; /* stays pending: read again, retried safely */
		if (status) {
			char msg[700];
			const char *add[] = {"XADD", st->dead,    "MAXLEN", "~",     "100000",
					     "*",    "source_id", x->id,    "error", msg};
			snprintf(msg, sizeof(msg), "%d %s: %s", status, x->it.job.err.code, x->it.job.err.msg);
			r = cmd(c, 10, add);
			freeReplyObject(r);
			log_warn("usage stream entry refused", "id=%s status=%d code=%s", x->id, status,
				 x->it.job.err.code);
		}
		const char *ack[] = {"XACK", st->key, st->group, x->id};
		r = cmd(c, 4, ack);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			freeReplyObject(r);
			for (size_t j = 0; j < k; j++)
				usage_item_release(&items[j].it);
			free(items);
			return -1;
		}
		freeReplyObject(r);
	}
	for (size_t j = 0; j < k; j++)
		usage_item_release(&items[j].it);
	free(items);
	return (int)k;
}

static void *run(void *arg)
{
	struct stream *st = arg;
	struct rclient *c = NULL;
	int64_t last_claim = 0;
	int own_pending = 1; /* at start: our own unacknowledged entries first */

	while (!st->stop) {
		redisReply *r = NULL, *entries = NULL;

		if (!c) {
			c = connect_redis(st);
			if (!c) {
				sleep(1);
				continue;
			}
			own_pending = 1;
		}
		if (time_now_us() - last_claim > st->claim_ms * 1000 / 2) {
			/* a dead consumer's entries, idle long enough */
			char idle[32], count[16];
			const char *claim[] = {"XAUTOCLAIM", st->key, st->group, st->consumer,
					       idle,         "0-0",   "COUNT",   count};
			snprintf(idle, sizeof(idle), "%" PRId64, st->claim_ms);
			snprintf(count, sizeof(count), "%d", STREAM_BATCH);
			r = cmd(c, 8, claim);
			last_claim = time_now_us();
			if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[1]->elements > 0) {
				log_info("usage stream entries taken over", "count=%zu", r->element[1]->elements);
				if (process(st, c, r->element[1]) < 0) {
					freeReplyObject(r);
					rclient_free(c);
					c = NULL;
					continue;
				}
			}
			freeReplyObject(r);
			r = NULL;
		}
		{
			char count[16];
			const char *rd[] = {
				"XREADGROUP", "GROUP",   st->group, st->consumer,           "COUNT", count, "BLOCK",
				"1000",       "STREAMS", st->key,   own_pending ? "0" : ">"};
			snprintf(count, sizeof(count), "%d", STREAM_BATCH);
			r = cmd(c, 11, rd);
		}
		if (!r || r->type == REDIS_REPLY_ERROR) {
			/* the stream's node is gone (or the group with it): start
			 * again, after a pause, with a new client */
			freeReplyObject(r);
			rclient_free(c);
			c = NULL;
			sleep(1);
			continue;
		}
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2)
			entries = r->element[0]->element[1];
		/* our own pending entries are read once (after a start or a
		 * reconnect); what stays pending (5xx) is retried by XAUTOCLAIM */
		own_pending = 0;
		if (entries && process(st, c, entries) < 0) {
			rclient_free(c);
			c = NULL;
		}
		freeReplyObject(r);
	}
	rclient_free(c);
	return NULL;
}

int stream_new(struct server *s, struct stream **out, struct error *err)
{
	const char *key = config_get(s->cfg, "usage_stream");
	struct stream *st;
	struct error ce;
	int64_t claim_ms;
	char *redis;

	*out = NULL;
	if (!*key)
		return 0;
	if (config_get_int(s->cfg, "usage_stream_claim_ms", 100, 86400000, &claim_ms, &ce) < 0)
		return error_set(err, 500, "config", "%s", ce.msg);
	st = calloc(1, sizeof(*st));
	redis = strdup(config_get(s->cfg, "redis"));
	if (!st || !redis) {
		free(st);
		free(redis);
		return error_set(err, 500, "oom", "out of memory");
	}
	st->s = s;
	st->claim_ms = claim_ms;
	st->redis = redis;
	snprintf(st->key, sizeof(st->key), "%s", key);
	snprintf(st->dead, sizeof(st->dead), "%s:dead", key);
	snprintf(st->group, sizeof(st->group), "%s", config_get(s->cfg, "usage_stream_group"));
	snprintf(st->consumer, sizeof(st->consumer), "%s", config_get(s->cfg, "instance_id"));
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	pthread_create(&st->th, NULL, run, st);
	log_info("usage stream consumer started", "stream=%s group=%s consumer=%s", st->key, st->group, st->consumer);
	*out = st;
	return 0;
}

void stream_stop(struct stream *st)
{
	if (st)
		st->stop = 1;
}

void stream_free(struct stream *st)
{
	if (!st)
		return;
	st->stop = 1;
	pthread_join(st->th, NULL);
	pthread_mutex_destroy(&st->mu);
	pthread_cond_destroy(&st->cv);
	free(st->redis);
	free(st);
}
