/* test_styles_resize.c - LoRA resize and SVD merge (styles/resize.h) against PyTorch.
 *
 * tests/reference/resize_ref.py writes tests/data/resize_golden.safetensors (kohya's
 * resize_lora.py / svd_merge_lora.py maths in torch, float64). Deltas are compared, not
 * factors (singular vectors are sign-ambiguous); tolerances relative to max |ref|:
 *   - singular values of B A: RESIZE_SV_TOL;
 *   - resizing to the adapter's own rank changes the delta s B A by <= SAME_TOL;
 *   - the ranks chosen by sv_fro:0.9, sv_ratio:5, sv_cumulative:0.85 equal torch's exactly;
 *   - a fixed lower rank gives torch's best low-rank delta within LOWRANK_TOL (linear, conv);
 *   - merging two adapters at the full combined rank gives the weighted sum of scaled
 *     deltas within SAME_TOL (a module only in one adapter too), at rank 3 torch's within LOWRANK_TOL;
 * plus: a rank above min(O, K) (the dense SVD route) keeps the delta, rsLoRA keeps its scale, a DoRA magnitude is kept, two runs give the same bytes,
 * each left vector's largest entry is positive, and bad input is refused with its name.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "styles/adapter.h"
#include "styles/resize.h"
#include "test_util.h"

#define RESIZE_SV_TOL 1e-5
#define SAME_TOL 1e-5
#define LOWRANK_TOL 1e-4

static float *get(const SlStFile *f, const char *name, int64_t *numel, SlCtx *ctx) {
    const SlStEntry *e = sl_st_find(f, name);
    if (!e) {
        fprintf(stderr, "missing %s\n", name);
        exit(1);
    }
    int64_t n = sl_shape_numel(e->ndim, e->shape);
    float *p = malloc(sizeof(float) * (size_t)n);
    if (!p || sl_st_read_f32(f, e, p, ctx) != SL_OK) exit(1);
    if (numel) *numel = n;
    return p;
}

/* out [O, K] = s B A (in double, rounded once). */
static float *delta(const SlAdapter *ad, const SlLoraMod *lm) {
    const int64_t K = lm->I * lm->k * lm->k;
    const double s = sl_lora_scale(ad, lm);
    float *out = malloc(sizeof(float) * (size_t)(lm->O * K));
    for (int64_t o = 0; o < lm->O; o++)
        for (int64_t x = 0; x < K; x++) {
            double acc = 0;
            for (int64_t j = 0; j < lm->r; j++) acc += (double)lm->B[o * lm->r + j] * lm->A[j * K + x];
            out[o * K + x] = (float)(s * acc);
        }
    return out;
}

/* A two-site world: "unet.blk.to_q" (linear O x I) and "unet.blk.conv1" (conv Co x Ci x k). */
typedef struct World {
    SlLinear lin;
    SlConv2d conv;
    SlSites sites;
} World;

static void world_init(World *w, int64_t O, int64_t I, int64_t Co, int64_t Ci, int64_t k, SlCtx *ctx) {
    memset(w, 0, sizeof *w);
    w->lin.O = O;
    w->lin.I = I;
    w->conv.Co = Co;
    w->conv.Ci = Ci;
    w->conv.k = k;
    sl_sites_init(&w->sites);
    CHECK_OK(sl_sites_add(&w->sites, "unet.blk.to_q", &w->lin, NULL, 1, ctx), ctx);
    CHECK_OK(sl_sites_add(&w->sites, "unet.blk.conv1", NULL, &w->conv, 1, ctx), ctx);
}

/* An adapter on the targets with these ranks, its A/B/alpha copied in (NULL: left as created). */
static void make(SlAdapter *ad, const World *w, const char *targets, int64_t r, int64_t conv_r, SlCtx *ctx) {
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = targets;
    o.rank = r;
    o.conv_rank = conv_r;
    CHECK_OK(sl_adapter_create(ad, &w->sites, &o, ctx), ctx);
}

