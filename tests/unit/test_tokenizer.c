/* test_tokenizer.c: parity of billing/infer/tokenizer.c with the reference
 * JavaScript tokenizer (fixtures from tests/fixtures/tokenizer/
 * gen_reference.js), chat rendering, lookups, errors, threads.
 *
 *   test_tokenizer           the TAP suite (run from the repo root)
 *   test_tokenizer --bench   throughput on ~1 MB of mixed text
 *
 * TOKENIZER_JSON and TOKENIZER_FIXTURES override the default paths. */
#include "billing/infer/tokenizer.h"
#include "tests/unit/tap.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define BOS             \
	"<\xef\xbd\x9c" \
	"begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define EOS             \
	"<\xef\xbd\x9c" \
	"end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define ASSISTANT       \
	"<\xef\xbd\x9c" \
	"Assistant\xef\xbd\x9c>"

struct fcase {
	const char *tag;
	const char *text;
	size_t len;
	int32_t *ids;
	size_t n;
};

struct fset {
	struct fcase *c;
	size_t n;
	json_t *root; /* texts point into it */
};

static struct fcase *cases; /* the DeepSeek-V3 set, for threads and bench */
static size_t n_cases;

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return v && *v ? v : dflt;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int32_t *json_ids(const json_t *arr, size_t *n)
{
	size_t i;
	const json_t *v;
	int32_t *ids = malloc((json_array_size(arr) + 1) * sizeof *ids);

	if (!ids)
		abort();
	json_array_foreach(arr, i, v) ids[i] = (int32_t)json_integer_value(v);
	*n = json_array_size(arr);
	return ids;
}

static int load_cases(const char *dir, const char *name, struct fset *fs)
{
	char path[4096];
	json_error_t jerr;
	const json_t *c;
	size_t i;

	memset(fs, 0, sizeof *fs);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	fs->root = json_load_file(path, JSON_ALLOW_NUL, &jerr);
	if (!fs->root) {
		printf("# cannot load \"%s\": %s\n", path, jerr.text);
		return -1;
	}
	fs->n = json_array_size(fs->root);
	fs->c = calloc(fs->n ? fs->n : 1, sizeof *fs->c);
	if (!fs->c)
		abort();
	json_array_foreach(fs->root, i, c)
	{
		fs->c[i].tag = json_string_value(json_object_get(c, "tag"));
		fs->c[i].text = json_string_value(json_object_get(c, "text"));
		fs->c[i].len = json_string_length(json_object_get(c, "text"));
		fs->c[i].ids = json_ids(json_object_get(c, "ids"), &fs->c[i].n);
	}
	return 0;
}

static void free_cases(struct fset *fs)
{
	for (size_t i = 0; i < fs->n; i++)
		free(fs->c[i].ids);
	free(fs->c);
	json_decref(fs->root);
	memset(fs, 0, sizeof *fs);
}

static void describe_diff(const struct fcase *c, const int32_t *got, size_t n)
{
	size_t k = 0;

	while (k < n && k < c->n && got[k] == c->ids[k])
		k++;
	printf("#   got %zu ids, want %zu; first difference at index %zu", n, c->n, k);
	if (k < n)
		printf(", got %d", (int)got[k]);
	if (k < c->n)
		printf(", want %d", (int)c->ids[k]);
	printf("\n#   text (%zu bytes): %.*s\n", c->len, c->len > 120 ? 120 : (int)c->len, c->text);
}

/* Every fixture: exact ids, same count from tokenizer_count, and (with
 * `roundtrip`) the tokens' bytes put together give the text back. */
