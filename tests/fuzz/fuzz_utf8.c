/* fuzz_utf8.c: buf_append_utf8() (common/buf.h), how chat text the model
 * emits becomes valid UTF-8.
 *
 * Properties: the output is well-formed UTF-8 (fuzz_utf8_valid); valid input
 * comes out unchanged; and the output equals an independent reference of
 * Unicode's "U+FFFD Substitution of Maximal Subparts": at each position
 * either one well-formed code point is copied, or the longest prefix that
 * some well-formed sequence could still begin with (at least one byte) is
 * replaced by one U+FFFD.  Whether a prefix can still be completed is found
 * by trying completions, not by the byte ranges the code under test uses. */
#include <string.h>

#include "common/buf.h"
#include "tests/fuzz/fuzz.h"

/* True when p[0..m) is the beginning of some well-formed sequence of at
 * most 4 bytes: every completion from bytes that sit at the edges of the
 * continuation ranges is tried. */
static int viable(const unsigned char *p, size_t m)
{
	static const unsigned char edge[] = {0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF};
	unsigned char t[4];

	if (fuzz_utf8_valid(p, m))
		return 1;
	if (m >= 4)
		return 0;
	memcpy(t, p, m);
	for (size_t e = 0; e < sizeof(edge); e++) {
		t[m] = edge[e];
		if (viable(t, m + 1))
			return 1;
	}
	return 0;
}

static void reference(const unsigned char *p, size_t n, struct buf *out)
{
	size_t i = 0;

	while (i < n) {
		size_t len = 0, m = 0;

		for (size_t l = 1; l <= 4 && i + l <= n; l++)
			if (fuzz_utf8_valid(p + i, l) && (l == 1 || !fuzz_utf8_valid(p + i, 1)))
				len = l;
		if (len) {
			buf_append(out, p + i, len);
			i += len;
			continue;
		}
		for (size_t l = 1; l <= 3 && i + l <= n; l++)
			if (viable(p + i, l))
				m = l;
		buf_append(out, "\xEF\xBF\xBD", 3);
		i += m ? m : 1;
	}
}

static int same(const void *a, size_t an, const void *b, size_t bn)
{
	return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf got, want;

	buf_init(&got);
	buf_init(&want);
	buf_append_utf8(&got, (const char *)data, size);
	reference(data, size, &want);
	FUZZ_CHECK(fuzz_utf8_valid((const unsigned char *)got.data, got.len));
	if (fuzz_utf8_valid(data, size))
		FUZZ_CHECK(same(got.data, got.len, data, size));
	FUZZ_CHECK(same(got.data, got.len, want.data, want.len));
	buf_release(&got);
	buf_release(&want);
	return 0;
}
