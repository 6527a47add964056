/* config.h: the configuration shared by billingd, billing-admin and ledger.
 *
 * Order (CONTRACT.md §1): `--config FILE` (lines `key = value`, `#` comments),
 * then environment variables BILLING_<KEY>, then command-line flags
 * `--key value` / `--key=value`.  Keys are a table (config.c); an unknown key
 * in a file is an error, so a typo never goes unnoticed.  Pure logic: no I/O
 * but reading the file. */
#ifndef COMMON_CONFIG_H
#define COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct config;

/* Every function below that can fail returns 0 or -1 with a struct error
 * (code "config"; may be NULL) whose message names the line of the file
 * ("line 3: unknown key 'x'") or the key ("config key 'batch_max': ..."). */

/* A config holding every key at its default.  Owned by the caller. */
struct config *config_new(void) __attribute__((warn_unused_result));
void config_free(struct config *cfg);

/* Parses `key = value` text (a file's contents).  0 or -1 with err filled. */
int config_parse_text(struct config *cfg, const char *text, size_t len, struct error *err)
	__attribute__((warn_unused_result));
int config_load_file(struct config *cfg, const char *path, struct error *err) __attribute__((warn_unused_result));
/* Applies BILLING_<KEY> variables from the process environment. */
int config_load_env(struct config *cfg, struct error *err) __attribute__((warn_unused_result));

/* Sets a known key; -1 if the key is unknown. */
int config_set(struct config *cfg, const char *key, const char *value) __attribute__((warn_unused_result));
bool config_is_key(const char *key);

/* Full load for a program: scans argv for --config FILE and --<key> V
 * (removing them from argv, argc updated), loads file, env, then flags.
 * Without --config the file is $BILLING_CONFIG (set but empty: none), else
 * config_default_file when it exists.  Other arguments stay, in order.  0
 * or -1 with err filled. */
extern const char *config_default_file; /* NULL: none (billingd); the CLIs: var/billingd.conf */
int config_from_args(struct config *cfg, int *argc, char **argv, struct error *err) __attribute__((warn_unused_result));

/* Borrowed pointer valid until the key is set again or cfg is freed. Never NULL. */
const char *config_get(const struct config *cfg, const char *key);
/* Holds every key's value to the key table (integers in their range,
 * amounts, booleans, choices): 0, or -1 with err naming the first bad key.
 * billingd checks at start; the CLIs read the few keys they use with their
 * own ranges (config_get_int). */
int config_check(const struct config *cfg, struct error *err) __attribute__((warn_unused_result));
/* Integer value of an integer key, in the table's range: 0, or -1 with err
 * ("config key 'batch_max': expected an integer in [1, 10000]"). */
int config_int(const struct config *cfg, const char *key, int64_t *out, struct error *err)
	__attribute__((warn_unused_result));
/* Integer value of a key; -1 with err if it is not an integer in [min, max]. */
int config_get_int(const struct config *cfg, const char *key, int64_t min, int64_t max, int64_t *out, struct error *err)
	__attribute__((warn_unused_result));
/* Amount of a key in currency units ("10000000", "0.5"), in nanos; -1 with
 * err unless it is a positive amount that fits int64 nanos. */
int config_get_money(const struct config *cfg, const char *key, int64_t *out, struct error *err)
	__attribute__((warn_unused_result));
bool config_get_bool(const struct config *cfg, const char *key);

/* Prints the key table (name, type and range or SIGHUP, help, default) for --help. */
void config_print_keys(void);

#endif
