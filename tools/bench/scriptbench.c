/* scriptbench.c: the authorize script alone, on a private Redis.
 *
 *   scriptbench PORT [-n DECISIONS] [-a ACCOUNTS] [-g GROUP] [-l] [-w WINDOW] [-s FILE]
 *
 * Connects to 127.0.0.1:PORT (a throw-away redis-server: it runs FLUSHALL
 * first; tools/bench/script_cost.sh starts and stops one), loads a balance
 * mirror for accounts 1..ACCOUNTS (1000) through the authorize script's
 * locked load, then runs DECISIONS (20000) authorize decisions of random
 * accounts, each with its own hold id, WINDOW (32, at most 64) script calls in flight,
 * GROUP (1) decisions a call (1: quota_lua_authorize; more: the grouped
 * script).  -l sets an account-wide and a per-model RPM, TPM and
 * concurrency limit high enough never to refuse.  The scripts are the ones
 * billingd sends (billing/authz/quota.lua.h), compiled in; -s FILE runs
 * the one-decision calls (and the loads) with the script in FILE instead (a
 * variant under study; it must answer as the authorize script does).
 *
 * Prints one line: decisions, Redis CPU per decision (utime + stime of the
 * server from /proc), the server's own script time per decision
 * (INFO commandstats, EVALSHA), and how many were admitted.  Exit 1 when a
 * decision was not admitted or Redis answered an error. */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "billing/authz/quota.lua.h"

#define ARGC 16

static redisReply *cmd(redisContext *c, int argc, const char **argv)
{
	redisReply *r = redisCommandArgv(c, argc, argv, NULL);

	if (!r || r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "scriptbench: redis: %s\n", r ? r->str : c->errstr);
		exit(1);
	}
	return r;
}

static double cpu_seconds(long pid)
{
	char path[64], buf[1024];
	unsigned long ut = 0, st = 0;
	FILE *f;
	char *p;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof(buf), f)) {
		fprintf(stderr, "scriptbench: cannot read %s\n", path);
		exit(1);
	}
	fclose(f);
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) {
		fprintf(stderr, "scriptbench: cannot parse %s\n", path);
		exit(1);
	}
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* "field:value" of an INFO section, as a double (0 when absent) */
static double info_field(redisContext *c, const char *section, const char *field, const char *sub)
{
	const char *argv[2] = {"INFO", section};
	redisReply *r = cmd(c, 2, argv);
	const char *p = strstr(r->str, field);
	double v = 0;

	if (p && sub)
		p = strstr(p, sub);
	if (p)
		v = strtod(strchr(p, sub ? '=' : ':') + 1, NULL);
	freeReplyObject(r);
	return v;
}

/* An authorize answer that admitted: the string "OK ..." (quota.lua.h), or
 * {'OK', ...} of a script before it (-s). */
static int admitted_answer(const redisReply *r)
{
	if (r->type == REDIS_REPLY_STRING)
		return strncmp(r->str, "OK ", 3) == 0;
	return r->type == REDIS_REPLY_ARRAY && r->elements && r->element[0]->type == REDIS_REPLY_STRING &&
	       strcmp(r->element[0]->str, "OK") == 0;
}

static uint64_t rng = 88172645463325252ull;
static int64_t next_account(int64_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (int64_t)(rng % (uint64_t)n) + 1;
}

static void keys_of(char (*k)[48], int64_t account)
{
	static const char *const sfx[4] = {"bal", "st", "hold", "hexp"};

	for (int i = 0; i < 4; i++)
		snprintf(k[i], 48, "{a:%" PRId64 "}:%s", account, sfx[i]);
}

