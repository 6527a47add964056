/* mkweights: writes the weight file of the embedded model `internal-tiny`.
 *
 *     mkweights TOKENIZER_JSON OUT_FILE
 *
 * The weights are random numbers from a fixed seed (splitmix64), so the file
 * is the same bytes on every machine and at every optimisation level: only
 * integer arithmetic and IEEE +, -, *, / and sqrt are used, never a libm
 * transcendental.  The output layer covers a list of allowed token ids chosen
 * from TOKENIZER_JSON (a HuggingFace tokenizer.json with a byte-level BPE
 * vocabulary): ids that decode to clean, printable UTF-8, plus the
 * end-of-sentence id.  The byte format is in docs/model.md, "The `internal-tiny` weight file"; the reader
 * is billing/infer/model.c.
 *
 * The file is written to OUT_FILE.tmp and renamed, so a reader never sees a
 * half-written file.  Exit 0 on success, 1 on failure (one line on stderr),
 * 2 on a usage error. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/infer/model.h"

/* ---- the model's shape and the generator's knobs ---- */

#define DIM 128
#define N_LAYERS 4
#define N_HEADS 4
#define HIDDEN 352
#define MAX_CTX 512
#define EMB_ROWS 4096
#define ROPE_THETA 10000.0f
#define NORM_EPS 1e-5f
#define SEED UINT64_C(0x696e7465726e616c) /* "internal" in ASCII */

/* How many ids of each class the output layer gets: the lowest ids of each
 * class, which in a BPE vocabulary are the most frequent pieces. */
#define N_WORDS 2800
#define N_CJK 1200

/* Standard deviations.  Matrices: GAIN / sqrt(fan_in). */
#define EMB_STD 0.7 /* each of the two embedding rows an id sums */
#define QK_GAIN 1.6
#define V_GAIN 1.0
#define O_GAIN 0.6
#define FFN_GAIN 1.0
#define DOWN_GAIN 0.6
#define OUT_STD 2.5     /* std of a logit over a unit-RMS input */
#define NORM_SPREAD 0.1 /* norm gains are uniform in [1-s, 1+s] */
#define EOS_BIAS 3.0f   /* added to the end-of-sentence logit */
#define PUNCT_BIAS 2.0f /* added to punctuation logits */

#define EOS_TEXT        \
	"<\xef\xbd\x9c" \
	"end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

