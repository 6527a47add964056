/* inference.c: see inference.h. */
#include "billing/infer/inference.h"
#include "billing/http/conns.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "billing/authz/authorize.h"
#include "billing/infer/chatauth.h"
#include "billing/infer/model.h"
#include "billing/server_int.h"
#include "billing/infer/tokenizer.h"
#include "billing/http/metrics.h"
#include "billing/usage/usage.h"
#include "common/backoff.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/log.h"
#include "common/mailbox.h"
#include "common/timeutil.h"
#include "ledger/apikey.h"
#include "ledger/db.h"

#define INLINE_TOKENIZE_MAX (1024 * 1024)

struct gen;

struct inference {
	struct server *s;
	struct tokenizer *tok;
	struct model *model;
	int64_t model_created_s; /* the weights file's modification time */
	pthread_t *th;
	int nthreads;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct gen *head, *tail;
	size_t queued, running, queue_max;
	int64_t min_token_us;
	int64_t nice;             /* of the worker threads: the event loop comes first */
	int64_t busy_share;       /* inference_busy_share: percent of one core per worker while billing is busy */
	_Atomic int64_t yield_us; /* the workers' pauses, us (workers add, the loop reads) */
	int64_t yield_published;  /* of which already in /metrics (loop) */
	int stopping;
	struct mailbox *inbox; /* workers -> loop: gen_note */
};

/* What a worker tells the loop about a call: new tokens, or the end.  Each
 * call has one note of each kind; `tokens` is posted at most once at a time
 * (tokens_posted), `end` once, last: the mailbox delivers in posting order,
 * so nothing of a call is delivered after its end, and the end (which frees
 * the call, now or after its usage is recorded) comes exactly once. */
struct gen_note {
	struct gen_note *next;
	struct gen *g;
};

/* One chat call.  Owned by the loop; a worker borrows it from dequeue until
 * it posts its end note, after which the worker never touches it. */
struct gen {
	struct inference *inf;
	struct gen *next;
	struct rctx *rc; /* NULL once the client is gone */
	struct evhttp_connection *conn;
	char id[48];
	int32_t *prompt;
	size_t n_prompt;
	struct model_sampling smp;
	size_t max_tokens;
	bool stream, streaming;
	bool include_usage; /* stream_options.include_usage: a final usage chunk */
	bool slot;          /* holds a queue slot not yet handed to a worker */
	int64_t account_id, started_us, created_s;
	/* worker -> loop */
	pthread_mutex_t mu;
	struct buf pending; /* decoded bytes not yet passed on */
	size_t n_generated;
	int32_t last_id;
	int gen_rc;
	bool tokens_posted; /* tokens note in the mailbox: no second post */
	volatile int cancel;
	struct gen_note tokens, end;
	/* worker: the back-off's stamps since its last pause, and the call's
	 * pauses so far (back_off) */
	bool bo_on;
	int64_t bo_cpu_us, bo_wall_us, bo_paused_us;
	/* loop */
	struct buf text;
	struct usage_item it;
	int usage_tries;
	struct event *retry_ev;
	struct event *watch_ev; /* non-streamed: polls for the client's hang-up */
};

/* ---- helpers ---- */

static size_t utf8_complete_prefix(const char *s, size_t n)
{
	size_t i = n, back = 0;

	/* find the start of the last sequence */
	while (i > 0 && back < 4) {
		unsigned char c = (unsigned char)s[i - 1];
		i--;
		back++;
		if ((c & 0xC0) != 0x80) {
			size_t need = c < 0x80             ? 1
				      : (c & 0xE0) == 0xC0 ? 2
				      : (c & 0xF0) == 0xE0 ? 3
				      : (c & 0xF8) == 0xF0 ? 4
							   : 1;
			return back >= need ? n : i;
		}
	}
	return n - back; /* only continuation bytes: hold them */
}

static void header(struct rctx *c, const char *k, const char *v)
{
	evhttp_add_header(evhttp_request_get_output_headers(c->req), k, v);
}

/* ---- workers ---- */

static int64_t clock_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Between two tokens: while billing is busy (common/backoff.h, the loop's
 * meter), pause so that this worker's CPU since its last pause stays within
 * inference_busy_share percent of one core; a pause is at most
 * BACKOFF_MAX_SLEEP_US, so a stream keeps flowing.  A non-streamed call
 * pauses at most BACKOFF_MAX_CALL_PAUSE_US in all: its caller sees nothing
 * until the end, so its pauses only lengthen the wait (up to its deadline).
 * Billing quiet: full speed, nothing measured. */
