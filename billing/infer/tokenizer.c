/* tokenizer.c: DeepSeek-V3 byte-level BPE tokenizer (see tokenizer.h).
 *
 * Mirrors @lenml/tokenizers 3.7.2 (a fork of transformers.js), which is the
 * reference: PreTrainedTokenizer._encode_text, DictionarySplitter,
 * SplitPreTokenizer/regexSplit, ByteLevelPreTokenizer and BPE.bpe.
 *
 * Layout of a loaded tokenizer:
 *   - tokens: for every id, its raw bytes (offset/length into one blob);
 *   - vmap: raw bytes -> id of the BPE vocabulary (load time and lookups);
 *   - mmap: (left id, right id) -> (rank, merged id), the hot path;
 *   - added: a byte trie of the added tokens plus a content -> id map;
 *   - splits: the pre-tokenizer's regexes, translated from JavaScript
 *     syntax and semantics to PCRE2 and JIT-compiled.
 * Everything is read-only after tokenizer_load(); per-call state lives in
 * struct work. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "billing/infer/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/infer/unicode_tables.h"

#define MAX_SPLITS 8
#define SMALL_WORD 48 /* up to this many bytes, BPE scans instead of a heap */

enum { TOK_PRESENT = 1, TOK_ADDED = 2, TOK_SPECIAL = 4, TOK_LSTRIP = 8, TOK_RSTRIP = 16 };

struct hslot {
	uint32_t hash;
	int32_t id; /* -1: empty */
};

struct mslot {
	uint64_t key; /* left id << 32 | right id; UINT64_MAX: empty */
	uint32_t rank;
	int32_t id;
};

struct trie_node {
	int32_t id;       /* token ending here, or -1 */
	uint32_t child;   /* first child, 0 if none (node 0 is the root) */
	uint32_t sibling; /* next sibling, 0 if none */
	uint8_t byte;
};

struct tokenizer {
	size_t n_ids;
	uint32_t *off, *len; /* raw bytes of each id in blob */
	uint8_t *flags;
	char *blob;
	size_t blob_len, blob_cap;

	struct hslot *vmap; /* BPE vocabulary: raw bytes -> id */
	size_t vmap_mask;
	struct hslot *amap; /* added tokens: content -> id */
	size_t amap_mask;
	struct mslot *mmap;
	size_t mmap_mask;
	int32_t byte_id[256];

	struct trie_node *trie;
	size_t trie_n, trie_cap;
	bool added_first[256];
	bool any_strip;

	pcre2_code *split[MAX_SPLITS];
	size_t n_splits;
	uint32_t ovec_pairs;
};

/* ---------------------------------------------------------------- tables */

/* uprops[], uprop_space[]: generated (tools/gen/unicode_tables.py) */

/* GPT-2's bytes_to_unicode(): bytes 0x21-0x7e, 0xa1-0xac and 0xae-0xff
 * stand for themselves; the 68 others, in order, become U+0100..U+0143.
 * This is the inverse: the byte a symbol stands for, or -1. */
static int cp_byte(uint32_t cp)
{
	if (cp < 0x100)
		return (cp >= 0x21 && cp <= 0x7e) || (cp >= 0xa1 && cp <= 0xac) || cp >= 0xae ? (int)cp : -1;
	if (cp <= 0x120) /* 0x00-0x20 */
		return (int)(cp - 0x100);
	if (cp <= 0x142) /* 0x7f-0xa0 */
		return (int)(cp - 0x121 + 0x7f);
	if (cp == 0x143)
		return 0xad;
	return -1;
}

/* ------------------------------------------------------------- utilities */

struct sbuf {
	char *p;
	size_t n, cap;
	bool oom;
};

static void sb_add(struct sbuf *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *np;

		while (cap < b->n + n + 1)
			cap *= 2;
		np = realloc(b->p, cap);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_fmt(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_fmt(struct sbuf *b, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof tmp)
		sb_add(b, tmp, (size_t)n);
	else
		b->oom = true;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

static size_t table_size(size_t n)
{
	size_t size = 16;

	while (size < n * 2)
		size *= 2;
	return size;
}

/* Length of the valid UTF-8 prefix of s (the whole of it when valid). */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			if (i + 1 >= n || (s[i + 1] & 0xc0) != 0x80)
				return i;
			i += 2;
		} else if (c >= 0xe0 && c <= 0xef) {
			unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;

			if (i + 2 >= n || s[i + 1] < lo || s[i + 1] > hi || (s[i + 2] & 0xc0) != 0x80)
				return i;
			i += 3;
		} else if (c >= 0xf0 && c <= 0xf4) {
			unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;

			if (i + 3 >= n || s[i + 1] < lo || s[i + 1] > hi || (s[i + 2] & 0xc0) != 0x80 ||
			    (s[i + 3] & 0xc0) != 0x80)
				return i;
			i += 4;
		} else {
			return i;
		}
	}
	return n;
}

/* Decodes one code point of valid UTF-8 at s; returns its length. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] < 0xe0) {
		*cp = (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
		return 2;
	}
	if (s[0] < 0xf0) {
		*cp = (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
		return 3;
	}
	*cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 | (uint32_t)(s[2] & 0x3f) << 6 |
	      (s[3] & 0x3f);
	return 4;
}

static size_t utf8_char_len(unsigned char c)
{
	return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/* JavaScript's String.prototype.trim set (\s): true if the code point at s
 * is white space; *n gets its length. */
static bool js_space_at(const unsigned char *s, size_t avail, size_t *n)
{
	uint32_t cp;
	size_t lo = 0, hi = sizeof uprop_space / sizeof uprop_space[0];

	if (avail == 0)
		return false;
	*n = utf8_next(s, &cp);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (cp < uprop_space[mid][0])
			hi = mid;
		else if (cp > uprop_space[mid][1])
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

/* Byte-level spelling (e.g. "Ġthe") to raw bytes; false if a character is
 * not one of the 256 byte symbols. */
static bool bytelevel_decode(const char *s, size_t n, struct sbuf *out)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	out->n = 0;
	if (utf8_valid_prefix(u, n) != n)
		return false;
	while (i < n) {
		uint32_t cp;
		unsigned char b;

		i += utf8_next(u + i, &cp);
		if (cp_byte(cp) < 0)
			return false;
		b = (unsigned char)cp_byte(cp);
		sb_add(out, &b, 1);
	}
	sb_add(out, "", 0);
	return !out->oom;
}

/* ---------------------------------------------------------- token store */

static int blob_put(struct tokenizer *t, int32_t id, const void *s, size_t n, uint8_t flags)
{
	if (t->blob_len + n > t->blob_cap) {
		size_t cap = t->blob_cap ? t->blob_cap : 1 << 20;
		char *np;

		while (cap < t->blob_len + n)
			cap *= 2;
		np = realloc(t->blob, cap);
		if (!np)
			return -1;
		t->blob = np;
		t->blob_cap = cap;
	}
	if (n)
		memcpy(t->blob + t->blob_len, s, n);
	t->off[id] = (uint32_t)t->blob_len;
	t->len[id] = (uint32_t)n;
	t->flags[id] = flags;
	t->blob_len += n;
	return 0;
}

