/* test_safetensors.c - the safetensors reader/writer, config getters and
 * weight folders: bit-exact round trips and every kind of bad file. */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "test_util.h"

static char g_dir[2048];

static const char *tpath(char *buf, const char *name) {
    snprintf(buf, 4096, "%s/%s", g_dir, name);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

/* A file with an explicit header string and `data_len` bytes of data. */
static void write_raw(const char *path, const char *header, size_t data_len) {
    uint64_t n = strlen(header);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 8; i++) fputc((int)((n >> (8 * i)) & 0xff), f);
    fwrite(header, 1, n, f);
    for (size_t i = 0; i < data_len; i++) fputc((int)(i * 7), f);
    fclose(f);
}

static void expect_bad(const char *name, const char *header, size_t data_len, SlStatus want, const char *needle) {
    char p[4096];
    SlCtx ctx;
    sl_ctx_init(&ctx);
    tpath(p, name);
    write_raw(p, header, data_len);
    SlStFile f;
    SlStatus st = sl_st_open(&f, p, &ctx);
    CHECK(st == want, "%s: status %s, want %s (%s)", name, sl_status_name(st), sl_status_name(want), ctx.msg);
    if (st == SL_OK) {
        sl_st_close(&f);
        return;
    }
    CHECK(strstr(ctx.msg, name) != NULL, "%s: message does not name the file: %s", name, ctx.msg);
    CHECK(strstr(ctx.msg, needle) != NULL, "%s: message lacks '%s': %s", name, needle, ctx.msg);
}

