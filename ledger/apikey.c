/* apikey.c: see apikey.h. */
#include "ledger/apikey.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger/db.h"
#include "ledger/ops.h"

int apikey_load_pepper(const char *path, int create, uint8_t pepper[APIKEY_PEPPER_BYTES], struct error *err)
{
	char hex[2 * APIKEY_PEPPER_BYTES + 2];
	size_t got = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0 && errno == ENOENT && create) {
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (fd >= 0) {
			randombytes_buf(pepper, APIKEY_PEPPER_BYTES);
			sodium_bin2hex(hex, sizeof(hex), pepper, APIKEY_PEPPER_BYTES);
			hex[2 * APIKEY_PEPPER_BYTES] = '\n';
			n = write(fd, hex, 2 * APIKEY_PEPPER_BYTES + 1);
			if (n != 2 * APIKEY_PEPPER_BYTES + 1 || fsync(fd) != 0) {
				close(fd);
				return error_set(err, 0, "pepper", "cannot write key pepper '%s': %s", path,
						 strerror(errno));
			}
			close(fd);
		}
		fd = open(path, O_RDONLY);
	}
	if (fd < 0) {
		char cwd[1024] = "";
		const char *slash = strrchr(path, '/');
		int e = errno;
		if (path[0] != '/' && !getcwd(cwd, sizeof(cwd)))
			cwd[0] = '\0';
		if (e == ENOENT && create && slash)
			error_set(err, 0, "pepper",
				  "cannot create key pepper '%s'%s%s%s: its folder '%.*s' does not exist (create it,"
				  " or set key_pepper_file to a path in an existing folder)",
				  path, cwd[0] ? " (relative to " : "", cwd, cwd[0] ? ")" : "", (int)(slash - path),
				  path);
		else
			error_set(err, 0, "pepper", "cannot open key pepper '%s'%s%s%s: %s", path,
				  cwd[0] ? " (relative to " : "", cwd, cwd[0] ? ")" : "", strerror(e));
		return -1;
	}
	n = read(fd, hex, sizeof(hex) - 1);
	close(fd);
	if (n < 2 * APIKEY_PEPPER_BYTES ||
	    sodium_hex2bin(pepper, APIKEY_PEPPER_BYTES, hex, 2 * APIKEY_PEPPER_BYTES, NULL, &got, NULL) != 0 ||
	    got != APIKEY_PEPPER_BYTES) {
		return error_set(err, 0, "pepper", "key pepper '%s' must hold 64 hex characters", path);
	}
	return 0;
}

void apikey_generate(char *out)
{
	uint8_t r[36];

	randombytes_buf(r, sizeof(r));
	memcpy(out, "sk-", 3);
	sodium_bin2base64(out + 3, APIKEY_LEN - 3 + 1, r, sizeof(r), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	out[APIKEY_LEN] = '\0';
}

void apikey_hash(const uint8_t pepper[APIKEY_PEPPER_BYTES], const char *key, size_t len, uint8_t out[APIKEY_HASH_BYTES])
{
	crypto_generichash(out, APIKEY_HASH_BYTES, (const unsigned char *)key, len, pepper, APIKEY_PEPPER_BYTES);
}

struct key_tx {
	PGconn *c;
	int64_t account_id;
	const char *name, *actor, *hash_hex;
	int64_t key_id;
};

static int key_tx(void *arg, struct error *err)
{
	struct key_tx *k = arg;
	struct ops_account a;
	char acct[32];
	const char *p[3] = {acct, k->name, k->hash_hex};
	PGresult *r;

	if (ops_account_get(k->c, k->account_id, &a, err) < 0)
		return -1;
	snprintf(acct, sizeof(acct), "%" PRId64, k->account_id);
	r = db_query(
		k->c,
		"INSERT INTO api_keys (account_id, name, key_hash) VALUES ($1, $2, decode($3, 'hex')) RETURNING key_id",
		3, p, err);
	if (!r)
		return -1;
	k->key_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	/* the key and its audit row commit together */
	if (ops_audit(k->c, k->actor, "key.create", PQgetvalue(r, 0, 0), k->name, "{}", err) < 0) {
		PQclear(r);
		return -1;
	}
	PQclear(r);
	return 0;
}

int apikey_create(PGconn *c, const uint8_t pepper[APIKEY_PEPPER_BYTES], int64_t account_id, const char *name,
		  const char *actor, char *key_out, int64_t *key_id, struct error *err)
{
	uint8_t h[APIKEY_HASH_BYTES];
	char hex[2 * APIKEY_HASH_BYTES + 1];
	struct key_tx k = {c, account_id, name ? name : "", actor, hex, 0};

	apikey_generate(key_out);
	apikey_hash(pepper, key_out, strlen(key_out), h);
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	if (ops_in_tx(c, key_tx, &k, err) < 0) {
		sodium_memzero(key_out, APIKEY_LEN + 1);
		return -1;
	}
	*key_id = k.key_id;
	return 0;
}
