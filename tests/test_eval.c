/* test_eval.c - pipeline/eval.h: the scene-caption parser, the shape/colour
 * detector and the style distance, on committed images:
 *   tests/data/eval/NNN.{png,txt}   48 plain renders (tests/reference/gen_eval_fixtures.py)
 *   tests/data/shapes64_styles/{outline,hatch,neon}/NNN.{png,txt}   32 each (tools/shapes/gen_styles.py)
 *
 * Bounds, and why:
 *   - detector on plain renders: main object's colour AND shape right on
 *     >= 90% (measured 47/48 here and 98.3% on 300 other plain scenes; the
 *     issue asks for >= 80%);
 *   - detector on the style sets: regression floors ~10 points under the
 *     measured figures (outline 0.812, hatch 0.812, neon 0.719 on these sets;
 *     0.680 / 0.673 / 0.663 on 300 other scenes per style).
 *     The losses are mostly grey objects whose lightness the style changes
 *     (outline's black fills are grey, hatch's white stripes are grey) and
 *     small neon rings whose glow fills the hole;
 *   - style distance: two disjoint halves of a set are at least 1.5x closer
 *     than the set is to any other set (measured margins 2.5x to 8x).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/image.h"
#include "pipeline/eval.h"
#include "test_util.h"

enum { MAX_SET = 64 };

typedef struct Set {
    int n;
    SlImage img[MAX_SET];
    char cap[MAX_SET][512];
} Set;

static int load_set(Set *s, const char *dir, int max) {
    memset(s, 0, sizeof *s);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlImageReadOpts o = sl_image_read_opts_default();
    o.channels = 3;
    for (int i = 0; i < max && i < MAX_SET; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%03d.png", dir, i);
        if (sl_image_read(&s->img[i], p, &o, &ctx) != SL_OK) break;
        snprintf(p, sizeof p, "%s/%03d.txt", dir, i);
        FILE *f = fopen(p, "r");
        s->cap[i][0] = 0;
        if (f) {
            if (!fgets(s->cap[i], sizeof s->cap[i], f)) s->cap[i][0] = 0;
            fclose(f);
        }
        s->n++;
    }
    return s->n;
}

static void free_set(Set *s) {
    for (int i = 0; i < s->n; i++) sl_image_free(&s->img[i]);
}

/* ------------------------------------------------------------ captions */
static void test_captions(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlSceneCaption c;
    /* single, with a place */
    CHECK_OK(sl_eval_parse_caption(&c, "a large red circle on the left on a yellow background", &ctx), &ctx);
    CHECK(c.kind == 0 && c.n_groups == 1 && c.g[0].count == 1 && c.g[0].size == 2 && c.g[0].colour == 0 &&
              c.g[0].shape == SL_SHAPE_CIRCLE && c.bg == 3,
          "single: kind %d groups %d count %d size %d colour %d shape %d bg %d", c.kind, c.n_groups, c.g[0].count,
          c.g[0].size, c.g[0].colour, c.g[0].shape, c.bg);
    /* single without a place, trigger word, "an orange", trailing newline */
    CHECK_OK(sl_eval_parse_caption(&c, "olnstyle, a small pink ring on an orange background\n", &ctx), &ctx);
    CHECK(c.kind == 0 && c.g[0].colour == 8 && c.g[0].shape == SL_SHAPE_RING && c.bg == 4, "trigger: %d %d %d", c.kind,
          c.g[0].colour, c.bg);
    /* group */
    CHECK_OK(sl_eval_parse_caption(&c, "three small green stars in the center on a blue background", &ctx), &ctx);
    CHECK(c.kind == 1 && c.g[0].count == 3 && c.g[0].shape == SL_SHAPE_STAR && c.g[0].colour == 1 && c.bg == 2,
          "group: kind %d count %d shape %d", c.kind, c.g[0].count, c.g[0].shape);
    CHECK_OK(sl_eval_parse_caption(&c, "two medium white crosses at the bottom on a gray background", &ctx), &ctx);
    CHECK(c.kind == 1 && c.g[0].count == 2 && c.g[0].shape == SL_SHAPE_CROSS && c.g[0].colour == 6 && c.bg == 9,
          "group 2: kind %d count %d shape %d", c.kind, c.g[0].count, c.g[0].shape);
    /* pairs, every relation */
    static const char *pairs[] = {
        "two small red circles above a medium blue square on a yellow background",
        "a small black triangle below a large gray star on a white background",
        "a medium purple cross to the left of two small orange rings on a pink background",
        "two small yellow squares to the right of a large green circle on a black background",
    };
    for (int i = 0; i < 4; i++) {
        CHECK_OK(sl_eval_parse_caption(&c, pairs[i], &ctx), &ctx);
        CHECK(c.kind == 2 && c.n_groups == 2, "pair %d: kind %d groups %d", i, c.kind, c.n_groups);
    }
    CHECK_OK(sl_eval_parse_caption(&c, pairs[2], &ctx), &ctx);
    CHECK(c.g[0].shape == SL_SHAPE_CROSS && c.g[0].colour == 5 && c.g[1].count == 2 && c.g[1].shape == SL_SHAPE_RING &&
              c.g[1].colour == 4 && c.bg == 8,
          "pair fields: %d %d %d %d %d %d", c.g[0].shape, c.g[0].colour, c.g[1].count, c.g[1].shape, c.g[1].colour, c.bg);
    /* errors name the word */
    static const char *bad[] = {
        "a large red blob on a yellow background",          /* unknown shape */
        "two large red circle on a yellow background",      /* plural needed */
        "a large red circle",                               /* no background */
        "a large red circle on a yellow background please", /* trailing word */
        "a huge red circle on a yellow background",         /* unknown size */
        "a cat sitting on a mat",
        "",
    };
    for (int i = 0; i < 7; i++) {
        sl_ctx_clear(&ctx);
        SlStatus st = sl_eval_parse_caption(&c, bad[i], &ctx);
        CHECK(st == SL_ERR_FORMAT && ctx.msg[0], "bad caption %d \"%s\" -> %s", i, bad[i], sl_status_name(st));
    }
    sl_ctx_clear(&ctx);
    sl_eval_parse_caption(&c, "a large red blob on a yellow background", &ctx);
    CHECK(strstr(ctx.msg, "blob") != NULL, "message names the word: %s", ctx.msg);
}

