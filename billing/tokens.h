/* tokens.h: bearer tokens from files (one per line, `#` comments), compared
 * in constant time.  Reloaded on SIGHUP; a failed reload keeps the old set. */
#ifndef BILLING_TOKENS_H
#define BILLING_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

struct tokens;

struct tokens *tokens_load(const char *path, struct error *err) __attribute__((warn_unused_result));
void tokens_free(struct tokens *t);
size_t tokens_count(const struct tokens *t);
/* Constant time in the token's content (BLAKE2b of each side, then sodium_memcmp). */
bool tokens_match(const struct tokens *t, const char *token, size_t len);

#endif