static int32_t hmap_find(const struct tokenizer *t, const struct hslot *map, size_t mask, const void *s, size_t n)
{
	uint64_t h = hash_bytes(s, n);
	size_t i = (size_t)h & mask;

	for (;; i = (i + 1) & mask) {
		int32_t id = map[i].id;

		if (id < 0)
			return -1;
		if (map[i].hash == (uint32_t)h && t->len[id] == n && memcmp(t->blob + t->off[id], s, n) == 0)
			return id;
	}
}

/* Inserts id (its bytes already in the blob); an existing entry with the
 * same bytes is replaced, as a later key wins in a JavaScript Map. */
static void hmap_put(const struct tokenizer *t, struct hslot *map, size_t mask, int32_t id)
{
	const char *s = t->blob + t->off[id];
	size_t n = t->len[id];
	uint64_t h = hash_bytes(s, n);
	size_t i = (size_t)h & mask;

	for (;; i = (i + 1) & mask) {
		int32_t cur = map[i].id;

		if (cur < 0 ||
		    (map[i].hash == (uint32_t)h && t->len[cur] == n && memcmp(t->blob + t->off[cur], s, n) == 0)) {
			map[i].hash = (uint32_t)h;
			map[i].id = id;
			return;
		}
	}
}

static inline size_t mkey_slot(uint64_t key, size_t mask)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

static inline const struct mslot *merge_find(const struct tokenizer *t, int32_t a, int32_t b)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	size_t i = mkey_slot(key, t->mmap_mask);

	for (;; i = (i + 1) & t->mmap_mask) {
		const struct mslot *m = &t->mmap[i];

		if (m->key == key)
			return m;
		if (m->key == UINT64_MAX)
			return NULL;
	}
}

static void merge_put(struct tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	size_t i = mkey_slot(key, t->mmap_mask);

	for (;; i = (i + 1) & t->mmap_mask) {
		struct mslot *m = &t->mmap[i];

		if (m->key == key || m->key == UINT64_MAX) {
			m->key = key;
			m->rank = rank; /* a later duplicate wins, as in a JS Map */
			m->id = id;
			return;
		}
	}
}

static int trie_add(struct tokenizer *t, const unsigned char *s, size_t n, int32_t id)
{
	uint32_t node = 0;

	for (size_t i = 0; i < n; i++) {
		uint32_t c = t->trie[node].child;

		while (c && t->trie[c].byte != s[i])
			c = t->trie[c].sibling;
		if (!c) {
			if (t->trie_n == t->trie_cap) {
				size_t cap = t->trie_cap * 2;
				struct trie_node *np = realloc(t->trie, cap * sizeof *np);

				if (!np)
					return -1;
				t->trie = np;
				t->trie_cap = cap;
			}
			c = (uint32_t)t->trie_n++;
			t->trie[c] =
				(struct trie_node){.id = -1, .child = 0, .sibling = t->trie[node].child, .byte = s[i]};
			t->trie[node].child = c;
		}
		node = c;
	}
	t->trie[node].id = id;
	return 0;
}

/* Longest added token at s, as DictionarySplitter does; 0 if none. */
static size_t trie_match(const struct tokenizer *t, const unsigned char *s, size_t n, int32_t *id)
{
	uint32_t node = 0;
	size_t best = 0;

	for (size_t i = 0; i < n; i++) {
		uint32_t c = t->trie[node].child;

		while (c && t->trie[c].byte != s[i])
			c = t->trie[c].sibling;
		if (!c)
			break;
		node = c;
		if (t->trie[node].id >= 0) {
			best = i + 1;
			*id = t->trie[node].id;
		}
	}
	return best;
}

/* ------------------------------------------------ regex: JS -> PCRE2 */

/* Our table of one property said through PCRE2's own \p{X}: PCRE2's
 * Unicode data is older than ours but, so far, only lacks characters
 * assigned later.  So \p{X} plus the `extra` ranges is exactly our table
 * and keeps the JIT's constant-time property lookup; spelling out all
 * ~700 ranges of \p{L} makes the regexes three times slower.  Checked for
 * the installed libpcre2 at load time; when PCRE2 has a character that we
 * do not (`native` false), the full table is used instead. */
struct prop_items {
	bool native;
	uint32_t (*extra)[2];
	size_t n_extra;
};

struct regex_ctx {
	struct prop_items props[sizeof uprops / sizeof uprops[0]];
	char *cps; /* every code point but surrogates, as UTF-8 */
	size_t cps_len;
};

