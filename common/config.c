/* config.c: see config.h. */
#include "common/config.h"

#include <ctype.h>
#include <inttypes.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/money.h"

/* The one table of configuration keys, as pgbouncer's bouncer_params[]:
 * each key's type, default, accepted range (integers) or values (choices),
 * whether SIGHUP applies a change to it, and its help text.  config_check
 * holds every value to it, config_int reads an integer by it, --help prints
 * it (config_print_keys), and docs/configuration.md lists the same facts
 * (tests/integration/test_config_doc.py compares them). */
enum key_type { KEY_STRING, KEY_FILE, KEY_INT, KEY_BOOL, KEY_MONEY, KEY_CHOICE };

struct key_def {
	const char *name;
	enum key_type type;
	const char *def;
	int64_t min, max;    /* KEY_INT: the accepted range */
	const char *choices; /* KEY_CHOICE: the accepted values, "a|b|c" */
	bool reload;         /* KEY_FILE: SIGHUP re-reads the file */
	const char *help;
};

#define K_STR(name, def, help)                                 \
	{                                                      \
		name, KEY_STRING, def, 0, 0, NULL, false, help \
	}
#define K_FILE(name, def, reload, help)                       \
	{                                                     \
		name, KEY_FILE, def, 0, 0, NULL, reload, help \
	}
#define K_INT(name, def, min, max, help)                        \
	{                                                       \
		name, KEY_INT, def, min, max, NULL, false, help \
	}
#define K_CHOICE(name, def, choices, help)                        \
	{                                                         \
		name, KEY_CHOICE, def, 0, 0, choices, false, help \
	}

static const struct key_def keys[] = {
	K_STR("listen", "127.0.0.1:8080", "HTTP address of billingd"),
	K_STR("pg", "host=127.0.0.1 port=5432 dbname=billing user=billing", "libpq connection string (service role)"),
	K_STR("pg_owner", "", "libpq string for `billing-admin migrate` (schema owner); empty: same as pg"),
	K_STR("redis", "127.0.0.1:6379",
	      "Redis address host:port, or Redis Cluster seed nodes host:port,host:port,... (slots followed)"),
	K_FILE("gateway_tokens_file", "etc/gateway.tokens", true, "gateway bearer tokens, one per line"),
	K_FILE("admin_tokens_file", "etc/admin.tokens", true, "admin bearer tokens, one per line"),
	K_FILE("signing_key_file", "etc/ledger.key", false, "Ed25519 secret key for export manifests"),
	K_FILE("key_pepper_file", "etc/key.pepper", false,
	       "server-side secret for API key hashes (created if missing)"),
	K_STR("instance_id", "billingd-1", "writer identity of this billingd: its own hash chain"),
	K_FILE("migrations_dir", "migrations", false, "folder of NNNN_name.sql files"),
	K_CHOICE("log_level", "info", "debug|info|warn|error", "least severe log line written"),
	K_INT("batch_max", "256", 1, 10000, "most usage records written in one commit"),
	K_INT("writer_threads", "2", 1, 64,
	      "usage writers (each its own thread, connection, queue and hash chain; records go by account)"),
	K_INT("batch_wait_us", "500", 0, 1000000, "longest wait to fill a commit batch, microseconds"),
	{"single_writer", KEY_BOOL, "true", 0, 0, NULL, false,
	 "single records (POST /v1/usage) all go to the first writer, so they form larger commit batches; batches and the stream go by account"},
	{"writer_turns", KEY_BOOL, "true", 0, 0, NULL, false,
	 "a writer holding fewer than batch_max records waits for its turn (a PostgreSQL advisory lock of every instance on the database) before taking them"},
	K_INT("queue_max", "20000", 1, 10000000, "most usage records waiting for a commit; beyond: 503"),
	K_INT("hold_ttl_seconds", "600", 1, 86400, "default lifetime of an authorize hold"),
	K_INT("pg_timeout_ms", "5000", 100, 600000,
	      "statement timeout and connect timeout for PostgreSQL (the CLIs accept up to 3600000)"),
	K_INT("pg_standby_confirm_ms", "0", 0, 600000,
	      "with a synchronous standby: a commit counts once a standby has it, waited for at most this long (else 503); 0: off"),
	K_INT("redis_timeout_ms", "1000", 10, 60000, "timeout of one Redis call (the CLIs accept 1 to 600000)"),
	{"redis_fail_open", KEY_BOOL, "false", 0, 0, NULL, false,
	 "admit some calls when Redis is unreachable (docs/billingd.md, \"Redis unreachable\")"},
	K_INT("redis_fail_open_nanos", "0", 0, INT64_MAX / 2, "per account allowance while failing open"),
	K_INT("idle_timeout_s", "30", 1, 86400, "close HTTP connections idle this long"),
	K_INT("max_connections", "20000", 1, 1000000,
	      "most open HTTP connections; the one too many is accepted and closed at once"),
	K_INT("request_timeout_s", "0", 0, 86400,
	      "most seconds from a request's first byte to its last (headers and body); 0: twice idle_timeout_s; a connection still reading a request after that is dropped"),
	K_FILE("tokenizer_file", "data/tokenizer.json", false, "DeepSeek-V3 tokenizer data"),
	K_FILE("model_file", "data/internal-tiny.bin", false, "weights of the embedded model"),
	K_INT("inference_threads", "2", 1, 64, "worker threads of the embedded model"),
	K_INT("inference_queue", "16", 0, 100000, "most chat calls waiting for a worker; beyond: 429"),
	K_INT("inference_min_token_us", "0", 0, 10000000,
	      "pace generation to at least this many microseconds per token (simulates a GPU)"),
	K_INT("inference_nice", "10", 0, 19,
	      "nice value of the model's worker threads: authorize and usage answers come first"),
	K_INT("inference_busy_share", "5", 1, 100,
	      "while billing is busy, each model worker uses at most this percent of one core (pauses between tokens; a non-streamed call 1 s in all at most); 100: off"),
	K_INT("inference_busy_requests", "1000", 0, 10000000,
	      "billing answers (/v1/ routes, status < 400, 402 or 429) per second from which billing counts as busy; 0: never"),
	K_STR("usage_stream", "", "Redis Stream to ingest usage records from (empty: off)"),
	K_STR("usage_stream_group", "billing", "consumer group of the usage stream"),
	K_INT("usage_stream_claim_ms", "30000", 100, 86400000, "take over a dead consumer's entries idle this long"),
	K_CHOICE("referral_trigger", "verify", "verify|topup", "what makes a referral succeed"),
	K_INT("expiry_interval_s", "60", 1, 86400, "how often billingd moves expired promotional credit to breakage"),
	K_STR("operator", "", "who is acting, for the audit trail (CLI); default: login name"),
	{"require_trusted_key", KEY_BOOL, "false", 0, 0, NULL, false,
	 "ledger verify --export: exit 1 when no trusted public key (--pubkey, signing_key_file.pub) is found, instead of checking the signature against the key the manifest carries (and warning)"},
	{"max_topup", KEY_MONEY, "10000000", 0, 0, NULL, false,
	 "ceiling of a single top-up, currency units (billingd and billing-admin topup; above: 422 invalid_amount, nothing written); also of a billing-admin adjust's size, either sign"},
	{"max_grant", KEY_MONEY, "1000000", 0, 0, NULL, false,
	 "ceiling of a single admin grant, currency units (POST /v1/admin/grants, billing-admin grant; same rule)"},
};
#undef K_STR
#undef K_FILE
#undef K_INT
#undef K_CHOICE
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

