/* csv.h: RFC 4180 fields, written and read back.  Pure logic: no I/O.
 *
 * Writing: a field is quoted when it holds a comma, a double quote, CR or
 * LF; a double quote inside is doubled.  Records end in CRLF (the caller
 * appends it).
 *
 * Reading: csv_record_complete() says whether bytes read so far end a
 * record (quotes balanced), so a reader can gather physical lines until a
 * record is whole; csv_split() then cuts one record (without its line end)
 * into fields.  Both are safe on any bytes (fuzzed). */
#ifndef LEDGER_CSV_H
#define LEDGER_CSV_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

/* Appends s[0..n) as one field (quoted if needed). */
void csv_put_field(struct buf *b, const char *s, size_t n);
/* Same for a NUL-terminated string. */
void csv_put(struct buf *b, const char *s);

/* True when p[0..n) contains an even number of double quotes: a record that
 * ends here is not inside a quoted field. */
bool csv_record_complete(const char *p, size_t n);

struct csv_fields {
	struct buf text; /* owned: the unquoted field values, each NUL-terminated */
	size_t *off;     /* owned: start of field i in text.data */
	size_t n, cap;
};

void csv_fields_init(struct csv_fields *f);
void csv_fields_release(struct csv_fields *f);
/* Field i (borrowed from f, valid until the next csv_split). */
const char *csv_field(const struct csv_fields *f, size_t i);

/* Splits one record p[0..n) (no trailing CRLF) into f.  -1 with a
 * lower-case reason in err (a quote inside an unquoted field, text after a
 * closing quote, an unterminated quote, a NUL byte). */
int csv_split(const char *p, size_t n, struct csv_fields *f, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif
