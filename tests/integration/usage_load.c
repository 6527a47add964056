/* usage_load.c: a small HTTP load driver for the usage tests.
 *
 *   usage_load HOST PORT TOKEN PLAN OUT [ERROR_SLEEP_MS] [GAP_MS]
 *
 * PLAN has one request a line: `CLIENT<TAB>PATH<TAB>JSON-BODY`.  Every
 * distinct CLIENT is one thread with one keep-alive connection that sends
 * its lines in order, one at a time.  OUT gets one line per plan line:
 * `LINE<TAB>STATUS<TAB>RETRY_AFTER<TAB>BODY`, LINE the 0-based plan line,
 * STATUS 0 when no answer came (connection refused or lost: the request may
 * or may not have been processed), RETRY_AFTER the header's value or `-`.
 * After a failure the client sleeps ERROR_SLEEP_MS (default 0) and
 * reconnects; GAP_MS (default 0) is a pause between requests.
 * Exit 0 when every line has a result line, else 1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct line {
	size_t no;
	char *path, *body;
};

struct client {
	char *id;
	struct line *lines;
	size_t n, cap;
	pthread_t th;
};

static const char *g_host, *g_token;
static int g_port, g_err_sleep_ms, g_gap_ms;
static FILE *g_out;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t g_written;

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	if (ms > 0)
		nanosleep(&ts, NULL);
}

static int dial(void)
{
	struct sockaddr_in a;
	struct timeval tv = {60, 0};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)g_port);
	if (inet_pton(AF_INET, g_host, &a.sin_addr) != 1 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* One request on fd.  Returns the status (> 0) with *body (owned) and
 * retry_after filled and *keep telling whether the connection stays
 * usable; -1 when the connection failed before a whole answer came. */
