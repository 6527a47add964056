/* rslot.c: see rslot.h. */
#include "common/rslot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection,
 * bit by bit (keys are short; no table to get wrong). */
static uint16_t crc16(const unsigned char *p, size_t n)
{
	uint16_t crc = 0;

	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

int rslot_of(const char *key, size_t len)
{
	const char *open = memchr(key, '{', len);

	if (open) {
		size_t from = (size_t)(open - key) + 1;
		const char *close = memchr(open + 1, '}', len - from);
		if (close && close > open + 1)
			return crc16((const unsigned char *)open + 1, (size_t)(close - open - 1)) & (RSLOT_N - 1);
	}
	return crc16((const unsigned char *)key, len) & (RSLOT_N - 1);
}

static size_t arglen(const char *const *argv, const size_t *argvlen, int i)
{
	return argvlen ? argvlen[i] : strlen(argv[i]);
}

static int is(const char *const *argv, const size_t *argvlen, int i, const char *word)
{
	size_t n = strlen(word);
	return arglen(argv, argvlen, i) == n && strncasecmp(argv[i], word, n) == 0;
}

int rslot_command(int argc, const char *const *argv, const size_t *argvlen)
{
	static const char *const keyless[] = {"PING",   "SCRIPT",   "CLUSTER",  "INFO",      "SCAN", "ASKING",
					      "SELECT", "FLUSHALL", "FLUSHDB",  "DBSIZE",    "TIME", "CONFIG",
					      "CLIENT", "FUNCTION", "READONLY", "READWRITE", "AUTH", "HELLO",
					      "ECHO",   "KEYS",     "RANDOMKEY"};
	int k = 1;

	if (argc < 1)
		return -1;
	for (size_t i = 0; i < sizeof(keyless) / sizeof(keyless[0]); i++)
		if (is(argv, argvlen, 0, keyless[i]))
			return -1;
	if (is(argv, argvlen, 0, "EVAL") || is(argv, argvlen, 0, "EVALSHA") || is(argv, argvlen, 0, "EVAL_RO") ||
	    is(argv, argvlen, 0, "EVALSHA_RO") || is(argv, argvlen, 0, "FCALL") || is(argv, argvlen, 0, "FCALL_RO")) {
		if (argc < 4 || atoi(argv[2]) <= 0)
			return -1;
		k = 3;
	} else if (is(argv, argvlen, 0, "XREAD") || is(argv, argvlen, 0, "XREADGROUP")) {
		k = -1;
		for (int i = 1; i + 1 < argc; i++)
			if (is(argv, argvlen, i, "STREAMS")) {
				k = i + 1;
				break;
			}
		if (k < 0)
			return -1;
	} else if (is(argv, argvlen, 0, "XGROUP") || is(argv, argvlen, 0, "XINFO") || is(argv, argvlen, 0, "OBJECT") ||
		   is(argv, argvlen, 0, "MEMORY")) {
		k = 2;
	}
	if (k >= argc)
		return -1;
	return rslot_of(argv[k], arglen(argv, argvlen, k));
}

static int parse_one(const char *s, size_t n, struct rslot_addr *a)
{
	char tmp[300], *colon, *end, *slash;
	long port, db = 0;

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	colon = strrchr(tmp, ':');
	if (!colon || colon == tmp || (size_t)(colon - tmp) >= sizeof(a->host))
		return -1;
	*colon = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || port <= 0 || port > 65535)
		return -1;
	slash = end;
	if (*slash == '/') {
		db = strtol(slash + 1, &end, 10);
		if (end == slash + 1 || db < 0 || db > 1000)
			return -1;
	}
	if (*end)
		return -1;
	snprintf(a->host, sizeof(a->host), "%s", tmp);
	a->port = (int)port;
	a->db = (int)db;
	return 0;
}

int rslot_parse_seeds(const char *s, struct rslot_addr *out, int max, struct error *err)
{
	int n = 0;
	const char *p = s;

	for (;;) {
		const char *comma = strchr(p, ','), *e = comma ? comma : p + strlen(p);
		while (*p == ' ' || *p == '\t')
			p++;
		while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (n == max) {
			return error_set(err, 0, "invalid_config", "redis: more than %d seed addresses", max);
		}
		if (parse_one(p, (size_t)(e - p), &out[n]) < 0) {
			return error_set(err, 0, "invalid_config", "redis address '%.*s' is not host:port",
					 (int)(e - p), p);
		}
		n++;
		if (!comma)
			break;
		p = comma + 1;
	}
	if (n > 1)
		for (int i = 0; i < n; i++)
			if (out[i].db) {
				return error_set(err, 0, "invalid_config",
						 "redis: a database number needs a single address");
			}
	return n;
}

int rslot_parse_redirect(const char *errstr, int *slot, struct rslot_addr *to)
{
	int kind;
	const char *p, *sp;
	char *end;
	long s;

	if (strncmp(errstr, "MOVED ", 6) == 0) {
		kind = 1;
		p = errstr + 6;
	} else if (strncmp(errstr, "ASK ", 4) == 0) {
		kind = 2;
		p = errstr + 4;
	} else {
		return 0;
	}
	errno = 0;
	s = strtol(p, &end, 10);
	if (errno || end == p || *end != ' ' || s < 0 || s >= RSLOT_N)
		return 0;
	sp = end + 1;
	if (parse_one(sp, strlen(sp), to) < 0)
		return 0;
	*slot = (int)s;
	return kind;
}

int rslot_parse_slots(const redisReply *r, int (*node_index)(void *arg, const char *host, int port), void *arg,
		      int16_t owner[RSLOT_N])
{
	int16_t *tmp;

	if (!r || r->type != REDIS_REPLY_ARRAY)
		return -1;
	tmp = malloc(RSLOT_N * sizeof(*tmp));
	if (!tmp)
		return -1;
	for (int i = 0; i < RSLOT_N; i++)
		tmp[i] = -1;
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i], *m;
		long long from, to;
		int idx;
		char host[256];

		if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY)
			goto bad;
		from = e->element[0]->integer;
		to = e->element[1]->integer;
		m = e->element[2];
		if (from < 0 || to >= RSLOT_N || from > to || m->elements < 2 ||
		    m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_INTEGER ||
		    m->element[1]->integer <= 0 || m->element[1]->integer > 65535 ||
		    m->element[0]->len >= (int)sizeof(host))
			goto bad;
		snprintf(host, sizeof(host), "%.*s", (int)m->element[0]->len, m->element[0]->str);
		/* "?" is what Redis 7 says when it does not know the endpoint */
		if (strcmp(host, "?") == 0)
			host[0] = '\0';
		idx = node_index(arg, host, (int)m->element[1]->integer);
		if (idx < 0 || idx > INT16_MAX)
			goto bad;
		for (long long s = from; s <= to; s++)
			tmp[s] = (int16_t)idx;
	}
	memcpy(owner, tmp, RSLOT_N * sizeof(*tmp));
	free(tmp);
	return 0;
bad:
	free(tmp);
	return -1;
}