static void set_mod(SlLoraMod *lm, const float *A, const float *B, float alpha) {
    memcpy(lm->A, A, sizeof(float) * (size_t)(lm->r * lm->I * lm->k * lm->k));
    memcpy(lm->B, B, sizeof(float) * (size_t)(lm->O * lm->r));
    lm->alpha = alpha;
}

static SlLoraMod *mod(SlAdapter *ad, const char *name) {
    for (int i = 0; i < ad->n; i++)
        if (!strcmp(ad->mods[i].name, name)) return &ad->mods[i];
    return NULL;
}

/* The resize checks of one golden case on module `name` of a fresh adapter. */
static void resize_case(const SlStFile *g, const char *cs, const World *w, const char *name, SlCtx *ctx) {
    char key[64], what[128];
    const int conv = strstr(name, "conv") != NULL;
#define G(k) (snprintf(key, sizeof key, "%s.%s", cs, k), get(g, key, NULL, ctx))
    float *A = G("a"), *B = G("b"), *alpha = G("alpha"), *S = G("S"), *dR = G("delta_r"), *R = G("R");
    float *rf = G("rank_fro"), *rr = G("rank_ratio"), *rc = G("rank_cum");
    float *params = get(g, "params", NULL, ctx);
    int64_t r = 0;
    {
        const SlStEntry *e = sl_st_find(g, (snprintf(key, sizeof key, "%s.a", cs), key));
        r = e->shape[0];
    }
    SlAdapter ad, out;
    make(&ad, w, name, r, r, ctx);
    if (sl_test_failures) return;
    SlLoraMod *lm = &ad.mods[0];
    set_mod(lm, A, B, alpha[0]);
    const int64_t O = lm->O, K = lm->I * lm->k * lm->k, n = O < K ? O : K;
    float *d0 = delta(&ad, lm);
    const double sc = sl_test_scale(d0, (size_t)(O * K));

    /* singular values of the unscaled B A */
    double *D = calloc((size_t)(O * K), sizeof(double)), *U = malloc(sizeof(double) * (size_t)(O * n));
    double *Sd = malloc(sizeof(double) * (size_t)n), *Vt = malloc(sizeof(double) * (size_t)(n * K));
    for (int64_t o = 0; o < O; o++)
        for (int64_t j = 0; j < r; j++)
            for (int64_t x = 0; x < K; x++) D[o * K + x] += (double)B[o * r + j] * A[j * K + x];
    CHECK_OK(sl_svd(U, Sd, Vt, D, O, K, ctx), ctx);
    float *Sf = calloc((size_t)n, sizeof(float));
    for (int64_t j = 0; j < n; j++) Sf[j] = (float)Sd[j];
    snprintf(what, sizeof what, "%s: singular values of B A", cs);
    sl_test_close(what, Sf, S, (size_t)n, RESIZE_SV_TOL * S[0], 0);
    /* sign convention: the largest-magnitude entry of each left vector is positive */
    int signs_ok = 1;
    for (int64_t j = 0; j < n; j++) {
        int64_t best = 0;
        for (int64_t o = 1; o < O; o++)
            if (fabs(U[o * n + j]) > fabs(U[best * n + j])) best = o;
        signs_ok &= U[best * n + j] > 0;
    }
    CHECK(signs_ok, "%s: each left singular vector's largest entry is positive", cs);

    /* own rank: nothing changes */
    SlRankOpts ro = {.rank = r};
    CHECK_OK(sl_adapter_resize(&out, &ad, &ro, NULL, ctx), ctx);
    if (!sl_test_failures) {
        CHECK(out.mods[0].r == r, "%s: own rank kept (%lld)", cs, (long long)out.mods[0].r);
        float *d1 = delta(&out, &out.mods[0]);
        snprintf(what, sizeof what, "%s: resize to own rank %lld keeps s B A", cs, (long long)r);
        sl_test_close(what, d1, d0, (size_t)(O * K), SAME_TOL * sc, 0);
        free(d1);
        sl_adapter_free(&out);
    }
    /* a larger rank does not grow the module */
    ro.rank = r + 5;
    CHECK_OK(sl_adapter_resize(&out, &ad, &ro, NULL, ctx), ctx);
    if (!sl_test_failures) CHECK(out.mods[0].r == r, "%s: --rank %lld keeps rank %lld", cs, (long long)ro.rank, (long long)r);
    sl_adapter_free(&out);

    /* fixed lower rank: torch's best rank-R delta; alpha keeps the scale (kohya: scale * new_rank) */
    ro.rank = (int64_t)R[0];
    if (conv) {   /* the conv rank is its own option; the linear rank must not apply */
        ro.conv_rank = ro.rank;
        ro.rank = 1;
    }
    SlResizeStats stats;
    CHECK_OK(sl_adapter_resize(&out, &ad, &ro, &stats, ctx), ctx);
    if (!sl_test_failures) {
        const SlLoraMod *m = &out.mods[0];
        CHECK(m->r == (int64_t)R[0], "%s: fixed rank %g (got %lld)", cs, (double)R[0], (long long)m->r);
        CHECK(fabs(m->alpha - alpha[0] / r * m->r) <= 1e-6 * alpha[0], "%s: new alpha %g = scale * rank %g", cs,
              (double)m->alpha, (double)(alpha[0] / r * m->r));
        CHECK(m->conv == lm->conv && m->I == lm->I && m->O == lm->O && m->k == lm->k, "%s: kind and shapes kept", cs);
        CHECK(stats.old_rank_max == r && stats.new_rank_max == m->r && stats.fro_retained_mean < 1 &&
              stats.fro_retained_mean > 0.5, "%s: stats (old %lld, new %lld, fro retained %.4f)", cs,
              (long long)stats.old_rank_max, (long long)stats.new_rank_max, stats.fro_retained_mean);
        float *d1 = delta(&out, m);
        snprintf(what, sizeof what, "%s: rank-%g delta == torch's", cs, (double)R[0]);
        sl_test_close(what, d1, dR, (size_t)(O * K), LOWRANK_TOL * sl_test_scale(dR, (size_t)(O * K)), 0);
        /* determinism: a second run gives the same bytes */
        SlAdapter again;
        CHECK_OK(sl_adapter_resize(&again, &ad, &ro, NULL, ctx), ctx);
        if (!sl_test_failures)
            CHECK(!memcmp(again.mods[0].A, m->A, sizeof(float) * (size_t)(m->r * K)) &&
                  !memcmp(again.mods[0].B, m->B, sizeof(float) * (size_t)(m->O * m->r)), "%s: same bytes twice", cs);
        sl_adapter_free(&again);
        free(d1);
        sl_adapter_free(&out);
    }
    /* dynamic ranks, exactly torch's; cap = the input rank */
    const struct { SlRankMethod m; double p; float want; const char *n; } dyn[3] = {
        {SL_RANK_SV_FRO, params[0], rf[0], "sv_fro"},
        {SL_RANK_SV_RATIO, params[1], rr[0], "sv_ratio"},
        {SL_RANK_SV_CUMULATIVE, params[2], rc[0], "sv_cumulative"},
    };
    for (int i = 0; i < 3; i++) {
        SlRankOpts d = {.method = dyn[i].m, .param = dyn[i].p};
        CHECK_OK(sl_adapter_resize(&out, &ad, &d, NULL, ctx), ctx);
        if (sl_test_failures) break;
        CHECK(out.mods[0].r == (int64_t)dyn[i].want, "%s: %s:%g picks rank %g (got %lld)", cs, dyn[i].n, dyn[i].p,
              (double)dyn[i].want, (long long)out.mods[0].r);
        sl_adapter_free(&out);
        d.rank = 1;   /* and --rank caps it */
        d.conv_rank = 1;
        CHECK_OK(sl_adapter_resize(&out, &ad, &d, NULL, ctx), ctx);
        if (!sl_test_failures) CHECK(out.mods[0].r == 1, "%s: %s capped at --rank 1", cs, dyn[i].n);
        sl_adapter_free(&out);
    }
    /* rsLoRA: the scale alpha/sqrt(r) is kept */
    ad.rslora = 1;
    ro = (SlRankOpts){.rank = r};
    CHECK_OK(sl_adapter_resize(&out, &ad, &ro, NULL, ctx), ctx);
    if (!sl_test_failures) {
        CHECK(out.rslora == 1, "%s: rsLoRA flag kept", cs);
        float *d1 = delta(&out, &out.mods[0]), *dr = delta(&ad, lm);
        snprintf(what, sizeof what, "%s: rsLoRA resize to own rank keeps s B A", cs);
        sl_test_close(what, d1, dr, (size_t)(O * K), SAME_TOL * sl_test_scale(dr, (size_t)(O * K)), 0);
        free(d1);
        free(dr);
        sl_adapter_free(&out);
    }
    sl_adapter_free(&ad);
    free(D), free(U), free(Sd), free(Vt), free(Sf), free(d0);
    free(A), free(B), free(alpha), free(S), free(dR), free(R), free(rf), free(rr), free(rc), free(params);
#undef G
}

