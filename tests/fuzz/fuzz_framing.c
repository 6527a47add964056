/* fuzz_framing.c: the request-framing checks (billing/http/framing.c) on any bytes.
 *
 * Properties: the head scanner gives the same answer (where the head ends,
 * whether a NUL was in it) however the bytes are split into reads, and
 * agrees with a direct reference (the first empty line, LF or CRLF, after
 * the request line); framing_check, on a header list built from the input's
 * `key:value` lines, accepts exactly the unambiguous framings: every
 * Content-Length a plain decimal and all equal, no Transfer-Encoding with
 * it, at most one Transfer-Encoding and only `chunked`, at most one
 * Authorization, no NUL. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>

#include "billing/http/framing.h"
#include "tests/fuzz/fuzz.h"

/* reference: bytes of the head (through the empty line), or size if none */
static size_t head_len(const char *p, size_t n, int *done)
{
	size_t lines = 0, start = 0;

	*done = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '\n')
			continue;
		size_t len = i - start;
		if (lines > 0 && (len == 0 || (len == 1 && p[start] == '\r'))) {
			*done = 1;
			return i + 1;
		}
		lines++;
		start = i + 1;
	}
	return n;
}

static int all_digits(const char *v)
{
	if (!*v)
		return 0;
	for (; *v; v++)
		if (*v < '0' || *v > '9')
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	struct framing_scan whole, parts;
	struct evkeyvalq hs;
	struct error err;
	size_t used, pos = 0, cut = size ? data[0] % 7 + 1 : 1;
	int done;
	size_t ref = head_len(p, size, &done);

	/* the scanner, whole and in pieces of `cut` bytes */
	framing_scan_reset(&whole);
	used = framing_scan_feed(&whole, p, size);
	FUZZ_CHECK(used == ref && whole.done == (done != 0));
	FUZZ_CHECK(whole.nul == (memchr(p, '\0', ref) != NULL));
	framing_scan_reset(&parts);
	while (pos < size) {
		size_t n = size - pos < cut ? size - pos : cut;
		size_t u = framing_scan_feed(&parts, p + pos, n);
		FUZZ_CHECK(u <= n);
		if (u < n) {
			FUZZ_CHECK(parts.done);
			pos += u;
			break;
		}
		pos += n;
	}
	FUZZ_CHECK(parts.done == whole.done && parts.nul == whole.nul);
	if (whole.done)
		FUZZ_CHECK(pos == ref);

	/* framing_check on the `key:value` lines (NUL-free strings, as evhttp keeps them) */
	TAILQ_INIT(&hs);
	{
		char *copy = malloc(size + 1), *line, *save = NULL;
		const char *cl = NULL;
		int n_te = 0, n_auth = 0, chunked = 0, bad = whole.nul;
		FUZZ_CHECK(copy != NULL);
		memcpy(copy, p, size);
		copy[size] = '\0';
		for (line = strtok_r(copy, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
			char *colon = strchr(line, ':');
			if (!colon)
				continue;
			*colon = '\0';
			evhttp_add_header(&hs, line, colon + 1);
			if (strcasecmp(line, "Content-Length") == 0) {
				if (!all_digits(colon + 1) || (cl && strcmp(cl, colon + 1) != 0))
					bad = 1;
				cl = colon + 1;
			} else if (strcasecmp(line, "Transfer-Encoding") == 0) {
				n_te++;
				chunked = strcasecmp(colon + 1, "chunked") == 0;
			} else if (strcasecmp(line, "Authorization") == 0) {
				n_auth++;
			}
		}
		if ((n_te && cl) || n_te > 1 || (n_te && !chunked) || n_auth > 1)
			bad = 1;
		memset(&err, 0, sizeof(err));
		if (framing_check(&hs, whole.nul, &err) < 0) {
			FUZZ_CHECK(bad && err.status == 400 && strcmp(err.code, "invalid_request") == 0);
		} else {
			FUZZ_CHECK(!bad);
		}
		evhttp_clear_headers(&hs);
		free(copy);
	}
	return 0;
}
