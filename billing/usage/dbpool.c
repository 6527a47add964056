/* dbpool.c: see dbpool.h. */
#include "billing/usage/dbpool.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mailbox.h"
#include "common/timeutil.h"
#include "ledger/db.h"

struct dbpool {
	struct dbpool_opts o;
	char *name, *conninfo, *writer_prefix;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct dbjob *head, *tail; /* pending */
	size_t depth;
	struct mailbox *done; /* finished jobs, for the loop */
	pthread_t *th;
	int stopping;
	int connected; /* threads with a live connection */
};

/* A finished job travels to the loop through its own link: it left the
 * pending queue when a thread took it. */
MAILBOX_LINK(job, struct dbjob, next)

static void job_deliver(void *arg, void *item)
{
	struct dbjob *j = item;

	(void)arg;
	j->done(j);
}

static const struct mailbox_ops done_ops = {job_next, job_set_next, job_deliver};

struct thread_arg {
	struct dbpool *p;
	int idx;
};

/* A pool connection between jobs has nothing to read (it LISTENs to
 * nothing).  Bytes waiting there are almost always the server's goodbye (a
 * restart sends FATAL 57P01, then closes), rarely a ParameterStatus: either
 * way the connection is replaced before the next job, which then gets a
 * fresh connection instead of a 503. */
static bool conn_alive(PGconn *c)
{
	struct pollfd pfd = {PQsocket(c), POLLIN, 0};

	return pfd.fd >= 0 && poll(&pfd, 1, 0) == 0;
}

/* last_fail_us: when the last connect failed.  An idle thread retries every
 * 500 ms (so readiness comes back without traffic); a thread holding jobs
 * retries after 50 ms, so the first jobs after PostgreSQL is back are
 * served, not refused for the rest of an idle back-off, unless the failed
 * attempt itself was slow (a host that drops packets: connect_timeout):
 * then it waits as long as that attempt took, so jobs mostly fail fast. */
static PGconn *ensure_conn(struct dbpool *p, PGconn *c, int64_t *last_fail_us, int64_t *fail_cost_us, int *was_up,
			   bool for_job)
{
	struct error err;
	int64_t t0;

	if (c && PQstatus(c) == CONNECTION_OK && conn_alive(c))
		return c;
	if (c) {
		PQfinish(c);
		c = NULL;
		if (*was_up) {
			pthread_mutex_lock(&p->mu);
			p->connected--;
			pthread_mutex_unlock(&p->mu);
			*was_up = 0;
			log_warn("postgresql connection lost", "pool=%s", p->name);
		}
	}
	if (time_now_us() - *last_fail_us < (for_job ? (*fail_cost_us > 50000 ? *fail_cost_us : 50000) : 500000))
		return NULL;
	t0 = time_now_us();
	c = db_connect(p->conninfo, p->o.timeout_ms, &err);
	if (!c) {
		*fail_cost_us = time_now_us() - t0;
		/* once per outage and thread, not every retry */
		if (time_now_us() - *last_fail_us > 5000000)
			log_warn("postgresql unreachable", "pool=%s error=\"%s\"", p->name, err.msg);
		*last_fail_us = time_now_us();
		return NULL;
	}
	pthread_mutex_lock(&p->mu);
	p->connected++;
	pthread_mutex_unlock(&p->mu);
	*was_up = 1;
	return c;
}

/* Closes a connection that must not live on (it may still hold the turn). */
static PGconn *drop_conn(struct dbpool *p, PGconn *c, int *was_up)
{
	PQfinish(c);
	if (*was_up) {
		pthread_mutex_lock(&p->mu);
		p->connected--;
		pthread_mutex_unlock(&p->mu);
		*was_up = 0;
	}
	return NULL;
}

/* Writers take turns (o.turn_key): a writer holding fewer than batch_max
 * jobs waits, holding no other lock and outside any transaction, for the
 * advisory lock that every writer of every instance on the database takes
 * the same way, and takes its jobs only then: what arrived while another
 * writer wrote joins its batch.  So waiters hold no row locks and a
 * holder waits for no waiter: no deadlock.  A batch may give the turn back
 * before its COMMIT (dbpool_turn_unlock_sql): the next holder may then wait for
 * its row locks, but that COMMIT waits for nothing another writer holds
 * (the WAL, a standby), and its writer asks for the turn again only after
 * it.  A wait longer than the
 * statement timeout (a holder stopped but not dead: a host gone without a
 * word keeps its session until the server's TCP keepalives end it, which
 * db_connect sets to about 25 s) gives up, writes without the turn and
 * writes without turns for TURN_OFF_US, so that such a holder costs one
 * timeout, not one a batch.  A lock granted just as its wait was cancelled
 * stays with the session: a failed take therefore lets go of every
 * session-level advisory lock (a writer's session holds no other). */
