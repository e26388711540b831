/* test_judge.c - pipeline/judge.h against PyTorch, and its refusals.
 *
 * Fixtures (tests/reference/judge_ref.py, tools/emoji/judge.py's own Judge and export):
 *   tests/data/judge_tiny/                  a judge with channels [8,16,16,32], 4 groups, E 16, N 12 (F16)
 *   tests/data/judge_tiny_golden.safetensors images U8 [4,64,64,3], embed [4,16], scores [4,12], top5 I64 [4,5]
 *   tests/data/judge_tiny_images/NNN.png    the same images as PNG (with captions, for cli_judge.sh)
 * The golden values are a float64 forward of the stored F16 weights; the C judge runs fp32.
 *
 * Tolerances, and why:
 *   EMBED_TOL  1e-4 x max|embed| on the embeddings: fp32 through seven conv + GroupNorm
 *              layers; PyTorch's own fp32 forward is 4e-5 x max from the float64 one here
 *              (judge_ref.py prints it: the fixture's projection cancels the features'
 *              shared direction, which amplifies rounding), the C judge measured below it.
 *   SCORE_TOL  1e-4 absolute on the cosines (in [-1, 1]); every row's scores are >= 2e-4
 *              apart (judge_ref.py checks), so the top 5 must match exactly.
 * Also: the same bits for 1 and 4 threads and for one image or four in a call; a 128x128
 * image (each pixel of image 0 doubled) is area-resized to image 0 exactly; prompt ->
 * class cases; each bad folder fails naming the file at fault.
 */
#include <errno.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "core/image.h"
#include "core/safetensors.h"
#include "pipeline/judge.h"
#include "test_util.h"

#define EMBED_TOL 1e-4
#define SCORE_TOL 1e-4
enum { B = 4, S = 64, K = 5 };

static char g_src[2048], g_tmp[2048];

/* ------------------------------------------------------------ golden numbers */

