/* test_export.c: the pure parts of ledger exports: CSV fields written and
 * read back (ledger/csv.h), the manifest's canonical bytes and signatures
 * (ledger/manifest.h).  The streaming export and its verifier are covered
 * end to end by tests/integration/test_finance.py. */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger/csv.h"
#include "ledger/manifest.h"
#include "tests/unit/tap.h"

static void test_csv_write(void)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"plain", "plain"},
		{"", ""},
		{"a,b", "\"a,b\""},
		{"say \"hi\"", "\"say \"\"hi\"\"\""},
		{"two\r\nlines", "\"two\r\nlines\""},
		{"{\"k\":1}", "\"{\"\"k\"\":1}\""},
		{"ünïcødé 中文", "ünïcødé 中文"},
		{" spaces ", " spaces "},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b;
		buf_init(&b);
		csv_put(&b, cases[i].in);
		IS_STR(b.data ? b.data : "", cases[i].out, cases[i].in);
		buf_release(&b);
	}
}

static void test_csv_roundtrip(void)
{
	const char *fields[] = {"1", "", "a,b", "q\"uote", "multi\nline", "\"\"", "last"};
	size_t n = sizeof(fields) / sizeof(fields[0]);
	struct buf b;
	struct csv_fields f;
	char err[128];

	buf_init(&b);
	csv_fields_init(&f);
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_append(&b, ",", 1);
		csv_put(&b, fields[i]);
	}
	OK(csv_record_complete(b.data, b.len), "a written record is complete");
	OK(!csv_record_complete(b.data, 5), "a record cut inside quotes is not");
	OK(csv_split(b.data, b.len, &f, err, sizeof(err)) == 0, "split %s", err);
	IS_I64(f.n, n, "field count");
	for (size_t i = 0; i < n && i < f.n; i++)
		IS_STR(csv_field(&f, i), fields[i], "field back");
	IS_STR(csv_field(&f, n), NULL, "past the end");
	csv_fields_release(&f);
	buf_release(&b);
}

static void test_csv_errors(void)
{
	static const char *bad[] = {"a\"b", "\"open", "\"closed\"x", "x,\"y\"\"", "a\nb", "a\rb"};
	struct csv_fields f;
	char err[128];

	csv_fields_init(&f);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		OK(csv_split(bad[i], strlen(bad[i]), &f, err, sizeof(err)) < 0 && err[0], "refused %zu: %s", i, err);
	}
	OK(csv_split("", 0, &f, err, sizeof(err)) == 0 && f.n == 1 && !*csv_field(&f, 0),
	   "empty record: one empty field");
	OK(csv_split(",", 1, &f, err, sizeof(err)) == 0 && f.n == 2, "one comma: two fields");
	csv_fields_release(&f);
}

static void test_canonical(void)
{
	/* the bytes Python's json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False) gives */
	const char *want = "{\"Z\":1,\"a\":\"x\\ny\\u0001\\\"\\\\\xc3\xa9\\t\\b\\f\\r/\",\"b\":1,"
			   "\"c\":[true,false,null,-5],\"d\":{\"y\":2,\"z\":1},\"\xc3\xa9\":0}";
	json_t *m =
		json_pack("{s:i,s:s,s:[b,b,n,i],s:s,s:{s:i,s:i},s:i,s:i}", "b", 1, "a", "x\ny\x01\"\\\xc3\xa9\t\b\f\r/",
			  "c", 1, 0, -5, "signature", "zz", "d", "z", 1, "y", 2, "\xc3\xa9", 0, "Z", 1);
	struct buf b;
	struct error err;

	buf_init(&b);
	OK(m && manifest_canonical(m, &b, &err) == 0, "canonical");
	IS_STR(b.data, want, "canonical bytes = Python's sorted compact JSON, signature left out");
	buf_reset(&b);
	json_object_set_new(m, "real", json_real(1.5));
	OK(manifest_canonical(m, &b, &err) < 0 && strcmp(err.code, "bad_manifest") == 0, "a real number is refused");
	buf_release(&b);
	json_decref(m);
}

