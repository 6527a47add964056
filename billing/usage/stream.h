/* stream.h: optional fire-and-forget ingestion of usage records from a Redis
 * Stream (config `usage_stream`), for gateways that prefer it to HTTP.
 *
 * A thread of its own reads with XREADGROUP (group `usage_stream_group`,
 * consumer = instance_id), hands each entry's `body` (the JSON of a
 * /v1/usage body) to the same usage writer as HTTP, and XACKs an entry only
 * after its record committed (or was refused for good: those are copied with
 * the error to `<stream>:dead`).  Entries of a dead consumer are taken over
 * with XAUTOCLAIM once idle for `usage_stream_claim_ms`; its own pending
 * entries are read again at start.  Retrying is safe: the request_id is the
 * idempotency key. */
#ifndef BILLING_STREAM_H
#define BILLING_STREAM_H

#include "common/error.h"

struct server;
struct stream;

/* Starts the consumer of usage_stream into *out: 0 (*out NULL when the
 * feature is off), or -1 with err (status 500). */
int stream_new(struct server *s, struct stream **out, struct error *err) __attribute__((warn_unused_result));
/* Asks the consumer to stop reading (drain); stream_free joins it. */
void stream_stop(struct stream *st);
/* Call after the usage writer was freed (its last answers wake the consumer). */
void stream_free(struct stream *st);

#endif
