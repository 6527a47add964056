/* chatauth.h: the API key of a chat call is checked before its body is
 * parsed or its prompt tokenized (CONTRACT.md §3: "checked before the body
 * is read"), so an unauthenticated caller gets 401 and costs billingd one
 * indexed lookup, never a JSON parse of up to 1 MiB or a tokenization on
 * the event loop.  Event loop thread only. */
#ifndef BILLING_CHATAUTH_H
#define BILLING_CHATAUTH_H

#include "billing/http/http.h"

/* Looks key up (keyed hash, API pool); a known key that is not revoked
 * calls next(c); otherwise c is answered here: 401 unknown or revoked key,
 * 503 database away or queue full.  key is borrowed for the call only. */
void chatauth_check(struct rctx *c, const char *key, void (*next)(struct rctx *c));

#endif
