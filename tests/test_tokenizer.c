/* test_tokenizer.c - the CLIP BPE tokenizer against references.
 *
 * 1. tests/data/tokenizer_cases.json (tests/reference/clip_tokenizer_ref.py, an independent
 *    Python version of transformers' CLIPTokenizer without ftfy) on the real SD 1.5 tokenizer
 *    in $SL_SHARED_DIR/sd15/tokenizer: every id and n_real must match.
 * 2. The golden ids of shared/golden/tiny-sd1: expected.safetensors `tok.input_ids` [3,77] are
 *    the SD 1.5 tokenizer's ids, unchanged, for expected.json "tokenizer_prompts" (BOS 49406,
 *    EOS 49407, EOS padding); they must equal our ids exactly. (The tiny text encoder's own
 *    inputs `te.in.input_ids`, with BOS 998 / EOS 999 in a 1000-entry vocabulary, are
 *    arbitrary ids, not a tokenization or a remapping of these prompts, so nothing relates
 *    them to a tokenizer.)
 * 3. The CLIP .txt.gz format, written here from merges.txt with zlib: same vocabulary, same ids.
 * 4. Errors: invalid UTF-8 (byte offset in the message), malformed / missing vocab and merges
 *    files (file and line in the message), an unknown special token; SD 2.x "!" padding,
 *    truncation, decode_token.
 */
#include <cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "tests/test_util.h"
#include "textenc/tokenizer.h"

#define T77 77

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

static int write_text(const char *dir, const char *name, const char *text) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fputs(text, f);
    fclose(f);
    return 1;
}

static void make_dir(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) fprintf(stderr, "mkdir %s: %s\n", path, strerror(errno));
}

static int ids_equal(const int32_t *a, const int32_t *b, int n, int *first_diff) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) { *first_diff = i; return 0; }
    return 1;
}

/* Checks every case of tokenizer_cases.json; returns the number of cases checked. */
static int check_cases(const SlTokenizer *tok, const cJSON *cases, const char *label) {
    int n = 0, bad = 0;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
        const cJSON *jids = cJSON_GetObjectItemCaseSensitive(c, "ids");
        int want_real = cJSON_GetObjectItemCaseSensitive(c, "n_real")->valueint;
        int32_t want[T77], got[T77];
        int i = 0, n_real = -1, d = -1;
        const cJSON *v;
        cJSON_ArrayForEach(v, jids) if (i < T77) want[i++] = v->valueint;
        CHECK(i == T77, "case %d: %d reference ids", n, i);
        SlStatus st = sl_tokenizer_encode(tok, text, got, T77, &n_real, &ctx);
        CHECK(st == SL_OK, "%s case %d: %s", label, n, ctx.msg);
        int same = st == SL_OK && ids_equal(got, want, T77, &d) && n_real == want_real;
        CHECK(same, "%s case %d \"%.60s\": n_real %d want %d, first diff at %d: got %d want %d", label, n, text,
              n_real, want_real, d, d >= 0 ? got[d] : 0, d >= 0 ? want[d] : 0);
        bad += !same;
        n++;
    }
    printf("%s   %s: %d/%d cases match the Python reference\n", bad ? "FAIL" : "ok  ", label, n - bad, n);
    return n;
}

