/* test_backoff.c: common/backoff.h.  The duty-cycle policy: the pause that
 * keeps a worker's CPU within its share of one core, credit for the time it
 * already waited, the cap, and "off"; and the loop's meter: busy from the
 * first window at the threshold, not below it, back to quiet by itself
 * BACKOFF_HOLD_US after the last busy window, never busy at threshold 0, and
 * never held busy by a clock that went back; and which answers count (billing's
 * work: < 400, 402, 429). */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/backoff.h"
#include "tests/unit/tap.h"

/* count answers spread evenly over [t0, t0 + span_us) */
static void feed(struct backoff *b, int64_t t0, int64_t span_us, int64_t count)
{
	for (int64_t i = 0; i < count; i++)
		backoff_note(b, t0 + span_us * i / count);
}

int main(void)
{
	/* ---- the duty cycle ---- */
	static const struct {
		int64_t share, cpu, wall, max, want;
		const char *name;
	} dc[] = {
		{10, 700, 700, 50000, 6300, "10 %: a 0.7 ms token is followed by 6.3 ms of pause"},
		{25, 1000, 1000, 50000, 3000, "25 %: 1 ms of CPU, 3 ms of pause"},
		{50, 2000, 2000, 50000, 2000, "50 %: as long a pause as the work"},
		{10, 700, 5000, 50000, 2000, "time spent off the CPU already counts: 7 ms - 5 ms waited"},
		{10, 700, 7000, 50000, 0, "waited as long as the share asks: no pause"},
		{10, 700, 9000, 50000, 0, "waited longer: no pause, never negative"},
		{10, 20000, 20000, 50000, 50000, "a long step (the prompt) pauses at most max_us"},
		{1, 1000, 1000, 50000, 50000, "1 %: capped too"},
		{100, 700, 700, 50000, 0, "100 %: off"},
		{0, 700, 700, 50000, 0, "0: off (out of range)"},
		{10, 0, 0, 50000, 0, "no CPU used: no pause"},
		{99, 990, 990, 50000, 10, "99 %: 1 % of the step"},
	};
	for (size_t i = 0; i < sizeof(dc) / sizeof(dc[0]); i++)
		IS_I64(backoff_sleep_us(dc[i].share, dc[i].cpu, dc[i].wall, dc[i].max), dc[i].want, dc[i].name);
	{ /* over many steps, the share holds: CPU / wall = share */
		int64_t cpu = 0, wall = 0;
		for (int i = 0; i < 1000; i++) {
			int64_t step = 500 + (i % 7) * 100;
			cpu += step;
			wall += step + backoff_sleep_us(20, step, step, BACKOFF_MAX_SLEEP_US);
		}
		IS_I64(cpu * 100 / wall, 20, "1000 steps at 20 %: the worker used 20 % of the wall time");
	}

	/* ---- what counts as billing's load ---- */
	{
		static const struct {
			int status;
			bool counts;
		} st[] = {
			{200, true},  {201, true},  {204, true},  {304, true},  {402, true},  {429, true},
			{400, false}, {401, false}, {403, false}, {404, false}, {405, false}, {409, false},
			{413, false}, {422, false}, {431, false}, {499, false}, {500, false}, {503, false},
		};
		for (size_t i = 0; i < sizeof(st) / sizeof(st[0]); i++)
			OK(backoff_counts_status(st[i].status) == st[i].counts, "status %d %s billing's load",
			   st[i].status, st[i].counts ? "is" : "is not");
	}

	/* ---- the meter ---- */
	{
		struct backoff b;
		const int64_t t0 = 1000000000000LL;

		backoff_init(&b, 1000);
		OK(!backoff_busy(&b, t0), "nothing answered yet: quiet");
		feed(&b, t0, BACKOFF_WINDOW_US, 50); /* 500 per second */
		backoff_note(&b, t0 + BACKOFF_WINDOW_US);
		OK(!backoff_busy(&b, t0 + BACKOFF_WINDOW_US), "500 answers/s against 1000: quiet");
		feed(&b, t0 + BACKOFF_WINDOW_US + 1, BACKOFF_WINDOW_US, 150); /* 1500 per second */
		backoff_note(&b, t0 + 2 * BACKOFF_WINDOW_US + 1);
		OK(backoff_busy(&b, t0 + 2 * BACKOFF_WINDOW_US + 1), "1500 answers/s against 1000: busy");
		OK(backoff_busy(&b, t0 + 2 * BACKOFF_WINDOW_US + BACKOFF_HOLD_US),
		   "still busy just before the hold runs out");
		OK(!backoff_busy(&b, t0 + 2 * BACKOFF_WINDOW_US + 1 + BACKOFF_HOLD_US),
		   "no answer since: quiet again after BACKOFF_HOLD_US");
		/* a trickle after the load: each window is below the threshold, so quiet */
		feed(&b, t0 + 10 * BACKOFF_WINDOW_US, 3 * BACKOFF_WINDOW_US, 30);
		OK(!backoff_busy(&b, t0 + 13 * BACKOFF_WINDOW_US), "a trickle of 100 answers/s: quiet");
		/* one answer after an hour: a new window, not a burst */
		backoff_note(&b, t0 + 3600LL * 1000000);
		backoff_note(&b, t0 + 3600LL * 1000000 + 1);
		OK(!backoff_busy(&b, t0 + 3600LL * 1000000 + 1), "two answers after an hour: quiet");
	}
	{ /* the callers give it CLOCK_MONOTONIC, which never goes back; but the
	   * wall clock can be stepped back, and whatever clock it is fed, a
	   * step back cannot keep it busy for as long as the step */
		struct backoff b;
		const int64_t t0 = 1000000000000LL, busy_at = t0 + BACKOFF_WINDOW_US;
		const int64_t back = busy_at - 3600LL * 1000000; /* an hour back */

		backoff_init(&b, 1000);
		feed(&b, t0, BACKOFF_WINDOW_US, 150);
		backoff_note(&b, busy_at);
		OK(backoff_busy(&b, busy_at), "1500 answers/s: busy");
		OK(backoff_busy(&b, busy_at - 1000),
		   "a worker's clock read a millisecond before the loop published: busy, not a clock gone back");
		OK(!backoff_busy(&b, back), "asked an hour before the busy window: quiet, not busy for the hour");
		OK(!backoff_busy(&b, back - 1000000), "nor an hour and a second before");
		OK(backoff_busy(&b, busy_at + BACKOFF_HOLD_US - 1), "busy until the hold runs out, as before");
		backoff_note(&b, back); /* one answer on the clock stepped back */
		OK(!backoff_busy(&b, back + BACKOFF_HOLD_US), "an answer after the step: quiet a hold later at most");
		OK(!backoff_busy(&b, busy_at), "the stepped clock back at the busy instant, no load since: quiet");
		feed(&b, back + 1, BACKOFF_WINDOW_US, 150);
		backoff_note(&b, back + BACKOFF_WINDOW_US + 1);
		OK(backoff_busy(&b, back + BACKOFF_WINDOW_US + 1), "load after the step: busy again");
		OK(!backoff_busy(&b, back + BACKOFF_WINDOW_US + 1 + BACKOFF_HOLD_US), "and quiet a hold later");
	}
	{
		struct backoff b;
		const int64_t t0 = 1000000000000LL;

		backoff_init(&b, 0);
		feed(&b, t0, BACKOFF_WINDOW_US * 5, 100000);
		OK(!backoff_busy(&b, t0 + BACKOFF_WINDOW_US * 5), "threshold 0: never busy");
	}
	return tap_done();
}
