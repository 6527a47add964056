/* pgarr.h: one-dimensional PostgreSQL arrays in the binary format of
 * array_send/array_recv, for statements that take whole columns as array
 * parameters ($1::bigint[] ...) sent with format 1 (binary).
 *
 * The server reads them with each element type's receive function (an
 * int8 is 8 bytes, a timestamptz 8 bytes of microseconds since 2000-01-01
 * UTC, text and bytea their bytes as they are): no array literal to quote
 * and parse, no decimal, hex or RFC 3339 text to write and read back.
 * The element type of the array must be the parameter's (the server
 * refuses another).  Allocation failure aborts (common/buf.h). */
#ifndef COMMON_PGARR_H
#define COMMON_PGARR_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* element types (pg_type.oid) */
enum { PGARR_BYTEA = 17, PGARR_INT8 = 20, PGARR_INT4 = 23, PGARR_TEXT = 25, PGARR_TIMESTAMPTZ = 1184 };

struct pgarr {
	struct buf b; /* header (20 bytes) then the elements */
	uint32_t elem;
	int32_t n;
	int nulls;
};

/* Starts an empty array of element type elem; pgarr_reset empties one
 * already started (keeping its memory) for another use. */
void pgarr_init(struct pgarr *a, uint32_t elem);
void pgarr_reset(struct pgarr *a, uint32_t elem);
void pgarr_release(struct pgarr *a);
void pgarr_null(struct pgarr *a);
void pgarr_i64(struct pgarr *a, int64_t v);
void pgarr_i32(struct pgarr *a, int32_t v);
/* text or bytea: n bytes as they are */
void pgarr_bytes(struct pgarr *a, const void *p, size_t n);
void pgarr_text(struct pgarr *a, const char *s);
/* a timestamptz given in microseconds since the Unix epoch */
void pgarr_ts(struct pgarr *a, int64_t unix_us);
/* Completes the header; the value to send and its length in *len.  The
 * pointer is valid until the next change or pgarr_release. */
const char *pgarr_finish(struct pgarr *a, int *len);

#endif
