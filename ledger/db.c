/* db.c: see db.h. */
#include "ledger/db.h"
#include "common/log.h"

#include <dirent.h>
#include <libpq-events.h>
#include <errno.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/timeutil.h"

static volatile int standby_confirm_ms;

void db_set_standby_confirm(int ms)
{
	standby_confirm_ms = ms;
}

int db_standby_confirm(void)
{
	return standby_confirm_ms;
}

static void notice_cb(void *arg, const char *message)
{
	(void)arg;
	log_warn("postgresql notice", "message=\"%s\"", message);
}

PGconn *db_connect(const char *conninfo, int timeout_ms, struct error *err)
{
	char ct[32], opts[256];
	/* keepalives: a silently dead link (no RST) is noticed within ~30 s,
	 * also by a LISTEN connection that only ever waits; and by the server
	 * (tcp_keepalives_*, about 25 s): the session of a host gone without a
	 * word, and its locks (a usage writer's turn), end then, not after
	 * the operating system's two hours */
	const char *keys[] = {"dbname",
			      "connect_timeout",
			      "options",
			      "application_name",
			      "keepalives",
			      "keepalives_idle",
			      "keepalives_interval",
			      "keepalives_count",
			      NULL};
	const char *vals[] = {conninfo, ct, opts, "billing", "1", "10", "5", "3", NULL};
	PGconn *c;

	snprintf(ct, sizeof(ct), "%d", timeout_ms / 1000 > 0 ? timeout_ms / 1000 : 1);
	snprintf(opts, sizeof(opts),
		 "-c statement_timeout=%d -c synchronous_commit=on -c TimeZone=UTC -c client_min_messages=warning"
		 " -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3",
		 timeout_ms);
	/* expand_dbname=1: the conninfo string's own keys win over dbname */
	c = PQconnectdbParams(keys, vals, 1);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		const char *m = c ? PQerrorMessage(c) : "out of memory";
		size_t l = strlen(m);
		while (l && (m[l - 1] == '\n' || m[l - 1] == ' '))
			l--;
		error_set(err, 503, "unavailable", "cannot connect to postgresql: %.*s", (int)l, m);
		PQfinish(c);
		return NULL;
	}
	/* libpq's default prints notices (and a server's FATAL on an idle
	 * connection) raw on stderr, over several lines: one log record instead */
	PQsetNoticeProcessor(c, notice_cb, NULL);
	return c;
}

static void set_pg_err(PGconn *c, PGresult *r, struct error *err)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
	size_t l;

	if (!m || !*m)
		m = PQerrorMessage(c);
	l = strlen(m);
	while (l && (m[l - 1] == '\n' || m[l - 1] == ' '))
		l--;
	/* connection gone, server shutting down or starting (57P0x), or a
	 * session that landed on a standby (25006) during a failover */
	if (!state || db_conn_broken(c) || strncmp(state, "57P0", 4) == 0 || strcmp(state, "25006") == 0)
		error_set(err, 503, "unavailable", "postgresql: %.*s", (int)l, m);
	else
		error_set(err, 500, state, "%.*s", (int)l, m);
}

static void set_no_standby(struct error *err)
{
	error_set(err, 503, "unavailable",
		  "no standby confirmed the commit within %d ms (it may be on the primary alone;"
		  " retrying with the same id is safe)",
		  standby_confirm_ms);
}

/* After a COMMIT: until a standby has flushed everything this primary had
 * flushed (so the commit too), polled with a growing pause up to
 * standby_confirm_ms.  0, or -1 with err 503. */
static int confirm_standby(PGconn *c, struct error *err)
{
	int64_t until = time_now_us() + (int64_t)standby_confirm_ms * 1000;
	const char *p[1];
	char lsn[40];
	useconds_t pause = 200;
	PGresult *r = PQexec(c, "SELECT l::text, EXISTS (SELECT 1 FROM pg_stat_replication WHERE flush_lsn >= l)"
				" FROM pg_current_wal_flush_lsn() l");

	for (;;) {
		if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
			set_pg_err(c, r, err);
			err->status = 503;
			snprintf(err->code, sizeof(err->code), "unavailable");
			PQclear(r);
			return -1;
		}
		if (PQnfields(r) == 2)
			snprintf(lsn, sizeof(lsn), "%s", PQgetvalue(r, 0, 0));
		if (strcmp(PQgetvalue(r, 0, PQnfields(r) - 1), "t") == 0) {
			PQclear(r);
			return 0;
		}
		PQclear(r);
		if (time_now_us() >= until) {
			set_no_standby(err);
			return -1;
		}
		usleep(pause);
		if (pause < 20000)
			pause *= 2;
		p[0] = lsn;
		r = PQexecParams(c, "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE flush_lsn >= $1::pg_lsn)",
				 1, NULL, p, NULL, NULL, 0);
	}
}