static const char *const PUNCT[] = {
	",",
	".",
	"!",
	"?",
	";",
	":",
	" -",
	" (",
	")",
	"'s",
	"\xef\xbc\x8c", /* ， */
	"\xe3\x80\x82", /* 。 */
	"\xef\xbc\x81", /* ！ */
	"\xef\xbc\x9f", /* ？ */
	"\xe3\x80\x81", /* 、 */
	"\xef\xbc\x9a", /* ： */
	"\xef\xbc\x9b", /* ； */
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("mkweights: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* ---- deterministic random numbers ---- */

static uint64_t rng_state;

static uint64_t splitmix64(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* Uniform in (-1, 1) from the top 24 bits; variance 1/3. */
static double uniform_pm1(void)
{
	uint32_t u = (uint32_t)(splitmix64() >> 40);

	return ((double)u + 0.5) / 8388608.0 - 1.0;
}

/* n floats, uniform with mean `mean` and standard deviation `std`. */
static void fill(float *w, size_t n, double mean, double std)
{
	double amp = std * sqrt(3.0);

	for (size_t i = 0; i < n; i++)
		w[i] = (float)(mean + uniform_pm1() * amp);
}

/* ---- the GPT-2 byte-level alphabet, reversed ---- */

/* Code point (0..323) -> byte, or -1.  Bytes 33..126, 161..172 and 174..255
 * stand for themselves; the other 68 bytes, in increasing order, are code
 * points 256, 257, ... */
static int cp2byte[324];

static void byte_map_init(void)
{
	int n = 0;

	for (int i = 0; i < 324; i++)
		cp2byte[i] = -1;
	for (int b = 0; b < 256; b++) {
		if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
			cp2byte[b] = b;
		else
			cp2byte[256 + n++] = b;
	}
}

/* Decodes one UTF-8 code point at s; returns its length, or 0 if invalid. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t len;
	uint32_t c;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	} else if ((s[0] & 0xE0) == 0xC0) {
		len = 2, c = s[0] & 0x1F;
	} else if ((s[0] & 0xF0) == 0xE0) {
		len = 3, c = s[0] & 0x0F;
	} else if ((s[0] & 0xF8) == 0xF0) {
		len = 4, c = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) || c > 0x10FFFF ||
	    (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp = c;
	return len;
}

/* Token text (byte-level alphabet) -> raw bytes; returns the length, or -1
 * when a character is outside the alphabet (special tokens) or out is full. */
static int decode_token(const char *text, unsigned char *out, size_t outlen)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t n = strlen(text), i = 0, o = 0;

	while (i < n) {
		uint32_t cp;
		size_t len = utf8_next(s + i, n - i, &cp);

		if (len == 0 || cp >= 324 || cp2byte[cp] < 0 || o == outlen)
			return -1;
		out[o++] = (unsigned char)cp2byte[cp];
		i += len;
	}
	return (int)o;
}

enum tok_class { CLASS_NONE, CLASS_WORD, CLASS_CJK, CLASS_PUNCT };

static int is_lower(unsigned char c)
{
	return c >= 'a' && c <= 'z';
}
static int is_upper(unsigned char c)
{
	return c >= 'A' && c <= 'Z';
}

/* A space and 1..12 ASCII letters, lower case or capitalised (one-letter
 * words only "a" and "I"); one CJK unified ideograph U+4E00..U+9FFF; or one of
 * PUNCT exactly. */
static enum tok_class classify(const unsigned char *b, size_t n)
{
	uint32_t cp;

	for (size_t i = 0; i < sizeof PUNCT / sizeof PUNCT[0]; i++)
		if (strlen(PUNCT[i]) == n && memcmp(PUNCT[i], b, n) == 0)
			return CLASS_PUNCT;
	if (n >= 2 && n <= 13 && b[0] == ' ') {
		if (n == 2)
			return (b[1] == 'a' || b[1] == 'I') ? CLASS_WORD : CLASS_NONE;
		if (!is_lower(b[1]) && !is_upper(b[1]))
			return CLASS_NONE;
		for (size_t i = 2; i < n; i++)
			if (!is_lower(b[i]))
				return CLASS_NONE;
		return CLASS_WORD;
	}
	if (n == 3 && utf8_next(b, n, &cp) == 3 && cp >= 0x4E00 && cp <= 0x9FFF)
		return CLASS_CJK;
	return CLASS_NONE;
}

/* ---- reading the vocabulary ---- */

struct vocab {
	json_t *root;
	const char **text;      /* [n_vocab], borrowed from root; NULL where no entry */
	unsigned char *special; /* [n_vocab], 1 for added tokens */
	uint32_t n_vocab;
	int32_t eos_id;
};

static json_int_t id_of(json_t *v, const char *what)
{
	json_int_t id;

	if (!json_is_integer(v))
		die("tokenizer: %s is not an integer id", what);
	id = json_integer_value(v);
	if (id < 0 || id >= (1 << 24))
		die("tokenizer: id %lld of %s out of range", (long long)id, what);
	return id;
}

static void vocab_load(struct vocab *v, const char *path)
{
	json_error_t jerr;
	json_t *vocab, *added, *val;
	const char *key;
	size_t i;
	json_int_t max_id = -1;

	memset(v, 0, sizeof *v);
	v->eos_id = -1;
	v->root = json_load_file(path, 0, &jerr);
	if (!v->root)
		die("cannot read \"%s\": %s (line %d, column %d)", path, jerr.text, jerr.line, jerr.column);
	vocab = json_object_get(json_object_get(v->root, "model"), "vocab");
	added = json_object_get(v->root, "added_tokens");
	if (!json_is_object(vocab) || !json_is_array(added))
		die("\"%s\": no model.vocab object or added_tokens array", path);
	json_object_foreach(vocab, key, val)
	{
		json_int_t id = id_of(val, key);
		if (id > max_id)
			max_id = id;
	}
	json_array_foreach(added, i, val)
	{
		json_int_t id = id_of(json_object_get(val, "id"), "an added token");
		if (id > max_id)
			max_id = id;
	}
	if (max_id < 0)
		die("\"%s\": empty vocabulary", path);
	v->n_vocab = (uint32_t)max_id + 1;
	v->text = calloc(v->n_vocab, sizeof *v->text);
	v->special = calloc(v->n_vocab, 1);
	if (!v->text || !v->special)
		die("out of memory");
	json_object_foreach(vocab, key, val) v->text[json_integer_value(val)] = key;
	json_array_foreach(added, i, val)
	{
		json_int_t id = json_integer_value(json_object_get(val, "id"));
		const char *content = json_string_value(json_object_get(val, "content"));

		v->special[id] = 1;
		if (content && strcmp(content, EOS_TEXT) == 0)
			v->eos_id = (int32_t)id;
	}
	if (v->eos_id < 0)
		die("\"%s\": no added token \"%s\"", path, EOS_TEXT);
}

static void vocab_release(struct vocab *v)
{
	free(v->text);
	free(v->special);
	json_decref(v->root);
}

/* Allowed output ids in increasing order and their logit biases; returns
 * how many. */
static uint32_t select_outputs(const struct vocab *v, int32_t *ids, float *bias, uint32_t cap)
{
	uint32_t n = 0, n_words = 0, n_cjk = 0, n_punct = 0;
	unsigned char buf[64];

	for (uint32_t id = 0; id < v->n_vocab && n < cap; id++) {
		int len;

		if ((int32_t)id == v->eos_id) {
			bias[n] = EOS_BIAS;
			ids[n++] = (int32_t)id;
			continue;
		}
		if (v->special[id] || !v->text[id])
			continue;
		len = decode_token(v->text[id], buf, sizeof buf);
		if (len <= 0)
			continue;
		bias[n] = 0.0f;
		switch (classify(buf, (size_t)len)) {
		case CLASS_WORD:
			if (n_words < N_WORDS)
				ids[n++] = (int32_t)id, n_words++;
			break;
		case CLASS_CJK:
			if (n_cjk < N_CJK)
				ids[n++] = (int32_t)id, n_cjk++;
			break;
		case CLASS_PUNCT:
			bias[n] = PUNCT_BIAS;
			ids[n++] = (int32_t)id, n_punct++;
			break;
		case CLASS_NONE:
			break;
		}
	}
	if (n_words < 100 || n_cjk < 100 || n_punct < 4)
		die("tokenizer: too few clean tokens (%u words, %u CJK, %u punctuation)", n_words, n_cjk, n_punct);
	return n;
}

/* ---- writing ---- */

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16), p[3] = (unsigned char)(v >> 24);
}

