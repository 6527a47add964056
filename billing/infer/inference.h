/* inference.h: the embedded model behind POST /internal/v1/chat/completions
 * and the tokenizer behind POST /v1/tokenize.
 *
 * The model runs on a bounded pool of worker threads, never on the event
 * loop.  A chat call is authorized and metered through the same code as
 * gateway traffic: authz_start() sized from the real prompt count, then a
 * usage record with the real counts through the usage writer. */
#ifndef BILLING_INFERENCE_H
#define BILLING_INFERENCE_H

#include "common/error.h"

struct server;
struct rctx;
struct inference;

/* Loads the tokenizer and the model named by the config.  A missing file is
 * not fatal: the endpoints then answer 503 model_unavailable. */
struct inference *inference_new(struct server *s, struct error *err) __attribute__((warn_unused_result));
void inference_free(struct inference *inf);
/* Event loop: the workers' counters into /metrics (the time they paused
 * while billing was busy, inference_busy_share).  inf may be NULL. */
void inference_publish(struct inference *inf);

void h_tokenize(struct rctx *c);
void h_chat(struct rctx *c);
void h_models(struct rctx *c);

#endif
