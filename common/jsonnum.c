/* jsonnum.c: see jsonnum.h. */
#include "common/jsonnum.h"

#include <pthread.h>
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