static void test_fixtures(const struct tokenizer *tok, const struct fset *fs, bool roundtrip)
{
	size_t failed = 0, total_ids = 0;
	char *buf = malloc(1 << 20);

	if (!buf)
		abort();
	for (size_t i = 0; i < fs->n; i++) {
		const struct fcase *c = &fs->c[i];
		int32_t *ids = NULL;
		size_t n = 0, cnt = 0, pos = 0;
		int rc = tokenizer_encode(tok, c->text, c->len, &ids, &n);
		int same = rc == 0 && n == c->n && (n == 0 || memcmp(ids, c->ids, n * sizeof *ids) == 0);
		int round = rc == 0;

		for (size_t k = 0; round && k < n; k++) {
			size_t len;

			if (tokenizer_decode_token(tok, ids[k], buf + pos, (1 << 20) - pos, &len) < 0)
				round = 0;
			else
				pos += len;
		}
		round = round && (!roundtrip || (pos == c->len && memcmp(buf, c->text, pos) == 0));
		OK(same && round && tokenizer_count(tok, c->text, c->len, &cnt) == 0 && cnt == c->n,
		   "fixture %zu (%s): %zu ids", i, c->tag, c->n);
		if (!same) {
			failed++;
			if (rc < 0)
				printf("#   encode failed: %s\n", strerror(errno));
			else
				describe_diff(c, ids, n);
		} else if (!round) {
			printf("#   decoded tokens do not give the text back\n");
		} else if (cnt != c->n) {
			printf("#   count %zu, want %zu\n", cnt, c->n);
		}
		total_ids += c->n;
		free(ids);
	}
	printf("# %zu fixtures, %zu ids, %zu mismatches\n", fs->n, total_ids, failed);
	free(buf);
}

static void test_chat(const struct tokenizer *tok, const char *dir)
{
	char path[4096];
	json_error_t jerr;
	json_t *root;
	const json_t *c;
	size_t i;

	snprintf(path, sizeof path, "%s/chat.json", dir);
	root = json_load_file(path, JSON_ALLOW_NUL, &jerr);
	OK(root != NULL, "load chat fixtures");
	if (!root)
		return;
	json_array_foreach(root, i, c)
	{
		const json_t *msgs = json_object_get(c, "messages"), *m;
		size_t nm = json_array_size(msgs), k, want_n, n = 0, len = 0, cnt = 0;
		struct tokenizer_message *tm = calloc(nm ? nm : 1, sizeof *tm);
		int32_t *want = json_ids(json_object_get(c, "ids"), &want_n), *ids = NULL;
		const char *want_text = json_string_value(json_object_get(c, "text"));
		char *text = NULL;

		if (!tm)
			abort();
		json_array_foreach(msgs, k, m)
		{
			tm[k].role = json_string_value(json_object_get(m, "role"));
			tm[k].content = json_string_value(json_object_get(m, "content"));
			tm[k].content_len = json_string_length(json_object_get(m, "content"));
		}
		OK(tokenizer_render_chat(tm, nm, &text, &len) == 0 && text && strlen(text) == len &&
			   strcmp(text, want_text) == 0,
		   "chat %zu: rendering matches the template", i);
		OK(text && tokenizer_encode(tok, text, len, &ids, &n) == 0 && n == want_n &&
			   (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0),
		   "chat %zu: %zu ids", i, want_n);
		OK(tokenizer_count_chat(tok, tm, nm, &cnt) == 0 && cnt == want_n, "chat %zu: count_chat gives %zu", i,
		   want_n);
		free(text);
		free(ids);
		free(want);
		free(tm);
	}
	json_decref(root);
}

