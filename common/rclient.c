/* rclient.c: see rclient.h. */
#include "common/rclient.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/buf.h"
#include "common/rkeys.h"
#include "common/rslot.h"
#include "common/timeutil.h"

#define MAX_NODES 64
#define MAX_REDIRECTS 5
#define RECONNECT_AFTER_US 500000 /* a node that refused is tried again after this */

enum mode { MODE_UNKNOWN, MODE_SINGLE, MODE_CLUSTER };

struct cnode {
	char host[256];
	int port;
	redisContext *ctx;
	int64_t retry_us;
	bool serves;
	/* ctx is lent to rclient_each_master's fn: closed meanwhile (by a
	 * command of fn's through this client: a lost connection, or one
	 * node_ctx found closed), it is kept here, unfreed, until fn returns */
	bool lent;
	redisContext *dropped;
};

struct rclient {
	int timeout_ms;
	int db;
	enum mode mode;
	struct cnode *nodes[MAX_NODES]; /* nodes[0..n_seeds) are the seeds */
	int n_nodes, n_seeds;
	int single;
	bool stale;        /* the slot map must be read again before the next command */
	uint64_t connects; /* rclient_connects */
	int16_t slots[RSLOT_N];
};

static int node_index(struct rclient *c, const char *host, int port)
{
	struct cnode *n;

	for (int i = 0; i < c->n_nodes; i++)
		if (c->nodes[i]->port == port && strcmp(c->nodes[i]->host, host) == 0)
			return i;
	if (c->n_nodes == MAX_NODES)
		return -1;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -1;
	snprintf(n->host, sizeof(n->host), "%s", host);
	n->port = port;
	c->nodes[c->n_nodes] = n;
	return c->n_nodes++;
}

struct rclient *rclient_new(const char *addr, int timeout_ms, struct error *err)
{
	struct rclient *c = calloc(1, sizeof(*c));
	struct rslot_addr *seeds = calloc(RSLOT_MAX_SEEDS, sizeof(*seeds));
	int n;

	if (!c || !seeds) {
		error_set(err, 0, "oom", "out of memory");
		goto fail;
	}
	n = rslot_parse_seeds(addr, seeds, RSLOT_MAX_SEEDS, err);
	if (n < 0)
		goto fail;
	c->timeout_ms = timeout_ms;
	c->db = seeds[0].db;
	for (int i = 0; i < RSLOT_N; i++)
		c->slots[i] = -1;
	for (int i = 0; i < n; i++)
		if (node_index(c, seeds[i].host, seeds[i].port) < 0) {
			error_set(err, 0, "oom", "out of memory");
			goto fail;
		}
	c->n_seeds = c->n_nodes;
	free(seeds);
	return c;
fail:
	free(seeds);
	rclient_free(c);
	return NULL;
}

void rclient_free(struct rclient *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n_nodes; i++) {
		if (c->nodes[i]->ctx)
			redisFree(c->nodes[i]->ctx);
		free(c->nodes[i]);
	}
	free(c);
}

static void node_close(struct cnode *n)
{
	if (n->ctx && n->lent && !n->dropped)
		n->dropped = n->ctx;
	else if (n->ctx)
		redisFree(n->ctx);
	n->ctx = NULL;
}

/* Whether a kept connection is still open for a command: between commands
 * the server never writes to it, so anything to read (end of file: a
 * restarted node, a timeout of the server's; or bytes) means it is not.  A
 * command sent on it would fail after the server may have run it, and a
 * caller cannot always resend (a write); found here, before any command, the
 * node is connected again instead. */
static bool conn_idle_and_open(const redisContext *ctx)
{
	struct pollfd p = {ctx->fd, POLLIN, 0};
	int rc;

	do
		rc = poll(&p, 1, 0);
	while (rc < 0 && errno == EINTR);
	return rc == 0;
}

static redisContext *node_ctx(struct rclient *c, struct cnode *n, struct error *err)
{
	struct timeval tv = {c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000};
	int64_t now = time_now_us();

	if (n->ctx && !n->ctx->err && conn_idle_and_open(n->ctx))
		return n->ctx;
	if (n->ctx && !n->ctx->err) /* closed by the server: connect again now */
		n->retry_us = 0;
	node_close(n);
	if (now < n->retry_us) {
		error_set(err, 503, "unavailable", "redis %s:%d: unreachable (retried shortly)", n->host, n->port);
		return NULL;
	}
	n->ctx = redisConnectWithTimeout(n->host, n->port, tv);
	if (!n->ctx || n->ctx->err || redisSetTimeout(n->ctx, tv) != REDIS_OK) {
		error_set(err, 503, "unavailable", "redis %s:%d connect: %s", n->host, n->port,
			  n->ctx ? n->ctx->errstr : "cannot allocate a context");
		node_close(n);
		n->retry_us = now + RECONNECT_AFTER_US;
		return NULL;
	}
	c->connects++;
	if (c->mode == MODE_SINGLE && c->db) {
		redisReply *r = redisCommand(n->ctx, "SELECT %d", c->db);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			error_set(err, 503, "unavailable", "redis SELECT %d: %s", c->db, r ? r->str : n->ctx->errstr);
			freeReplyObject(r);
			node_close(n);
			return NULL;
		}
		freeReplyObject(r);
	}
	return n->ctx;
}

