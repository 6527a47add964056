/* tokens.h: bearer tokens from files, compared in constant time
 * (CONTRACT.md §1).  A token file is read whole: blank lines (empty or only
 * spaces and tabs) and comment lines (first non-blank byte `#`) are
 * skipped; every other line is one token of TOKENS_MIN..TOKENS_MAX bytes of
 * printable ASCII without spaces (0x21..0x7e).  A line ending may be LF or
 * CRLF.  A line outside those rules refuses the whole file, with an error
 * naming the line (never its content: it may be a secret).  Lines are never
 * split, whatever their length.  Reloaded on SIGHUP by the server, which
 * keeps the old set when a file is refused or holds no token. */
#ifndef BILLING_TOKENS_H
#define BILLING_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define TOKENS_MIN 16
#define TOKENS_MAX 4096
/* a bigger file is refused (a million tokens of 16 bytes fit) */
#define TOKENS_FILE_MAX (64u * 1024 * 1024)

struct tokens;

/* The file at path, or NULL with err (code "config"). */
struct tokens *tokens_load(const char *path, struct error *err) __attribute__((warn_unused_result));
/* The same rules on text[0..len) (any bytes; a NUL is refused like any
 * other byte outside the rules).  name is used in messages. */
struct tokens *tokens_parse(const char *name, const char *text, size_t len, struct error *err)
	__attribute__((warn_unused_result));
void tokens_free(struct tokens *t);
size_t tokens_count(const struct tokens *t);
#define TOKENS_HASH_LEN 32

/* Constant time in the token's content (BLAKE2b of each side, then sodium_memcmp). */
bool tokens_match(const struct tokens *t, const char *token, size_t len);
/* The same in two steps, for a token checked against several sets: its
 * BLAKE2b once (tokens_hash), then each set (tokens_match_hash: constant
 * time, every token of the set compared). */
void tokens_hash(const char *token, size_t len, uint8_t out[TOKENS_HASH_LEN]);
bool tokens_match_hash(const struct tokens *t, const uint8_t h[TOKENS_HASH_LEN]);

#endif