static size_t utf8_put(uint32_t c, char *b)
{
	if (c < 0x80) {
		b[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		b[0] = (char)(0xc0 | c >> 6);
		b[1] = (char)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		b[0] = (char)(0xe0 | c >> 12);
		b[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		b[2] = (char)(0x80 | (c & 0x3f));
		return 3;
	}
	b[0] = (char)(0xf0 | c >> 18);
	b[1] = (char)(0x80 | ((c >> 12) & 0x3f));
	b[2] = (char)(0x80 | ((c >> 6) & 0x3f));
	b[3] = (char)(0x80 | (c & 0x3f));
	return 4;
}

/* a minus b, both sorted and disjoint; out has room for na + nb ranges */
static size_t ranges_sub(const uint32_t (*a)[2], size_t na, const uint32_t (*b)[2], size_t nb, uint32_t (*out)[2])
{
	size_t n = 0, j = 0;

	for (size_t i = 0; i < na; i++) {
		uint32_t lo = a[i][0], hi = a[i][1];

		while (j < nb && b[j][1] < lo)
			j++;
		for (size_t k = j; k < nb && b[k][0] <= hi && lo <= hi; k++) {
			if (b[k][0] > lo) {
				out[n][0] = lo;
				out[n++][1] = b[k][0] - 1;
			}
			if (b[k][1] >= hi) {
				lo = 1; /* nothing left: make lo > hi */
				hi = 0;
			} else {
				lo = b[k][1] + 1;
			}
		}
		if (lo <= hi) {
			out[n][0] = lo;
			out[n++][1] = hi;
		}
	}
	return n;
}

/* Ranges of code points PCRE2 puts in \p{name}; NULL when out of memory. */
static uint32_t (*native_ranges(struct regex_ctx *rx, const char *name, size_t *n))[2]
{
	uint32_t(*r)[2] = NULL;
	size_t cap = 0;
	char pat[32];
	pcre2_code *re;
	pcre2_match_data *md = NULL;
	int ec;
	PCRE2_SIZE eoff, start = 0;

	*n = 0;
	snprintf(pat, sizeof pat, "\\p{%s}+", name);
	re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eoff, NULL);
	if (re) {
		(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
		md = pcre2_match_data_create(1, NULL);
	}
	if (!re || !md)
		goto fail;
	while (pcre2_match(re, (PCRE2_SPTR)rx->cps, rx->cps_len, start, PCRE2_NO_UTF_CHECK, md, NULL) > 0) {
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		size_t last = ov[1] - 1;
		uint32_t lo, hi;

		while (((unsigned char)rx->cps[last] & 0xc0) == 0x80)
			last--;
		utf8_next((const unsigned char *)rx->cps + ov[0], &lo);
		utf8_next((const unsigned char *)rx->cps + last, &hi);
		if (*n + 2 > cap) {
			uint32_t(*nr)[2];

			cap = cap ? cap * 2 : 256;
			nr = realloc(r, cap * sizeof *nr);
			if (!nr)
				goto fail;
			r = nr;
		}
		if (lo < 0xd800 && hi > 0xdfff) { /* the buffer has no surrogates */
			r[*n][0] = lo;
			r[(*n)++][1] = 0xd7ff;
			lo = 0xe000;
		}
		r[*n][0] = lo;
		r[(*n)++][1] = hi;
		start = ov[1];
	}
	if (!r)
		r = malloc(sizeof *r);
	if (!r)
		goto fail;
	pcre2_match_data_free(md);
	pcre2_code_free(re);
	return r;
fail:
	free(r);
	pcre2_match_data_free(md);
	pcre2_code_free(re);
	return NULL;
}

static int regex_ctx_init(struct regex_ctx *rx)
{
	size_t k;

	memset(rx, 0, sizeof *rx);
	rx->cps = malloc(4 * 0x110000);
	if (!rx->cps)
		return -1;
	for (uint32_t c = 0; c < 0x110000; c++)
		if (c < 0xd800 || c > 0xdfff)
			rx->cps_len += utf8_put(c, rx->cps + rx->cps_len);
	for (k = 0; k < sizeof uprops / sizeof uprops[0]; k++) {
		const struct uprop *up = &uprops[k];
		size_t nn, nmiss;
		uint32_t(*nat)[2] = native_ranges(rx, up->name, &nn), (*miss)[2];

		if (!nat)
			return -1;
		miss = malloc((nn + up->n + 1) * sizeof *miss);
		rx->props[k].extra = malloc((nn + up->n + 1) * sizeof *miss);
		if (!miss || !rx->props[k].extra) {
			free(nat);
			free(miss);
			return -1;
		}
		nmiss = ranges_sub((const uint32_t(*)[2])nat, nn, up->r, up->n, miss);
		rx->props[k].native = nmiss == 0;
		rx->props[k].n_extra = ranges_sub(up->r, up->n, (const uint32_t(*)[2])nat, nn, rx->props[k].extra);
		free(nat);
		free(miss);
	}
	free(rx->cps);
	rx->cps = NULL;
	return 0;
}

static void regex_ctx_release(struct regex_ctx *rx)
{
	for (size_t k = 0; k < sizeof uprops / sizeof uprops[0]; k++)
		free(rx->props[k].extra);
	free(rx->cps);
	memset(rx, 0, sizeof *rx);
}

static const struct uprop *uprop_find(const char *name, size_t n)
{
	static const char *const longnames[][2] = {
		{"Letter", "L"}, {"Mark", "M"}, {"Number", "N"}, {"Punctuation", "P"}, {"Symbol", "S"},
	};

	for (size_t i = 0; i < sizeof longnames / sizeof longnames[0]; i++)
		if (strlen(longnames[i][0]) == n && memcmp(name, longnames[i][0], n) == 0) {
			name = longnames[i][1];
			n = 1;
		}
	for (size_t i = 0; i < sizeof uprops / sizeof uprops[0]; i++)
		if (strlen(uprops[i].name) == n && memcmp(name, uprops[i].name, n) == 0)
			return &uprops[i];
	return NULL;
}

static void emit_ranges(struct sbuf *o, bool in_class, bool negate, const uint32_t (*r)[2], size_t n)
{
	if (!in_class)
		sb_str(o, negate ? "[^" : "[");
	for (size_t i = 0; i < n; i++) {
		if (r[i][0] == r[i][1])
			sb_fmt(o, "\\x{%x}", (unsigned)r[i][0]);
		else
			sb_fmt(o, "\\x{%x}-\\x{%x}", (unsigned)r[i][0], (unsigned)r[i][1]);
	}
	if (!in_class)
		sb_str(o, "]");
}

static void emit_prop(struct sbuf *o, const struct regex_ctx *rx, bool in_class, bool negate, const struct uprop *up)
{
	const struct prop_items *pi = &rx->props[up - uprops];

	if (!pi->native) {
		emit_ranges(o, in_class, negate, up->r, up->n);
		return;
	}
	if (!in_class)
		sb_str(o, negate ? "[^" : "[");
	sb_fmt(o, "\\p{%s}", up->name);
	emit_ranges(o, true, false, (const uint32_t(*)[2])pi->extra, pi->n_extra);
	if (!in_class)
		sb_str(o, "]");
}

static const uint32_t digit_ranges[][2] = {{0x30, 0x39}};
static const uint32_t word_ranges[][2] = {{0x30, 0x39}, {0x41, 0x5a}, {0x5f, 0x5f}, {0x61, 0x7a}};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parses \uXXXX, \u{X...} or \xHH after the backslash at p[i]; returns the
 * number of pattern bytes used, 0 if malformed. */
static size_t parse_hex_escape(const char *p, size_t n, size_t i, uint32_t *cp)
{
	size_t j = i + 2, digits = 0;
	uint32_t v = 0;

	if (p[i + 1] == 'u' && j < n && p[j] == '{') {
		for (j++; j < n && p[j] != '}'; j++, digits++) {
			if (hexval(p[j]) < 0 || digits > 6)
				return 0;
			v = v << 4 | (uint32_t)hexval(p[j]);
		}
		if (j >= n || digits == 0 || v > 0x10ffff)
			return 0;
		*cp = v;
		return j + 1 - i;
	}
	digits = p[i + 1] == 'u' ? 4 : 2;
	if (j + digits > n)
		return 0;
	for (size_t k = 0; k < digits; k++) {
		if (hexval(p[j + k]) < 0)
			return 0;
		v = v << 4 | (uint32_t)hexval(p[j + k]);
	}
	*cp = v;
	return 2 + digits;
}

/* transformers.js createPattern(): drops the backslash of \# \& \~ and
 * rewrites the patterns it knows JavaScript cannot parse. */
static void js_preprocess(struct sbuf *o, const char *p, size_t n)
{
	static const char *const fixes[][2] = {
		{"(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))"},
		{" ?[^(\\s|[.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c])]+",
		 " ?[^\\s.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c]+"},
	};
	struct sbuf tmp = {0};

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\\' && i + 1 < n && (p[i + 1] == '#' || p[i + 1] == '&' || p[i + 1] == '~'))
			i++;
		sb_add(&tmp, p + i, 1);
	}
	sb_add(&tmp, "", 0);
	o->n = 0;
	if (tmp.oom) {
		o->oom = true;
		return;
	}
	for (size_t k = 0; k < sizeof fixes / sizeof fixes[0]; k++) {
		struct sbuf next = {0};
		size_t kl = strlen(fixes[k][0]);
		const char *s = tmp.p, *hit;

		while ((hit = strstr(s, fixes[k][0])) != NULL) {
			sb_add(&next, s, (size_t)(hit - s));
			sb_str(&next, fixes[k][1]);
			s = hit + kl;
		}
		sb_str(&next, s);
		free(tmp.p);
		tmp = next;
		if (tmp.oom)
			break;
	}
	sb_add(o, tmp.p, tmp.n);
	free(tmp.p);
	if (tmp.oom)
		o->oom = true;
}

#define JS_WORD "[A-Za-z0-9_]"

/* The escape at p[*pos] (a backslash), in or outside a character class;
 * *pos moves past it.  0, or -1 when PCRE2 cannot say the same (*pos is
 * then the offset to report). */
static int js_escape(const struct regex_ctx *rx, const char *p, size_t n, size_t *pos, bool in_class, struct sbuf *o)
{
	size_t i = *pos;
	char d = i + 1 < n ? p[i + 1] : '\0';
	uint32_t cp;
	size_t used;

	switch (d) {
	case 's':
	case 'S':
		if (d == 'S' && in_class)
			goto unsupported;
		emit_ranges(o, in_class, d == 'S', uprop_space, sizeof uprop_space / sizeof uprop_space[0]);
		i += 2;
		break;
	case 'd':
	case 'D':
		if (d == 'D' && in_class)
			goto unsupported;
		emit_ranges(o, in_class, d == 'D', digit_ranges, 1);
		i += 2;
		break;
	case 'w':
	case 'W':
		if (d == 'W' && in_class)
			goto unsupported;
		emit_ranges(o, in_class, d == 'W', word_ranges, 4);
		i += 2;
		break;
	case 'p':
	case 'P': {
		const char *close = i + 2 < n && p[i + 2] == '{' ? memchr(p + i + 3, '}', n - i - 3) : NULL;
		const struct uprop *up = close ? uprop_find(p + i + 3, (size_t)(close - (p + i + 3))) : NULL;

		if (!up || (d == 'P' && in_class))
			goto unsupported;
		emit_prop(o, rx, in_class, d == 'P', up);
		i = (size_t)(close - p) + 1;
		break;
	}
	case 'b':
		if (in_class)
			sb_str(o, "\\x{8}");
		else
			sb_str(o, "(?:(?<=" JS_WORD ")(?!" JS_WORD ")|(?<!" JS_WORD ")(?=" JS_WORD "))");
		i += 2;
		break;
	case 'B':
		if (in_class)
			goto unsupported;
		sb_str(o, "(?:(?<=" JS_WORD ")(?=" JS_WORD ")|(?<!" JS_WORD ")(?!" JS_WORD "))");
		i += 2;
		break;
	case 'u':
	case 'x':
		used = parse_hex_escape(p, n, i, &cp);
		if (!used)
			goto unsupported;
		i += used;
		if (cp >= 0xd800 && cp <= 0xdbff && i + 6 <= n && p[i] == '\\' && p[i + 1] == 'u') {
			uint32_t lo;
			size_t used2 = parse_hex_escape(p, n, i, &lo);

			if (used2 == 6 && lo >= 0xdc00 && lo <= 0xdfff) {
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				i += used2;
			}
		}
		if (cp >= 0xd800 && cp <= 0xdfff)
			goto unsupported; /* a lone surrogate never matches UTF-8 */
		sb_fmt(o, "\\x{%x}", (unsigned)cp);
		break;
	case 't':
	case 'n':
	case 'r':
	case 'f':
		sb_add(o, p + i, 2);
		i += 2;
		break;
	case 'v':
		sb_str(o, "\\x{b}");
		i += 2;
		break;
	case '0':
		if (i + 2 < n && p[i + 2] >= '0' && p[i + 2] <= '9')
			goto unsupported;
		sb_str(o, "\\x{0}");
		i += 2;
		break;
	case 'c':
		if (i + 2 >= n || !((p[i + 2] >= 'a' && p[i + 2] <= 'z') || (p[i + 2] >= 'A' && p[i + 2] <= 'Z')))
			goto unsupported;
		sb_fmt(o, "\\x{%x}", (unsigned)(p[i + 2] & 0x1f));
		i += 3;
		break;
	case 'k':
		if (in_class)
			goto unsupported;
		sb_str(o, "\\k");
		i += 2;
		break;
	default:
		if (d >= '1' && d <= '9' && !in_class) {
			sb_add(o, p + i, 2); /* back reference */
			i += 2;
		} else if (d && strchr("^$\\.*+?()[]{}|/-", d)) {
			sb_add(o, p + i, 2);
			i += 2;
		} else {
			goto unsupported;
		}
	}
	*pos = i;
	return 0;
unsupported:
	*pos = i;
	return -1;
}

/* Rewrites a JavaScript (flags "gu") regex so that PCRE2 (UTF, UCP,
 * DOLLAR_ENDONLY) matches exactly the same strings the same way: character
 * classes and \p{..} are spelled out from our Unicode tables, \d \w \b
 * keep their ASCII meaning, "." keeps excluding line terminators. */
static int js_to_pcre2(const struct regex_ctx *rx, const char *p, size_t n, struct sbuf *o, struct error *err)
{
	bool in_class = false;
	size_t i = 0;

	while (i < n) {
		char c = p[i];

		if (c == '\\') {
			if (js_escape(rx, p, n, &i, in_class, o) < 0)
				goto unsupported;
		} else if (in_class) {
			if (c == ']')
				in_class = false;
			if (c == '[')
				sb_str(o, "\\["); /* PCRE2 would read "[:" as a POSIX class */
			else
				sb_add(o, &c, 1);
			i++;
		} else if (c == '[') {
			bool neg = i + 1 < n && p[i + 1] == '^';
			size_t j = i + 1 + (neg ? 1 : 0);

			if (j < n && p[j] == ']') { /* JavaScript's [] and [^] */
				sb_str(o, neg ? "(?s:.)" : "(?!)");
				i = j + 1;
			} else {
				sb_str(o, neg ? "[^" : "[");
				in_class = true;
				i = j;
			}
		} else if (c == '.') {
			sb_str(o, "[^\\n\\r\\x{2028}\\x{2029}]");
			i++;
		} else if (c == '(' && i + 2 < n && p[i + 1] == '?' && !strchr(":=!<", p[i + 2])) {
			goto unsupported;
		} else {
			sb_add(o, p + i, 1);
			i++;
		}
	}
	if (in_class) {
		return error_set(err, 0, "bad_tokenizer", "unterminated character class in pre-tokenizer regex");
	}
	return o->oom ? -1 : 0;
unsupported:
	return error_set(err, 0, "bad_tokenizer", "unsupported construct at offset %zu of pre-tokenizer regex", i);
}

static pcre2_code *compile_split(const struct regex_ctx *rx, const char *js, size_t n, struct error *err)
{
	struct sbuf pre = {0}, out = {0};
	pcre2_code *re = NULL;
	int ec;
	PCRE2_SIZE eoff;

	js_preprocess(&pre, js, n);
	if (pre.oom) {
		error_set(err, 0, "bad_tokenizer", "out of memory");
		goto done;
	}
	if (js_to_pcre2(rx, pre.p ? pre.p : "", pre.n, &out, err) < 0)
		goto done;
	re = pcre2_compile((PCRE2_SPTR)out.p, out.n,
			   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_NEVER_BACKSLASH_C, &ec, &eoff, NULL);
	if (!re) {
		PCRE2_UCHAR msg[160];

		pcre2_get_error_message(ec, msg, sizeof msg);
		error_set(err, 0, "bad_tokenizer", "cannot compile pre-tokenizer regex: %s", (const char *)msg);
		goto done;
	}
	/* without JIT (unsupported CPU) the interpreter gives the same results */
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
done:
	free(pre.p);
	free(out.p);
	return re;
}

/* --------------------------------------------------------------- loading */

static const char *jstr(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* true when the key is absent, null or false */
static bool jfalse(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	return !v || json_is_null(v) || json_is_false(v);
}

static int load_pre_tokenizer(struct tokenizer *t, const json_t *pt, struct error *err)
{
	struct regex_ctx rx;
	const json_t *list = NULL, *item;
	size_t i, n;
	int rc = -1;

	if (regex_ctx_init(&rx) < 0) {
		error_set(err, 0, "bad_tokenizer", "out of memory");
		goto done;
	}
	if (pt && jstr(pt, "type") && strcmp(jstr(pt, "type"), "Sequence") == 0)
		list = json_object_get(pt, "pretokenizers");
	n = list ? json_array_size(list) : 0;
	if (n == 0 || n > MAX_SPLITS + 1) {
		error_set(err, 0, "bad_tokenizer",
			  "unsupported pre_tokenizer (want a Sequence of Split and ByteLevel)");
		goto done;
	}
	json_array_foreach(list, i, item)
	{
		const char *type = jstr(item, "type");
		const json_t *pattern = json_object_get(item, "pattern");
		const char *behavior = jstr(item, "behavior");

		if (type && strcmp(type, "ByteLevel") == 0 && i == n - 1) {
			if (!jfalse(item, "add_prefix_space") || !json_is_false(json_object_get(item, "use_regex"))) {
				error_set(err, 0, "bad_tokenizer", "unsupported ByteLevel pre-tokenizer options");
				goto done;
			}
		} else if (type && strcmp(type, "Split") == 0 && i < n - 1) {
			if (!jstr(pattern, "Regex") || !behavior || strcmp(behavior, "Isolated") != 0 ||
			    !jfalse(item, "invert")) {
				error_set(err, 0, "bad_tokenizer",
					  "unsupported Split pre-tokenizer (want an Isolated Regex)");
				goto done;
			}
			t->split[t->n_splits] =
				compile_split(&rx, jstr(pattern, "Regex"),
					      json_string_length(json_object_get(pattern, "Regex")), err);
			if (!t->split[t->n_splits])
				goto done;
			t->n_splits++;
		} else {
			error_set(err, 0, "bad_tokenizer", "unsupported pre-tokenizer \"%s\"", type ? type : "?");
			goto done;
		}
	}
	for (i = 0; i < t->n_splits; i++) {
		uint32_t caps = 0;

		(void)pcre2_pattern_info(t->split[i], PCRE2_INFO_CAPTURECOUNT, &caps);
		if (caps + 1 > t->ovec_pairs)
			t->ovec_pairs = caps + 1;
	}
	rc = 0;
done:
	regex_ctx_release(&rx);
	return rc;
}

static int tok_oom(struct error *err)
{
	return error_set(err, 0, "bad_tokenizer", "out of memory");
}

/* A BPE model of the options we implement; the largest token id of its
 * vocabulary and added tokens into *max_id. */
static int check_model(const json_t *model, const json_t *added, int64_t *max_id, struct error *err)
{
	const json_t *vocab = json_object_get(model, "vocab");
	const char *type = jstr(model, "type");
	const char *key;
	const json_t *val;
	size_t i;

	if (!type || strcmp(type, "BPE") != 0 || !json_is_object(vocab) ||
	    !json_is_array(json_object_get(model, "merges")))
		return error_set(err, 0, "bad_tokenizer", "unsupported model (want BPE with vocab and merges)");
	if (!jfalse(model, "byte_fallback") || !jfalse(model, "ignore_merges") ||
	    !jfalse(model, "continuing_subword_prefix") || !jfalse(model, "end_of_word_suffix"))
		return error_set(err, 0, "bad_tokenizer", "unsupported BPE options");
	*max_id = -1;
	json_object_foreach((json_t *)vocab, key, val)
	{
		if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) > INT32_MAX / 2)
			return error_set(err, 0, "bad_tokenizer", "bad id for vocabulary entry \"%s\"", key);
		if (json_integer_value(val) > *max_id)
			*max_id = json_integer_value(val);
	}
	json_array_foreach(added, i, val)
	{
		const json_t *id = json_object_get(val, "id");

		if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > INT32_MAX / 2 ||
		    !jstr(val, "content") || json_string_length(json_object_get(val, "content")) == 0)
			return error_set(err, 0, "bad_tokenizer", "bad added token #%zu", i);
		if (json_integer_value(id) > *max_id)
			*max_id = json_integer_value(id);
	}
	return 0;
}

