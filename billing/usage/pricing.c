/* pricing.c: see pricing.h. */
#include "billing/usage/pricing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_hhmm(const char **p, int *secs)
{
	const char *s = *p;
	int h, m;

	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' || s[2] != ':' || s[3] < '0' || s[3] > '9' ||
	    s[4] < '0' || s[4] > '9')
		return -1;
	h = (s[0] - '0') * 10 + (s[1] - '0');
	m = (s[3] - '0') * 10 + (s[4] - '0');
	if (h > 24 || m > 59 || (h == 24 && m != 0))
		return -1;
	*secs = (h * 60 + m) * 60 % 86400;
	*p = s + 5;
	return 0;
}

int pricing_parse_windows(const char *s, struct pricing_price *p, char *err, size_t errlen)
{
	const char *c = s;

	p->n_windows = 0;
	if (!s)
		return 0;
	while (*c) {
		struct pricing_window w;
		char *end;
		long long bp;

		if (p->n_windows == PRICING_MAX_WINDOWS) {
			snprintf(err, errlen, "at most %d discount windows", PRICING_MAX_WINDOWS);
			return -1;
		}
		if (parse_hhmm(&c, &w.start_s) < 0 || *c++ != '-' || parse_hhmm(&c, &w.end_s) < 0 || *c++ != '=') {
			snprintf(err, errlen, "window '%s': expected HH:MM-HH:MM=BASIS_POINTS", s);
			return -1;
		}
		if (*c < '0' || *c > '9') {
			snprintf(err, errlen, "window '%s': multiplier must be an integer of basis points", s);
			return -1;
		}
		bp = strtoll(c, &end, 10);
		if (bp < 0 || bp > 1000000 || (*end && *end != ',')) {
			snprintf(err, errlen, "window '%s': multiplier must be 0..1000000 basis points", s);
			return -1;
		}
		if (w.start_s == w.end_s) {
			snprintf(err, errlen, "window '%s': start and end are the same", s);
			return -1;
		}
		w.multiplier_bp = bp;
		p->windows[p->n_windows++] = w;
		if (*end == ',' && !end[1]) {
			snprintf(err, errlen, "window list '%s' ends with a comma", s);
			return -1;
		}
		c = *end == ',' ? end + 1 : end;
	}
	return 0;
}

void pricing_format_windows(const struct pricing_price *p, char *buf, size_t buflen)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < p->n_windows && off < buflen; i++) {
		const struct pricing_window *w = &p->windows[i];
		int n = snprintf(buf + off, buflen - off, "%s%02d:%02d-%02d:%02d=%lld", i ? "," : "", w->start_s / 3600,
				 w->start_s / 60 % 60, w->end_s / 3600, w->end_s / 60 % 60,
				 (long long)w->multiplier_bp);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

int64_t pricing_multiplier(const struct pricing_price *p, int64_t t_us)
{
	int64_t secs = t_us >= 0 ? t_us / 1000000 : -((-t_us + 999999) / 1000000);
	int sod = (int)(((secs % 86400) + 86400) % 86400);

	for (size_t i = 0; i < p->n_windows; i++) {
		const struct pricing_window *w = &p->windows[i];
		bool in = w->start_s < w->end_s ? (sod >= w->start_s && sod < w->end_s)
						: (sod >= w->start_s || sod < w->end_s);
		if (in)
			return w->multiplier_bp;
	}
	return 10000;
}

int pricing_cost(const struct pricing_price *p, const struct pricing_tokens *t, int64_t started_at_us,
		 int64_t *cost_nanos)
{
	__int128 sum, r;
	int64_t m, u;

	if (t->input < 0 || t->cached_input < 0 || t->output < 0 || t->cached_input > t->input ||
	    t->input > PRICING_MAX_TOKENS || t->output > PRICING_MAX_TOKENS)
		return -1;
	u = t->input - t->cached_input;
	m = pricing_multiplier(p, started_at_us);
	sum = (__int128)u * p->input + (__int128)t->cached_input * p->cached_input + (__int128)t->output * p->output;
	/* floor(sum*m/10^10 + 1/2) = floor((sum*m + 5*10^9) / 10^10) for sum*m >= 0 */
	r = (sum * m + (__int128)5000000000LL) / (__int128)10000000000LL;
	if (r > (__int128)INT64_MAX)
		return -1;
	*cost_nanos = (int64_t)r;
	return 0;
}

int64_t pricing_min_billable(const struct pricing_price *p, int64_t t_us)
{
	static const struct pricing_tokens one[3] = {{1, 0, 0}, {1, 1, 0}, {0, 0, 1}};
	int64_t best = 0;

	if (p->input <= 0 && p->cached_input <= 0 && p->output <= 0)
		return 0;
	for (int i = 0; i < 3; i++) {
		int64_t c;
		if (pricing_cost(p, &one[i], t_us, &c) == 0 && c > 0 && (best == 0 || c < best))
			best = c;
	}
	return best > 0 ? best : 1;
}

const struct pricing_price *pricing_select(const struct pricing_price *prices, size_t n, const char *model,
					   int64_t t_us, bool *model_known)
{
	const struct pricing_price *best = NULL;

	*model_known = false;
	for (size_t i = 0; i < n; i++) {
		const struct pricing_price *p = &prices[i];
		if (strcmp(p->model, model) != 0)
			continue;
		*model_known = true;
		if (p->effective_from_us > t_us)
			continue;
		if (!best || p->effective_from_us > best->effective_from_us ||
		    (p->effective_from_us == best->effective_from_us && p->version > best->version))
			best = p;
	}
	return best;
}
