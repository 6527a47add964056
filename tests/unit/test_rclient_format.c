/* test_rclient_format.c: rclient_pipeline writes its commands itself
 * (rclient_format): byte for byte what hiredis's redisFormatCommandArgv
 * writes for the same arguments. */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/rclient.h"
#include "tests/unit/tap.h"

static void same(int argc, const char **argv, const size_t *argvlen, const char *name)
{
	struct rclient_cmd cmd = {argc, argv, argvlen};
	struct buf b;
	char *want = NULL;
	long long n = redisFormatCommandArgv(&want, argc, argv, argvlen);

	buf_init(&b);
	rclient_format(&b, &cmd);
	OK(n >= 0 && (size_t)n == b.len && memcmp(want, b.data, b.len) == 0, "%s: hiredis's bytes", name);
	redisFreeCommand(want);
	buf_release(&b);
}

int main(void)
{
	const char *hget[] = {"HGET", "{a:123}:st", "lgen"};
	const char *one[] = {"PING"};
	const char *empty[] = {"SET", "k", ""};
	const char *bin[] = {"EVALSHA", "0123456789abcdef0123456789abcdef01234567", "1", "k\r\n$x", "a\0b"};
	const size_t binlen[] = {7, 40, 1, 6, 3};
	char big[1500];
	const char *large[] = {"SET", "k", big};

	memset(big, 'v', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	same(3, hget, NULL, "HGET of a load generation");
	same(1, one, NULL, "one word");
	same(3, empty, NULL, "an empty argument");
	same(5, bin, binlen, "binary arguments with lengths (CRLF and NUL inside)");
	same(3, large, NULL, "an argument of 1499 bytes");
	{
		/* two commands in one buffer: the two formats one after the other */
		struct rclient_cmd a = {3, hget, NULL}, b2 = {1, one, NULL};
		struct buf b;
		char *x = NULL, *y = NULL;
		long long nx = redisFormatCommandArgv(&x, 3, hget, NULL), ny = redisFormatCommandArgv(&y, 1, one, NULL);

		buf_init(&b);
		rclient_format(&b, &a);
		rclient_format(&b, &b2);
		OK((size_t)(nx + ny) == b.len && memcmp(b.data, x, (size_t)nx) == 0 &&
			   memcmp(b.data + nx, y, (size_t)ny) == 0,
		   "a pipeline's commands follow each other");
		redisFreeCommand(x);
		redisFreeCommand(y);
		buf_release(&b);
	}
	return tap_done();
}