/* Every vocabulary entry into the store and the token -> id map, then the
 * id of each of the 256 bytes. */
static int load_vocab(struct tokenizer *t, const json_t *vocab, struct error *err)
{
	struct sbuf a = {0};
	const char *key;
	const json_t *val;
	int rc = -1;

	t->vmap_mask = table_size(json_object_size(vocab)) - 1;
	t->vmap = malloc((t->vmap_mask + 1) * sizeof *t->vmap);
	if (!t->vmap)
		return tok_oom(err);
	memset(t->vmap, 0xff, (t->vmap_mask + 1) * sizeof *t->vmap);
	json_object_foreach((json_t *)vocab, key, val)
	{
		int32_t id = (int32_t)json_integer_value(val);

		if (t->flags[id] & TOK_PRESENT) {
			error_set(err, 0, "bad_tokenizer", "vocabulary id %d appears twice", (int)id);
			goto done;
		}
		if (!bytelevel_decode(key, strlen(key), &a)) {
			/* BPE can never produce it ("<｜begin▁of▁sentence｜>" is
			 * both here and an added token): keep its text */
			if (a.oom || blob_put(t, id, key, strlen(key), TOK_PRESENT) < 0) {
				tok_oom(err);
				goto done;
			}
			continue;
		}
		if (blob_put(t, id, a.p, a.n, TOK_PRESENT) < 0) {
			tok_oom(err);
			goto done;
		}
		hmap_put(t, t->vmap, t->vmap_mask, id);
	}
	for (int c = 0; c < 256; c++) {
		unsigned char byte = (unsigned char)c;

		t->byte_id[c] = hmap_find(t, t->vmap, t->vmap_mask, &byte, 1);
		if (t->byte_id[c] < 0) {
			error_set(err, 0, "bad_tokenizer", "vocabulary lacks byte 0x%02x", (unsigned)c);
			goto done;
		}
	}
	rc = 0;
done:
	free(a.p);
	return rc;
}