/* A COMMIT waiting for a standby that is gone waits for ever: PostgreSQL
 * disarms statement_timeout before the commit itself.  After
 * standby_confirm_ms the wait is cancelled (the server then reports the
 * commit with a WARNING, committed on the primary alone: *cancelled = 1);
 * after as long again without an answer the connection is shut (broken:
 * the caller reconnects).  The result, or NULL. */
static PGresult *commit_bounded(PGconn *c, int *cancelled)
{
	int64_t until = time_now_us() + (int64_t)standby_confirm_ms * 1000;
	PGresult *r, *last = NULL;

	*cancelled = 0;
	if (!PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0))
		return NULL;
	while (PQconsumeInput(c) && PQisBusy(c)) {
		int64_t left = until - time_now_us();
		struct pollfd pfd = {PQsocket(c), POLLIN, 0};

		if (left <= 0 && !*cancelled) {
			PGcancel *k = PQgetCancel(c);
			char eb[256];
			if (k) {
				PQcancel(k, eb, sizeof(eb));
				PQfreeCancel(k);
			}
			*cancelled = 1;
			until = time_now_us() + (int64_t)standby_confirm_ms * 1000;
			continue;
		}
		if (left <= 0) {
			shutdown(PQsocket(c), SHUT_RDWR);
			PQconsumeInput(c);
			break;
		}
		poll(&pfd, 1, (int)(left / 1000) + 1);
	}
	while ((r = PQgetResult(c))) {
		PQclear(last);
		last = r;
	}
	return last;
}

int64_t db_int64(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

money_total db_total(const PGresult *r, int row, int col)
{
	money_total v = 0;

	if (PQgetisnull(r, row, col) || money_total_parse(PQgetvalue(r, row, col), &v) < 0)
		return 0;
	return v;
}

PGresult *db_query(PGconn *c, const char *sql, int nparams, const char *const *params, struct error *err)
{
	/* a session on a standby (finance reads, prefer-standby) writes nothing */
	const char *hs = PQparameterStatus(c, "in_hot_standby");
	int commit = standby_confirm_ms > 0 && strcmp(sql, "COMMIT") == 0 && !(hs && strcmp(hs, "on") == 0),
	    cancelled = 0;
	PGresult *r =
		commit ? commit_bounded(c, &cancelled) : PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		set_pg_err(c, r, err);
		PQclear(r);
		return NULL;
	}
	if (cancelled) {
		PQclear(r);
		set_no_standby(err);
		return NULL;
	}
	if (commit && confirm_standby(c, err) < 0) {
		PQclear(r);
		return NULL;
	}
	return r;
}

PGresult *db_query_params(PGconn *c, const char *sql, const struct db_params *p, struct error *err)
{
	PGresult *r = PQexecParams(c, sql, p->n, NULL, p->v, p->len, p->fmt, 0);
	ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		set_pg_err(c, r, err);
		PQclear(r);
		return NULL;
	}
	return r;
}

int db_exec(PGconn *c, const char *sql, int nparams, const char *const *params, struct error *err)
{
	PGresult *r = db_query(c, sql, nparams, params, err);

	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

void db_exec_quiet(PGconn *c, const char *sql)
{
	PQclear(PQexec(c, sql));
}

/* Whether statements were queued since the last sync point of a pipeline:
 * kept on the connection (libpq's instance data of this event procedure,
 * the pointer itself the mark), so db_pipeline_end knows whether the server
 * was asked to answer everything queued. */
static int pipeline_event(PGEventId id, void *info, void *pass)
{
	(void)id, (void)info, (void)pass;
	return 1;
}
static char mark_synced, mark_unsynced;

static void pipeline_mark(PGconn *c, char *m)
{
	/* 0: not registered on c yet (the first pipeline of this connection) */
	if (!PQsetInstanceData(c, pipeline_event, m) && PQregisterEventProc(c, pipeline_event, "db_pipeline", NULL))
		PQsetInstanceData(c, pipeline_event, m);
}

int db_pipeline_begin(PGconn *c, struct error *err)
{
	if (PQenterPipelineMode(c) != 1) {
		set_pg_err(c, NULL, err);
		return -1;
	}
	pipeline_mark(c, &mark_synced);
	return 0;
}

int db_send(PGconn *c, const char *name, const char *sql, int nparams, const char *const *params, struct error *err)
{
	int ok = name ? PQsendQueryPrepared(c, name, nparams, params, NULL, NULL, 0)
		      : PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0);

	if (!ok) {
		set_pg_err(c, NULL, err);
		return -1;
	}
	if (PQpipelineStatus(c) != PQ_PIPELINE_OFF)
		pipeline_mark(c, &mark_unsynced);
	return 0;
}