static void test_golden(const SlTokenizer *tok) {
    char path[2048];
    SlCtx ctx;
    sl_ctx_init(&ctx);
    snprintf(path, sizeof path, "%s/golden/tiny-sd1/expected.json", sl_test_shared());
    char *js = slurp(path, NULL);
    CHECK(js != NULL, "cannot read %s", path);
    if (!js) return;
    cJSON *root = cJSON_Parse(js);
    free(js);
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(root, "tokenizer_prompts");
    CHECK(cJSON_GetArraySize(prompts) == 3, "expected 3 tokenizer_prompts");
    snprintf(path, sizeof path, "%s/golden/tiny-sd1/expected.safetensors", sl_test_shared());
    SlStFile f;
    SlStatus st = sl_st_open(&f, path, &ctx);
    CHECK(st == SL_OK, "%s", ctx.msg);
    if (st != SL_OK) { cJSON_Delete(root); return; }
    const SlStEntry *e = sl_st_find(&f, "tok.input_ids");
    CHECK(e && e->ndim == 2 && e->shape[0] == 3 && e->shape[1] == T77, "tok.input_ids [3,77]");
    if (e && e->ndim == 2 && e->shape[0] == 3 && e->shape[1] == T77) {
        int64_t ref[3 * T77];
        CHECK_OK(sl_st_read_i64(&f, e, ref, &ctx), &ctx);
        for (int p = 0; p < 3; p++) {
            const char *text = cJSON_GetArrayItem(prompts, p)->valuestring;
            int32_t got[T77];
            int n_real = 0, same = 1, d = -1;
            CHECK_OK(sl_tokenizer_encode(tok, text, got, T77, &n_real, &ctx), &ctx);
            for (int i = 0; i < T77 && same; i++)
                if (got[i] != ref[p * T77 + i]) { same = 0; d = i; }
            CHECK(same, "golden prompt %d \"%s\": first diff at %d: got %d want %lld", p, text, d,
                  d >= 0 ? got[d] : 0, d >= 0 ? (long long)ref[p * T77 + d] : 0LL);
            if (same) printf("ok   golden tok.input_ids[%d] \"%s\": %d real tokens\n", p, text, n_real);
        }
    }
    sl_st_close(&f);
    cJSON_Delete(root);
}

/* Writes CLIP's .txt.gz format from the folder's merges.txt: header line, then the merges
 * (as a second gzip member if two_members: `cat a.gz b.gz` is a valid .gz). */
static int write_clip_gz(const char *merges_path, const char *gz_path, int two_members) {
    size_t len;
    char *text = slurp(merges_path, &len);
    if (!text) return 0;
    gzFile g = gzopen(gz_path, "wb");
    if (!g) { free(text); return 0; }
    char *body = strchr(text, '\n');
    gzputs(g, "\"bpe_simple_vocab_16e6.txt#version: 0.2\n");
    if (two_members) {
        gzclose(g);
        g = gzopen(gz_path, "ab");
        if (!g) { free(text); return 0; }
    }
    int ok = body && gzwrite(g, body + 1, (unsigned)(len - (size_t)(body + 1 - text))) > 0;
    gzclose(g);
    free(text);
    return ok;
}

static void test_clip_gz(const SlTokenizer *folder_tok, const cJSON *cases, const char *tmp) {
    char merges[2048], gz[2048];
    SlCtx ctx;
    sl_ctx_init(&ctx);
    snprintf(merges, sizeof merges, "%s/sd15/tokenizer/merges.txt", sl_test_shared());
    snprintf(gz, sizeof gz, "%s/bpe_simple_vocab_test.txt.gz", tmp);
    /* a truncated .gz names the file and says so (it is inflated in memory, not by gzread) */
    CHECK(write_clip_gz(merges, gz, 0), "cannot write %s", gz);
    size_t n = 0;
    char *bytes = slurp(gz, &n);
    char cut[2048];
    snprintf(cut, sizeof cut, "%s/bpe_truncated.txt.gz", tmp);
    FILE *f = fopen(cut, "wb");
    CHECK(bytes && f && fwrite(bytes, 1, n / 2, f) == n / 2, "cannot write %s", cut);
    if (f) fclose(f);
    free(bytes);
    SlTokenizer *tok = NULL;
    SlStatus st = sl_tokenizer_load(&tok, cut, &ctx);
    CHECK(st == SL_ERR_FORMAT && tok == NULL && strstr(ctx.msg, cut) && strstr(ctx.msg, "truncated"),
          "truncated .gz: %s: %s", sl_status_name(st), ctx.msg);
    CHECK(write_clip_gz(merges, gz, 1), "cannot write %s", gz);
    CHECK_OK(sl_tokenizer_load(&tok, gz, &ctx), &ctx);
    if (!tok) return;
    CHECK(sl_tokenizer_vocab_size(tok) == sl_tokenizer_vocab_size(folder_tok), "gz vocab %d vs folder %d",
          sl_tokenizer_vocab_size(tok), sl_tokenizer_vocab_size(folder_tok));
    int mismatched = 0;
    for (int32_t id = 0; id < sl_tokenizer_vocab_size(folder_tok); id++) {
        const char *a = sl_tokenizer_token_text(tok, id), *b = sl_tokenizer_token_text(folder_tok, id);
        if (!a || !b || strcmp(a, b) != 0) mismatched++;
    }
    CHECK(mismatched == 0, "%d vocabulary ids differ between the .gz and vocab.json", mismatched);
    CHECK(sl_tokenizer_bos(tok) == 49406 && sl_tokenizer_eos(tok) == 49407 && sl_tokenizer_pad(tok) == 49407,
          "gz specials %d %d %d", sl_tokenizer_bos(tok), sl_tokenizer_eos(tok), sl_tokenizer_pad(tok));
    check_cases(tok, cases, "clip .txt.gz");
    sl_tokenizer_free(tok);
}