#define TURN_OFF_US 10000000
static bool turn_take(struct dbpool *p, PGconn *c, int *holder_pid, int64_t *off_until_us)
{
	char sql[64];
	struct error err;
	PGresult *r;
	static int64_t warned_us;

	*holder_pid = 0;
	if (time_now_us() < *off_until_us)
		return false;
	snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%lld)", (long long)p->o.turn_key);
	if (db_exec(c, sql, 0, NULL, &err) == 0) {
		*holder_pid = PQbackendPID(c);
		return true;
	}
	*off_until_us = time_now_us() + TURN_OFF_US;
	if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE)
		PQclear((r = PQexec(c, "SELECT pg_advisory_unlock_all()")));
	/* racy on purpose: it only thins the log */
	if (time_now_us() - __atomic_load_n(&warned_us, __ATOMIC_RELAXED) > 5000000) {
		__atomic_store_n(&warned_us, time_now_us(), __ATOMIC_RELAXED);
		log_warn("writer's turn not taken: writing without turns for 10 s", "pool=%s error=\"%s\"", p->name,
			 err.msg);
	}
	return false;
}

/* the turn as the running batch holds it (dbpool_turn_unlock_sql) */
static __thread int64_t t_turn_key;
static __thread int t_turn_pid;
static __thread char t_unlock_sql[64];

static const char *unlock_sql(int64_t key)
{
	snprintf(t_unlock_sql, sizeof(t_unlock_sql), "SELECT pg_advisory_unlock(%lld)", (long long)key);
	return t_unlock_sql;
}

/* pg_advisory_unlock's answer: true when it gave the lock back */
static bool unlocked(const PGresult *r)
{
	return r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
}

const char *dbpool_turn_unlock_sql(PGconn *conn)
{
	return t_turn_key && conn && PQbackendPID(conn) == t_turn_pid ? unlock_sql(t_turn_key) : NULL;
}

void dbpool_turn_unlocked(const PGresult *r)
{
	if (unlocked(r))
		t_turn_key = 0;
}

/* Gives the turn back; a session that cannot (a transaction left open, an
 * error) is closed, and its lock goes with it.  holder_pid: the session
 * that took it; a connection replaced since (a reconnect in the batch)
 * holds nothing: the old session took the lock with it. */
static PGconn *turn_give(struct dbpool *p, PGconn *c, int *was_up, int holder_pid)
{
	PGresult *r;
	bool ok;

	if (!c || PQstatus(c) != CONNECTION_OK || PQbackendPID(c) != holder_pid)
		return c; /* the session is gone or going, and its lock with it */
	r = PQtransactionStatus(c) == PQTRANS_IDLE ? PQexec(c, unlock_sql(p->o.turn_key)) : NULL;
	ok = unlocked(r);
	PQclear(r);
	if (ok)
		return c;
	log_warn("writer's turn not given back: closing its connection", "pool=%s", p->name);
	return drop_conn(p, c, was_up);
}

static void *thread_main(void *argp)
{
	struct thread_arg *ta = argp;
	struct dbpool *p = ta->p;
	char writer[160];
	PGconn *c = NULL;
	int64_t last_fail = 0, fail_cost = 0, turns_off_until = 0;
	int up = 0;
	size_t bmax = p->o.batch ? (p->o.batch_max ? p->o.batch_max : 1) : 1;
	struct dbjob **batch = calloc(bmax, sizeof(*batch));

	if (ta->idx == 0)
		snprintf(writer, sizeof(writer), "%s", p->writer_prefix);
	else
		snprintf(writer, sizeof(writer), "%s.t%d", p->writer_prefix, ta->idx);
	free(ta);
	c = ensure_conn(p, c, &last_fail, &fail_cost, &up, false);
	for (;;) {
		size_t n = 0;
		bool turn;
		int holder_pid = 0;

		pthread_mutex_lock(&p->mu);
		while (!p->head && !p->stopping) {
			if (c && PQstatus(c) == CONNECTION_OK) {
				pthread_cond_wait(&p->cv, &p->mu);
				continue;
			}
			/* disconnected and idle: keep trying, so readiness comes back
			 * without waiting for traffic */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 500000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&p->cv, &p->mu, &ts);
			if (!p->head && !p->stopping) {
				pthread_mutex_unlock(&p->mu);
				c = ensure_conn(p, c, &last_fail, &fail_cost, &up, false);
				pthread_mutex_lock(&p->mu);
			}
		}
		if (!p->head && p->stopping) {
			pthread_mutex_unlock(&p->mu);
			break;
		}
		if (p->o.batch && p->o.batch_wait_us > 0 && p->depth < bmax && !p->stopping) {
			/* group commit: give followers a moment to join the batch */
			struct timespec ts;
			int64_t until = p->head->enqueued_us + p->o.batch_wait_us;
			if (until > time_now_us()) {
				clock_gettime(CLOCK_REALTIME, &ts);
				int64_t wait = until - time_now_us();
				ts.tv_sec += wait / 1000000;
				ts.tv_nsec += (wait % 1000000) * 1000;
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				while (p->depth < bmax && !p->stopping &&
				       pthread_cond_timedwait(&p->cv, &p->mu, &ts) == 0)
					;
			}
		}
		turn = false;
		if (p->o.turn_key && p->depth < bmax && !p->stopping) {
			/* writers take turns (turn_take): the jobs are taken once it is ours */
			pthread_mutex_unlock(&p->mu);
			c = ensure_conn(p, c, &last_fail, &fail_cost, &up, true);
			turn = c && turn_take(p, c, &holder_pid, &turns_off_until);
			pthread_mutex_lock(&p->mu);
		}
		while (p->head && n < bmax) {
			batch[n++] = p->head;
			p->head = p->head->next;
			p->depth--;
		}
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->mu);

		c = ensure_conn(p, c, &last_fail, &fail_cost, &up, true);
		t_turn_key = turn ? p->o.turn_key : 0;
		t_turn_pid = holder_pid;
		if (p->o.batch) {
			p->o.batch(batch, n, c, writer, p->o.batch_arg);
		} else {
			batch[0]->run(batch[0], c, writer);
		}
		if (turn && !t_turn_key)
			turn = false; /* the batch gave it back before its COMMIT */
		t_turn_key = 0;
		/* the batch's answers reach the loop together: one turn, so their
		 * Redis settles leave in one flush (quota_settles) */
		for (size_t i = 0; i + 1 < n; i++)
			batch[i]->next = batch[i + 1];
		if (n)
			(void)mailbox_post_chain(p->done, batch[0], batch[n - 1], n);
		if (turn)
			c = turn_give(p, c, &up, holder_pid);
		/* after the answers: a reconnect may take up to connect_timeout */
		if (c && PQstatus(c) != CONNECTION_OK)
			c = ensure_conn(p, c, &last_fail, &fail_cost, &up, false);
	}
	free(batch);
	if (p->o.batch)
		p->o.batch(NULL, 0, NULL, writer, p->o.batch_arg); /* thread exit */
	if (up) {
		pthread_mutex_lock(&p->mu);
		p->connected--;
		pthread_mutex_unlock(&p->mu);
	}
	PQfinish(c);
	return NULL;
}