static void test_round_trip(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    float a[6] = {1.5f, -2.25f, 3.0e-8f, 65504.f, -0.f, 1e30f};
    int64_t ids[3] = {1, -2, 1LL << 40};
    uint8_t u[5] = {0, 1, 2, 254, 255};
    int64_t sa[2] = {2, 3}, si[1] = {3}, su[1] = {5}, s0[2] = {0, 4};
    SlStWriter w;
    sl_st_writer_init(&w);
    CHECK_OK(sl_st_writer_add(&w, "b.weight", SL_F32, 2, sa, a, &ctx), &ctx);
    CHECK_OK(sl_st_writer_add(&w, "a.ids", SL_I64, 1, si, ids, &ctx), &ctx);
    CHECK_OK(sl_st_writer_add(&w, "c.bytes", SL_U8, 1, su, u, &ctx), &ctx);
    CHECK_OK(sl_st_writer_add(&w, "d.empty", SL_F32, 2, s0, NULL, &ctx), &ctx);
    CHECK_OK(sl_st_writer_add_f32_as(&w, "e.half", SL_F16, 2, sa, a, &ctx), &ctx);
    CHECK_OK(sl_st_writer_add_f32_as(&w, "f.bf16", SL_BF16, 2, sa, a, &ctx), &ctx);
    CHECK(sl_st_writer_add(&w, "a.ids", SL_I64, 1, si, ids, &ctx) == SL_ERR_ARG, "duplicate add accepted");
    CHECK_OK(sl_st_writer_meta(&w, "format", "pt", &ctx), &ctx);
    CHECK_OK(sl_st_writer_meta(&w, "quote\"key", "line\nbreak \\ \"q\"", &ctx), &ctx);
    char p[4096];
    CHECK_OK(sl_st_writer_save(&w, tpath(p, "rt.safetensors"), &ctx), &ctx);
    sl_st_writer_free(&w);

    SlStFile f;
    CHECK_OK(sl_st_open(&f, p, &ctx), &ctx);
    CHECK(f.n == 6, "n = %d", f.n);
    const SlStEntry *e = sl_st_find(&f, "b.weight");
    CHECK(e && e->dtype == SL_F32 && e->ndim == 2 && e->shape[0] == 2 && e->shape[1] == 3, "b.weight header");
    if (e) CHECK(memcmp(sl_st_data(&f, e), a, sizeof a) == 0, "F32 bytes differ after round trip");
    e = sl_st_find(&f, "a.ids");
    if (e) {
        int64_t got[3];
        CHECK_OK(sl_st_read_i64(&f, e, got, &ctx), &ctx);
        CHECK(memcmp(got, ids, sizeof ids) == 0, "I64 differ");
    }
    e = sl_st_find(&f, "c.bytes");
    CHECK(e && memcmp(sl_st_data(&f, e), u, 5) == 0, "U8 differ");
    e = sl_st_find(&f, "d.empty");
    CHECK(e && e->nbytes == 0, "empty tensor");
    float h[6];
    e = sl_st_find(&f, "e.half");
    if (e) {
        CHECK_OK(sl_st_read_f32(&f, e, h, &ctx), &ctx);
        /* exactly representable in f16: 1.5, -2.25, 65504, -0; 3e-8 is a subnormal; 1e30 overflows to inf */
        CHECK(h[0] == 1.5f && h[1] == -2.25f && h[3] == 65504.f && h[4] == 0.f && signbit(h[4]), "F16 values");
        CHECK(fabsf(h[2] - 3.0e-8f) < 6e-8f * 0.5f, "F16 subnormal %g", h[2]);
        CHECK(isinf(h[5]), "F16 overflow -> inf");
    }
    e = sl_st_find(&f, "f.bf16");
    if (e) {
        CHECK_OK(sl_st_read_f32(&f, e, h, &ctx), &ctx);
        CHECK(h[0] == 1.5f && h[1] == -2.25f && fabsf(h[5] - 1e30f) < 1e28f, "BF16 values");
    }
    CHECK(sl_st_meta(&f, "format") && strcmp(sl_st_meta(&f, "format"), "pt") == 0, "metadata");
    CHECK(sl_st_meta(&f, "quote\"key") && strcmp(sl_st_meta(&f, "quote\"key"), "line\nbreak \\ \"q\"") == 0, "escaped metadata");
    int64_t wrong[2] = {3, 2};
    float tmp[6];
    SlStatus st = sl_st_load_f32(&f, "b.weight", 2, wrong, tmp, &ctx);
    CHECK(st == SL_ERR_SHAPE && strstr(ctx.msg, "[2,3]") && strstr(ctx.msg, "[3,2]"), "shape mismatch message: %s", ctx.msg);
    st = sl_st_load_f32(&f, "nope", 2, wrong, tmp, &ctx);
    CHECK(st == SL_ERR_MISSING && strstr(ctx.msg, "nope"), "missing message: %s", ctx.msg);
    sl_st_close(&f);

    /* rewrite: same bytes (deterministic writer) and no temp file left */
    struct stat sb;
    CHECK(stat(p, &sb) == 0, "file exists");
    char tmpname[4200];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", p, (long)getpid());
    CHECK(stat(tmpname, &sb) != 0, "temp file left behind");
}

/* f16 conversion exhaustive round trip: every finite half survives f16->f32->f16. */
/* The writer replaces only regular files (core/outpath.h): a FIFO or a folder at the
 * path is refused before anything is written, and is still there afterwards. */
static void test_write_special(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char fifo[4096], dir[4096];
    tpath(fifo, "fifo.safetensors");
    tpath(dir, "dir.safetensors");
    unlink(fifo);
    CHECK(mkfifo(fifo, 0644) == 0, "mkfifo failed");
    mkdir(dir, 0755);
    float a[2] = {1, 2};
    int64_t sh[1] = {2};
    SlStWriter w;
    sl_st_writer_init(&w);
    CHECK_OK(sl_st_writer_add(&w, "a", SL_F32, 1, sh, a, &ctx), &ctx);
    SlStatus st = sl_st_writer_save(&w, fifo, &ctx);
    CHECK(st == SL_ERR_IO && strstr(ctx.msg, "not a regular file (FIFO)"), "FIFO: status %d, %s", st, ctx.msg);
    struct stat sb;
    CHECK(stat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode), "the FIFO was replaced");
    st = sl_st_writer_save(&w, dir, &ctx);
    CHECK(st == SL_ERR_IO && strstr(ctx.msg, "(directory)"), "folder: status %d, %s", st, ctx.msg);
    st = sl_st_writer_save(&w, "", &ctx);
    CHECK(st == SL_ERR_ARG && strstr(ctx.msg, "empty path"), "empty path: status %d, %s", st, ctx.msg);
    sl_st_writer_free(&w);
}

