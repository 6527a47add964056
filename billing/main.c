/* main.c: billingd.  Reads the configuration (CONTRACT.md §1), refuses to
 * start against a database with pending migrations, or with a Redis that
 * holds another billing database's mirrors, serves HTTP until
 * SIGTERM/SIGINT (then drains and exits 0); SIGHUP reloads the token files. */
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include "billing/authz/authorize.h"
#include "billing/http/server.h"
#include "common/config.h"
#include "common/log.h"
#include "common/rclient.h"
#include "ledger/db.h"

static void usage(void)
{
	printf("usage: billingd [--config FILE] [--KEY VALUE ...]\n\n"
	       "The billing service: /v1/authorize, /v1/usage and the rest of CONTRACT.md section 3.\n"
	       "SIGHUP reloads the token files; SIGTERM stops accepting, answers what is in flight, exits 0.\n\n");
	config_print_keys();
}

static void sig_cb(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;

	(void)what;
	if (sig == SIGHUP)
		server_reload(s);
	else
		server_drain(s);
}

/* The Redis serves this database's mirrors, or nobody's yet (then it is
 * claimed for it): account ids start at 1 in every database, so the mirrors,
 * holds and limits of another database's account 7 would be trusted as this
 * one's account 7 (rclient_redis_owner).  A Redis that does not answer now is
 * checked when it does: every new connection checks the claim again
 * (billing/authz/authorize.c check_owner). */
static int check_redis_owner(struct config *cfg, const char *ident)
{
	struct error err;
	char other[256];
	struct rclient *rc = rclient_new(config_get(cfg, "redis"), 2000, &err);
	int n = rc ? rclient_redis_owner(rc, ident, true, other, sizeof(other), &err) : -1;

	rclient_free(rc);
	if (n < 0)
		log_warn("redis not checked at start: it did not answer", "error=\"%s\"", err.msg);
	if (n == 1)
		fprintf(stderr,
			"billingd: redis %s holds the mirrors of another billing database (%s; this one is %s):"
			" give each billing database its own Redis, or, if that database is gone, empty this Redis"
			" (FLUSHALL; the mirrors are rebuilt from the books)\n",
			config_get(cfg, "redis"), other, ident);
	return n == 1 ? -1 : 0;
}

static int check_migrations(struct config *cfg, char *ident, size_t cap)
{
	struct error err;
	PGconn *c = NULL;
	int n, tries = 0;

	/* PostgreSQL may still be starting: try for a few seconds */
	while (!(c = db_connect(config_get(cfg, "pg"), 5000, &err))) {
		if (++tries >= 20) {
			fprintf(stderr, "billingd: %s\n", err.msg);
			return -1;
		}
		struct timeval tv = {0, 250000};
		select(0, NULL, NULL, NULL, &tv);
	}
	n = db_pending_migrations(c, config_get(cfg, "migrations_dir"), &err);
	if (n == 0 && db_identity(c, ident, cap, &err) < 0)
		n = -1;
	PQfinish(c);
	if (n < 0) {
		fprintf(stderr, "billingd: %s\n", err.msg);
		return -1;
	}
	if (n > 0) {
		fprintf(stderr, "billingd: %d migration(s) pending in '%s': run 'billing-admin migrate' first\n", n,
			config_get(cfg, "migrations_dir"));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct config *cfg;
	struct error ce;
	struct error err;
	struct event_base *base = NULL;
	struct event_config *evcfg;
	struct server *s;
	struct event *ev_term, *ev_int, *ev_hup;
	char ident[256];

	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage();
			return 0;
		}
	if (sodium_init() < 0 || evthread_use_pthreads() < 0) {
		fprintf(stderr, "billingd: cannot initialise libsodium or libevent threads\n");
		return 1;
	}
	cfg = config_new();
	/* failures free what they made: a sanitizer build reports no leak on exit 2 */
	if (!cfg || config_from_args(cfg, &argc, argv, &ce) < 0) {
		fprintf(stderr, "billingd: %s\n", cfg ? ce.msg : "out of memory");
		config_free(cfg);
		return 2;
	}
	if (argc > 1) {
		fprintf(stderr, "billingd: unexpected argument '%s' (see --help)\n", argv[1]);
		config_free(cfg);
		return 2;
	}
	if (log_set_level(config_get(cfg, "log_level")) < 0) {
		fprintf(stderr, "billingd: log_level must be debug, info, warn or error\n");
		config_free(cfg);
		return 2;
	}
	if (config_check(cfg, &ce) < 0) {
		fprintf(stderr, "billingd: %s\n", ce.msg);
		config_free(cfg);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/* failures free what they made: a sanitizer build reports no leak on exit 1 */
	if (check_migrations(cfg, ident, sizeof(ident)) < 0 || check_redis_owner(cfg, ident) < 0) {
		config_free(cfg);
		return 1;
	}
	authz_set_db_identity(ident);
	/* epoll's changelist: the event changes of one loop turn (evhttp
	 * turns reading off and writing on and back for every request) go to
	 * the kernel as one epoll_ctl per descriptor, not one per change.  Its
	 * one caveat, dup()ed descriptors, does not apply: billingd dups none */
	evcfg = event_config_new();
	if (evcfg) {
		event_config_set_flag(evcfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
		base = event_base_new_with_config(evcfg);
		event_config_free(evcfg);
	}
	if (!base) {
		fprintf(stderr, "billingd: cannot create the event loop\n");
		config_free(cfg);
		return 1;
	}
	s = server_new(base, cfg, &err);
	if (!s) {
		fprintf(stderr, "billingd: %s\n", err.msg);
		event_base_free(base);
		config_free(cfg);
		return 1;
	}
	ev_term = evsignal_new(base, SIGTERM, sig_cb, s);
	ev_int = evsignal_new(base, SIGINT, sig_cb, s);
	ev_hup = evsignal_new(base, SIGHUP, sig_cb, s);
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	event_add(ev_hup, NULL);
	event_base_dispatch(base);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	server_free(s);
	event_base_free(base);
	config_free(cfg);
	log_info("billingd stopped", "%s", "");
	return 0;
}