static void test_render_literal(void)
{
	struct tokenizer_message m[] = {
		{"user", "hi", 2},   {"system", "S1", 2}, {"assistant", "yo", 2},
		{"system", "S2", 2}, {"user", "x\0y", 3},
	};
	static const char want[] = BOS "S1\n\nS2" USER "hi" ASSISTANT "yo" EOS USER "x\0y" ASSISTANT;
	struct tokenizer_message bad = {"tool", "x", 1};
	char *out = NULL;
	size_t len = 0;

	OK(tokenizer_render_chat(m, 5, &out, &len) == 0 && len == sizeof want - 1 && memcmp(out, want, len) == 0 &&
		   out[len] == '\0',
	   "render_chat: systems first, joined by a blank line; NUL in content kept");
	free(out);
	out = NULL;
	OK(tokenizer_render_chat(NULL, 0, &out, &len) == 0 && strcmp(out, BOS ASSISTANT) == 0,
	   "render_chat: no messages");
	free(out);
	out = NULL;
	errno = 0;
	OK(tokenizer_render_chat(&bad, 1, &out, &len) == -1 && errno == EINVAL && out == NULL,
	   "render_chat: unknown role is EINVAL");
	OK(tokenizer_render_chat(m, 1, NULL, &len) == -1 && errno == EINVAL, "render_chat: NULL out is EINVAL");
}

static void test_lookups(const struct tokenizer *tok)
{
	char buf[64];
	size_t len = 99;
	int32_t the;

	IS_I64(tokenizer_vocab_size(tok), 128815, "vocab_size");
	IS_I64(tokenizer_token_id(tok, BOS), 0, "token_id BOS");
	IS_I64(tokenizer_token_id(tok, EOS), 1, "token_id EOS");
	IS_I64(tokenizer_token_id(tok, USER), 128803, "token_id User");
	IS_I64(tokenizer_token_id(tok, ASSISTANT), 128804, "token_id Assistant");
	IS_I64(tokenizer_token_id(tok, "<|EOT|>"), 128805, "token_id <|EOT|>");
	IS_I64(tokenizer_token_id(tok, "<\xef\xbd\x9cuser\xef\xbd\x9c>"), -1, "token_id unknown");
	IS_I64(tokenizer_token_id(tok, ""), -1, "token_id empty");
	the = tokenizer_token_id(tok, "\xc4\xa0the"); /* "Ġthe" */
	IS_I64(the, 270, "token_id of a vocabulary entry in byte-level spelling");
	OK(tokenizer_decode_token(tok, the, buf, sizeof buf, &len) == 0 && len == 4 && memcmp(buf, " the", 4) == 0,
	   "decode_token gives raw bytes");
	OK(tokenizer_decode_token(tok, 0, buf, sizeof buf, &len) == 0 && len == strlen(BOS) &&
		   memcmp(buf, BOS, len) == 0,
	   "decode_token of BOS");
	OK(tokenizer_decode_token(tok, the, buf, 2, &len) == -1 && len == 4,
	   "decode_token: short buffer gives the size needed");
	OK(tokenizer_decode_token(tok, 128815, buf, sizeof buf, &len) == -1 && len == 0,
	   "decode_token: id out of range");
	OK(tokenizer_decode_token(tok, -1, buf, sizeof buf, &len) == -1, "decode_token: negative id");
	OK(tokenizer_is_special(tok, 0) && tokenizer_is_special(tok, 1) && !tokenizer_is_special(tok, 128803) &&
		   !tokenizer_is_special(tok, the),
	   "is_special follows tokenizer.json (<｜User｜> is not special there)");
	for (int b = 0; b < 256; b++) {
		int32_t *ids = NULL;
		size_t n = 0;
		char c = (char)b;

		if (b >= 0x80)
			continue;
		if (tokenizer_encode(tok, &c, 1, &ids, &n) != 0 || n != 1 ||
		    tokenizer_decode_token(tok, ids[0], buf, sizeof buf, &len) != 0 || len != 1 || buf[0] != c) {
			OK(0, "ASCII byte 0x%02x round trip", b);
			free(ids);
			return;
		}
		free(ids);
	}
	OK(1, "every ASCII byte encodes to one token that decodes back");
}

