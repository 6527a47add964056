/* apikey.h: API keys are shown once and stored only as a keyed BLAKE2b-256
 * hash with a server-side pepper (key_pepper_file). */
#ifndef LEDGER_APIKEY_H
#define LEDGER_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "common/error.h"

#define APIKEY_PEPPER_BYTES 32
#define APIKEY_HASH_BYTES 32
#define APIKEY_LEN 51 /* "sk-" + 48 base64url characters */

/* Loads the pepper (64 hex characters); with create, makes the file (mode
 * 0600) with fresh random bytes if it does not exist.  0 or -1 with err. */
int apikey_load_pepper(const char *path, int create, uint8_t pepper[APIKEY_PEPPER_BYTES], struct error *err)
	__attribute__((warn_unused_result));
/* Writes a fresh key, NUL-terminated, into out (>= APIKEY_LEN + 1 bytes). */
void apikey_generate(char *out);
void apikey_hash(const uint8_t pepper[APIKEY_PEPPER_BYTES], const char *key, size_t len,
		 uint8_t out[APIKEY_HASH_BYTES]);
/* The one way a key is made (billingd's POST /v1/keys, `billing-admin key
 * create`): a fresh key for account_id (404 account_not_found when there is
 * none), stored as its hash, and its audit row (key.create by actor, the
 * name as reason), in one transaction of its own.  key_out (APIKEY_LEN + 1
 * bytes) gets the key, shown once; *key_id its id.  0, or -1 with err. */
int apikey_create(PGconn *c, const uint8_t pepper[APIKEY_PEPPER_BYTES], int64_t account_id, const char *name,
		  const char *actor, char *key_out, int64_t *key_id, struct error *err)
	__attribute__((warn_unused_result));

#endif