static void back_off(struct gen *g)
{
	struct inference *inf = g->inf;
	int64_t left = g->stream ? BACKOFF_MAX_SLEEP_US : BACKOFF_MAX_CALL_PAUSE_US - g->bo_paused_us;
	int64_t cpu, wall, pause;

	if (inf->busy_share >= 100 || g->cancel || left <= 0 || !backoff_busy(&inf->s->front.load, time_mono_us())) {
		g->bo_on = false;
		return;
	}
	cpu = clock_us(CLOCK_THREAD_CPUTIME_ID);
	wall = time_mono_us();
	pause = g->bo_on ? backoff_sleep_us(inf->busy_share, cpu - g->bo_cpu_us, wall - g->bo_wall_us,
					    left < BACKOFF_MAX_SLEEP_US ? left : BACKOFF_MAX_SLEEP_US)
			 : 0;
	if (pause > 0) {
		struct timespec ts = {(time_t)(pause / 1000000), (long)(pause % 1000000) * 1000};
		int64_t after;

		nanosleep(&ts, NULL);
		after = time_mono_us();
		atomic_fetch_add_explicit(&inf->yield_us, after - wall, memory_order_relaxed);
		g->bo_paused_us += after - wall;
		wall = after;
	}
	g->bo_on = true;
	g->bo_cpu_us = cpu;
	g->bo_wall_us = wall;
}

static int on_token(void *arg, int32_t id)
{
	struct gen *g = arg;
	char bytes[256];
	size_t len = 0;

	pthread_mutex_lock(&g->mu);
	g->n_generated++;
	g->last_id = id;
	if (id != model_eos_id(g->inf->model) &&
	    tokenizer_decode_token(g->inf->tok, id, bytes, sizeof(bytes), &len) == 0)
		buf_append(&g->pending, bytes, len);
	if (g->stream && !g->tokens_posted) {
		g->tokens_posted = true;
		(void)mailbox_post(g->inf->inbox, &g->tokens);
	}
	pthread_mutex_unlock(&g->mu);
	if (g->inf->min_token_us > 0) {
		/* pacing: a real accelerator is slower than this toy model */
		struct timespec ts = {(time_t)(g->inf->min_token_us / 1000000),
				      (long)(g->inf->min_token_us % 1000000) * 1000};
		nanosleep(&ts, NULL);
	}
	back_off(g);
	return g->cancel;
}

static void *worker(void *arg)
{
	struct inference *inf = arg;
	struct model_session *sess = model_session_new(inf->model, 0);

	/* Linux: a nice value is per thread.  Generation is throughput work;
	 * the authorize and usage answers of the loop thread are what every
	 * call waits for, so on a full machine the workers yield to them. */
	if (inf->nice && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), (int)inf->nice) < 0)
		log_warn("inference_nice not applied", "error=\"%s\"", strerror(errno));
	for (;;) {
		struct gen *g;
		size_t n = 0;
		int rc;

		pthread_mutex_lock(&inf->mu);
		while (!inf->head && !inf->stopping)
			pthread_cond_wait(&inf->cv, &inf->mu);
		if (!inf->head) {
			pthread_mutex_unlock(&inf->mu);
			break;
		}
		g = inf->head;
		inf->head = g->next;
		if (!inf->head)
			inf->tail = NULL;
		inf->queued--;
		inf->running++;
		pthread_mutex_unlock(&inf->mu);

		rc = sess ? model_generate(sess, g->prompt, g->n_prompt, &g->smp, g->max_tokens, on_token, g, &n) : -1;
		if (rc < 0)
			log_warn("generation failed", "request_id=%s error=\"%s\"", g->id,
				 sess ? model_session_error(sess) : "out of memory");
		pthread_mutex_lock(&inf->mu);
		inf->running--;
		pthread_mutex_unlock(&inf->mu);
		pthread_mutex_lock(&g->mu);
		g->gen_rc = rc;
		pthread_mutex_unlock(&g->mu);
		(void)mailbox_post(inf->inbox, &g->end); /* g is the loop's from here */
	}
	model_session_free(sess);
	return NULL;
}

/* ---- lifecycle of a call (event loop) ---- */

static void gen_free(struct gen *g)
{
	g->inf->s->busy--;
	if (g->slot) {
		pthread_mutex_lock(&g->inf->mu);
		g->inf->queued--;
		pthread_mutex_unlock(&g->inf->mu);
	}
	if (g->retry_ev)
		event_free(g->retry_ev);
	if (g->watch_ev)
		event_free(g->watch_ev);
	pthread_mutex_destroy(&g->mu);
	buf_release(&g->pending);
	buf_release(&g->text);
	usage_item_release(&g->it);
	free(g->prompt);
	free(g);
}

static void close_cb(void *arg)
{
	struct gen *g = arg;

	/* the client went away: stop generating; what was generated is billed */
	g->cancel = 1;
	if (g->rc) {
		/* libevent 2.1 leaves an unfinished reply to us, detached from the
		 * connection (evhttp_connection_incoming_fail): ending it frees it */
		if (!evhttp_request_get_connection(g->rc->req))
			evhttp_send_reply_end(g->rc->req);
		rctx_drop(g->rc);
		g->rc = NULL;
	}
}

/* A non-streamed call writes nothing until it ends, and libevent 2.1 sees
 * a hang-up only when it writes: so its socket is polled while the worker
 * generates.  The client gone (FIN or reset), generation stops at the next
 * token and what was generated is billed (status cancelled); the answer is
 * still written, into the closed connection, which evhttp then frees. */
static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gen *g = arg;
	struct evhttp_connection *conn = g->rc ? evhttp_request_get_connection(g->rc->req) : NULL;
	struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
	struct pollfd p = {bev ? bufferevent_getfd(bev) : -1, POLLRDHUP, 0};

	(void)fd, (void)what;
	if (p.fd < 0 || poll(&p, 1, 0) <= 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
		return;
	g->cancel = 1;
	event_del(g->watch_ev);
	log_info("chat client went away, generation stopped", "request_id=%s", g->id);
}

static void send_event(struct gen *g, json_t *obj)
{
	char *s = json_dumps(obj, JSON_COMPACT);
	struct evbuffer *b;

	json_decref(obj);
	if (!s || !g->rc) {
		free(s);
		return;
	}
	b = evbuffer_new();
	evbuffer_add_printf(b, "data: %s\n\n", s);
	evhttp_send_reply_chunk(g->rc->req, b);
	evbuffer_free(b);
	free(s);
}

static json_t *chunk_obj(struct gen *g, json_t *delta, const char *finish)
{
	json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:o}]}", "id", g->id, "object", "chat.completion.chunk",
			      "created", (json_int_t)g->created_s, "model", model_name(g->inf->model), "choices",
			      "index", 0, "delta", delta, "finish_reason", finish ? json_string(finish) : json_null());

	/* as OpenAI: with include_usage every other chunk has "usage": null */
	if (o && g->include_usage)
		json_object_set_new(o, "usage", json_null());
	return o;
}

static const char *finish_reason(const struct gen *g)
{
	if (g->cancel)
		return "cancelled";
	return g->n_generated && g->last_id == model_eos_id(g->inf->model) ? "stop" : "length";
}

static void usage_done(struct dbjob *job);

/* Ends a call without a usage answer: a stream is closed (it already had
 * its 200), anything else gets the error.  Frees g. */
static void end_with_error(struct gen *g, int status, const char *code, const char *msg)
{
	if (g->rc) {
		if (g->streaming) {
			conns_on_close(g->inf->s->conns, g->conn, NULL, NULL);
			rctx_end_chunked(g->rc, status);
		} else {
			reply_err(g->rc, status, code, msg);
		}
		g->rc = NULL;
	}
	gen_free(g);
}

static void submit_usage(struct gen *g)
{
	if (dbpool_submit(server_writer(g->inf->s, &g->it.r), &g->it.job) == 0)
		return;
	if (++g->usage_tries < 3000) { /* about 10 minutes: the hold outlives it */
		struct timeval tv = {0, 200000};
		event_add(g->retry_ev, &tv);
		return;
	}
	log_error("chat usage could not be queued", "request_id=%s", g->id);
	end_with_error(g, 503, "unavailable", "the usage of this call could not be recorded");
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	submit_usage(arg);
}

static void finish(struct gen *g)
{
	struct usage_item *it = &g->it;

	memset(it, 0, sizeof(*it));
	snprintf(it->r.request_id, sizeof(it->r.request_id), "%s", g->id);
	it->r.account_id = g->account_id;
	snprintf(it->r.model, sizeof(it->r.model), "%s", model_name(g->inf->model));
	it->r.input_tokens = (int64_t)g->n_prompt;
	it->r.output_tokens = (int64_t)g->n_generated;
	it->r.started_at_us = g->started_us;
	snprintf(it->r.hold_id, sizeof(it->r.hold_id), "%s", g->id);
	snprintf(it->r.status, sizeof(it->r.status), "%s", g->cancel ? "cancelled" : "ok");
	usage_body_hash(&it->r, it->body_hash);
	it->job.done = usage_done;
	it->owner = g;
	submit_usage(g);
}

