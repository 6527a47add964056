/* maint.c: see maint.h. */
#include "billing/maint.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "billing/usage/dbpool.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/ops.h"
#include "ledger/promo.h"

/* months of ledger partitions kept ready past the current one */
#define LEDGER_PARTITIONS_AHEAD 3
/* expired grants moved to breakage per run */
#define EXPIRE_BATCH 1000

struct maint_job {
	struct dbjob job; /* first member: the pool hands back &job */
	struct maint *m;
};

struct maint {
	struct dbpool *pool;
	struct event *timer;
	bool running, stopped;
};

static void run(struct dbjob *job, PGconn *conn, const char *writer)
{
	struct ops_ctx x = {conn, writer, "billingd", 0, 0, 0};
	int moved = 0, created = 0;
	int64_t nanos = 0;

	if (!conn) {
		error_set(&job->err, 503, "unavailable", "the ledger database is unreachable");
		return;
	}
	/* a failure here (a lock not obtained) is retried on the next tick;
	 * the DEFAULT partitions take the rows meanwhile */
	if (db_ensure_partitions(conn, LEDGER_PARTITIONS_AHEAD, &created, &job->err) < 0) {
		log_warn("ledger partitions not ensured", "error=\"%s\"", job->err.msg);
		memset(&job->err, 0, sizeof(job->err));
	} else if (created) {
		log_info("ledger partitions created", "partitions=%d months_ahead=%d", created,
			 LEDGER_PARTITIONS_AHEAD);
	}
	if (promo_expire_due(&x, time_now_us(), EXPIRE_BATCH, &moved, &nanos, &job->err) == 0 && moved)
		log_info("promotional credit expired to breakage", "grants=%d nanos=%" PRId64, moved, nanos);
}

static void done(struct dbjob *job)
{
	struct maint_job *j = (struct maint_job *)job;

	if (job->err.status)
		log_warn("expiry run failed", "error=\"%s\"", job->err.msg);
	j->m->running = false;
	free(j);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct maint *m = arg;
	struct maint_job *j;

	(void)fd, (void)what;
	if (m->running || m->stopped)
		return;
	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	j->job.run = run;
	j->job.done = done;
	j->m = m;
	if (dbpool_submit(m->pool, &j->job) < 0)
		free(j);
	else
		m->running = true;
}

struct maint *maint_new(struct event_base *base, struct dbpool *pool, int64_t interval_s)
{
	struct maint *m = calloc(1, sizeof(*m));
	struct timeval tv = {(time_t)interval_s, 0};

	if (!m)
		return NULL;
	m->pool = pool;
	m->timer = event_new(base, -1, EV_PERSIST, tick_cb, m);
	if (!m->timer || event_add(m->timer, &tv) < 0) {
		maint_free(m);
		return NULL;
	}
	return m;
}

void maint_stop(struct maint *m)
{
	if (m) {
		m->stopped = true;
		event_del(m->timer);
	}
}

void maint_free(struct maint *m)
{
	if (!m)
		return;
	if (m->timer)
		event_free(m->timer);
	free(m);
}