int main(int argc, char **argv)
{
	long n = 20000, accounts = 1000, group = 1, window = 32;
	int limits = 0, port, opt;
	const char *lim0 = "0", *script = quota_lua_authorize;
	char *file_body = NULL;
	char sha1[48], shag[48];
	redisContext *c;
	redisReply *r;
	long pid, sent = 0, done = 0, calls = 0, admitted = 0, errors = 0;
	double cpu0, cpu1, evalsha;
	long sizes[64], head = 0, tail = 0; /* decisions of each call in flight, in order */

	if (argc < 2 || (port = atoi(argv[1])) <= 0) {
		fprintf(stderr,
			"usage: scriptbench PORT [-n DECISIONS] [-a ACCOUNTS] [-g GROUP] [-l] [-w WINDOW] [-s FILE]\n");
		return 2;
	}
	optind = 2;
	while ((opt = getopt(argc, argv, "n:a:g:lw:s:")) != -1) {
		switch (opt) {
		case 'n':
			n = atol(optarg);
			break;
		case 'a':
			accounts = atol(optarg);
			break;
		case 'g':
			group = atol(optarg);
			break;
		case 'l':
			limits = 1;
			break;
		case 'w':
			window = atol(optarg);
			break;
		case 's': {
			FILE *f = fopen(optarg, "r");
			long len;
			if (!f || fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) ||
			    !(file_body = calloc(1, (size_t)len + 1)) ||
			    fread(file_body, 1, (size_t)len, f) != (size_t)len) {
				fprintf(stderr, "scriptbench: cannot read '%s'\n", optarg);
				return 1;
			}
			fclose(f);
			script = file_body;
			break;
		}
		default:
			return 2;
		}
	}
	if (n < 1 || accounts < 1 || group < 1 || group > 32 || window < 1 || window > 64) {
		fprintf(stderr, "scriptbench: bad option value\n");
		return 2;
	}
	c = redisConnect("127.0.0.1", port);
	if (!c || c->err) {
		fprintf(stderr, "scriptbench: cannot connect to 127.0.0.1:%d\n", port);
		return 1;
	}
	{
		const char *a[1] = {"FLUSHALL"};
		freeReplyObject(cmd(c, 1, a));
		const char *l1[3] = {"SCRIPT", "LOAD", script};
		r = cmd(c, 3, l1);
		snprintf(sha1, sizeof(sha1), "%s", r->str);
		freeReplyObject(r);
		const char *l2[3] = {"SCRIPT", "LOAD", quota_lua_authorize_group};
		r = cmd(c, 3, l2);
		snprintf(shag, sizeof(shag), "%s", r->str);
		freeReplyObject(r);
	}
	pid = (long)info_field(c, "server", "process_id", NULL);

	/* the mirrors: one locked load per account (it also takes one hold) */
	for (int64_t a = 1; a <= accounts; a++) {
		char k[4][48], id[48];
		const char *v[3 + 4 + 23];
		int j = 0;
		keys_of(k, a);
		snprintf(id, sizeof(id), "seed-%" PRId64, a);
		v[j++] = "EVALSHA", v[j++] = sha1, v[j++] = "4";
		for (int i = 0; i < 4; i++)
			v[j++] = k[i];
		const char *args[23] = {id,
					"1000",
					"0",
					"600000",
					"2200",
					"deepseek-chat",
					"0",
					"0",
					"0",
					"0",
					"0",
					"0",
					"0",
					"0",
					"0",
					"0",
					"99999999999999",
					"1000000000000000",
					"0",
					"active",
					"3600000",
					"0",
					"0"};
		for (int i = 0; i < 23; i++)
			v[j++] = args[i];
		r = cmd(c, j, v);
		if (!admitted_answer(r)) {
			fprintf(stderr, "scriptbench: the load of account %" PRId64 " was not admitted\n", a);
			return 1;
		}
		freeReplyObject(r);
	}
	{
		const char *a[2] = {"CONFIG", "RESETSTAT"};
		freeReplyObject(cmd(c, 2, a));
	}
	cpu0 = cpu_seconds(pid);
	if (limits)
		lim0 = "1000000000";
	while (done < n) {
		while (sent < n && calls < window) {
			long g = n - sent < group ? n - sent : group;
			const char *v[3 + 4 * 32 + 32 * (1 + ARGC)];
			char k[32][4][48], id[32][48], idx[32][8];
			int64_t acct[32];
			int j = 0, na = 0;
			v[j++] = "EVALSHA";
			v[j++] = g == 1 ? sha1 : shag;
			char nk[8];
			v[j++] = nk;
			for (long i = 0; i < g; i++) {
				int64_t a = next_account(accounts);
				int x = 0;
				while (x < na && acct[x] != a)
					x++;
				if (x == na) {
					acct[na] = a;
					keys_of(k[na], a);
					na++;
				}
				snprintf(idx[i], sizeof(idx[i]), "%d", x + 1);
				snprintf(id[i], sizeof(id[i]), "sb-%ld-%ld", (long)getpid(), sent + i);
			}
			snprintf(nk, sizeof(nk), "%d", 4 * na);
			for (int x = 0; x < na; x++)
				for (int i = 0; i < 4; i++)
					v[j++] = k[x][i];
#ifdef QUOTA_AUTHORIZE_PACK
			/* a group: the decisions packed in ARGV 1, those with limits in
			 * the full form after it (quota.lua.h) */
			char pack[32 * 96];
			size_t plen = 0, vlen[3 + 4 * 32 + 32 * (1 + ARGC)];
			if (g > 1) {
				vlen[j] = 0;
				v[j++] = pack;
			}
#endif
			for (long i = 0; i < g; i++) {
#ifdef QUOTA_AUTHORIZE_PACK
				if (g > 1) {
					/* account number (+64: it repeats in the call; negated: the
					 * full form follows), hold_id, amount, paid_only, ttl 600000,
					 * tokens 2200, model (quota.lua.h) */
					static const char ttl[8] = {(char)0xc0, 0x27, 0x09, 0, 0, 0, 0, 0};
					static const char tok[8] = {(char)0x98, 0x08, 0, 0, 0, 0, 0, 0};
					static const char zero[8] = {0};
					int x = atoi(idx[i]), reps = 0;
					size_t l = limits ? 0 : strlen(id[i]);
					for (long y = 0; y < g; y++)
						reps += strcmp(idx[y], idx[i]) == 0;
					if (reps > 1)
						x += 64;
					if (limits)
						x = -x;
					pack[plen++] = (char)(x & 0xff), pack[plen++] = (char)((x >> 8) & 0xff);
					pack[plen++] = (char)l, pack[plen++] = 0;
					memcpy(pack + plen, id[i], l), plen += l;
					pack[plen++] = limits ? 0 : 4;
					if (!limits)
						memcpy(pack + plen, "1000", 4), plen += 4;
					pack[plen++] = '0';
					memcpy(pack + plen, limits ? zero : ttl, 8), plen += 8;
					memcpy(pack + plen, limits ? zero : tok, 8), plen += 8;
					pack[plen++] = limits ? 0 : 13, pack[plen++] = 0;
					if (!limits) {
						memcpy(pack + plen, "deepseek-chat", 13), plen += 13;
						continue;
					}
				}
#else
				if (g > 1)
					v[j++] = idx[i];
#endif
				v[j++] = id[i];
				v[j++] = "1000", v[j++] = "0", v[j++] = "600000", v[j++] = "2200";
				v[j++] = "deepseek-chat";
#ifdef QUOTA_AUTHORIZE_SHORT_ARGC
				/* a grouped decision without limits: the short form (quota.lua.h) */
				if (g > 1 && !limits) {
					memmove(idx[i] + 1, idx[i], strlen(idx[i]) + 1);
					idx[i][0] = '-';
					continue;
				}
#endif
				/* account: rpm tpm rpd tpd conc, model: the same */
				v[j++] = lim0, v[j++] = lim0, v[j++] = "0", v[j++] = "0",
				v[j++] = limits ? "100000" : "0";
				v[j++] = lim0, v[j++] = lim0, v[j++] = "0", v[j++] = "0",
				v[j++] = limits ? "100000" : "0";
			}
#ifdef QUOTA_AUTHORIZE_PACK
			for (int x = 0; x < j; x++)
				if (v[x] != pack)
					vlen[x] = strlen(v[x]);
				else
					vlen[x] = plen;
			redisAppendCommandArgv(c, j, v, vlen);
#else
			redisAppendCommandArgv(c, j, v, NULL);
#endif
			sent += g;
			sizes[tail++ % 64] = g;
			calls++;
		}
		if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
			fprintf(stderr, "scriptbench: redis: %s\n", c->errstr);
			return 1;
		}
		calls--;
		if (r->type == REDIS_REPLY_ERROR) {
			fprintf(stderr, "scriptbench: redis: %s\n", r->str);
			errors++;
			done++;
		} else if (sizes[head % 64] > 1 && r->type == REDIS_REPLY_STRING) {
			/* one string, an answer a line (quota.lua.h) */
			for (const char *p = r->str; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL, done++)
				admitted += strncmp(p, "OK ", 3) == 0;
		} else if (sizes[head % 64] > 1) {
			for (size_t i = 0; i < r->elements; i++, done++)
				admitted += admitted_answer(r->element[i]);
		} else {
			admitted += admitted_answer(r);
			done++;
		}
		head++;
		freeReplyObject(r);
	}
	cpu1 = cpu_seconds(pid);
	evalsha = info_field(c, "commandstats", "cmdstat_evalsha:", "usec=");
	printf("decisions=%ld group=%ld limits=%d accounts=%ld redis_cpu_us=%.1f script_us=%.1f admitted=%ld\n", n,
	       group, limits, accounts, (cpu1 - cpu0) * 1e6 / (double)n, evalsha / (double)n, admitted);
	redisFree(c);
	return admitted == n && !errors ? 0 : 1;
}
