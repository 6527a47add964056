/* fuzz_csv.c: the CSV writer and reader of ledger exports (ledger/csv.h).
 *
 * Two modes on the first byte:
 *   - write (even): the rest cut at 0x01 into up to 64 fields (any bytes,
 *     NUL excepted, which a C-string field cannot carry); csv_put_field
 *     writes them joined by commas; then the record is complete
 *     (csv_record_complete), csv_split gives back exactly the same fields,
 *     and a field needed quotes only when it holds , " CR or LF;
 *   - read (odd): csv_split on arbitrary bytes either fails with a reason
 *     or gives fields that, written again, split again to the same fields. */
#include <string.h>

#include "common/buf.h"
#include "ledger/csv.h"
#include "tests/fuzz/fuzz.h"

static void rewrite_and_compare(const struct csv_fields *f)
{
	struct buf b;
	struct csv_fields g;
	char err[128];

	buf_init(&b);
	for (size_t i = 0; i < f->n; i++) {
		if (i)
			buf_append(&b, ",", 1);
		csv_put(&b, csv_field(f, i));
	}
	FUZZ_CHECK(csv_record_complete(b.data ? b.data : "", b.len));
	csv_fields_init(&g);
	FUZZ_CHECK(csv_split(b.data ? b.data : "", b.len, &g, err, sizeof(err)) == 0);
	FUZZ_CHECK(g.n == f->n);
	for (size_t i = 0; i < f->n; i++)
		FUZZ_CHECK(strcmp(csv_field(&g, i), csv_field(f, i)) == 0);
	csv_fields_release(&g);
	buf_release(&b);
}

static void write_mode(const uint8_t *data, size_t size)
{
	const char *fields[64];
	size_t lens[64], n = 0, start = 0;
	struct buf b;
	struct csv_fields f;
	char err[128];

	for (size_t i = 0; i <= size && n < 64; i++) {
		if (i == size || data[i] == 0x01) {
			fields[n] = (const char *)data + start;
			lens[n] = i - start;
			n++;
			start = i + 1;
		}
	}
	for (size_t k = 0; k < n; k++)
		if (memchr(fields[k], '\0', lens[k]))
			return;
	buf_init(&b);
	for (size_t k = 0; k < n; k++) {
		size_t before;
		int special = 0;
		if (k)
			buf_append(&b, ",", 1);
		before = b.len;
		csv_put_field(&b, fields[k], lens[k]);
		for (size_t i = 0; i < lens[k]; i++)
			special |= strchr(",\"\r\n", fields[k][i]) != NULL;
		if (special)
			FUZZ_CHECK(b.data[before] == '"' && b.data[b.len - 1] == '"');
		else
			FUZZ_CHECK(b.len - before == lens[k] && memcmp(b.data + before, fields[k], lens[k]) == 0);
	}
	FUZZ_CHECK(csv_record_complete(b.data ? b.data : "", b.len));
	csv_fields_init(&f);
	if (csv_split(b.data ? b.data : "", b.len, &f, err, sizeof(err)) != 0) {
		fprintf(stderr, "own record refused: %s\n", err);
		FUZZ_CHECK(0);
	}
	FUZZ_CHECK(f.n == n);
	for (size_t k = 0; k < n; k++) {
		FUZZ_CHECK(strlen(csv_field(&f, k)) == lens[k]);
		FUZZ_CHECK(memcmp(csv_field(&f, k), fields[k], lens[k]) == 0);
	}
	FUZZ_CHECK(csv_field(&f, n) == NULL);
	csv_fields_release(&f);
	buf_release(&b);
}

static void read_mode(const uint8_t *data, size_t size)
{
	struct csv_fields f;
	char err[128];

	(void)csv_record_complete((const char *)data, size);
	csv_fields_init(&f);
	err[0] = '\0';
	if (csv_split((const char *)data, size, &f, err, sizeof(err)) == 0) {
		FUZZ_CHECK(f.n >= 1);
		for (size_t i = 0; i < f.n; i++)
			FUZZ_CHECK(csv_field(&f, i) != NULL);
		rewrite_and_compare(&f);
	} else {
		FUZZ_CHECK(err[0] != '\0');
	}
	csv_fields_release(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		read_mode(data + 1, size - 1);
	else
		write_mode(data + 1, size - 1);
	return 0;
}