static void test_invalid_utf8(const SlTokenizer *tok) {
    static const struct { const char *bytes; size_t offset; } bad[] = {
        {"ab\x80", 2},               /* lone continuation byte */
        {"caf\xc3", 3},              /* truncated 2-byte sequence */
        {"x\xc0\x80", 1},            /* overlong NUL */
        {"ok \xe0\x80\xaf", 3},      /* overlong '/' */
        {"\xed\xa0\x80", 0},         /* UTF-16 surrogate */
        {"hi\xf4\x90\x80\x80", 2},   /* beyond U+10FFFF */
        {"\xf5\x80\x80\x80", 0},     /* invalid lead byte */
        {"good \xe2\x82 bad", 5},    /* truncated 3-byte sequence */
    };
    SlCtx ctx;
    sl_ctx_init(&ctx);
    int32_t ids[T77];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", bad[i].offset);
        SlStatus st = sl_tokenizer_encode(tok, bad[i].bytes, ids, T77, NULL, &ctx);
        CHECK(st == SL_ERR_ARG && strstr(ctx.msg, want), "invalid UTF-8 #%zu: %s: %s (want \"%s\")", i,
              sl_status_name(st), ctx.msg, want);
    }
    /* a NUL inside an explicit-length text is a control character: dropped */
    int32_t a[T77], b[T77];
    int na = 0, nb = 0, d = -1;
    CHECK_OK(sl_tokenizer_encode_n(tok, "a\0b", 3, a, T77, &na, &ctx), &ctx);
    CHECK_OK(sl_tokenizer_encode(tok, "ab", b, T77, &nb, &ctx), &ctx);
    CHECK(na == nb && ids_equal(a, b, T77, &d), "embedded NUL should be dropped like Python's _clean_text");
}

