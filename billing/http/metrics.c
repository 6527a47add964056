/* metrics.c: see metrics.h. */
#include "billing/http/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NB 14
static const double bounds[NB] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

struct hist {
	uint64_t b[NB + 1];
	double sum;
	uint64_t count;
};

#define MAX_ROUTES 64
#define MAX_MODELS 256
#define MAX_NAMED 64

struct route_stat {
	const char *route;
	int status;
	uint64_t count;
};

struct route_hist {
	const char *route;
	struct hist h;
};

struct model_stat {
	char model[128];
	uint64_t records;
	int64_t nanos;
};

struct named {
	const char *name;
	int64_t v;
	int gauge;
	const char *help;
	int micro; /* v counts microseconds, shown in seconds */
};

/* Every named family, present (at 0) from start so that rate() and alerts
 * work before the first event. */
static const struct named known[] = {
	{"billing_usage_queue_depth", 0, 1, "Usage records waiting for the writer.", 0},
	{"billing_db_queue_depth", 0, 1, "Jobs waiting for the API database pool.", 0},
	{"billing_inflight_requests", 0, 1, "HTTP requests being served.", 0},
	{"billing_http_connections", 0, 1, "Open HTTP connections.", 0},
	{"billing_http_connections_rejected_total", 0, 0, "Connections closed at once: max_connections reached.", 0},
	{"billing_http_request_timeouts_total", 0, 0, "Requests cut off by request_timeout_s.", 0},
	{"billing_authorize_decisions_total", 0, 0, "Authorize decisions sent to Redis (grouped per loop turn).", 0},
	{"billing_authorize_redis_calls_total", 0, 0, "Redis script calls that carried those decisions.", 0},
	{"billing_settle_entries_total", 0, 0,
	 "Usage answers' settles and held reads sent to Redis (grouped per loop turn).", 0},
	{"billing_settle_redis_calls_total", 0, 0, "Redis script calls that carried those settles.", 0},
	{"billing_memory_trims_total", 0, 0, "Times freed memory went back to the system after a surge (malloc_trim).",
	 0},
	{"billing_inference_yield_seconds_total", 0, 0,
	 "Seconds the model's workers paused because billing was busy (inference_busy_share).", 1},
};

struct metrics {
	pthread_mutex_t mu;
	struct route_stat rs[MAX_ROUTES * 4];
	size_t nrs;
	struct route_hist rh[MAX_ROUTES];
	size_t nrh;
	struct hist batch_size, commit;
	struct model_stat ms[MAX_MODELS];
	size_t nms;
	struct named nm[MAX_NAMED];
	size_t nnm;
};

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	pthread_mutex_init(&m->mu, NULL);
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		m->nm[m->nnm++] = known[i];
	return m;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->mu);
	free(m);
}

static void observe(struct hist *h, double v)
{
	int i = 0;

	while (i < NB && v > bounds[i])
		i++;
	h->b[i]++;
	h->sum += v;
	h->count++;
}

void metrics_request(struct metrics *m, const char *route, int status, int64_t latency_us)
{
	size_t i;

	pthread_mutex_lock(&m->mu);
	for (i = 0; i < m->nrs; i++)
		if (m->rs[i].route == route && m->rs[i].status == status)
			break;
	if (i == m->nrs && m->nrs < sizeof(m->rs) / sizeof(m->rs[0]))
		m->rs[m->nrs++] = (struct route_stat){route, status, 0};
	if (i < m->nrs)
		m->rs[i].count++;
	for (i = 0; i < m->nrh; i++)
		if (m->rh[i].route == route)
			break;
	if (i == m->nrh && m->nrh < MAX_ROUTES) {
		memset(&m->rh[i], 0, sizeof(m->rh[i]));
		m->rh[m->nrh++].route = route;
	}
	if (i < m->nrh)
		observe(&m->rh[i].h, (double)latency_us / 1e6);
	pthread_mutex_unlock(&m->mu);
}

void metrics_batch(struct metrics *m, size_t records, int64_t commit_us)
{
	pthread_mutex_lock(&m->mu);
	/* batch sizes use the same bucket bounds scaled by 1000 (0.5 .. 10000 records) */
	observe(&m->batch_size, (double)records / 1000.0);
	observe(&m->commit, (double)commit_us / 1e6);
	pthread_mutex_unlock(&m->mu);
}

void metrics_billed(struct metrics *m, const char *model, int64_t nanos)
{
	size_t i;

	pthread_mutex_lock(&m->mu);
	for (i = 0; i < m->nms; i++)
		if (strcmp(m->ms[i].model, model) == 0)
			break;
	if (i == m->nms && m->nms < MAX_MODELS) {
		snprintf(m->ms[i].model, sizeof(m->ms[i].model), "%s", model);
		m->nms++;
	}
	if (i < m->nms) {
		m->ms[i].records++;
		m->ms[i].nanos += nanos;
	}
	pthread_mutex_unlock(&m->mu);
}