static void put_u64(unsigned char *p, uint64_t v)
{
	put_u32(p, (uint32_t)v);
	put_u32(p + 4, (uint32_t)(v >> 32));
}

static void put_f32(unsigned char *p, float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	put_u32(p, u);
}

int main(int argc, char **argv)
{
	struct vocab v;
	int32_t *out_ids;
	float *out_bias;
	uint32_t n_out;
	size_t n_params, n_layer_params, off;
	float *w, *p;
	unsigned char *file;
	uint64_t file_size;
	char tmp[4096];
	FILE *f;

	if (argc != 3) {
		fprintf(stderr, "usage: mkweights TOKENIZER_JSON OUT_FILE\n");
		return 2;
	}
	if (sodium_init() < 0)
		die("libsodium failed to initialise");
	byte_map_init();
	vocab_load(&v, argv[1]);

	out_ids = malloc((N_WORDS + N_CJK + 64) * sizeof *out_ids);
	out_bias = malloc((N_WORDS + N_CJK + 64) * sizeof *out_bias);
	if (!out_ids || !out_bias)
		die("out of memory");
	n_out = select_outputs(&v, out_ids, out_bias, N_WORDS + N_CJK + 64);

	n_layer_params = (size_t)DIM + 4u * DIM * DIM + DIM + 3u * HIDDEN * DIM;
	n_params = (size_t)EMB_ROWS * DIM + N_LAYERS * n_layer_params + DIM + (size_t)n_out * DIM + n_out;
	w = malloc(n_params * sizeof *w);
	if (!w)
		die("out of memory");

	/* Tensors in file order, all from one stream. */
	rng_state = SEED;
	p = w;
	fill(p, (size_t)EMB_ROWS * DIM, 0.0, EMB_STD), p += (size_t)EMB_ROWS * DIM;
	for (int l = 0; l < N_LAYERS; l++) {
		fill(p, DIM, 1.0, NORM_SPREAD / sqrt(3.0)), p += DIM;                    /* attn_norm */
		fill(p, DIM * DIM, 0.0, QK_GAIN / sqrt(DIM)), p += DIM * DIM;            /* wq */
		fill(p, DIM * DIM, 0.0, QK_GAIN / sqrt(DIM)), p += DIM * DIM;            /* wk */
		fill(p, DIM * DIM, 0.0, V_GAIN / sqrt(DIM)), p += DIM * DIM;             /* wv */
		fill(p, DIM * DIM, 0.0, O_GAIN / sqrt(DIM)), p += DIM * DIM;             /* wo */
		fill(p, DIM, 1.0, NORM_SPREAD / sqrt(3.0)), p += DIM;                    /* ffn_norm */
		fill(p, HIDDEN * DIM, 0.0, FFN_GAIN / sqrt(DIM)), p += HIDDEN * DIM;     /* w_gate */
		fill(p, HIDDEN * DIM, 0.0, FFN_GAIN / sqrt(DIM)), p += HIDDEN * DIM;     /* w_up */
		fill(p, DIM * HIDDEN, 0.0, DOWN_GAIN / sqrt(HIDDEN)), p += DIM * HIDDEN; /* w_down */
	}
	fill(p, DIM, 1.0, NORM_SPREAD / sqrt(3.0)), p += DIM;                             /* final_norm */
	fill(p, (size_t)n_out * DIM, 0.0, OUT_STD / sqrt(DIM)), p += (size_t)n_out * DIM; /* out_w */
	for (uint32_t i = 0; i < n_out; i++)                                              /* out_bias */
		*p++ = out_bias[i];
	if ((size_t)(p - w) != n_params)
		die("internal error: %zu parameters written, %zu expected", (size_t)(p - w), n_params);

	file_size = MODEL_FILE_HEADER_SIZE + 4u * (uint64_t)n_out + 4u * (uint64_t)n_params + MODEL_FILE_DIGEST_SIZE;
	file = calloc(1, file_size);
	if (!file)
		die("out of memory");
	memcpy(file, MODEL_FILE_MAGIC, 8);
	put_u32(file + 8, MODEL_FILE_VERSION);
	put_u32(file + 12, MODEL_FILE_HEADER_SIZE);
	put_u32(file + 16, DIM);
	put_u32(file + 20, N_LAYERS);
	put_u32(file + 24, N_HEADS);
	put_u32(file + 28, HIDDEN);
	put_u32(file + 32, MAX_CTX);
	put_u32(file + 36, v.n_vocab);
	put_u32(file + 40, EMB_ROWS);
	put_u32(file + 44, n_out);
	put_u32(file + 48, (uint32_t)v.eos_id);
	put_f32(file + 52, ROPE_THETA);
	put_f32(file + 56, NORM_EPS);
	put_u32(file + 60, 0);
	put_u64(file + 64, SEED);
	put_u64(file + 72, file_size);
	memcpy(file + 80, MODEL_NAME, sizeof MODEL_NAME); /* rest of the 32 bytes stays zero */
	off = MODEL_FILE_HEADER_SIZE;
	for (uint32_t i = 0; i < n_out; i++, off += 4)
		put_u32(file + off, (uint32_t)out_ids[i]);
	for (size_t i = 0; i < n_params; i++, off += 4)
		put_f32(file + off, w[i]);
	crypto_generichash(file + off, MODEL_FILE_DIGEST_SIZE, file, off, NULL, 0);

	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]) >= sizeof tmp)
		die("output path too long");
	f = fopen(tmp, "wb");
	if (!f)
		die("cannot create \"%s\": %s", tmp, strerror(errno));
	if (fwrite(file, 1, file_size, f) != file_size || fflush(f) != 0) {
		int e = errno;
		fclose(f);
		remove(tmp);
		die("cannot write \"%s\": %s", tmp, strerror(e));
	}
	if (fclose(f) != 0) {
		remove(tmp);
		die("cannot write \"%s\": %s", tmp, strerror(errno));
	}
	if (rename(tmp, argv[2]) != 0) {
		remove(tmp);
		die("cannot rename \"%s\": %s", tmp, strerror(errno));
	}
	printf("mkweights: wrote %s: %d layers, dim %d, %u outputs, %zu parameters, %llu bytes\n", argv[2], N_LAYERS,
	       DIM, n_out, n_params, (unsigned long long)file_size);

	free(file);
	free(w);
	free(out_ids);
	free(out_bias);
	vocab_release(&v);
	return 0;
}
