/* memtrim.c: see memtrim.h. */
#include "common/memtrim.h"

#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

bool memtrim_tick(struct memtrim *m, uint64_t requests, int64_t now_us)
{
	uint64_t d;

	if (!m->started) {
		m->started = true;
		m->last = requests;
		return false;
	}
	d = requests - m->last;
	m->last = requests;
	if (d > m->peak)
		m->peak = d;
	if (m->peak < MEMTRIM_SURGE || d * 4 >= m->peak) {
		m->quiet = 0;
		return false;
	}
	if (++m->quiet < MEMTRIM_QUIET_TICKS || (m->trimmed && now_us - m->trimmed < MEMTRIM_MIN_GAP_US))
		return false;
	m->trimmed = now_us;
	m->peak = 0;
	m->quiet = 0;
	return true;
}

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = -1, rss = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = -1;
	fclose(f);
	return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

void memtrim_run(long *rss_before_kb, long *rss_after_kb)
{
	*rss_before_kb = rss_kb();
	malloc_trim(0);
	*rss_after_kb = rss_kb();
}
