/* http.h: one HTTP request from its handler to its reply (event loop
 * thread only).  The layer under every handler: it knows the request, the
 * metrics and the count of requests in flight, nothing of the service
 * (handlers reach their own state through rctx.s, opaque here). */
#ifndef BILLING_HTTP_H
#define BILLING_HTTP_H

#include <event2/http.h>
#include <jansson.h>
#include <stdint.h>

#include "common/backoff.h"
#include "common/error.h"

/* The largest request body billingd reads (1 MiB). */
#define HTTP_MAX_BODY (1024 * 1024)

/* What the reply layer counts: shared by every request of one server. */
struct http_front {
	struct metrics *metrics;
	int64_t inflight;
	uint64_t started; /* requests since start (common/memtrim.h) */
	/* the billing answers (/v1/ routes) per window, which the model's
	 * workers read to back off (common/backoff.h, inference_busy_requests) */
	struct backoff load;
};

struct server;

/* One HTTP request in flight: owned by its handler until reply() frees it. */
struct rctx {
	struct http_front *front;
	struct server *s; /* the handlers' state */
	struct evhttp_request *req;
	const char *route; /* static label for metrics */
	int64_t id;        /* the route's {id} segment, 0 when it has none */
	int64_t t0;        /* arrival, time_mono_us() */
};

struct rctx *rctx_new(struct http_front *f, struct server *s, struct evhttp_request *req, const char *route);
/* Sends the one reply of the request and frees c.  body is stolen. */
void reply(struct rctx *c, int status, json_t *body);
void reply_text(struct rctx *c, int status, const char *text, size_t len);
/* The same with a Content-Type of its own, the body as it is (no newline added). */
void reply_typed(struct rctx *c, int status, const char *content_type, const char *body, size_t len);
/* The client is gone (libevent freed the request): count it, free c. */
void rctx_drop(struct rctx *c);
/* Ends a reply started with evhttp_send_reply_start and frees c. */
void rctx_end_chunked(struct rctx *c, int status);
json_t *error_json(const struct error *e);
void reply_error(struct rctx *c, const struct error *e);
void reply_err(struct rctx *c, int status, const char *code, const char *msg);
/* The token of an `Authorization: Bearer TOKEN` header (the scheme in any
 * case, spaces after it skipped): 0 with *tok (NUL-terminated, borrowed
 * from the request) and its length, or -1 when there is none. */
int http_bearer(struct evhttp_request *req, const char **tok, size_t *len);
/* The request body as a JSON object, or NULL with err (400/413). */
json_t *read_body(struct rctx *c, struct error *err);

#endif