static void test_half_exhaustive(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t x = (uint16_t)h;
        if ((x & 0x7c00) == 0x7c00 && (x & 0x3ff)) continue; /* NaN payloads */
        float f = sl_half_to_float(x);
        if (sl_float_to_half(f) != x) bad++;
        uint16_t v;
        sl_f32_to_f16(&v, &f, 1);
        float g;
        sl_f16_to_f32(&g, &v, 1);
        if (memcmp(&g, &f, 4) != 0) bad++;
    }
    CHECK(bad == 0, "%d half values do not round-trip", bad);
    /* the vectorized bulk paths agree with the scalar ones, bit for bit */
    static uint16_t all[65536], back[65536];
    static float f32[65536];
    for (uint32_t h = 0; h < 65536; h++) all[h] = (uint16_t)h;
    sl_f16_to_f32(f32, all, 65536);
    int vbad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float s1 = sl_half_to_float((uint16_t)h);
        if (memcmp(&s1, &f32[h], 4) != 0 && !(isnan(s1) && isnan(f32[h]))) vbad++;
    }
    sl_f32_to_f16(back, f32, 65536);
    for (uint32_t h = 0; h < 65536; h++)
        if (back[h] != all[h] && !((all[h] & 0x7c00) == 0x7c00 && (all[h] & 0x3ff))) vbad++;
    CHECK(vbad == 0, "%d values differ between bulk and scalar f16 conversion", vbad);
    /* round to nearest even between two halves */
    CHECK(sl_float_to_half(1.0f + 1.0f / 2048) == 0x3c00, "tie rounds to even (down)");
    CHECK(sl_float_to_half(1.0f + 3.0f / 2048) == 0x3c02, "tie rounds to even (up)");
}

