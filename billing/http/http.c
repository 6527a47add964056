/* http.c: see http.h. */
#include "billing/http/http.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version: libevent 2.1 has no getter */
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "billing/http/metrics.h"
#include "common/buf.h"
#include "common/jsonnum.h"
#include "common/log.h"
#include "common/timeutil.h"

struct rctx *rctx_new(struct http_front *f, struct server *s, struct evhttp_request *req, const char *route)
{
	struct rctx *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->front = f;
	c->s = s;
	c->req = req;
	c->route = route;
	c->t0 = time_mono_us();
	f->inflight++;
	f->started++;
	return c;
}

/* Counts the request's end (metrics, in flight) and frees c. */
static void finish(struct rctx *c, int status)
{
	int64_t now = time_mono_us();

	metrics_request(c->front->metrics, c->route, status, now - c->t0);
	/* the gateway's and the admins' calls are billing's load, when billing
	 * did their work (not refused ones); the internal chat calls, health
	 * checks and metrics are not */
	if (strncmp(c->route, "/v1/", 4) == 0 && backoff_counts_status(status))
		backoff_note(&c->front->load, now);
	c->front->inflight--;
	free(c);
}

/* The Date and Content-Length headers evhttp_send_reply adds to an
 * HTTP/1.1 reply (libevent 2.1's evhttp_make_header_response: a Date when
 * there is none, then a Content-Length of the body when the reply has a
 * body and neither it nor Transfer-Encoding is set), added here first, in
 * the same order with the same bytes, so that it finds them and adds
 * nothing.  Its Date costs a gmtime and a printf a reply, its length a
 * printf; here the date is formatted once a second (per thread). */
static void add_reply_headers(struct evhttp_request *req, int status, size_t body_len)
{
	static __thread time_t date_at = -1;
	static __thread char date[64];
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char n[BUF_I64_LEN];

	if (req->major != 1 || req->minor < 1)
		return; /* HTTP/1.0: libevent's own rules (keep-alive), untouched */
	if (!evhttp_find_header(h, "Date")) {
		time_t now = time(NULL);
		if (now != date_at) {
			struct tm tm;
			gmtime_r(&now, &tm);
			if (evutil_date_rfc1123(date, sizeof(date), &tm) <= 0)
				return; /* libevent adds its own */
			date_at = now;
		}
		evhttp_add_header(h, "Date", date);
	}
	/* evhttp_response_needs_body */
	if (status == HTTP_NOCONTENT || status == HTTP_NOTMODIFIED || (status >= 100 && status < 200) ||
	    evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)
		return;
	if (evhttp_find_header(h, "Transfer-Encoding") || evhttp_find_header(h, "Content-Length"))
		return;
	buf_fmt_i64(n, (int64_t)body_len);
	evhttp_add_header(h, "Content-Length", n);
}

/* The one reply: content type, body bytes, a newline after them if nl. */
static void send_body(struct rctx *c, int status, const char *type, const char *body, size_t len, bool nl)
{
	struct evbuffer *out = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type", type);
	add_reply_headers(c->req, status, len + (nl ? 1 : 0));
	evbuffer_add(out, body, len);
	if (nl)
		evbuffer_add(out, "\n", 1);
	evhttp_send_reply(c->req, status, NULL, out);
	evbuffer_free(out);
	finish(c, status);
}

/* Sends the one reply of a request and frees its context.  body is stolen. */
void reply(struct rctx *c, int status, json_t *body)
{
	char *s = body ? jsonnum_dumps(body, JSON_COMPACT) : NULL;

	json_decref(body);
	send_body(c, status, "application/json", s ? s : "", s ? strlen(s) : 0, s != NULL);
	free(s);
}

void reply_text(struct rctx *c, int status, const char *text, size_t len)
{
	send_body(c, status, "application/json", text, len, true);
}

void reply_typed(struct rctx *c, int status, const char *content_type, const char *body, size_t len)
{
	send_body(c, status, content_type, body, len, false);
}

void rctx_drop(struct rctx *c)
{
	finish(c, 499);
}

void rctx_end_chunked(struct rctx *c, int status)
{
	evhttp_send_reply_end(c->req);
	finish(c, status);
}

json_t *error_json(const struct error *e)
{
	json_t *inner = json_pack("{s:s,s:s}", "code", e->code, "message", e->msg);

	if (e->status == 503)
		json_object_set_new(inner, "retry_after_ms", json_integer(1000));
	return json_pack("{s:o}", "error", inner);
}

void reply_error(struct rctx *c, const struct error *e)
{
	int status = e->status ? e->status : 500;

	if (status == 503 || status == 429)
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", "1");
	if (status >= 500 && status != 503)
		log_error("request failed", "route=%s status=%d code=%s error=\"%s\"", c->route, status, e->code,
			  e->msg);
	reply(c, status, error_json(e));
}

void reply_err(struct rctx *c, int status, const char *code, const char *msg)
{
	struct error e;

	error_set(&e, status, code, "%s", msg);
	reply_error(c, &e);
}

/* ---- request body ---- */

json_t *read_body(struct rctx *c, struct error *err)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
	size_t len = evbuffer_get_length(in);
	json_error_t je;
	json_t *j;

	if (len > HTTP_MAX_BODY) {
		error_set(err, 413, "body_too_large", "the body is over 1 MiB");
		return NULL;
	}
	j = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		error_set(err, 400, "invalid_request", "malformed JSON at line %d column %d: %s", je.line, je.column,
			  je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		error_set(err, 400, "invalid_request", "the body must be a JSON object");
		return NULL;
	}
	return j;
}

int http_bearer(struct evhttp_request *req, const char **tok, size_t *len)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");

	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return -1;
	h += 7;
	while (*h == ' ')
		h++;
	*tok = h;
	*len = strlen(h);
	return *len ? 0 : -1;
}
