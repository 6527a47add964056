/* test_db_int.c: db_int (ledger/db.h) reads an integer column's text as
 * strtoll does, for PostgreSQL's digits and for anything else. */
#include <inttypes.h>
#include <stdlib.h>

#include "ledger/db.h"
#include "tests/unit/tap.h"

int main(void)
{
	static const char *const cases[] = {
		"0",
		"7",
		"-7",
		"42",
		"1000",
		"-1",
		"123456789012345678",
		"-123456789012345678",
		"999999999999999999",
		"1234567890123456789",
		"9223372036854775807",
		"-9223372036854775808",
		"9223372036854775808",
		"-9223372036854775809",
		"99999999999999999999999",
		"",
		"-",
		"+5",
		" 5",
		"5 ",
		"12a",
		"0x1f",
		"007",
		"-0",
		"1.5",
	};
	int bad = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t want = strtoll(cases[i], NULL, 10), got = db_int(cases[i]);
		if (got != want) {
			bad++;
			printf("#   '%s': got %" PRId64 ", strtoll %" PRId64 "\n", cases[i], got, want);
		}
	}
	OK(bad == 0, "db_int gives strtoll's value for %zu texts", sizeof(cases) / sizeof(cases[0]));
	return tap_done();
}
