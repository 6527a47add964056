/* bare_server.c: the "bare evhttp" baseline of `make bench`.
 *
 *   bare_server HOST PORT [BODY]
 *
 * libevent's evhttp on one event loop thread, configured like billingd
 * (body limit 1 MiB, header limit 16 KiB, idle timeout 30 s), answering
 * every request, whatever its path, with 200 and one fixed JSON body (by
 * default the shape of an authorize answer).  It reads the request body
 * (evhttp does) but does nothing with it: the ceiling of any service built
 * on evhttp on this machine.  SIGTERM or SIGINT ends it; exit 0. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_body = "{\"hold_id\":\"bench-00000000-1\",\"account_id\":1,\"held_nanos\":10000000,"
			    "\"available_nanos\":999999990000000,\"expires_at\":\"2026-11-29T09:10:00Z\"}\n";
static size_t g_body_len;

static void answer_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer *out = evbuffer_new();

	(void)arg;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evbuffer_add(out, g_body, g_body_len);
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig, (void)what;
	event_base_loopexit(arg, NULL);
}

int main(int argc, char **argv)
{
	struct event_base *base;
	struct evhttp *http;
	struct event *ev_term, *ev_int;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: bare_server HOST PORT [BODY]\n");
		return 2;
	}
	if (argc == 4)
		g_body = argv[3];
	g_body_len = strlen(g_body);
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	http = base ? evhttp_new(base) : NULL;
	if (!http) {
		fprintf(stderr, "bare_server: cannot create the event loop\n");
		return 1;
	}
	evhttp_set_max_body_size(http, 1024 * 1024);
	evhttp_set_max_headers_size(http, 16384);
	evhttp_set_timeout(http, 30);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(http, answer_cb, NULL);
	if (!evhttp_bind_socket_with_handle(http, argv[1], (uint16_t)atoi(argv[2]))) {
		fprintf(stderr, "bare_server: cannot listen on %s:%s\n", argv[1], argv[2]);
		return 1;
	}
	ev_term = evsignal_new(base, SIGTERM, stop_cb, base);
	ev_int = evsignal_new(base, SIGINT, stop_cb, base);
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	event_base_dispatch(base);
	event_free(ev_term);
	event_free(ev_int);
	evhttp_free(http);
	event_base_free(base);
	return 0;
}