/* The two parts of merge #i ("a b", or ["a", "b"]). */
static int merge_parts(const json_t *val, size_t i, const char **left, size_t *left_n, const char **right,
		       size_t *right_n, struct error *err)
{
	if (json_is_string(val)) {
		/* "a b": JavaScript's split(" ", 2) keeps the first two fields */
		const char *s = json_string_value(val), *sp = strchr(s, ' '), *end;

		if (!sp)
			return error_set(err, 0, "bad_tokenizer", "bad merge #%zu", i);
		end = strchr(sp + 1, ' ');
		*left = s;
		*left_n = (size_t)(sp - s);
		*right = sp + 1;
		*right_n = end ? (size_t)(end - *right) : strlen(*right);
		return 0;
	}
	if (json_is_array(val) && json_array_size(val) == 2 && json_is_string(json_array_get(val, 0)) &&
	    json_is_string(json_array_get(val, 1))) {
		*left = json_string_value(json_array_get(val, 0));
		*left_n = json_string_length(json_array_get(val, 0));
		*right = json_string_value(json_array_get(val, 1));
		*right_n = json_string_length(json_array_get(val, 1));
		return 0;
	}
	return error_set(err, 0, "bad_tokenizer", "bad merge #%zu", i);
}

/* The merges, ranked in file order; those that can never apply are left out. */
static int load_merges(struct tokenizer *t, const json_t *merges, struct error *err)
{
	struct sbuf a = {0}, b = {0}, ab = {0};
	const json_t *val;
	size_t i;
	int rc = -1;

	t->mmap_mask = table_size(json_array_size(merges)) - 1;
	t->mmap = malloc((t->mmap_mask + 1) * sizeof *t->mmap);
	if (!t->mmap)
		return tok_oom(err);
	memset(t->mmap, 0xff, (t->mmap_mask + 1) * sizeof *t->mmap);
	json_array_foreach(merges, i, val)
	{
		const char *left = NULL, *right = NULL;
		size_t left_n = 0, right_n = 0;
		int32_t ia, ib, iab;

		if (merge_parts(val, i, &left, &left_n, &right, &right_n, err) < 0)
			goto done;
		if (!bytelevel_decode(left, left_n, &a) || !bytelevel_decode(right, right_n, &b)) {
			if (a.oom || b.oom) {
				tok_oom(err);
				goto done;
			}
			continue; /* can never apply: its parts are not byte-level */
		}
		ia = hmap_find(t, t->vmap, t->vmap_mask, a.p, a.n);
		ib = hmap_find(t, t->vmap, t->vmap_mask, b.p, b.n);
		if (ia < 0 || ib < 0)
			continue; /* can never apply: a part is no token */
		ab.n = 0;
		sb_add(&ab, a.p, a.n);
		sb_add(&ab, b.p, b.n);
		if (ab.oom) {
			tok_oom(err);
			goto done;
		}
		iab = hmap_find(t, t->vmap, t->vmap_mask, ab.p, ab.n);
		if (iab < 0) {
			error_set(err, 0, "bad_tokenizer", "merge #%zu gives a token missing from the vocabulary", i);
			goto done;
		}
		merge_put(t, ia, ib, (uint32_t)i, iab);
	}
	rc = 0;
done:
	free(a.p);
	free(b.p);
	free(ab.p);
	return rc;
}

