/* dbpool.h: database work off the event loop.
 *
 * A pool is a bounded job queue served by threads that each own one PGconn
 * (reconnected on demand).  run() executes on a pool thread; done() then
 * executes on the event loop thread, in completion order.  A job is owned
 * by the caller throughout; the pool only borrows it between submit and
 * done.  The usage writer (usage.c) uses the same queue with batching. */
#ifndef BILLING_DBPOOL_H
#define BILLING_DBPOOL_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct dbpool;
struct dbjob;

/* Runs on a pool thread.  conn is connected (or NULL when the database is
 * unreachable: then set err to unavailable). writer is the thread's chain. */
typedef void (*dbjob_run_fn)(struct dbjob *job, PGconn *conn, const char *writer);
/* Runs on the event loop thread after run(). */
typedef void (*dbjob_done_fn)(struct dbjob *job);
/* Batch runner: gets up to batch_max jobs at once (same kind), may group
 * them; called once more with n == 0 just before its thread exits. */
typedef void (*dbjob_batch_fn)(struct dbjob **jobs, size_t n, PGconn *conn, const char *writer, void *arg);

struct dbjob {
	dbjob_run_fn run; /* NULL in a batch pool */
	dbjob_done_fn done;
	struct dbjob *next; /* pool's own link */
	int64_t enqueued_us;
	struct error err; /* err.status == 0: success */
};

struct dbpool_opts {
	const char *name; /* "pool", "writer" for logs and chains */
	const char *conninfo;
	const char *writer_prefix; /* chain identity: writer_prefix, or writer_prefix.tN for N > 0 */
	int threads;
	size_t queue_max;
	int timeout_ms;
	dbjob_batch_fn batch; /* when set: jobs handed over in batches (each thread its own) */
	void *batch_arg;
	size_t batch_max;
	int64_t batch_wait_us;
	/* when not 0: a batch thread holding fewer than batch_max jobs takes
	 * this session-level advisory lock before it takes them, and gives it
	 * back after their batch, unless the batch gave it back before its
	 * COMMIT (dbpool_turn_unlock_sql; writers take turns: docs/billingd.md) */
	int64_t turn_key;
};

struct dbpool *dbpool_new(struct event_base *base, const struct dbpool_opts *o) __attribute__((warn_unused_result));
/* Queues a job: 0, or -1 when the queue is full (answer 503). */
int dbpool_submit(struct dbpool *p, struct dbjob *job) __attribute__((warn_unused_result));
/* Queues n jobs under one lock (a request's batch): returns how many were
 * accepted, in order; the rest did not fit (answer them 503). */
size_t dbpool_submit_many(struct dbpool *p, struct dbjob **jobs, size_t n) __attribute__((warn_unused_result));
size_t dbpool_depth(struct dbpool *p);
/* True while at least one thread holds a working connection. */
bool dbpool_connected(struct dbpool *p);
/* Stops the threads after the queue is drained; done() callbacks already
 * pending still run via the loop.  Then frees. */
void dbpool_free(struct dbpool *p);

/* The turn (dbpool_opts.turn_key) as the calling batch thread holds it on
 * conn's session, for the batch being run: the statement that gives it
 * back, or NULL when it holds none there.  A batch may send it itself, in
 * its pipeline after its statements and before its COMMIT, and hand its
 * answer to dbpool_turn_unlocked(): the next writer's statements run while
 * this COMMIT waits for its WAL flush and its answers are posted
 * (docs/billingd.md, "Writers take turns").  Otherwise, or when that
 * answer is not "given back", the pool gives it back after the answers
 * (and closes a session that cannot). */
const char *dbpool_turn_unlock_sql(PGconn *conn);
void dbpool_turn_unlocked(const PGresult *r);

#endif