static int map_node_cb(void *arg, const char *host, int port)
{
	void **a = arg;
	struct rclient *c = a[0];
	const struct cnode *from = a[1];

	return node_index(c, host[0] ? host : from->host, port);
}

/* Mode (first time) and slot map, from the first node that answers: seeds
 * first, then the nodes known from an earlier map. */
static int discover(struct rclient *c, struct error *err)
{
	error_set(err, 503, "unavailable", "redis: no address to try");
	for (int i = 0; i < c->n_nodes; i++) {
		struct cnode *n = c->nodes[i];
		redisContext *ctx = node_ctx(c, n, err);
		redisReply *r;
		void *arg[2] = {c, n};

		if (!ctx)
			continue;
		r = redisCommand(ctx, "CLUSTER SLOTS");
		if (!r) {
			error_set(err, 503, "unavailable", "redis %s:%d: %s", n->host, n->port, ctx->errstr);
			node_close(n);
			continue;
		}
		if (r->type == REDIS_REPLY_ERROR && c->mode != MODE_CLUSTER) {
			/* no cluster support: this server alone */
			freeReplyObject(r);
			if (c->mode == MODE_UNKNOWN && c->db)
				node_close(n); /* connected before the mode was known: again, with SELECT */
			c->mode = MODE_SINGLE;
			c->single = i;
			c->stale = false;
			return 0;
		}
		if (rslot_parse_slots(r, map_node_cb, arg, c->slots) == 0) {
			freeReplyObject(r);
			if (c->db) {
				return error_set(err, 0, "invalid_config", "redis: a cluster has no database %d",
						 c->db);
			}
			c->mode = MODE_CLUSTER;
			for (int k = 0; k < c->n_nodes; k++)
				c->nodes[k]->serves = false;
			for (int s = 0; s < RSLOT_N; s++)
				if (c->slots[s] >= 0)
					c->nodes[c->slots[s]]->serves = true;
			c->stale = false;
			return 0;
		}
		error_set(err, 503, "unavailable", "redis %s:%d: unreadable CLUSTER SLOTS answer", n->host, n->port);
		freeReplyObject(r);
	}
	return -1;
}

int rclient_connect(struct rclient *c, struct error *err)
{
	if (c->mode != MODE_UNKNOWN && !c->stale)
		return 0;
	return discover(c, err);
}

/* The node for a command (by its key's slot; a keyless command: any node
 * serving), reading the map if needed.  The slot is worked out only on a
 * cluster: a single server takes every command. */
static struct cnode *target(struct rclient *c, const struct rclient_cmd *cmd, struct error *err)
{
	int slot;

	if ((c->mode == MODE_UNKNOWN || c->stale) && discover(c, err) < 0 && c->mode == MODE_UNKNOWN)
		return NULL;
	if (c->mode == MODE_SINGLE)
		return c->nodes[c->single];
	slot = rslot_command(cmd->argc, cmd->argv, cmd->argvlen);
	if (slot < 0) {
		for (int i = 0; i < c->n_nodes; i++)
			if (c->nodes[i]->serves)
				return c->nodes[i];
	} else if (c->slots[slot] >= 0) {
		return c->nodes[c->slots[slot]];
	}
	c->stale = true;
	error_set(err, 503, "unavailable", "redis cluster: slot %d is not served", slot);
	return NULL;
}

static void nap_us(long us)
{
	struct timespec ts = {0, us * 1000};
	nanosleep(&ts, NULL);
}

/* Follows a redirection or TRYAGAIN answer: 1 for MOVED/ASK, 2 for TRYAGAIN
 * (r freed, *n and *asking set for the next attempt), 0 when r is the answer. */