static void usage_done(struct dbjob *job)
{
	struct usage_item *it = (struct usage_item *)job;
	struct gen *g = it->owner;
	json_t *usage, *billing;

	if (it->job.err.status) {
		if (it->job.err.status == 503 && ++g->usage_tries < 3000) {
			/* the database is away: keep the record and try again (safe:
			 * the completion id is the idempotency key) */
			struct timeval tv = {0, 200000};
			usage_item_release(it);
			event_add(g->retry_ev, &tv);
			return;
		}
		log_error("chat usage not recorded", "request_id=%s code=%s error=\"%s\"", g->id, it->job.err.code,
			  it->job.err.msg);
		/* never a 200 for a call whose cost is not in the ledger */
		end_with_error(g, it->job.err.status, it->job.err.code, it->job.err.msg);
		return;
	}
	authz_settle(g->inf->s, it);
	usage = json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)g->n_prompt, "completion_tokens",
			  (json_int_t)g->n_generated, "total_tokens", (json_int_t)(g->n_prompt + g->n_generated));
	billing = json_pack("{s:s,s:I}", "request_id", g->id, "cost_nanos", (json_int_t)it->cost_nanos);
	if (g->rc && g->streaming) {
		struct evbuffer *b;
		if (g->include_usage)
			send_event(g,
				   json_pack("{s:s,s:s,s:I,s:s,s:[],s:o,s:o}", "id", g->id, "object",
					     "chat.completion.chunk", "created", (json_int_t)g->created_s, "model",
					     model_name(g->inf->model), "choices", "usage", usage, "billing", billing));
		else {
			json_decref(usage);
			json_decref(billing);
		}
		b = evbuffer_new();
		evbuffer_add_printf(b, "data: [DONE]\n\n");
		evhttp_send_reply_chunk(g->rc->req, b);
		evbuffer_free(b);
		conns_on_close(g->inf->s->conns, g->conn, NULL, NULL);
		rctx_end_chunked(g->rc, 200);
		g->rc = NULL;
	} else if (g->rc) {
		json_t *resp = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:s,s:s%},s:s}],s:o,s:o}", "id", g->id, "object",
					 "chat.completion", "created", (json_int_t)g->created_s, "model",
					 model_name(g->inf->model), "choices", "index", 0, "message", "role",
					 "assistant", "content", g->text.data ? g->text.data : "", g->text.len,
					 "finish_reason", finish_reason(g), "usage", usage, "billing", billing);
		reply(g->rc, 200, resp);
		g->rc = NULL;
	} else {
		json_decref(usage);
		json_decref(billing);
	}
	gen_free(g);
}

/* Moves the decoded bytes to the client (or the answer's text): at the end
 * all of them, before it only whole UTF-8 sequences. */
static void pass_on(struct gen *g, bool end)
{
	struct buf chunk;
	size_t take;

	buf_init(&chunk);
	pthread_mutex_lock(&g->mu);
	if (!end)
		g->tokens_posted = false;
	take = end ? g->pending.len : utf8_complete_prefix(g->pending.data ? g->pending.data : "", g->pending.len);
	if (take) {
		/* a bad sequence (the model may emit any bytes) becomes U+FFFD,
		 * the text around it stays */
		buf_append_utf8(&chunk, g->pending.data, take);
		memmove(g->pending.data, g->pending.data + take, g->pending.len - take);
		g->pending.len -= take;
	}
	pthread_mutex_unlock(&g->mu);
	if (chunk.len) {
		/* valid UTF-8 by now (a sequence cut by max_tokens included) */
		json_t *str = json_stringn(chunk.data, chunk.len);
		if (!str)
			str = json_string("");
		if (g->streaming)
			send_event(g, chunk_obj(g, json_pack("{s:o}", "content", str), NULL));
		else {
			buf_append(&g->text, json_string_value(str), strlen(json_string_value(str)));
			json_decref(str);
		}
	}
	buf_release(&chunk);
}

/* The worker is done with g: the rest of the text, then the usage. */
static void gen_end(struct gen *g)
{
	pass_on(g, true);
	if (g->watch_ev)
		event_del(g->watch_ev);
	if (g->streaming && g->rc)
		send_event(g, chunk_obj(g, json_object(), finish_reason(g)));
	if (g->gen_rc < 0 && g->n_generated == 0) {
		/* nothing ran: nothing to bill; the hold expires by itself */
		if (g->rc) {
			if (g->streaming) {
				conns_on_close(g->inf->s->conns, g->conn, NULL, NULL);
				rctx_end_chunked(g->rc, 500);
			} else {
				reply_err(g->rc, 500, "internal", "generation failed");
			}
			g->rc = NULL;
		}
		gen_free(g);
		return;
	}
	finish(g);
}

MAILBOX_LINK(note, struct gen_note, next)

static void note_deliver(void *arg, void *item)
{
	struct gen_note *n = item;

	(void)arg;
	if (n == &n->g->end)
		gen_end(n->g);
	else
		pass_on(n->g, false);
}

static const struct mailbox_ops note_ops = {note_next, note_set_next, note_deliver};

