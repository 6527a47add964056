/* buf.h: a growable byte buffer.  Allocation failure aborts the process
 * (an out-of-memory billing service must not half-write anything). */
#ifndef COMMON_BUF_H
#define COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	char *data; /* owned; always NUL-terminated after any append */
	size_t len, cap;
};

void buf_init(struct buf *b);
void buf_release(struct buf *b);
void buf_reset(struct buf *b);
void buf_append(struct buf *b, const void *p, size_t n);
/* Room for n more bytes now: one allocation for what is known to come
 * (the first append allocates 256 bytes, then doubles). */
void buf_reserve(struct buf *b, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_put_u32be(struct buf *b, uint32_t v);
void buf_put_i64be(struct buf *b, int64_t v);
/* Appends v in decimal, as printf's %" PRId64 " would (without printf). */
void buf_put_i64(struct buf *b, int64_t v);
/* The bytes of a decimal int64 and its NUL. */
#define BUF_I64_LEN 21
/* Writes v in decimal at out (BUF_I64_LEN bytes are enough), as printf's
 * %" PRId64 " would, and a NUL after it; returns the digits' length. */
size_t buf_fmt_i64(char *out, int64_t v);
/* Appends s as a PostgreSQL array element in double quotes, escaped. */
void buf_pg_array_text(struct buf *b, const char *s);
/* Appends the n bytes at s as a JSON string literal: quotes; the short
 * escapes \" \\ \b \f \n \r \t, other bytes below 0x20 as \u00XX, every
 * other byte as is (UTF-8 passes through).  These are the canonical bytes
 * of RFC 8785 and of Python's json.dumps(ensure_ascii=False), which signed
 * export manifests depend on (ledger/manifest.c): do not change them. */
void buf_json_strn(struct buf *b, const char *s, size_t n);
/* The same for a NUL-terminated s. */
void buf_json_str(struct buf *b, const char *s);
/* The same, but 0x08 and 0x0c as \u0008 and \u000c: the spelling of NDJSON
 * exports (ledger/export_file.c), which older verifiers re-emit byte for byte. */
void buf_json_str_u(struct buf *b, const char *s);
/* Appends n bytes of s, each maximal ill-formed subpart of UTF-8 replaced by
 * U+FFFD (Unicode 15, section 3.9, "U+FFFD Substitution of Maximal
 * Subparts", as browsers decode): the valid text around a bad byte stays. */
void buf_append_utf8(struct buf *b, const char *s, size_t n);
/* Appends n bytes as lower-case hex. */
void buf_hex(struct buf *b, const uint8_t *p, size_t n);

#endif
