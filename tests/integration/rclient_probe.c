/* rclient_probe: runs Redis commands through common/rclient.c, one per line
 * of stdin, on one kept client, and prints each answer on a line of stdout.
 *
 * usage: rclient_probe HOST:PORT
 * A line is a command's words separated by spaces ("SET k v").  An answer is
 * "nil", "int N", "str S", "status S", "array N", "err S" (Redis's error
 * answer) or "fail S" (no answer: rclient's error).  Used by
 * test_rclient.py to restart the server between two commands.  The line
 * "@invalidate" runs billingd's start-up drop of every mirror instead
 * (quota_invalidate_all_sync on HOST:PORT, its own client): "int N"
 * mirrors dropped, or "fail". */
#include <stdio.h>
#include <string.h>

#include "billing/authz/quota.h"
#include "common/error.h"
#include "common/rclient.h"

int main(int argc, char **argv)
{
	char line[1024];
	struct error err;
	struct rclient *c;

	if (argc != 2) {
		fprintf(stderr, "usage: rclient_probe HOST:PORT\n");
		return 2;
	}
	c = rclient_new(argv[1], 2000, &err);
	if (!c) {
		printf("fail %s\n", err.msg);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		const char *words[32];
		int n = 0;
		redisReply *r;

		for (char *w = strtok(line, " \n"); w && n < 32; w = strtok(NULL, " \n"))
			words[n++] = w;
		if (!n)
			continue;
		if (n == 1 && strcmp(words[0], "@invalidate") == 0) {
			long dropped = quota_invalidate_all_sync(argv[1], 2000);
			if (dropped < 0)
				printf("fail\n");
			else
				printf("int %ld\n", dropped);
			continue;
		}
		r = rclient_commandv(c, n, words, NULL, &err);
		if (!r)
			printf("fail %s\n", err.msg);
		else if (r->type == REDIS_REPLY_NIL)
			printf("nil\n");
		else if (r->type == REDIS_REPLY_INTEGER)
			printf("int %lld\n", r->integer);
		else if (r->type == REDIS_REPLY_STRING)
			printf("str %s\n", r->str);
		else if (r->type == REDIS_REPLY_STATUS)
			printf("status %s\n", r->str);
		else if (r->type == REDIS_REPLY_ERROR)
			printf("err %s\n", r->str);
		else
			printf("array %zu\n", r->elements);
		freeReplyObject(r);
	}
	rclient_free(c);
	return 0;
}