static void test_errors(const struct tokenizer *tok)
{
	static const char *const bad[] = {
		"\xff",
		"\xc0\x80",
		"\xc1\xbf",
		"\xed\xa0\x80",
		"\xe4\xb8",
		"a\xf4\x90\x80\x80",
		"\xf8\x88\x80\x80\x80",
		"ok\x80",
	};
	struct error err = {0};
	int32_t *ids = (int32_t *)1;
	size_t n = 7;
	struct tokenizer *t2;
	FILE *f;
	char tmp[] = "/tmp/test_tokenizer_XXXXXX";
	int fd;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		errno = 0;
		OK(tokenizer_encode(tok, bad[i], strlen(bad[i]), &ids, &n) == -1 && errno == EILSEQ && ids == NULL &&
			   n == 0,
		   "invalid UTF-8 #%zu is EILSEQ", i);
	}
	OK(tokenizer_encode(tok, NULL, 0, &ids, &n) == 0 && n == 0 && ids == NULL, "empty text gives no ids");
	OK(tokenizer_encode(tok, NULL, 3, &ids, &n) == -1 && errno == EINVAL, "NULL text is EINVAL");
	OK(tokenizer_count(tok, "\xff", 1, &n) == -1 && errno == EILSEQ, "count: invalid UTF-8");

	t2 = tokenizer_load("/nonexistent/tokenizer.json", &err);
	OK(t2 == NULL && strstr(err.msg, "/nonexistent/tokenizer.json") != NULL &&
		   strcmp(err.code, "bad_tokenizer") == 0,
	   "load: missing file names it: %s", err.msg);
	fd = mkstemp(tmp);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (f) {
		fputs("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}, \"pre_tokenizer\": null}", f);
		fclose(f);
	}
	t2 = tokenizer_load(tmp, &err);
	OK(t2 == NULL && err.msg[0] != '\0', "load: unsupported model: %s", err.msg);
	tokenizer_free(t2);
	f = fopen(tmp, "w");
	if (f) {
		fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
		      " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
		      "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{Greek}\"},"
		      " \"behavior\": \"Isolated\", \"invert\": false},"
		      "{\"type\": \"ByteLevel\", \"use_regex\": false}]}}",
		      f);
		fclose(f);
	}
	t2 = tokenizer_load(tmp, &err);
	OK(t2 == NULL && err.msg[0] != '\0', "load: incomplete vocabulary: %s", err.msg);
	tokenizer_free(t2);
	unlink(tmp);
	tokenizer_free(NULL);
}

/* The small tokenizer.json of gen_reference.js: regex constructs and added
 * token options that DeepSeek-V3's file does not use. */
static void test_synthetic(const char *dir)
{
	char path[4096];
	struct error err = {0};
	struct tokenizer *syn;
	struct fset fs;

	snprintf(path, sizeof path, "%s/synthetic_tokenizer.json", dir);
	syn = tokenizer_load(path, &err);
	OK(syn != NULL, "load synthetic tokenizer%s%s", err.msg[0] ? ": " : "", err.msg);
	if (!syn)
		return;
	if (load_cases(dir, "synthetic_cases.json", &fs) == 0) {
		test_fixtures(syn, &fs, false); /* lstrip/rstrip drop white space */
		free_cases(&fs);
	} else {
		OK(0, "load synthetic cases");
	}
	IS_I64(tokenizer_token_id(syn, "<B>"), 275, "synthetic: token_id of an added token");
	tokenizer_free(syn);
}

/* Special tokens glued to text, built here rather than in the fixtures. */
static void test_special_split(const struct tokenizer *tok)
{
	int32_t *ids = NULL;
	size_t n = 0;
	int32_t hi;

	OK(tokenizer_encode(tok, "hi", 2, &ids, &n) == 0 && n == 1, "\"hi\" is one token");
	hi = n ? ids[0] : -1;
	free(ids);
	ids = NULL;
	OK(tokenizer_encode(tok, BOS "hi" EOS, strlen(BOS "hi" EOS), &ids, &n) == 0 && n == 3 && ids[0] == 0 &&
		   ids[1] == hi && ids[2] == 1,
	   "BOS hi EOS");
	free(ids);
}