static void test_golden(SlJudge *j, const SlStFile *g) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const SlJudgeConfig *c = sl_judge_config(j);
    const int E = c->embed_dim, N = c->num_classes;
    CHECK(E == 16 && N == 12 && c->channels[3] == 32 && c->groups == 4 && c->image_size == S,
          "config E %d N %d C3 %d G %d S %d", E, N, c->channels[3], c->groups, c->image_size);
    const SlStEntry *ei = sl_st_find(g, "images");
    CHECK(ei && ei->dtype == SL_U8 && ei->shape[0] == B && ei->shape[1] == S && ei->shape[3] == 3, "golden images");
    if (!ei) return;
    const uint8_t *px = sl_st_data(g, ei);
    SlImage img[B];
    for (int i = 0; i < B; i++) img[i] = (SlImage){S, S, 3, (uint8_t *)px + (size_t)i * S * S * 3, 0, NULL};
    float emb[B * 16], ref_e[B * 16], scores[B * 12], ref_s[B * 12];
    int top[B * K];
    int64_t ref_top[B * K];
    const int64_t se[2] = {B, E}, ss[2] = {B, N};
    CHECK_OK(sl_st_load_f32(g, "embed", 2, se, ref_e, &ctx), &ctx);
    CHECK_OK(sl_st_load_f32(g, "scores", 2, ss, ref_s, &ctx), &ctx);
    const SlStEntry *et = sl_st_find(g, "top5");
    CHECK(et && et->ndim == 2 && et->shape[0] == B && et->shape[1] == K, "golden top5");
    if (!et) return;
    CHECK_OK(sl_st_read_i64(g, et, ref_top, &ctx), &ctx);

    CHECK_OK(sl_judge_embed(j, img, B, emb, &ctx), &ctx);
    const double scale = sl_test_scale(ref_e, (size_t)B * E);
    double worst = 0;
    for (int i = 0; i < B * E; i++) worst = fmax(worst, fabs(emb[i] - ref_e[i]));
    printf("     embeddings: max abs err %.3g = %.3g x max|embed| (tolerance %g)\n", worst, worst / scale, EMBED_TOL);
    sl_test_close("embeddings vs PyTorch", emb, ref_e, (size_t)B * E, EMBED_TOL * scale, 0);
    CHECK_OK(sl_judge_rank(j, emb, B, scores, K, top, &ctx), &ctx);
    sl_test_close("scores vs PyTorch", scores, ref_s, (size_t)B * N, SCORE_TOL, 0);
    for (int i = 0; i < B; i++)
        for (int r = 0; r < K; r++) {
            CHECK(top[i * K + r] == ref_top[i * K + r], "image %d top %d: C %d, PyTorch %d", i, r, top[i * K + r],
                  (int)ref_top[i * K + r]);
            CHECK(sl_judge_class_place(j, &scores[i * N], top[i * K + r]) == r, "image %d: place of top %d", i, r);
        }
    CHECK(sl_judge_rank(j, emb, 1, scores, N + 1, top, &ctx) == SL_ERR_ARG, "top %d of %d refused", N + 1, N);
    CHECK(sl_judge_rank(j, emb, 1, scores, 0, top, &ctx) == SL_ERR_ARG, "top 0 refused");

    /* the same bits: 1 vs 4 threads, alone vs in a batch */
    float e1[B * 16], e4[B * 16], alone[16];
    const int th = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK_OK(sl_judge_embed(j, img, B, e1, &ctx), &ctx);
    omp_set_num_threads(4);
    CHECK_OK(sl_judge_embed(j, img, B, e4, &ctx), &ctx);
    omp_set_num_threads(th);
    CHECK(!memcmp(e1, e4, sizeof e1) && !memcmp(e1, emb, sizeof e1), "embeddings differ between thread counts");
    CHECK_OK(sl_judge_embed(j, &img[2], 1, alone, &ctx), &ctx);
    CHECK(!memcmp(alone, &emb[2 * E], (size_t)E * sizeof(float)), "image 2 alone differs from image 2 in a batch");

    /* a 128x128 image of 2x2 blocks area-resizes back to image 0 exactly */
    SlImage big = {0};
    CHECK_OK(sl_image_alloc(&big, 2 * S, 2 * S, 3, &ctx), &ctx);
    for (int y = 0; big.data && y < 2 * S; y++)
        for (int x = 0; x < 2 * S; x++) memcpy(big.data + ((size_t)y * 2 * S + x) * 3, px + ((size_t)(y / 2) * S + x / 2) * 3, 3);
    CHECK_OK(sl_judge_embed(j, &big, 1, alone, &ctx), &ctx);
    CHECK(!memcmp(alone, emb, (size_t)E * sizeof(float)), "128x128 image: not resized to image 0");
    sl_image_free(&big);

    /* RGBA, and an image without pixels, are refused */
    SlImage rgba = {S, S, 4, (uint8_t *)px, 0, NULL}, empty = {0};
    CHECK(sl_judge_embed(j, &rgba, 1, alone, &ctx) == SL_ERR_ARG && strstr(ctx.msg, "image 0"), "RGBA: %s", ctx.msg);
    CHECK(sl_judge_embed(j, &empty, 1, alone, &ctx) == SL_ERR_ARG, "empty image accepted");

    /* the PNG copies for the CLI test hold the same pixels */
    SlImageReadOpts o = sl_image_read_opts_default();
    o.channels = 3;
    for (int i = 0; i < B; i++) {
        char p[2300];
        SlImage im = {0};
        snprintf(p, sizeof p, "%s/tests/data/judge_tiny_images/%03d.png", g_src, i);
        CHECK_OK(sl_image_read(&im, p, &o, &ctx), &ctx);
        CHECK(im.data && im.w == S && im.h == S && !memcmp(im.data, img[i].data, (size_t)S * S * 3), "%s differs", p);
        sl_image_free(&im);
    }
}

/* ------------------------------------------------------------ prompts */

static void test_find_class(const SlJudge *j) {
    static const struct { const char *prompt, *caption; } cases[] = {
        {"a red apple, food", "a red apple, food"},
        {"  A Red Apple, FOOD \n", "a red apple, food"},
        {"nenmoji, a red apple, food", "a red apple, food"},
        {"nenmoji,  a red apple, food", "a red apple, food"},      /* spaces after the dropped ", " */
        {"x, y, a grinning face", "a grinning face"},
        {"tstmoji, a pizza, food", "a pizza, food"},
        {"an electric light bulb", "an electric light bulb"},
        {"a red apple", NULL},                                      /* only part of a caption */
        {"nenmoji,a red apple, food", NULL},                        /* no ", " before the caption: "food" is next */
        {"a grinning face,", NULL},
        {"a photo of a dog", NULL},
        {"", NULL},
        {" , ", NULL},
        {"a grinning face, medium skin tone", "a grinning face"},   /* skin-tone variations: the base emoji */
        {"nenmoji, a rocket, travel, light skin tone, dark skin tone\n", "a rocket, travel"},
        {"a grinning face, purple skin tone", NULL},
        {", dark skin tone", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const int c = sl_judge_find_class(j, cases[i].prompt);
        const char *got = c >= 0 ? sl_judge_class_caption(j, c) : NULL;
        CHECK(cases[i].caption ? got && !strcmp(got, cases[i].caption) : c == -1, "'%s' -> %d '%s', want '%s'",
              cases[i].prompt, c, got ? got : "", cases[i].caption ? cases[i].caption : "(none)");
    }
    const int apple = sl_judge_find_class(j, "a red apple, food");
    CHECK(apple == 0 && !strcmp(sl_judge_class_unified(j, apple), "1F34E"), "class 0 is 1F34E");
}

/* ------------------------------------------------------------ bad folders */

static int copy_file(const char *from, const char *to, size_t keep) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char *buf = NULL;
    size_t n = 0;
    if (sl_read_file(from, (size_t)1 << 26, &buf, &n, &ctx) != SL_OK) return -1;
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(buf, 1, keep < n ? keep : n, f) == (keep < n ? keep : n);
    if (f) ok &= fclose(f) == 0;
    free(buf);
    return ok ? 0 : -1;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) { fputs(text, f); fclose(f); }
}

