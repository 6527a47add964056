/* test_memtrim.c: the policy of common/memtrim.h: a trim once a surge is
 * over (two ticks below a quarter of its busiest tick), never under a steady
 * load, never twice for one surge, never within MEMTRIM_MIN_GAP_US of the
 * last one; and memtrim_run reads the resident size around malloc_trim. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/memtrim.h"
#include "tests/unit/tap.h"

#define S 1000000LL /* one second in us */

/* outside main, so the compiler keeps the allocations below */
void *volatile held[256];

/* feeds per-tick request counts, one tick a second from t0; -> the ticks
 * (0-based) at which a trim was asked, as a bit mask */
static uint64_t feed(struct memtrim *m, int64_t t0, const uint64_t *per_tick, int n, uint64_t *count)
{
	uint64_t mask = 0;

	for (int i = 0; i < n; i++) {
		*count += per_tick[i];
		if (memtrim_tick(m, *count, t0 + i * S))
			mask |= 1ull << i;
	}
	return mask;
}

int main(void)
{
	struct memtrim m;
	uint64_t count = 0;

	{ /* a surge, then quiet: the second quiet tick trims, once */
		const uint64_t t[] = {0, 5000, 6000, 5500, 100, 50, 0, 0, 0, 0};
		memset(&m, 0, sizeof(m));
		IS_I64((int64_t)feed(&m, 0, t, 10, &count), (int64_t)(1ull << 5),
		       "surge then quiet: one trim, at the second quiet tick");
	}
	{ /* a steady load never trims, whatever its level */
		uint64_t t[30];
		for (int i = 0; i < 30; i++)
			t[i] = 4000 + (uint64_t)(i % 3) * 500;
		memset(&m, 0, sizeof(m));
		count = 0;
		IS_I64((int64_t)feed(&m, 0, t, 30, &count), 0, "steady load: no trim");
	}
	{ /* a surge back to a normal load a third of it: trims (below a quarter? no) */
		const uint64_t t[] = {0, 8000, 8000, 3000, 3000, 3000, 3000};
		memset(&m, 0, sizeof(m));
		count = 0;
		IS_I64((int64_t)feed(&m, 0, t, 7, &count), 0, "back to more than a quarter of the surge: no trim");
	}
	{ /* a surge back to a normal load below a quarter of it: trims once */
		const uint64_t t[] = {0, 8000, 8000, 1500, 1500, 1500, 1500, 1500};
		memset(&m, 0, sizeof(m));
		count = 0;
		IS_I64((int64_t)feed(&m, 0, t, 8, &count), (int64_t)(1ull << 4), "back to a normal load: one trim");
	}
	{ /* small traffic is never a surge */
		const uint64_t t[] = {0, 150, 150, 0, 0, 0, 0};
		memset(&m, 0, sizeof(m));
		count = 0;
		IS_I64((int64_t)feed(&m, 0, t, 7, &count), 0, "below MEMTRIM_SURGE a tick: no trim");
	}
	{ /* two surges 5 s apart: the second waits for the gap, then trims */
		const uint64_t t[] = {0, 5000, 0, 0, 5000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
		uint64_t mask;
		memset(&m, 0, sizeof(m));
		count = 0;
		mask = feed(&m, 100 * S, t, 15, &count);
		IS_I64((int64_t)(mask & 0xf), (int64_t)(1ull << 3), "first surge: trimmed at its second quiet tick");
		OK(!(mask & (0x7ull << 4)) && (mask >> 4) != 0, "second surge: trimmed later, not within the gap");
		IS_I64((int64_t)__builtin_popcountll(mask >> 4), 1, "second surge: trimmed once");
		OK((mask >> 13) & 1, "second surge: trimmed 10 s after the first trim");
	}
	{
		/* 16 MB freed below a block still in use: glibc keeps it (only a
		 * free top of the heap goes back by itself) until malloc_trim */
		long before = -2, after = -2;
		void *pin;
		for (int i = 0; i < 256; i++) {
			held[i] = malloc(64 * 1024);
			memset(held[i], 1, 64 * 1024);
		}
		pin = malloc(100 * 1024); /* from the top: above the 16 MB */
		memset(pin, 2, 100 * 1024);
		for (int i = 0; i < 256; i++)
			free(held[i]);
		memtrim_run(&before, &after);
		OK(before > 0 && after > 0, "memtrim_run reads the resident size (%ld -> %ld kB)", before, after);
#ifdef __SANITIZE_ADDRESS__
		/* AddressSanitizer's allocator keeps freed memory in quarantine */
		OK(1, "memtrim_run gives freed memory back # SKIP the allocator is AddressSanitizer's (%ld kB)",
		   before);
#else
		OK(after < before - 8 * 1024, "memtrim_run gives the freed 16 MB back (%ld -> %ld kB)", before, after);
#endif
		free(pin);
	}
	return tap_done();
}