/* The added tokens: store, map, flags and the trie that finds them in text. */
static int load_added(struct tokenizer *t, const json_t *added, struct error *err)
{
	struct sbuf a = {0};
	const json_t *val;
	size_t i;
	int rc = -1;

	t->amap_mask = table_size(json_array_size(added)) - 1;
	t->amap = malloc((t->amap_mask + 1) * sizeof *t->amap);
	t->trie_cap = 1024;
	t->trie = malloc(t->trie_cap * sizeof *t->trie);
	if (!t->amap || !t->trie)
		return tok_oom(err);
	memset(t->amap, 0xff, (t->amap_mask + 1) * sizeof *t->amap);
	t->trie[0] = (struct trie_node){.id = -1};
	t->trie_n = 1;
	json_array_foreach(added, i, val)
	{
		int32_t id = (int32_t)json_integer_value(json_object_get(val, "id"));
		const json_t *content = json_object_get(val, "content");
		const char *s = json_string_value(content);
		size_t n = json_string_length(content);
		uint8_t flags = TOK_PRESENT | TOK_ADDED;
		int32_t vid;

		if (json_is_true(json_object_get(val, "special")))
			flags |= TOK_SPECIAL;
		if (json_is_true(json_object_get(val, "lstrip")))
			flags |= TOK_LSTRIP;
		if (json_is_true(json_object_get(val, "rstrip")))
			flags |= TOK_RSTRIP;
		if (flags & (TOK_LSTRIP | TOK_RSTRIP))
			t->any_strip = true;
		/* The reference also puts the content into the BPE's token -> id
		 * map; that only matters if BPE can output that spelling under
		 * another id, which we do not model. */
		if (bytelevel_decode(s, n, &a) && (vid = hmap_find(t, t->vmap, t->vmap_mask, a.p, a.n)) >= 0 &&
		    vid != id) {
			error_set(err, 0, "bad_tokenizer", "added token \"%s\" shadows vocabulary id %d", s, (int)vid);
			goto done;
		}
		if (a.oom || blob_put(t, id, s, n, flags) < 0 || trie_add(t, (const unsigned char *)s, n, id) < 0) {
			tok_oom(err);
			goto done;
		}
		hmap_put(t, t->amap, t->amap_mask, id);
		t->added_first[(unsigned char)s[0]] = true;
	}
	rc = 0;
done:
	free(a.p);
	return rc;
}

static int load_model(struct tokenizer *t, const json_t *model, const json_t *added, struct error *err)
{
	int64_t max_id = -1;

	if (check_model(model, added, &max_id, err) < 0)
		return -1;
	t->n_ids = (size_t)(max_id + 1);
	t->off = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->off);
	t->len = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->len);
	t->flags = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->flags);
	if (!t->off || !t->len || !t->flags)
		return tok_oom(err);
	if (load_vocab(t, json_object_get(model, "vocab"), err) < 0 ||
	    load_merges(t, json_object_get(model, "merges"), err) < 0 || load_added(t, added, err) < 0)
		return -1;
	return 0;
}

struct tokenizer *tokenizer_load(const char *path, struct error *err)
{
	struct tokenizer *t = NULL;
	json_t *root = NULL, *no_added = NULL;
	json_error_t jerr;
	const json_t *norm, *added;

	if (!path) {
		error_set(err, 0, "bad_tokenizer", "no tokenizer path");
		goto fail;
	}
	root = json_load_file(path, 0, &jerr);
	if (!root) {
		if (jerr.line > 0)
			error_set(err, 0, "bad_tokenizer", "cannot load \"%s\": %s (line %d)", path, jerr.text,
				  jerr.line);
		else
			error_set(err, 0, "bad_tokenizer", "cannot load \"%s\": %s", path, jerr.text);
		goto fail;
	}
	t = calloc(1, sizeof *t);
	if (!t) {
		error_set(err, 0, "bad_tokenizer", "out of memory");
		goto fail;
	}
	norm = json_object_get(root, "normalizer");
	if (norm && !json_is_null(norm) &&
	    !(jstr(norm, "type") && strcmp(jstr(norm, "type"), "Sequence") == 0 &&
	      json_array_size(json_object_get(norm, "normalizers")) == 0)) {
		error_set(err, 0, "bad_tokenizer", "unsupported normalizer in \"%s\"", path);
		goto fail;
	}
	added = json_object_get(root, "added_tokens");
	if (added && !json_is_array(added)) {
		error_set(err, 0, "bad_tokenizer", "bad added_tokens in \"%s\"", path);
		goto fail;
	}
	if (!added && !(added = no_added = json_array())) {
		error_set(err, 0, "bad_tokenizer", "out of memory");
		goto fail;
	}
	if (load_model(t, json_object_get(root, "model"), added, err) < 0 ||
	    load_pre_tokenizer(t, json_object_get(root, "pre_tokenizer"), err) < 0)
		goto fail;
	json_decref(no_added);
	json_decref(root);
	return t;
fail:
	json_decref(no_added);
	json_decref(root);
	tokenizer_free(t);
	return NULL;
}

void tokenizer_free(struct tokenizer *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n_splits; i++)
		pcre2_code_free(t->split[i]);
	free(t->off);
	free(t->len);
	free(t->flags);
	free(t->blob);
	free(t->vmap);
	free(t->amap);
	free(t->mmap);
	free(t->trie);
	free(t);
}

/* -------------------------------------------------------------- encoding */

struct bnode {
	int32_t id;
	int32_t prev, next; /* -1: none */
	int32_t alive;
};

