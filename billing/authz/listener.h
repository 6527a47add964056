/* listener.h: a thread LISTENing on PostgreSQL for changes made elsewhere
 * (the CLI, other billingd instances): balance changes (channel
 * billing_balance, payload "ACCOUNT WRITER") and configuration changes
 * (billing_change: prices, limits, api_keys, customers:ID).  Each
 * notification is handed to the event loop thread via fn(arg, channel,
 * payload).  After a (re)connect, fn gets channel "resync": anything may
 * have been missed. */
#ifndef BILLING_LISTENER_H
#define BILLING_LISTENER_H

#include <event2/event.h>

struct listener;

typedef void (*listener_fn)(void *arg, const char *channel, const char *payload);

struct listener *listener_new(struct event_base *base, const char *conninfo, listener_fn fn, void *arg)
	__attribute__((warn_unused_result));
void listener_free(struct listener *l);

#endif