static void authorized(void *arg, int status, json_t *body, const char *retry_after)
{
	struct gen *g = arg;
	struct inference *inf = g->inf;

	if (status != 200) {
		if (retry_after)
			header(g->rc, "Retry-After", retry_after);
		reply(g->rc, status, body);
		g->rc = NULL;
		gen_free(g);
		return;
	}
	g->account_id = json_integer_value(json_object_get(body, "account_id"));
	json_decref(body);
	g->started_us = time_now_us();
	g->created_s = g->started_us / 1000000;
	if (g->stream) {
		header(g->rc, "Content-Type", "text/event-stream");
		header(g->rc, "Cache-Control", "no-cache");
		g->conn = evhttp_request_get_connection(g->rc->req);
		conns_on_close(g->inf->s->conns, g->conn, close_cb, g);
		evhttp_send_reply_start(g->rc->req, 200, "OK");
		g->streaming = true;
		send_event(g, chunk_obj(g, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL));
	}
	if (!g->stream) {
		struct timeval tv = {0, 50000};
		g->watch_ev = event_new(inf->s->base, -1, EV_PERSIST, watch_cb, g);
		if (g->watch_ev)
			event_add(g->watch_ev, &tv);
	}
	pthread_mutex_lock(&inf->mu);
	if (inf->tail)
		inf->tail->next = g;
	else
		inf->head = g;
	inf->tail = g;
	g->slot = false; /* the worker gives it back */
	pthread_cond_signal(&inf->cv);
	pthread_mutex_unlock(&inf->mu);
}

/* ---- handlers ---- */

/* the bearer token of the request (http_bearer), NUL-terminated */
static int bearer_key(struct rctx *c, const char **key)
{
	size_t len;

	return http_bearer(c->req, key, &len);
}

/* GET /internal/v1/models: the account's API key is checked (unknown or
 * revoked: 401, chatauth), then the embedded model is listed as OpenAI lists
 * models. */