struct config {
	char *val[N_KEYS];
};

static int key_index(const char *key, size_t len)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strlen(keys[i].name) == len && memcmp(keys[i].name, key, len) == 0)
			return (int)i;
	return -1;
}

bool config_is_key(const char *key)
{
	return key_index(key, strlen(key)) >= 0;
}

struct config *config_new(void)
{
	struct config *cfg = calloc(1, sizeof(*cfg));

	if (!cfg)
		return NULL;
	for (size_t i = 0; i < N_KEYS; i++) {
		cfg->val[i] = strdup(keys[i].def);
		if (!cfg->val[i]) {
			config_free(cfg);
			return NULL;
		}
	}
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_KEYS; i++)
		free(cfg->val[i]);
	free(cfg);
}

static int set_index(struct config *cfg, int idx, const char *value, size_t len)
{
	char *v = strndup(value, len);

	if (!v)
		return -1;
	free(cfg->val[idx]);
	cfg->val[idx] = v;
	return 0;
}

int config_set(struct config *cfg, const char *key, const char *value)
{
	int idx = key_index(key, strlen(key));

	if (idx < 0)
		return -1;
	return set_index(cfg, idx, value, strlen(value));
}

int config_parse_text(struct config *cfg, const char *text, size_t len, struct error *err)
{
	const char *p = text, *end = text + len, *nul = memchr(text, '\0', len);
	int line = 0;

	if (nul) {
		/* a value would be cut at the NUL: refuse the file, naming the line */
		for (const char *c = text; c < nul; c++)
			line += *c == '\n';
		return error_set(err, 0, "config", "line %d: NUL byte", line + 1);
	}
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *ks, *ke, *vs, *ve, *eq;
		char keybuf[64];
		int idx;

		if (!eol)
			eol = end;
		line++;
		ks = p;
		ve = eol;
		p = eol < end ? eol + 1 : end;
		while (ks < ve && isspace((unsigned char)*ks))
			ks++;
		if (ks == ve || *ks == '#')
			continue;
		eq = memchr(ks, '=', (size_t)(ve - ks));
		if (!eq) {
			return error_set(err, 0, "config", "line %d: expected `key = value`", line);
		}
		ke = eq;
		while (ke > ks && isspace((unsigned char)ke[-1]))
			ke--;
		vs = eq + 1;
		while (vs < ve && isspace((unsigned char)*vs))
			vs++;
		/* a `#` after whitespace starts a comment; values may hold `#` otherwise */
		for (const char *c = vs; c < ve; c++) {
			if (*c == '#' && c > vs && isspace((unsigned char)c[-1])) {
				ve = c;
				break;
			}
		}
		while (ve > vs && isspace((unsigned char)ve[-1]))
			ve--;
		idx = key_index(ks, (size_t)(ke - ks));
		if (idx < 0) {
			size_t kl = (size_t)(ke - ks) < sizeof(keybuf) - 1 ? (size_t)(ke - ks) : sizeof(keybuf) - 1;
			memcpy(keybuf, ks, kl);
			keybuf[kl] = '\0';
			return error_set(err, 0, "config", "line %d: unknown key '%s'", line, keybuf);
		}
		if (set_index(cfg, idx, vs, (size_t)(ve - vs)) < 0)
			return error_set(err, 0, "config", "line %d: out of memory", line);
	}
	return 0;
}