static int redirected(struct rclient *c, redisReply *r, struct cnode **n, bool *asking, int64_t started, bool may_move)
{
	struct rslot_addr to;
	int slot, kind, i;

	if (c->mode != MODE_CLUSTER || !r || r->type != REDIS_REPLY_ERROR)
		return 0;
	kind = rslot_parse_redirect(r->str, &slot, &to);
	if (kind) {
		i = may_move ? node_index(c, to.host, to.port) : -1;
		if (i < 0)
			return 0;
		if (kind == 1) {
			c->slots[slot] = (int16_t)i;
			c->nodes[i]->serves = true;
			c->stale = true;
		}
		*n = c->nodes[i];
		*asking = kind == 2;
		freeReplyObject(r);
		return 1;
	}
	if (strncmp(r->str, "TRYAGAIN", 8) == 0 && time_now_us() - started < (int64_t)c->timeout_ms * 1000) {
		nap_us(20000);
		*asking = false;
		freeReplyObject(r);
		return 2;
	}
	if (strncmp(r->str, "CLUSTERDOWN", 11) == 0)
		c->stale = true;
	return 0;
}

static redisReply *send_one(struct rclient *c, struct cnode *n, bool asking, const struct rclient_cmd *cmd,
			    struct error *err)
{
	redisContext *ctx = node_ctx(c, n, err);
	redisReply *r;

	if (!ctx) {
		c->stale = c->mode == MODE_CLUSTER;
		return NULL;
	}
	if (asking) {
		r = redisCommand(ctx, "ASKING");
		freeReplyObject(r);
	}
	r = redisCommandArgv(ctx, cmd->argc, cmd->argv, cmd->argvlen);
	if (!r) {
		error_set(err, 503, "unavailable", "redis %s:%d: %s", n->host, n->port, ctx->errstr);
		node_close(n);
		c->stale = c->mode == MODE_CLUSTER;
	}
	return r;
}

static redisReply *command(struct rclient *c, const struct rclient_cmd *cmd, struct error *err)
{
	int64_t started = time_now_us();
	struct cnode *n = target(c, cmd, err);
	bool asking = false;
	int moves = 0, k;
	redisReply *r;

	if (!n)
		return NULL;
	for (;;) {
		r = send_one(c, n, asking, cmd, err);
		k = redirected(c, r, &n, &asking, started, moves < MAX_REDIRECTS);
		if (k == 0)
			return r;
		moves += k == 1;
	}
}

redisReply *rclient_commandv(struct rclient *c, int argc, const char **argv, const size_t *argvlen, struct error *err)
{
	struct rclient_cmd cmd = {argc, argv, argvlen};

	return command(c, &cmd, err);
}

void rclient_format(struct buf *out, const struct rclient_cmd *cmd)
{
	buf_append(out, "*", 1);
	buf_put_i64(out, cmd->argc);
	buf_append(out, "\r\n", 2);
	for (int a = 0; a < cmd->argc; a++) {
		size_t len = cmd->argvlen ? cmd->argvlen[a] : strlen(cmd->argv[a]);
		buf_append(out, "$", 1);
		buf_put_i64(out, (int64_t)len);
		buf_append(out, "\r\n", 2);
		buf_append(out, cmd->argv[a], len);
		buf_append(out, "\r\n", 2);
	}
}

int rclient_pipeline(struct rclient *c, size_t n, const struct rclient_cmd *cmds, redisReply **replies,
		     struct error *err)
{
	struct cnode **to = calloc(n ? n : 1, sizeof(*to));
	int ret = 0;

