/* test_model: the embedded model `internal-tiny` (billing/infer/model.c) against
 * the weight file that `make data` writes (data/internal-tiny.bin, or
 * $TEST_MODEL_FILE).
 *
 * The golden ids and logits digest below were recorded from an -O2 build;
 * the same test passes unchanged under -O0 and the sanitizer build (-O1),
 * which is the check that results do not depend on the optimisation level. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "billing/infer/model.h"
#include "tests/unit/tap.h"

#define MAXGEN 512

/* <｜begin▁of▁sentence｜><｜User｜> + 7 text ids + <｜Assistant｜> */
static const int32_t PROMPT[] = {0, 128803, 19923, 14, 1257, 418, 440, 30, 128804};
#define N_PROMPT (sizeof PROMPT / sizeof PROMPT[0])

/* First 16 greedy ids for PROMPT, and FNV-1a 64 of the bytes of the logits
 * the 16th was chosen from. */
static const int32_t GOLDEN_IDS[16] = {3281, 2180, 4815, 7561, 5291, 8043, 8926, 8806,
				       3490, 3226, 8657, 4673, 8180, 6968, 3891, 3677};
static const uint64_t GOLDEN_LOGITS = UINT64_C(0x02ac7c3a0a4bf2dd);

struct rec {
	int32_t ids[MAXGEN];
	size_t n;
	size_t stop_after; /* 0: never stop */
};

static int rec_cb(void *arg, int32_t id)
{
	struct rec *r = arg;

	if (r->n < MAXGEN)
		r->ids[r->n] = id;
	r->n++;
	return r->stop_after && r->n >= r->stop_after;
}

static uint64_t fnv1a(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * UINT64_C(0x100000001b3);
	return h;
}

/* Runs one generation into r; returns model_generate's result. */
static int gen(struct model_session *s, const int32_t *prompt, size_t np, float temp, float top_p, uint64_t seed,
	       size_t max_tokens, struct rec *r, size_t *n_generated)
{
	struct model_sampling sp = {temp, top_p, seed};
	size_t stop = r->stop_after;

	memset(r, 0, sizeof *r);
	r->stop_after = stop;
	return model_generate(s, prompt, np, &sp, max_tokens, rec_cb, r, n_generated);
}

static int same_ids(const struct rec *a, const struct rec *b)
{
	return a->n == b->n && memcmp(a->ids, b->ids, a->n * sizeof a->ids[0]) == 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- weight file checks ---- */

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*len = (size_t)n;
	}
	fclose(f);
	return buf;
}

/* Writes bytes to a temp file, loads it, expects failure with `want` in the message. */
static void expect_refused(const unsigned char *buf, size_t len, const char *want, const char *name)
{
	char path[] = "/tmp/test_model_XXXXXX";
	struct error err = {0};
	int fd = mkstemp(path);
	struct model *m = NULL;
	int written = fd >= 0 && write(fd, buf, len) == (ssize_t)len;

	if (fd >= 0)
		close(fd);
	OK(written, "%s: temp file written", name);
	m = model_load(path, &err);
	OK(m == NULL, "%s: refused", name);
	OK(strstr(err.msg, want) != NULL && strcmp(err.code, "bad_model") == 0, "%s: error names the problem: %s", name,
	   err.msg);
	model_free(m);
	unlink(path);
}

static void test_file_checks(const char *path)
{
	size_t len = 0;
	unsigned char *buf = slurp(path, &len), *copy;
	struct error err = {0};
	struct model *m;

	OK(buf != NULL && len > 1000, "weight file readable (%zu bytes)", len);
	if (!buf || len <= 1000) {
		free(buf);
		return;
	}
	copy = malloc(len + 16);
	if (!copy) {
		free(buf);
		return;
	}
	memcpy(copy, buf, len);

	expect_refused(copy, len - 100, "truncated", "truncated file");
	expect_refused(copy, 64, "truncated", "file shorter than a header");
	memset(copy + len, 0, 16);
	expect_refused(copy, len + 16, "size mismatch", "trailing bytes");

	copy[len / 2] ^= 0x01; /* one bit in the weights */
	expect_refused(copy, len, "checksum mismatch", "flipped bit in the weights");
	memcpy(copy, buf, len);
	copy[len - 1] ^= 0x80; /* in the digest */
	expect_refused(copy, len, "checksum mismatch", "flipped bit in the digest");
	memcpy(copy, buf, len);
	copy[16] ^= 0x01; /* dim in the header */
	expect_refused(copy, len, "checksum mismatch", "changed header field");
	memcpy(copy, buf, len);
	copy[0] = 'X';
	expect_refused(copy, len, "bad magic", "bad magic");
	memcpy(copy, buf, len);
	copy[8] = 9;
	expect_refused(copy, len, "unsupported format version", "unknown version");

	m = model_load("/nonexistent/internal-tiny.bin", &err);
	OK(m == NULL && strstr(err.msg, "cannot open") != NULL, "missing file refused: %s", err.msg);
	model_free(m);
	free(copy);
	free(buf);
}