int config_load_file(struct config *cfg, const char *path, struct error *err)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, len = 0, n;
	int rc = -1;

	if (!f)
		return error_set(err, 0, "config", "cannot open config '%s': %s", path, strerror(errno));
	for (;;) {
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap + 65536);
			if (!nb)
				goto done;
			buf = nb;
			cap += 65536;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f))
		goto done;
	rc = config_parse_text(cfg, buf ? buf : "", len, err);
	if (rc < 0 && err) {
		char tmp[sizeof(err->msg)];
		int k;
		memcpy(tmp, err->msg, sizeof(tmp));
		k = snprintf(err->msg, sizeof(err->msg), "config '%.100s' ", path);
		if (k > 0 && (size_t)k < sizeof(err->msg)) {
			memcpy(err->msg + k, tmp, sizeof(err->msg) - (size_t)k - 1);
			err->msg[sizeof(err->msg) - 1] = '\0';
		}
	}
done:
	free(buf);
	fclose(f);
	return rc;
}

int config_load_env(struct config *cfg, struct error *err)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		char name[80];
		const char *v;
		size_t j;

		memcpy(name, "BILLING_", 8);
		for (j = 0; j < 70 && keys[i].name[j]; j++)
			name[8 + j] = (char)toupper((unsigned char)keys[i].name[j]);
		name[8 + j] = '\0';
		v = getenv(name);
		if (v && set_index(cfg, (int)i, v, strlen(v)) < 0)
			return error_set(err, 0, "config", "out of memory");
	}
	return 0;
}

const char *config_default_file;

int config_from_args(struct config *cfg, int *argc, char **argv, struct error *err)
{
	const char *file = NULL;
	int out = 1, i;
	/* first pass: --config, so the file is read before env and flags */
	for (i = 1; i < *argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--config") == 0) {
			if (i + 1 >= *argc)
				return error_set(err, 0, "config", "--config needs a file");
			file = argv[i + 1];
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			file = argv[i] + 9;
		}
	}
	if (!file && getenv("BILLING_CONFIG"))
		file = *getenv("BILLING_CONFIG") ? getenv("BILLING_CONFIG") : NULL; /* set but empty: none */
	else if (!file && config_default_file && access(config_default_file, R_OK) == 0)
		file = config_default_file;
	if (file && config_load_file(cfg, file, err) < 0)
		return -1;
	if (config_load_env(cfg, err) < 0)
		return -1;
	for (i = 1; i < *argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		if (strcmp(a, "--config") == 0) {
			i++;
			continue;
		}
		if (strncmp(a, "--config=", 9) == 0)
			continue;
		if (strncmp(a, "--", 2) == 0) {
			const char *k = a + 2, *eq = strchr(k, '=');
			size_t kl = eq ? (size_t)(eq - k) : strlen(k);
			char kb[64];
			int idx;

			/* flags spelled with dashes map to keys with underscores */
			if (kl < sizeof(kb)) {
				for (size_t j = 0; j < kl; j++)
					kb[j] = k[j] == '-' ? '_' : k[j];
				idx = key_index(kb, kl);
				if (idx >= 0) {
					const char *v = eq ? eq + 1 : (i + 1 < *argc ? argv[++i] : NULL);
					if (!v)
						return error_set(err, 0, "config", "flag '%s' needs a value", a);
					if (set_index(cfg, idx, v, strlen(v)) < 0)
						return -1;
					continue;
				}
			}
		}
		argv[out++] = argv[i];
	}
	argv[out] = NULL;
	*argc = out;
	return 0;
}