static void merge_case(const SlStFile *g, SlCtx *ctx) {
    World w;
    world_init(&w, 20, 12, 8, 3, 3, ctx);
    float *a1 = get(g, "m.a1", NULL, ctx), *b1 = get(g, "m.b1", NULL, ctx), *a2 = get(g, "m.a2", NULL, ctx);
    float *b2 = get(g, "m.b2", NULL, ctx), *ca = get(g, "m.ca", NULL, ctx), *cb = get(g, "m.cb", NULL, ctx);
    float *wt = get(g, "m.w", NULL, ctx), *lsum = get(g, "m.lin.sum", NULL, ctx), *csum = get(g, "m.conv.sum", NULL, ctx);
    float *lr3 = get(g, "m.lin.r3", NULL, ctx);
    SlAdapter x, y, out;
    make(&x, &w, "unet.blk.to_q", 4, 4, ctx);
    make(&y, &w, "unet.blk.to_q,unet.blk.conv1", 3, 2, ctx);
    if (sl_test_failures) return;
    set_mod(mod(&x, "unet.blk.to_q"), a1, b1, 2.0f);
    set_mod(mod(&y, "unet.blk.to_q"), a2, b2, 3.0f);
    set_mod(mod(&y, "unet.blk.conv1"), ca, cb, 1.0f);
    SlAdapter *two[2] = {&x, &y};
    SlRankOpts full = {0};
    CHECK_OK(sl_adapter_svd_merge(&out, two, wt, 2, &full, NULL, ctx), ctx);
    if (!sl_test_failures) {
        SlLoraMod *l = mod(&out, "unet.blk.to_q"), *c = mod(&out, "unet.blk.conv1");
        CHECK(out.n == 2 && l && c, "merge: both modules in the output (%d)", out.n);
        if (l && c) {
            CHECK(l->r == 7 && c->r == 2 && l->alpha == 7.0f && c->conv && c->k == 3,
                  "merge: full ranks 4+3 and 2, alpha = rank (got %lld, %lld)", (long long)l->r, (long long)c->r);
            float *dl = delta(&out, l), *dc = delta(&out, c);
            sl_test_close("merge: linear at full rank == w1 s1 B1 A1 + w2 s2 B2 A2", dl, lsum, 240,
                          SAME_TOL * sl_test_scale(lsum, 240), 0);
            sl_test_close("merge: LoCon only in adapter 2 == w2 s2 B2 A2", dc, csum, 216, SAME_TOL * sl_test_scale(csum, 216), 0);
            free(dl);
            free(dc);
        }
        sl_adapter_free(&out);
    }
    SlRankOpts r3 = {.rank = 3};
    CHECK_OK(sl_adapter_svd_merge(&out, two, wt, 2, &r3, NULL, ctx), ctx);
    if (!sl_test_failures) {
        SlLoraMod *l = mod(&out, "unet.blk.to_q");
        CHECK(l && l->r == 3, "merge --rank 3");
        if (l) {
            float *dl = delta(&out, l);
            sl_test_close("merge: rank-3 delta == torch's", dl, lr3, 240, LOWRANK_TOL * sl_test_scale(lr3, 240), 0);
            free(dl);
        }
        sl_adapter_free(&out);
    }
    /* the same name with another shape: refused, naming both adapters */
    World w2;
    world_init(&w2, 20, 10, 8, 3, 3, ctx);
    SlAdapter z;
    make(&z, &w2, "unet.blk.to_q", 2, 2, ctx);
    snprintf(x.label, sizeof x.label, "x.safetensors");
    snprintf(z.label, sizeof z.label, "z.safetensors");
    SlAdapter *bad[2] = {&x, &z};
    SlStatus st = sl_adapter_svd_merge(&out, bad, NULL, 2, &full, NULL, ctx);
    CHECK(st == SL_ERR_FORMAT && strstr(ctx->msg, "x.safetensors") && strstr(ctx->msg, "z.safetensors") &&
          strstr(ctx->msg, "unet.blk.to_q"), "merge: shape clash refused: %s", ctx->msg);
    /* DoRA cannot be summed */
    z.dora = 1;
    bad[1] = &z;
    st = sl_adapter_svd_merge(&out, &bad[1], NULL, 1, &full, NULL, ctx);
    CHECK(st == SL_ERR_UNSUPPORTED && strstr(ctx->msg, "z.safetensors"), "merge: DoRA refused: %s", ctx->msg);
    sl_adapter_free(&x);
    sl_adapter_free(&y);
    sl_adapter_free(&z);
    sl_sites_free(&w.sites);
    sl_sites_free(&w2.sites);
    free(a1), free(b1), free(a2), free(b2), free(ca), free(cb), free(wt), free(lsum), free(csum), free(lr3);
}