static void test_truncation_and_decode(const SlTokenizer *tok) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    int32_t ids[T77];
    int n_real = 0;
    CHECK_OK(sl_tokenizer_encode(tok, "one two three four five six seven eight nine ten eleven", ids, 6, &n_real, &ctx),
             &ctx);
    CHECK(n_real == 6 && ids[0] == 49406 && ids[5] == 49407, "truncated to 6: n_real %d last %d", n_real, ids[5]);
    CHECK_OK(sl_tokenizer_encode(tok, "anything", ids, 2, &n_real, &ctx), &ctx);
    CHECK(n_real == 2 && ids[0] == 49406 && ids[1] == 49407, "max_len 2 keeps BOS, EOS");
    CHECK(sl_tokenizer_encode(tok, "x", ids, 1, &n_real, &ctx) == SL_ERR_ARG, "max_len 1 must fail");

    char buf[64];
    size_t n = sl_tokenizer_decode_token(tok, 320, buf, sizeof buf);
    CHECK(n == 2 && strcmp(buf, "a ") == 0, "decode 320 = \"%s\"", buf);
    n = sl_tokenizer_decode_token(tok, 49406, buf, sizeof buf);
    CHECK(strcmp(buf, "<|startoftext|>") == 0 && n == 15, "decode bos = \"%s\"", buf);
    CHECK(sl_tokenizer_decode_token(tok, 999999, buf, sizeof buf) == 0 && buf[0] == '\0', "decode unknown id");
    /* "é" = c3 a9, split into two byte tokens by no merge? decode gives the raw bytes back */
    int32_t e_id = sl_tokenizer_token_id(tok, "\xc3\x83</w>"); /* byte 0xC3 at a word end */
    CHECK(e_id >= 0, "byte-level token for 0xC3 exists");
    n = sl_tokenizer_decode_token(tok, e_id, buf, sizeof buf);
    CHECK(n == 2 && (uint8_t)buf[0] == 0xC3 && buf[1] == ' ', "byte-level decode");
    n = sl_tokenizer_decode_token(tok, 320, buf, 2); /* truncated output, full length returned */
    CHECK(n == 2 && strcmp(buf, "a") == 0, "decode into a small buffer");
    CHECK(sl_tokenizer_token_id(tok, "cat</w>") == 2368, "token_id(cat</w>) = %d", sl_tokenizer_token_id(tok, "cat</w>"));

    /* What the cut drops (A1111's "N tokens over the limit of 75"): "cat" x 80 keeps 75 and
     * drops 5; exactly 75 drops none; a small buffer ends in "..." on a character boundary. */
    char text[1024] = "", dropped[64];
    for (int i = 0; i < 80; i++) strcat(text, i ? " cat" : "cat");
    int n_dropped = -1;
    CHECK_OK(sl_tokenizer_encode_dropped(tok, text, ids, T77, &n_real, &n_dropped, dropped, sizeof dropped, &ctx),
             &ctx);
    CHECK(n_real == T77 && n_dropped == 5 && strcmp(dropped, "cat cat cat cat cat") == 0,
          "80 x cat: n_real %d, dropped %d '%s'", n_real, n_dropped, dropped);
    int32_t plain[T77];
    CHECK_OK(sl_tokenizer_encode(tok, text, plain, T77, NULL, &ctx), &ctx);
    int d = -1;
    CHECK(ids_equal(ids, plain, T77, &d), "encode_dropped ids differ from encode at %d", d);
    text[75 * 4 - 1] = '\0'; /* 75 cats */
    CHECK_OK(sl_tokenizer_encode_dropped(tok, text, ids, T77, &n_real, &n_dropped, dropped, sizeof dropped, &ctx),
             &ctx);
    CHECK(n_real == T77 && n_dropped == 0 && dropped[0] == '\0', "75 x cat: dropped %d '%s'", n_dropped, dropped);
    CHECK_OK(sl_tokenizer_encode_dropped(tok, "a cat", ids, T77, &n_real, &n_dropped, dropped, sizeof dropped, &ctx),
             &ctx);
    CHECK(n_real == 4 && n_dropped == 0 && dropped[0] == '\0', "a cat: dropped %d", n_dropped);
    /* 2 kept of "one two ... eleven" (max_len 4): 9 dropped, shown in 12 bytes then "..." */
    CHECK_OK(sl_tokenizer_encode_dropped(tok, "one two three four five six seven eight nine ten eleven", ids, 4,
                                         &n_real, &n_dropped, dropped, 16, &ctx), &ctx);
    CHECK(n_dropped == 9 && strcmp(dropped, "three four f...") == 0, "max_len 4: dropped %d '%s'", n_dropped, dropped);
    /* "é " x 100: a cut must not leave half of a two-byte character before "..." */
    char e100[512] = "";
    for (int i = 0; i < 100; i++) strcat(e100, "\xc3\xa9 ");
    CHECK_OK(sl_tokenizer_encode_dropped(tok, e100, ids, T77, &n_real, &n_dropped, dropped, 8, &ctx), &ctx);
    size_t dl = strlen(dropped);
    CHECK(n_dropped == 25 && dl >= 3 && strcmp(dropped + dl - 3, "...") == 0 && (dl - 3) % 3 == 0,
          "100 x e-acute: dropped %d '%s'", n_dropped, dropped);
}

