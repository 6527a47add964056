/* model.c: the embedded model `internal-tiny` (see model.h and
 * docs/model.md, "The `internal-tiny` weight file").
 *
 * Every floating-point operation here is an IEEE float32 or float64 +, -, *,
 * / or sqrt in an order fixed by the source: dot products keep sixteen partial
 * sums (lane i % 16) added in a fixed tree, and exp, sin, cos and log are our
 * own polynomials instead of libm (whose x86-64 builds pick FMA or non-FMA
 * code by CPU).  With -ffp-contract=off and no fast-math, the compiler may
 * vectorise the lanes but not reorder them, so the bits do not depend on -O
 * level or machine. */
#include "billing/infer/model.h"

#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FILE_SIZE (1u << 30)
#define PREFILL_CHUNK 16 /* prompt tokens per batched forward pass */

struct layer {
	const float *attn_norm;         /* [dim] */
	const float *wq, *wk, *wv, *wo; /* [dim][dim] */
	const float *ffn_norm;          /* [dim] */
	const float *w_gate, *w_up;     /* [hidden][dim] */
	const float *w_down;            /* [dim][hidden] */
};

struct model {
	unsigned char *buf; /* the whole file; the tensors point into it */
	size_t buf_len;
	uint32_t dim, n_layers, n_heads, head_dim, hidden, max_ctx, n_vocab, emb_rows, n_out;
	int32_t eos_id;
	float norm_eps, attn_scale;
	char name[33];
	const int32_t *out_ids;     /* [n_out], increasing */
	const float *tok_emb;       /* [emb_rows][dim] */
	struct layer *layers;       /* [n_layers] */
	const float *final_norm;    /* [dim] */
	const float *out_w;         /* [n_out][dim] */
	const float *out_bias;      /* [n_out] */
	float *rope_cos, *rope_sin; /* [max_ctx][head_dim / 2] */
};

struct cand {
	float p;
	uint32_t idx;
};

struct model_session {
	const struct model *m;
	size_t max_ctx;
	size_t pos;               /* tokens in the KV cache */
	float *k_cache, *v_cache; /* [n_layers][max_ctx][dim] */
	float *x, *xb, *xb2, *q;  /* [PREFILL_CHUNK][dim] */
	float *hb, *hb2;          /* [PREFILL_CHUNK][hidden] */
	float *att;               /* [max_ctx] */
	float *logits;            /* [n_out] */
	struct cand *cand;        /* [n_out] */
	uint64_t rng;
	struct error err; /* the last generate error */
};

/* ---- deterministic math ---- */

/* e^x for x in about [-700, 700]: x = k ln2 + r, |r| <= ln2/2, Taylor to r^11
 * (relative error below 1e-14), times 2^k built from its bits. */
static double exp_d(double x)
{
	const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
	double kd, r, p;
	long k;
	uint64_t bits;
	double scale;

	if (x < -700.0)
		return 0.0;
	if (x > 700.0)
		x = 700.0;
	kd = x * 1.44269504088896338700e+00;
	k = (long)(kd < 0.0 ? kd - 0.5 : kd + 0.5);
	r = (x - (double)k * LN2_HI) - (double)k * LN2_LO;
	p = 1.0 / 39916800.0;
	p = 1.0 / 3628800.0 + r * p;
	p = 1.0 / 362880.0 + r * p;
	p = 1.0 / 40320.0 + r * p;
	p = 1.0 / 5040.0 + r * p;
	p = 1.0 / 720.0 + r * p;
	p = 1.0 / 120.0 + r * p;
	p = 1.0 / 24.0 + r * p;
	p = 1.0 / 6.0 + r * p;
	p = 0.5 + r * p;
	p = 1.0 + r * p;
	p = 1.0 + r * p;
	bits = (uint64_t)(k + 1023) << 52;
	memcpy(&scale, &bits, sizeof scale);
	return p * scale;
}

/* e^x rounded to float; x above 88 (e^88 < FLT_MAX) counts as 88, so the
 * result is always finite. */