/* DoRA: the magnitude is carried over unchanged. */
static void dora_case(SlCtx *ctx) {
    World w;
    world_init(&w, 6, 5, 4, 2, 3, ctx);
    SlLinear *l = &w.lin;
    float W[30];
    sl_test_fill(W, 30, 7, 1.0f);
    l->w = W;
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "unet.blk.to_q";
    o.rank = 3;
    o.dora = 1;
    SlAdapter ad, out;
    CHECK_OK(sl_adapter_create(&ad, &w.sites, &o, ctx), ctx);
    if (sl_test_failures) return;
    sl_test_fill(ad.mods[0].B, 18, 9, 0.5f);
    SlRankOpts ro = {.rank = 2};
    CHECK_OK(sl_adapter_resize(&out, &ad, &ro, NULL, ctx), ctx);
    if (!sl_test_failures) {
        CHECK(out.dora && out.mods[0].mag && !memcmp(out.mods[0].mag, ad.mods[0].mag, sizeof(float) * 6),
              "DoRA magnitude kept");
        sl_adapter_free(&out);
    }
    sl_adapter_free(&ad);
    sl_sites_free(&w.sites);
}

/* A rank above min(O, K) (the dense route of sl_svd_product): own-rank resize keeps s B A
 * at rank min(O, K) = 5. */
