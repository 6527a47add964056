/* fuzz_tokenfile.c: tokens_parse() (billing/http/tokens.c), the reader of the
 * gateway and admin token files, on any bytes.
 *
 * Properties: the file is accepted exactly when an independent line-by-line
 * reference says every line is blank, a comment, or a token of 16..4096
 * printable ASCII bytes without spaces (LF or CRLF endings); a refusal names
 * a line inside the text, the first bad one, and never quotes its content;
 * an accepted file holds exactly its token lines, each matching whole, and
 * no line is ever split: a token line less its last byte (or first byte)
 * matches only when that text is itself a token line of the file. */
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "billing/http/tokens.h"
#include "tests/fuzz/fuzz.h"

#define MAX_LINES 4096

struct span {
	const char *p;
	size_t n;
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return sodium_init() < 0 ? -1 : 0;
}

/* 0 blank/comment, 1 token, -1 bad */
static int classify(const char *p, size_t n)
{
	size_t b = 0;

	while (b < n && (p[b] == ' ' || p[b] == '\t'))
		b++;
	if (b == n || p[b] == '#')
		return 0;
	if (n < 16 || n > 4096)
		return -1;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e)
			return -1;
	return 1;
}

static bool is_line(const struct span *t, size_t nt, const char *p, size_t n)
{
	for (size_t i = 0; i < nt; i++)
		if (t[i].n == n && memcmp(t[i].p, p, n) == 0)
			return true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct span toks[MAX_LINES];
	const char *text = (const char *)data;
	struct error err;
	struct tokens *t;
	size_t pos = 0, line = 0, nt = 0, first_bad = 0, lines = 0;
	char lineno[32];

	/* the reference */
	while (pos < size) {
		const char *p = text + pos, *nl = memchr(p, '\n', size - pos);
		size_t n = nl ? (size_t)(nl - p) : size - pos;
		int c;

		pos += n + (nl ? 1 : 0);
		line++;
		if (n && p[n - 1] == '\r')
			n--;
		c = classify(p, n);
		if (c < 0 && !first_bad)
			first_bad = line;
		if (c > 0 && nt < MAX_LINES)
			toks[nt++] = (struct span){p, n};
	}
	lines = line;
	memset(&err, 0, sizeof(err));
	t = tokens_parse("fuzz.tokens", text, size, &err);
	if (!t) {
		FUZZ_CHECK(first_bad != 0);
		FUZZ_CHECK(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
		snprintf(lineno, sizeof(lineno), " line %zu: ", first_bad);
		FUZZ_CHECK(strstr(err.msg, lineno) != NULL);
		FUZZ_CHECK(first_bad <= lines);
		/* the message quotes no token line (a secret) */
		for (size_t i = 0; i < nt; i++)
			FUZZ_CHECK(toks[i].n < 16 || !memmem(err.msg, strlen(err.msg), toks[i].p, toks[i].n));
		return 0;
	}
	FUZZ_CHECK(first_bad == 0);
	if (nt < MAX_LINES) {
		FUZZ_CHECK(tokens_count(t) == nt);
		for (size_t i = 0; i < nt; i++) {
			const struct span *s = &toks[i];
			FUZZ_CHECK(tokens_match(t, s->p, s->n));
			FUZZ_CHECK(tokens_match(t, s->p, s->n - 1) == is_line(toks, nt, s->p, s->n - 1));
			FUZZ_CHECK(tokens_match(t, s->p + 1, s->n - 1) == is_line(toks, nt, s->p + 1, s->n - 1));
		}
	}
	tokens_free(t);
	return 0;
}