static float exp_f(float x)
{
	return (float)exp_d(x > 88.0f ? 88.0 : (double)x);
}

/* ln x for a finite x > 0 (normal): x = 2^e m, m in [sqrt(1/2), sqrt(2)),
 * ln m = 2 atanh((m-1)/(m+1)) by its series. */
static double log_d(double x)
{
	const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
	uint64_t bits;
	double m, z, z2, s, t;
	int e;

	memcpy(&bits, &x, sizeof bits);
	e = (int)((bits >> 52) & 0x7ff) - 1023;
	bits = (bits & ((UINT64_C(1) << 52) - 1)) | (UINT64_C(1023) << 52);
	memcpy(&m, &bits, sizeof m);
	if (m > 1.41421356237309504880) {
		m = m * 0.5;
		e++;
	}
	z = (m - 1.0) / (m + 1.0);
	z2 = z * z;
	s = 0.0;
	for (int k = 27; k >= 1; k -= 2)
		s = 1.0 / (double)k + z2 * s;
	t = 2.0 * z * s;
	return (double)e * LN2_HI + (t + (double)e * LN2_LO);
}

/* sin and cos of a >= 0 (up to ~1e6): a = q pi/2 + r, |r| <= pi/4, Taylor. */
static void sincos_d(double a, double *sn, double *cs)
{
	const double PIO2_1 = 1.57079632673412561417e+00, PIO2_1T = 6.07710050650619224932e-11;
	double qd = a * 6.36619772367581382433e-01, r, r2, s, c;
	long q = (long)(qd + 0.5);

	r = (a - (double)q * PIO2_1) - (double)q * PIO2_1T;
	r2 = r * r;
	s = -1.0 / 1307674368000.0;
	s = 1.0 / 6227020800.0 + r2 * s;
	s = -1.0 / 39916800.0 + r2 * s;
	s = 1.0 / 362880.0 + r2 * s;
	s = -1.0 / 5040.0 + r2 * s;
	s = 1.0 / 120.0 + r2 * s;
	s = -1.0 / 6.0 + r2 * s;
	s = r + r * (r2 * s);
	c = 1.0 / 20922789888000.0;
	c = -1.0 / 87178291200.0 + r2 * c;
	c = 1.0 / 479001600.0 + r2 * c;
	c = -1.0 / 3628800.0 + r2 * c;
	c = 1.0 / 40320.0 + r2 * c;
	c = -1.0 / 720.0 + r2 * c;
	c = 1.0 / 24.0 + r2 * c;
	c = -0.5 + r2 * c;
	c = 1.0 + r2 * c;
	switch (q & 3) {
	case 0:
		*sn = s, *cs = c;
		break;
	case 1:
		*sn = c, *cs = -s;
		break;
	case 2:
		*sn = -s, *cs = -c;
		break;
	default:
		*sn = -c, *cs = s;
		break;
	}
}

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static uint64_t splitmix64(uint64_t *state)
{
	return mix64(*state += UINT64_C(0x9E3779B97F4A7C15));
}

/* ---- kernels ---- */

/* sum a[i] b[i] in sixteen lanes (lane i % 16), lanes added pairwise.  The
 * lanes are independent, so a compiler may keep them in vector registers,
 * but it may not reorder them: the sum is the same at every -O level. */
#define LANES 16
static float dot(const float *a, const float *b, size_t n)
{
	float s[LANES] = {0};
	size_t i = 0;

	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 16
		for (size_t j = 0; j < LANES; j++)
			s[j] += a[i + j] * b[i + j];
	for (size_t j = 0; i < n; i++, j++)
		s[j] += a[i] * b[i];
	for (size_t w = LANES / 2; w > 0; w /= 2)
		for (size_t j = 0; j < w; j++)
			s[j] = s[2 * j] + s[2 * j + 1];
	return s[0];
}