static void set_named(struct metrics *m, const char *name, int64_t v, int gauge)
{
	size_t i;

	pthread_mutex_lock(&m->mu);
	for (i = 0; i < m->nnm; i++)
		if (strcmp(m->nm[i].name, name) == 0)
			break;
	if (i == m->nnm && m->nnm < MAX_NAMED)
		m->nm[m->nnm++] = (struct named){name, 0, gauge, "Undocumented.", 0};
	if (i < m->nnm)
		m->nm[i].v = gauge ? v : m->nm[i].v + v;
	pthread_mutex_unlock(&m->mu);
}

void metrics_count(struct metrics *m, const char *name, int64_t delta)
{
	set_named(m, name, delta, 0);
}

void metrics_gauge(struct metrics *m, const char *name, int64_t value)
{
	set_named(m, name, value, 1);
}

static void render_hist(struct buf *out, const char *name, const char *labels, const struct hist *h, double scale)
{
	uint64_t cum = 0;

	for (int i = 0; i < NB; i++) {
		cum += h->b[i];
		buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name, labels, *labels ? "," : "",
			   bounds[i] * scale, cum);
	}
	cum += h->b[NB];
	buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, *labels ? "," : "", cum);
	buf_printf(out, "%s_sum%s%s%s %g\n%s_count%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "", labels,
		   *labels ? "}" : "", h->sum * scale, name, *labels ? "{" : "", labels, *labels ? "}" : "", h->count);
}

static void label_escape(struct buf *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			buf_append(out, "\\", 1);
		if (*s == '\n')
			buf_puts(out, "\\n");
		else
			buf_append(out, s, 1);
	}
}

void metrics_render(struct metrics *m, struct buf *out)
{
	pthread_mutex_lock(&m->mu);
	buf_puts(out, "# HELP billing_http_requests_total HTTP requests by route and status.\n"
		      "# TYPE billing_http_requests_total counter\n");
	for (size_t i = 0; i < m->nrs; i++)
		buf_printf(out, "billing_http_requests_total{route=\"%s\",status=\"%d\"} %" PRIu64 "\n", m->rs[i].route,
			   m->rs[i].status, m->rs[i].count);
	buf_puts(out, "# HELP billing_http_request_duration_seconds Request latency by route.\n"
		      "# TYPE billing_http_request_duration_seconds histogram\n");
	for (size_t i = 0; i < m->nrh; i++) {
		char lab[160];
		snprintf(lab, sizeof(lab), "route=\"%s\"", m->rh[i].route);
		render_hist(out, "billing_http_request_duration_seconds", lab, &m->rh[i].h, 1);
	}
	buf_puts(out, "# HELP billing_commit_batch_records Usage records per group commit.\n"
		      "# TYPE billing_commit_batch_records histogram\n");
	render_hist(out, "billing_commit_batch_records", "", &m->batch_size, 1000);
	buf_puts(out, "# HELP billing_commit_duration_seconds Group commit latency.\n"
		      "# TYPE billing_commit_duration_seconds histogram\n");
	render_hist(out, "billing_commit_duration_seconds", "", &m->commit, 1);
	buf_puts(out, "# HELP billing_usage_records_total Usage records billed by model.\n"
		      "# TYPE billing_usage_records_total counter\n");
	for (size_t i = 0; i < m->nms; i++) {
		buf_puts(out, "billing_usage_records_total{model=\"");
		label_escape(out, m->ms[i].model);
		buf_printf(out, "\"} %" PRIu64 "\n", m->ms[i].records);
	}
	buf_puts(out, "# HELP billing_usage_nanos_total Nanos billed by model.\n"
		      "# TYPE billing_usage_nanos_total counter\n");
	for (size_t i = 0; i < m->nms; i++) {
		buf_puts(out, "billing_usage_nanos_total{model=\"");
		label_escape(out, m->ms[i].model);
		buf_printf(out, "\"} %" PRId64 "\n", m->ms[i].nanos);
	}
	for (size_t i = 0; i < m->nnm; i++) {
		buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s ", m->nm[i].name, m->nm[i].help, m->nm[i].name,
			   m->nm[i].gauge ? "gauge" : "counter", m->nm[i].name);
		if (m->nm[i].micro)
			buf_printf(out, "%" PRId64 ".%06" PRId64 "\n", m->nm[i].v / 1000000, m->nm[i].v % 1000000);
		else
			buf_printf(out, "%" PRId64 "\n", m->nm[i].v);
	}
	pthread_mutex_unlock(&m->mu);
}