/* path = the fixture's classes.tsv with line `line` (1-based) replaced by text. */
static void tsv_with_line(const char *path, int line, const char *text) {
    char p[2400], out[4096] = "";
    snprintf(p, sizeof p, "%s/tests/data/judge_tiny/classes.tsv", g_src);
    FILE *f = fopen(p, "r");
    char buf[512];
    for (int i = 1; f && fgets(buf, sizeof buf, f); i++) {
        if (i == line) snprintf(buf, sizeof buf, "%s\n", text);
        strncat(out, buf, sizeof out - strlen(out) - 1);
    }
    if (f) fclose(f);
    write_text(path, out);
}

/* A fresh copy of the tiny judge as tmp/<name>/; returns its path in dir. */
static void fresh_copy(char *dir, size_t n, const char *name) {
    snprintf(dir, n, "%s/%s", g_tmp, name);
    mkdir(dir, 0755);
    static const char *const files[3] = {"config.json", "model.safetensors", "classes.tsv"};
    for (int i = 0; i < 3; i++) {
        char a[2400], b[2400];
        snprintf(a, sizeof a, "%s/tests/data/judge_tiny/%s", g_src, files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        CHECK(copy_file(a, b, (size_t)-1) == 0, "cannot copy %s", a);
    }
}

/* Loading dir must fail with status want and a message holding `file` and `also`. */
static void expect_refused(const char *dir, SlStatus want, const char *file, const char *also) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlJudge *j = (SlJudge *)1;
    const SlStatus st = sl_judge_load(&j, dir, &ctx);
    CHECK(st == want && j == NULL && strstr(ctx.msg, file) && (!also || strstr(ctx.msg, also)),
          "%s: got %s '%s', want %s naming %s%s%s", dir, sl_status_name(st), ctx.msg, sl_status_name(want), file,
          also ? " and " : "", also ? also : "");
    if (st == want) printf("ok   refused %s: %s\n", strrchr(dir, '/') + 1, ctx.msg);
    if (st == SL_OK) sl_judge_free(j);
}

