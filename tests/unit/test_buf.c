/* test_buf.c: the one JSON string writer (common/buf.h), whose bytes the
 * usage answers, journal details, exports and signed manifests share. */
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

int main(void)
{
	test_json_escapes();
	test_json_str_is_strn();
	return tap_done();
}
