/* fastusage.c: see fastusage.h. */
#include "billing/usage/fastusage.h"

#include <sodium.h>
#include <string.h>

#include "billing/usage/pricing.h"
#include "common/timeutil.h"

enum ufield {
	U_REQUEST_ID,
	U_API_KEY,
	U_ACCOUNT_ID,
	U_MODEL,
	U_INPUT,
	U_CACHED,
	U_OUTPUT,
	U_STARTED_AT,
	U_HOLD_ID,
	U_STATUS,
	U_N
};

#define BIT(f) (1u << (f))
#define U_REQUIRED (BIT(U_REQUEST_ID) | BIT(U_MODEL) | BIT(U_INPUT) | BIT(U_OUTPUT) | BIT(U_STARTED_AT))

/* name, and for a string the bytes it may hold (usage_parse's get_string:
 * 1 to cap - 1 of its buffer); 0 for an integer */
static const struct {
	const char *name;
	size_t len, max;
} ufields[U_N] = {
	[U_REQUEST_ID] = {"request_id", 10, sizeof(((struct usage_req *)0)->request_id) - 1},
	[U_API_KEY] = {"api_key", 7, 255},
	[U_ACCOUNT_ID] = {"account_id", 10, 0},
	[U_MODEL] = {"model", 5, sizeof(((struct usage_req *)0)->model) - 1},
	[U_INPUT] = {"input_tokens", 12, 0},
	[U_CACHED] = {"cached_input_tokens", 19, 0},
	[U_OUTPUT] = {"output_tokens", 13, 0},
	[U_STARTED_AT] = {"started_at", 10, 63},
	[U_HOLD_ID] = {"hold_id", 7, sizeof(((struct usage_req *)0)->hold_id) - 1},
	[U_STATUS] = {"status", 6, sizeof(((struct usage_req *)0)->status) - 1},
};

struct scan {
	const char *p, *end;
};

/* JSON's whitespace, then ch: true and past it */
static bool lit(struct scan *s, char ch)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
	if (s->p == s->end || *s->p != ch)
		return false;
	s->p++;
	return true;
}

/* After lit(s, '"'): printable ASCII up to the closing quote, no escape. */
static bool str(struct scan *s, const char **v, size_t *len)
{
	const char *q = s->p;

	for (; q < s->end && *q != '"'; q++)
		if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e || *q == '\\')
			return false;
	if (q == s->end)
		return false;
	*v = s->p;
	*len = (size_t)(q - s->p);
	s->p = q + 1;
	return true;
}

/* A JSON integer without sign, fraction or exponent, at most max. */
static bool uint_le(struct scan *s, int64_t max, int64_t *out)
{
	const char *q = s->p;
	int64_t v = 0;

	while (q < s->end && *q >= '0' && *q <= '9') {
		if (q - s->p >= 18)
			return false; /* beyond any field's range: the general path */
		v = v * 10 + (*q - '0');
		q++;
	}
	if (q == s->p || (*s->p == '0' && q - s->p > 1) || v > max)
		return false; /* none, a leading zero (malformed), or out of range */
	if (q < s->end && (*q == '.' || *q == 'e' || *q == 'E'))
		return false; /* a real number: the general path refuses it */
	s->p = q;
	*out = v;
	return true;
}