static void models_list(struct rctx *c)
{
	struct inference *inf = c->s->inf;
	json_t *data = json_array();

	if (inf && inf->model)
		json_array_append_new(data,
				      json_pack("{s:s,s:s,s:I,s:s}", "id", model_name(inf->model), "object", "model",
						"created", (json_int_t)inf->model_created_s, "owned_by", "internal"));
	reply(c, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

void h_models(struct rctx *c)
{
	const char *key;

	if (bearer_key(c, &key) < 0) {
		header(c, "WWW-Authenticate", "Bearer");
		return reply_err(c, 401, "unauthorized", "an account's API key is required as the bearer token");
	}
	chatauth_check(c, key, models_list);
}

/* A content given as an array of text parts ({"type": "text", "text":
 * ...}, as OpenAI's SDKs send it) becomes one string in place, the parts
 * joined with "\n" (as vLLM does).  0, or -1 with err. */
static int join_text_parts(json_t *m, size_t i, struct error *err)
{
	json_t *parts = json_object_get(m, "content"), *part;
	struct buf b;
	size_t k;

	if (!json_is_array(parts))
		return 0;
	buf_init(&b);
	json_array_foreach(parts, k, part)
	{
		json_t *text = json_object_get(part, "text");
		if (!json_is_string(json_object_get(part, "type")) ||
		    strcmp(json_string_value(json_object_get(part, "type")), "text") != 0 || !json_is_string(text)) {
			buf_release(&b);
			return error_set(
				err, 400, "invalid_request",
				"message %zu content part %zu: only {\"type\": \"text\", \"text\": string} parts are"
				" supported",
				i, k);
		}
		if (k)
			buf_append(&b, "\n", 1);
		buf_append(&b, json_string_value(text), json_string_length(text));
	}
	json_object_set_new(m, "content", json_stringn(b.data ? b.data : "", b.len));
	buf_release(&b);
	return 0;
}

static int parse_messages(json_t *msgs, struct tokenizer_message **out, size_t *n, struct error *err)
{
	size_t i;
	json_t *m;

	if (!json_is_array(msgs) || json_array_size(msgs) == 0 || json_array_size(msgs) > 4096) {
		return error_set(err, 400, "invalid_request", "field 'messages' must be a non-empty array");
	}
	*out = calloc(json_array_size(msgs), sizeof(**out));
	if (!*out) {
		return error_set(err, 503, "unavailable", "out of memory");
	}
	json_array_foreach(msgs, i, m)
	{
		const char *role = json_string_value(json_object_get(m, "role"));
		json_t *content;
		if (join_text_parts(m, i, err) < 0) {
			free(*out);
			*out = NULL;
			return -1;
		}
		content = json_object_get(m, "content");
		if (!role || (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) ||
		    !json_is_string(content)) {
			error_set(
				err, 400, "invalid_request",
				"message %zu needs a role (system, user, assistant) and a content (a string or text parts)",
				i);
			free(*out);
			*out = NULL;
			return -1;
		}
		(*out)[i].role = role;
		(*out)[i].content = json_string_value(content);
		(*out)[i].content_len = json_string_length(content);
	}
	*n = json_array_size(msgs);
	return 0;
}

static bool ready(struct rctx *c)
{
	struct inference *inf = c->s->inf;

	if (!inf || !inf->tok) {
		reply_err(c, 503, "model_unavailable", "the tokenizer is not loaded on this instance");
		return false;
	}
	return true;
}

void h_tokenize(struct rctx *c)
{
	struct inference *inf = c->s->inf;
	struct error err;
	json_t *b, *text, *msgs, *out;
	const char *model;
	char *rendered = NULL;
	size_t len = 0, n_ids = 0;
	int32_t *ids = NULL;

	if (!ready(c))
		return;
	b = read_body(c, &err);
	if (!b)
		return reply_error(c, &err);
	model = json_string_value(json_object_get(b, "model"));
	text = json_object_get(b, "text");
	msgs = json_object_get(b, "messages");
	if (!model) {
		error_set(&err, 400, "invalid_request", "field 'model' is required");
		goto bad;
	}
	/* known: the embedded model, or a model of the price list */
	if ((!inf->model || strcmp(model, model_name(inf->model)) != 0) && !authz_model_known(c->s, model)) {
		error_set(&err, 422, "unknown_model", "unknown model");
		goto bad;
	}
	if ((text != NULL) == (msgs != NULL)) {
		error_set(&err, 400, "invalid_request", "give exactly one of 'text' and 'messages'");
		goto bad;
	}
	if (text) {
		if (!json_is_string(text)) {
			error_set(&err, 400, "invalid_request", "field 'text' must be a string");
			goto bad;
		}
		if (tokenizer_encode(inf->tok, json_string_value(text), json_string_length(text), &ids, &n_ids) < 0) {
			error_set(&err, errno == EILSEQ ? 400 : 503,
				  errno == EILSEQ ? "invalid_request" : "unavailable", "cannot tokenize the text");
			goto bad;
		}
	} else {
		struct tokenizer_message *m = NULL;
		size_t nm;
		if (parse_messages(msgs, &m, &nm, &err) < 0)
			goto bad;
		if (tokenizer_render_chat(m, nm, &rendered, &len) < 0 ||
		    tokenizer_encode(inf->tok, rendered, len, &ids, &n_ids) < 0) {
			free(m);
			error_set(&err, 503, "unavailable", "cannot tokenize the messages");
			goto bad;
		}
		free(m);
	}
	out = json_pack("{s:I}", "tokens", (json_int_t)n_ids);
	if (json_is_true(json_object_get(b, "return_ids"))) {
		json_t *arr = json_array();
		for (size_t i = 0; i < n_ids; i++)
			json_array_append_new(arr, json_integer(ids[i]));
		json_object_set_new(out, "ids", arr);
	}
	free(ids);
	free(rendered);
	json_decref(b);
	reply(c, 200, out);
	return;
bad:
	free(ids);
	free(rendered);
	json_decref(b);
	reply_error(c, &err);
}

/* The sampling and output options of a chat body into g: max_tokens or
 * max_completion_tokens, temperature, top_p, seed, stream, stream_options.
 * 0, or -1 with err (400). */
static int parse_options(json_t *b, struct gen *g, size_t max_ctx, struct error *err)
{
	json_t *v;

	/* max_completion_tokens is OpenAI's current name, max_tokens the older one */
	for (int k = 0; k < 2; k++) {
		const char *name = k ? "max_completion_tokens" : "max_tokens";
		if (!(v = json_object_get(b, name)) || json_is_null(v))
			continue;
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (json_int_t)max_ctx)
			return error_set(err, 400, "invalid_request", "field '%s' must be an integer 1..%zu", name,
					 max_ctx);
		if (k && json_is_integer(json_object_get(b, "max_tokens")) &&
		    json_integer_value(json_object_get(b, "max_tokens")) != json_integer_value(v))
			return error_set(err, 400, "invalid_request",
					 "fields 'max_tokens' and 'max_completion_tokens' differ: give one");
		g->max_tokens = (size_t)json_integer_value(v);
	}
	if ((v = json_object_get(b, "temperature")) && !json_is_null(v)) {
		if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 2)
			return error_set(err, 400, "invalid_request", "field 'temperature' must be a number 0..2");
		g->smp.temperature = (float)json_number_value(v);
	}
	if ((v = json_object_get(b, "top_p")) && !json_is_null(v)) {
		if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 1)
			return error_set(err, 400, "invalid_request", "field 'top_p' must be a number in (0, 1]");
		g->smp.top_p = (float)json_number_value(v);
	}
	if ((v = json_object_get(b, "seed")) && !json_is_null(v)) {
		if (!json_is_integer(v))
			return error_set(err, 400, "invalid_request", "field 'seed' must be an integer");
		g->smp.seed = (uint64_t)json_integer_value(v);
	}
	if ((v = json_object_get(b, "stream")) && !json_is_null(v)) {
		if (!json_is_boolean(v))
			return error_set(err, 400, "invalid_request", "field 'stream' must be a boolean");
		g->stream = json_is_true(v);
	}
	if ((v = json_object_get(b, "stream_options")) && !json_is_null(v)) {
		json_t *iu = json_object_get(v, "include_usage");
		if (!json_is_object(v) || (iu && !json_is_boolean(iu)))
			return error_set(err, 400, "invalid_request",
					 "field 'stream_options' must be an object with a boolean 'include_usage'");
		if (!g->stream)
			return error_set(err, 400, "invalid_request",
					 "field 'stream_options' is only allowed with 'stream': true");
		g->include_usage = json_is_true(iu);
	}
	return 0;
}