int db_send_params(PGconn *c, const char *name, const char *sql, const struct db_params *p, struct error *err)
{
	int ok = name ? PQsendQueryPrepared(c, name, p->n, p->v, p->len, p->fmt, 0)
		      : PQsendQueryParams(c, sql, p->n, NULL, p->v, p->len, p->fmt, 0);

	if (!ok) {
		set_pg_err(c, NULL, err);
		return -1;
	}
	if (PQpipelineStatus(c) != PQ_PIPELINE_OFF)
		pipeline_mark(c, &mark_unsynced);
	return 0;
}

int db_pipeline_sync(PGconn *c, struct error *err)
{
	if (PQpipelineSync(c) != 1) {
		set_pg_err(c, NULL, err);
		return -1;
	}
	pipeline_mark(c, &mark_synced);
	return 0;
}

int db_pipeline_flush(PGconn *c, struct error *err)
{
	if (PQflush(c) != 0) {
		set_pg_err(c, NULL, err);
		return -1;
	}
	return 0;
}

PGresult *db_next(PGconn *c, struct error *err)
{
	PGresult *r = PQgetResult(c), *extra;
	ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;

	/* each statement's result is followed by a NULL */
	while (r && (extra = PQgetResult(c)) != NULL)
		PQclear(extra);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return r;
	if (st == PGRES_PIPELINE_ABORTED)
		error_set(err, 500, "internal", "postgresql: statement skipped after an earlier error");
	else
		set_pg_err(c, r, err);
	PQclear(r);
	return NULL;
}

int db_pipeline_end(PGconn *c)
{
	PGresult *r;
	int nulls = 0;

	if (PQpipelineStatus(c) == PQ_PIPELINE_OFF)
		return 0;
	/* statements queued after the last sync point (a batch given up while
	 * it was being built): the server answers them only up to a sync point,
	 * and skips everything after an error until one, plain queries too */
	if (PQinstanceData(c, pipeline_event) == &mark_unsynced && !db_conn_broken(c)) {
		if (PQpipelineSync(c) != 1) {
			if (db_conn_broken(c)) /* the caller reconnects, as after any loss */
				return -1;
			/* out of memory: nothing tells what the server holds; a new
			 * session (db_conn_broken if that fails) */
			log_warn("postgresql pipeline: no sync point could be sent: connection reset", "error=\"%s\"",
				 PQerrorMessage(c));
			PQreset(c);
			return -1;
		}
		pipeline_mark(c, &mark_synced);
	}
	/* read up to the sync point: two NULLs in a row mean nothing is pending */
	while (!db_conn_broken(c) && nulls < 2) {
		r = PQgetResult(c);
		if (!r) {
			nulls++;
			continue;
		}
		nulls = 0;
		if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			if (PQexitPipelineMode(c) == 1)
				return 0;
			continue;
		}
		PQclear(r);
	}
	return PQexitPipelineMode(c) == 1 && !db_conn_broken(c) ? 0 : -1;
}

int db_prepare(PGconn *c, const char *const (*stmts)[2], struct error *err)
{
	for (size_t i = 0; stmts[i][0]; i++) {
		PGresult *r = PQprepare(c, stmts[i][0], stmts[i][1], 0, NULL);
		if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
			set_pg_err(c, r, err);
			PQclear(r);
			return -1;
		}
		PQclear(r);
	}
	return 0;
}

bool db_error_retryable(const struct error *err)
{
	return strcmp(err->code, "40001") == 0 || strcmp(err->code, "40P01") == 0 || strcmp(err->code, "23505") == 0;
}

bool db_conn_broken(PGconn *c)
{
	return !c || PQstatus(c) != CONNECTION_OK;
}

int db_ensure_partitions(PGconn *c, int months_ahead, int *created, struct error *err)
{
	char n[16];
	const char *p[1] = {n};
	PGresult *r;

	snprintf(n, sizeof(n), "%d", months_ahead);
	r = db_query(c, "SELECT ledger_ensure_partitions($1::integer)", 1, p, err);
	if (!r)
		return -1;
	*created = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return 0;
}

/* ---- migrations ---- */

struct mfile {
	char name[256];
	char sha[65];
	char *text;
};