static void dense_case(SlCtx *ctx) {
    World w;
    world_init(&w, 6, 5, 4, 2, 3, ctx);
    SlAdapter ad, out;
    make(&ad, &w, "unet.blk.to_q", 7, 7, ctx);
    if (sl_test_failures) return;
    sl_test_fill(ad.mods[0].A, 35, 3, 1.0f);
    sl_test_fill(ad.mods[0].B, 42, 4, 1.0f);
    const char *meta[][2] = {{SL_META_ALPHA_PATTERN, "{\"unet.blk.to_q\": 3}"}, {"ss_network_dim", "7"},
                             {"sshs_model_hash", "0xdead"}, {"stylora.train.lr", "0.001"}, {"ss_training_comment", "old"}};
    for (int i = 0; i < 5; i++) CHECK_OK(sl_adapter_set_meta(&ad, meta[i][0], meta[i][1], ctx), ctx);
    SlRankOpts ro = {.rank = 7};
    CHECK_OK(sl_adapter_resize(&out, &ad, &ro, NULL, ctx), ctx);
    if (!sl_test_failures) {
        const char *c = sl_adapter_get_meta(&out, "ss_training_comment"), *lr = sl_adapter_get_meta(&out, "stylora.train.lr");
        CHECK(!sl_adapter_get_meta(&out, SL_META_ALPHA_PATTERN) && !sl_adapter_get_meta(&out, "ss_network_dim") &&
              !sl_adapter_get_meta(&out, "sshs_model_hash"), "stale metadata dropped");
        CHECK(lr && !strcmp(lr, "0.001"), "training metadata kept");
        CHECK(c && !strcmp(c, "dimension is resized from 7 to 7; old"), "resize_lora.py's comment: %s", c ? c : "(none)");
        CHECK(out.mods[0].r == 5, "rank 7 on a 6 x 5 linear becomes 5 (got %lld)", (long long)out.mods[0].r);
        float *d0 = delta(&ad, &ad.mods[0]), *d1 = delta(&out, &out.mods[0]);
        sl_test_close("dense route: rank 7 -> 5 keeps s B A", d1, d0, 30, SAME_TOL * sl_test_scale(d0, 30), 0);
        free(d0);
        free(d1);
        sl_adapter_free(&out);
    }
    sl_adapter_free(&ad);
    sl_sites_free(&w.sites);
}

