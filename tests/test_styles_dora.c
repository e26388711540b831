/* test_styles_dora.c - DoRA on a Linear against the PyTorch reference.
 *
 * tests/reference/dora_ref.py writes tests/data/dora_linear.safetensors (PEFT 0.12's
 * DoRA maths, norm per output row, detached). For each case: the hook's output and
 * the gradients of A, B, m and x for the stored upstream gradient match within 1e-4
 * of each tensor's max |ref|. Then: a fresh DoRA (B = 0, m = ||W||) equals the base
 * within 1e-6; the DoRA merge equals the hook output within 1e-5 and unmerges
 * bit-exactly; kohya (dora_scale) and PEFT (lora_magnitude_vector) round trips are
 * bit-exact.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "styles/adapter.h"
#include "test_util.h"

#define DORA_TOL 1e-4

static float *get(const SlStFile *f, const char *cs, const char *k, int64_t *shape2, SlCtx *ctx) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", cs, k);
    const SlStEntry *e = sl_st_find(f, name);
    if (!e) {
        fprintf(stderr, "missing %s\n", name);
        exit(1);
    }
    int64_t n = sl_shape_numel(e->ndim, e->shape);
    float *p = malloc(sizeof(float) * (size_t)n);
    if (sl_st_read_f32(f, e, p, ctx) != SL_OK) exit(1);
    if (shape2) {
        shape2[0] = e->shape[0];
        shape2[1] = e->ndim > 1 ? e->shape[1] : 1;
    }
    return p;
}

static void run_case(const SlStFile *f, const char *cs, SlCtx *ctx) {
    int64_t sw[2], sa[2], sx[2];
    float *W = get(f, cs, "w", sw, ctx), *b = get(f, cs, "b", NULL, ctx), *A = get(f, cs, "a", sa, ctx);
    float *B = get(f, cs, "bb", NULL, ctx), *m = get(f, cs, "m", NULL, ctx), *x = get(f, cs, "x", sx, ctx);
    float *R = get(f, cs, "r", NULL, ctx), *yref = get(f, cs, "y", NULL, ctx), *da = get(f, cs, "da", NULL, ctx);
    float *db = get(f, cs, "db", NULL, ctx), *dm = get(f, cs, "dm", NULL, ctx), *dx = get(f, cs, "dx", NULL, ctx);
    float *alpha = get(f, cs, "alpha", NULL, ctx);
    const int64_t O = sw[0], I = sw[1], r = sa[0], N = sx[0];
    SlLinear lin = {.I = I, .O = O, .w = W, .b = b};
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add(&sites, "unet.test.to_q", &lin, NULL, N, ctx), ctx);
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "to_q";
    o.rank = r;
    o.alpha = alpha[0];
    o.dora = 1;
    SlAdapter ad;
    CHECK_OK(sl_adapter_create(&ad, &sites, &o, ctx), ctx);
    if (sl_test_failures) return;
    SlLoraMod *lm = &ad.mods[0];
    float *y = malloc(sizeof(float) * (size_t)(N * O)), *y0 = malloc(sizeof(float) * (size_t)(N * O));
    float *din = calloc((size_t)(N * I), sizeof(float));
    char what[128];
    /* fresh DoRA == base */
    SlAdapter *one[1] = {&ad};
    SlAdapterSet set;
    sl_linmod_forward(&lin, y0, x, N);
    CHECK_OK(sl_adapter_set_apply(&set, &sites, one, NULL, 1, 0.0f, 0, ctx), ctx);
    sl_linmod_forward(&lin, y, x, N);
    snprintf(what, sizeof what, "%s: fresh DoRA == base", cs);
    sl_test_close(what, y, y0, (size_t)(N * O), 1e-6 * sl_test_scale(y0, (size_t)(N * O)), 0);
    /* golden */
    memcpy(lm->A, A, sizeof(float) * (size_t)(r * I));
    memcpy(lm->B, B, sizeof(float) * (size_t)(O * r));
    memcpy(lm->mag, m, sizeof(float) * (size_t)O);
    CHECK_OK(sl_adapter_enable_grads(&ad, ctx), ctx);
    sl_linmod_forward(&lin, y, x, N);
    snprintf(what, sizeof what, "%s: DoRA y", cs);
    sl_test_close(what, y, yref, (size_t)(N * O), DORA_TOL * sl_test_scale(yref, (size_t)(N * O)), 0);
    sl_linmod_backward(&lin, din, R, x, N);
    struct { const char *n; const float *got, *ref; int64_t len; } g[4] = {
        {"dA", lm->dA, da, r * I}, {"dB", lm->dB, db, O * r}, {"dm", lm->dmag, dm, O}, {"dx", din, dx, N * I}};
    for (int i = 0; i < 4; i++) {
        snprintf(what, sizeof what, "%s: DoRA %s", cs, g[i].n);
        sl_test_close(what, g[i].got, g[i].ref, (size_t)g[i].len, DORA_TOL * sl_test_scale(g[i].ref, (size_t)g[i].len), 0);
    }
    sl_adapter_set_remove(&set);
    /* merge */
    float *wcopy = malloc(sizeof(float) * (size_t)(O * I));
    memcpy(wcopy, W, sizeof(float) * (size_t)(O * I));
    SlMergeState ms = {0};
    CHECK_OK(sl_adapter_merge(&ms, &sites, one, NULL, 1, ctx), ctx);
    sl_linmod_forward(&lin, y0, x, N);
    snprintf(what, sizeof what, "%s: DoRA merged == hook", cs);
    sl_test_close(what, y0, y, (size_t)(N * O), 1e-5 * sl_test_scale(y, (size_t)(N * O)), 0);
    sl_adapter_unmerge(&ms);
    CHECK(!memcmp(wcopy, W, sizeof(float) * (size_t)(O * I)), "%s: DoRA unmerge bit-exact", cs);
    /* files */
    char path[1200];
    for (int fmt = 0; fmt < 2; fmt++) {
        SlAdapterSaveOpts so = {.format = fmt ? SL_ADAPTER_FMT_PEFT : SL_ADAPTER_FMT_KOHYA};
        snprintf(path, sizeof path, "%s/tmp_styles_dora_%s.safetensors", sl_test_binary(), cs);
        CHECK_OK(sl_adapter_save(&ad, path, &so, ctx), ctx);
        SlAdapter back;
        SlAdapterFormat got;
        CHECK_OK(sl_adapter_load(&back, path, &sites, NULL, &got, ctx), ctx);
        if (back.n != 1) continue;
        const SlLoraMod *bm = &back.mods[0];
        CHECK(got == so.format && back.dora && bm->mag && bm->alpha == lm->alpha &&
                  !memcmp(bm->mag, lm->mag, sizeof(float) * (size_t)O) && !memcmp(bm->A, lm->A, sizeof(float) * (size_t)(r * I)) &&
                  !memcmp(bm->B, lm->B, sizeof(float) * (size_t)(O * r)),
              "%s: DoRA %s round trip bit-exact", cs, sl_adapter_format_name(so.format));
        sl_adapter_free(&back);
    }
    SlStFile kf;
    snprintf(path, sizeof path, "%s/tmp_styles_dora_%s.safetensors", sl_test_binary(), cs);
    CHECK_OK(sl_st_open(&kf, path, ctx), ctx);
    CHECK(sl_st_find(&kf, "unet.test.to_q.lora_magnitude_vector") != NULL, "PEFT magnitude key");
    sl_st_close(&kf);
    free(wcopy);
    free(y); free(y0); free(din);
    sl_adapter_free(&ad);
    sl_sites_free(&sites);
    free(W); free(b); free(A); free(B); free(m); free(x); free(R); free(yref); free(da); free(db); free(dm); free(dx);
    free(alpha);
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[1200];
    snprintf(path, sizeof path, "%s/tests/data/dora_linear.safetensors", sl_test_source());
    SlStFile f;
    CHECK_OK(sl_st_open(&f, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_styles_dora");
    run_case(&f, "small", &ctx);
    run_case(&f, "mid", &ctx);
    sl_st_close(&f);
    return sl_test_finish("test_styles_dora");
}
