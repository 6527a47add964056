/* loadgen.c: the HTTP load generator of `make bench` (see tools/bench/README).
 *
 * One thread, epoll, N keep-alive HTTP/1.1 connections to one loopback
 * address, one request in flight per connection (no pipelining: a gateway
 * waits for the answer).  Runs a warm-up, then a measured window of fixed
 * length, bounded by a request count too; then stops issuing, waits (at most
 * --grace seconds) for the requests in flight, and prints one JSON object:
 * throughput, latency percentiles (of requests completed inside the window),
 * statuses.
 *
 * Bodies come from a template with placeholders, filled per request:
 *   {seq}   a counter, one value per body (every {seq} in it the same), unique
 *           within this run (starts at --seq-start)
 *   {acct}  a uniformly random integer in [--acct-lo, --acct-hi]
 *   {now}   the current UTC second, RFC 3339
 *   {run}   a random tag of this invocation (or --run), for distinct ids
 * With --batch K the body is {"records":[T,T,...]} (K fillings of T).
 *
 * Modes besides the timed run:
 *   --once       one request; prints the answer's body; exit 0 on 2xx
 *   --idle N     opens N connections, sends the request once on each, then
 *                keeps them open and idle for --hold seconds, sampling the
 *                resident memory of --rss-pid meanwhile
 *
 * Exit 0 when the run completed (whatever the statuses), 1 on a setup
 * failure, 2 on a usage error.  Loopback addresses only. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tools/bench/procstat.h"

/* ---- options ---- */

static const char *o_host = "127.0.0.1", *o_path = "/", *o_method = "POST", *o_token, *o_body = "", *o_run;
static const char *o_label = "", *o_sum_field;
static int o_port, o_conns = 1, o_batch, o_idle, o_once, o_rss_pid;
static double o_seconds = 10, o_warmup = 0, o_grace = 30, o_hold = 5;
static uint64_t o_max = 5000000, o_seq_start = 1;
static int64_t o_acct_lo = 1, o_acct_hi = 1;

/* ---- clock ---- */

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- growable byte buffer ---- */

struct bytes {
	char *p;
	size_t len, cap;
};

static void bytes_reserve(struct bytes *b, size_t extra)
{
	size_t cap = b->cap ? b->cap : 4096;

	if (b->len + extra + 1 <= b->cap)
		return;
	while (cap < b->len + extra + 1)
		cap *= 2;
	b->p = realloc(b->p, cap);
	if (!b->p) {
		fprintf(stderr, "loadgen: out of memory\n");
		exit(1);
	}
	b->cap = cap;
}