const char *config_get(const struct config *cfg, const char *key)
{
	int idx = key_index(key, strlen(key));

	return idx >= 0 ? cfg->val[idx] : "";
}

int config_get_int(const struct config *cfg, const char *key, int64_t min, int64_t max, int64_t *out, struct error *err)
{
	const char *v = config_get(cfg, key);
	char *end = NULL;
	long long x;

	errno = 0;
	x = strtoll(v, &end, 10);
	if (errno || end == v || *end || x < min || x > max)
		return error_set(err, 0, "config", "config key '%s': expected an integer in [%lld, %lld]", key,
				 (long long)min, (long long)max);
	*out = x;
	return 0;
}

int config_int(const struct config *cfg, const char *key, int64_t *out, struct error *err)
{
	int idx = key_index(key, strlen(key));

	if (idx < 0 || keys[idx].type != KEY_INT)
		return error_set(err, 0, "config", "config key '%s' is not an integer key", key);
	return config_get_int(cfg, key, keys[idx].min, keys[idx].max, out, err);
}

static bool is_choice(const char *choices, const char *v)
{
	size_t n = strlen(v);

	for (const char *p = choices; n && *p;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && memcmp(p, v, n) == 0)
			return true;
		p += len + (bar != NULL);
	}
	return false;
}

static const char *const bools[] = {"true", "false", "1", "0", "yes", "no", "on", "off"};

int config_check(const struct config *cfg, struct error *err)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct key_def *k = &keys[i];
		const char *v = cfg->val[i];
		int64_t x;
		bool ok = false;

		switch (k->type) {
		case KEY_STRING:
		case KEY_FILE:
			break;
		case KEY_INT:
			if (config_get_int(cfg, k->name, k->min, k->max, &x, err) < 0)
				return -1;
			break;
		case KEY_MONEY:
			if (config_get_money(cfg, k->name, &x, err) < 0)
				return -1;
			break;
		case KEY_BOOL:
			for (size_t j = 0; j < sizeof(bools) / sizeof(bools[0]); j++)
				ok = ok || strcmp(v, bools[j]) == 0;
			if (!ok)
				return error_set(err, 0, "config", "config key '%s': expected true or false", k->name);
			break;
		case KEY_CHOICE:
			if (!is_choice(k->choices, v))
				return error_set(err, 0, "config", "config key '%s': expected one of %s", k->name,
						 k->choices);
			break;
		}
	}
	return 0;
}

int config_get_money(const struct config *cfg, const char *key, int64_t *out, struct error *err)
{
	int64_t x;

	if (money_parse(config_get(cfg, key), &x, NULL) < 0 || x <= 0)
		return error_set(err, 0, "config", "config key '%s': expected a positive amount in currency units",
				 key);
	*out = x;
	return 0;
}

bool config_get_bool(const struct config *cfg, const char *key)
{
	const char *v = config_get(cfg, key);

	return strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0;
}

/* The type column of --help and docs/configuration.md. */
static void key_kind(const struct key_def *k, char *buf, size_t n)
{
	switch (k->type) {
	case KEY_STRING:
		snprintf(buf, n, "string");
		break;
	case KEY_FILE:
		snprintf(buf, n, k->reload ? "path, re-read on SIGHUP" : "path");
		break;
	case KEY_INT:
		snprintf(buf, n, "integer %" PRId64 "..%" PRId64, k->min, k->max);
		break;
	case KEY_BOOL:
		snprintf(buf, n, "true or false");
		break;
	case KEY_MONEY:
		snprintf(buf, n, "amount > 0");
		break;
	case KEY_CHOICE:
		snprintf(buf, n, "one of %s", k->choices);
		break;
	}
}

void config_print_keys(void)
{
	printf("configuration keys (--config FILE, BILLING_<KEY>, --key VALUE); a change needs a restart\n"
	       "unless the key says SIGHUP:\n");
	for (size_t i = 0; i < N_KEYS; i++) {
		char kind[64];
		key_kind(&keys[i], kind, sizeof(kind));
		printf("  %-22s [%s] %s (default: %s)\n", keys[i].name, kind, keys[i].help,
		       keys[i].def[0] ? keys[i].def : "\"\"");
	}
}
