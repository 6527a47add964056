/* csv.c: see csv.h. */
#include "ledger/csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void csv_put_field(struct buf *b, const char *s, size_t n)
{
	bool quote = false;
	size_t i, start;

	for (i = 0; i < n; i++)
		if (s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n') {
			quote = true;
			break;
		}
	if (!quote) {
		buf_append(b, s, n);
		return;
	}
	buf_append(b, "\"", 1);
	for (i = 0, start = 0; i < n; i++)
		if (s[i] == '"') {
			buf_append(b, s + start, i + 1 - start); /* through the quote */
			buf_append(b, "\"", 1);                  /* doubled */
			start = i + 1;
		}
	buf_append(b, s + start, n - start);
	buf_append(b, "\"", 1);
}

void csv_put(struct buf *b, const char *s)
{
	csv_put_field(b, s ? s : "", s ? strlen(s) : 0);
}

bool csv_record_complete(const char *p, size_t n)
{
	size_t q = 0;

	for (size_t i = 0; i < n; i++)
		q += p[i] == '"';
	return q % 2 == 0;
}

void csv_fields_init(struct csv_fields *f)
{
	memset(f, 0, sizeof(*f));
	buf_init(&f->text);
}

void csv_fields_release(struct csv_fields *f)
{
	buf_release(&f->text);
	free(f->off);
	memset(f, 0, sizeof(*f));
}

const char *csv_field(const struct csv_fields *f, size_t i)
{
	return i < f->n ? f->text.data + f->off[i] : NULL;
}

static int start_field(struct csv_fields *f)
{
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 32;
		size_t *o = realloc(f->off, cap * sizeof(*o));
		if (!o)
			return -1;
		f->off = o;
		f->cap = cap;
	}
	f->off[f->n++] = f->text.len;
	return 0;
}

int csv_split(const char *p, size_t n, struct csv_fields *f, char *err, size_t errlen)
{
	size_t i = 0;

	buf_reset(&f->text);
	f->n = 0;
	for (;;) {
		if (start_field(f) < 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		if (i < n && p[i] == '"') {
			size_t qstart = i++;
			for (;;) {
				if (i >= n) {
					snprintf(err, errlen, "unterminated quoted field starting at byte %zu",
						 qstart + 1);
					return -1;
				}
				if (p[i] == '"') {
					if (i + 1 < n && p[i + 1] == '"') {
						buf_append(&f->text, "\"", 1);
						i += 2;
						continue;
					}
					i++;
					break;
				}
				if (p[i] == '\0') {
					snprintf(err, errlen, "NUL byte at byte %zu", i + 1);
					return -1;
				}
				buf_append(&f->text, p + i, 1);
				i++;
			}
			if (i < n && p[i] != ',') {
				snprintf(err, errlen, "text after a closing quote at byte %zu", i + 1);
				return -1;
			}
		} else {
			size_t s = i;
			while (i < n && p[i] != ',') {
				if (p[i] == '"') {
					snprintf(err, errlen, "a quote inside an unquoted field at byte %zu", i + 1);
					return -1;
				}
				if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n') {
					snprintf(err, errlen, "%s in an unquoted field at byte %zu",
						 p[i] == '\0' ? "NUL byte" : "line break", i + 1);
					return -1;
				}
				i++;
			}
			buf_append(&f->text, p + s, i - s);
		}
		buf_append(&f->text, "", 1); /* the NUL that ends the field */
		if (i >= n)
			break;
		i++; /* the comma */
	}
	return 0;
}
