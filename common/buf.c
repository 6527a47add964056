/* buf.c: see buf.h. */
#include "common/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

void buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void buf_release(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

static void grow_to(struct buf *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 256;
	char *p;

	while (cap < b->len + need + 1)
		cap *= 2;
	p = realloc(b->data, cap);
	if (!p) {
		fputs("fatal: out of memory\n", stderr);
		abort();
	}
	b->data = p;
	b->cap = cap;
}

/* room for need more bytes and the NUL: the common case (room) without a call */
static inline void grow(struct buf *b, size_t need)
{
	if (b->len + need + 1 > b->cap)
		grow_to(b, need);
}

void buf_reserve(struct buf *b, size_t n)
{
	grow(b, n);
}

void buf_append(struct buf *b, const void *p, size_t n)
{
	grow(b, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	size_t room;
	int n;

	/* formatted once when it fits (the common case: the buffer has room),
	 * twice only when it must grow */
	grow(b, 64);
	room = b->cap - b->len;
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, room, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->data[b->len] = '\0';
		return;
	}
	if ((size_t)n >= room) {
		grow(b, (size_t)n);
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

size_t buf_fmt_i64(char *out, int64_t v)
{
	char t[BUF_I64_LEN];
	size_t i = sizeof(t), n;
	/* the magnitude as unsigned: INT64_MIN too */
	uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

	if (v >= 0 && v < 10) { /* the common 0 of an unset limit */
		out[0] = (char)('0' + v);
		out[1] = '\0';
		return 1;
	}
	do {
		t[--i] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		t[--i] = '-';
	n = sizeof(t) - i;
	memcpy(out, t + i, n);
	out[n] = '\0';
	return n;
}

void buf_put_i64(struct buf *b, int64_t v)
{
	char t[BUF_I64_LEN];

	buf_append(b, t, buf_fmt_i64(t, v));
}

void buf_put_u32be(struct buf *b, uint32_t v)
{
	uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

	buf_append(b, x, 4);
}

void buf_put_i64be(struct buf *b, int64_t sv)
{
	uint64_t v = (uint64_t)sv;
	uint8_t x[8];

	for (int i = 0; i < 8; i++)
		x[i] = (uint8_t)(v >> (56 - 8 * i));
	buf_append(b, x, 8);
}

void buf_pg_array_text(struct buf *b, const char *s)
{
	buf_append(b, "\"", 1);
	for (;;) {
		size_t n = strcspn(s, "\"\\"); /* the run that needs no escape */
		buf_append(b, s, n);
		s += n;
		if (!*s)
			break;
		buf_append(b, "\\", 1);
		buf_append(b, s, 1);
		s++;
	}
	buf_append(b, "\"", 1);
}

void buf_append_utf8(struct buf *b, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0; /* u[run..i) is valid and not yet appended */

	while (i < n) {
		unsigned char c = u[i];
		size_t need, k;
		unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			need = 2;
		else if (c >= 0xE0 && c <= 0xEF)
			need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
		else if (c >= 0xF0 && c <= 0xF4)
			need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
		else
			need = 0; /* 80..C1, F5..FF: never in UTF-8 */
		for (k = 1; k < need && i + k < n; k++)
			if (u[i + k] < (k == 1 ? lo : 0x80) || u[i + k] > (k == 1 ? hi : 0xBF))
				break;
		if (need && k == need) {
			i += need;
			continue;
		}
		/* u[i..i+k) (k >= 1) is one maximal subpart: one U+FFFD */
		buf_append(b, u + run, i - run);
		buf_append(b, "\xEF\xBF\xBD", 3);
		i += need ? k : 1;
		run = i;
	}
	buf_append(b, u + run, n - run);
}

void buf_hex(struct buf *b, const uint8_t *p, size_t n)
{
	static const char hx[] = "0123456789abcdef";

	grow(b, 2 * n);
	for (size_t i = 0; i < n; i++) {
		b->data[b->len++] = hx[p[i] >> 4];
		b->data[b->len++] = hx[p[i] & 15];
	}
	b->data[b->len] = '\0';
}

static void json_strn(struct buf *b, const char *s, size_t n, bool short_bf)
{
	size_t run = 0; /* s[run..i) needs no escape: appended in one piece */

	buf_append(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch != '"' && ch != '\\')
			continue;
		buf_append(b, s + run, i - run);
		run = i + 1;
		switch (ch) {
		case '"':
			buf_append(b, "\\\"", 2);
			break;
		case '\\':
			buf_append(b, "\\\\", 2);
			break;
		case '\b':
		case '\f':
			if (short_bf)
				buf_append(b, ch == '\b' ? "\\b" : "\\f", 2);
			else
				buf_printf(b, "\\u%04x", ch);
			break;
		case '\n':
			buf_append(b, "\\n", 2);
			break;
		case '\r':
			buf_append(b, "\\r", 2);
			break;
		case '\t':
			buf_append(b, "\\t", 2);
			break;
		default: /* below 0x20 */
			buf_printf(b, "\\u%04x", ch);
		}
	}
	buf_append(b, s + run, n - run);
	buf_append(b, "\"", 1);
}

void buf_json_strn(struct buf *b, const char *s, size_t n)
{
	json_strn(b, s, n, true);
}

void buf_json_str(struct buf *b, const char *s)
{
	json_strn(b, s, strlen(s), true);
}

void buf_json_str_u(struct buf *b, const char *s)
{
	json_strn(b, s, strlen(s), false);
}
