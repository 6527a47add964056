/* memtrim.h: after a surge, the memory its requests used goes back to the
 * system.  glibc keeps what a program frees in its arenas (one per thread
 * that allocated), so a process's resident size stays at its busiest
 * moment's for good: after a burst of 1000-record usage batches billingd
 * held about 18 MB more than it used (malloc_trim(0) on such a process:
 * 72.8 -> 54.3 MB).  The policy: once a tick, with the requests counted so
 * far; when the last MEMTRIM_QUIET_TICKS ticks each counted fewer than a
 * quarter of the busiest tick since the last trim (the surge is over, or
 * the process is idle), and at least MEMTRIM_MIN_GAP_US after the last trim,
 * trim once; never twice for one surge.  A steady load never trims (each
 * trim gives back pages the next requests would fault in again). */
#ifndef COMMON_MEMTRIM_H
#define COMMON_MEMTRIM_H

#include <stdbool.h>
#include <stdint.h>

#define MEMTRIM_QUIET_TICKS 2
#define MEMTRIM_MIN_GAP_US 10000000
/* a surge: at least this many requests in one tick */
#define MEMTRIM_SURGE 200

struct memtrim {
	uint64_t last;   /* requests counted at the previous tick */
	uint64_t peak;   /* the busiest tick's requests since the last trim */
	int quiet;       /* ticks in a row below a quarter of peak */
	int64_t trimmed; /* when the last trim ran (us), 0 never */
	bool started;
};

/* One tick: requests is the running count, now_us the clock.  true when
 * the caller should trim now (memtrim_run). */
bool memtrim_tick(struct memtrim *m, uint64_t requests, int64_t now_us);
/* malloc_trim(0); the resident size before and after (kB, -1 unknown). */
void memtrim_run(long *rss_before_kb, long *rss_after_kb);

#endif
