/* export.c: see export.h.  The lines themselves are export_file.c's. */
#include "ledger/export.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/jsonnum.h"
#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/manifest.h"

/* exports and manifests are finance data: owner read/write only */
#define EXPORT_FILE_MODE 0600

#define FETCH_ROWS "5000"

static void hex(char *out, const uint8_t *p, size_t n)
{
	sodium_bin2hex(out, 2 * n + 1, p, n);
}

/* ---- writing ---- */

static const char export_sql[] =
	"SELECT j.txn_id, (extract(epoch FROM j.created_at) * 1000000)::bigint, j.kind, coalesce(j.account_id, 0),"
	" p.line, p.ledger_account_id, la.type, coalesce(g.grant_id, 0), p.amount, j.writer, j.seq,"
	" j.idempotency_key, j.actor, j.reason, j.details, encode(j.prev_hash, 'hex'), encode(j.hash, 'hex')"
	" FROM journal j"
	/* txn_id alone joins (unique across partitions: ledger_idempotency);
	 * adding created_at = created_at makes the planner expect one row and
	 * pick a nested loop over grants for every posting (4x slower) */
	" JOIN postings p ON p.txn_id = j.txn_id"
	" JOIN ledger_accounts la ON la.ledger_account_id = p.ledger_account_id"
	" LEFT JOIN grants g ON g.ledger_account_id = p.ledger_account_id"
	" WHERE j.created_at >= $1::timestamptz AND j.created_at < $2::timestamptz"
	" AND p.created_at >= $1::timestamptz AND p.created_at < $2::timestamptz"
	" AND ($3::bigint = 0 OR j.account_id = $3::bigint)"
	" ORDER BY j.txn_id, p.line";

struct writer {
	FILE *f;
	crypto_generichash_state fh;
	int64_t bytes;
};

static int emit(struct writer *w, const char *p, size_t n)
{
	crypto_generichash_update(&w->fh, (const unsigned char *)p, n);
	w->bytes += (int64_t)n;
	return fwrite(p, 1, n, w->f) == n ? 0 : -1;
}

static int64_t estimate_rows(PGconn *c, const char *const *p)
{
	struct buf q;
	struct error e;
	PGresult *r;
	json_t *j;
	int64_t n = 0;

	buf_init(&q);
	buf_printf(&q, "EXPLAIN (FORMAT JSON) %s", export_sql);
	r = db_query(c, q.data, 3, p, &e);
	buf_release(&q);
	if (!r)
		return 0;
	j = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
	n = (int64_t)json_number_value(json_object_get(json_object_get(json_array_get(j, 0), "Plan"), "Plan Rows"));
	json_decref(j);
	PQclear(r);
	return n;
}

static void progress(FILE *out, int64_t rows, int64_t est, int64_t t0, bool final)
{
	double secs = (double)(time_now_us() - t0) / 1e6;
	double rate = secs > 0 ? (double)rows / secs : 0;

	if (!out)
		return;
	if (final) {
		fprintf(out, "\rexport: %" PRId64 " rows in %.1f s (%.0f rows/s)%20s\n", rows, secs, rate, "");
	} else if (est > rows && rate > 0) {
		fprintf(out, "\rexport: %" PRId64 " of ~%" PRId64 " rows, %.0f rows/s, ETA %.0f s   ", rows, est, rate,
			(double)(est - rows) / rate);
	} else {
		fprintf(out, "\rexport: %" PRId64 " rows, %.0f rows/s   ", rows, rate);
	}
	fflush(out);
}

static int write_manifest(const char *path, json_t *m, struct error *err)
{
	char tmp[4300];
	char *s = jsonnum_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
	int fd = -1, rc = -1;
	size_t n;

	if (!s) {
		return error_set(err, 0, "oom", "out of memory");
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, EXPORT_FILE_MODE);
	if (fd < 0 || fchmod(fd, EXPORT_FILE_MODE) != 0) {
		error_set(err, 0, "io", "cannot create '%s': %s", tmp, strerror(errno));
		goto done;
	}
	n = strlen(s);
	if (write(fd, s, n) != (ssize_t)n || write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
		error_set(err, 0, "io", "cannot write '%s': %s", tmp, strerror(errno));
		goto done;
	}
	if (close(fd) != 0 || rename(tmp, path) != 0) {
		fd = -1;
		error_set(err, 0, "io", "cannot write '%s': %s", path, strerror(errno));
		goto done;
	}
	fd = -1;
	rc = 0;
done:
	if (fd >= 0)
		close(fd);
	if (rc < 0)
		unlink(tmp);
	free(s);
	return rc;
}

static void fill_row(PGresult *r, int i, struct export_row *row)
{
	row->txn_id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
	row->created_at_us = strtoll(PQgetvalue(r, i, 1), NULL, 10);
	row->kind = PQgetvalue(r, i, 2);
	row->account_id = strtoll(PQgetvalue(r, i, 3), NULL, 10);
	row->line = strtoll(PQgetvalue(r, i, 4), NULL, 10);
	row->ledger_account_id = strtoll(PQgetvalue(r, i, 5), NULL, 10);
	row->la_type = PQgetvalue(r, i, 6);
	row->grant_id = strtoll(PQgetvalue(r, i, 7), NULL, 10);
	row->amount = strtoll(PQgetvalue(r, i, 8), NULL, 10);
	row->writer = PQgetvalue(r, i, 9);
	row->seq = strtoll(PQgetvalue(r, i, 10), NULL, 10);
	row->idempotency_key = PQgetvalue(r, i, 11);
	row->actor = PQgetvalue(r, i, 12);
	row->reason = PQgetvalue(r, i, 13);
	row->details = PQgetvalue(r, i, 14);
	row->prev_hex = PQgetvalue(r, i, 15);
	row->hash_hex = PQgetvalue(r, i, 16);
}

/* What the writer knows while it streams: the file, the row-hash chain and
 * what the manifest states about the lines written so far. */
struct export_state {
	const struct export_opts *o;
	struct writer w;
	struct buf line;
	struct export_derived d;
	struct export_totals tt;
	struct export_chains cs;
	uint8_t rh[32];
	json_t *checkpoints, *first, *last;
	int64_t rows, txns, cur_txn, est, t0, last_progress;
};

/* Creates o->path, owner only, for writing (*created once it exists). */
static int open_output(const struct export_opts *o, const char *manifest_path, struct writer *w, bool *created,
		       struct error *err)
{
	int fd;

