/* config.c: see config.h. */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/money.h"

struct key_def {
	const char *name;
	const char *def;
	const char *help;
};

/* The one table of configuration keys.  Documented in docs/configuration.md. */
static const struct key_def keys[] = {
	{"listen", "127.0.0.1:8080", "HTTP address of billingd"},
	{"pg", "host=127.0.0.1 port=5432 dbname=billing user=billing", "libpq connection string (service role)"},
	{"pg_owner", "", "libpq string for `billing-admin migrate` (schema owner); empty: same as pg"},
	{"redis", "127.0.0.1:6379",
	 "Redis address host:port, or Redis Cluster seed nodes host:port,host:port,... (slots followed)"},
	{"gateway_tokens_file", "etc/gateway.tokens", "gateway bearer tokens, one per line"},
	{"admin_tokens_file", "etc/admin.tokens", "admin bearer tokens, one per line"},
	{"signing_key_file", "etc/ledger.key", "Ed25519 secret key for export manifests"},
	{"key_pepper_file", "etc/key.pepper", "server-side secret for API key hashes (created if missing)"},
	{"instance_id", "billingd-1", "writer identity of this billingd: its own hash chain"},
	{"migrations_dir", "migrations", "folder of NNNN_name.sql files"},
	{"log_level", "info", "debug, info, warn or error"},
	{"batch_max", "256", "most usage records written in one commit"},
	{"writer_threads", "2", "usage writers (each its own thread, connection, queue and hash chain; records go by account)"},
	{"batch_wait_us", "500", "longest wait to fill a commit batch, microseconds"},
	{"queue_max", "20000", "most usage records waiting for a commit; beyond: 503"},
	{"hold_ttl_seconds", "600", "default lifetime of an authorize hold"},
	{"pg_timeout_ms", "5000", "statement timeout and connect timeout for PostgreSQL"},
	{"pg_standby_confirm_ms", "0",
	 "with a synchronous standby: a commit counts once a standby has it, waited for at most this long (else 503); 0: off"},
	{"redis_timeout_ms", "1000", "timeout of one Redis call"},
	{"redis_fail_open", "false", "admit some calls when Redis is unreachable"},
	{"redis_fail_open_nanos", "0", "per account allowance while failing open"},
	{"idle_timeout_s", "30", "close HTTP connections idle this long"},
	{"max_connections", "20000", "most open HTTP connections; one more is closed at once"},
	{"request_timeout_s", "0", "most seconds from a request's first byte to its last; 0: twice idle_timeout_s"},
	{"tokenizer_file", "data/tokenizer.json", "DeepSeek-V3 tokenizer data"},
	{"model_file", "data/internal-tiny.bin", "weights of the embedded model"},
	{"inference_threads", "2", "worker threads of the embedded model"},
	{"inference_queue", "16", "most chat calls waiting for a worker; beyond: 429"},
	{"inference_min_token_us", "0", "pace generation to at least this many microseconds per token (simulates a GPU)"},
	{"usage_stream", "", "Redis Stream to ingest usage records from (empty: off)"},
	{"usage_stream_group", "billing", "consumer group of the usage stream"},
	{"usage_stream_claim_ms", "30000", "take over a dead consumer's entries idle this long"},
	{"referral_trigger", "verify", "what makes a referral succeed: verify or topup"},
	{"expiry_interval_s", "60", "how often billingd moves expired promotional credit to breakage"},
	{"operator", "", "who is acting, for the audit trail (CLI); default: login name"},
	{"max_topup", "10000000", "ceiling of a single top-up, currency units (above: 422 invalid_amount)"},
	{"max_grant", "1000000", "ceiling of a single admin grant, currency units (above: 422 invalid_amount)"},
};
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

int config_get_int(const struct config *cfg, const char *key, int64_t min, int64_t max, int64_t *out,
		   struct error *err)
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

int config_get_money(const struct config *cfg, const char *key, int64_t *out, struct error *err)
{
	int64_t x;

	if (money_parse(config_get(cfg, key), &x, NULL) < 0 || x <= 0)
		return error_set(err, 0, "config", "config key '%s': expected a positive amount in currency units", key);
	*out = x;
	return 0;
}

bool config_get_bool(const struct config *cfg, const char *key)
{
	const char *v = config_get(cfg, key);

	return strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0;
}

void config_print_keys(void)
{
	printf("configuration keys (--config FILE, BILLING_<KEY>, --key VALUE):\n");
	for (size_t i = 0; i < N_KEYS; i++)
		printf("  %-22s %s (default: %s)\n", keys[i].name, keys[i].help,
		       keys[i].def[0] ? keys[i].def : "\"\"");
}
