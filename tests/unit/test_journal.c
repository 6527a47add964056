/* test_journal.c: the hash chain of the ledger (ledger/journal.c):
 * journal_hash and journal_encode against the encoding docs/ledger.md
 * ("Hash chain") specifies.  The two expected hashes were computed from that
 * text alone, outside this code (Python: hashlib.blake2b(digest_size=32)
 * over struct.pack of the fields in the documented order). */
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ledger/journal.h"
#include "tests/unit/tap.h"

static struct journal_posting postings[] = {{1, 0, 5000}, {100, 42, -5000}};

/* seq 7 of writer billingd-1: a usage transaction with two postings */
static struct journal_txn usage_txn(void)
{
	struct journal_txn t;

	memset(&t, 0, sizeof(t));
	t.kind = "usage";
	t.idempotency_key = "usage:req-1";
	t.account_id = 42;
	t.actor = "billingd";
	t.reason = "";
	t.details = "{\"model\":\"m\"}";
	t.created_at_us = 1795910400123456LL; /* 2026-11-29T00:00:00.123456Z */
	t.n_postings = 2;
	t.postings = postings;
	return t;
}

static void hex(const uint8_t h[JOURNAL_HASH_BYTES], char out[2 * JOURNAL_HASH_BYTES + 1])
{
	sodium_bin2hex(out, 2 * JOURNAL_HASH_BYTES + 1, h, JOURNAL_HASH_BYTES);
}

static void hash_is_blake2b_of_the_documented_encoding(void)
{
	uint8_t prev[JOURNAL_HASH_BYTES], zero[JOURNAL_HASH_BYTES] = {0}, h[JOURNAL_HASH_BYTES];
	char got[2 * JOURNAL_HASH_BYTES + 1];
	struct journal_txn t = usage_txn(), first;
	struct buf b;

	for (int i = 0; i < JOURNAL_HASH_BYTES; i++)
		prev[i] = (uint8_t)i;
	journal_hash(h, prev, "billingd-1", 7, &t);
	hex(h, got);
	IS_STR(got, "c45edfd5ef23425d24fcf3ffc45c6d8da7a3c12bdf71800b85614b83b0e5a17c",
	       "usage txn, seq 7: the hash of the documented encoding");
	/* tag 18 + prev 32 + writer 4+10 + seq 8 + kind 4+5 + key 4+11 + account 8
	 * + actor 4+8 + reason 4 + details 4+13 + created 8 + count 4 + 2 * 16 */
	buf_init(&b);
	journal_encode(&b, prev, "billingd-1", 7, &t);
	IS_I64(b.len, 18 + 32 + 14 + 8 + 9 + 15 + 8 + 12 + 4 + 17 + 8 + 4 + 32, "encoding length as documented");
	buf_release(&b);

	memset(&first, 0, sizeof(first));
	first.kind = "topup";
	first.idempotency_key = "topup:ref-9";
	first.actor = first.reason = first.details = "";
	journal_hash(h, zero, "cli", 1, &first);
	hex(h, got);
	IS_STR(got, "a5cd074fdc82f389d013ef48dcb96a59505ff375951a5cfa4d20e092eb8155eb",
	       "seq 1 (all-zero prev), no account, no postings");
}

/* Every input of the encoding changes the hash. */
static void every_field_is_in_the_hash(void)
{
	uint8_t prev[JOURNAL_HASH_BYTES] = {0}, base[JOURNAL_HASH_BYTES], h[JOURNAL_HASH_BYTES];
	struct journal_posting p2[2];
	struct journal_txn t = usage_txn(), m;

	journal_hash(base, prev, "billingd-1", 7, &t);
#define DIFFERS(what, ...)                                                                  \
	do {                                                                                \
		__VA_ARGS__;                                                                \
		OK(memcmp(h, base, sizeof(h)) != 0, "a changed %s changes the hash", what); \
	} while (0)
	DIFFERS("prev hash", prev[31] = 1; journal_hash(h, prev, "billingd-1", 7, &t); prev[31] = 0);
	DIFFERS("writer", journal_hash(h, prev, "billingd-2", 7, &t));
	DIFFERS("seq", journal_hash(h, prev, "billingd-1", 8, &t));
	DIFFERS("kind", m = t; m.kind = "topup"; journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("idempotency key", m = t; m.idempotency_key = "usage:req-2";
		journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("account", m = t; m.account_id = 43; journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("actor", m = t; m.actor = "cli"; journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("reason", m = t; m.reason = "x"; journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("details byte", m = t; m.details = "{\"model\": \"m\"}"; journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("created_at", m = t; m.created_at_us++; journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("posting amount", memcpy(p2, postings, sizeof(p2)); p2[0].amount = 5001; p2[1].amount = -5001; m = t;
		m.postings = p2; journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("posting ledger account", memcpy(p2, postings, sizeof(p2)); p2[1].ledger_account_id = 101; m = t;
		m.postings = p2; journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("posting order", p2[0] = postings[1]; p2[1] = postings[0]; m = t; m.postings = p2;
		journal_hash(h, prev, "billingd-1", 7, &m));
	DIFFERS("posting count", m = t; m.n_postings = 1; journal_hash(h, prev, "billingd-1", 7, &m));
	/* strings carry their length: a byte moved from one to the next is another transaction */
	DIFFERS("split between kind and key", m = t; m.kind = "usageu"; m.idempotency_key = "sage:req-1";
		journal_hash(h, prev, "billingd-1", 7, &m));
#undef DIFFERS
	journal_hash(h, prev, "billingd-1", 7, &t);
	OK(memcmp(h, base, sizeof(h)) == 0, "the same inputs give the same hash");
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	hash_is_blake2b_of_the_documented_encoding();
	every_field_is_in_the_hash();
	return tap_done();
}
