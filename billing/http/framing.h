/* framing.h: requests whose framing is ambiguous (CONTRACT.md §3): two
 * different Content-Length values, a Content-Length that is not a plain
 * decimal, Content-Length together with Transfer-Encoding (or a
 * Transfer-Encoding other than one `chunked`), two Authorization headers,
 * a NUL byte in the request line or a header.  libevent 2.1's evhttp
 * accepts all of these (the first Content-Length wins, strtoll takes `+40`,
 * a NUL silently cuts a header value short), so billingd checks the parsed
 * headers itself before dispatch and answers 400 with `Connection: close`:
 * whatever a proxy in front made of the bytes, no second request is read
 * from them.
 *
 * A NUL cannot be seen in the parsed headers (libevent's strings end at
 * it), so the raw bytes of each request head are scanned as they arrive
 * (struct framing_scan, fed by conns.c from the connection's input buffer).
 * framing_scan_* and framing_check are pure, no event loop: the fuzz target
 * calls them alone. */
#ifndef BILLING_FRAMING_H
#define BILLING_FRAMING_H

#include <sys/queue.h>

#include <event2/keyvalq_struct.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* The head of one request: from its first byte to the empty line. */
struct framing_scan {
	bool done;       /* the empty line was seen: later bytes are body */
	bool nul;        /* a NUL byte before it */
	size_t line_len; /* bytes of the current line so far */
	char line_first; /* its first byte */
	size_t lines;    /* complete lines so far */
};

void framing_scan_reset(struct framing_scan *sc);
/* Feeds the next n bytes; returns how many belonged to the head (all of
 * them until the empty line, then none). */
size_t framing_scan_feed(struct framing_scan *sc, const char *p, size_t n);

/* 0 when the headers frame the request unambiguously and nul_seen is
 * false, else -1 with err (400 invalid_request, the reason). */
int framing_check(const struct evkeyvalq *headers, bool nul_seen, struct error *err)
	__attribute__((warn_unused_result));

#endif
