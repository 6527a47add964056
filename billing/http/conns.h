/* conns.h: accounting of billingd's HTTP connections, which libevent 2.1's
 * evhttp does not do: a limit on open connections (max_connections) and a
 * deadline on reading one request (request_timeout_s), so a client that
 * trickles header bytes cannot hold a connection for ever (evhttp's own
 * timeout only measures silence).
 *
 * Every connection gets a small record when evhttp creates its bufferevent
 * (evhttp_set_bevcb); the record is bound to the evhttp_connection right
 * after, follows the connection through its requests and is freed by the
 * connection's close callback.  Event loop thread only. */
#ifndef BILLING_CONNS_H
#define BILLING_CONNS_H

#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdint.h>

struct metrics;
struct conns;

/* max: most open connections; a connection beyond is closed at once.
 * request_timeout_s: most seconds from the first byte of a request to its
 * last (headers and body); beyond, the connection is dropped. */
struct conns *conns_new(struct event_base *base, struct evhttp *http, int64_t max, int64_t request_timeout_s,
			struct metrics *m) __attribute__((warn_unused_result));
/* Call after evhttp_free: frees what is left. */
void conns_free(struct conns *cs);
/* A request has been read whole and goes to its handler: its read deadline
 * stops; the next one starts with the next request's first byte. */
void conns_request_read(struct conns *cs, struct evhttp_request *req);
/* A NUL byte was in the head (request line or headers) of req, which
 * evhttp's parsed strings cannot show (billing/http/framing.h). */
bool conns_head_had_nul(struct conns *cs, struct evhttp_request *req);
int64_t conns_open(const struct conns *cs);
/* Open connections with answer bytes not yet written to their socket: a
 * reply is queued by evhttp_send_reply and written by a later loop turn. */
int64_t conns_unsent(const struct conns *cs);
/* evhttp keeps one close callback per connection, and conns uses it: a
 * handler that must know when its client leaves (the streaming chat) sets
 * fn here instead; fn(arg) runs once, first thing, when the connection
 * closes while set.  fn NULL clears it.  A connection conns does not
 * track (out of memory at accept) calls nothing. */
void conns_on_close(struct conns *cs, struct evhttp_connection *evcon, void (*fn)(void *arg), void *arg);

#endif