static int roundtrip(int fd, const struct line *l, char **body, char *retry_after, size_t ralen, int *keep)
{
	char head[1024], *buf = NULL, *hend, *p;
	size_t blen = 0, bcap = 0, hlen, clen = 0;
	int status = -1, have_clen = 0;

	*body = NULL;
	*keep = 1;
	snprintf(retry_after, ralen, "-");
	snprintf(head, sizeof(head),
		 "POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\n\r\n",
		 l->path, g_host, g_port, g_token, strlen(l->body));
	if (send_all(fd, head, strlen(head)) < 0 || send_all(fd, l->body, strlen(l->body)) < 0)
		return -1;
	for (;;) {
		ssize_t k;
		if (bcap - blen < 4097) {
			char *nb = realloc(buf, bcap + 65536);
			if (!nb)
				goto fail;
			buf = nb;
			bcap += 65536;
		}
		k = recv(fd, buf + blen, bcap - blen - 1, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			goto fail;
		blen += (size_t)k;
		buf[blen] = '\0';
		hend = strstr(buf, "\r\n\r\n");
		if (hend)
			break;
	}
	hlen = (size_t)(hend - buf) + 4;
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		goto fail;
	for (p = strstr(buf, "\r\n"); p && p < hend; p = strstr(p + 2, "\r\n")) {
		char *h = p + 2;
		if (strncasecmp(h, "Content-Length:", 15) == 0) {
			clen = strtoul(h + 15, NULL, 10);
			have_clen = 1;
		} else if (strncasecmp(h, "Retry-After:", 12) == 0) {
			char *v = h + 12;
			size_t n;
			while (*v == ' ')
				v++;
			n = strcspn(v, "\r\n");
			snprintf(retry_after, ralen, "%.*s", (int)n, v);
		} else if (strncasecmp(h, "Connection:", 11) == 0 && strstr(h, "close") &&
			   strstr(h, "close") < strstr(h, "\r\n")) {
			*keep = 0;
		}
	}
	if (!have_clen) {
		*keep = 0; /* read to EOF */
		clen = (size_t)-1;
	}
	while (blen - hlen < clen) {
		ssize_t k;
		if (bcap - blen < 4097) {
			char *nb = realloc(buf, bcap + 65536);
			if (!nb)
				goto fail;
			buf = nb;
			bcap += 65536;
		}
		k = recv(fd, buf + blen, bcap - blen - 1, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0 && !have_clen)
			break;
		if (k <= 0)
			goto fail;
		blen += (size_t)k;
	}
	buf[blen] = '\0';
	*body = strdup(buf + hlen);
	free(buf);
	if (!*body)
		return -1;
	/* one line of output: drop newlines and tabs */
	for (p = *body; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	return status;
fail:
	free(buf);
	return -1;
}

static void emit(size_t no, int status, const char *ra, const char *body)
{
	pthread_mutex_lock(&g_mu);
	fprintf(g_out, "%zu\t%d\t%s\t%s\n", no, status, ra, body ? body : "");
	fflush(g_out);
	g_written++;
	pthread_mutex_unlock(&g_mu);
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	int fd = -1;

	for (size_t i = 0; i < c->n; i++) {
		char *body = NULL, ra[64];
		int keep = 0, st = -1;

		if (i > 0)
			sleep_ms(g_gap_ms);
		if (fd < 0)
			fd = dial();
		if (fd >= 0)
			st = roundtrip(fd, &c->lines[i], &body, ra, sizeof(ra), &keep);
		if (st < 0) {
			snprintf(ra, sizeof(ra), "-");
			emit(c->lines[i].no, 0, ra, "");
			if (fd >= 0)
				close(fd);
			fd = -1;
			sleep_ms(g_err_sleep_ms);
			continue;
		}
		emit(c->lines[i].no, st, ra, body);
		free(body);
		if (!keep) {
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	FILE *plan;
	char *ln = NULL;
	size_t lcap = 0, nlines = 0, nclients = 0, ccap = 0;
	struct client *cl = NULL;
	ssize_t len;

	if (argc < 6) {
		fprintf(stderr, "usage: usage_load HOST PORT TOKEN PLAN OUT [ERROR_SLEEP_MS] [GAP_MS]\n");
		return 2;
	}
	g_host = argv[1];
	g_port = atoi(argv[2]);
	g_token = argv[3];
	g_err_sleep_ms = argc > 6 ? atoi(argv[6]) : 0;
	g_gap_ms = argc > 7 ? atoi(argv[7]) : 0;
	plan = fopen(argv[4], "r");
	g_out = fopen(argv[5], "w");
	if (!plan || !g_out) {
		fprintf(stderr, "usage_load: cannot open '%s' or '%s'\n", argv[4], argv[5]);
		return 1;
	}
	while ((len = getline(&ln, &lcap, plan)) >= 0) {
		char *t1, *t2;
		struct client *c = NULL;

		while (len > 0 && (ln[len - 1] == '\n' || ln[len - 1] == '\r'))
			ln[--len] = '\0';
		t1 = strchr(ln, '\t');
		t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
		if (!t2) {
			fprintf(stderr, "usage_load: plan line %zu: expected CLIENT<TAB>PATH<TAB>BODY\n", nlines + 1);
			return 2;
		}
		*t1 = *t2 = '\0';
		for (size_t i = nclients; i > 0; i--)
			if (strcmp(cl[i - 1].id, ln) == 0) {
				c = &cl[i - 1];
				break;
			}
		if (!c) {
			if (nclients == ccap) {
				struct client *grown;
				ccap = ccap ? ccap * 2 : 64;
				grown = realloc(cl, ccap * sizeof(*cl));
				if (!grown)
					return 1;
				cl = grown;
			}
			c = &cl[nclients++];
			memset(c, 0, sizeof(*c));
			c->id = strdup(ln);
		}
		if (c->n == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 16;
			c->lines = realloc(c->lines, c->cap * sizeof(*c->lines));
			if (!c->lines)
				return 1;
		}
		c->lines[c->n].no = nlines++;
		c->lines[c->n].path = strdup(t1 + 1);
		c->lines[c->n].body = strdup(t2 + 1);
		c->n++;
	}
	free(ln);
	fclose(plan);
	for (size_t i = 0; i < nclients; i++) {
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setstacksize(&at, 256 * 1024);
		if (pthread_create(&cl[i].th, &at, client_main, &cl[i]) != 0) {
			fprintf(stderr, "usage_load: cannot start thread %zu\n", i);
			return 1;
		}
		pthread_attr_destroy(&at);
	}
	for (size_t i = 0; i < nclients; i++)
		pthread_join(cl[i].th, NULL);
	fclose(g_out);
	for (size_t i = 0; i < nclients; i++) {
		for (size_t k = 0; k < cl[i].n; k++) {
			free(cl[i].lines[k].path);
			free(cl[i].lines[k].body);
		}
		free(cl[i].lines);
		free(cl[i].id);
	}
	free(cl);
	fprintf(stderr, "usage_load: %zu requests, %zu clients\n", nlines, nclients);
	return g_written == nlines ? 0 : 1;
}