static void bytes_add(struct bytes *b, const char *s, size_t n)
{
	bytes_reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void bytes_str(struct bytes *b, const char *s)
{
	bytes_add(b, s, strlen(s));
}

/* ---- body template ---- */

enum seg_kind { SEG_LIT, SEG_SEQ, SEG_ACCT, SEG_NOW, SEG_RUN };

struct seg {
	enum seg_kind kind;
	const char *s;
	size_t n;
};

static struct seg *g_segs;
static size_t g_nsegs;
static uint64_t g_seq;
static char g_run[17];
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static void template_parse(const char *t)
{
	static const struct {
		const char *name;
		enum seg_kind kind;
	} ph[] = {{"{seq}", SEG_SEQ}, {"{acct}", SEG_ACCT}, {"{now}", SEG_NOW}, {"{run}", SEG_RUN}};
	const char *lit = t;

	g_segs = calloc(strlen(t) + 1, sizeof(*g_segs));
	if (!g_segs)
		exit(1);
	for (const char *p = t; *p;) {
		size_t k, m = sizeof(ph) / sizeof(ph[0]);
		for (k = 0; k < m; k++)
			if (strncmp(p, ph[k].name, strlen(ph[k].name)) == 0)
				break;
		if (k == m) {
			p++;
			continue;
		}
		if (p > lit)
			g_segs[g_nsegs++] = (struct seg){SEG_LIT, lit, (size_t)(p - lit)};
		g_segs[g_nsegs++] = (struct seg){ph[k].kind, NULL, 0};
		p += strlen(ph[k].name);
		lit = p;
	}
	if (*lit)
		g_segs[g_nsegs++] = (struct seg){SEG_LIT, lit, strlen(lit)};
}

static const char *now_rfc3339(void)
{
	static char buf[32];
	static time_t last;
	time_t t = time(NULL);
	struct tm tm;

	if (t != last) {
		gmtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
		last = t;
	}
	return buf;
}

static void template_fill(struct bytes *b)
{
	char num[32];
	int n;
	uint64_t seq = g_seq++; /* one value per filled body, however often {seq} appears */

	for (size_t i = 0; i < g_nsegs; i++) {
		switch (g_segs[i].kind) {
		case SEG_LIT:
			bytes_add(b, g_segs[i].s, g_segs[i].n);
			break;
		case SEG_SEQ:
			n = snprintf(num, sizeof(num), "%" PRIu64, seq);
			bytes_add(b, num, (size_t)n);
			break;
		case SEG_ACCT:
			n = snprintf(num, sizeof(num), "%" PRId64,
				     o_acct_lo + (int64_t)(rnd() % (uint64_t)(o_acct_hi - o_acct_lo + 1)));
			bytes_add(b, num, (size_t)n);
			break;
		case SEG_NOW:
			bytes_str(b, now_rfc3339());
			break;
		case SEG_RUN:
			bytes_str(b, g_run);
			break;
		}
	}
}

/* One whole request (head and body) into out. */
static void request_build(struct bytes *out)
{
	static struct bytes body;
	char head[1024];
	int n;
	bool has_body = strcmp(o_method, "GET") != 0 && strcmp(o_method, "HEAD") != 0;

	body.len = 0;
	if (has_body) {
		if (o_batch > 0) {
			bytes_str(&body, "{\"records\":[");
			for (int i = 0; i < o_batch; i++) {
				if (i)
					bytes_add(&body, ",", 1);
				template_fill(&body);
			}
			bytes_str(&body, "]}");
		} else {
			template_fill(&body);
		}
	}
	n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%s%s", o_method, o_path, o_host, o_port,
		     o_token ? "Authorization: Bearer " : "", o_token ? o_token : "", o_token ? "\r\n" : "",
		     has_body ? "Content-Type: application/json\r\n" : "");
	out->len = 0;
	bytes_add(out, head, (size_t)n);
	if (has_body) {
		n = snprintf(head, sizeof(head), "Content-Length: %zu\r\n", body.len);
		bytes_add(out, head, (size_t)n);
	}
	bytes_add(out, "\r\n", 2);
	if (has_body)
		bytes_add(out, body.p, body.len);
}

/* ---- results ---- */

static uint32_t *g_lat; /* microseconds, of requests completed in the window */
static size_t g_nlat, g_caplat;
static uint64_t g_status[600], g_done_window, g_done_total, g_issued, g_conn_errors, g_lost, g_item_errors;
static int64_t g_sum_field;
static char g_err_sample[400];

static void lat_add(uint64_t us)
{
	if (g_nlat == g_caplat) {
		size_t cap = g_caplat ? g_caplat * 2 : 65536;
		uint32_t *p = realloc(g_lat, cap * sizeof(*p));
		if (!p)
			return;
		g_lat = p;
		g_caplat = cap;
	}
	g_lat[g_nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_ms(double q)
{
	size_t i;

	if (!g_nlat)
		return 0;
	i = (size_t)(q * (double)g_nlat);
	if (i >= g_nlat)
		i = g_nlat - 1;
	return g_lat[i] / 1000.0;
}

/* ---- connections ---- */

enum cstate { C_DOWN, C_CONNECTING, C_BUSY, C_IDLE };

struct conn {
	int fd;
	enum cstate st;
	struct bytes out, in;
	size_t out_off;
	uint64_t t_start, retry_at;
	bool in_flight, sent_once;
	/* response parsing */
	size_t head_len, body_len;
	bool head_done, chunked, close_after;
	int status;
};

static struct conn *g_conns;
static int g_ep;
static struct sockaddr_in g_addr;
static uint64_t g_t_warm, g_t_end;
static bool g_issuing = true;
static int g_pending_connects;

static void ep_set(struct conn *c, uint32_t ev, int op)
{
	struct epoll_event e;

	memset(&e, 0, sizeof(e));
	e.events = ev;
	e.data.ptr = c;
	if (epoll_ctl(g_ep, op, c->fd, &e) < 0 && op == EPOLL_CTL_MOD)
		perror("loadgen: epoll_ctl");
}

static void conn_close(struct conn *c, uint64_t retry_delay_us)
{
	if (c->fd >= 0) {
		if (c->st == C_CONNECTING)
			g_pending_connects--;
		close(c->fd);
	}
	c->fd = -1;
	c->st = C_DOWN;
	c->in.len = 0;
	c->head_done = false;
	c->retry_at = now_us() + retry_delay_us;
}

static int conn_open(struct conn *c)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&g_addr, sizeof(g_addr)) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	c->fd = fd;
	c->st = C_CONNECTING;
	c->in.len = 0;
	c->head_done = false;
	g_pending_connects++;
	ep_set(c, EPOLLOUT, EPOLL_CTL_ADD);
	return 0;
}

