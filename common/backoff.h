/* backoff.h: background work (the embedded model's workers) backs off
 * while the billing paths are busy.
 *
 * Two halves, both pure (no sockets, no event loop), so the unit test links
 * them alone:
 *
 * - The meter, written by the event loop thread only: backoff_note() counts
 *   one answered billing request (one that backoff_counts_status() says was
 *   billing's work); once a window (BACKOFF_WINDOW_US) it
 *   compares the window's rate with the threshold and, when it is reached,
 *   publishes "busy until now + BACKOFF_HOLD_US" in an atomic.  Any thread
 *   reads it with backoff_busy().  A quiet loop answers nothing and so
 *   publishes nothing: the last "busy until" runs out by itself, and the
 *   workers are back at full speed within BACKOFF_HOLD_US of the last busy
 *   window.  Its times are CLOCK_MONOTONIC (time_mono_us): a step of the
 *   wall clock must neither hold the workers back for as long as the step
 *   nor end a busy spell early.  And whatever clock it is fed, it is busy
 *   at most BACKOFF_HOLD_US + BACKOFF_WINDOW_US past any `now` it is asked
 *   about: a `now` that went back cannot stretch the hold (the window's
 *   slack: a worker's `now` read just before the loop published).
 *
 * - The duty-cycle policy, for a worker between two steps:
 *   backoff_sleep_us() says how long to pause so that the CPU it used since
 *   its last pause stays within share percent of one core, never more than
 *   max_us at once (a stream keeps flowing, a call still finishes). */
#ifndef COMMON_BACKOFF_H
#define COMMON_BACKOFF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define BACKOFF_WINDOW_US 100000 /* the meter's window */
#define BACKOFF_HOLD_US 200000   /* how long one busy window keeps the workers backed off */
#define BACKOFF_MAX_SLEEP_US 50000
/* A non-streamed call, whose caller sees nothing until its end, pauses at
 * most this long in all (a stream pauses as long as billing is busy). */
#define BACKOFF_MAX_CALL_PAUSE_US 1000000

struct backoff {
	/* set once before the loop runs */
	int64_t threshold; /* answers per second that count as busy; 0: never busy */
	/* the loop's own */
	int64_t win_start_us;
	uint64_t win_count;
	/* loop -> workers */
	_Atomic int64_t busy_until_us;
};

/* threshold: billing answers per second from which the workers back off
 * (0: never). */
void backoff_init(struct backoff *b, int64_t threshold);
/* Whether an answer of this HTTP status was billing's work, load the
 * workers give way to: a success (< 400), or a refusal that took a real
 * decision, 402 (balance) and 429 (rate limit).  Not a request refused before
 * any (400, 401, 403, 404, 405, 409, 413, 422, ...: a flood of bad or
 * unauthenticated requests must not pause the model), nor a failure (5xx)
 * or a client gone (499). */
bool backoff_counts_status(int status);
/* The loop answered one billing request at mono_us (time_mono_us()). */
void backoff_note(struct backoff *b, int64_t mono_us);
/* Whether billing counted as busy at mono_us (time_mono_us(); any thread). */
bool backoff_busy(struct backoff *b, int64_t mono_us);
/* How long (us) a worker that used cpu_us of CPU in the wall_us since its
 * last pause pauses now so that its CPU stays within share_pct percent of
 * one core: cpu_us * 100 / share_pct - wall_us, within [0, max_us].
 * share_pct >= 100 (or <= 0): 0, no pause. */
int64_t backoff_sleep_us(int64_t share_pct, int64_t cpu_us, int64_t wall_us, int64_t max_us);

#endif