/* Per-call state: nothing here is shared between threads. */
struct work {
	const struct tokenizer *tok;
	pcre2_match_data *md;
	int32_t *ids;
	size_t n, cap;
	bool count_only;
	int err; /* errno value once something failed */
	struct bnode *nodes;
	uint64_t *heap;
	size_t scratch_cap; /* nodes: scratch_cap, heap: 3 * scratch_cap */
};

static int emit(struct work *w, int32_t id)
{
	if (!w->count_only) {
		if (w->n == w->cap) {
			size_t cap = w->cap ? w->cap * 2 : 256;
			int32_t *np = realloc(w->ids, cap * sizeof *np);

			if (!np) {
				w->err = ENOMEM;
				return -1;
			}
			w->ids = np;
			w->cap = cap;
		}
		w->ids[w->n] = id;
	}
	w->n++;
	return 0;
}

static int scratch(struct work *w, size_t n)
{
	struct bnode *nodes;
	uint64_t *heap;
	size_t cap;

	if (n <= w->scratch_cap)
		return 0;
	cap = w->scratch_cap ? w->scratch_cap : 256;
	while (cap < n)
		cap *= 2;
	nodes = realloc(w->nodes, cap * sizeof *nodes);
	if (nodes)
		w->nodes = nodes;
	heap = nodes ? realloc(w->heap, 3 * cap * sizeof *heap) : NULL;
	if (!heap) {
		w->err = ENOMEM;
		return -1;
	}
	w->heap = heap;
	w->scratch_cap = cap;
	return 0;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
	size_t i = (*n)++;

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (h[parent] <= v)
			break;
		h[i] = h[parent];
		i = parent;
	}
	h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
	uint64_t top = h[0], v = h[--(*n)];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= *n)
			break;
		if (c + 1 < *n && h[c + 1] < h[c])
			c++;
		if (v <= h[c])
			break;
		h[i] = h[c];
		i = c;
	}
	if (*n)
		h[i] = v;
	return top;
}

static void push_pair(const struct tokenizer *t, struct work *w, size_t *hn, int32_t i)
{
	const struct bnode *nd = w->nodes;
	const struct mslot *m;

	if (i < 0 || nd[i].next < 0)
		return;
	m = merge_find(t, nd[i].id, nd[nd[i].next].id);
	if (m)
		heap_push(w->heap, hn, (uint64_t)m->rank << 32 | (uint32_t)i);
}

/* BPE of one pre-token (bytes s[0..n)): repeatedly merges the adjacent pair
 * of lowest rank, the leftmost one on ties, as the reference does with its
 * rank + i/length scores. */
static int bpe(struct work *w, const unsigned char *s, size_t n)
{
	const struct tokenizer *t = w->tok;
	struct bnode *nd;

	if (n == 0)
		return 0;
	if (n == 1)
		return emit(w, t->byte_id[s[0]]);
	if (n > INT32_MAX / 4) {
		w->err = ENOMEM;
		return -1;
	}
	if (scratch(w, n) < 0)
		return -1;
	nd = w->nodes;
	if (n <= SMALL_WORD) {
		/* compact array: ids in nd[k].id, rank of (k, k+1) in nd[k].prev */
		size_t m = n;

		for (size_t k = 0; k < n; k++)
			nd[k].id = t->byte_id[s[k]];
		for (size_t k = 0; k + 1 < m; k++) {
			const struct mslot *ms = merge_find(t, nd[k].id, nd[k + 1].id);

			nd[k].next = ms ? ms->id : -1;
			nd[k].prev = ms ? (int32_t)ms->rank : INT32_MAX;
		}
		for (;;) {
			size_t best = m;
			int32_t best_rank = INT32_MAX;

			for (size_t k = 0; k + 1 < m; k++)
				if (nd[k].prev < best_rank) {
					best_rank = nd[k].prev;
					best = k;
				}
			if (best == m)
				break;
			nd[best].id = nd[best].next;
			memmove(&nd[best + 1], &nd[best + 2], (m - best - 2) * sizeof *nd);
			m--;
			for (size_t k = best ? best - 1 : 0; k <= best && k + 1 < m; k++) {
				const struct mslot *ms = merge_find(t, nd[k].id, nd[k + 1].id);

				nd[k].next = ms ? ms->id : -1;
				nd[k].prev = ms ? (int32_t)ms->rank : INT32_MAX;
			}
		}
		for (size_t k = 0; k < m; k++)
			if (emit(w, nd[k].id) < 0)
				return -1;
		return 0;
	}

	size_t hn = 0;

	for (size_t k = 0; k < n; k++) {
		nd[k].id = t->byte_id[s[k]];
		nd[k].prev = (int32_t)k - 1;
		nd[k].next = k + 1 < n ? (int32_t)k + 1 : -1;
		nd[k].alive = 1;
	}
	for (size_t k = 0; k + 1 < n; k++)
		push_pair(t, w, &hn, (int32_t)k);
	while (hn) {
		uint64_t top = heap_pop(w->heap, &hn);
		int32_t i = (int32_t)(uint32_t)top, j;
		const struct mslot *m;

		if (!nd[i].alive || nd[i].next < 0)
			continue;
		j = nd[i].next;
		m = merge_find(t, nd[i].id, nd[j].id);
		if (!m || m->rank != (uint32_t)(top >> 32))
			continue; /* stale: a neighbour changed since the push */
		nd[i].id = m->id;
		nd[i].next = nd[j].next;
		if (nd[j].next >= 0)
			nd[nd[j].next].prev = i;
		nd[j].alive = 0;
		push_pair(t, w, &hn, nd[i].prev);
		push_pair(t, w, &hn, i);
	}
	for (int32_t i = 0; i >= 0; i = nd[i].next)
		if (emit(w, nd[i].id) < 0)
			return -1;
	return 0;
}

/* Applies Split stage `stage` (then the later ones, then BPE) to s[0..n),
 * as regexSplit() does with String.prototype.matchAll. */
