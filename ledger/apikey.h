/* apikey.h: API keys are shown once and stored only as a keyed BLAKE2b-256
 * hash with a server-side pepper (key_pepper_file). */
#ifndef LEDGER_APIKEY_H
#define LEDGER_APIKEY_H

#include <stddef.h>
#include <stdint.h>

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

#endif
