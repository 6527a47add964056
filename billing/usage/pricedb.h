/* pricedb.h: loads every price version from PostgreSQL (the caller's connection). */
#ifndef BILLING_PRICEDB_H
#define BILLING_PRICEDB_H

#include <libpq-fe.h>
#include <stddef.h>

#include "billing/usage/pricing.h"
#include "common/error.h"

/* *out is malloc'ed (caller frees), *n its length.  0 or -1 with err. */
int pricedb_load(PGconn *c, struct pricing_price **out, size_t *n, struct error *err)
	__attribute__((warn_unused_result));

#endif
