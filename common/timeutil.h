/* timeutil.h: instants are int64 microseconds since the Unix epoch, UTC. Pure functions. */
#ifndef COMMON_TIMEUTIL_H
#define COMMON_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Parses RFC 3339 ("2026-11-29T08:00:00Z", "...T08:00:00.123456+08:00").
 * Fractions beyond microseconds are truncated.  A bare date "2026-11-29"
 * is accepted when allow_date (midnight UTC).  0 or -1. */
int time_parse_rfc3339(const char *s, int allow_date, int64_t *us) __attribute__((warn_unused_result));
/* Formats as "2026-11-29T08:00:00.123456Z" (buf >= 32 bytes). */
void time_format_rfc3339(int64_t us, char *buf, size_t buflen);
/* Current wall clock, microseconds. */
int64_t time_now_us(void);
/* CLOCK_MONOTONIC, microseconds: not an instant (its zero is arbitrary, about
 * the boot), only for durations and timeouts; no step of the wall clock
 * moves it. */
int64_t time_mono_us(void);
/* Days since epoch for a civil date and back (proleptic Gregorian). */
int64_t time_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif
