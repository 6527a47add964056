/* pricedb.c: see pricedb.h. */
#include "billing/usage/pricedb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger/db.h"

int pricedb_load(PGconn *c, struct pricing_price **out, size_t *n, struct error *err)
{
	PGresult *r = db_query(c,
			       "SELECT price_version, model, input_nanos, cached_input_nanos, output_nanos,"
			       " (extract(epoch from effective_from) * 1000000)::bigint, paid_only, windows"
			       " FROM prices ORDER BY model, effective_from, price_version",
			       0, NULL, err);
	struct pricing_price *p;
	int rows;

	if (!r)
		return -1;
	rows = PQntuples(r);
	p = calloc((size_t)rows + 1, sizeof(*p));
	if (!p) {
		PQclear(r);
		return error_set(err, 500, "internal", "out of memory");
	}
	for (int i = 0; i < rows; i++) {
		char werr[200];
		p[i].version = strtoll(PQgetvalue(r, i, 0), NULL, 10);
		snprintf(p[i].model, sizeof(p[i].model), "%s", PQgetvalue(r, i, 1));
		p[i].input = strtoll(PQgetvalue(r, i, 2), NULL, 10);
		p[i].cached_input = strtoll(PQgetvalue(r, i, 3), NULL, 10);
		p[i].output = strtoll(PQgetvalue(r, i, 4), NULL, 10);
		p[i].effective_from_us = strtoll(PQgetvalue(r, i, 5), NULL, 10);
		p[i].paid_only = PQgetvalue(r, i, 6)[0] == 't';
		if (pricing_parse_windows(PQgetvalue(r, i, 7), &p[i], werr, sizeof(werr)) < 0) {
			error_set(err, 500, "internal", "price version %lld: %s", (long long)p[i].version, werr);
			free(p);
			PQclear(r);
			return -1;
		}
	}
	PQclear(r);
	*out = p;
	*n = (size_t)rows;
	return 0;
}
