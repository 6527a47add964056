/* test_buf.c: the one JSON string writer (common/buf.h), whose bytes the
 * usage answers, journal details, exports and signed manifests share. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "tests/unit/tap.h"

static void json_is(const char *s, size_t n, const char *want, const char *name)
{
	struct buf b;

	buf_init(&b);
	buf_json_strn(&b, s, n);
	IS_STR(b.data, want, name);
	buf_release(&b);
}

static void test_json_escapes(void)
{
	json_is("plain", 5, "\"plain\"", "plain text is quoted as is");
	json_is("a\"b\\c", 5, "\"a\\\"b\\\\c\"", "a quote and a backslash get a backslash");
	json_is("\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\"", "the five control characters with a short escape use it");
	json_is("\x01\x1f", 2, "\"\\u0001\\u001f\"", "other control characters are \\u00XX, lower-case hex");
	json_is("\x7f/", 2, "\"\x7f/\"", "DEL and the slash pass as they are");
	json_is("\xc3\xa9\xe4\xb8\xad", 5, "\"\xc3\xa9\xe4\xb8\xad\"", "UTF-8 passes byte for byte");
	json_is("a\0b", 3, "\"a\\u0000b\"", "a NUL inside the length is escaped, not the end");
	json_is("", 0, "\"\"", "the empty string");
}

static void test_json_str_u_spells_bf_long(void)
{
	struct buf b;

	buf_init(&b);
	buf_json_str_u(&b, "a\b\f\n\"\x01");
	IS_STR(b.data, "\"a\\u0008\\u000c\\n\\\"\\u0001\"",
	       "exports' spelling: 0x08 and 0x0c long, the rest as buf_json_str");
	buf_release(&b);
}

static void test_json_str_is_strn(void)
{
	struct buf a, b;
	const char *s = "req-\b\x02\"\xc3\xa9";

	buf_init(&a);
	buf_init(&b);
	buf_json_str(&a, s);
	buf_json_strn(&b, s, strlen(s));
	OK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0, "buf_json_str writes what buf_json_strn writes");
	buf_release(&a);
	buf_release(&b);
}

/* the writers the usage writer calls per record give printf's bytes */
static void test_decimal_and_array_text(void)
{
	const int64_t v[] = {0, 1, -1, 9, 10, -10, 1234567890123LL, INT64_MAX, INT64_MIN, INT64_MIN + 1};
	struct buf b, want;
	char t[32];
	bool same = true;

	buf_init(&b);
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		buf_reset(&b);
		buf_put_i64(&b, v[i]);
		snprintf(t, sizeof(t), "%" PRId64, v[i]);
		IS_STR(b.data, t, "buf_put_i64 writes the decimal snprintf writes");
		{
			char f[BUF_I64_LEN];
			size_t n = buf_fmt_i64(f, v[i]);
			IS_STR(f, t, "buf_fmt_i64 writes the decimal snprintf writes");
			OK(n == strlen(t), "buf_fmt_i64 returns its length");
		}
	}
	buf_reset(&b);
	buf_pg_array_text(&b, "a\"b\\c\\\"");
	IS_STR(b.data, "\"a\\\"b\\\\c\\\\\\\"\"", "array text: each quote and backslash escaped, in place");
	buf_reset(&b);
	buf_pg_array_text(&b, "");
	IS_STR(b.data, "\"\"", "array text: the empty string");
	/* buf_printf formats in place when it fits and grows when it does not:
	 * the same bytes as one snprintf, across many sizes and boundaries */
	buf_reset(&b);
	buf_init(&want);
	for (int i = 0; i < 300; i++) {
		char big[600];
		memset(big, 'x', (size_t)i * 2);
		big[i * 2] = '\0';
		buf_printf(&b, "%d:%s;", i, big);
		snprintf(t, sizeof(t), "%d:", i);
		buf_puts(&want, t);
		buf_puts(&want, big);
		buf_puts(&want, ";");
		same = same && b.len == want.len && memcmp(b.data, want.data, b.len + 1) == 0;
	}
	OK(same, "buf_printf: 300 appends of 3 to 606 bytes give the concatenation");
	buf_release(&want);
	buf_release(&b);
}