/* The body of a chat call, once chatauth_check found its key good. */
static void chat_body(struct rctx *c)
{
	struct inference *inf = c->s->inf;
	struct error err;
	struct authz_params p;
	struct tokenizer_message *m = NULL;
	json_t *b = NULL;
	struct gen *g = NULL;
	const char *key, *model;
	char *rendered = NULL;
	size_t nm, len;
	uint8_t rnd[12];

	if (bearer_key(c, &key) < 0) {
		header(c, "WWW-Authenticate", "Bearer");
		return reply_err(c, 401, "unauthorized", "an account's API key is required as the bearer token");
	}
	if (!ready(c))
		return;
	if (!inf->model)
		return reply_err(c, 503, "model_unavailable", "the embedded model is not loaded on this instance");
	b = read_body(c, &err);
	if (!b)
		return reply_error(c, &err);
	model = json_string_value(json_object_get(b, "model"));
	if (!model) {
		error_set(&err, 400, "invalid_request", "field 'model' is required");
		goto bad;
	}
	if (strcmp(model, model_name(inf->model)) != 0) {
		error_set(&err, 422, "unknown_model", "the embedded model is '%s'", model_name(inf->model));
		goto bad;
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		error_set(&err, 503, "unavailable", "out of memory");
		goto bad;
	}
	pthread_mutex_init(&g->mu, NULL);
	g->inf = inf;
	g->tokens.g = g->end.g = g;
	c->s->busy++; /* until gen_free: drain waits for the call to be recorded */
	g->max_tokens = 256;
	g->smp.temperature = 1.0f;
	g->smp.top_p = 1.0f;
	if (parse_options(b, g, model_max_ctx(inf->model), &err) < 0)
		goto bad;
	if (parse_messages(json_object_get(b, "messages"), &m, &nm, &err) < 0)
		goto bad;
	{
		/* a token is at least one byte: the context bounds the text, and
		 * keeps tokenization on the loop short */
		size_t bytes = 0;
		for (size_t i = 0; i < nm; i++)
			bytes += m[i].content_len;
		if (bytes > 64 * model_max_ctx(inf->model)) {
			error_set(&err, 422, "context_length_exceeded",
				  "the messages are longer than the context can hold");
			goto bad;
		}
	}
	if (tokenizer_render_chat(m, nm, &rendered, &len) < 0 ||
	    tokenizer_encode(inf->tok, rendered, len, &g->prompt, &g->n_prompt) < 0) {
		error_set(&err, 400, "invalid_request", "the messages cannot be tokenized (invalid UTF-8?)");
		goto bad;
	}
	if (g->n_prompt >= model_max_ctx(inf->model)) {
		error_set(&err, 422, "context_length_exceeded", "the prompt has %zu tokens; the context holds %zu",
			  g->n_prompt, model_max_ctx(inf->model));
		goto bad;
	}
	pthread_mutex_lock(&inf->mu);
	if (inf->queued + inf->running >= inf->queue_max + (size_t)inf->nthreads) {
		pthread_mutex_unlock(&inf->mu);
		/* CONTRACT.md §3: 503 unavailable when queues are full (reply_error adds Retry-After) */
		error_set(&err, 503, "unavailable", "every inference worker is busy and the queue is full");
		goto bad;
	}
	inf->queued++; /* the slot is ours from now: authorize is asynchronous */
	g->slot = true;
	pthread_mutex_unlock(&inf->mu);
	g->retry_ev = evtimer_new(c->s->base, retry_cb, g);
	if (!g->retry_ev) {
		error_set(&err, 503, "unavailable", "out of memory");
		goto bad;
	}
	randombytes_buf(rnd, sizeof(rnd));
	strcpy(g->id, "chatcmpl-");
	sodium_bin2hex(g->id + 9, sizeof(g->id) - 9, rnd, sizeof(rnd));
	g->rc = c;
	memset(&p, 0, sizeof(p));
	p.request_id = g->id;
	p.model = model;
	p.input_tokens = (int64_t)g->n_prompt;
	p.max_output_tokens = (int64_t)g->max_tokens;
	p.has_key = true;
	p.key_is_bearer = true;
	apikey_hash(c->s->pepper, key, strlen(key), p.key_hash);
	free(m);
	free(rendered);
	if (authz_start(c->s, &p, authorized, g) < 0) {
		g->rc = NULL;
		gen_free(g);
		reply_err(c, 503, "unavailable", "out of memory");
	}
	json_decref(b); /* after authz_start, which copies model and request_id */
	return;
bad:
	free(m);
	free(rendered);
	json_decref(b);
	if (g)
		gen_free(g);
	reply_error(c, &err);
}

void h_chat(struct rctx *c)
{
	const char *key;

	if (bearer_key(c, &key) < 0) {
		header(c, "WWW-Authenticate", "Bearer");
		return reply_err(c, 401, "unauthorized", "an account's API key is required as the bearer token");
	}
	if (!ready(c))
		return;
	if (!c->s->inf->model)
		return reply_err(c, 503, "model_unavailable", "the embedded model is not loaded on this instance");
	/* the key before the body: nothing is parsed or tokenized for a stranger */
	chatauth_check(c, key, chat_body);
}

struct inference *inference_new(struct server *s, struct error *err)
{
	struct inference *inf = calloc(1, sizeof(*inf));
	struct error e;
	int64_t threads, q, busy_requests;

	if (!inf) {
		error_set(err, 0, "oom", "out of memory");
		return NULL;
	}
	inf->s = s;
	if (config_int(s->cfg, "inference_threads", &threads, err) < 0 ||
	    config_int(s->cfg, "inference_queue", &q, err) < 0 ||
	    config_int(s->cfg, "inference_min_token_us", &inf->min_token_us, err) < 0 ||
	    config_int(s->cfg, "inference_nice", &inf->nice, err) < 0 ||
	    config_int(s->cfg, "inference_busy_share", &inf->busy_share, err) < 0 ||
	    config_int(s->cfg, "inference_busy_requests", &busy_requests, err) < 0) {
		free(inf);
		return NULL;
	}
	inf->queue_max = (size_t)q;
	/* the loop's meter of billing answers, read by the workers (back_off) */
	backoff_init(&s->front.load, inf->busy_share < 100 ? busy_requests : 0);
	atomic_init(&inf->yield_us, 0);
	inf->tok = tokenizer_load(config_get(s->cfg, "tokenizer_file"), &e);
	if (!inf->tok)
		log_warn("tokenizer not loaded: /v1/tokenize and chat answer 503", "error=\"%s\"", e.msg);
	inf->model = inf->tok ? model_load(config_get(s->cfg, "model_file"), &e) : NULL;
	if (inf->tok && !inf->model)
		log_warn("embedded model not loaded: chat answers 503", "error=\"%s\"", e.msg);
	pthread_mutex_init(&inf->mu, NULL);
	pthread_cond_init(&inf->cv, NULL);
	inf->inbox = inf->model ? mailbox_new(s->base, &note_ops, inf) : NULL;
	if (inf->model && !inf->inbox) {
		log_warn("embedded model not started: out of memory", "%s", "");
		model_free(inf->model);
		inf->model = NULL;
	}
	if (inf->model) {
		struct stat st;
		if (stat(config_get(s->cfg, "model_file"), &st) == 0)
			inf->model_created_s = (int64_t)st.st_mtime;
		inf->nthreads = (int)threads;
		inf->th = calloc((size_t)threads, sizeof(*inf->th));
		for (int i = 0; inf->th && i < inf->nthreads; i++)
			pthread_create(&inf->th[i], NULL, worker, inf);
		log_info("embedded model ready", "model=%s threads=%d", model_name(inf->model), inf->nthreads);
	}
	return inf;
}

void inference_publish(struct inference *inf)
{
	int64_t us;

	if (!inf)
		return;
	us = atomic_load_explicit(&inf->yield_us, memory_order_relaxed);
	metrics_count(inf->s->metrics, "billing_inference_yield_seconds_total", us - inf->yield_published);
	inf->yield_published = us;
}

void inference_free(struct inference *inf)
{
	if (!inf)
		return;
	pthread_mutex_lock(&inf->mu);
	inf->stopping = 1;
	pthread_cond_broadcast(&inf->cv);
	pthread_mutex_unlock(&inf->mu);
	for (int i = 0; inf->th && i < inf->nthreads; i++)
		pthread_join(inf->th[i], NULL);
	free(inf->th);
	mailbox_free(inf->inbox); /* notes of calls the loop will not see end */
	model_free(inf->model);
	tokenizer_free(inf->tok);
	pthread_mutex_destroy(&inf->mu);
	pthread_cond_destroy(&inf->cv);
	free(inf);
}