/* Whether c may send (another) request now. */
static bool may_issue(const struct conn *c)
{
	if (o_idle || o_once)
		return !c->sent_once;
	return g_issuing && g_issued < o_max;
}

static void conn_send(struct conn *c)
{
	request_build(&c->out);
	c->out_off = 0;
	c->in_flight = true;
	c->st = C_BUSY;
	c->head_done = false;
	c->in.len = 0;
	c->t_start = now_us();
	c->sent_once = true;
	g_issued++;
	ep_set(c, EPOLLOUT | EPOLLIN, EPOLL_CTL_MOD);
}

static void conn_failed(struct conn *c)
{
	if (c->in_flight) {
		g_lost++;
		g_status[0]++;
		c->in_flight = false;
	}
	g_conn_errors++;
	conn_close(c, 100000);
}

/* Parses what arrived; true when the whole answer is there. */
static bool response_complete(struct conn *c)
{
	char *p = c->in.p;

	if (!c->head_done) {
		char *e = c->in.len >= 4 ? strstr(p, "\r\n\r\n") : NULL;
		if (!e)
			return false;
		c->head_len = (size_t)(e - p) + 4;
		c->head_done = true;
		c->status = 0;
		c->chunked = false;
		c->close_after = false;
		c->body_len = 0;
		if (sscanf(p, "HTTP/1.%*d %d", &c->status) != 1)
			c->status = 0;
		for (char *h = strstr(p, "\r\n"); h && h < e; h = strstr(h + 2, "\r\n")) {
			char *v = h + 2;
			if (strncasecmp(v, "Content-Length:", 15) == 0)
				c->body_len = strtoul(v + 15, NULL, 10);
			else if (strncasecmp(v, "Transfer-Encoding:", 18) == 0 && strstr(v, "chunked") &&
				 strstr(v, "chunked") < strstr(v, "\r\n"))
				c->chunked = true;
			else if (strncasecmp(v, "Connection:", 11) == 0 && strcasestr(v, "close") &&
				 strcasestr(v, "close") < strstr(v, "\r\n"))
				c->close_after = true;
		}
	}
	if (c->chunked) {
		/* walk the chunks from the start of the body */
		size_t off = c->head_len;
		for (;;) {
			char *crlf;
			unsigned long sz;
			if (off >= c->in.len)
				return false;
			crlf = strstr(p + off, "\r\n");
			if (!crlf)
				return false;
			sz = strtoul(p + off, NULL, 16);
			off = (size_t)(crlf - p) + 2;
			if (sz == 0) {
				if (c->in.len < off + 2)
					return false;
				c->body_len = off + 2 - c->head_len;
				return true;
			}
			off += sz + 2;
		}
	}
	return c->in.len >= c->head_len + c->body_len;
}

static size_t count_substr(const char *h, size_t n, const char *needle)
{
	size_t k = 0, m = strlen(needle);

	for (const char *p = h; p && (size_t)(p - h) + m <= n; p++) {
		p = memmem(p, n - (size_t)(p - h), needle, m);
		if (!p)
			break;
		k++;
	}
	return k;
}

static void response_done(struct conn *c)
{
	uint64_t t = now_us();
	const char *body = c->in.p + c->head_len;
	size_t blen = c->body_len;

	c->in_flight = false;
	g_done_total++;
	if (o_once)
		fwrite(body, 1, blen, stdout);
	if (t >= g_t_warm && t <= g_t_end) {
		g_done_window++;
		g_status[c->status > 0 && c->status < 600 ? c->status : 0]++;
		lat_add(t - c->t_start);
		if (c->status >= 200 && c->status < 300) {
			if (o_batch > 0)
				g_item_errors += count_substr(body, blen, "{\"error\":");
			if (o_sum_field) {
				char needle[128];
				const char *f;
				snprintf(needle, sizeof(needle), "\"%s\":", o_sum_field);
				f = memmem(body, blen, needle, strlen(needle));
				if (f)
					g_sum_field += strtoll(f + strlen(needle), NULL, 10);
			}
		}
	}
	if ((c->status < 200 || c->status >= 300) && !g_err_sample[0])
		snprintf(g_err_sample, sizeof(g_err_sample), "status %d: %.*s", c->status,
			 (int)(blen > 300 ? 300 : blen), body);
	if (o_once)
		g_status[c->status > 0 && c->status < 600 ? c->status : 0]++;
	/* keep what follows (there should be nothing: no pipelining) */
	c->in.len = 0;
	c->head_done = false;
	if (c->close_after) {
		conn_close(c, 0);
		return;
	}
	if (may_issue(c)) {
		conn_send(c);
	} else {
		c->st = C_IDLE;
		ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
	}
}