/* A folder with the real vocab.json/merges.txt copied in, plus the given config texts. */
static void write_small_tokenizer(const char *dir, const char *vocab, const char *merges) {
    make_dir(dir);
    write_text(dir, "vocab.json", vocab);
    write_text(dir, "merges.txt", merges);
}

static void expect_fail(const char *dir, SlStatus want, const char *needle1, const char *needle2) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlTokenizer *tok = (SlTokenizer *)1;
    SlStatus st = sl_tokenizer_load(&tok, dir, &ctx);
    CHECK(st == want && tok == NULL && strstr(ctx.msg, needle1) && (!needle2 || strstr(ctx.msg, needle2)),
          "load %s: got %s \"%s\", want %s with \"%s\" \"%s\"", dir, sl_status_name(st), ctx.msg,
          sl_status_name(want), needle1, needle2 ? needle2 : "");
    if (st == SL_OK) sl_tokenizer_free(tok);
}

static void test_bad_files(const char *tmp) {
    char d[2048];
    const char *good_vocab =
        "{\"a\": 0, \"b\": 1, \"c\": 2, \"a</w>\": 3, \"b</w>\": 4, \"c</w>\": 5, \"ab\": 6, \"ab</w>\": 7,\n"
        " \"abc</w>\": 8, \"!\": 9, \"<|startoftext|>\": 10, \"<|endoftext|>\": 11}\n";
    const char *good_merges = "#version: 0.2\na b\nab c</w>\nab b</w>\n";

    snprintf(d, sizeof d, "%s/tok_missing", tmp);
    make_dir(d);
    expect_fail(d, SL_ERR_IO, "vocab.json", NULL);
    snprintf(d, sizeof d, "%s/tok_nonexistent_path", tmp);
    expect_fail(d, SL_ERR_IO, "tok_nonexistent_path", NULL);

    snprintf(d, sizeof d, "%s/tok_badjson", tmp);
    write_small_tokenizer(d, "{\"a\": 0,\n \"b\": 1,\n \"c\" 2}\n", good_merges);
    expect_fail(d, SL_ERR_FORMAT, "vocab.json:3:", "malformed JSON");

    snprintf(d, sizeof d, "%s/tok_array", tmp);
    write_small_tokenizer(d, "[\"a\", \"b\"]", good_merges);
    expect_fail(d, SL_ERR_FORMAT, "vocab.json", "JSON object");

    snprintf(d, sizeof d, "%s/tok_badid", tmp);
    write_small_tokenizer(d, "{\"a\": 0, \"b\": \"one\"}", good_merges);
    expect_fail(d, SL_ERR_FORMAT, "vocab.json", "\"b\"");

    snprintf(d, sizeof d, "%s/tok_onepart", tmp);
    write_small_tokenizer(d, good_vocab, "#version: 0.2\na b\nabc\nab b</w>\n");
    expect_fail(d, SL_ERR_FORMAT, "merges.txt:3:", "two symbols");

    snprintf(d, sizeof d, "%s/tok_nomerges", tmp);
    write_small_tokenizer(d, good_vocab, "");
    expect_fail(d, SL_ERR_FORMAT, "merges.txt", "no merges");

    snprintf(d, sizeof d, "%s/tok_badconfig", tmp);
    write_small_tokenizer(d, good_vocab, good_merges);
    write_text(d, "tokenizer_config.json", "{\"model_max_length\": 77,,}");
    expect_fail(d, SL_ERR_FORMAT, "tokenizer_config.json:1:", "malformed JSON");

    snprintf(d, sizeof d, "%s/tok_badpad", tmp);
    write_small_tokenizer(d, good_vocab, good_merges);
    write_text(d, "special_tokens_map.json", "{\"pad_token\": \"<pad>\"}");
    expect_fail(d, SL_ERR_MISSING, "special_tokens_map.json", "<pad>");

    /* A tiny valid tokenizer, SD 2.x style: pad "!" (given as an AddedToken object), length 8.
     * BPE by hand: "abc" -> a b c</w> -> (a b, rank 0) ab c</w> -> (rank 1) abc</w>;
     * "abb" -> a b b</w> -> ab b</w> -> (rank 2) "abb</w>" is not in the vocabulary -> unk;
     * "cab" -> c a b</w>: (a,b</w>) is no merge -> c a b</w>.
     * added_tokens_decoder adds "<sks>" as id 12; it and the pad "!" are cut out before BPE:
     * "<sks>ab!!c" -> <sks> | a b</w> | ! | ! | c</w>. */
    snprintf(d, sizeof d, "%s/tok_sd2", tmp);
    write_small_tokenizer(d, good_vocab, good_merges);
    write_text(d, "tokenizer_config.json",
               "{\"model_max_length\": 8, \"pad_token\": {\"content\": \"!\", \"__type\": \"AddedToken\"},"
               " \"unk_token\": \"<|endoftext|>\", \"added_tokens_decoder\": {\"10\": {\"content\": \"<|startoftext|>\"},"
               " \"12\": {\"content\": \"<sks>\", \"special\": false}}}");
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlTokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_load(&tok, d, &ctx), &ctx);
    if (tok) {
        CHECK(sl_tokenizer_pad(tok) == 9 && sl_tokenizer_max_length(tok) == 8 && sl_tokenizer_bos(tok) == 10 &&
              sl_tokenizer_eos(tok) == 11 && sl_tokenizer_vocab_size(tok) == 13 && sl_tokenizer_n_merges(tok) == 3,
              "tiny tokenizer: pad %d max %d bos %d eos %d vocab %d merges %d", sl_tokenizer_pad(tok),
              sl_tokenizer_max_length(tok), sl_tokenizer_bos(tok), sl_tokenizer_eos(tok),
              sl_tokenizer_vocab_size(tok), sl_tokenizer_n_merges(tok));
        int32_t ids[8], n_real = 0;
        const int32_t want[8] = {10, 8, 11, 2, 0, 4, 11, 9};
        CHECK_OK(sl_tokenizer_encode(tok, "ABC abb cab", ids, 8, &n_real, &ctx), &ctx);
        int dd = -1;
        CHECK(n_real == 7 && ids_equal(ids, want, 8, &dd), "tiny BPE: n_real %d, diff at %d (got %d)", n_real, dd,
              dd >= 0 ? ids[dd] : 0);
        const int32_t want2[8] = {10, 12, 0, 4, 9, 9, 5, 11};
        CHECK_OK(sl_tokenizer_encode(tok, "<sks>ab!!c", ids, 8, &n_real, &ctx), &ctx);
        CHECK(n_real == 8 && ids_equal(ids, want2, 8, &dd), "tiny added/pad split: n_real %d, diff at %d (got %d)",
              n_real, dd, dd >= 0 ? ids[dd] : 0);
        sl_tokenizer_free(tok);
    }
}