static void parse_case(SlCtx *ctx) {
    SlRankOpts o = {0};
    CHECK(sl_rank_dynamic_parse(&o, "sv_fro:0.9", ctx) == SL_OK && o.method == SL_RANK_SV_FRO && o.param == 0.9,
          "parse sv_fro:0.9");
    CHECK(sl_rank_dynamic_parse(&o, "sv_ratio:8", ctx) == SL_OK && o.method == SL_RANK_SV_RATIO && o.param == 8,
          "parse sv_ratio:8");
    CHECK(sl_rank_dynamic_parse(&o, "sv_cumulative:1", ctx) == SL_OK && o.method == SL_RANK_SV_CUMULATIVE,
          "parse sv_cumulative:1");
    const char *bad[] = {"sv_fro", "sv_fro:", "sv_fro:1.5", "sv_fro:0", "sv_ratio:0.5", "svd:0.9", "sv_fro:0.9x", "sv_fro:nan"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(sl_rank_dynamic_parse(&o, bad[i], ctx) == SL_ERR_ARG && strstr(ctx->msg, bad[i]), "parse refuses '%s': %s",
              bad[i], ctx->msg);
    /* a zero delta: rank 1 (resize_lora.py's MIN_SV) */
    const double S0[3] = {0, 0, 0};
    CHECK(sl_rank_choose(S0, 3, SL_RANK_FIXED, 0, 3) == 1, "zero delta gives rank 1");
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/resize_golden.safetensors", sl_test_source());
    SlStFile g;
    CHECK_OK(sl_st_open(&g, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_styles_resize");
    World w;
    world_init(&w, 24, 16, 12, 4, 3, &ctx);
    resize_case(&g, "lin", &w, "unet.blk.to_q", &ctx);
    resize_case(&g, "conv", &w, "unet.blk.conv1", &ctx);
    sl_sites_free(&w.sites);
    merge_case(&g, &ctx);
    dora_case(&ctx);
    dense_case(&ctx);
    parse_case(&ctx);
    sl_st_close(&g);
    return sl_test_finish("test_styles_resize");
}
