/* procstat.h: the machine's busy CPU time, for the load generators of
 * `make bench` (loadgen, copybench): the sum over every CPU of the user,
 * nice, system, irq, softirq and steal ticks in /proc/stat's first line
 * (idle and iowait left out), in seconds.  A scenario's figure is the
 * difference over its measured window: what the whole machine (load
 * generator, kernel, billingd, PostgreSQL, Redis, and anything else that
 * runs) spent, so CPU per request of a baseline and of our path compare on
 * a quiet machine even where neither saturates the cores.  -1 when
 * /proc/stat cannot be read. */
#ifndef BENCH_PROCSTAT_H
#define BENCH_PROCSTAT_H

#include <stdio.h>
#include <unistd.h>

static inline double procstat_busy_s(void)
{
	unsigned long long v[8] = {0};
	FILE *f = fopen("/proc/stat", "r");
	int n;

	if (!f)
		return -1;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
		   &v[7]);
	fclose(f);
	if (n < 8)
		return -1;
	/* user nice system idle iowait irq softirq steal */
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

#endif