struct thread_arg {
	const struct tokenizer *tok;
	size_t start;
	int mismatches;
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;

	for (size_t r = 0; r < 3; r++)
		for (size_t k = 0; k < n_cases; k++) {
			const struct fcase *c = &cases[(k + a->start) % n_cases];
			int32_t *ids = NULL;
			size_t n = 0;

			if (tokenizer_encode(a->tok, c->text, c->len, &ids, &n) != 0 || n != c->n ||
			    (n && memcmp(ids, c->ids, n * sizeof *ids) != 0))
				a->mismatches++;
			free(ids);
		}
	return NULL;
}

static void test_threads(const struct tokenizer *tok)
{
	enum { NT = 4 };
	pthread_t th[NT];
	struct thread_arg args[NT];
	int bad = 0, started = 0;

	for (int i = 0; i < NT; i++) {
		args[i] = (struct thread_arg){tok, (size_t)i * n_cases / NT, 0};
		if (pthread_create(&th[i], NULL, thread_main, &args[i]) == 0)
			started++;
		else
			bad++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		bad += args[i].mismatches;
	}
	OK(bad == 0 && started == NT, "%d threads encode all fixtures concurrently", NT);
}

static int bench(const struct tokenizer *tok, double load_s)
{
	size_t target = 1 << 20, len = 0, n = 0, total = 0;
	char *text = malloc(target + 65536);
	double t0, best = 1e9;
	int32_t *ids = NULL;

	if (!text)
		return 1;
	/* natural-ish cases (prose, code, CJK, emoji, ...), not the sweeps */
	while (len < target)
		for (size_t i = 0; i < n_cases && len < target; i++) {
			if (strcmp(cases[i].tag, "sweep") == 0 || strcmp(cases[i].tag, "long") == 0 ||
			    memchr(cases[i].text, '\0', cases[i].len))
				continue;
			memcpy(text + len, cases[i].text, cases[i].len);
			len += cases[i].len;
			text[len++] = '\n';
		}
	for (int r = 0; r < 5; r++) {
		t0 = now();
		if (tokenizer_encode(tok, text, len, &ids, &n) != 0) {
			printf("bench: encode failed\n");
			free(text);
			return 1;
		}
		free(ids);
		t0 = now() - t0;
		if (t0 < best)
			best = t0;
		total = n;
	}
	printf("bench: load %.3f s; %zu bytes -> %zu ids; best of 5: %.3f s = %.1f MB/s, %.2f M ids/s\n", load_s, len,
	       total, best, (double)len / best / 1e6, (double)total / best / 1e6);
	free(text);
	return 0;
}

int main(int argc, char **argv)
{
	const char *json = env_or("TOKENIZER_JSON", "data/tokenizer.json");
	const char *dir = env_or("TOKENIZER_FIXTURES", "tests/fixtures/tokenizer");
	struct error err = {0};
	struct tokenizer *tok;
	struct fset main_set;
	double t0 = now(), load_s;
	int rc, loaded;

	tok = tokenizer_load(json, &err);
	load_s = now() - t0;
	OK(tok != NULL, "load %s (%.3f s)%s%s", json, load_s, err.msg[0] ? ": " : "", err.msg);
	if (!tok)
		return tap_done();
	loaded = load_cases(dir, "cases.json", &main_set) == 0;
	cases = main_set.c;
	n_cases = main_set.n;
	OK(loaded && n_cases >= 200, "load fixtures: %zu cases", n_cases);
	if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
		rc = loaded ? bench(tok, load_s) : 1;
	} else {
		test_lookups(tok);
		test_special_split(tok);
		test_render_literal();
		test_errors(tok);
		test_synthetic(dir);
		if (loaded) {
			test_fixtures(tok, &main_set, true);
			test_chat(tok, dir);
			test_threads(tok);
		}
		rc = tap_done();
	}
	free_cases(&main_set);
	tokenizer_free(tok);
	return rc;
}