static void test_bad_folders(void) {
    char d[2200], p[2400];
    /* truncated weights */
    fresh_copy(d, sizeof d, "truncated");
    snprintf(p, sizeof p, "%s/tests/data/judge_tiny/model.safetensors", g_src);
    char q[2400];
    snprintf(q, sizeof q, "%s/model.safetensors", d);
    copy_file(p, q, 30000);
    expect_refused(d, SL_ERR_FORMAT, "model.safetensors", NULL);
    /* no weights */
    fresh_copy(d, sizeof d, "no_weights");
    snprintf(q, sizeof q, "%s/model.safetensors", d);
    remove(q);
    expect_refused(d, SL_ERR_IO, "model.safetensors", NULL);
    /* no classes.tsv */
    fresh_copy(d, sizeof d, "no_classes");
    snprintf(q, sizeof q, "%s/classes.tsv", d);
    remove(q);
    expect_refused(d, SL_ERR_IO, "classes.tsv", NULL);
    /* eleven classes in classes.tsv, twelve in the config */
    fresh_copy(d, sizeof d, "count_tsv");
    snprintf(q, sizeof q, "%s/classes.tsv", d);
    snprintf(p, sizeof p, "%s/tests/data/judge_tiny/classes.tsv", g_src);
    {
        SlCtx ctx;
        sl_ctx_init(&ctx);
        char *t = NULL;
        size_t n = 0;
        CHECK_OK(sl_read_file(p, 1 << 20, &t, &n, &ctx), &ctx);
        if (t) {
            char *last = strrchr(t, '\n');
            *last = 0;
            last = strrchr(t, '\n');
            last[1] = 0;
            write_text(q, t);
            free(t);
        }
    }
    expect_refused(d, SL_ERR_FORMAT, "classes.tsv", "num_classes");
    /* thirteen classes in the config: the weights' `classes` is [12,16] */
    fresh_copy(d, sizeof d, "count_config");
    snprintf(q, sizeof q, "%s/config.json", d);
    write_text(q, "{\"_class_name\": \"StyloraEmojiJudge\", \"channels\": [8, 16, 16, 32], \"norm_num_groups\": 4,"
                  " \"embed_dim\": 16, \"num_classes\": 13}\n");
    expect_refused(d, SL_ERR_SHAPE, "model.safetensors", "classes");
    /* a config with three channel entries, one without embed_dim, none at all */
    fresh_copy(d, sizeof d, "config_channels");
    snprintf(q, sizeof q, "%s/config.json", d);
    write_text(q, "{\"channels\": [8, 16, 32], \"norm_num_groups\": 4, \"embed_dim\": 16, \"num_classes\": 12}\n");
    expect_refused(d, SL_ERR_FORMAT, "config.json", "channels");
    write_text(q, "{\"channels\": [8, 16, 16, 32], \"norm_num_groups\": 4, \"num_classes\": 12}\n");
    expect_refused(d, SL_ERR_MISSING, "config.json", "embed_dim");
    write_text(q, "{\"channels\": [8, 16, 16, 32], \"norm_num_groups\": 3, \"embed_dim\": 16, \"num_classes\": 12}\n");
    expect_refused(d, SL_ERR_FORMAT, "config.json", "norm_num_groups");
    remove(q);
    expect_refused(d, SL_ERR_IO, "config.json", NULL);
    /* malformed lines and a duplicated caption */
    fresh_copy(d, sizeof d, "bad_line");
    snprintf(q, sizeof q, "%s/classes.tsv", d);
    tsv_with_line(q, 3, "1F680 a rocket, travel");
    expect_refused(d, SL_ERR_FORMAT, "classes.tsv", "line 3");
    tsv_with_line(q, 2, "1F600\t ");
    expect_refused(d, SL_ERR_FORMAT, "classes.tsv", "line 2");
    tsv_with_line(q, 5, "\t");
    expect_refused(d, SL_ERR_FORMAT, "classes.tsv", "line 5");
    tsv_with_line(q, 7, "1F355\ta pizza\tfood");
    expect_refused(d, SL_ERR_FORMAT, "classes.tsv", "line 7");
    tsv_with_line(q, 12, "1F422\tA Red Apple, Food");
    expect_refused(d, SL_ERR_FORMAT, "classes.tsv", "lines 1 and 12");
    /* a NaN in one weight */
    fresh_copy(d, sizeof d, "nan_weight");
    snprintf(q, sizeof q, "%s/model.safetensors", d);
    {
        SlCtx ctx;
        sl_ctx_init(&ctx);
        SlStFile f;
        size_t at = 0;
        if (sl_st_open(&f, q, &ctx) == SL_OK) {
            const SlStEntry *e = sl_st_find(&f, "blocks.1.conv2.weight");
            CHECK(e && e->dtype == SL_F16, "fixture weights are F16");
            if (e) at = f.data_start + e->offset + 2 * 7;
            sl_st_close(&f);
        }
        FILE *fp = fopen(q, "r+b");
        const uint8_t nan16[2] = {0x00, 0x7e};
        CHECK(fp && at && fseek(fp, (long)at, SEEK_SET) == 0 && fwrite(nan16, 1, 2, fp) == 2, "cannot patch %s", q);
        if (fp) fclose(fp);
    }
    expect_refused(d, SL_ERR_NUMERIC, "model.safetensors", "blocks.1.conv2.weight");
    /* no folder */
    snprintf(d, sizeof d, "%s/nope", g_tmp);
    expect_refused(d, SL_ERR_MISSING, d, NULL);
}

int main(void) {
    snprintf(g_src, sizeof g_src, "%s", sl_test_source());
    snprintf(g_tmp, sizeof g_tmp, "%s/tmp_test_judge", sl_test_binary());
    if (mkdir(g_tmp, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s\n", g_tmp);
        return 1;
    }
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char dir[2300], gp[2300];
    snprintf(dir, sizeof dir, "%s/tests/data/judge_tiny", g_src);
    snprintf(gp, sizeof gp, "%s/tests/data/judge_tiny_golden.safetensors", g_src);
    SlJudge *j = NULL;
    SlStFile g;
    CHECK_OK(sl_judge_load(&j, dir, &ctx), &ctx);
    const SlStatus gst = sl_st_open(&g, gp, &ctx);
    CHECK_OK(gst, &ctx);
    if (j && gst == SL_OK) {
        test_golden(j, &g);
        test_find_class(j);
    }
    if (gst == SL_OK) sl_st_close(&g);
    sl_judge_free(j);
    test_bad_folders();
    return sl_test_finish("test_judge");
}
