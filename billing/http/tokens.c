/* tokens.c: see tokens.h. */
#include "billing/http/tokens.h"

#include <errno.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct tokens {
	size_t n, cap;
	uint8_t (*h)[TOKENS_HASH_LEN];
};

static int add(struct tokens *t, const char *tok, size_t len)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 8;
		void *nh = realloc(t->h, cap * sizeof(*t->h));
		if (!nh)
			return -1;
		t->h = nh;
		t->cap = cap;
	}
	tokens_hash(tok, len, t->h[t->n++]);
	return 0;
}

/* NULL when line[0..len) is a good token line, else why not */
static const char *line_fault(const char *line, size_t len)
{
	if (len < TOKENS_MIN || len > TOKENS_MAX)
		return "a token must be 16 to 4096 bytes";
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)line[i];
		if (ch == ' ' || ch == '\t')
			return "a token may not hold spaces";
		if (ch < 0x21 || ch > 0x7e)
			return "a token must be printable ASCII";
	}
	return NULL;
}

struct tokens *tokens_parse(const char *name, const char *text, size_t len, struct error *err)
{
	struct tokens *t = calloc(1, sizeof(*t));
	size_t pos = 0, lineno = 0;

	if (!t) {
		error_set(err, 0, "config", "out of memory reading token file '%s'", name);
		return NULL;
	}
	while (pos < len) {
		const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos, b = 0;
		const char *why;

		pos += n + (nl ? 1 : 0);
		lineno++;
		if (n > 0 && line[n - 1] == '\r')
			n--;
		while (b < n && (line[b] == ' ' || line[b] == '\t'))
			b++;
		if (b == n || line[b] == '#')
			continue;
		why = line_fault(line, n);
		if (why) {
			error_set(err, 0, "config", "token file '%s' line %zu: %s (line of %zu bytes)", name, lineno,
				  why, n);
			tokens_free(t);
			return NULL;
		}
		if (add(t, line, n) < 0) {
			error_set(err, 0, "config", "out of memory reading token file '%s'", name);
			tokens_free(t);
			return NULL;
		}
	}
	return t;
}

struct tokens *tokens_load(const char *path, struct error *err)
{
	FILE *f = fopen(path, "rb");
	struct tokens *t = NULL;
	struct stat st;
	char *text = NULL;
	size_t len = 0;

	if (!f) {
		error_set(err, 0, "config", "cannot open token file '%s': %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
		error_set(err, 0, "config", "token file '%s' is not a regular file", path);
		goto done;
	}
	if ((uintmax_t)st.st_size > TOKENS_FILE_MAX) {
		error_set(err, 0, "config", "token file '%s' is over %u bytes", path, TOKENS_FILE_MAX);
		goto done;
	}
	/* read whole; one byte more than the size says, to see a file that grew */
	text = malloc((size_t)st.st_size + 1);
	if (!text) {
		error_set(err, 0, "config", "out of memory reading token file '%s'", path);
		goto done;
	}
	len = fread(text, 1, (size_t)st.st_size + 1, f);
	if (ferror(f) || len > (size_t)st.st_size) {
		error_set(err, 0, "config", "cannot read token file '%s' whole (changed while read?)", path);
		goto done;
	}
	t = tokens_parse(path, text, len, err);
done:
	if (text) {
		sodium_memzero(text, (size_t)st.st_size + 1);
		free(text);
	}
	fclose(f);
	return t;
}

void tokens_free(struct tokens *t)
{
	if (!t)
		return;
	free(t->h);
	free(t);
}

size_t tokens_count(const struct tokens *t)
{
	return t ? t->n : 0;
}

void tokens_hash(const char *token, size_t len, uint8_t out[TOKENS_HASH_LEN])
{
	crypto_generichash(out, TOKENS_HASH_LEN, (const unsigned char *)token, len, NULL, 0);
}

bool tokens_match_hash(const struct tokens *t, const uint8_t h[TOKENS_HASH_LEN])
{
	int hit = 0;

	if (!t)
		return false;
	for (size_t i = 0; i < t->n; i++)
		hit |= sodium_memcmp(h, t->h[i], TOKENS_HASH_LEN) == 0;
	return hit != 0;
}

bool tokens_match(const struct tokens *t, const char *token, size_t len)
{
	uint8_t h[TOKENS_HASH_LEN];

	if (!t || len == 0)
		return false;
	tokens_hash(token, len, h);
	return tokens_match_hash(t, h);
}