static void test_bad_files(void) {
    char p[4096];
    SlCtx ctx;
    sl_ctx_init(&ctx);
    /* too short */
    write_bytes(tpath(p, "short.safetensors"), "abc", 3);
    SlStFile f;
    CHECK(sl_st_open(&f, p, &ctx) == SL_ERR_FORMAT && strstr(ctx.msg, "short.safetensors"), "short: %s", ctx.msg);
    /* header length near 2^64 */
    uint8_t huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    write_bytes(tpath(p, "huge_header.safetensors"), huge, 16);
    CHECK(sl_st_open(&f, p, &ctx) == SL_ERR_FORMAT && strstr(ctx.msg, "limit"), "huge header: %s", ctx.msg);
    /* PyTorch checkpoints renamed .safetensors: a zip (torch.save >= 1.6) and a raw
     * protocol-2 pickle were reported as "header length ... exceeds the limit" */
    static const struct { const char *name; uint8_t b[16]; } pk[] = {
        {"zip_ckpt.safetensors", {'P', 'K', 3, 4, 0, 0, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0}},
        {"pickle_ckpt.safetensors",
         {0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.', 0}},
        {"pickle5.safetensors", {0x80, 5, 0x95, 0x30, 0, 0, 0, 0, 0, 0, 0, '}', 0x94, '(', '.', 0}},
    };
    for (size_t i = 0; i < sizeof pk / sizeof pk[0]; i++) {
        write_bytes(tpath(p, pk[i].name), pk[i].b, 16);
        CHECK(sl_st_open(&f, p, &ctx) == SL_ERR_UNSUPPORTED && strstr(ctx.msg, pk[i].name) &&
                  strstr(ctx.msg, "PyTorch pickle/zip checkpoint, not safetensors") && strstr(ctx.msg, "convert"),
              "%s: %s", pk[i].name, ctx.msg);
    }
    /* ... but a real file whose 640-byte header length starts with the same 80 02 opens */
    char h640[641];
    int k = snprintf(h640, sizeof h640, "{\"__metadata__\":{\"k\":\"v\"}}");
    memset(h640 + k, ' ', sizeof h640 - 1 - (size_t)k);
    h640[640] = '\0';
    write_raw(tpath(p, "h640.safetensors"), h640, 0);
    CHECK(sl_st_open(&f, p, &ctx) == SL_OK, "640-byte header (starts 80 02 like a pickle): %s", ctx.msg);
    sl_st_close(&f);
    /* header longer than the file */
    uint8_t trunc[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    write_bytes(tpath(p, "trunc_header.safetensors"), trunc, 12);
    CHECK(sl_st_open(&f, p, &ctx) == SL_ERR_FORMAT && strstr(ctx.msg, "truncated"), "truncated header: %s", ctx.msg);
    expect_bad("notjson.safetensors", "{\"a\": {\"dtype\": \"F32\", ", 0, SL_ERR_FORMAT, "not valid JSON");
    expect_bad("array.safetensors", "[1,2,3]", 0, SL_ERR_FORMAT, "not a JSON object");
    expect_bad("dtype.safetensors", "{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT, "dtype");
    expect_bad("size.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, SL_ERR_FORMAT, "needs 8 bytes");
    expect_bad("past.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, SL_ERR_FORMAT, "past the end");
    expect_bad("overlap.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, SL_ERR_FORMAT, "overlap");
    expect_bad("dup.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, SL_ERR_FORMAT, "twice");
    expect_bad("overflow.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
               SL_ERR_FORMAT, "overflow");
    expect_bad("negdim.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT, "shape");
    expect_bad("offsets.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, SL_ERR_FORMAT, "data_offsets");
    expect_bad("meta.safetensors", "{\"__metadata__\":{\"k\":1}}", 0, SL_ERR_FORMAT, "not a string");
    expect_bad("ok.safetensors", "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[0,1]}}", 1,
               SL_OK, "");
    CHECK(sl_st_open(&f, tpath(p, "does_not_exist.safetensors"), &ctx) == SL_ERR_IO && strstr(ctx.msg, "does_not_exist"),
          "missing file: %s", ctx.msg);
}

static void test_config(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlConfig c;
    CHECK(sl_config_parse(&c, "{\"a\": 1,\n \"b\": [1, 2,\n", "cfg.json", &ctx) == SL_ERR_FORMAT &&
              strstr(ctx.msg, "cfg.json") && strstr(ctx.msg, "line"),
          "malformed: %s", ctx.msg);
    CHECK(sl_config_parse(&c, "[1]", "arr.json", &ctx) == SL_ERR_FORMAT, "array root");
    CHECK_OK(sl_config_parse(&c, "{\"i\": 3, \"f\": 2.5, \"s\": \"x\", \"l\": [1,2,3], \"n\": null, \"b\": true, \"big\": 1e300}",
                             "good.json", &ctx), &ctx);
    int64_t v;
    double d;
    const char *s;
    int b, n;
    int64_t list[4];
    CHECK_OK(sl_config_int(&c, "i", 0, 0, 10, &v, &ctx), &ctx);
    CHECK(v == 3, "int");
    CHECK_OK(sl_config_int(&c, "n", 7, 0, 10, &v, &ctx), &ctx);
    CHECK(v == 7, "null -> default");
    CHECK(sl_config_int(&c, "f", 0, 0, 10, &v, &ctx) == SL_ERR_FORMAT && strstr(ctx.msg, "'f'"), "float as int: %s", ctx.msg);
    CHECK(sl_config_int(&c, "i", 0, 4, 10, &v, &ctx) == SL_ERR_FORMAT && strstr(ctx.msg, "outside"), "range: %s", ctx.msg);
    CHECK(sl_config_int(&c, "big", 0, 0, 10, &v, &ctx) == SL_ERR_FORMAT, "absurd size");
    CHECK(sl_config_int(&c, "s", 0, 0, 10, &v, &ctx) == SL_ERR_FORMAT, "string as int");
    CHECK_OK(sl_config_num(&c, "f", 0, &d, &ctx), &ctx);
    CHECK(d == 2.5, "num");
    CHECK_OK(sl_config_str(&c, "s", NULL, &s, &ctx), &ctx);
    CHECK(strcmp(s, "x") == 0, "str");
    CHECK(sl_config_str(&c, "i", NULL, &s, &ctx) == SL_ERR_FORMAT, "int as str");
    CHECK_OK(sl_config_bool(&c, "b", 0, &b, &ctx), &ctx);
    CHECK(b == 1, "bool");
    CHECK_OK(sl_config_int_list(&c, "l", 0, 10, list, 4, &n, &ctx), &ctx);
    CHECK(n == 3 && list[2] == 3, "list");
    CHECK_OK(sl_config_int_list(&c, "i", 0, 10, list, 4, &n, &ctx), &ctx);
    CHECK(n == 1 && list[0] == 3, "int as list");
    CHECK(sl_config_int_list(&c, "l", 0, 10, list, 2, &n, &ctx) == SL_ERR_FORMAT, "list too long");
    sl_config_free(&c);
}

static void test_weights(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char p[4096], dir[4096];
    /* a component folder with a plain and an fp16 variant: the plain one wins */
    snprintf(dir, sizeof dir, "%s/comp", g_dir);
    mkdir(dir, 0755);
    float a[4] = {1, 2, 3, 4}, b[4] = {9, 9, 9, 9};
    int64_t s[2] = {2, 2};
    SlStWriter w;
    sl_st_writer_init(&w);
    sl_st_writer_add(&w, "x.weight", SL_F32, 2, s, a, &ctx);
    sl_st_writer_add(&w, "x.extra", SL_F32, 2, s, a, &ctx);
    CHECK_OK(sl_st_writer_save(&w, sl_path_join(p, sizeof p, dir, "model.safetensors"), &ctx), &ctx);
    sl_st_writer_free(&w);
    sl_st_writer_init(&w);
    sl_st_writer_add(&w, "x.weight", SL_F32, 2, s, b, &ctx);
    CHECK_OK(sl_st_writer_save(&w, sl_path_join(p, sizeof p, dir, "model.fp16.safetensors"), &ctx), &ctx);
    sl_st_writer_free(&w);
    SlWeights ws;
    CHECK_OK(sl_weights_open_dir(&ws, dir, &ctx), &ctx);
    float got[4] = {0};
    CHECK_OK(sl_weights_load(&ws, "x.weight", 2, s, got, &ctx), &ctx);
    CHECK(got[3] == 4, "plain file preferred over variant");
    int64_t s3[1] = {4};
    CHECK(sl_weights_load(&ws, "x.weight", 1, s3, got, &ctx) == SL_ERR_SHAPE && strstr(ctx.msg, "x.weight"), "shape: %s", ctx.msg);
    CHECK(sl_weights_load(&ws, "y.weight", 2, s, got, &ctx) == SL_ERR_MISSING && strstr(ctx.msg, "y.weight"), "missing: %s", ctx.msg);
    /* key map: ask by the diffusers name, read the file's name */
    SlKeyPair pairs[1] = {{"renamed.weight", "x.weight"}};
    CHECK_OK(sl_weights_set_map(&ws, pairs, 1, &ctx), &ctx);
    CHECK_OK(sl_weights_load(&ws, "renamed.weight", 2, s, got, &ctx), &ctx);
    CHECK(sl_weights_report_unused(&ws, 10, &ctx) == 1, "x.extra unused");
    sl_weights_close(&ws);
    /* a folder with only a pickle */
    snprintf(dir, sizeof dir, "%s/pickle", g_dir);
    mkdir(dir, 0755);
    write_bytes(sl_path_join(p, sizeof p, dir, "pytorch_model.bin"), "PK", 2);
    CHECK(sl_weights_open_dir(&ws, dir, &ctx) == SL_ERR_UNSUPPORTED && strstr(ctx.msg, "safetensors"), "pickle: %s", ctx.msg);
    CHECK(sl_weights_open_file(&ws, p, &ctx) == SL_ERR_UNSUPPORTED, "pickle file");
    /* sharded index */
    snprintf(dir, sizeof dir, "%s/sharded", g_dir);
    mkdir(dir, 0755);
    sl_st_writer_init(&w);
    sl_st_writer_add(&w, "p.weight", SL_F32, 2, s, a, &ctx);
    sl_st_writer_save(&w, sl_path_join(p, sizeof p, dir, "m-00001-of-00002.safetensors"), &ctx);
    sl_st_writer_free(&w);
    sl_st_writer_init(&w);
    sl_st_writer_add(&w, "q.weight", SL_F32, 2, s, b, &ctx);
    sl_st_writer_save(&w, sl_path_join(p, sizeof p, dir, "m-00002-of-00002.safetensors"), &ctx);
    sl_st_writer_free(&w);
    const char *idx = "{\"metadata\":{},\"weight_map\":{\"p.weight\":\"m-00001-of-00002.safetensors\",\"q.weight\":\"m-00002-of-00002.safetensors\"}}";
    write_bytes(sl_path_join(p, sizeof p, dir, "m.safetensors.index.json"), idx, strlen(idx));
    CHECK_OK(sl_weights_open_dir(&ws, dir, &ctx), &ctx);
    CHECK(ws.n_files == 2, "two shards");
    CHECK_OK(sl_weights_load(&ws, "q.weight", 2, s, got, &ctx), &ctx);
    CHECK(got[0] == 9, "shard 2 value");
    sl_weights_close(&ws);
}

static void test_shared_models(void) {
    char p[4096];
    snprintf(p, sizeof p, "%s/golden/tiny-sd1", sl_test_shared());
    CHECK(sl_model_layout(p) == SL_LAYOUT_DIFFUSERS, "tiny-sd1 is a diffusers folder");
    snprintf(p, sizeof p, "%s/golden/tiny-sd1/unet", sl_test_shared());
    CHECK(sl_model_layout(p) == SL_LAYOUT_COMPONENT, "unet is a component");
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlWeights w;
    CHECK_OK(sl_weights_open_dir(&w, p, &ctx), &ctx);
    CHECK(w.n_files == 1 && w.files[0].n > 50, "tiny unet tensors: %d", w.n_files ? w.files[0].n : 0);
    sl_weights_close(&w);
    snprintf(p, sizeof p, "%s/golden/tiny-sd1/expected.safetensors", sl_test_shared());
    SlStFile f;
    CHECK_OK(sl_st_open(&f, p, &ctx), &ctx);
    CHECK(sl_st_find(&f, "unet.out") != NULL, "golden has unet.out");
    sl_st_close(&f);
}

/* An empty tensor whose other dimensions alone overflow an int64 product (the fuzzer's
 * find): it opens, counts 0 elements and reads as nothing; sl_shape_numel multiplied
 * the huge dimensions first (signed overflow, UBSan in the sanitizer pass). */
static void test_zero_dim_beside_huge(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    static const char hdr[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[294967296,42949672969,0,3],\"data_offsets\":[0,0]}}";
    uint8_t buf[8 + sizeof hdr];
    const uint64_t n = sizeof hdr - 1;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, hdr, n);
    SlStFile f;
    CHECK(sl_st_open_buffer(&f, buf, 8 + (size_t)n, "zero_dim.safetensors", &ctx) == SL_OK, "zero-dim tensor: %s", ctx.msg);
    if (sl_test_failures) return;
    const SlStEntry *e = sl_st_find(&f, "a");
    CHECK(e && sl_shape_numel(e->ndim, e->shape) == 0, "zero-dim tensor: element count not 0");
    float one = 0;
    CHECK(e && sl_st_read_f32(&f, e, &one, &ctx) == SL_OK, "reading an empty tensor: %s", ctx.msg);
    sl_st_close(&f);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/tmp_test_safetensors", sl_test_binary());
    mkdir(g_dir, 0755);
    test_round_trip();
    test_write_special();
    test_half_exhaustive();
    test_bad_files();
    test_config();
    test_weights();
    test_shared_models();
    test_zero_dim_beside_huge();
    return sl_test_finish("test_safetensors");
}