static int cmp_names(const void *a, const void *b)
{
	return strcmp(((const struct mfile *)a)->name, ((const struct mfile *)b)->name);
}

static int is_migration_name(const char *n)
{
	size_t l = strlen(n);

	return l > 9 && n[0] >= '0' && n[0] <= '9' && n[1] >= '0' && n[1] <= '9' && n[2] >= '0' && n[2] <= '9' &&
	       n[3] >= '0' && n[3] <= '9' && n[4] == '_' && strcmp(n + l - 4, ".sql") == 0;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct buf b;
	char tmp[65536];
	size_t n;

	if (!f)
		return NULL;
	buf_init(&b);
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_append(&b, tmp, n);
	fclose(f);
	if (!b.data)
		buf_append(&b, "", 0);
	*len = b.len;
	return b.data;
}

static void free_files(struct mfile *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(m[i].text);
	free(m);
}

static int load_files(const char *dir, struct mfile **out, size_t *nout, struct error *err)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	struct mfile *m = NULL;
	size_t n = 0, cap = 0;

	if (!d) {
		return error_set(err, 0, "migrations", "cannot open migrations folder '%s': %s", dir, strerror(errno));
	}
	while ((e = readdir(d))) {
		char path[4096];
		unsigned char h[crypto_hash_sha256_BYTES];
		size_t len;

		if (!is_migration_name(e->d_name) || strlen(e->d_name) >= sizeof(m->name))
			continue;
		if (n == cap) {
			struct mfile *nm = realloc(m, (cap = cap ? cap * 2 : 16) * sizeof(*m));
			if (!nm) {
				closedir(d);
				free_files(m, n);
				return error_set(err, 0, "oom", "out of memory");
			}
			m = nm;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		snprintf(m[n].name, sizeof(m[n].name), "%s", e->d_name);
		m[n].text = read_file(path, &len);
		if (!m[n].text) {
			closedir(d);
			free_files(m, n);
			return error_set(err, 0, "migrations", "cannot read '%s': %s", path, strerror(errno));
		}
		crypto_hash_sha256(h, (const unsigned char *)m[n].text, len);
		sodium_bin2hex(m[n].sha, sizeof(m[n].sha), h, sizeof(h));
		n++;
	}
	closedir(d);
	if (n)
		qsort(m, n, sizeof(*m), cmp_names);
	*out = m;
	*nout = n;
	return 0;
}

static const char *const create_table =
	"CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, sha256 text NOT NULL, "
	"applied_at timestamptz NOT NULL DEFAULT now())";

/* Compares files with what is applied: sets *first_pending to the index of
 * the first file not applied; -1 (err names the file) if an applied one changed. */
static int check_applied(PGconn *c, struct mfile *m, size_t n, size_t *pending, int table_exists, struct error *err)
{
	PGresult *r = NULL;
	size_t np = 0;

	if (table_exists) {
		r = db_query(c, "SELECT name, sha256 FROM schema_migrations", 0, NULL, err);
		if (!r)
			return -1;
	}
	for (size_t i = 0; i < n; i++) {
		int found = 0;
		for (int j = 0; r && j < PQntuples(r); j++) {
			if (strcmp(PQgetvalue(r, j, 0), m[i].name) == 0) {
				found = 1;
				if (strcmp(PQgetvalue(r, j, 1), m[i].sha) != 0) {
					error_set(
						err, 0, "migration_changed",
						"migration '%s' was changed after it was applied (sha256 %s, applied %s)",
						m[i].name, m[i].sha, PQgetvalue(r, j, 1));
					PQclear(r);
					return -1;
				}
			}
		}
		if (!found)
			pending[np++] = i;
	}
	PQclear(r);
	return (int)np;
}

static int table_exists(PGconn *c, struct error *err)
{
	PGresult *r = db_query(c, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL, err);
	int yes;

	if (!r)
		return -1;
	yes = PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	return yes;
}

int db_identity(PGconn *c, char *out, size_t cap, struct error *err)
{
	PGresult *r = PQexec(c, "SELECT 'pg:' || s.system_identifier || '/' || d.oid || '/' || d.datname"
				" FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()");
	int rc = -1;

	if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		set_pg_err(c, r, err);
	else if ((size_t)PQgetlength(r, 0, 0) >= cap)
		error_set(err, 0, "internal", "the database's identity is longer than %zu bytes", cap - 1);
	else {
		memcpy(out, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0) + 1);
		rc = 0;
	}
	PQclear(r);
	return rc;
}

