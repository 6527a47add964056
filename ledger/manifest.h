/* manifest.h: the signed manifest of a ledger export (FILE.manifest.json),
 * its canonical bytes, and the Ed25519 keys that sign it.
 *
 * Canonical bytes (what the signature covers): the manifest object without
 * its "signature" member, serialized as JSON with object keys sorted by
 * their UTF-8 bytes, no whitespace at all, integers in plain decimal, and
 * strings with only these escapes: \" \\ \b \f \n \r \t, and \u00XX (lower-case
 * hex) for the other bytes below 0x20; every other byte (UTF-8 included) as
 * is.  That is exactly Python's
 *     json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
 * so an auditor can recompute it.  Real numbers are not allowed anywhere.
 *
 * "signature" = hex of the 64-byte detached Ed25519 signature of those bytes
 * made with the secret key whose public half is "public_key" (hex, 32 bytes).
 *
 * Key files (billing-admin keygen): FILE holds the hex of libsodium's 64-byte
 * secret key (seed || public key), FILE.pub the hex of the 32-byte public
 * key; surrounding white space is ignored. */
#ifndef LEDGER_MANIFEST_H
#define LEDGER_MANIFEST_H

#include <jansson.h>
#include <sodium.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"

#define MANIFEST_FORMAT "billing-ledger-export-manifest-1"

/* Appends the canonical bytes of m (an object; its "signature" member is
 * skipped) to out.  -1 with err when m holds a real number. */
int manifest_canonical(const json_t *m, struct buf *out, struct error *err) __attribute__((warn_unused_result));

/* Sets m's "public_key" to pk's hex, then "signature" over the canonical bytes. */
int manifest_sign(json_t *m, const uint8_t sk[crypto_sign_SECRETKEYBYTES], struct error *err)
	__attribute__((warn_unused_result));

/* Checks m's "signature" against its canonical bytes and its own
 * "public_key"; when trusted is not NULL, that key must also be the one in
 * m.  0 when it verifies, -1 with err (code bad_signature / untrusted_key /
 * bad_manifest) otherwise. */
int manifest_verify(const json_t *m, const uint8_t *trusted, struct error *err) __attribute__((warn_unused_result));

/* Reads a hex secret key file; pk (may be NULL) gets its public half. */
int manifest_load_secret_key(const char *path, uint8_t sk[crypto_sign_SECRETKEYBYTES],
			     uint8_t pk[crypto_sign_PUBLICKEYBYTES], struct error *err)
	__attribute__((warn_unused_result));
/* Reads a hex public key file.  -1 with err (code "not_found" when the file does not exist). */
int manifest_load_public_key(const char *path, uint8_t pk[crypto_sign_PUBLICKEYBYTES], struct error *err)
	__attribute__((warn_unused_result));

#endif
