/* db_pipeline: ledger/db.c's pipeline mode when a batch stops before its
 * sync point (what the usage writer does when building a batch fails after
 * some statements were queued: an allocation of its own, or a db_send that
 * libpq refused), against a real PostgreSQL.
 *
 * usage: db_pipeline CONNINFO
 * Each case leaves pipeline mode through db_pipeline_end and then runs a
 * plain query on the same connection.  An alarm turns a wait that never
 * ends into a failure (exit 3).  Prints "ok" and exits 0, or 1 naming the
 * case that failed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger/db.h"

static int usable(PGconn *c, const char *what)
{
	struct error err = {0};
	PGresult *r = db_query(c, "SELECT 41 + 1", 0, NULL, &err);
	int ok = r && strcmp(PQgetvalue(r, 0, 0), "42") == 0;

	PQclear(r);
	if (!ok)
		fprintf(stderr, "db_pipeline: %s: the connection does not answer afterwards: %s\n", what, err.msg);
	return ok ? 0 : -1;
}

static void on_alarm(int sig)
{
	static const char m[] = "db_pipeline: db_pipeline_end waited for results that were never sent\n";

	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0)
		_exit(3);
	_exit(3);
}

int main(int argc, char **argv)
{
	struct error err = {0};
	PGconn *c;
	PGresult *r;
	const char *one[1] = {"7"};

	if (argc != 2) {
		fprintf(stderr, "usage: db_pipeline CONNINFO\n");
		return 2;
	}
	signal(SIGALRM, on_alarm);
	alarm(20);
	c = db_connect(argv[1], 5000, &err);
	if (!c) {
		fprintf(stderr, "db_pipeline: connect: %s\n", err.msg);
		return 1;
	}
	/* 1: statements queued, the batch given up before its sync point */
	if (db_pipeline_begin(c, &err) < 0 || db_send(c, NULL, "BEGIN", 0, NULL, &err) < 0 ||
	    db_send(c, NULL, "SELECT $1::int", 1, one, &err) < 0) {
		fprintf(stderr, "db_pipeline: unsynced: %s\n", err.msg);
		return 1;
	}
	if (db_pipeline_end(c) < 0 || db_exec(c, "ROLLBACK", 0, NULL, &err) < 0 || usable(c, "unsynced") < 0)
		return 1;
	/* 2: the same after a statement that fails (the server then skips
	 * everything up to a sync point, plain queries included) */
	if (db_pipeline_begin(c, &err) < 0 || db_send(c, NULL, "BEGIN", 0, NULL, &err) < 0 ||
	    db_send(c, NULL, "SELECT 1 / 0", 0, NULL, &err) < 0 || db_send(c, NULL, "SELECT 2", 0, NULL, &err) < 0) {
		fprintf(stderr, "db_pipeline: unsynced error: %s\n", err.msg);
		return 1;
	}
	if (db_pipeline_end(c) < 0 || db_exec(c, "ROLLBACK", 0, NULL, &err) < 0 || usable(c, "unsynced error") < 0)
		return 1;
	/* 3: the usual batch: synced, its results read, then the end */
	if (db_pipeline_begin(c, &err) < 0 || db_send(c, NULL, "SELECT $1::int", 1, one, &err) < 0 ||
	    db_pipeline_sync(c, &err) < 0 || (r = db_next(c, &err)) == NULL) {
		fprintf(stderr, "db_pipeline: synced: %s\n", err.msg);
		return 1;
	}
	PQclear(r);
	if (db_pipeline_end(c) < 0 || usable(c, "synced") < 0)
		return 1;
	PQfinish(c);
	printf("ok\n");
	return 0;
}
