/* framing.c: see framing.h. */
#include "billing/http/framing.h"

#include <event2/http.h>
#include <string.h>
#include <strings.h>

void framing_scan_reset(struct framing_scan *sc)
{
	memset(sc, 0, sizeof(*sc));
}

/* Line by line (memchr), not byte by byte: the same state after every call
 * as feeding the bytes one at a time (tests/fuzz/fuzz_framing.c). */
size_t framing_scan_feed(struct framing_scan *sc, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && !sc->done) {
		const char *nl = memchr(p + i, '\n', n - i);
		size_t end = nl ? (size_t)(nl - p) : n;

		if (end > i) {
			if (memchr(p + i, '\0', end - i))
				sc->nul = true;
			if (sc->line_len == 0)
				sc->line_first = p[i];
			sc->line_len += end - i;
		}
		i = end;
		if (!nl)
			break;
		/* evhttp ends lines at LF or CRLF: an empty line ends the head */
		if (sc->lines > 0 && (sc->line_len == 0 || (sc->line_len == 1 && sc->line_first == '\r')))
			sc->done = true;
		sc->lines++;
		sc->line_len = 0;
		i++;
	}
	return i;
}

static bool plain_decimal(const char *v)
{
	if (!*v)
		return false;
	for (; *v; v++)
		if (*v < '0' || *v > '9')
			return false;
	return true;
}

int framing_check(const struct evkeyvalq *headers, bool nul_seen, struct error *err)
{
	const struct evkeyval *h;
	const char *cl = NULL;
	int n_te = 0, n_auth = 0;
	bool chunked = false;

	if (nul_seen) {
		return error_set(err, 400, "invalid_request", "a NUL byte in the request head");
	}
	TAILQ_FOREACH (h, headers, next) {
		if (strcasecmp(h->key, "Content-Length") == 0) {
			if (!plain_decimal(h->value)) {
				return error_set(err, 400, "invalid_request",
						 "Content-Length must be a plain decimal number");
			}
			if (cl && strcmp(cl, h->value) != 0) {
				return error_set(err, 400, "invalid_request", "two different Content-Length values");
			}
			cl = h->value;
		} else if (strcasecmp(h->key, "Transfer-Encoding") == 0) {
			n_te++;
			chunked = strcasecmp(h->value, "chunked") == 0;
		} else if (strcasecmp(h->key, "Authorization") == 0) {
			n_auth++;
		}
	}
	if (n_te && cl) {
		return error_set(err, 400, "invalid_request", "both Content-Length and Transfer-Encoding");
	}
	if (n_te > 1 || (n_te && !chunked)) {
		return error_set(err, 400, "invalid_request", "Transfer-Encoding must be one 'chunked'");
	}
	if (n_auth > 1) {
		return error_set(err, 400, "invalid_request", "two Authorization headers");
	}
	return 0;
}