	if (!to) {
		return error_set(err, 0, "oom", "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		replies[i] = NULL;
		to[i] = target(c, &cmds[i], err);
	}
	/* append each node's commands, then read each node's answers in order */
	for (int k = 0; k < c->n_nodes; k++) {
		struct cnode *nd = c->nodes[k];
		redisContext *ctx = NULL;
		size_t sent = 0;

		struct buf out;

		/* the node's commands in RESP, as redisAppendCommandArgv writes each,
		 * appended in one piece (hiredis's sds formatting a command cost
		 * more than the command's own bytes: a record's HGET in usage.c) */
		buf_init(&out);
		for (size_t i = 0; i < n; i++) {
			if (to[i] != nd)
				continue;
			if (!ctx && !(ctx = node_ctx(c, nd, err)))
				break;
			rclient_format(&out, &cmds[i]);
			sent++;
		}
		if (sent && redisAppendFormattedCommand(ctx, out.data, out.len) != REDIS_OK) {
			/* hiredis's output buffer could not grow: the caller gets -1
			 * and a reason, as for a lost connection */
			error_set(err, 503, "unavailable", "redis %s:%d: %s", nd->host, nd->port,
				  ctx->errstr[0] ? ctx->errstr : "out of memory");
			sent = 0;
		}
		buf_release(&out);
		for (size_t i = 0; i < n && sent > 0; i++) {
			if (to[i] != nd)
				continue;
			sent--;
			if (redisGetReply(ctx, (void **)&replies[i]) != REDIS_OK) {
				error_set(err, 503, "unavailable", "redis %s:%d: %s", nd->host, nd->port, ctx->errstr);
				replies[i] = NULL;
				node_close(nd);
				c->stale = c->mode == MODE_CLUSTER;
				break;
			}
		}
	}
	/* what was redirected (not run where it was sent) goes again, one by one */
	for (size_t i = 0; i < n; i++) {
		redisReply *r = replies[i];
		if (r && c->mode == MODE_CLUSTER && r->type == REDIS_REPLY_ERROR &&
		    (rslot_parse_redirect(r->str, &(int){0}, &(struct rslot_addr){0}) ||
		     strncmp(r->str, "TRYAGAIN", 8) == 0)) {
			freeReplyObject(r);
			replies[i] = command(c, &cmds[i], err);
		}
		if (!replies[i])
			ret = -1;
	}
	free(to);
	return ret;
}

int rclient_each_master(struct rclient *c, int (*fn)(redisContext *ctx, void *arg), void *arg, struct error *err)
{
	int ret = 0, rc;

	if ((c->mode == MODE_UNKNOWN || c->stale) && discover(c, err) < 0)
		return -1;
	/* a master that fails does not keep the others from being visited */
	for (int i = 0; i < c->n_nodes; i++) {
		struct cnode *n = c->nodes[i];
		redisContext *ctx;

		if (c->mode == MODE_SINGLE ? i != c->single : !n->serves)
			continue;
		ctx = node_ctx(c, n, err);
		if (!ctx) {
			ret = -1;
			continue;
		}
		/* fn's own commands through c may close ctx: not freed under fn */
		n->lent = true;
		rc = fn(ctx, arg);
		n->lent = false;
		if (rc < 0) {
			if (ctx->err) {
				error_set(err, 503, "unavailable", "redis %s:%d: %s", n->host, n->port, ctx->errstr);
				if (n->ctx == ctx)
					node_close(n);
				c->stale = c->mode == MODE_CLUSTER;
			}
			ret = -1;
		}
		if (n->dropped) {
			redisFree(n->dropped);
			n->dropped = NULL;
		}
	}
	return ret;
}

/* SET key value NX GET (claim) or GET key: 0 when the key was unset (now
 * value's, when claim), 1 with its value in out (cap bytes, cut), -1 with
 * err (what names the key in the message). */
static int set_nx_get(struct rclient *c, const char *key, const char *value, bool claim, char *out, size_t cap,
		      struct error *err)
{
	const char *argv[] = {claim ? "SET" : "GET", key, value, "NX", "GET"};
	redisReply *r = rclient_commandv(c, claim ? 5 : 2, argv, NULL, err);
	int rc = -1;

	if (cap)
		out[0] = '\0';
	if (r && r->type == REDIS_REPLY_NIL) {
		rc = 0;
	} else if (r && r->type == REDIS_REPLY_STRING) {
		rc = 1;
		if (cap)
			snprintf(out, cap, "%.*s", (int)r->len, r->str);
	} else if (r) {
		error_set(err, 503, "unavailable", "redis answered %s with \"%s\"", key,
			  r->type == REDIS_REPLY_ERROR ? r->str : "no string");
	}
	freeReplyObject(r);
	return rc;
}

int rclient_redis_owner(struct rclient *c, const char *mine, bool claim, char *other, size_t cap, struct error *err)
{
	int rc = set_nx_get(c, RKEY_REDIS_OWNER, mine, claim, other, cap, err);

	if (rc == 1 && strcmp(other, mine) == 0) {
		other[0] = '\0';
		rc = 0;
	}
	return rc;
}

uint64_t rclient_connects(const struct rclient *c)
{
	return c->connects;
}

int rclient_redis_id(struct rclient *c, char *out, struct error *err)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char rnd[RCLIENT_ID_LEN / 2];
	char mine[RCLIENT_ID_LEN + 1], theirs[RCLIENT_ID_LEN + 2];
	int rc;

	out[0] = '\0';
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return error_set(err, 0, "entropy", "getrandom failed");
	for (size_t i = 0; i < sizeof(rnd); i++) {
		mine[2 * i] = hex[rnd[i] >> 4];
		mine[2 * i + 1] = hex[rnd[i] & 15];
	}
	mine[RCLIENT_ID_LEN] = '\0';
	rc = set_nx_get(c, RKEY_REDIS_ID, mine, true, theirs, sizeof(theirs), err);
	if (rc == 0) /* ours is stored */
		memcpy(out, mine, sizeof(mine));
	else if (rc == 1 && theirs[0] && strlen(theirs) <= RCLIENT_ID_LEN)
		memcpy(out, theirs, strlen(theirs) + 1);
	else if (rc == 1)
		return error_set(err, 503, "unavailable", "redis answered its id with \"%s\"", theirs);
	return rc < 0 ? -1 : 0;
}