/* One plain usage object at s, with usage_parse's rules; false: decline. */
static bool parse_object(struct scan *s, int64_t now_us, const uint8_t pepper[32], struct usage_req *r)
{
	const char *key = NULL, *ts = NULL;
	size_t key_len = 0, ts_len = 0;
	unsigned seen = 0;
	char tbuf[64];

	memset(r, 0, sizeof(*r));
	if (!lit(s, '{'))
		return false;
	do {
		const char *k, *v;
		size_t kl, vl;
		int64_t n;
		int f;

		if (!lit(s, '"') || !str(s, &k, &kl) || !lit(s, ':'))
			return false;
		for (f = 0; f < U_N; f++)
			if (ufields[f].len == kl && memcmp(ufields[f].name, k, kl) == 0)
				break;
		if (f == U_N || (seen & BIT(f)))
			return false; /* another member, or a duplicate */
		seen |= BIT(f);
		if (ufields[f].max) {
			char *dst = f == U_REQUEST_ID ? r->request_id
				    : f == U_MODEL    ? r->model
				    : f == U_HOLD_ID  ? r->hold_id
				    : f == U_STATUS   ? r->status
						      : NULL;
			if (!lit(s, '"') || !str(s, &v, &vl) || vl < 1 || vl > ufields[f].max)
				return false;
			if (dst) {
				memcpy(dst, v, vl);
				dst[vl] = '\0';
			} else if (f == U_API_KEY) {
				key = v;
				key_len = vl;
			} else {
				ts = v;
				ts_len = vl;
			}
			continue;
		}
		while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
			s->p++;
		if (!uint_le(s, f == U_ACCOUNT_ID ? INT64_MAX : PRICING_MAX_TOKENS, &n))
			return false;
		if (f == U_ACCOUNT_ID)
			r->account_id = n;
		else if (f == U_INPUT)
			r->input_tokens = n;
		else if (f == U_CACHED)
			r->cached_input_tokens = n;
		else
			r->output_tokens = n;
	} while (lit(s, ','));
	if (!lit(s, '}') || (seen & U_REQUIRED) != U_REQUIRED)
		return false;
	/* exactly one principal, a positive account_id */
	if (!(seen & BIT(U_API_KEY)) == !(seen & BIT(U_ACCOUNT_ID)) ||
	    ((seen & BIT(U_ACCOUNT_ID)) && r->account_id <= 0))
		return false;
	if (r->cached_input_tokens > r->input_tokens)
		return false;
	memcpy(tbuf, ts, ts_len);
	tbuf[ts_len] = '\0';
	if (time_parse_rfc3339(tbuf, 0, &r->started_at_us) < 0 || r->started_at_us < now_us - USAGE_MAX_AGE_US ||
	    r->started_at_us > now_us + USAGE_MAX_AHEAD_US)
		return false;
	if (r->status[0] && strcmp(r->status, "ok") != 0 && strcmp(r->status, "cancelled") != 0 &&
	    strcmp(r->status, "error") != 0)
		return false;
	if (key) {
		char kbuf[256];
		memcpy(kbuf, key, key_len);
		kbuf[key_len] = '\0';
		r->has_key = true;
		crypto_generichash(r->key_hash, 32, (const unsigned char *)kbuf, key_len, pepper, 32);
		sodium_memzero(kbuf, sizeof(kbuf));
	}
	return true;
}

/* Only whitespace left. */
static bool at_end(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
	return s->p == s->end;
}

bool fastusage_parse(const char *buf, size_t len, int64_t now_us, const uint8_t pepper[32], struct usage_req *out)
{
	struct scan s = {buf, buf + len};

	return parse_object(&s, now_us, pepper, out) && at_end(&s);
}

bool fastusage_parse_batch(const char *buf, size_t len, int64_t now_us, const uint8_t pepper[32], struct usage_req *out,
			   size_t max, size_t *n)
{
	struct scan s = {buf, buf + len};
	const char *k;
	size_t kl, i = 0;

	*n = 0;
	if (!lit(&s, '{') || !lit(&s, '"') || !str(&s, &k, &kl) || kl != 7 || memcmp(k, "records", 7) != 0 ||
	    !lit(&s, ':') || !lit(&s, '['))
		return false;
	do {
		if (i == max || !parse_object(&s, now_us, pepper, &out[i]))
			return false;
		i++;
	} while (lit(&s, ','));
	if (!lit(&s, ']') || !lit(&s, '}') || !at_end(&s))
		return false;
	*n = i;
	return true;
}
