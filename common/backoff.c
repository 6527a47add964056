/* backoff.c: see backoff.h. */
#include "common/backoff.h"

void backoff_init(struct backoff *b, int64_t threshold)
{
	b->threshold = threshold;
	b->win_start_us = 0;
	b->win_count = 0;
	atomic_init(&b->busy_until_us, 0);
}

void backoff_note(struct backoff *b, int64_t now_us)
{
	int64_t dt;

	if (b->threshold <= 0)
		return;
	b->win_count++;
	if (b->win_start_us == 0 || now_us < b->win_start_us) {
		/* the first answer, or the clock went back (a monotonic one does
		 * not): a new window, and a hold at most BACKOFF_HOLD_US from now */
		if (atomic_load_explicit(&b->busy_until_us, memory_order_relaxed) > now_us + BACKOFF_HOLD_US)
			atomic_store_explicit(&b->busy_until_us, now_us + BACKOFF_HOLD_US, memory_order_relaxed);
		b->win_start_us = now_us;
		b->win_count = 1;
		return;
	}
	dt = now_us - b->win_start_us;
	if (dt < BACKOFF_WINDOW_US)
		return;
	/* the window's rate against the threshold, in integers: count / dt >=
	 * threshold / 1e6 (a window of over a minute is a quiet one) */
	if (dt <= 60000000 && (int64_t)b->win_count * 1000000 >= b->threshold * dt)
		atomic_store_explicit(&b->busy_until_us, now_us + BACKOFF_HOLD_US, memory_order_relaxed);
	b->win_start_us = now_us;
	b->win_count = 0;
}

bool backoff_counts_status(int status)
{
	return (status > 0 && status < 400) || status == 402 || status == 429;
}

bool backoff_busy(struct backoff *b, int64_t now_us)
{
	int64_t until = atomic_load_explicit(&b->busy_until_us, memory_order_relaxed);

	/* until - now > BACKOFF_HOLD_US: set at a later `now` than this one,
	 * by a window up to BACKOFF_WINDOW_US later (a worker reads its clock,
	 * then the loop publishes before this load: still busy); more than
	 * that, a clock that went back */
	return now_us < until && until - now_us <= BACKOFF_HOLD_US + BACKOFF_WINDOW_US;
}

int64_t backoff_sleep_us(int64_t share_pct, int64_t cpu_us, int64_t wall_us, int64_t max_us)
{
	int64_t want;

	if (share_pct <= 0 || share_pct >= 100 || cpu_us <= 0)
		return 0;
	/* cpu / (wall + sleep) <= share / 100 */
	want = cpu_us * 100 / share_pct - wall_us;
	if (want <= 0)
		return 0;
	return want < max_us ? want : max_us;
}