/* ------------------------------------------------------------ detector */
/* A 64x64 image: background bg, one shape of colour fg (coverage by 4x4 supersampling). */
static void draw(SlImage *img, int shape, const uint8_t bg[3], const uint8_t fg[3], float cx, float cy, float r) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    sl_image_alloc(img, 64, 64, 3, &ctx);
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) {
            int in = 0;
            for (int sy = 0; sy < 4; sy++)
                for (int sx = 0; sx < 4; sx++) {
                    float u = x + (sx + 0.5f) / 4 - cx, v = y + (sy + 0.5f) / 4 - cy, d = sqrtf(u * u + v * v);
                    int hit = 0;
                    if (shape == SL_SHAPE_CIRCLE) hit = d <= r;
                    else if (shape == SL_SHAPE_RING) hit = d <= r && d >= 0.55f * r;
                    else if (shape == SL_SHAPE_SQUARE) hit = fabsf(u) <= 0.88f * r && fabsf(v) <= 0.88f * r;
                    else if (shape == SL_SHAPE_CROSS)
                        hit = (fabsf(u) <= 0.36f * r && fabsf(v) <= r) || (fabsf(v) <= 0.36f * r && fabsf(u) <= r);
                    else if (shape == SL_SHAPE_TRIANGLE) /* apex up: (0,-1.05r), base at +0.8r, half-width 1.05r */
                        hit = v <= 0.8f * r && v >= -1.05f * r && fabsf(u) <= 1.05f * r * (v + 1.05f * r) / (1.85f * r);
                    in += hit;
                }
            for (int c = 0; c < 3; c++)
                img->data[(y * 64 + x) * 3 + c] = (uint8_t)lroundf((fg[c] * in + bg[c] * (16 - in)) / 16.0f);
        }
}

