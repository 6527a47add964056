/* test_rslot.c: Redis Cluster key slots as Redis computes them (CRC16 XMODEM
 * mod 16384, hash tags), which key routes a command, the seed list, MOVED and
 * ASK errors, and CLUSTER SLOTS answers (common/rslot.h).  The routing itself
 * runs against a real three-master cluster in tests/integration/test_cluster.py. */
#include <stdlib.h>
#include <string.h>

#include "common/rslot.h"
#include "tests/unit/tap.h"

static int slot(const char *k)
{
	return rslot_of(k, strlen(k));
}

static void test_key_slots(void)
{
	/* vectors from the Redis Cluster specification and `CLUSTER KEYSLOT` */
	IS_I64(slot("123456789"), 0x31C3 & 16383, "crc16('123456789') = 0x31C3 (the XMODEM check value)");
	IS_I64(slot("123456789"), 12739, "slot('123456789') = 12739");
	IS_I64(slot("foo"), 12182, "slot('foo') = 12182");
	IS_I64(slot("bar"), 5061, "slot('bar') = 5061");
	IS_I64(slot(""), 0, "the empty key is slot 0");
	IS_I64(slot("{user1000}.following"), slot("{user1000}.followers"), "same hash tag, same slot");
	IS_I64(slot("{user1000}.following"), slot("user1000"), "a hash tag hashes only its content");
	IS_I64(slot("foo{}{bar}"), slot("foo{}{bar}"), "stable");
	OK(slot("foo{}{bar}") != slot("bar"), "an empty {} is no tag: the whole key is hashed");
	IS_I64(slot("foo{{bar}}zap"), slot("{bar"), "the tag is between the first { and the next }");
	IS_I64(slot("foo{bar}{zap}"), slot("bar"), "only the first tag counts");
	IS_I64(slot("{a:42}:bal"), slot("{a:42}:lgen"), "every key of an account shares its slot");
	IS_I64(slot("{a:42}:ver"), slot("a:42"), "account keys hash 'a:ID'");
	OK(slot("{a:42}:bal") != slot("{a:43}:bal"), "neighbouring accounts land in different slots");
	IS_I64(rslot_of("fo\0o", 4), rslot_of("fo\0o", 4), "binary keys: the length counts, not the NUL");
	OK(rslot_of("fo\0o", 4) != slot("fo"), "a NUL in a key is hashed too");
	for (int i = 0; i < 1000; i++) {
		char k[32];
		snprintf(k, sizeof(k), "key:%d", i);
		if (slot(k) < 0 || slot(k) >= 16384) {
			OK(0, "slot of '%s' in range", k);
			return;
		}
	}
	OK(1, "1000 slots in [0, 16384)");
}

