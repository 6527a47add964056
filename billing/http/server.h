/* server.h: billingd's HTTP front (libevent evhttp) and its wiring to the
 * database pools, Redis and the usage writer.  Everything here runs on the
 * event loop thread, except dbjob run functions (pool threads). */
#ifndef BILLING_SERVER_H
#define BILLING_SERVER_H

#include <event2/event.h>

#include "common/config.h"
#include "common/error.h"

struct server;

/* Builds the server from a loaded config: tokens, pepper, pools, Redis,
 * listening socket.  NULL with err. */
struct server *server_new(struct event_base *base, struct config *cfg, struct error *err)
	__attribute__((warn_unused_result));
/* SIGHUP: reload token files (keeps the old sets on failure). */
void server_reload(struct server *s);
/* SIGTERM: stop accepting; answer what is in flight; then exit the loop. */
void server_drain(struct server *s);
void server_free(struct server *s);

#endif
