/* fastbody.c: see fastbody.h. */
#include "billing/http/fastbody.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"

enum field { F_REQUEST_ID, F_MODEL, F_API_KEY, F_ACCOUNT_ID, F_INPUT_TOKENS, F_MAX_OUTPUT_TOKENS, F_N };

#define NAME(s) s, sizeof(s) - 1
static const struct {
	const char *name;
	size_t len; /* of name: no strlen per member and field */
	size_t max; /* strings: bytes; integers: the largest value */
	bool is_string;
} fields[F_N] = {
	{NAME("request_id"), 200, true},
	{NAME("model"), 200, true},
	{NAME("api_key"), 255, true},
	{NAME("account_id"), INT64_MAX, false},
	{NAME("input_tokens"), 1000000000, false},
	{NAME("max_output_tokens"), 1000000000, false},
};

struct cur {
	const char *p, *end;
};

static void skip_ws(struct cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static bool take(struct cur *c, char ch)
{
	skip_ws(c);
	if (c->p >= c->end || *c->p != ch)
		return false;
	c->p++;
	return true;
}

/* A string of printable ASCII without '"' or '\\' (after the opening quote):
 * its bytes and length, or false. */
static bool plain_string(struct cur *c, const char **s, size_t *len)
{
	const char *start = c->p;

	while (c->p < c->end && *c->p != '"') {
		unsigned char ch = (unsigned char)*c->p;
		if (ch < 0x20 || ch > 0x7e || ch == '\\')
			return false;
		c->p++;
	}
	if (c->p >= c->end)
		return false;
	*s = start;
	*len = (size_t)(c->p - start);
	c->p++;
	return true;
}

/* A non-negative integer in plain JSON decimal, at most max. */
static bool plain_int(struct cur *c, uint64_t max, int64_t *out)
{
	uint64_t v = 0;
	int digits = 0;

	if (c->p < c->end && *c->p == '0' && c->p + 1 < c->end && c->p[1] >= '0' && c->p[1] <= '9')
		return false; /* a leading zero: malformed */
	while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
		if (++digits > 18)
			return false;
		v = v * 10 + (uint64_t)(*c->p - '0');
		c->p++;
	}
	if (digits == 0 || v > max)
		return false;
	if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
		return false; /* a real number: the general path refuses it with its message */
	*out = (int64_t)v;
	return true;
}

bool fastbody_authz_parse(const char *buf, size_t len, struct fastbody_authz *out)
{
	struct cur c = {buf, buf + len};
	unsigned seen = 0;

	memset(out, 0, sizeof(*out));
	if (!take(&c, '{'))
		return false;
	do {
		const char *k, *s;
		size_t kl, sl;
		int f;

		if (!take(&c, '"') || !plain_string(&c, &k, &kl) || !take(&c, ':'))
			return false;
		for (f = 0; f < F_N; f++)
			if (fields[f].len == kl && memcmp(fields[f].name, k, kl) == 0)
				break;
		if (f == F_N || (seen & (1u << f)))
			return false; /* another member, or a duplicate: the general path decides */
		seen |= 1u << f;
		skip_ws(&c);
		if (fields[f].is_string) {
			char *dst = f == F_REQUEST_ID ? out->request_id : f == F_MODEL ? out->model : out->api_key;
			if (!take(&c, '"') || !plain_string(&c, &s, &sl) || sl == 0 || sl > fields[f].max)
				return false;
			memcpy(dst, s, sl);
			dst[sl] = '\0';
		} else {
			int64_t *dst = f == F_ACCOUNT_ID     ? &out->account_id
				       : f == F_INPUT_TOKENS ? &out->input_tokens
							     : &out->max_output_tokens;
			if (!plain_int(&c, fields[f].max, dst))
				return false;
		}
	} while (take(&c, ','));
	if (!take(&c, '}'))
		return false;
	skip_ws(&c);
	if (c.p != c.end)
		return false;
	/* the rules of authz_body_parse: the four required, exactly one principal */
	if ((seen & (1u << F_REQUEST_ID | 1u << F_MODEL | 1u << F_INPUT_TOKENS | 1u << F_MAX_OUTPUT_TOKENS)) !=
	    (1u << F_REQUEST_ID | 1u << F_MODEL | 1u << F_INPUT_TOKENS | 1u << F_MAX_OUTPUT_TOKENS))
		return false;
	if (!(seen & (1u << F_API_KEY)) == !(seen & (1u << F_ACCOUNT_ID)))
		return false;
	return (seen & (1u << F_API_KEY)) || out->account_id > 0;
}

/* s needs no JSON escape (jansson's default dump: only '"', '\\' and
 * control characters are escaped; ASCII only here). */
static bool plain(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e || *s == '"' || *s == '\\')
			return false;
	return true;
}

/* Appends s (NUL-terminated) at *p when it fits before end. */
static bool put(char **p, const char *end, const char *s, size_t len)
{
	if ((size_t)(end - *p) <= len)
		return false;
	memcpy(*p, s, len);
	*p += len;
	return true;
}

static bool put_i64(char **p, const char *end, int64_t v)
{
	char t[BUF_I64_LEN];

	return put(p, end, t, buf_fmt_i64(t, v));
}

#define PUT_LIT(p, end, lit) put(p, end, lit, sizeof(lit) - 1)

/* The bytes printf's "%s" and "%" PRId64 " would give (test_fastbody.c
 * compares with jansson's dump), written without printf. */
size_t fastbody_hold_answer(char *buf, size_t n, const char *hold_id, int64_t account_id, int64_t held_nanos,
			    int64_t available_nanos, const char *expires_at)
{
	char *p = buf;
	const char *end = buf + n;

	if (!plain(hold_id) || !plain(expires_at))
		return 0;
	if (!PUT_LIT(&p, end, "{\"hold_id\":\"") || !put(&p, end, hold_id, strlen(hold_id)) ||
	    !PUT_LIT(&p, end, "\",\"account_id\":") || !put_i64(&p, end, account_id) ||
	    !PUT_LIT(&p, end, ",\"held_nanos\":") || !put_i64(&p, end, held_nanos) ||
	    !PUT_LIT(&p, end, ",\"available_nanos\":") || !put_i64(&p, end, available_nanos) ||
	    !PUT_LIT(&p, end, ",\"expires_at\":\"") || !put(&p, end, expires_at, strlen(expires_at)) ||
	    !PUT_LIT(&p, end, "\"}\n"))
		return 0;
	*p = '\0';
	return (size_t)(p - buf);
}