int db_pending_migrations(PGconn *c, const char *dir, struct error *err)
{
	struct mfile *m = NULL;
	size_t n = 0, *pending = NULL;
	int te, rc = -1;

	if (load_files(dir, &m, &n, err) < 0)
		return -1;
	pending = calloc(n + 1, sizeof(*pending));
	te = table_exists(c, err);
	if (pending && te >= 0)
		rc = check_applied(c, m, n, pending, te, err);
	free(pending);
	free_files(m, n);
	return rc;
}

/* What the migrations expect of the database (docs/deployment.md, "Preparing a
 * production database"): the service role exists, and the migrating role
 * may create in schema public.  Names what is missing and how to create it. */
static int migrate_preflight(PGconn *c, struct error *err)
{
	PGresult *r =
		db_query(c,
			 "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing'),"
			 " has_schema_privilege(current_user, 'public', 'CREATE'), current_user, current_database()",
			 0, NULL, err);
	int rc = -1;

	if (!r)
		return -1;
	if (PQgetvalue(r, 0, 0)[0] != 't')
		error_set(
			err, 0, "missing_role",
			"role \"billing\" does not exist: the migrations grant the service its rights through it;"
			" as a superuser run CREATE ROLE billing LOGIN PASSWORD '...' (docs/deployment.md, \"Preparing a production"
			" database\")");
	else if (PQgetvalue(r, 0, 1)[0] != 't')
		error_set(err, 0, "missing_privilege",
			  "role \"%s\" may not create tables in schema \"public\" of database \"%s\": migrate as the"
			  " schema owner (pg_owner), e.g. as a superuser ALTER SCHEMA public OWNER TO billing_owner"
			  " (docs/deployment.md, \"Preparing a production database\")",
			  PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
	else
		rc = 0;
	PQclear(r);
	return rc;
}

int db_migrate(PGconn *c, const char *dir, FILE *out, struct error *err)
{
	struct mfile *m = NULL;
	size_t n = 0, *pending = NULL;
	int np, rc = -1;

	if (load_files(dir, &m, &n, err) < 0)
		return -1;
	pending = calloc(n + 1, sizeof(*pending));
	if (!pending)
		goto done;
	/* one migrator at a time */
	if (migrate_preflight(c, err) < 0 || db_exec(c, create_table, 0, NULL, err) < 0 ||
	    db_exec(c, "SELECT pg_advisory_lock(727001)", 0, NULL, err) < 0)
		goto done;
	np = check_applied(c, m, n, pending, 1, err);
	if (np < 0)
		goto unlock;
	for (int k = 0; k < np; k++) {
		struct mfile *f = &m[pending[k]];
		const char *params[2] = {f->name, f->sha};
		PGresult *r;

		if (db_exec(c, "BEGIN", 0, NULL, err) < 0)
			goto unlock;
		r = PQexec(c, f->text);
		if (!r || (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)) {
			error_set(err, 0, "migration_failed", "migration '%s' failed: %s", f->name,
				  r ? PQresultErrorMessage(r) : PQerrorMessage(c));
			PQclear(r);
			db_exec_quiet(c, "ROLLBACK");
			goto unlock;
		}
		PQclear(r);
		if (db_exec(c, "INSERT INTO schema_migrations (name, sha256) VALUES ($1, $2)", 2, params, err) < 0 ||
		    db_exec(c, "COMMIT", 0, NULL, err) < 0) {
			db_exec_quiet(c, "ROLLBACK");
			goto unlock;
		}
		if (out)
			fprintf(out, "applied %s sha256=%s\n", f->name, f->sha);
	}
	/* billingd (the service role) checks for pending migrations */
	if (db_exec(c, "GRANT SELECT ON schema_migrations TO PUBLIC", 0, NULL, err) < 0)
		goto unlock;
	if (out && np == 0)
		fprintf(out, "nothing to apply: %zu migrations up to date\n", n);
	rc = 0;
unlock:
	db_exec_quiet(c, "SELECT pg_advisory_unlock(727001)");
done:
	free(pending);
	free_files(m, n);
	return rc;
}

int64_t db_int(const char *s)
{
	const char *p = s + (*s == '-');
	uint64_t v = 0;
	size_t n = 0;

	for (; p[n] >= '0' && p[n] <= '9'; n++) {
		if (n == 18)
			return strtoll(s, NULL, 10);
		v = v * 10 + (uint64_t)(p[n] - '0');
	}
	if (n == 0 || p[n] != '\0')
		return strtoll(s, NULL, 10);
	return *s == '-' ? -(int64_t)v : (int64_t)v;
}