/* out[t][r] (row stride ld) = W[r] . x[t], for t < T, r < rows; W is [rows][n]. */
static void matmul(float *out, size_t ld, const float *x, size_t T, const float *W, size_t rows, size_t n)
{
	for (size_t r = 0; r < rows; r++) {
		const float *w = W + r * n;
		for (size_t t = 0; t < T; t++)
			out[t * ld + r] = dot(w, x + t * n, n);
	}
}

static void rmsnorm(float *out, const float *x, const float *g, size_t n, float eps)
{
	float ms = dot(x, x, n) / (float)n;
	float inv = 1.0f / sqrtf(ms + eps);

	for (size_t i = 0; i < n; i++)
		out[i] = (x[i] * inv) * g[i];
}

/* Rotates pairs (v[2i], v[2i+1]) of each head by pos * theta^(-2i/head_dim). */
static void rope(const struct model *m, float *v, size_t pos)
{
	size_t half = m->head_dim / 2;
	const float *c = m->rope_cos + pos * half, *s = m->rope_sin + pos * half;

	for (size_t h = 0; h < m->n_heads; h++) {
		float *vh = v + h * m->head_dim;
		for (size_t i = 0; i < half; i++) {
			float x0 = vh[2 * i], x1 = vh[2 * i + 1];
			vh[2 * i] = x0 * c[i] - x1 * s[i];
			vh[2 * i + 1] = x0 * s[i] + x1 * c[i];
		}
	}
}

/* The embedding of any id: the sum of rows id % R and mix64(id + golden) % R. */
static void embed(const struct model *m, int32_t id, float *out)
{
	uint64_t a = (uint64_t)(uint32_t)id % m->emb_rows;
	uint64_t b = mix64((uint64_t)(uint32_t)id + UINT64_C(0x9E3779B97F4A7C15)) % m->emb_rows;
	const float *ra = m->tok_emb + a * m->dim, *rb = m->tok_emb + b * m->dim;

	for (size_t i = 0; i < m->dim; i++)
		out[i] = ra[i] + rb[i];
}

/* Runs T tokens at positions s->pos .. s->pos+T-1 (T <= PREFILL_CHUNK,
 * s->pos + T <= s->max_ctx) and appends them to the KV cache; with
 * want_logits, fills s->logits from the last of them. */
static void forward(struct model_session *s, const int32_t *ids, size_t T, int want_logits)
{
	const struct model *m = s->m;
	size_t dim = m->dim, hd = m->head_dim, hidden = m->hidden, pos0 = s->pos;

	for (size_t t = 0; t < T; t++)
		embed(m, ids[t], s->x + t * dim);

	for (size_t l = 0; l < m->n_layers; l++) {
		const struct layer *L = &m->layers[l];
		float *kc = s->k_cache + l * s->max_ctx * dim, *vc = s->v_cache + l * s->max_ctx * dim;

		for (size_t t = 0; t < T; t++)
			rmsnorm(s->xb + t * dim, s->x + t * dim, L->attn_norm, dim, m->norm_eps);
		matmul(s->q, dim, s->xb, T, L->wq, dim, dim);
		matmul(kc + pos0 * dim, dim, s->xb, T, L->wk, dim, dim);
		matmul(vc + pos0 * dim, dim, s->xb, T, L->wv, dim, dim);
		for (size_t t = 0; t < T; t++) {
			rope(m, s->q + t * dim, pos0 + t);
			rope(m, kc + (pos0 + t) * dim, pos0 + t);
		}

		/* causal attention: token t sees positions 0 .. pos0+t */
		for (size_t t = 0; t < T; t++) {
			size_t n_keys = pos0 + t + 1;
			for (size_t h = 0; h < m->n_heads; h++) {
				const float *qh = s->q + t * dim + h * hd;
				float *out = s->xb2 + t * dim + h * hd, *att = s->att;
				float mx, sum = 0.0f, inv;

				for (size_t j = 0; j < n_keys; j++)
					att[j] = dot(qh, kc + j * dim + h * hd, hd) * m->attn_scale;
				mx = att[0];
				for (size_t j = 1; j < n_keys; j++)
					if (att[j] > mx)
						mx = att[j];
				for (size_t j = 0; j < n_keys; j++) {
					att[j] = exp_f(att[j] - mx);
					sum += att[j];
				}
				inv = 1.0f / sum;
				for (size_t i = 0; i < hd; i++)
					out[i] = 0.0f;
				for (size_t j = 0; j < n_keys; j++) {
					const float *vh = vc + j * dim + h * hd;
					float a = att[j] * inv;
					for (size_t i = 0; i < hd; i++)
						out[i] += a * vh[i];
				}
			}
		}
		matmul(s->xb, dim, s->xb2, T, L->wo, dim, dim);
		for (size_t i = 0; i < T * dim; i++)
			s->x[i] += s->xb[i];

		/* SwiGLU MLP */
		for (size_t t = 0; t < T; t++)
			rmsnorm(s->xb + t * dim, s->x + t * dim, L->ffn_norm, dim, m->norm_eps);
		matmul(s->hb, hidden, s->xb, T, L->w_gate, hidden, dim);
		matmul(s->hb2, hidden, s->xb, T, L->w_up, hidden, dim);
		for (size_t i = 0; i < T * hidden; i++) {
			float g = s->hb[i];
			float silu = g / (1.0f + exp_f(-g));
			s->hb[i] = silu * s->hb2[i];
		}
		matmul(s->xb, dim, s->hb, T, L->w_down, dim, hidden);
		for (size_t i = 0; i < T * dim; i++)
			s->x[i] += s->xb[i];
	}
	s->pos += T;

	if (want_logits) {
		rmsnorm(s->xb, s->x + (T - 1) * dim, m->final_norm, dim, m->norm_eps);
		for (size_t r = 0; r < m->n_out; r++)
			s->logits[r] = dot(m->out_w + r * dim, s->xb, dim) + m->out_bias[r];
	}
}

