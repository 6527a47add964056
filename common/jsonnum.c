/* jsonnum.c: see jsonnum.h. */
#include "common/jsonnum.h"

#include <pthread.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "\x01" + 16 hex digits + ":" as a raw string; as jansson writes it:
 * "\u0001" + the same hex + ":" */
static char mark_raw[19], mark_json[24];
static pthread_once_t mark_once = PTHREAD_ONCE_INIT;

static void mark_init(void)
{
	unsigned char r[8];

	randombytes_buf(r, sizeof(r));
	mark_raw[0] = '\x01';
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(mark_raw + 1 + 2 * i, 3, "%02x", r[i]);
	mark_raw[17] = ':';
	mark_raw[18] = '\0';
	snprintf(mark_json, sizeof(mark_json), "\\u0001%s", mark_raw + 1);
}

json_t *jsonnum_total(money_total v)
{
	char digits[MONEY_TOTAL_BUF], s[sizeof(mark_raw) + MONEY_TOTAL_BUF];

	if (v >= INT64_MIN && v <= INT64_MAX)
		return json_integer((json_int_t)v);
	pthread_once(&mark_once, mark_init);
	money_total_str(v, digits, sizeof(digits));
	snprintf(s, sizeof(s), "%s%s", mark_raw, digits);
	return json_string(s);
}

/* true with *v when j is a marked string */
static bool marked(const json_t *j, money_total *v)
{
	const char *s = json_string_value(j);

	pthread_once(&mark_once, mark_init);
	return s && strncmp(s, mark_raw, strlen(mark_raw)) == 0 && money_total_parse(s + strlen(mark_raw), v) == 0;
}

bool jsonnum_is_big(const json_t *j, char *digits, size_t n)
{
	money_total v;

	if (!marked(j, &v))
		return false;
	money_total_str(v, digits, n);
	return true;
}

money_total jsonnum_value(const json_t *j)
{
	money_total v;

	if (json_is_integer(j))
		return json_integer_value(j);
	return marked(j, &v) ? v : 0;
}

/* Copies text into out (NULL: only counts) with every integer literal
 * outside strings that does not fit int64 turned into a marked string;
 * returns the number of such literals. */
static size_t mark_big(const char *text, char *out, size_t *outlen)
{
	size_t n = strlen(text), ml = strlen(mark_json), len = 0, found = 0;
	bool in_str = false;

	for (size_t i = 0; i < n; i++) {
		size_t e = i;
		if (in_str || !((text[i] >= '0' && text[i] <= '9') || text[i] == '-')) {
			if (in_str && text[i] == '\\' && i + 1 < n) {
				if (out)
					out[len] = text[i], out[len + 1] = text[i + 1];
				len += 2;
				i++;
				continue;
			}
			if (text[i] == '"')
				in_str = !in_str;
			if (out)
				out[len] = text[i];
			len++;
			continue;
		}
		if (text[e] == '-')
			e++;
		while (e < n && text[e] >= '0' && text[e] <= '9')
			e++;
		if (!(e < n && (text[e] == '.' || text[e] == 'e' || text[e] == 'E')) && e - i >= 19 &&
		    e - i < MONEY_TOTAL_BUF) {
			money_total v;
			char digits[MONEY_TOTAL_BUF];
			memcpy(digits, text + i, e - i);
			digits[e - i] = '\0';
			if (money_total_parse(digits, &v) == 0 && (v < INT64_MIN || v > INT64_MAX)) {
				if (out) {
					out[len] = '"';
					memcpy(out + len + 1, mark_json, ml);
					memcpy(out + len + 1 + ml, digits, e - i);
					out[len + 1 + ml + (e - i)] = '"';
				}
				len += ml + (e - i) + 2;
				found++;
				i = e - 1;
				continue;
			}
		}
		if (out)
			memcpy(out + len, text + i, e - i);
		len += e - i;
		i = e - 1;
	}
	if (out)
		out[len] = '\0';
	*outlen = len;
	return found;
}

json_t *jsonnum_loads(const char *text, size_t flags, json_error_t *je)
{
	size_t len;
	char *t;
	json_t *j;

	pthread_once(&mark_once, mark_init);
	if (mark_big(text, NULL, &len) == 0)
		return json_loads(text, flags, je);
	if (!(t = malloc(len + 1)))
		return NULL;
	(void)mark_big(text, t, &len);
	j = json_loads(t, flags, je);
	free(t);
	return j;
}

char *jsonnum_dumps(const json_t *j, size_t flags)
{
	char *s = json_dumps(j, flags), *w, *r;
	size_t ml;

	if (!s)
		return NULL;
	pthread_once(&mark_once, mark_init);
	ml = strlen(mark_json);
	/* in place: the result is never longer */
	for (r = w = s; *r;) {
		if (r[0] == '"' && strncmp(r + 1, mark_json, ml) == 0) {
			const char *d = r + 1 + ml, *e = d;
			if (*e == '-')
				e++;
			while (*e >= '0' && *e <= '9')
				e++;
			if (*e == '"' && e > d) {
				memmove(w, d, (size_t)(e - d));
				w += e - d;
				r = (char *)e + 1;
				continue;
			}
		}
		*w++ = *r++;
	}
	*w = '\0';
	return s;
}