static void utf8_is(const char *in, size_t n, const char *want, size_t wn, const char *what)
{
	struct buf b;

	buf_init(&b);
	buf_append_utf8(&b, in, n);
	OK(b.len == wn && memcmp(b.data, want, b.len) == 0, "%s", what);
	buf_release(&b);
}

/* in and want are string literals (they may hold NUL) */
#define UTF8_IS(in, want, what) utf8_is(in, sizeof(in) - 1, want, sizeof(want) - 1, what)
#define R "\xEF\xBF\xBD"

static void test_append_utf8_replaces_maximal_subparts(void)
{
	UTF8_IS("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z", "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z",
		"valid UTF-8 (2, 3 and 4 bytes) is copied");
	UTF8_IS("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64", "a" R R R "b" R "c" R R "d",
		"Unicode's table 3-8: one U+FFFD per maximal subpart, the letters around them kept");
	UTF8_IS("\xED\xA0\x80", R R R, "a surrogate: three");
	UTF8_IS("\xC0\xAF", R R, "an overlong slash: two");
	UTF8_IS("\xE0\x80\x80", R R R, "an overlong E0: three");
	UTF8_IS("\xF4\x90\x80\x80", R R R R, "beyond U+10FFFF: four");
	UTF8_IS("\xF5x\xFF", R "x" R, "bytes never in UTF-8");
	UTF8_IS("ok \xE2\x82", "ok " R, "a sequence cut at the end: one");
	UTF8_IS("a\0b", "a\0b", "NUL is kept");
}

/* the writer, one byte at a time (as it was before it appended runs) */
static void json_ref(struct buf *b, const unsigned char *s, size_t n)
{
	buf_append(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		char t[8];
		switch (s[i]) {
		case '"':
			buf_puts(b, "\\\"");
			break;
		case '\\':
			buf_puts(b, "\\\\");
			break;
		case '\b':
			buf_puts(b, "\\b");
			break;
		case '\f':
			buf_puts(b, "\\f");
			break;
		case '\n':
			buf_puts(b, "\\n");
			break;
		case '\r':
			buf_puts(b, "\\r");
			break;
		case '\t':
			buf_puts(b, "\\t");
			break;
		default:
			if (s[i] < 0x20) {
				snprintf(t, sizeof(t), "\\u%04x", s[i]);
				buf_puts(b, t);
			} else {
				buf_append(b, &s[i], 1);
			}
		}
	}
	buf_append(b, "\"", 1);
}

/* every byte value, alone, between plain runs, at either end, and runs of
 * escapes: the same bytes as the one-byte-at-a-time writer */
static void test_json_runs_as_bytes(void)
{
	unsigned char s[600];
	struct buf a, b;
	int bad = 0;

	for (int c = 0; c < 256; c++) {
		size_t shapes[][2] = {{0, 1}, {0, 5}, {4, 5}, {2, 5}, {0, 300}};
		for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
			size_t at = shapes[k][0], n = shapes[k][1];
			memset(s, 'x', n);
			s[at] = (unsigned char)c;
			if (n == 300)
				for (size_t i = 0; i < n; i += 7)
					s[i] = (unsigned char)(c + (int)i);
			buf_init(&a);
			buf_init(&b);
			buf_json_strn(&a, (const char *)s, n);
			json_ref(&b, s, n);
			bad += a.len != b.len || memcmp(a.data, b.data, a.len) != 0;
			buf_release(&a);
			buf_release(&b);
		}
	}
	OK(bad == 0, "runs appended whole: the bytes of the one-byte writer for every byte value and place (%d differ)",
	   bad);
}

int main(void)
{
	test_append_utf8_replaces_maximal_subparts();
	test_json_escapes();
	test_json_runs_as_bytes();
	test_json_str_is_strn();
	test_json_str_u_spells_bf_long();
	test_decimal_and_array_text();
	return tap_done();
}