	if (o->to_us <= o->from_us)
		return error_set(err, 0, "invalid_range", "the range is empty: --to must be after --from");
	if (!o->force && access(manifest_path, F_OK) == 0)
		return error_set(err, 0, "exists", "'%s' exists (use --force to overwrite)", manifest_path);
	fd = open(o->path, O_WRONLY | O_CREAT | (o->force ? O_TRUNC : O_EXCL), EXPORT_FILE_MODE);
	/* finance data: owner only, also when --force overwrites a wider file */
	if (fd >= 0 && fchmod(fd, EXPORT_FILE_MODE) != 0) {
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		return error_set(err, 0, "io", "cannot create '%s': %s%s", o->path, strerror(errno),
				 errno == EEXIST ? " (use --force to overwrite)" : "");
	*created = true;
	w->f = fdopen(fd, "wb");
	if (!w->f) {
		error_set(err, 0, "io", "cannot open '%s': %s", o->path, strerror(errno));
		close(fd);
		return -1;
	}
	setvbuf(w->f, NULL, _IOFBF, 1 << 20);
	crypto_generichash_init(&w->fh, NULL, 0, 32);
	return 0;
}

/* Inside the snapshot: the cursor export_rows over the range (p: from, to,
 * account), and the planner's estimate of its rows for the progress line. */
static int open_cursor(PGconn *c, const char *const *p, struct export_state *s, struct error *err)
{
	struct buf q;
	int rc;

	/* an export reads the whole range: its first FETCH sorts it, which on a
	 * busy server takes longer than pg_timeout_ms (meant for the short
	 * statements of the other commands); a read-only snapshot holds no lock
	 * that anything waits on, so it may take as long as it needs */
	if (db_exec(c, "SET LOCAL statement_timeout = 0", 0, NULL, err) < 0)
		return -1;
	if (s->o->progress)
		s->est = estimate_rows(c, p);
	buf_init(&q);
	buf_printf(&q, "DECLARE export_rows NO SCROLL CURSOR FOR %s", export_sql);
	rc = db_exec(c, q.data, 3, p, err);
	buf_release(&q);
	return rc;
}

static int write_failed(const struct export_state *s, struct error *err)
{
	return error_set(err, 0, "io", "cannot write '%s': %s", s->o->path, strerror(errno));
}

/* h0, and the CSV header line. */
static int write_header(struct export_state *s, struct error *err)
{
	if (s->o->format != EXPORT_CSV) {
		export_file_row_hash_init(s->rh, s->o->format, NULL, 0);
		return 0;
	}
	export_file_header(&s->line);
	export_file_row_hash_init(s->rh, s->o->format, s->line.data, s->line.len);
	buf_append(&s->line, "\r\n", 2);
	return emit(&s->w, s->line.data, s->line.len) < 0 ? write_failed(s, err) : 0;
}

/* The first line of a transaction: its details, its writer's chain head,
 * the manifest's first and last entry. */
static int begin_txn(struct export_state *s, const struct export_row *row, struct error *err)
{
	struct export_chain *ch;
	bool created;

	s->cur_txn = row->txn_id;
	s->txns++;
	export_file_derive(row->details, &s->d);
	ch = export_file_chain_get(&s->cs, row->writer, &created);
	if (!ch)
		return error_set(err, 0, "oom", "out of memory");
	if (created) {
		ch->first_seq = row->seq;
		snprintf(ch->first_prev, sizeof(ch->first_prev), "%s", row->prev_hex);
	}
	ch->last_seq = row->seq;
	ch->txns++;
	snprintf(ch->last_hash, sizeof(ch->last_hash), "%s", row->hash_hex);
	json_decref(s->last);
	s->last = export_file_entry_json(row);
	if (!s->first)
		s->first = json_incref(s->last);
	return 0;
}

/* One posting line with its row hash; a checkpoint every
 * EXPORT_CHECKPOINT_EVERY rows. */
static int write_row(struct export_state *s, const struct export_row *row, struct error *err)
{
	char rhex[65];

	if (row->txn_id != s->cur_txn && begin_txn(s, row, err) < 0)
		return -1;
	export_file_totals_add(&s->tt, row->la_type, row->amount);
	buf_reset(&s->line);
	export_file_body(&s->line, s->o->format, row, &s->d);
	export_file_row_hash_step(s->rh, s->line.data, s->line.len);
	hex(rhex, s->rh, 32);
	if (s->o->format == EXPORT_CSV)
		buf_printf(&s->line, ",%s\r\n", rhex);
	else
		buf_printf(&s->line, ",\"row_hash\":\"%s\"}\n", rhex);
	if (emit(&s->w, s->line.data, s->line.len) < 0)
		return write_failed(s, err);
	s->rows++;
	if (s->rows % EXPORT_CHECKPOINT_EVERY == 0)
		json_array_append_new(s->checkpoints,
				      json_pack("{s:I,s:s}", "row", (json_int_t)s->rows, "row_hash", rhex));
	return 0;
}

/* A writer gives a transaction its created_at before it commits (the CLI
 * after locking the customer, then it waits for its chain; billingd's
 * batches before their locks and their COMMIT): a snapshot taken now could
 * miss a transaction with created_at in the range that commits a moment
 * later, and a later export of the same range would hold it.  So before
 * its snapshot the export waits for the transactions of this database
 * (those it may see: the service role's) that began before the range's end
 * (plus a second of slack between a writer's clock reading and its BEGIN)
 * and have written something or wait for a lock: each until it ends, at
 * most wait_ms in all; newer transactions are not waited for.  A read-only
 * transaction that waits for nothing (another export) holds nothing up. */
static const char writers_sql[] = "SELECT pid, (extract(epoch FROM xact_start) * 1000000)::bigint FROM pg_stat_activity"
				  " WHERE datname = current_database() AND pid <> pg_backend_pid()"
				  " AND backend_type = 'client backend'"
				  " AND xact_start < $1::timestamptz + interval '1 second'"
				  " AND (backend_xid IS NOT NULL OR wait_event_type = 'Lock')";

static int wait_for_writers(PGconn *c, const struct export_opts *o, const char *to, struct error *err)
{
	const char *p[2] = {to, NULL};
	struct buf pids, starts;
	PGresult *r = db_query(c, writers_sql, 1, p, err);
	int64_t deadline = time_now_us() + (int64_t)(o->wait_ms ? o->wait_ms : EXPORT_WAIT_MS) * 1000;
	int rc = -1;

	if (!r)
		return -1;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return 0;
	}
	buf_init(&pids);
	buf_init(&starts);
	buf_puts(&pids, "{");
	buf_puts(&starts, "{");
	for (int i = 0; i < PQntuples(r); i++) {
		buf_printf(&pids, "%s%s", i ? "," : "", PQgetvalue(r, i, 0));
		buf_printf(&starts, "%s%s", i ? "," : "", PQgetvalue(r, i, 1));
	}
	buf_puts(&pids, "}");
	buf_puts(&starts, "}");
	PQclear(r);
	p[0] = pids.data;
	p[1] = starts.data;
	for (;;) {
		/* the same session in the same transaction: still in flight */
		r = db_query(c,
			     "SELECT count(*), min(a.pid), min(a.xact_start)::text FROM pg_stat_activity a"
			     " JOIN unnest($1::int[], $2::bigint[]) w(pid, start_us) ON w.pid = a.pid"
			     " AND w.start_us = (extract(epoch FROM a.xact_start) * 1000000)::bigint",
			     2, p, err);
		if (!r)
			break;
		if (strcmp(PQgetvalue(r, 0, 0), "0") == 0) {
			rc = 0;
			break;
		}
		if (time_now_us() >= deadline) {
			error_set(
				err, 0, "writers_in_flight",
				"%s transaction(s) that began before the range's end are still in progress (session"
				" %s, since %s): they may still commit entries into the range; try again, or end them",
				PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
			break;
		}
		if (o->progress) {
			fprintf(o->progress, "\rexport: waiting for %s transaction(s) in progress   ",
				PQgetvalue(r, 0, 0));
			fflush(o->progress);
		}
		PQclear(r);
		r = NULL;
		usleep(20000);
	}
	PQclear(r);
	buf_release(&pids);
	buf_release(&starts);
	return rc;
}

/* Every row of the cursor, FETCH_ROWS at a time. */
static int write_rows(PGconn *c, struct export_state *s, struct error *err)
{
	for (;;) {
		PGresult *r = db_query(c, "FETCH " FETCH_ROWS " FROM export_rows", 0, NULL, err);
		int n;

		if (!r)
			return -1;
		n = PQntuples(r);
		if (n == 0) {
			PQclear(r);
			return 0;
		}
		for (int i = 0; i < n; i++) {
			struct export_row row;

			fill_row(r, i, &row);
			if (write_row(s, &row, err) < 0) {
				PQclear(r);
				return -1;
			}
		}
		PQclear(r);
		if (s->o->progress && time_now_us() - s->last_progress > 250000) {
			s->last_progress = time_now_us();
			progress(s->o->progress, s->rows, s->est, s->t0, false);
		}
	}
}

/* Flushed to the disk and closed: the file's BLAKE2b-256 into fh. */
static int close_output(struct export_state *s, uint8_t fh[32], struct error *err)
{
	FILE *f = s->w.f;

	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		return write_failed(s, err);
	s->w.f = NULL;
	if (fclose(f) != 0)
		return write_failed(s, err);
	crypto_generichash_final(&s->w.fh, fh, 32);
	return 0;
}

/* The manifest before its signature, NULL when out of memory. */
static json_t *build_manifest(const struct export_state *s, const char *from, const char *to, const uint8_t fh[32])
{
	const struct export_opts *o = s->o;
	char now[40], fhex[65], rhex[65], *pathcopy = strdup(o->path);
	json_t *m;

	hex(fhex, fh, 32);
	hex(rhex, s->rh, 32);
	time_format_rfc3339(time_now_us(), now, sizeof(now));
	m = json_pack("{s:s,s:s,s:s,s:I,s:s,s:I,s:I,s:{s:s,s:s,s:o},s:s,s:o,s:o,s:o,s:o,"
		      "s:{s:s,s:s,s:I,s:o},s:s,s:s,s:s}",
		      "format", MANIFEST_FORMAT, "file", pathcopy ? basename(pathcopy) : "", "file_format",
		      o->format == EXPORT_CSV ? "csv" : "ndjson", "bytes", (json_int_t)s->w.bytes, "blake2b_256", fhex,
		      "rows", (json_int_t)s->rows, "transactions", (json_int_t)s->txns, "range", "from", from, "to", to,
		      "account_id", o->account_id ? json_integer(o->account_id) : json_null(), "currency",
		      EXPORT_CURRENCY, "first", s->first ? json_incref(s->first) : json_null(), "last",
		      s->last ? json_incref(s->last) : json_null(), "totals", export_file_totals_json(&s->tt), "chains",
		      export_file_chains_json(&s->cs), "row_hash", "algorithm",
		      "h0 = BLAKE2b-256(\"" EXPORT_ROW_TAG "\\0\" || format [|| CSV header]); "
		      "h_i = BLAKE2b-256(h_{i-1} || line bytes before the row_hash field)",
		      "last", rhex, "checkpoint_every", (json_int_t)EXPORT_CHECKPOINT_EVERY, "checkpoints",
		      json_incref(s->checkpoints), "hash_chain",
		      "journal_encode of billing-ledger-v1 (docs/ledger.md: Hash chain)", "created_at", now, "created_by",
		      o->operator ? o->operator : "");
	free(pathcopy);
	if (!m)
		return NULL;
	json_object_set_new(m, "columns", export_file_columns_json());
	json_object_set_new(
		m, "signature_covers",
		json_string("Ed25519 over this object without \"signature\", as JSON with keys sorted, no "
			    "white space, only \\\" \\\\ \\b \\f \\n \\r \\t \\u00xx escaped: "
			    "Python json.dumps(m, sort_keys=True, separators=(',', ':'), ensure_ascii=False)"));
	return m;
}

int export_write(PGconn *c, const struct export_opts *o, struct export_result *res, struct error *err)
{
	char from[40], to[40], acct[32], manifest_path[4200];
	const char *p[3] = {from, to, acct};
	struct export_state s;
	json_t *m = NULL;
	int rc = -1, in_tx = 0;
	bool created_file = false;

	memset(res, 0, sizeof(*res));
	memset(&s, 0, sizeof(s));
	s.o = o;
	s.t0 = time_now_us();
	s.checkpoints = json_array();
	buf_init(&s.line);
	time_format_rfc3339(o->from_us, from, sizeof(from));
	time_format_rfc3339(o->to_us, to, sizeof(to));
	snprintf(acct, sizeof(acct), "%" PRId64, o->account_id);
	snprintf(manifest_path, sizeof(manifest_path), "%s.manifest.json", o->path);
	if (!s.checkpoints) {
		error_set(err, 0, "oom", "out of memory");
		goto done;
	}
	if (open_output(o, manifest_path, &s.w, &created_file, err) < 0)
		goto done;
	if (wait_for_writers(c, o, to, err) < 0)
		goto done;
	if (db_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, err) < 0)
		goto done;
	in_tx = 1;
	if (open_cursor(c, p, &s, err) < 0 || write_header(&s, err) < 0 || write_rows(c, &s, err) < 0)
		goto done;
	db_exec_quiet(c, "ROLLBACK");
	in_tx = 0;
	if (s.tt.overflow) {
		error_set(err, 0, "overflow", "the range holds more than 32 ledger account types");
		goto done;
	}
	if (close_output(&s, res->blake2b, err) < 0)
		goto done;
	m = build_manifest(&s, from, to, res->blake2b);
	if (!m) {
		error_set(err, 0, "oom", "cannot build the manifest");
		goto done;
	}
	if (manifest_sign(m, o->sk, err) < 0 || write_manifest(manifest_path, m, err) < 0)
		goto done;
	progress(o->progress, s.rows, s.est, s.t0, true);
	res->rows = s.rows;
	res->txns = s.txns;
	res->bytes = s.w.bytes;
	snprintf(res->manifest_path, sizeof(res->manifest_path), "%s", manifest_path);
	rc = 0;
done:
	if (in_tx)
		db_exec_quiet(c, "ROLLBACK");
	if (s.w.f)
		fclose(s.w.f);
	if (rc < 0 && created_file)
		unlink(o->path);
	if (o->progress && rc < 0 && s.rows)
		fputc('\n', o->progress);
	export_file_derived_release(&s.d);
	export_file_chains_release(&s.cs);
	buf_release(&s.line);
	json_decref(m);
	json_decref(s.first);
	json_decref(s.last);
	json_decref(s.checkpoints);
	return rc;
}
