/* tokens.c: see tokens.h. */
#include "billing/tokens.h"

#include <errno.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tokens {
	size_t n;
	uint8_t (*h)[32];
};

struct tokens *tokens_load(const char *path, struct error *err)
{
	FILE *f = fopen(path, "r");
	struct tokens *t;
	char line[1024];

	if (!f) {
		error_set(err, 0, "config", "cannot open token file '%s': %s", path, strerror(errno));
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		fclose(f);
		return NULL;
	}
	while (fgets(line, sizeof(line), f)) {
		char *s = line, *e;
		void *nh;
		while (*s == ' ' || *s == '\t')
			s++;
		e = s + strlen(s);
		while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (e == s || *s == '#')
			continue;
		nh = realloc(t->h, (t->n + 1) * sizeof(*t->h));
		if (!nh) {
			tokens_free(t);
			fclose(f);
			return NULL;
		}
		t->h = nh;
		crypto_generichash(t->h[t->n++], 32, (const unsigned char *)s, (size_t)(e - s), NULL, 0);
	}
	fclose(f);
	sodium_memzero(line, sizeof(line));
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

bool tokens_match(const struct tokens *t, const char *token, size_t len)
{
	uint8_t h[32];
	int hit = 0;

	if (!t || len == 0)
		return false;
	crypto_generichash(h, 32, (const unsigned char *)token, len, NULL, 0);
	for (size_t i = 0; i < t->n; i++)
		hit |= sodium_memcmp(h, t->h[i], 32) == 0;
	return hit != 0;
}
