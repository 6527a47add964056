/* metrics.h: Prometheus counters, gauges and histograms; thread-safe. */
#ifndef BILLING_METRICS_H
#define BILLING_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct metrics;

struct metrics *metrics_new(void) __attribute__((warn_unused_result));
void metrics_free(struct metrics *m);
/* route: a fixed label such as "/v1/usage" (borrowed, must be static) */
void metrics_request(struct metrics *m, const char *route, int status, int64_t latency_us);
void metrics_batch(struct metrics *m, size_t records, int64_t commit_us);
void metrics_billed(struct metrics *m, const char *model, int64_t nanos);
void metrics_count(struct metrics *m, const char *name, int64_t delta); /* free-form counters */
void metrics_gauge(struct metrics *m, const char *name, int64_t value);
void metrics_render(struct metrics *m, struct buf *out);

#endif