static void on_event(struct conn *c, uint32_t ev)
{
	if (c->st == C_CONNECTING) {
		int e = 0;
		socklen_t l = sizeof(e);
		if ((ev & (EPOLLERR | EPOLLHUP)) || getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0 || e) {
			conn_failed(c);
			return;
		}
		g_pending_connects--;
		if (may_issue(c)) {
			conn_send(c);
		} else {
			c->st = C_IDLE;
			ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
		}
		return;
	}
	if ((ev & EPOLLOUT) && c->st == C_BUSY && c->out_off < c->out.len) {
		while (c->out_off < c->out.len) {
			ssize_t k = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (k <= 0) {
				conn_failed(c);
				return;
			}
			c->out_off += (size_t)k;
		}
		if (c->out_off == c->out.len)
			ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (;;) {
			ssize_t k;
			bytes_reserve(&c->in, 16384);
			k = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1, 0);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (k <= 0) {
				/* the server closed: an error only with a request in flight */
				if (c->in_flight)
					conn_failed(c);
				else
					conn_close(c, 0);
				return;
			}
			c->in.len += (size_t)k;
			c->in.p[c->in.len] = '\0';
			if (c->in_flight && response_complete(c)) {
				response_done(c);
				return;
			}
		}
	}
}

/* ---- resident memory of another process ---- */

static long rss_kb(int pid, const char *field)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, strlen(field)) == 0)
			v = strtol(line + strlen(field), NULL, 10);
	fclose(f);
	return v;
}

/* ---- main loop ---- */

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen --port P [--host 127.0.0.1] [--path /] [--method POST] [--token T]\n"
		"               [--body TEMPLATE | --body-file F] [--batch K] [-c CONNS] [-d SECONDS]\n"
		"               [--warmup S] [-n MAX_REQUESTS] [--grace S] [--seq-start N] [--acct-lo A --acct-hi B]\n"
		"               [--run TAG] [--label L] [--sum-field NAME] [--once] [--idle N --hold S --rss-pid PID]\n");
	exit(2);
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	struct bytes b = {0};
	char tmp[65536];
	size_t n;

	if (!f) {
		fprintf(stderr, "loadgen: cannot open '%s'\n", path);
		exit(1);
	}
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		bytes_add(&b, tmp, n);
	fclose(f);
	while (b.len && (b.p[b.len - 1] == '\n' || b.p[b.len - 1] == '\r'))
		b.p[--b.len] = '\0';
	return b.p ? b.p : strdup("");
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && ++i)
		if (ARG("--host"))
			o_host = v;
		else if (ARG("--port"))
			o_port = atoi(v);
		else if (ARG("--path"))
			o_path = v;
		else if (ARG("--method"))
			o_method = v;
		else if (ARG("--token"))
			o_token = v;
		else if (ARG("--body"))
			o_body = v;
		else if (ARG("--body-file"))
			o_body = read_file(v);
		else if (ARG("--batch"))
			o_batch = atoi(v);
		else if (ARG("-c"))
			o_conns = atoi(v);
		else if (ARG("-d"))
			o_seconds = atof(v);
		else if (ARG("--warmup"))
			o_warmup = atof(v);
		else if (ARG("-n"))
			o_max = strtoull(v, NULL, 10);
		else if (ARG("--grace"))
			o_grace = atof(v);
		else if (ARG("--seq-start"))
			o_seq_start = strtoull(v, NULL, 10);
		else if (ARG("--acct-lo"))
			o_acct_lo = strtoll(v, NULL, 10);
		else if (ARG("--acct-hi"))
			o_acct_hi = strtoll(v, NULL, 10);
		else if (ARG("--run"))
			o_run = v;
		else if (ARG("--label"))
			o_label = v;
		else if (ARG("--sum-field"))
			o_sum_field = v;
		else if (ARG("--idle"))
			o_idle = atoi(v);
		else if (ARG("--hold"))
			o_hold = atof(v);
		else if (ARG("--rss-pid"))
			o_rss_pid = atoi(v);
		else if (strcmp(a, "--once") == 0)
			o_once = 1;
		else
			usage();
#undef ARG
	}
	if (o_port <= 0 || o_port > 65535 || o_conns < 1 || o_acct_hi < o_acct_lo || o_seconds <= 0)
		usage();
}

int main(int argc, char **argv)
{
	struct epoll_event evs[512];
	struct rlimit rl;
	uint64_t t0, t_stop_issue = 0, t_idle_all = 0, t_last = 0;
	double cpu_warm = -1, cpu_end = -1;
	long rss_before = -1, rss_max = -1, hwm = -1;
	int nconns, connected_at_sample = 0;

	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if (o_run)
		snprintf(g_run, sizeof(g_run), "%s", o_run);
	else {
		g_rng ^= (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL) ^ now_us();
		snprintf(g_run, sizeof(g_run), "%08" PRIx64, rnd() & 0xffffffffu);
	}
	g_seq = o_seq_start;
	template_parse(o_body);
	memset(&g_addr, 0, sizeof(g_addr));
	g_addr.sin_family = AF_INET;
	g_addr.sin_port = htons((uint16_t)o_port);
	if (inet_pton(AF_INET, o_host, &g_addr.sin_addr) != 1 || (ntohl(g_addr.sin_addr.s_addr) >> 24) != 127) {
		fprintf(stderr, "loadgen: '%s' is not a loopback address (127.0.0.0/8 only)\n", o_host);
		return 2;
	}
	nconns = o_idle ? o_idle : o_once ? 1 : o_conns;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < (rlim_t)nconns + 64) {
			fprintf(stderr, "loadgen: %d connections need more open files than the limit %lu\n", nconns,
				(unsigned long)rl.rlim_cur);
			return 1;
		}
	}
	g_conns = calloc((size_t)nconns, sizeof(*g_conns));
	g_ep = epoll_create1(EPOLL_CLOEXEC);
	if (!g_conns || g_ep < 0)
		return 1;
	for (int i = 0; i < nconns; i++)
		g_conns[i].fd = -1;
	t0 = now_us();
	g_t_warm = o_once || o_idle ? t0 : t0 + (uint64_t)(o_warmup * 1e6);
	g_t_end = o_once || o_idle ? UINT64_MAX : g_t_warm + (uint64_t)(o_seconds * 1e6);
	if (o_rss_pid)
		rss_before = rss_kb(o_rss_pid, "VmRSS:");
	for (;;) {
		uint64_t t = now_us();
		int busy = 0, idle = 0, n;

		/* the machine's CPU over the measured window (5 ms resolution: the wait below) */
		if (cpu_warm < 0 && t >= g_t_warm && g_t_end != UINT64_MAX)
			cpu_warm = procstat_busy_s();
		if (cpu_end < 0 && cpu_warm >= 0 && t >= g_t_end)
			cpu_end = procstat_busy_s();

		/* (re)connect, a bounded number at a time: the listen backlog is short */
		for (int i = 0; i < nconns && g_pending_connects < 256; i++) {
			struct conn *c = &g_conns[i];
			if (c->st == C_DOWN && c->retry_at <= t && (may_issue(c) || o_idle)) {
				if (o_idle && t_idle_all)
					break; /* while holding: do not replace what the server closed */
				if (conn_open(c) < 0) {
					g_conn_errors++;
					c->retry_at = t + 100000;
				}
			}
		}
		for (int i = 0; i < nconns; i++) {
			if (g_conns[i].st == C_BUSY || g_conns[i].st == C_CONNECTING)
				busy++;
			else if (g_conns[i].st == C_IDLE)
				idle++;
		}
		if (o_once && g_done_total >= 1)
			break;
		if (o_once && (g_conn_errors > 0 || t - t0 > (uint64_t)(o_grace * 1e6)))
			break;
		if (o_idle) {
			if (!t_idle_all && (idle == nconns || t - t0 > 60000000u)) {
				t_idle_all = t;
				t_last = t;
			}
			if (t_idle_all && o_rss_pid && t - t_last >= 250000u) {
				long r = rss_kb(o_rss_pid, "VmRSS:");
				if (r > rss_max) {
					rss_max = r;
					connected_at_sample = idle;
				}
				t_last = t;
			}
			if (t_idle_all && t - t_idle_all >= (uint64_t)(o_hold * 1e6))
				break;
		} else if (!o_once) {
			if (g_issuing && (t >= g_t_end || g_issued >= o_max)) {
				g_issuing = false;
				t_stop_issue = t;
			}
			if (!g_issuing && (busy == 0 || t - t_stop_issue > (uint64_t)(o_grace * 1e6)))
				break;
		}
		n = epoll_wait(g_ep, evs, 512, 5);
		for (int i = 0; i < n; i++)
			on_event(evs[i].data.ptr, evs[i].events);
	}
	{
		uint64_t t_end = now_us();
		double window;
		if (o_once) {
			int st = 0;
			for (int s = 200; s < 300; s++)
				st += (int)g_status[s];
			return st ? 0 : 1;
		}
		if (o_rss_pid)
			hwm = rss_kb(o_rss_pid, "VmHWM:");
		/* the window ends at its end, or when the last request came back if the count ran out first */
		window = (double)((g_t_end < t_end ? g_t_end : t_end) - g_t_warm) / 1e6;
		if (o_idle)
			window = (double)(t_end - t0) / 1e6;
		qsort(g_lat, g_nlat, sizeof(*g_lat), cmp_u32);
		{
			uint64_t ok = 0;
			double mean = 0;
			for (int s = 200; s < 300; s++)
				ok += g_status[s];
			for (size_t i = 0; i < g_nlat; i++)
				mean += g_lat[i];
			mean = g_nlat ? mean / (double)g_nlat / 1000.0 : 0;
			printf("{\"label\":\"%s\",\"conns\":%d,\"batch\":%d,\"window_s\":%.3f,\"requests\":%" PRIu64
			       ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"item_errors\":%" PRIu64
			       ",\"lost\":%" PRIu64 ",\"conn_errors\":%" PRIu64
			       ",\"rps\":%.1f,\"ok_rps\":%.1f,\"items_per_s\":%.1f"
			       ",\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f",
			       o_label, nconns, o_batch, window, g_done_window, ok, g_done_window - ok, g_item_errors,
			       g_lost, g_conn_errors, window > 0 ? (double)g_done_window / window : 0,
			       window > 0 ? (double)ok / window : 0,
			       window > 0 ? (double)ok * (o_batch > 0 ? o_batch : 1) / window -
						    (double)g_item_errors / window
					  : 0,
			       mean, pct_ms(0.50), pct_ms(0.90), pct_ms(0.99), pct_ms(0.999),
			       g_nlat ? g_lat[g_nlat - 1] / 1000.0 : 0);
			if (o_sum_field)
				printf(",\"sum_field\":\"%s\",\"sum\":%" PRId64 ",\"sum_per_s\":%.1f", o_sum_field,
				       g_sum_field, window > 0 ? (double)g_sum_field / window : 0);
			if (cpu_warm >= 0 && cpu_end >= cpu_warm && g_done_window > 0)
				printf(",\"machine_cpu_s\":%.2f,\"cpu_us_per_item\":%.1f", cpu_end - cpu_warm,
				       (cpu_end - cpu_warm) * 1e6 /
					       ((double)g_done_window * (o_batch > 0 ? o_batch : 1)));
			if (o_idle) {
				int open = 0;
				for (int i = 0; i < nconns; i++)
					open += g_conns[i].st == C_IDLE;
				printf(",\"idle_target\":%d,\"idle_reached\":%d,\"open_at_end\":%d", o_idle,
				       connected_at_sample, open);
			}
			if (o_rss_pid)
				printf(",\"rss_before_kb\":%ld,\"rss_kb\":%ld,\"hwm_kb\":%ld", rss_before, rss_max,
				       hwm);
			printf(",\"status\":{");
			for (int s = 0, first = 1; s < 600; s++)
				if (g_status[s]) {
					printf("%s\"%d\":%" PRIu64, first ? "" : ",", s, g_status[s]);
					first = 0;
				}
			printf("},\"error_sample\":\"");
			for (const char *p = g_err_sample; *p; p++)
				if (*p == '"' || *p == '\\')
					printf("\\%c", *p);
				else if ((unsigned char)*p < 0x20)
					putchar(' ');
				else
					putchar(*p);
			printf("\"}\n");
		}
	}
	for (int i = 0; i < nconns; i++)
		if (g_conns[i].fd >= 0)
			close(g_conns[i].fd);
	return 0;
}
