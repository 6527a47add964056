/* manifest.c: see manifest.h. */
#include "ledger/manifest.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonnum.h"

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int put_value(const json_t *v, struct buf *b, int top, struct error *err)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		size_t n = json_object_size(v), k = 0;
		const char **keys = calloc(n ? n : 1, sizeof(*keys));
		const char *key;
		json_t *val;
		int first = 1, rc = 0;

		if (!keys) {
			return error_set(err, 0, "oom", "out of memory");
		}
		json_object_foreach((json_t *)v, key, val) keys[k++] = key;
		qsort(keys, k, sizeof(*keys), cmp_keys); /* strcmp: unsigned bytes = code point order */
		buf_append(b, "{", 1);
		for (size_t i = 0; i < k && rc == 0; i++) {
			if (top && strcmp(keys[i], "signature") == 0)
				continue;
			if (!first)
				buf_append(b, ",", 1);
			first = 0;
			buf_json_strn(b, keys[i], strlen(keys[i]));
			buf_append(b, ":", 1);
			rc = put_value(json_object_get(v, keys[i]), b, 0, err);
		}
		buf_append(b, "}", 1);
		free(keys);
		return rc;
	}
	case JSON_ARRAY:
		buf_append(b, "[", 1);
		for (size_t i = 0; i < json_array_size(v); i++) {
			if (i)
				buf_append(b, ",", 1);
			if (put_value(json_array_get(v, i), b, 0, err) < 0)
				return -1;
		}
		buf_append(b, "]", 1);
		return 0;
	case JSON_STRING: {
		char digits[MONEY_TOTAL_BUF];
		if (jsonnum_is_big(v, digits, sizeof(digits))) /* a total beyond int64: an integer */
			buf_puts(b, digits);
		else
			buf_json_strn(b, json_string_value(v), json_string_length(v));
		return 0;
	}
	case JSON_INTEGER:
		buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return 0;
	case JSON_TRUE:
		buf_puts(b, "true");
		return 0;
	case JSON_FALSE:
		buf_puts(b, "false");
		return 0;
	case JSON_NULL:
		buf_puts(b, "null");
		return 0;
	case JSON_REAL:
	default:
		return error_set(err, 0, "bad_manifest", "the manifest holds a real number: only integers are allowed");
	}
}

int manifest_canonical(const json_t *m, struct buf *out, struct error *err)
{
	if (!json_is_object(m)) {
		return error_set(err, 0, "bad_manifest", "the manifest is not a JSON object");
	}
	return put_value(m, out, 1, err);
}

int manifest_sign(json_t *m, const uint8_t sk[crypto_sign_SECRETKEYBYTES], struct error *err)
{
	uint8_t pk[crypto_sign_PUBLICKEYBYTES], sig[crypto_sign_BYTES];
	char pkhex[2 * sizeof(pk) + 1], sighex[2 * sizeof(sig) + 1];
	struct buf b;
	int rc = -1;

	buf_init(&b);
	crypto_sign_ed25519_sk_to_pk(pk, sk);
	sodium_bin2hex(pkhex, sizeof(pkhex), pk, sizeof(pk));
	json_object_set_new(m, "public_key", json_string(pkhex));
	json_object_del(m, "signature");
	if (manifest_canonical(m, &b, err) < 0)
		goto done;
	crypto_sign_detached(sig, NULL, (const unsigned char *)b.data, b.len, sk);
	sodium_bin2hex(sighex, sizeof(sighex), sig, sizeof(sig));
	json_object_set_new(m, "signature", json_string(sighex));
	rc = 0;
done:
	buf_release(&b);
	return rc;
}

static int hex_field(const json_t *m, const char *name, uint8_t *out, size_t n, struct error *err)
{
	const char *s = json_string_value(json_object_get(m, name));
	size_t got = 0;

	if (!s || strlen(s) != 2 * n || sodium_hex2bin(out, n, s, 2 * n, NULL, &got, NULL) != 0 || got != n) {
		return error_set(err, 0, "bad_manifest", "manifest field '%s' must be %zu bytes of hex", name, n);
	}
	return 0;
}