/* ---- threads share one model ---- */

struct thread_arg {
	const struct model *m;
	struct rec r;
	int rc;
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;
	struct model_session *s = model_session_new(a->m, 0);

	a->rc = -1;
	if (s) {
		a->rc = gen(s, PROMPT, N_PROMPT, 0.0f, 1.0f, 0, 16, &a->r, NULL);
		model_session_free(s);
	}
	return NULL;
}

int main(void)
{
	const char *path = getenv("TEST_MODEL_FILE") ? getenv("TEST_MODEL_FILE") : "data/internal-tiny.bin";
	struct error err = {0};
	struct model *m = model_load(path, &err);
	struct model_session *s = NULL, *s2 = NULL;
	static struct rec a, b, c;
	const int32_t *outs;
	size_t n_out = 0, n = 0;
	int rc, ok;

	OK(m != NULL, "loads %s: %s", path, err.msg);
	if (!m)
		return tap_done();
	IS_STR(model_name(m), "internal-tiny", "model name");
	IS_I64(model_eos_id(m), 1, "end-of-sentence id");
	IS_I64(model_vocab_size(m), 128815, "accepts the full DeepSeek-V3 vocabulary");
	IS_I64(model_max_ctx(m), 512, "context length");
	outs = model_output_ids(m, &n_out);
	OK(n_out >= 1000 && n_out <= 8000, "a few thousand output ids (%zu)", n_out);
	ok = 1;
	for (size_t i = 1; i < n_out; i++)
		ok &= outs[i] > outs[i - 1];
	OK(ok, "output ids increasing");
	OK(model_is_output_id(m, 1) && !model_is_output_id(m, 0) && !model_is_output_id(m, 128804) &&
		   model_is_output_id(m, outs[n_out - 1]) && !model_is_output_id(m, -1),
	   "model_is_output_id");

	test_file_checks(path);

	s = model_session_new(m, 0);
	s2 = model_session_new(m, 0);
	OK(s && s2, "sessions");
	if (!s || !s2)
		goto done;
	IS_I64(model_session_max_ctx(s), 512, "session context defaults to the model's");

	/* greedy: golden ids and logits bits (-O level parity) */
	rc = gen(s, PROMPT, N_PROMPT, 0.0f, 1.0f, 0, 16, &a, &n);
	IS_I64(rc, MODEL_DONE, "greedy generation");
	IS_I64(n, 16, "16 ids generated");
	{
		size_t nl = 0;
		const float *lg = model_session_logits(s, &nl);
		uint64_t h = fnv1a(lg, nl * sizeof *lg);
		int golden = a.n == 16 && memcmp(a.ids, GOLDEN_IDS, sizeof GOLDEN_IDS) == 0;

		OK(golden, "greedy ids match the golden list");
		if (!golden) {
			printf("#   got {");
			for (size_t i = 0; i < a.n && i < 16; i++)
				printf(" %d,", a.ids[i]);
			printf(" }\n");
		}
		OK(h == GOLDEN_LOGITS, "logits bits match the golden digest");
		if (h != GOLDEN_LOGITS)
			printf("#   got 0x%016llx\n", (unsigned long long)h);
	}

	/* greedy is deterministic, across calls and sessions */
	rc = gen(s, PROMPT, N_PROMPT, 0.0f, 1.0f, 0, 64, &a, NULL);
	rc |= gen(s, PROMPT, N_PROMPT, 0.0f, 1.0f, 0, 64, &b, NULL);
	rc |= gen(s2, PROMPT, N_PROMPT, 0.0f, 1.0f, 12345, 64, &c, NULL);
	OK(rc == 0 && a.n == 64 && same_ids(&a, &b) && same_ids(&a, &c),
	   "greedy: same ids twice, in another session, whatever the seed");

	/* prefill (batched) and decode (one token at a time) agree: feeding the
	 * first 20 greedy ids back as prompt continues with the same ids */
	{
		int32_t longer[N_PROMPT + 20];

		memcpy(longer, PROMPT, sizeof PROMPT);
		memcpy(longer + N_PROMPT, a.ids, 20 * sizeof(int32_t));
		rc = gen(s, longer, N_PROMPT + 20, 0.0f, 1.0f, 0, 44, &b, NULL);
		OK(rc == 0 && b.n == 44 && memcmp(b.ids, a.ids + 20, 44 * sizeof(int32_t)) == 0,
		   "prefill of a prefix gives the same continuation as decoding");
	}

	/* seeded sampling */
	rc = gen(s, PROMPT, N_PROMPT, 0.8f, 0.95f, 7, 48, &a, NULL);
	rc |= gen(s2, PROMPT, N_PROMPT, 0.8f, 0.95f, 7, 48, &b, NULL);
	OK(rc == 0 && a.n > 0 && same_ids(&a, &b), "same seed, same ids (%zu)", a.n);
	{
		int differs = 0;
		for (uint64_t seed = 8; seed < 12; seed++) {
			rc = gen(s, PROMPT, N_PROMPT, 0.8f, 0.95f, seed, 48, &b, NULL);
			differs += rc == 0 && !same_ids(&a, &b);
		}
		OK(differs >= 1, "other seeds give other ids (%d of 4 differ)", differs);
		rc = gen(s, PROMPT, N_PROMPT, 1.0f, 1.0f, 7, 48, &b, NULL);
		rc |= gen(s, PROMPT, N_PROMPT, 1.0f, 1.0f, 7, 48, &c, NULL);
		OK(rc == 0 && same_ids(&b, &c), "same seed, same ids without top_p");
		rc = gen(s, PROMPT, N_PROMPT, 1.0f, 0.0f, 99, 32, &b, NULL);
		rc |= gen(s, PROMPT, N_PROMPT, 0.0f, 1.0f, 0, 32, &c, NULL);
		OK(rc == 0 && same_ids(&b, &c), "top_p 0 keeps only the most probable id (= greedy)");
	}

	/* every id is an output id; end-of-sentence ends; it happens sometimes */
	{
		int all_allowed = 1, eos_last = 1, n_eos = 0, n_max = 0;

		for (uint64_t seed = 0; seed < 40; seed++) {
			rc = gen(s, PROMPT, N_PROMPT, 1.0f, seed % 2 ? 0.9f : 1.0f, seed, 200, &a, &n);
			if (rc != 0 || n != a.n)
				all_allowed = 0;
			for (size_t i = 0; i < a.n; i++) {
				all_allowed &= model_is_output_id(m, a.ids[i]);
				if (a.ids[i] == model_eos_id(m) && i + 1 != a.n)
					eos_last = 0;
			}
			if (a.n && a.ids[a.n - 1] == model_eos_id(m))
				n_eos++;
			else if (a.n == 200)
				n_max++;
		}
		OK(all_allowed, "all generated ids are output ids");
		OK(eos_last, "end-of-sentence is always the last id, and counted");
		OK(n_eos > 0 && n_max > 0, "some generations end early (%d of 40), some reach max_tokens (%d)", n_eos,
		   n_max);
	}

	/* on_token stops the generation at once */
	for (size_t k = 1; k <= 9; k += 4) {
		a.stop_after = k;
		rc = gen(s, PROMPT, N_PROMPT, 0.0f, 1.0f, 0, 100, &a, &n);
		IS_I64(rc, MODEL_STOPPED, "stopped by on_token");
		OK(n == k && a.n == k, "stop after %zu: %zu ids generated, %zu callbacks", k, n, a.n);
	}
	a.stop_after = 0;
	rc = gen(s, PROMPT, N_PROMPT, 0.0f, 1.0f, 0, 0, &a, &n);
	OK(rc == MODEL_DONE && n == 0 && a.n == 0, "max_tokens 0 generates nothing");
	{
		size_t nn = 99;
		rc = model_generate(s, PROMPT, N_PROMPT, NULL, 5, NULL, NULL, &nn);
		OK(rc == MODEL_DONE && nn == 5, "NULL sampling and NULL callback");
	}

	/* inputs: the whole vocabulary, nothing outside it */
	{
		int32_t edge[] = {0, 2, 4095, 4096, 128000, 128814};
		int32_t bad_hi[] = {0, 128815}, bad_neg[] = {0, -5};

		rc = gen(s, edge, 6, 0.0f, 1.0f, 0, 4, &a, &n);
		OK(rc == 0 && n >= 1 && n <= 4, "any id of the vocabulary is accepted");
		rc = gen(s, bad_hi, 2, 0.0f, 1.0f, 0, 4, &a, &n);
		OK(rc == -1 && n == 0 && strstr(model_session_error(s), "out of range"), "id past the vocabulary: %s",
		   model_session_error(s));
		rc = gen(s, bad_neg, 2, 0.0f, 1.0f, 0, 4, &a, &n);
		OK(rc == -1 && strstr(model_session_error(s), "out of range"), "negative id refused");
		rc = gen(s, PROMPT, 0, 0.0f, 1.0f, 0, 4, &a, &n);
		OK(rc == -1 && strstr(model_session_error(s), "empty prompt"), "empty prompt refused");
		rc = gen(s, PROMPT, N_PROMPT, -1.0f, 1.0f, 0, 4, &a, &n);
		OK(rc == -1 && strstr(model_session_error(s), "sampling"), "negative temperature refused");
		rc = gen(s, PROMPT, N_PROMPT, NAN, 1.0f, 0, 4, &a, &n);
		OK(rc == -1, "NaN temperature refused");
		rc = gen(s, PROMPT, N_PROMPT, 0.5f, NAN, 0, 4, &a, &n);
		OK(rc == -1, "NaN top_p refused");
		rc = gen(s, PROMPT, N_PROMPT, 0.0f, 1.0f, 0, 4, &a, &n);
		OK(rc == 0 && model_session_error(s)[0] == '\0', "a session is usable after an error");
	}

	/* context limits: never truncated, generation stops when full */
	{
		static int32_t longp[600];
		struct model_session *small = model_session_new(m, 32);

		for (size_t i = 0; i < 600; i++)
			longp[i] = (int32_t)((i * 7919) % 128815);
		rc = gen(s, longp, 512, 0.0f, 1.0f, 0, 4, &a, &n);
		OK(rc == -1 && strstr(model_session_error(s), "does not fit"), "prompt of 512 refused: %s",
		   model_session_error(s));
		rc = gen(s, longp, 511, 0.0f, 1.0f, 0, 4, &a, &n);
		OK(rc == 0 && n == 1, "prompt of 511 gives one id");
		OK(small && model_session_max_ctx(small) == 32, "session with a shorter context");
		if (small) {
			rc = gen(small, longp, 30, 0.0f, 1.0f, 0, 100, &a, &n);
			OK(rc == MODEL_DONE && n == 2, "generation stops when the context is full (%zu ids)", n);
		}
		model_session_free(small);
	}

	/* one model, several threads at once */
	{
		struct thread_arg ta[2];
		pthread_t th[2];
		int started = 0;

		memset(ta, 0, sizeof ta);
		for (int i = 0; i < 2; i++) {
			ta[i].m = m;
			started += pthread_create(&th[i], NULL, thread_main, &ta[i]) == 0;
		}
		for (int i = 0; i < started; i++)
			pthread_join(th[i], NULL);
		OK(started == 2 && ta[0].rc == 0 && ta[1].rc == 0 && ta[0].r.n == 16 &&
			   memcmp(ta[0].r.ids, GOLDEN_IDS, sizeof GOLDEN_IDS) == 0 && same_ids(&ta[0].r, &ta[1].r),
		   "two threads share the model and get the golden ids");
	}

	/* throughput, for the record */
	{
		static int32_t big[256];
		struct model_sampling greedy = {0.0f, 1.0f, 0};
		double t0, t1, t2;
		size_t nd = 0;

		for (size_t i = 0; i < 256; i++)
			big[i] = (int32_t)((i * 7919) % 128815);
		t0 = now();
		rc = model_generate(s, big, 256, &greedy, 1, NULL, NULL, &n);
		t1 = now();
		rc |= model_generate(s, PROMPT, N_PROMPT, &greedy, 256, NULL, NULL, &nd);
		t2 = now();
		OK(rc == 0, "throughput run");
		printf("# throughput: prefill %.0f tokens/s (256-token prompt), decode %.0f tokens/s (%zu tokens)\n",
		       256.0 / (t1 - t0), (double)nd / (t2 - t1), nd);
	}

done:
	model_session_free(s);
	model_session_free(s2);
	model_free(m);
	return tap_done();
}