static void test_sign_verify(void)
{
	uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES], pk2[crypto_sign_PUBLICKEYBYTES],
		sk2[crypto_sign_SECRETKEYBYTES], loaded_sk[crypto_sign_SECRETKEYBYTES],
		loaded_pk[crypto_sign_PUBLICKEYBYTES];
	char dir[] = "/tmp/test_export_XXXXXX", path[128], hex[2 * crypto_sign_SECRETKEYBYTES + 1];
	json_t *m =
		json_pack("{s:s,s:I,s:{s:s}}", "format", MANIFEST_FORMAT, "rows", (json_int_t)3, "range", "from", "x");
	struct error err;
	FILE *f;

	crypto_sign_keypair(pk, sk);
	crypto_sign_keypair(pk2, sk2);
	OK(manifest_sign(m, sk, &err) == 0, "sign");
	OK(json_string_value(json_object_get(m, "signature")) &&
		   strlen(json_string_value(json_object_get(m, "signature"))) == 128,
	   "a 64-byte signature in hex");
	OK(manifest_verify(m, NULL, &err) == 0, "verifies with its own key");
	OK(manifest_verify(m, pk, &err) == 0, "verifies with the trusted key");
	OK(manifest_verify(m, pk2, &err) < 0 && strcmp(err.code, "untrusted_key") == 0, "another trusted key: refused");
	json_object_set_new(m, "rows", json_integer(4));
	OK(manifest_verify(m, NULL, &err) < 0 && strcmp(err.code, "bad_signature") == 0, "a changed value: refused");
	json_object_set_new(m, "rows", json_integer(3));
	OK(manifest_verify(m, NULL, &err) == 0, "changed back: verifies again");
	json_object_set_new(m, "extra", json_string("x"));
	OK(manifest_verify(m, NULL, &err) < 0, "an added member: refused");
	json_object_del(m, "extra");
	json_object_set_new(m, "signature", json_string("zz"));
	OK(manifest_verify(m, NULL, &err) < 0 && strcmp(err.code, "bad_manifest") == 0, "a malformed signature");
	json_decref(m);

	/* key files as billing-admin keygen writes them */
	OK(mkdtemp(dir) != NULL, "temp dir");
	snprintf(path, sizeof(path), "%s/k", dir);
	f = fopen(path, "w");
	sodium_bin2hex(hex, sizeof(hex), sk, sizeof(sk));
	fprintf(f, "%s\n", hex);
	fclose(f);
	OK(manifest_load_secret_key(path, loaded_sk, loaded_pk, &err) == 0 && memcmp(loaded_pk, pk, sizeof(pk)) == 0 &&
		   memcmp(loaded_sk, sk, sizeof(sk)) == 0,
	   "secret key file read, public half derived");
	f = fopen(path, "w");
	hex[10] = hex[10] == 'a' ? 'b' : 'a';
	fprintf(f, "%s\n", hex + 64); /* half a key */
	fclose(f);
	OK(manifest_load_secret_key(path, loaded_sk, NULL, &err) < 0 && strcmp(err.code, "bad_key") == 0, "short key");
	unlink(path);
	snprintf(path, sizeof(path), "%s/k.pub", dir);
	OK(manifest_load_public_key(path, loaded_pk, &err) < 0 && strcmp(err.code, "not_found") == 0,
	   "a missing public key is not_found");
	f = fopen(path, "w");
	sodium_bin2hex(hex, sizeof(hex), pk, sizeof(pk));
	fprintf(f, "  %s\n\n", hex);
	fclose(f);
	OK(manifest_load_public_key(path, loaded_pk, &err) == 0 && memcmp(loaded_pk, pk, sizeof(pk)) == 0,
	   "public key file read (white space ignored)");
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	test_csv_write();
	test_csv_roundtrip();
	test_csv_errors();
	test_canonical();
	test_sign_verify();
	return tap_done();
}
