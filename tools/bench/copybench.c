/* copybench.c: the COPY baseline of the batch usage scenario of `make bench`.
 *
 *   copybench CONNINFO [-c CONNS] [-d SECONDS] [--warmup S] [--records K] [--schema S]
 *             [--accounts N] [--label L]
 *
 * CONNS threads, each with its own connection, each repeating for the
 * duration: BEGIN; COPY K journal rows, 2K postings, K usage_records rows
 * into SCHEMA.journal, SCHEMA.postings, SCHEMA.usage_records (tables made
 * by `CREATE TABLE ... (LIKE public.X INCLUDING ALL)`: same columns,
 * indexes and checks, no triggers, no foreign keys); COMMIT.  The rows have
 * the sizes of what billingd writes for one usage record (hashes, the
 * details JSON, the stored answer), so this is the cost of getting the same
 * bytes durably into the same shapes with nothing else done.  Prints one
 * JSON object like loadgen's (requests = transactions, items = records). */
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/bench/procstat.h"

static const char *o_conninfo, *o_schema = "bench_copy", *o_label = "copy";
static int o_conns = 4, o_records = 1000, o_accounts = 1000;
static double o_seconds = 10, o_warmup = 0;

static atomic_llong g_txn_id;
static uint64_t g_t_warm, g_t_end;

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		int n;
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n >= 0 && b->p && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		b->cap = b->cap ? b->cap * 2 : 1 << 20;
		b->p = realloc(b->p, b->cap);
		if (!b->p) {
			fprintf(stderr, "copybench: out of memory\n");
			exit(1);
		}
	}
}

struct worker {
	int idx;
	pthread_t th;
	uint64_t rng;
	uint32_t *lat;
	size_t nlat, caplat;
	uint64_t tx_window, failed;
	char err[300];
};

static uint64_t rnd(struct worker *w)
{
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 7;
	w->rng ^= w->rng << 17;
	return w->rng;
}

static void hex32(struct worker *w, char out[65])
{
	static const char d[] = "0123456789abcdef";

	for (int i = 0; i < 64; i++)
		out[i] = d[rnd(w) & 15];
	out[64] = '\0';
}

static int copy_in(PGconn *c, const char *sql, const struct sbuf *b, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, sql);
	int ok = PQresultStatus(r) == PGRES_COPY_IN;

	PQclear(r);
	if (!ok || PQputCopyData(c, b->p, (int)b->len) != 1 || PQputCopyEnd(c, NULL) != 1) {
		snprintf(err, errlen, "%s", PQerrorMessage(c));
		return -1;
	}
	while ((r = PQgetResult(c))) {
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			snprintf(err, errlen, "%s", PQresultErrorMessage(r));
			ok = 0;
		}
		PQclear(r);
	}
	return ok ? 0 : -1;
}

