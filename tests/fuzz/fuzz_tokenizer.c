/* fuzz_tokenizer.c: tokenizer_encode() and the chat rendering
 * (billing/infer/tokenizer.h) on any bytes: the prompt_tokens of every chat call
 * and /v1/tokenize come from here.
 *
 * Needs data/tokenizer.json (`make data`); another file with
 * FUZZ_TOKENIZER_JSON=PATH.
 *
 * Properties:
 *   - encode succeeds exactly on valid UTF-8 (EILSEQ otherwise), and then
 *     the ids decode, concatenated, to the input bytes (byte-level BPE loses
 *     nothing), every id is below the vocabulary size, and
 *     tokenizer_count() gives the same number;
 *   - chat mode (first byte odd): the input cut at 0x00 bytes into
 *     messages with roles taken from the next byte; the rendering starts
 *     with <｜begin▁of▁sentence｜>, ends with <｜Assistant｜>, and
 *     tokenizer_count_chat() equals counting the rendering. */
#include <errno.h>
#include <string.h>

#include "billing/infer/tokenizer.h"
#include "tests/fuzz/fuzz.h"

static struct tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *path = getenv("FUZZ_TOKENIZER_JSON");
	struct error err;

	(void)argc, (void)argv;
	tok = tokenizer_load(path ? path : "data/tokenizer.json", &err);
	if (!tok) {
		fprintf(stderr, "fuzz_tokenizer: %s (run `make data`, or set FUZZ_TOKENIZER_JSON)\n", err.msg);
		exit(1);
	}
	return 0;
}

static void check_encode(const char *text, size_t len)
{
	int32_t *ids = NULL;
	size_t n = 99, n2 = 0, vocab = tokenizer_vocab_size(tok), off = 0;
	char *back;
	int rc = tokenizer_encode(tok, text, len, &ids, &n);

	if (!fuzz_utf8_valid((const unsigned char *)text, len)) {
		FUZZ_CHECK(rc == -1 && errno == EILSEQ && ids == NULL && n == 0);
		FUZZ_CHECK(tokenizer_count(tok, text, len, &n2) == -1);
		return;
	}
	if (rc != 0)
		fprintf(stderr, "encode failed on valid UTF-8: errno %d\n", errno);
	FUZZ_CHECK(rc == 0);
	FUZZ_CHECK(n <= len || len == 0);
	FUZZ_CHECK((n == 0) == (len == 0));
	back = malloc(len + 1);
	FUZZ_CHECK(back != NULL);
	for (size_t i = 0; i < n; i++) {
		size_t got = 0;
		FUZZ_CHECK(ids[i] >= 0 && (size_t)ids[i] < vocab);
		FUZZ_CHECK(off <= len);
		FUZZ_CHECK(tokenizer_decode_token(tok, ids[i], back + off, len - off, &got) == 0);
		off += got;
	}
	FUZZ_CHECK(off == len);
	FUZZ_CHECK(memcmp(back, text, len) == 0);
	FUZZ_CHECK(tokenizer_count(tok, text, len, &n2) == 0 && n2 == n);
	free(back);
	free(ids);
}

static void check_chat(const uint8_t *data, size_t size)
{
	static const char *const roles[] = {"system", "user", "assistant"};
	struct tokenizer_message msgs[32];
	size_t n = 0, start = 0, out_len = 0, c1 = 0, c2 = 0;
	char *out = NULL;
	int utf8 = 1;

	for (size_t i = 0; i <= size && n < 32; i++) {
		if (i == size || data[i] == 0) {
			if (i > start) {
				msgs[n].role = roles[data[start] % 3];
				msgs[n].content = (const char *)data + start + 1;
				msgs[n].content_len = i - start - 1;
				utf8 &= fuzz_utf8_valid((const unsigned char *)msgs[n].content, msgs[n].content_len);
				n++;
			}
			start = i + 1;
		}
	}
	FUZZ_CHECK(tokenizer_render_chat(n ? msgs : NULL, n, &out, &out_len) == 0);
	FUZZ_CHECK(out != NULL && strlen(out) <= out_len && out[out_len] == '\0');
	FUZZ_CHECK(strncmp(out, "<｜begin▁of▁sentence｜>", strlen("<｜begin▁of▁sentence｜>")) == 0);
	FUZZ_CHECK(out_len >= strlen("<｜Assistant｜>") &&
		   strcmp(out + out_len - strlen("<｜Assistant｜>"), "<｜Assistant｜>") == 0);
	if (utf8) {
		FUZZ_CHECK(tokenizer_count_chat(tok, n ? msgs : NULL, n, &c1) == 0);
		FUZZ_CHECK(tokenizer_count(tok, out, out_len, &c2) == 0);
		FUZZ_CHECK(c1 == c2);
	} else {
		FUZZ_CHECK(tokenizer_count_chat(tok, n ? msgs : NULL, n, &c1) == -1);
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0) {
		check_encode("", 0);
		return 0;
	}
	if (data[0] & 1)
		check_chat(data + 1, size - 1);
	else
		check_encode((const char *)data + 1, size - 1);
	return 0;
}
