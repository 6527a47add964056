/* pgarr.c: see pgarr.h. */
#include "common/pgarr.h"

#include <string.h>

/* microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch */
#define PG_EPOCH_US INT64_C(946684800000000)

static void put32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

void pgarr_init(struct pgarr *a, uint32_t elem)
{
	buf_init(&a->b);
	pgarr_reset(a, elem);
}

void pgarr_reset(struct pgarr *a, uint32_t elem)
{
	static const char zero[20];

	buf_reset(&a->b);
	buf_append(&a->b, zero, sizeof(zero)); /* the header, written by pgarr_finish */
	a->elem = elem;
	a->n = 0;
	a->nulls = 0;
}

void pgarr_release(struct pgarr *a)
{
	buf_release(&a->b);
	a->n = 0;
}

void pgarr_null(struct pgarr *a)
{
	buf_put_u32be(&a->b, UINT32_MAX); /* length -1 */
	a->nulls = 1;
	a->n++;
}

void pgarr_i64(struct pgarr *a, int64_t v)
{
	buf_put_u32be(&a->b, 8);
	buf_put_i64be(&a->b, v);
	a->n++;
}

void pgarr_i32(struct pgarr *a, int32_t v)
{
	buf_put_u32be(&a->b, 4);
	buf_put_u32be(&a->b, (uint32_t)v);
	a->n++;
}

void pgarr_bytes(struct pgarr *a, const void *p, size_t n)
{
	buf_put_u32be(&a->b, (uint32_t)n);
	buf_append(&a->b, p, n);
	a->n++;
}

void pgarr_text(struct pgarr *a, const char *s)
{
	pgarr_bytes(a, s, strlen(s));
}

void pgarr_ts(struct pgarr *a, int64_t unix_us)
{
	pgarr_i64(a, unix_us - PG_EPOCH_US);
}

const char *pgarr_finish(struct pgarr *a, int *len)
{
	char *h = a->b.data;

	/* ndim, has-nulls flag, element type, then (one dimension) its size and lower bound */
	put32(h, a->n ? 1 : 0);
	put32(h + 4, (uint32_t)a->nulls);
	put32(h + 8, a->elem);
	put32(h + 12, (uint32_t)a->n);
	put32(h + 16, 1);
	/* an empty array is ndim 0 and no dimension: the server reads every byte sent */
	*len = a->n ? (int)a->b.len : 12;
	return h;
}