struct dbpool *dbpool_new(struct event_base *base, const struct dbpool_opts *o)
{
	struct dbpool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->o = *o;
	p->name = strdup(o->name);
	p->conninfo = strdup(o->conninfo);
	p->writer_prefix = strdup(o->writer_prefix);
	p->th = calloc((size_t)p->o.threads, sizeof(*p->th));
	p->done = mailbox_new(base, &done_ops, p);
	if (!p->name || !p->conninfo || !p->writer_prefix || !p->th || !p->done) {
		free(p->name);
		free(p->conninfo);
		free(p->writer_prefix);
		free(p->th);
		mailbox_free(p->done);
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	for (int i = 0; i < p->o.threads; i++) {
		struct thread_arg *ta = malloc(sizeof(*ta));
		ta->p = p;
		ta->idx = i;
		pthread_create(&p->th[i], NULL, thread_main, ta);
	}
	return p;
}

/* Appends one job; the caller holds p->mu and checked the bound. */
static void enqueue_locked(struct dbpool *p, struct dbjob *job, int64_t now)
{
	job->next = NULL;
	job->enqueued_us = now;
	memset(&job->err, 0, sizeof(job->err));
	if (p->tail)
		p->tail->next = job;
	else
		p->head = job;
	p->tail = job;
	p->depth++;
}

int dbpool_submit(struct dbpool *p, struct dbjob *job)
{
	pthread_mutex_lock(&p->mu);
	if (p->depth >= p->o.queue_max || p->stopping) {
		pthread_mutex_unlock(&p->mu);
		return -1;
	}
	enqueue_locked(p, job, time_now_us());
	/* a batch pool is woken by the first job and by a full batch only */
	if (!p->o.batch || p->depth == 1 || p->depth >= (p->o.batch_max ? p->o.batch_max : 1))
		pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

size_t dbpool_submit_many(struct dbpool *p, struct dbjob **jobs, size_t n)
{
	size_t k = 0;
	int64_t now = time_now_us();

	pthread_mutex_lock(&p->mu);
	for (; k < n && p->depth < p->o.queue_max && !p->stopping; k++)
		enqueue_locked(p, jobs[k], now);
	if (k)
		pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return k;
}

size_t dbpool_depth(struct dbpool *p)
{
	size_t d;

	pthread_mutex_lock(&p->mu);
	d = p->depth;
	pthread_mutex_unlock(&p->mu);
	return d;
}

bool dbpool_connected(struct dbpool *p)
{
	bool up;

	pthread_mutex_lock(&p->mu);
	up = p->connected > 0;
	pthread_mutex_unlock(&p->mu);
	return up;
}

void dbpool_free(struct dbpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->o.threads; i++)
		pthread_join(p->th[i], NULL);
	/* run what finished after the loop last looked */
	mailbox_drain(p->done);
	mailbox_free(p->done);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->th);
	free(p->name);
	free(p->conninfo);
	free(p->writer_prefix);
	free(p);
}
