/* kernels.c: tokenizer and embedded-model throughput for `make bench`.
 *
 *   kernels TOKENIZER_JSON MODEL_BIN CASES_JSON SECONDS
 *
 * Tokenizer: ~1 MB of natural-ish text (the prose, code, CJK, emoji... cases
 * of tests/fixtures/tokenizer/cases.json, the same mix as
 * `test_tokenizer --bench`), encoded again and again on one thread for
 * SECONDS; MB/s and ids/s.
 *
 * Model: greedy generation from a short rendered chat prompt until the
 * context is full or end-of-sentence, again and again on one thread (one
 * billingd inference worker) for SECONDS; generated tokens/s, and prefill
 * tokens/s from a long prompt.
 *
 * Prints one JSON object.  Exit 1 when a file cannot be loaded. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "billing/infer/model.h"
#include "billing/infer/tokenizer.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *bench_text(const char *cases_path, size_t target, size_t *len_out)
{
	json_error_t je;
	json_t *root = json_load_file(cases_path, JSON_ALLOW_NUL, &je), *c;
	char *text = malloc(target + 65536);
	size_t len = 0, i, added = 1;

	if (!text) {
		json_decref(root);
		return NULL;
	}
	if (json_is_array(root)) {
		while (len < target && added) {
			added = 0;
			json_array_foreach(root, i, c)
			{
				const char *tag = json_string_value(json_object_get(c, "tag"));
				json_t *t = json_object_get(c, "text");
				size_t n = json_string_length(t);
				if (!tag || !json_is_string(t) || !strcmp(tag, "sweep") || !strcmp(tag, "long") ||
				    memchr(json_string_value(t), '\0', n) || n > 60000)
					continue;
				if (len >= target)
					break;
				memcpy(text + len, json_string_value(t), n);
				len += n;
				text[len++] = '\n';
				added = 1;
			}
		}
	}
	json_decref(root);
	if (len == 0) {
		/* no fixtures: plain English and code */
		static const char fb[] = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。\n"
					 "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }\n";
		while (len + sizeof(fb) < target) {
			memcpy(text + len, fb, sizeof(fb) - 1);
			len += sizeof(fb) - 1;
		}
	}
	*len_out = len;
	return text;
}

int main(int argc, char **argv)
{
	struct error err;
	struct tokenizer *tok;
	struct model *m;
	struct model_session *sess;
	char *text, *prompt_text = NULL;
	size_t len, ids_total = 0, passes = 0, n_prompt = 0, gen_total = 0, runs = 0, n;
	double seconds, t0, tok_s, gen_s, pre_s = 0, load_s;
	int32_t *ids = NULL, *prompt = NULL, *long_prompt = NULL;
	size_t n_long = 0, prefill_total = 0;
	struct tokenizer_message msg = {"user", "Write a short story about a billing engine that never loses a cent.",
					0};
	struct model_sampling greedy = {0.0f, 1.0f, 0};

	if (argc != 5) {
		fprintf(stderr, "usage: kernels TOKENIZER_JSON MODEL_BIN CASES_JSON SECONDS\n");
		return 2;
	}
	seconds = atof(argv[4]);
	t0 = now_s();
	tok = tokenizer_load(argv[1], &err);
	load_s = now_s() - t0;
	if (!tok) {
		fprintf(stderr, "kernels: %s\n", err.msg);
		return 1;
	}
	m = model_load(argv[2], &err);
	if (!m) {
		fprintf(stderr, "kernels: %s\n", err.msg);
		return 1;
	}
	text = bench_text(argv[3], 1 << 20, &len);
	if (!text)
		return 1;

	/* tokenizer */
	t0 = now_s();
	do {
		if (tokenizer_encode(tok, text, len, &ids, &n) != 0) {
			fprintf(stderr, "kernels: encode failed\n");
			return 1;
		}
		free(ids);
		ids_total += n;
		passes++;
	} while (now_s() - t0 < seconds);
	tok_s = now_s() - t0;

	/* model: decode */
	msg.content_len = strlen(msg.content);
	if (tokenizer_render_chat(&msg, 1, &prompt_text, &n) != 0 ||
	    tokenizer_encode(tok, prompt_text, n, &prompt, &n_prompt) != 0) {
		fprintf(stderr, "kernels: cannot render the prompt\n");
		return 1;
	}
	sess = model_session_new(m, 0);
	if (!sess)
		return 1;
	t0 = now_s();
	do {
		size_t got = 0;
		if (model_generate(sess, prompt, n_prompt, &greedy, model_max_ctx(m) - n_prompt - 1, NULL, NULL, &got) <
		    0) {
			fprintf(stderr, "kernels: %s\n", model_session_error(sess));
			return 1;
		}
		gen_total += got;
		runs++;
	} while (now_s() - t0 < seconds);
	gen_s = now_s() - t0;

	/* model: prefill of a prompt filling most of the context (one token generated) */
	size_t cut = len < 20000 ? len : 20000;
	while (cut > 0 && text[cut - 1] != '\n') /* whole lines: never half a UTF-8 sequence */
		cut--;
	if (tokenizer_encode(tok, text, cut, &long_prompt, &n_long) == 0 && n_long > 8) {
		size_t use = model_max_ctx(m) * 3 / 4, got, reps = 0;
		if (use > n_long)
			use = n_long;
		for (size_t i = 0; i < use; i++)
			if ((size_t)long_prompt[i] >= model_vocab_size(m))
				long_prompt[i] = 0;
		t0 = now_s();
		do {
			if (model_generate(sess, long_prompt, use, &greedy, 1, NULL, NULL, &got) < 0)
				break;
			prefill_total += use;
			reps++;
		} while (now_s() - t0 < seconds / 2);
		pre_s = now_s() - t0;
	}
	printf("{\"tokenizer_load_s\":%.3f,\"tokenizer_bytes\":%zu,\"tokenizer_passes\":%zu,\"tokenizer_mb_s\":%.2f,"
	       "\"tokenizer_ids_s\":%.0f,\"model_ctx\":%zu,\"model_prompt_tokens\":%zu,\"model_runs\":%zu,"
	       "\"model_generated\":%zu,\"model_tokens_s\":%.1f,\"model_prefill_tokens_s\":%.1f}\n",
	       load_s, len, passes, (double)len * (double)passes / tok_s / 1e6, (double)ids_total / tok_s,
	       model_max_ctx(m), n_prompt, runs, gen_total, (double)gen_total / gen_s,
	       pre_s > 0 ? (double)prefill_total / pre_s : 0.0);
	free(long_prompt);
	free(prompt);
	free(prompt_text);
	free(text);
	model_session_free(sess);
	model_free(m);
	tokenizer_free(tok);
	return 0;
}
