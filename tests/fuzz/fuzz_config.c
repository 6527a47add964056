/* fuzz_config.c: config_parse_text() (common/config.c) on any bytes.
 *
 * Properties: parsing either fails with a line number inside the text and
 * a NUL-terminated message, or succeeds; after success every key has a
 * value (never NULL); text holding a NUL byte is refused (a NUL would cut
 * a value short); writing every key back as `key = value` lines and
 * parsing that gives the same values (what a file says is what it means);
 * config_get_int() on every key either gives a value in range or fails
 * cleanly. */
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "common/config.h"
#include "tests/fuzz/fuzz.h"

static const char *const int_keys[] = {
	"batch_max",        "batch_wait_us",         "queue_max",      "hold_ttl_seconds", "pg_timeout_ms",
	"redis_timeout_ms", "redis_fail_open_nanos", "idle_timeout_s", "max_connections",  "inference_threads"};

/* Every key name, from the public API only: probe the names --help prints. */
static const char *const all_keys[] = {"listen",
				       "pg",
				       "pg_owner",
				       "redis",
				       "gateway_tokens_file",
				       "admin_tokens_file",
				       "signing_key_file",
				       "key_pepper_file",
				       "instance_id",
				       "migrations_dir",
				       "log_level",
				       "batch_max",
				       "batch_wait_us",
				       "queue_max",
				       "hold_ttl_seconds",
				       "pg_timeout_ms",
				       "redis_timeout_ms",
				       "redis_fail_open",
				       "redis_fail_open_nanos",
				       "idle_timeout_s",
				       "max_connections",
				       "tokenizer_file",
				       "model_file",
				       "inference_threads",
				       "inference_queue",
				       "referral_trigger",
				       "expiry_interval_s",
				       "operator"};
#define N_ALL (sizeof(all_keys) / sizeof(all_keys[0]))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = config_new(), *again;
	struct error err;
	struct buf out;
	int line_count = 1;

	FUZZ_CHECK(cfg != NULL);
	for (size_t i = 0; i < size; i++)
		line_count += data[i] == '\n';
	memset(&err, 0, sizeof(err));
	if (config_parse_text(cfg, (const char *)data, size, &err) < 0) {
		int line = 0;
		/* every refusal of a file's text names its line first */
		FUZZ_CHECK(sscanf(err.msg, "line %d: ", &line) == 1 && line >= 1 && line <= line_count);
		FUZZ_CHECK(memchr(err.msg, '\0', sizeof(err.msg)) != NULL && err.msg[0] != '\0');
		config_free(cfg);
		return 0;
	}
	FUZZ_CHECK(memchr(data, '\0', size) == NULL);
	buf_init(&out);
	for (size_t i = 0; i < N_ALL; i++) {
		const char *v;
		if (!config_is_key(all_keys[i]))
			continue; /* a key removed from the table */
		v = config_get(cfg, all_keys[i]);
		FUZZ_CHECK(v != NULL);
		buf_printf(&out, "%s = %s\n", all_keys[i], v);
	}
	again = config_new();
	FUZZ_CHECK(again != NULL);
	memset(&err, 0, sizeof(err));
	if (config_parse_text(again, out.data ? out.data : "", out.len, &err) != 0) {
		fprintf(stderr, "written back, refused: %s\n%s", err.msg, out.data);
		FUZZ_CHECK(0);
	}
	for (size_t i = 0; i < N_ALL; i++) {
		if (!config_is_key(all_keys[i]))
			continue;
		if (strcmp(config_get(cfg, all_keys[i]), config_get(again, all_keys[i])) != 0) {
			fprintf(stderr, "key %s: '%s' read back as '%s'\n", all_keys[i], config_get(cfg, all_keys[i]),
				config_get(again, all_keys[i]));
			FUZZ_CHECK(0);
		}
	}
	for (size_t i = 0; i < sizeof(int_keys) / sizeof(int_keys[0]); i++) {
		int64_t v = -12345;
		if (!config_is_key(int_keys[i]))
			continue;
		if (config_get_int(cfg, int_keys[i], 0, 1000000, &v, &err) == 0)
			FUZZ_CHECK(v >= 0 && v <= 1000000);
	}
	(void)config_get_bool(cfg, "redis_fail_open");
	buf_release(&out);
	config_free(again);
	config_free(cfg);
	return 0;
}
