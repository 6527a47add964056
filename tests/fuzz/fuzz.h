/* fuzz.h: what every libFuzzer target of tests/fuzz/ shares.
 *
 * A target is one file fuzz_NAME.c with LLVMFuzzerTestOneInput (and
 * optionally LLVMFuzzerInitialize); its seed corpus is corpus/NAME/.  A
 * target checks properties, not only "no crash": FUZZ_CHECK aborts with the
 * failed condition, which libFuzzer reports as a crash and saves the input.
 * Built with clang -fsanitize=fuzzer,address,undefined by mk/fuzz.mk. */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                              \
	do {                                                                                          \
		if (!(cond)) {                                                                        \
			fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                      \
		}                                                                                     \
	} while (0)

/* 2026-11-29T00:00:00Z: a fixed "now", so a run is reproducible. */
#define FUZZ_NOW_US 1795910400000000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* True when p[0..n) is well-formed UTF-8 (RFC 3629: no surrogates, no
 * overlong forms, nothing above U+10FFFF). */
static inline int fuzz_utf8_valid(const unsigned char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = p[i];
		size_t k;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			k = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			k = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			k = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		for (size_t j = 1; j <= k; j++) {
			if (i + j >= n || (p[i + j] & 0xC0) != 0x80)
				return 0;
			cp = cp << 6 | (p[i + j] & 0x3F);
		}
		if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += k + 1;
	}
	return 1;
}

#endif
