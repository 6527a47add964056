/* db.h: synchronous libpq helpers and migrations.
 *
 * Used by the CLIs and by billingd's database threads (each thread owns its
 * PGconn; a PGconn is never shared between threads). */
#ifndef LEDGER_DB_H
#define LEDGER_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/money.h"

/* Connects with connect_timeout and statement_timeout = timeout_ms,
 * synchronous_commit = on, TimeZone UTC.  NULL with err (code unavailable). */
PGconn *db_connect(const char *conninfo, int timeout_ms, struct error *err) __attribute__((warn_unused_result));

/* With a synchronous standby (pg_auto_failover): from now on, in every
 * thread, a successful COMMIT run through db_exec/db_query counts only once
 * a standby has flushed the primary's WAL up to the commit, waited for at
 * most ms milliseconds; otherwise the COMMIT fails with 503 unavailable (the
 * transaction is then on the primary alone: a retry with the same id is
 * safe).  This closes the windows where pg_auto_failover runs the primary
 * without synchronous replication (wait_primary after a failover or while
 * every standby is down).  A COMMIT waiting for a standby that is gone
 * would wait for ever (PostgreSQL disarms statement_timeout before the
 * commit itself): after ms it is cancelled (the server then reports it
 * committed, with only a WARNING) and fails with 503 too.  The role needs
 * pg_read_all_stats (to read pg_stat_replication).  0 (the default): off. */
void db_set_standby_confirm(int ms);
/* The ms of db_set_standby_confirm: a COMMIT sent any other way than through
 * db_exec/db_query (a pipeline) is neither bounded nor confirmed. */
int db_standby_confirm(void);

/* An integer column's text (PostgreSQL writes int2, int4 and int8 as
 * -?[0-9]+, PQgetvalue a NULL as ""): strtoll's value, without its locale
 * and base handling for up to 18 digits (the writer reads a dozen a usage
 * record); anything else goes to strtoll itself. */
int64_t db_int(const char *s);

/* Runs a command without result rows; -1 with err.  `params` may be NULL. */
int db_exec(PGconn *c, const char *sql, int nparams, const char *const *params, struct error *err)
	__attribute__((warn_unused_result));
/* db_exec for cleanup paths (ROLLBACK, unlock) whose failure changes nothing. */
void db_exec_quiet(PGconn *c, const char *sql);
/* Runs a query; the result (owned by the caller, PQclear it) or NULL with err. */
/* The integer in a cell, 0 when it is NULL. */
int64_t db_int64(const PGresult *r, int row, int col);
/* A numeric total in a cell, exactly (common/money.h); NULL or not an integer: 0. */
money_total db_total(const PGresult *r, int row, int col);
PGresult *db_query(PGconn *c, const char *sql, int nparams, const char *const *params, struct error *err)
	__attribute__((warn_unused_result));

/* Parameters each in text (NUL-terminated, fmt 0) or binary (len bytes,
 * fmt 1: e.g. an array of common/pgarr.h); all borrowed. */
#define DB_MAX_PARAMS 16
struct db_params {
	int n;
	const char *v[DB_MAX_PARAMS];
	int len[DB_MAX_PARAMS];
	int fmt[DB_MAX_PARAMS];
};
/* db_query (no COMMIT through it) with such parameters. */
PGresult *db_query_params(PGconn *c, const char *sql, const struct db_params *p, struct error *err)
	__attribute__((warn_unused_result));

/* ---- pipeline mode (libpq 14+): several statements, one round trip ----
 * db_pipeline_begin enters pipeline mode; db_send queues a statement
 * (prepared under `name` on this connection by db_prepare, or NULL: sql
 * parsed each time); db_pipeline_sync sends everything; then db_next
 * returns each queued statement's result in order (NULL with err on its
 * failure; later ones fail with the first error); db_pipeline_end reads
 * what is left up to the sync point and leaves pipeline mode (call it on
 * every path, also after an error).  Statements queued after the last sync
 * point (a batch given up while it was built) get a sync point of their
 * own first, so the end never waits for answers the server was not asked
 * for; 0, or -1 when the connection is not in a known state afterwards (it
 * was reset: a new session, or db_conn_broken). */
int db_pipeline_begin(PGconn *c, struct error *err) __attribute__((warn_unused_result));
int db_send(PGconn *c, const char *name, const char *sql, int nparams, const char *const *params, struct error *err)
	__attribute__((warn_unused_result));
/* db_send with text and binary parameters (struct db_params). */
int db_send_params(PGconn *c, const char *name, const char *sql, const struct db_params *p, struct error *err)
	__attribute__((warn_unused_result));
int db_pipeline_sync(PGconn *c, struct error *err) __attribute__((warn_unused_result));
/* Sends what is queued without a sync point: the server starts on it while
 * the caller does something else; results come after a later sync. */
int db_pipeline_flush(PGconn *c, struct error *err) __attribute__((warn_unused_result));
PGresult *db_next(PGconn *c, struct error *err) __attribute__((warn_unused_result));
int db_pipeline_end(PGconn *c);
/* Prepares each {name, sql} pair of a NULL-terminated list on c (outside a
 * pipeline).  -1 with err. */
int db_prepare(PGconn *c, const char *const (*stmts)[2], struct error *err) __attribute__((warn_unused_result));

/* True when the SQLSTATE of the last failure means "retry the transaction"
 * (serialization failure, deadlock, unique violation from a racing writer). */
bool db_error_retryable(const struct error *err);
/* True when the connection is gone (then reconnect). */
bool db_conn_broken(PGconn *c);

/* Applies pending migrations in dir (NNNN_name.sql, in name order), each in
 * one transaction, recording name and sha256.  An applied file whose
 * checksum changed is refused, naming the file.  Prints one line per file
 * applied to `out` if not NULL.  0 or -1 with err. */
int db_migrate(PGconn *c, const char *dir, FILE *out, struct error *err) __attribute__((warn_unused_result));
/* Makes sure the monthly partitions of the ledger tables exist for the
 * current UTC month and the next months_ahead months (SQL function
 * ledger_ensure_partitions of migration 0006; idempotent, cheap when there
 * is nothing to do).  *created gets how many it created.  0 or -1 with err
 * (a lock not obtained within 200 ms is an error: call again later). */
int db_ensure_partitions(PGconn *c, int months_ahead, int *created, struct error *err)
	__attribute__((warn_unused_result));
/* This database's identity, for the Redis it owns (common/rclient.h
 * rclient_redis_owner): "pg:<system identifier>/<database oid>/<name>".
 * A promoted standby is the same database (same system identifier and
 * oid); a copy restored elsewhere, or a database dropped and made again
 * under the same name, is another.  0, or -1 with err. */
int db_identity(PGconn *c, char *out, size_t cap, struct error *err) __attribute__((warn_unused_result));
/* Number of files in dir not yet applied (or changed): 0 means up to date.  -1 with err. */
int db_pending_migrations(PGconn *c, const char *dir, struct error *err) __attribute__((warn_unused_result));

#endif
