/* test_rkeys.c: common/rkeys.h, the Redis keys of an account.  rkey writes
 * them without printf (every authorize formats four); these are the bytes
 * snprintf wrote before, for every key and for ids at the edges. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/rkeys.h"
#include "tests/unit/tap.h"

int main(void)
{
	const int64_t ids[] = {1, 7, 10, 42, 999, 1000, 123456789, INT64_MAX, 0, -1, INT64_MIN};

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		for (int k = 0; k < RKEY_N; k++) {
			char got[RKEY_BUF], want[RKEY_BUF];
			size_t n = rkey(got, sizeof(got), ids[i], (enum rkey)k);
			snprintf(want, sizeof(want), "{a:%" PRId64 "}:%s", ids[i], rkey_suffix((enum rkey)k));
			IS_STR(got, want, "rkey writes the bytes snprintf writes");
			OK(n == strlen(want), "rkey returns the key's length (%s)", want);
		}
	{
		/* a buffer shorter than RKEY_BUF: cut short, as snprintf cuts */
		char got[8];
		(void)rkey(got, sizeof(got), 123456, RKEY_HOLD);
		IS_STR(got, "{a:1234", "a short buffer gets snprintf's bytes");
	}
	return tap_done();
}