static void test_detector_synthetic(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    uint8_t yellow[3], red[3], blue[3];
    sl_eval_colour_rgb(3, yellow);
    sl_eval_colour_rgb(0, red);
    sl_eval_colour_rgb(2, blue);
    const int shapes[] = {SL_SHAPE_CIRCLE, SL_SHAPE_RING, SL_SHAPE_SQUARE, SL_SHAPE_CROSS, SL_SHAPE_TRIANGLE};
    for (int k = 0; k < 5; k++) {
        SlImage img = {0};
        draw(&img, shapes[k], yellow, k % 2 ? blue : red, 30.5f, 33.0f, 14.0f);
        SlDetection d;
        CHECK_OK(sl_eval_detect(&d, &img, &ctx), &ctx);
        CHECK(d.n == 1 && d.obj[0].shape == shapes[k] && d.obj[0].colour == (k % 2 ? 2 : 0) && d.bg_colour == 3,
              "synthetic %s: %d objects, first %s %s, bg %s", sl_eval_shape_name(shapes[k]), d.n,
              d.n ? sl_eval_colour_name(d.obj[0].colour) : "-", d.n ? sl_eval_shape_name(d.obj[0].shape) : "-",
              sl_eval_colour_name(d.bg_colour));
        /* fidelity: both / one / none */
        char cap[256];
        SlSceneCaption c;
        SlFidelity f;
        snprintf(cap, sizeof cap, "a large %s %s on a yellow background", k % 2 ? "blue" : "red", sl_eval_shape_name(shapes[k]));
        CHECK_OK(sl_eval_parse_caption(&c, cap, &ctx), &ctx);
        sl_eval_fidelity(&f, &d, &c);
        CHECK(f.score == 1.0f && f.count_ok && isnan(f.score_second), "fidelity both %s: %g", cap, f.score);
        snprintf(cap, sizeof cap, "a large green %s on a yellow background", sl_eval_shape_name(shapes[k]));
        sl_eval_parse_caption(&c, cap, &ctx);
        sl_eval_fidelity(&f, &d, &c);
        CHECK(f.score == 0.5f && !f.colour_ok && f.shape_ok, "fidelity shape only %s: %g", cap, f.score);
        snprintf(cap, sizeof cap, "two small green stars on a yellow background");
        sl_eval_parse_caption(&c, cap, &ctx);
        sl_eval_fidelity(&f, &d, &c);
        CHECK(f.score == 0.0f && !f.count_ok, "fidelity none %s: %g", cap, f.score);
        sl_image_free(&img);
    }
    /* odd sizes, noise, lines on the edges: no failure, no out-of-range access (ASan) */
    {
        SlImage z = {0};
        CHECK_OK(sl_image_alloc(&z, 37, 23, 4, &ctx), &ctx);
        uint32_t h = 12345;
        for (int i = 0; i < 37 * 23 * 4; i++) { h = h * 1664525u + 1013904223u; z.data[i] = (uint8_t)(h >> 24); }
        SlDetection dz;
        CHECK_OK(sl_eval_detect(&dz, &z, &ctx), &ctx);
        memset(z.data, 200, 37 * 23 * 4);
        for (int y = 0; y < 23; y++) memset(z.data + (y * 37 + 36) * 4, 0, 4);  /* right column */
        for (int x = 0; x < 37; x++) memset(z.data + (22 * 37 + x) * 4, 0, 4);  /* bottom row */
        CHECK_OK(sl_eval_detect(&dz, &z, &ctx), &ctx);
        sl_image_free(&z);
        CHECK_OK(sl_image_alloc(&z, 8, 8, 3, &ctx), &ctx);
        memset(z.data, 0, 8 * 8 * 3);
        CHECK(sl_eval_detect(&dz, &z, &ctx) == SL_ERR_ARG, "8x8 refused");
        sl_image_free(&z);
    }
    /* an empty image: no objects, no failure */
    SlImage img = {0};
    draw(&img, SL_SHAPE_CIRCLE, yellow, yellow, 32, 32, 10);
    SlDetection d;
    CHECK_OK(sl_eval_detect(&d, &img, &ctx), &ctx);
    CHECK(d.n == 0, "plain background: %d objects", d.n);
    sl_image_free(&img);
}

/* Fraction of set images whose main object's colour AND shape are found. */
static double detector_accuracy(const Set *s, const char *name, int *skipped) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    int ok = 0, n = 0;
    double fid = 0;
    *skipped = 0;
    for (int i = 0; i < s->n; i++) {
        SlSceneCaption c;
        if (sl_eval_parse_caption(&c, s->cap[i], &ctx) != SL_OK) { (*skipped)++; continue; }
        SlDetection d;
        CHECK_OK(sl_eval_detect(&d, &s->img[i], &ctx), &ctx);
        SlFidelity f;
        sl_eval_fidelity(&f, &d, &c);
        ok += f.both_ok;
        fid += f.score;
        n++;
    }
    printf("detector on %-8s %2d/%2d main objects right (%.3f), mean fidelity %.3f\n", name, ok, n, n ? (double)ok / n : 0.0,
           n ? fid / n : 0.0);
    return n ? (double)ok / n : 0.0;
}

/* ------------------------------------------------------------ style distance */
static double dist(const SlStyleStats *a, const SlStyleStats *b) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStyleDistance d;
    CHECK_OK(sl_style_distance(&d, a, b, &ctx), &ctx);
    CHECK(isfinite(d.total) && d.total >= 0, "distance %g", d.total);
    return d.total;
}