static int split_stage(struct work *w, size_t stage, const char *s, size_t n)
{
	const struct tokenizer *t = w->tok;
	size_t prev = 0, start = 0;

	if (stage == t->n_splits)
		return bpe(w, (const unsigned char *)s, n);
	while (start <= n) {
		int rc = pcre2_match(t->split[stage], (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, w->md, NULL);
		PCRE2_SIZE *ov;
		size_t ms, me;

		if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* the interpreter keeps its stack on the heap */
			rc = pcre2_match(t->split[stage], (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
					 w->md, NULL);
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0) {
			w->err = rc == PCRE2_ERROR_NOMEMORY ? ENOMEM : EIO;
			return -1;
		}
		ov = pcre2_get_ovector_pointer(w->md);
		ms = ov[0];
		me = ov[1];
		if (ms > prev && split_stage(w, stage + 1, s + prev, ms - prev) < 0)
			return -1;
		if (me > ms && split_stage(w, stage + 1, s + ms, me - ms) < 0)
			return -1;
		prev = me;
		if (me > ms)
			start = me;
		else if (me < n)
			start = me + utf8_char_len((unsigned char)s[me]);
		else
			break;
	}
	if (prev < n)
		return split_stage(w, stage + 1, s + prev, n - prev);
	return 0;
}

struct section {
	size_t start, len;
	int32_t id; /* added token, or -1 for text */
};

static int encode_sections(struct work *w, const struct section *sec, size_t nsec, const char *text)
{
	const struct tokenizer *t = w->tok;

	for (size_t k = 0; k < nsec; k++) {
		size_t a = sec[k].start, b = a + sec[k].len, sz;

		if (sec[k].id >= 0) {
			if (emit(w, sec[k].id) < 0)
				return -1;
			continue;
		}
		/* lstrip of the next added token trims this section's end,
		 * rstrip of the previous one its start (trimEnd/trimStart) */
		if (k + 1 < nsec && sec[k + 1].id >= 0 && (t->flags[sec[k + 1].id] & TOK_LSTRIP)) {
			while (a < b) {
				size_t back = 1;

				while (back < b - a && ((unsigned char)text[b - back] & 0xc0) == 0x80)
					back++;
				if (!js_space_at((const unsigned char *)text + b - back, back, &sz))
					break;
				b -= back;
			}
		}
		if (k > 0 && sec[k - 1].id >= 0 && (t->flags[sec[k - 1].id] & TOK_RSTRIP))
			while (a < b && js_space_at((const unsigned char *)text + a, b - a, &sz))
				a += sz;
		if (a < b && split_stage(w, 0, text + a, b - a) < 0)
			return -1;
	}
	return 0;
}

static int encode(const struct tokenizer *t, const char *text, size_t len, struct work *w)
{
	const unsigned char *u = (const unsigned char *)text;
	struct section *sec = NULL;
	size_t nsec = 0, cap = 0, i = 0, start = 0;
	int rc = -1;

	w->tok = t;
	if (len && utf8_valid_prefix(u, len) != len) {
		w->err = EILSEQ;
		return -1;
	}
	w->md = pcre2_match_data_create(t->ovec_pairs ? t->ovec_pairs : 1, NULL);
	if (!w->md) {
		w->err = ENOMEM;
		return -1;
	}
	/* cut at added tokens (DictionarySplitter.split) */
	for (;;) {
		int32_t id = -1;
		size_t m = 0;

		while (i < len && !t->added_first[u[i]])
			i++;
		if (i < len)
			m = trie_match(t, u + i, len - i, &id);
		if (i < len && m == 0) {
			i++;
			continue;
		}
		if (nsec + 2 > cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct section *np = realloc(sec, ncap * sizeof *np);

			if (!np) {
				w->err = ENOMEM;
				goto done;
			}
			sec = np;
			cap = ncap;
		}
		if (i > start)
			sec[nsec++] = (struct section){start, i - start, -1};
		if (i >= len)
			break;
		sec[nsec++] = (struct section){i, m, id};
		i += m;
		start = i;
		/* without lstrip/rstrip, sections can go out as they come */
		if (!t->any_strip) {
			if (encode_sections(w, sec, nsec, text) < 0)
				goto done;
			nsec = 0;
		}
	}
	rc = encode_sections(w, sec, nsec, text);
done:
	free(sec);
	pcre2_match_data_free(w->md);
	w->md = NULL;
	free(w->nodes);
	free(w->heap);
	w->nodes = NULL;
	w->heap = NULL;
	return rc;
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int32_t **ids_out, size_t *n_out)
{
	struct work w = {0};

	if (ids_out)
		*ids_out = NULL;
	if (n_out)
		*n_out = 0;
	if (!t || !ids_out || !n_out || (!text && len)) {
		errno = EINVAL;
		return -1;
	}
	if (encode(t, text, len, &w) < 0) {
		free(w.ids);
		errno = w.err;
		return -1;
	}
	*ids_out = w.ids;
	*n_out = w.n;
	return 0;
}

int tokenizer_count(const struct tokenizer *t, const char *text, size_t len, size_t *n_out)
{
	struct work w = {.count_only = true};

	if (n_out)
		*n_out = 0;
	if (!t || !n_out || (!text && len)) {
		errno = EINVAL;
		return -1;
	}
	if (encode(t, text, len, &w) < 0) {
		errno = w.err;
		return -1;
	}
	*n_out = w.n;
	return 0;
}

/* --------------------------------------------------------------- lookups */

int32_t tokenizer_token_id(const struct tokenizer *t, const char *s)
{
	struct sbuf raw = {0};
	int32_t id;

	if (!t || !s || !*s)
		return -1;
	id = hmap_find(t, t->amap, t->amap_mask, s, strlen(s));
	if (id < 0 && bytelevel_decode(s, strlen(s), &raw))
		id = hmap_find(t, t->vmap, t->vmap_mask, raw.p, raw.n);
	free(raw.p);
	return id;
}

int tokenizer_decode_token(const struct tokenizer *t, int32_t id, char *buf, size_t buflen, size_t *len_out)
{
	size_t n;

	if (len_out)
		*len_out = 0;
	if (!t || !len_out || id < 0 || (size_t)id >= t->n_ids || !(t->flags[id] & TOK_PRESENT))
		return -1;
	n = t->len[id];
	*len_out = n;
	if (n > buflen || (!buf && n))
		return -1;
	if (n)
		memcpy(buf, t->blob + t->off[id], n);
	return 0;
}

size_t tokenizer_vocab_size(const struct tokenizer *t)
{
	return t ? t->n_ids : 0;
}

int tokenizer_is_special(const struct tokenizer *t, int32_t id)
{
	if (!t || id < 0 || (size_t)id >= t->n_ids)
		return 0;
	return (t->flags[id] & TOK_SPECIAL) != 0;
}

/* ------------------------------------------------------------------ chat */

#define BOS             \
	"<\xef\xbd\x9c" \
	"begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define EOS             \
	"<\xef\xbd\x9c" \
	"end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define ASSISTANT       \
	"<\xef\xbd\x9c" \
	"Assistant\xef\xbd\x9c>"

int tokenizer_render_chat(const struct tokenizer_message *msgs, size_t n, char **out, size_t *out_len)
{
	struct sbuf b = {0};
	bool first_system = true;

	if (out)
		*out = NULL;
	if (out_len)
		*out_len = 0;
	if (!out || !out_len || (!msgs && n)) {
		errno = EINVAL;
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const char *role = msgs[i].role;

		if (!role || (!msgs[i].content && msgs[i].content_len) ||
		    (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)) {
			errno = EINVAL;
			return -1;
		}
	}
	sb_str(&b, BOS);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(msgs[i].role, "system") != 0)
			continue;
		if (!first_system)
			sb_str(&b, "\n\n");
		sb_add(&b, msgs[i].content, msgs[i].content_len);
		first_system = false;
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(msgs[i].role, "user") == 0) {
			sb_str(&b, USER);
			sb_add(&b, msgs[i].content, msgs[i].content_len);
		} else if (strcmp(msgs[i].role, "assistant") == 0) {
			sb_str(&b, ASSISTANT);
			sb_add(&b, msgs[i].content, msgs[i].content_len);
			sb_str(&b, EOS);
		}
	}
	sb_str(&b, ASSISTANT);
	if (b.oom) {
		free(b.p);
		errno = ENOMEM;
		return -1;
	}
	*out = b.p;
	*out_len = b.n;
	return 0;
}

int tokenizer_count_chat(const struct tokenizer *t, const struct tokenizer_message *msgs, size_t n, size_t *n_out)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	if (n_out)
		*n_out = 0;
	if (tokenizer_render_chat(msgs, n, &text, &len) < 0)
		return -1;
	rc = tokenizer_count(t, text, len, n_out);
	free(text);
	return rc;
}