int manifest_verify(const json_t *m, const uint8_t *trusted, struct error *err)
{
	uint8_t pk[crypto_sign_PUBLICKEYBYTES], sig[crypto_sign_BYTES];
	struct buf b;
	int rc = -1;

	buf_init(&b);
	if (hex_field(m, "public_key", pk, sizeof(pk), err) < 0 ||
	    hex_field(m, "signature", sig, sizeof(sig), err) < 0 || manifest_canonical(m, &b, err) < 0)
		goto done;
	if (crypto_sign_verify_detached(sig, (const unsigned char *)b.data, b.len, pk) != 0) {
		error_set(err, 0, "bad_signature", "the manifest's signature does not verify with its public key");
		goto done;
	}
	if (trusted && sodium_memcmp(trusted, pk, sizeof(pk)) != 0) {
		char a[2 * sizeof(pk) + 1], t[2 * sizeof(pk) + 1];
		sodium_bin2hex(a, sizeof(a), pk, sizeof(pk));
		sodium_bin2hex(t, sizeof(t), trusted, sizeof(pk));
		error_set(err, 0, "untrusted_key", "the manifest is signed by key %s, not by the trusted key %s", a, t);
		goto done;
	}
	rc = 0;
done:
	buf_release(&b);
	return rc;
}

/* Reads a small file of hex (white space around it ignored) into out[n]. */
static int load_hex(const char *path, uint8_t *out, size_t n, const char *what, struct error *err)
{
	char text[512];
	size_t len, got = 0, s = 0;
	FILE *f = fopen(path, "rb");

	if (!f) {
		return error_set(err, 0, errno == ENOENT ? "not_found" : "io", "cannot open %s '%s': %s", what, path,
				 strerror(errno));
	}
	len = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[len] = '\0';
	while (s < len && isspace((unsigned char)text[s]))
		s++;
	while (len > s && isspace((unsigned char)text[len - 1]))
		len--;
	text[len] = '\0';
	if (len - s != 2 * n || sodium_hex2bin(out, n, text + s, len - s, NULL, &got, NULL) != 0 || got != n) {
		sodium_memzero(text, sizeof(text));
		return error_set(err, 0, "bad_key", "%s '%s' is not %zu bytes of hex", what, path, n);
	}
	sodium_memzero(text, sizeof(text));
	return 0;
}

int manifest_load_secret_key(const char *path, uint8_t sk[crypto_sign_SECRETKEYBYTES],
			     uint8_t pk[crypto_sign_PUBLICKEYBYTES], struct error *err)
{
	uint8_t derived[crypto_sign_PUBLICKEYBYTES], seed[crypto_sign_SEEDBYTES], check_pk[crypto_sign_PUBLICKEYBYTES],
		check_sk[crypto_sign_SECRETKEYBYTES];

	if (load_hex(path, sk, crypto_sign_SECRETKEYBYTES, "signing key", err) < 0)
		return -1;
	/* the public half stored in the key must be the one its seed makes */
	crypto_sign_ed25519_sk_to_seed(seed, sk);
	crypto_sign_seed_keypair(check_pk, check_sk, seed);
	crypto_sign_ed25519_sk_to_pk(derived, sk);
	sodium_memzero(seed, sizeof(seed));
	sodium_memzero(check_sk, sizeof(check_sk));
	if (sodium_memcmp(derived, check_pk, sizeof(derived)) != 0) {
		sodium_memzero(sk, crypto_sign_SECRETKEYBYTES);
		return error_set(err, 0, "bad_key", "signing key '%s' is inconsistent (its public half does not match)",
				 path);
	}
	if (pk)
		memcpy(pk, derived, sizeof(derived));
	return 0;
}

int manifest_load_public_key(const char *path, uint8_t pk[crypto_sign_PUBLICKEYBYTES], struct error *err)
{
	return load_hex(path, pk, crypto_sign_PUBLICKEYBYTES, "public key", err);
}
