/* tap.h: a tiny TAP harness for the unit tests, and the helpers they share.
 *
 * Each check prints "ok N - name" or "not ok N - name"; tap_done() prints
 * the plan and a summary line and returns the process exit code. */
#ifndef TESTS_TAP_H
#define TESTS_TAP_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define UNIT 1000000000LL /* one currency unit in nanos */

static int tap_n, tap_failed;

static inline void tap_ok(int cond, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#include <stdarg.h>
static inline void tap_ok(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!cond) {
		tap_failed++;
		printf("#   failed at %s:%d\n", file, line);
	}
}

#define OK(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define IS_I64(got, want, name)                                                    \
	do {                                                                       \
		int64_t g_ = (int64_t)(got), w_ = (int64_t)(want);                 \
		tap_ok(g_ == w_, __FILE__, __LINE__, "%s", name);                  \
		if (g_ != w_)                                                      \
			printf("#   got %" PRId64 ", want %" PRId64 "\n", g_, w_); \
	} while (0)
#define IS_STR(got, want, name)                                                                      \
	do {                                                                                         \
		const char *g_ = (got), *w_ = (want);                                                \
		int eq_ = (g_ && w_) ? strcmp(g_, w_) == 0 : g_ == w_;                               \
		tap_ok(eq_, __FILE__, __LINE__, "%s", name);                                         \
		if (!eq_)                                                                            \
			printf("#   got '%s', want '%s'\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
	} while (0)

static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	printf("%d passed, %d failed\n", tap_n - tap_failed, tap_failed);
	return tap_failed ? 1 : 0;
}

#endif