int main(void) {
    test_captions();
    test_detector_synthetic();

    static Set sets[4];
    static const char *names[4] = {"plain", "outline", "hatch", "neon"};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/data/eval", sl_test_source());
    CHECK(load_set(&sets[0], dir, 48) == 48, "%s: 48 plain fixtures", dir);
    for (int s = 1; s < 4; s++) {
        snprintf(dir, sizeof dir, "%s/tests/data/shapes64_styles/%s", sl_test_source(), names[s]);
        CHECK(load_set(&sets[s], dir, 32) == 32, "%s: 32 images", dir);
    }
    static const double floor_acc[4] = {0.90, 0.70, 0.70, 0.60};
    for (int s = 0; s < 4; s++) {
        int skipped;
        double acc = detector_accuracy(&sets[s], names[s], &skipped);
        CHECK(acc >= floor_acc[s], "detector accuracy on %s %.3f < %.2f", names[s], acc, floor_acc[s]);
        CHECK(skipped == 0, "%s: %d captions did not parse", names[s], skipped);
    }
    /* an unparseable caption is skipped and counted, not fatal */
    {
        Set one;
        memset(&one, 0, sizeof one);
        one.n = 1;
        one.img[0] = sets[0].img[0];
        snprintf(one.cap[0], sizeof one.cap[0], "a photo of a dog");
        int skipped;
        detector_accuracy(&one, "bad-cap", &skipped);
        CHECK(skipped == 1, "unparseable caption skipped: %d", skipped);
    }

    /* style distance matrix: diagonal = two disjoint halves (even / odd images) */
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStyleNet net, net2;
    CHECK_OK(sl_style_net_init(&net, 1234, &ctx), &ctx);
    CHECK_OK(sl_style_net_init(&net2, 1234, &ctx), &ctx);
    CHECK(memcmp(net.w[2], net2.w[2], 32 * 32 * 9 * sizeof(float)) == 0, "style net is a function of the seed");
    sl_style_net_free(&net2);
    static SlStyleStats all[4], half[4][2];
    for (int s = 0; s < 4; s++) {
        sl_style_stats_init(&all[s]);
        sl_style_stats_init(&half[s][0]);
        sl_style_stats_init(&half[s][1]);
        for (int i = 0; i < sets[s].n; i++) {
            CHECK_OK(sl_style_stats_add(&all[s], &net, &sets[s].img[i], &ctx), &ctx);
            CHECK_OK(sl_style_stats_add(&half[s][i & 1], &net, &sets[s].img[i], &ctx), &ctx);
        }
    }
    double m[4][4];
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) m[a][b] = a == b ? dist(&half[a][0], &half[a][1]) : dist(&all[a], &all[b]);
    printf("style distance (diagonal: halves of the set)\n%8s", "");
    for (int b = 0; b < 4; b++) printf(" %8s", names[b]);
    printf("\n");
    for (int a = 0; a < 4; a++) {
        printf("%8s", names[a]);
        for (int b = 0; b < 4; b++) printf(" %8.3f", m[a][b]);
        printf("\n");
    }
    for (int a = 0; a < 4; a++) {
        CHECK(fabs(dist(&all[a], &all[a])) < 1e-12, "%s: distance to itself %g", names[a], dist(&all[a], &all[a]));
        for (int b = 0; b < 4; b++) {
            if (a == b) continue;
            CHECK(fabs(m[a][b] - m[b][a]) < 1e-12, "symmetric %s/%s", names[a], names[b]);
            /* (a) halves close, (b) plain far from every style, (c) styles far apart */
            double floor = 1.5 * fmax(m[a][a], m[b][b]);
            CHECK(m[a][b] > floor, "%s vs %s: %.3f not above 1.5 x the halves' %.3f", names[a], names[b], m[a][b], floor / 1.5);
        }
    }
    /* the figure depends on the images, not on their order or on which copy */
    SlStyleStats again;
    sl_style_stats_init(&again);
    for (int i = sets[1].n - 1; i >= 0; i--) CHECK_OK(sl_style_stats_add(&again, &net, &sets[1].img[i], &ctx), &ctx);
    CHECK(dist(&again, &all[1]) < 1e-9, "order-free: %g", dist(&again, &all[1]));
    SlStyleStats empty;
    sl_style_stats_init(&empty);
    SlStyleDistance d;
    CHECK(sl_style_distance(&d, &empty, &all[0], &ctx) == SL_ERR_ARG, "empty set refused");

    sl_style_net_free(&net);
    for (int s = 0; s < 4; s++) free_set(&sets[s]);
    return sl_test_finish("test_eval");
}
