/* main.c: billingd.  Reads the configuration (CONTRACT.md §1), refuses to
 * start against a database with pending migrations, serves HTTP until
 * SIGTERM/SIGINT (then drains and exits 0); SIGHUP reloads the token files. */
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include "billing/http/server.h"
#include "common/config.h"
#include "common/log.h"
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

static int check_migrations(struct config *cfg)
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
	if (check_migrations(cfg) < 0) {
		config_free(cfg);
		return 1;
	}
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