/* ---- sampling ---- */

static size_t argmax(const float *v, size_t n)
{
	size_t best = 0;

	for (size_t i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

/* probability descending, then index (= token id) ascending: a total order */
static int cand_cmp(const void *pa, const void *pb)
{
	const struct cand *a = pa, *b = pb;

	if (a->p != b->p)
		return a->p > b->p ? -1 : 1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* A uniform double in [0, 1) from the top 53 bits. */
static double uniform01(uint64_t *state)
{
	return (double)(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
}

static size_t sample(struct model_session *s, const struct model_sampling *sp)
{
	size_t n = s->m->n_out, k;
	const float *logits = s->logits;
	float mx;
	double total = 0.0, cum, r;

	if (!sp || sp->temperature == 0.0f)
		return argmax(logits, n);
	mx = logits[argmax(logits, n)];
	for (size_t i = 0; i < n; i++) {
		float p = exp_f((logits[i] - mx) / sp->temperature);
		s->cand[i].p = p;
		s->cand[i].idx = (uint32_t)i;
		total += (double)p;
	}
	if (!(sp->top_p < 1.0f)) {
		r = uniform01(&s->rng) * total;
		cum = 0.0;
		for (size_t i = 0; i < n; i++) {
			cum += (double)s->cand[i].p;
			if (r < cum)
				return i;
		}
		return n - 1;
	}
	/* Ids with p < (1 - top_p) total / (2 n_out) together hold less than half
	 * of (1 - top_p) total, so the nucleus (the shortest prefix of the sorted
	 * list that reaches top_p total) ends before them, with a margin far
	 * above rounding: sorting only the others gives the same result. */
	{
		double floor_p = 0.5 * (1.0 - (double)(sp->top_p > 0.0f ? sp->top_p : 0.0f)) * total / (double)n;
		size_t kept = 0;

		for (size_t i = 0; i < n; i++)
			if ((double)s->cand[i].p >= floor_p)
				s->cand[kept++] = s->cand[i];
		n = kept;
	}
	qsort(s->cand, n, sizeof s->cand[0], cand_cmp);
	cum = 0.0;
	for (k = 0; k < n; k++) {
		cum += (double)s->cand[k].p;
		if (cum >= (double)sp->top_p * total)
			break;
	}
	if (k == n)
		k = n - 1;
	/* sample among cand[0..k] (the nucleus), whose mass is cum */
	r = uniform01(&s->rng) * cum;
	cum = 0.0;
	for (size_t i = 0; i <= k; i++) {
		cum += (double)s->cand[i].p;
		if (r < cum)
			return s->cand[i].idx;
	}
	return s->cand[k].idx;
}

/* ---- loading ---- */

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
	return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static float get_f32(const unsigned char *p)
{
	uint32_t u = get_u32(p);
	float f;

	memcpy(&f, &u, sizeof f);
	return f;
}

/* Reads the whole file; -1 with err set. */
static int read_file(const char *path, unsigned char **out, size_t *len, struct error *err)
{
	FILE *f = NULL;
	struct stat st;
	unsigned char *buf = NULL;
	int rc = -1;

	f = fopen(path, "rb");
	if (!f) {
		error_set(err, 0, "bad_model", "\"%s\": cannot open: %s", path, strerror(errno));
		goto done;
	}
	if (fstat(fileno(f), &st) != 0) {
		error_set(err, 0, "bad_model", "\"%s\": cannot stat: %s", path, strerror(errno));
		goto done;
	}
	if (!S_ISREG(st.st_mode)) {
		error_set(err, 0, "bad_model", "\"%s\": not a regular file", path);
		goto done;
	}
	if (st.st_size > (off_t)MAX_FILE_SIZE) {
		error_set(err, 0, "bad_model", "\"%s\": too large for a weight file (%lld bytes)", path,
			  (long long)st.st_size);
		goto done;
	}
	buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
	if (!buf) {
		error_set(err, 0, "bad_model", "\"%s\": out of memory", path);
		goto done;
	}
	if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
		error_set(err, 0, "bad_model", "\"%s\": read error", path);
		goto done;
	}
	*out = buf;
	*len = (size_t)st.st_size;
	buf = NULL;
	rc = 0;
done:
	free(buf);
	if (f)
		fclose(f);
	return rc;
}

/* Checks the header against the file and sets the shape; -1 with err set. */
static int parse_header(struct model *m, const char *path, struct error *err)
{
	const unsigned char *h = m->buf;
	uint64_t file_size, want, n_params, layer_params;
	float theta;

	if (m->buf_len < MODEL_FILE_HEADER_SIZE + MODEL_FILE_DIGEST_SIZE) {
		error_set(err, 0, "bad_model", "\"%s\": truncated (%zu bytes; a weight file has at least %u)", path,
			  m->buf_len, MODEL_FILE_HEADER_SIZE + MODEL_FILE_DIGEST_SIZE);
		return -1;
	}
	if (memcmp(h, MODEL_FILE_MAGIC, 8) != 0) {
		return error_set(err, 0, "bad_model", "\"%s\": not an %s weight file (bad magic)", path, MODEL_NAME);
	}
	if (get_u32(h + 8) != MODEL_FILE_VERSION || get_u32(h + 12) != MODEL_FILE_HEADER_SIZE) {
		return error_set(err, 0, "bad_model", "\"%s\": unsupported format version %u (this build reads %u)",
				 path, get_u32(h + 8), MODEL_FILE_VERSION);
	}
	file_size = get_u64(h + 72);
	if (file_size != m->buf_len) {
		return error_set(err, 0, "bad_model", "\"%s\": %s: header says %llu bytes, file has %zu", path,
				 file_size > m->buf_len ? "truncated" : "size mismatch", (unsigned long long)file_size,
				 m->buf_len);
	}
	{
		unsigned char digest[MODEL_FILE_DIGEST_SIZE];
		size_t body = m->buf_len - MODEL_FILE_DIGEST_SIZE;

		crypto_generichash(digest, sizeof digest, m->buf, body, NULL, 0);
		if (sodium_memcmp(digest, m->buf + body, sizeof digest) != 0) {
			return error_set(err, 0, "bad_model", "\"%s\": checksum mismatch (corrupted file)", path);
		}
	}
	m->dim = get_u32(h + 16);
	m->n_layers = get_u32(h + 20);
	m->n_heads = get_u32(h + 24);
	m->hidden = get_u32(h + 28);
	m->max_ctx = get_u32(h + 32);
	m->n_vocab = get_u32(h + 36);
	m->emb_rows = get_u32(h + 40);
	m->n_out = get_u32(h + 44);
	m->eos_id = (int32_t)get_u32(h + 48);
	theta = get_f32(h + 52);
	m->norm_eps = get_f32(h + 56);
	memcpy(m->name, h + 80, 32);
	m->name[32] = '\0';
	if (m->dim < 8 || m->dim > 8192 || m->n_layers < 1 || m->n_layers > 64 || m->n_heads < 1 ||
	    m->dim % m->n_heads != 0 || (m->dim / m->n_heads) % 2 != 0 || m->hidden < 1 || m->hidden > 65536 ||
	    m->max_ctx < 2 || m->max_ctx > 65536 || m->n_vocab < 1 || m->n_vocab > (1u << 24) || m->emb_rows < 1 ||
	    m->emb_rows > (1u << 22) || m->n_out < 1 || m->n_out > m->n_vocab || m->eos_id < 0 ||
	    (uint32_t)m->eos_id >= m->n_vocab || !(theta > 1.0f && theta < 1e30f) ||
	    !(m->norm_eps > 0.0f && m->norm_eps < 1.0f) || get_u32(h + 60) != 0 || m->name[0] == '\0' ||
	    memchr(h + 80, '\0', 32) == NULL) {
		return error_set(err, 0, "bad_model", "\"%s\": invalid model shape in header", path);
	}
	m->head_dim = m->dim / m->n_heads;
	layer_params = 2ull * m->dim + 4ull * m->dim * m->dim + 3ull * m->hidden * m->dim;
	n_params = (uint64_t)m->emb_rows * m->dim + m->n_layers * layer_params + m->dim + (uint64_t)m->n_out * m->dim +
		   m->n_out;
	want = MODEL_FILE_HEADER_SIZE + 4ull * m->n_out + 4ull * n_params + MODEL_FILE_DIGEST_SIZE;
	if (want != file_size) {
		return error_set(err, 0, "bad_model",
				 "\"%s\": file size %llu does not match the shape in the header (%llu)", path,
				 (unsigned long long)file_size, (unsigned long long)want);
	}
	/* RoPE tables, from theta. */
	{
		size_t half = m->head_dim / 2;
		double ln_theta = log_d((double)theta);

		m->rope_cos = malloc((size_t)m->max_ctx * half * sizeof(float));
		m->rope_sin = malloc((size_t)m->max_ctx * half * sizeof(float));
		if (!m->rope_cos || !m->rope_sin) {
			return error_set(err, 0, "bad_model", "\"%s\": out of memory", path);
		}
		for (size_t i = 0; i < half; i++) {
			double freq = exp_d(-((double)(2 * i) / (double)m->head_dim) * ln_theta);
			for (size_t p = 0; p < m->max_ctx; p++) {
				double sn, cs;
				sincos_d((double)p * freq, &sn, &cs);
				m->rope_cos[p * half + i] = (float)cs;
				m->rope_sin[p * half + i] = (float)sn;
			}
		}
	}
	m->attn_scale = 1.0f / sqrtf((float)m->head_dim);
	return 0;
}

/* Points the tensors into the buffer and checks ids and values. */
static int map_tensors(struct model *m, const char *path, struct error *err)
{
	unsigned char *p = m->buf + MODEL_FILE_HEADER_SIZE;
	size_t n_words = (m->buf_len - MODEL_FILE_HEADER_SIZE - MODEL_FILE_DIGEST_SIZE) / 4;
	const float *f;
	int eos_found = 0;

#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	for (size_t i = 0; i < n_words; i++) {
		uint32_t u = get_u32(p + 4 * i);
		memcpy(p + 4 * i, &u, 4);
	}
#endif
	m->out_ids = (const int32_t *)(void *)p;
	for (size_t i = 0; i < m->n_out; i++) {
		int32_t id = m->out_ids[i];
		if (id < 0 || (uint32_t)id >= m->n_vocab || (i > 0 && id <= m->out_ids[i - 1])) {
			return error_set(err, 0, "bad_model",
					 "\"%s\": output id list is not increasing within the vocabulary", path);
		}
		eos_found |= id == m->eos_id;
	}
	if (!eos_found) {
		return error_set(err, 0, "bad_model", "\"%s\": end-of-sentence id %d is not an output id", path,
				 m->eos_id);
	}
	f = (const float *)(void *)(p + 4 * (size_t)m->n_out);
	for (size_t i = 0; i < n_words - m->n_out; i++) {
		if (!isfinite(f[i])) {
			return error_set(err, 0, "bad_model", "\"%s\": weight %zu is not a finite number", path, i);
		}
	}
	m->layers = calloc(m->n_layers, sizeof *m->layers);
	if (!m->layers) {
		return error_set(err, 0, "bad_model", "\"%s\": out of memory", path);
	}
	m->tok_emb = f, f += (size_t)m->emb_rows * m->dim;
	for (size_t l = 0; l < m->n_layers; l++) {
		struct layer *L = &m->layers[l];
		size_t dd = (size_t)m->dim * m->dim, hd = (size_t)m->hidden * m->dim;

		L->attn_norm = f, f += m->dim;
		L->wq = f, f += dd;
		L->wk = f, f += dd;
		L->wv = f, f += dd;
		L->wo = f, f += dd;
		L->ffn_norm = f, f += m->dim;
		L->w_gate = f, f += hd;
		L->w_up = f, f += hd;
		L->w_down = f, f += hd;
	}
	m->final_norm = f, f += m->dim;
	m->out_w = f, f += (size_t)m->n_out * m->dim;
	m->out_bias = f;
	return 0;
}

struct model *model_load(const char *path, struct error *err)
{
	struct model *m = NULL, *ret = NULL;

	error_set(err, 0, "bad_model", "%s", "");
	if (sodium_init() < 0) {
		error_set(err, 0, "bad_model", "libsodium failed to initialise");
		goto done;
	}
	m = calloc(1, sizeof *m);
	if (!m) {
		error_set(err, 0, "bad_model", "\"%s\": out of memory", path);
		goto done;
	}
	if (read_file(path, &m->buf, &m->buf_len, err) != 0)
		goto done;
	if (parse_header(m, path, err) != 0)
		goto done;
	if (map_tensors(m, path, err) != 0)
		goto done;
	ret = m;
	m = NULL;
done:
	model_free(m);
	return ret;
}

void model_free(struct model *m)
{
	if (!m)
		return;
	free(m->rope_cos);
	free(m->rope_sin);
	free(m->layers);
	free(m->buf);
	free(m);
}

const char *model_name(const struct model *m)
{
	return m->name;
}

int32_t model_eos_id(const struct model *m)
{
	return m->eos_id;
}

size_t model_vocab_size(const struct model *m)
{
	return m->n_vocab;
}

size_t model_max_ctx(const struct model *m)
{
	return m->max_ctx;
}

const int32_t *model_output_ids(const struct model *m, size_t *n)
{
	if (n)
		*n = m->n_out;
	return m->out_ids;
}

int model_is_output_id(const struct model *m, int32_t id)
{
	size_t lo = 0, hi = m->n_out;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->out_ids[mid] == id)
			return 1;
		if (m->out_ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* ---- sessions ---- */

struct model_session *model_session_new(const struct model *m, size_t max_ctx)
{
	struct model_session *s;
	size_t kv, chunk_dim = (size_t)PREFILL_CHUNK * m->dim, chunk_hidden = (size_t)PREFILL_CHUNK * m->hidden;

	if (max_ctx == 0 || max_ctx > m->max_ctx)
		max_ctx = m->max_ctx;
	s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->m = m;
	s->max_ctx = max_ctx;
	kv = (size_t)m->n_layers * max_ctx * m->dim;
	s->k_cache = malloc(kv * sizeof(float));
	s->v_cache = malloc(kv * sizeof(float));
	s->x = malloc(chunk_dim * sizeof(float));
	s->xb = malloc(chunk_dim * sizeof(float));
	s->xb2 = malloc(chunk_dim * sizeof(float));
	s->q = malloc(chunk_dim * sizeof(float));
	s->hb = malloc(chunk_hidden * sizeof(float));
	s->hb2 = malloc(chunk_hidden * sizeof(float));
	s->att = malloc(max_ctx * sizeof(float));
	s->logits = calloc(m->n_out, sizeof(float));
	s->cand = malloc(m->n_out * sizeof(struct cand));
	if (!s->k_cache || !s->v_cache || !s->x || !s->xb || !s->xb2 || !s->q || !s->hb || !s->hb2 || !s->att ||
	    !s->logits || !s->cand) {
		model_session_free(s);
		return NULL;
	}
	return s;
}

void model_session_free(struct model_session *s)
{
	if (!s)
		return;
	free(s->k_cache);
	free(s->v_cache);
	free(s->x);
	free(s->xb);
	free(s->xb2);
	free(s->q);
	free(s->hb);
	free(s->hb2);
	free(s->att);
	free(s->logits);
	free(s->cand);
	free(s);
}

size_t model_session_max_ctx(const struct model_session *s)
{
	return s->max_ctx;
}

const char *model_session_error(const struct model_session *s)
{
	return s->err.msg;
}

const float *model_session_logits(const struct model_session *s, size_t *n)
{
	if (n)
		*n = s->m->n_out;
	return s->logits;
}

int model_generate(struct model_session *sess, const int32_t *prompt, size_t n_prompt, const struct model_sampling *sp,
		   size_t max_tokens, int (*on_token)(void *arg, int32_t id), void *arg, size_t *n_generated)
{
	const struct model *m = sess->m;
	size_t n = 0;

	sess->err.msg[0] = '\0';
	if (n_generated)
		*n_generated = 0;
	if (n_prompt == 0 || !prompt) {
		return error_set(&sess->err, 0, "invalid_request", "empty prompt");
	}
	if (n_prompt >= sess->max_ctx) {
		return error_set(
			&sess->err, 0, "invalid_request",
			"prompt of %zu tokens does not fit the context of %zu tokens (one is needed for the answer)",
			n_prompt, sess->max_ctx);
	}
	for (size_t i = 0; i < n_prompt; i++) {
		if (prompt[i] < 0 || (uint32_t)prompt[i] >= m->n_vocab) {
			return error_set(&sess->err, 0, "invalid_request",
					 "prompt token %zu: id %d out of range (vocabulary of %u)", i, prompt[i],
					 m->n_vocab);
		}
	}
	if (sp && sp->temperature != 0.0f &&
	    (!(sp->temperature > 0.0f) || !isfinite(sp->temperature) || isnan(sp->top_p))) {
		return error_set(&sess->err, 0, "invalid_request",
				 "invalid sampling parameters (temperature %g, top_p %g)", (double)sp->temperature,
				 (double)sp->top_p);
	}
	if (max_tokens == 0)
		return MODEL_DONE;

	sess->pos = 0;
	sess->rng = sp ? sp->seed : 0;
	for (size_t i = 0; i < n_prompt; i += PREFILL_CHUNK) {
		size_t T = n_prompt - i < PREFILL_CHUNK ? n_prompt - i : PREFILL_CHUNK;
		forward(sess, prompt + i, T, i + T == n_prompt);
	}
	for (;;) {
		int32_t id = m->out_ids[sample(sess, sp)];

		n++;
		if (n_generated)
			*n_generated = n;
		if (on_token && on_token(arg, id) != 0)
			return MODEL_STOPPED;
		if (id == m->eos_id || n == max_tokens || sess->pos + 1 >= sess->max_ctx)
			return MODEL_DONE;
		forward(sess, &id, 1, 1);
	}
}