static int exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, sql);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

	if (!ok)
		snprintf(err, errlen, "%s", PQresultErrorMessage(r));
	PQclear(r);
	return ok ? 0 : -1;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	PGconn *c = PQconnectdb(o_conninfo);
	struct sbuf j = {0}, p = {0}, u = {0};
	char sql_j[512], sql_p[512], sql_u[512], writer[32];
	int64_t seq = 0;

	if (PQstatus(c) != CONNECTION_OK) {
		snprintf(w->err, sizeof(w->err), "%s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	snprintf(writer, sizeof(writer), "bench-copy-%d", w->idx);
	snprintf(sql_j, sizeof(sql_j),
		 "COPY %s.journal (txn_id, writer, seq, kind, idempotency_key, content_hash, account_id, actor,"
		 " reason, details, created_at, prev_hash, hash) FROM STDIN",
		 o_schema);
	snprintf(sql_p, sizeof(sql_p),
		 "COPY %s.postings (txn_id, line, ledger_account_id, account_id, amount) FROM STDIN", o_schema);
	snprintf(sql_u, sizeof(sql_u),
		 "COPY %s.usage_records (request_id, account_id, txn_id, body_hash, model, input_tokens,"
		 " cached_input_tokens, output_tokens, started_at, cost_nanos, price_version, hold_id, status,"
		 " response, created_at) FROM STDIN",
		 o_schema);
	while (now_us() < g_t_end) {
		uint64_t t0 = now_us(), t1;
		char prev[65], hash[65], chash[65], bhash[65], ts[40];
		time_t now = time(NULL);
		struct tm tm;

		gmtime_r(&now, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
		j.len = p.len = u.len = 0;
		hex32(w, prev);
		for (int i = 0; i < o_records; i++) {
			int64_t txn = atomic_fetch_add(&g_txn_id, 1) + 1;
			int64_t acct = 1 + (int64_t)(rnd(w) % (uint64_t)o_accounts), cost = 4500000;
			int64_t grant_la = 100 + acct * 2, grant = acct;
			char rid[64];
			snprintf(rid, sizeof(rid), "copy-%d-%" PRId64, w->idx, txn);
			hex32(w, hash);
			hex32(w, chash);
			hex32(w, bhash);
			sb_printf(&j,
				  "%" PRId64 "\t%s\t%" PRId64 "\tusage\tusage:%s\t\\\\x%s\t%" PRId64
				  "\tgateway\tusage\t"
				  "{\"request_id\":\"%s\",\"model\":\"deepseek-chat\",\"input_tokens\":1200,"
				  "\"cached_input_tokens\":200,\"output_tokens\":300,\"started_at\":\"%s\","
				  "\"price_version\":1,\"cost_nanos\":%" PRId64 "}\t%s\t\\\\x%s\t\\\\x%s\n",
				  txn, writer, ++seq, rid, chash, acct, rid, ts, cost, ts, prev, hash);
			memcpy(prev, hash, sizeof(prev));
			/* no posting_id: the writer sends none either (before 0018 its
			 * default numbered the rows, since 0018 it is NULL) */
			sb_printf(&p, "%" PRId64 "\t1\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\n", txn, grant_la, acct,
				  -cost);
			sb_printf(&p, "%" PRId64 "\t2\t1\t\\N\t%" PRId64 "\n", txn, cost);
			sb_printf(&u,
				  "%s\t%" PRId64 "\t%" PRId64 "\t\\\\x%s\tdeepseek-chat\t1200\t200\t300\t%s\t%" PRId64
				  "\t1\t\\N\t\\N\t{\"request_id\":\"%s\",\"account_id\":%" PRId64
				  ",\"cost_nanos\":%" PRId64
				  ",\"price_version\":1,\"charged\":[{\"bucket\":\"grant\",\"grant_id\":%" PRId64
				  ",\"amount_nanos\":%" PRId64 "}],\"balance\":{\"paid_nanos\":1000000000000000,"
				  "\"promo_nanos\":13995500000,\"held_nanos\":0,\"available_nanos\":1000013995500000},"
				  "\"duplicate\":false}\t%s\n",
				  rid, acct, txn, bhash, ts, cost, rid, acct, cost, grant, cost, ts);
		}
		if (exec_ok(c, "BEGIN", w->err, sizeof(w->err)) < 0 ||
		    copy_in(c, sql_j, &j, w->err, sizeof(w->err)) < 0 ||
		    copy_in(c, sql_p, &p, w->err, sizeof(w->err)) < 0 ||
		    copy_in(c, sql_u, &u, w->err, sizeof(w->err)) < 0 ||
		    exec_ok(c, "COMMIT", w->err, sizeof(w->err)) < 0) {
			w->failed++;
			PQclear(PQexec(c, "ROLLBACK"));
			if (PQstatus(c) != CONNECTION_OK)
				break;
			continue;
		}
		t1 = now_us();
		if (t1 >= g_t_warm && t1 <= g_t_end) {
			w->tx_window++;
			if (w->nlat == w->caplat) {
				w->caplat = w->caplat ? w->caplat * 2 : 4096;
				w->lat = realloc(w->lat, w->caplat * sizeof(*w->lat));
				if (!w->lat)
					exit(1);
			}
			w->lat[w->nlat++] = (uint32_t)(t1 - t0);
		}
	}
	free(j.p);
	free(p.p);
	free(u.p);
	PQfinish(c);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	struct worker *w;
	uint32_t *all;
	size_t n = 0;
	uint64_t tx = 0, failed = 0, t0;
	double window, mean = 0, cpu_warm, cpu_end;
	const char *err = "";

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && ++i)
		if (ARG("-c"))
			o_conns = atoi(v);
		else if (ARG("-d"))
			o_seconds = atof(v);
		else if (ARG("--warmup"))
			o_warmup = atof(v);
		else if (ARG("--records"))
			o_records = atoi(v);
		else if (ARG("--schema"))
			o_schema = v;
		else if (ARG("--accounts"))
			o_accounts = atoi(v);
		else if (ARG("--label"))
			o_label = v;
		else if (a[0] != '-' && !o_conninfo)
			o_conninfo = a;
		else {
			fprintf(stderr, "usage: copybench CONNINFO [-c CONNS] [-d SECONDS] [--warmup S] [--records K]"
					" [--schema S] [--accounts N] [--label L]\n");
			return 2;
		}
#undef ARG
	}
	if (!o_conninfo || o_conns < 1 || o_records < 1 || o_accounts < 1)
		return 2;
	w = calloc((size_t)o_conns, sizeof(*w));
	if (!w)
		return 1;
	t0 = now_us();
	g_t_warm = t0 + (uint64_t)(o_warmup * 1e6);
	g_t_end = g_t_warm + (uint64_t)(o_seconds * 1e6);
	for (int i = 0; i < o_conns; i++) {
		w[i].idx = i;
		w[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1) ^ t0;
		pthread_create(&w[i].th, NULL, run, &w[i]);
	}
	/* the machine's CPU over the measured window */
	while (now_us() < g_t_warm)
		usleep(1000);
	cpu_warm = procstat_busy_s();
	while (now_us() < g_t_end)
		usleep(1000);
	cpu_end = procstat_busy_s();
	for (int i = 0; i < o_conns; i++) {
		pthread_join(w[i].th, NULL);
		n += w[i].nlat;
		tx += w[i].tx_window;
		failed += w[i].failed;
		if (w[i].err[0] && !err[0])
			err = w[i].err;
	}
	all = calloc(n + 1, sizeof(*all));
	n = 0;
	for (int i = 0; i < o_conns; i++) {
		memcpy(all + n, w[i].lat, w[i].nlat * sizeof(*all));
		n += w[i].nlat;
	}
	qsort(all, n, sizeof(*all), cmp_u32);
	for (size_t i = 0; i < n; i++)
		mean += all[i];
	mean = n ? mean / (double)n / 1000 : 0;
	window = o_seconds;
#define PCT(q) (n ? all[(size_t)((q) * (double)n) < n ? (size_t)((q) * (double)n) : n - 1] / 1000.0 : 0)
	printf("{\"label\":\"%s\",\"conns\":%d,\"batch\":%d,\"window_s\":%.3f,\"requests\":%" PRIu64 ",\"ok\":%" PRIu64
	       ",\"errors\":%" PRIu64
	       ",\"rps\":%.1f,\"ok_rps\":%.1f,\"items_per_s\":%.1f,\"mean_ms\":%.3f,\"p50_ms\":%.3f"
	       ",\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"error_sample\":\"",
	       o_label, o_conns, o_records, window, tx, tx, failed, (double)tx / window, (double)tx / window,
	       (double)tx * o_records / window, mean, PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999),
	       n ? all[n - 1] / 1000.0 : 0);
	for (const char *p = err; *p; p++)
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if ((unsigned char)*p >= 0x20)
			putchar(*p);
	printf("\"");
	if (cpu_warm >= 0 && cpu_end >= cpu_warm && tx > 0)
		printf(",\"machine_cpu_s\":%.2f,\"cpu_us_per_item\":%.1f", cpu_end - cpu_warm,
		       (cpu_end - cpu_warm) * 1e6 / ((double)tx * o_records));
	printf("}\n");
	for (int i = 0; i < o_conns; i++)
		free(w[i].lat);
	free(all);
	free(w);
	return 0;
}
