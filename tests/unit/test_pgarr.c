/* test_pgarr.c: binary array parameters (common/pgarr.h) byte for byte as
 * PostgreSQL's array_send writes them (the server reads them with
 * array_recv; the integration suites write every usage record this way). */
#include <inttypes.h>
#include <string.h>

#include "common/pgarr.h"
#include "tests/unit/tap.h"

static int same(const char *got, int len, const unsigned char *want, int wlen)
{
	return len == wlen && memcmp(got, want, (size_t)wlen) == 0;
}

static void arrays_are_array_send_bytes(void)
{
	struct pgarr a;
	int len = 0;
	const char *v;
	/* SELECT array_send(ARRAY[1, NULL, -2]::bigint[]) */
	static const unsigned char i8[] = {0, 0, 0, 1, 0,    0,    0,    1,    0,    0,    0,    20,
					   0, 0, 0, 3, 0,    0,    0,    1,    0,    0,    0,    8,
					   0, 0, 0, 0, 0,    0,    0,    1,    0xff, 0xff, 0xff, 0xff,
					   0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
	/* SELECT array_send(ARRAY['ab', '']::text[]) */
	static const unsigned char tx[] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0,   0,   25, 0, 0, 0,
					   2, 0, 0, 0, 1, 0, 0, 0, 2, 'a', 'b', 0,  0, 0, 0};
	/* SELECT array_send(ARRAY[40000, -1]::integer[]) */
	static const unsigned char i4[] = {0, 0, 0, 1, 0, 0, 0, 0, 0,    0,    0, 23, 0, 0, 0,    2,    0,    0,
					   0, 1, 0, 0, 0, 4, 0, 0, 0x9c, 0x40, 0, 0,  0, 4, 0xff, 0xff, 0xff, 0xff};
	/* SELECT array_send(ARRAY['2000-01-01T00:00:01Z', '1970-01-01T00:00:00Z']::timestamptz[]) */
	static const unsigned char ts[] = {0,    0,    0, 1, 0, 0, 0,    0,    0,    0,    4,    0xa0, 0,    0,   0,
					   2,    0,    0, 0, 1, 0, 0,    0,    8,    0,    0,    0,    0,    0,   0x0f,
					   0x42, 0x40, 0, 0, 0, 8, 0xff, 0xfc, 0xa2, 0xfe, 0xc4, 0xc8, 0x20, 0x00};
	/* SELECT array_send('{}'::bytea[]) */
	static const unsigned char empty[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17};

	pgarr_init(&a, PGARR_INT8);
	pgarr_i64(&a, 1);
	pgarr_null(&a);
	pgarr_i64(&a, -2);
	v = pgarr_finish(&a, &len);
	OK(same(v, len, i8, sizeof(i8)), "bigint[] with a NULL: array_send's bytes");
	pgarr_reset(&a, PGARR_TEXT);
	pgarr_text(&a, "ab");
	pgarr_text(&a, "");
	v = pgarr_finish(&a, &len);
	OK(same(v, len, tx, sizeof(tx)), "text[] after a reset: no NULL flag, lengths then bytes");
	pgarr_reset(&a, PGARR_INT4);
	pgarr_i32(&a, 40000);
	pgarr_i32(&a, -1);
	v = pgarr_finish(&a, &len);
	OK(same(v, len, i4, sizeof(i4)), "integer[]: beyond smallint, and negative");
	pgarr_reset(&a, PGARR_TIMESTAMPTZ);
	pgarr_ts(&a, INT64_C(946684801000000));
	pgarr_ts(&a, 0);
	v = pgarr_finish(&a, &len);
	OK(same(v, len, ts, sizeof(ts)), "timestamptz[]: microseconds since 2000-01-01 UTC");
	pgarr_reset(&a, PGARR_BYTEA);
	v = pgarr_finish(&a, &len);
	OK(same(v, len, empty, sizeof(empty)), "an empty array: no dimension, 12 bytes");
	pgarr_release(&a);
}

int main(void)
{
	arrays_are_array_send_bytes();
	return tap_done();
}
