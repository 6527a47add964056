/* model.h: the embedded model `internal-tiny`, a tiny Llama-architecture
 * decoder evaluated on the CPU in plain C.
 *
 * Architecture: token embedding (hashed, so every id of the full DeepSeek-V3
 * vocabulary has one), N layers of [RMSNorm, multi-head self-attention with
 * RoPE and a KV cache, residual, RMSNorm, SwiGLU MLP, residual], final
 * RMSNorm, output projection over a short list of allowed token ids (clean
 * printable text plus end-of-sentence).  The weights are random numbers from
 * a fixed seed written by tools/mkweights; the file format is described in
 * docs/model.md, "The `internal-tiny` weight file".
 *
 * Determinism: all arithmetic is float32 (sums in a fixed order, no fused
 * multiply-add, no libm transcendental: exp, sin and cos are our own), one
 * thread per forward pass, so the same build gives the same bits for the same
 * input at every optimisation level and on every x86-64 CPU.
 *
 * Ownership and threads:
 * - A `struct model` is read-only once model_load() returns; any number of
 *   threads may use it at once (model_session_new, the accessors) as long as
 *   none calls model_free() meanwhile.  The caller owns it and frees it after
 *   every session made from it.
 * - A `struct model_session` holds the per-generation state (KV cache,
 *   scratch buffers, sampler, last error).  It belongs to one thread at a
 *   time; reuse it for any number of model_generate() calls one after the
 *   other (each starts from an empty cache).  It borrows its model.
 */
#ifndef BILLING_MODEL_H
#define BILLING_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define MODEL_NAME "internal-tiny"

/* Weight file format (docs/model.md, "The `internal-tiny` weight file"); shared with tools/mkweights. */
#define MODEL_FILE_MAGIC "ITNYMDL\0" /* 8 bytes */
#define MODEL_FILE_VERSION 1u
#define MODEL_FILE_HEADER_SIZE 128u
#define MODEL_FILE_DIGEST_SIZE 32u /* BLAKE2b-256 of everything before it */

struct model;
struct model_session;

/* temperature 0: greedy (argmax, ties to the lowest token id); seed and top_p
 * are ignored.  temperature > 0: logits / temperature, softmax, then nucleus
 * (top_p) sampling from a PRNG seeded by `seed`: the smallest set of the most
 * probable ids (ties by lower id) whose probability reaches top_p; it always
 * holds at least one id, so top_p <= 0 picks the most probable id and
 * top_p >= 1 samples from all.  Negative, infinite or NaN temperature and
 * NaN top_p are errors. */
struct model_sampling {
	float temperature;
	float top_p;
	uint64_t seed;
};

/* model_generate() return values besides -1 (error). */
#define MODEL_DONE 0    /* end-of-sentence, max_tokens, or the context is full */
#define MODEL_STOPPED 1 /* on_token returned non-zero */

/* Reads and checks a weight file (size, header, BLAKE2b-256 digest, shape,
 * allowed ids).  Returns a new model, or NULL with err (may be NULL) filled: code
 * bad_model, a lower-case reason (e.g. `"data/internal-tiny.bin": checksum mismatch (corrupted file)`). */
struct model *model_load(const char *path, struct error *err) __attribute__((warn_unused_result));

/* Frees the model; NULL is fine.  No session made from it may be used after. */
void model_free(struct model *m);

/* "internal-tiny" (from the file header); valid while the model lives. */
const char *model_name(const struct model *m);

/* The end-of-sentence id (<｜end▁of▁sentence｜>, 1 for DeepSeek-V3). */
int32_t model_eos_id(const struct model *m);

/* Input ids accepted are 0 .. model_vocab_size()-1 (the full tokenizer). */
size_t model_vocab_size(const struct model *m);

/* The longest sequence (prompt + generated) a session can hold. */
size_t model_max_ctx(const struct model *m);

/* The ids the model can generate, in increasing order (end-of-sentence
 * among them); borrowed, valid while the model lives. */
const int32_t *model_output_ids(const struct model *m, size_t *n);

/* 1 if id is one of model_output_ids(), else 0. */
int model_is_output_id(const struct model *m, int32_t id);

/* A session for sequences of up to max_ctx tokens (0 or more than
 * model_max_ctx(): model_max_ctx()).  NULL when out of memory.  Its memory is
 * about 2 * layers * max_ctx * dim floats (2 MiB at 512 tokens). */
struct model_session *model_session_new(const struct model *m, size_t max_ctx) __attribute__((warn_unused_result));

/* Frees the session; NULL is fine. */
void model_session_free(struct model_session *s);

/* The context length of this session. */
size_t model_session_max_ctx(const struct model_session *s);

/* Generates a continuation of prompt (ids, each < model_vocab_size()).
 *
 * Runs the prompt through the model (prefill), then produces up to
 * max_tokens ids, calling on_token(arg, id) synchronously, on the calling
 * thread, once per id as soon as it is chosen.  The end-of-sentence id, when
 * chosen, is passed to on_token like any other id (it counts as a generated
 * token) and ends the generation.  If on_token returns non-zero, generation
 * stops at once and MODEL_STOPPED is returned.  on_token may be NULL.
 *
 * The whole sequence must fit the session's context: a prompt of
 * model_session_max_ctx() tokens or more is refused (-1; the prompt is never
 * truncated, so what is billed is what the model saw), and generation stops
 * early when prompt + generated reaches the context (MODEL_DONE; the last id
 * is then not the end-of-sentence id, like a max_tokens stop).
 *
 * *n_generated (if not NULL) is set to the number of ids passed to on_token,
 * also on MODEL_STOPPED and on error (then 0).  s may be NULL (greedy).
 * Returns MODEL_DONE, MODEL_STOPPED, or -1 with a reason in
 * model_session_error(): empty prompt, prompt too long, id out of range, bad
 * sampling parameters. */
int model_generate(struct model_session *sess, const int32_t *prompt, size_t n_prompt, const struct model_sampling *s,
		   size_t max_tokens, int (*on_token)(void *arg, int32_t id), void *arg, size_t *n_generated)
	__attribute__((warn_unused_result));

/* The reason of the last failed model_generate() ("" if none); valid until
 * the next call on the session. */
const char *model_session_error(const struct model_session *s);

/* The logits of the last forward pass (one per model_output_ids() entry, in
 * that order, end-of-sentence bias included, before temperature); for tests
 * and tools.  Borrowed; changes with the next model_generate(). */
const float *model_session_logits(const struct model_session *s, size_t *n);

#endif