static void test_command_keys(void)
{
	static const struct {
		int argc;
		const char *argv[8];
		const char *key; /* NULL: keyless */
	} cases[] = {
		{2, {"GET", "{a:7}:lgen"}, "{a:7}:lgen"},
		{3, {"hmget", "{a:7}:bal", "paid"}, "{a:7}:bal"},
		{5, {"EVALSHA", "abc", "2", "{a:9}:bal", "{a:9}:ver"}, "{a:9}:bal"},
		{4, {"EVAL", "return 1", "0", "x"}, NULL},
		{3, {"EVAL", "return 1", "0"}, NULL},
		{7, {"XREADGROUP", "GROUP", "g", "c", "STREAMS", "usage:in", ">"}, "usage:in"},
		{4, {"xread", "streams", "s1", "0"}, "s1"},
		{6, {"XGROUP", "CREATE", "usage:in", "billing", "0", "MKSTREAM"}, "usage:in"},
		{3, {"XINFO", "CONSUMERS", "usage:in"}, "usage:in"},
		{4, {"XACK", "usage:in", "billing", "1-0"}, "usage:in"},
		{1, {"PING"}, NULL},
		{3, {"SCRIPT", "LOAD", "return 1"}, NULL},
		{2, {"CLUSTER", "SLOTS"}, NULL},
		{6, {"SCAN", "0", "MATCH", "{a:*}:bal", "COUNT", "10"}, NULL},
		{1, {"GET"}, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = rslot_command(cases[i].argc, cases[i].argv, NULL);
		int want = cases[i].key ? slot(cases[i].key) : -1;
		IS_I64(got, want, cases[i].argv[0]);
	}
	{
		const char *argv[] = {"GET", "foo"};
		const size_t len[] = {3, 3};
		IS_I64(rslot_command(2, argv, len), 12182, "lengths given: GET foo -> 12182");
	}
}

static void test_seeds(void)
{
	struct rslot_addr a[RSLOT_MAX_SEEDS];
	struct error err;

	IS_I64(rslot_parse_seeds("127.0.0.1:6379", a, RSLOT_MAX_SEEDS, &err), 1, "one address");
	IS_STR(a[0].host, "127.0.0.1", "host");
	IS_I64(a[0].port, 6379, "port");
	IS_I64(a[0].db, 0, "no db");
	IS_I64(rslot_parse_seeds("localhost:7000/3", a, RSLOT_MAX_SEEDS, &err), 1, "one address with a db");
	IS_I64(a[0].db, 3, "db 3");
	IS_I64(rslot_parse_seeds("127.0.0.1:7000, 127.0.0.1:7001 ,h3:7002", a, RSLOT_MAX_SEEDS, &err), 3,
	       "three seeds");
	IS_STR(a[1].host, "127.0.0.1", "second host, spaces trimmed");
	IS_I64(a[1].port, 7001, "second port");
	IS_STR(a[2].host, "h3", "third host");
	IS_I64(a[2].port, 7002, "third port");
	static const char *const bad[] = {"",      "nonsense", "host:", ":6379",     "h:0",  "h:65536",
					  "h:12x", "a:1,,b:2", "a:1,",  "a:1/2,b:3", "h:1/x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&err, 0, sizeof(err));
		int n = rslot_parse_seeds(bad[i], a, RSLOT_MAX_SEEDS, &err);
		OK(n == -1 && strcmp(err.code, "invalid_config") == 0, "refused: '%s' (%s)", bad[i], err.msg);
	}
	IS_I64(rslot_parse_seeds("a:1,b:2,c:3", a, 2, &err), -1, "more seeds than room: refused");
}

static void test_redirects(void)
{
	struct rslot_addr to;
	int s = -1;

	IS_I64(rslot_parse_redirect("MOVED 3999 127.0.0.1:6381", &s, &to), 1, "MOVED");
	IS_I64(s, 3999, "MOVED slot");
	IS_STR(to.host, "127.0.0.1", "MOVED host");
	IS_I64(to.port, 6381, "MOVED port");
	IS_I64(rslot_parse_redirect("ASK 12182 10.0.0.2:7002", &s, &to), 2, "ASK");
	IS_I64(s, 12182, "ASK slot");
	IS_I64(to.port, 7002, "ASK port");
	IS_I64(rslot_parse_redirect("TRYAGAIN Multiple keys request during rehashing of slot", &s, &to), 0,
	       "TRYAGAIN is no redirection");
	IS_I64(rslot_parse_redirect("CLUSTERDOWN The cluster is down", &s, &to), 0, "CLUSTERDOWN neither");
	IS_I64(rslot_parse_redirect("MOVED 16384 h:1", &s, &to), 0, "slot out of range");
	IS_I64(rslot_parse_redirect("MOVED 1 h", &s, &to), 0, "no port");
	IS_I64(rslot_parse_redirect("MOVED x h:1", &s, &to), 0, "no slot");
}

/* ---- CLUSTER SLOTS answers, built by hand ---- */

static redisReply *rep_int(long long v)
{
	redisReply *r = calloc(1, sizeof(*r));
	r->type = REDIS_REPLY_INTEGER;
	r->integer = v;
	return r;
}

static redisReply *rep_str(const char *s)
{
	redisReply *r = calloc(1, sizeof(*r));
	r->type = REDIS_REPLY_STRING;
	r->len = (int)strlen(s);
	r->str = strdup(s);
	return r;
}

static redisReply *rep_arr(size_t n, ...)
{
	redisReply *r = calloc(1, sizeof(*r));
	va_list ap;

	r->type = REDIS_REPLY_ARRAY;
	r->elements = n;
	r->element = calloc(n ? n : 1, sizeof(*r->element));
	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		r->element[i] = va_arg(ap, redisReply *);
	va_end(ap);
	return r;
}

struct seen {
	char host[4][64];
	int port[4];
	int n;
};

static int index_cb(void *arg, const char *host, int port)
{
	struct seen *s = arg;

	for (int i = 0; i < s->n; i++)
		if (s->port[i] == port && strcmp(s->host[i], host) == 0)
			return i;
	snprintf(s->host[s->n], sizeof(s->host[0]), "%s", host);
	s->port[s->n] = port;
	return s->n++;
}

static void test_cluster_slots(void)
{
	static int16_t owner[RSLOT_N];
	struct seen seen = {.n = 0};
	/* three masters as `redis-cli --cluster create` splits the slots; the
	 * second with a replica, the third without a known address ("?") */
	redisReply *r = rep_arr(
		3,
		rep_arr(3, rep_int(0), rep_int(5460), rep_arr(3, rep_str("127.0.0.1"), rep_int(7000), rep_str("id0"))),
		rep_arr(4, rep_int(5461), rep_int(10922),
			rep_arr(3, rep_str("127.0.0.1"), rep_int(7001), rep_str("id1")),
			rep_arr(3, rep_str("127.0.0.1"), rep_int(7004), rep_str("id4"))),
		rep_arr(3, rep_int(10923), rep_int(16383), rep_arr(3, rep_str("?"), rep_int(7002), rep_str("id2"))));

	IS_I64(rslot_parse_slots(r, index_cb, &seen, owner), 0, "a three-master table");
	IS_I64(seen.n, 3, "three masters (replicas not used)");
	IS_I64(owner[0], 0, "slot 0 -> first master");
	IS_I64(owner[5460], 0, "slot 5460 -> first master");
	IS_I64(owner[5461], 1, "slot 5461 -> second master");
	IS_I64(owner[12182], 2, "slot of 'foo' -> third master");
	IS_STR(seen.host[2], "", "an unknown endpoint is passed as an empty host");
	IS_I64(seen.port[2], 7002, "with its port");
	freeReplyObject(r);

	/* a partial table: the uncovered slots have no owner */
	seen.n = 0;
	r = rep_arr(1, rep_arr(3, rep_int(100), rep_int(199), rep_arr(2, rep_str("h"), rep_int(1))));
	IS_I64(rslot_parse_slots(r, index_cb, &seen, owner), 0, "a partial table");
	IS_I64(owner[99], -1, "slot 99 not served");
	IS_I64(owner[150], 0, "slot 150 served");
	IS_I64(owner[200], -1, "slot 200 not served");
	freeReplyObject(r);

	/* malformed answers leave the map as it was */
	r = rep_arr(1, rep_arr(3, rep_int(5), rep_int(2), rep_arr(2, rep_str("h"), rep_int(1))));
	IS_I64(rslot_parse_slots(r, index_cb, &seen, owner), -1, "from > to refused");
	IS_I64(owner[150], 0, "map unchanged");
	freeReplyObject(r);
	r = rep_arr(1, rep_arr(3, rep_int(0), rep_int(16384), rep_arr(2, rep_str("h"), rep_int(1))));
	IS_I64(rslot_parse_slots(r, index_cb, &seen, owner), -1, "slot 16384 refused");
	freeReplyObject(r);
	r = rep_str("ERR This instance has cluster support disabled");
	r->type = REDIS_REPLY_ERROR;
	IS_I64(rslot_parse_slots(r, index_cb, &seen, owner), -1, "an error answer is no table");
	freeReplyObject(r);
	IS_I64(rslot_parse_slots(NULL, index_cb, &seen, owner), -1, "no answer");
}

int main(void)
{
	test_key_slots();
	test_command_keys();
	test_seeds();
	test_redirects();
	test_cluster_slots();
	return tap_done();
}