/* SD 2.x: the same vocabulary with pad_token "!" (tests/data/tokenizer_cases_sd2.json). In
 * transformers "!" then also becomes a split token: "wow!!" gives wow, "!", "!" (ids 0, 0)
 * instead of the BPE token "!!</w>". */
static void test_sd2_pad(const char *tmp) {
    char d[2048], src[2048], dst[2048 + 32];
    snprintf(d, sizeof d, "%s/tok_sd2_real", tmp);
    make_dir(d);
    const char *names[2] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/sd15/tokenizer/%s", sl_test_shared(), names[i]);
        snprintf(dst, sizeof dst, "%s/%s", d, names[i]);
        unlink(dst);
        if (symlink(src, dst) != 0) fprintf(stderr, "symlink %s: %s\n", dst, strerror(errno));
    }
    write_text(d, "tokenizer_config.json", "{\"model_max_length\": 77, \"pad_token\": \"!\"}");
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlTokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_load(&tok, d, &ctx), &ctx);
    if (!tok) return;
    CHECK(sl_tokenizer_pad(tok) == 0 && sl_tokenizer_eos(tok) == 49407, "sd2 pad %d", sl_tokenizer_pad(tok));
    snprintf(src, sizeof src, "%s/tests/data/tokenizer_cases_sd2.json", sl_test_source());
    char *js = slurp(src, NULL);
    CHECK(js != NULL, "cannot read %s", src);
    cJSON *cases = js ? cJSON_Parse(js) : NULL;
    free(js);
    CHECK(cJSON_GetArraySize(cases) >= 20, "tokenizer_cases_sd2.json has %d cases", cJSON_GetArraySize(cases));
    check_cases(tok, cases, "sd2 pad \"!\"");
    int32_t ids[T77];
    int n_real = 0;
    CHECK_OK(sl_tokenizer_encode(tok, "wow!!", ids, T77, &n_real, &ctx), &ctx);
    CHECK(n_real == 5 && ids[2] == 0 && ids[3] == 0 && ids[4] == 49407 && ids[5] == 0, "sd2 \"wow!!\": n_real %d",
          n_real);
    cJSON_Delete(cases);
    sl_tokenizer_free(tok);
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[2048], tmp[1024];
    snprintf(path, sizeof path, "%s/sd15/tokenizer", sl_test_shared());
    snprintf(tmp, sizeof tmp, "%s/test_tokenizer_tmp", sl_test_binary());
    make_dir(tmp);

    SlTokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_load(&tok, path, &ctx), &ctx);
    if (!tok) return sl_test_finish("test_tokenizer");
    CHECK(sl_tokenizer_vocab_size(tok) == 49408 && sl_tokenizer_n_merges(tok) == 48894 &&
          sl_tokenizer_bos(tok) == 49406 && sl_tokenizer_eos(tok) == 49407 && sl_tokenizer_pad(tok) == 49407 &&
          sl_tokenizer_unk(tok) == 49407 && sl_tokenizer_max_length(tok) == 77,
          "sd15 tokenizer: vocab %d merges %d bos %d eos %d pad %d max %d", sl_tokenizer_vocab_size(tok),
          sl_tokenizer_n_merges(tok), sl_tokenizer_bos(tok), sl_tokenizer_eos(tok), sl_tokenizer_pad(tok),
          sl_tokenizer_max_length(tok));

    snprintf(path, sizeof path, "%s/tests/data/tokenizer_cases.json", sl_test_source());
    char *js = slurp(path, NULL);
    CHECK(js != NULL, "cannot read %s", path);
    cJSON *cases = js ? cJSON_Parse(js) : NULL;
    free(js);
    CHECK(cJSON_GetArraySize(cases) >= 20, "tokenizer_cases.json has %d cases", cJSON_GetArraySize(cases));
    check_cases(tok, cases, "sd15 folder");
    test_golden(tok);
    test_clip_gz(tok, cases, tmp);
    test_invalid_utf8(tok);
    test_truncation_and_decode(tok);
    test_bad_files(tmp);
    test_sd2_pad(tmp);

    cJSON_Delete(cases);
    sl_tokenizer_free(tok);
    return sl_test_finish("test_tokenizer");
}
