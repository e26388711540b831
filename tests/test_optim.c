/* test_optim.c - AdamW, LR schedules and gradient clipping against torch
 * (tests/reference/optim_ref.py -> tests/data/optim_golden.safetensors), and
 * the global norm's thread-count independence. */
#include <omp.h>
#include <string.h>

#include "core/safetensors.h"
#include "pipeline/optim.h"
#include "test_util.h"

/* fp32 AdamW in a different summation order than torch's vectorized kernel:
 * a few ulps per step */
#define ADAMW_ATOL 1e-6
#define ADAMW_RTOL 1e-5

static SlStFile g;
static SlCtx ctx;

static float *load(const char *name, int64_t *n) {
    const SlStEntry *e = sl_st_find(&g, name);
    if (!e) { CHECK(0, "golden %s missing", name); return NULL; }
    *n = sl_shape_numel(e->ndim, e->shape);
    float *p = sl_alloc((size_t)*n * 4);
    sl_st_read_f32(&g, e, p, &ctx);
    return p;
}

int main(void) {
    sl_ctx_init(&ctx);
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/optim_golden.safetensors", sl_test_source());
    if (sl_st_open(&g, path, &ctx) != SL_OK) { fprintf(stderr, "%s\n", ctx.msg); return 1; }
    /* AdamW, 6 steps, warmup 2 + cosine, decay on p0 and p2 */
    SlParamRef refs[3];
    float *w[3], *grad[3];
    for (int i = 0; i < 3; i++) {
        char name[64];
        int64_t n;
        snprintf(name, sizeof name, "p%d.init", i);
        w[i] = load(name, &n);
        grad[i] = sl_alloc((size_t)n * 4);
        refs[i] = (SlParamRef){w[i], grad[i], n, i != 1, "p"};
    }
    SlAdamWConfig cfg = {0.9f, 0.99f, 1e-6f, 0.05f};
    SlAdamW opt;
    CHECK_OK(sl_adamw_init(&opt, refs, 3, &cfg, &ctx), &ctx);
    for (int k = 0; k < 6; k++) {
        for (int i = 0; i < 3; i++) {
            char name[64];
            int64_t n;
            snprintf(name, sizeof name, "p%d.grad.s%d", i, k);
            float *gk = load(name, &n);
            memcpy(grad[i], gk, (size_t)n * 4);
            sl_free(gk);
        }
        sl_adamw_step(&opt, sl_lr_at(SL_LR_COSINE, 1e-2f, k, 2, 6));
    }
    for (int i = 0; i < 3; i++) {
        char name[64];
        int64_t n;
        snprintf(name, sizeof name, "p%d.after", i);
        float *ref = load(name, &n);
        sl_test_close(name, w[i], ref, (size_t)n, ADAMW_ATOL, ADAMW_RTOL);
        sl_free(ref);
    }
    CHECK(sl_adamw_state_bytes(&opt) >= 2 * (35 + 13 + 24) * 4, "state bytes %zu", sl_adamw_state_bytes(&opt));
    sl_adamw_free(&opt);
    /* schedules */
    const char *names[3] = {"linear", "constant_with_warmup", "cosine"};
    for (int s = 0; s < 3; s++) {
        char name[64];
        int64_t n;
        snprintf(name, sizeof name, "lr.%s", names[s]);
        float *ref = load(name, &n), got[12];
        SlLrSchedule k;
        CHECK(sl_lr_schedule_from_name(names[s], &k), "schedule name");
        for (int i = 0; i < 12; i++) got[i] = sl_lr_at(k, 2e-3f, i, 3, 10);
        sl_test_close(name, got, ref, 12, 0, 1e-6);
        sl_free(ref);
    }
    /* clipping */
    int64_t n0, n1, nn;
    float *g0 = load("clip.grads0", &n0), *g1 = load("clip.grads1", &n1), *norm = load("clip.norm", &nn);
    float *a0 = load("clip.after0", &n0), *a1 = load("clip.after1", &n1);
    SlParamRef cr[2] = {{NULL, g0, n0, 0, "a"}, {NULL, g1, n1, 0, "b"}};
    double got_norm = sl_grad_clip(cr, 2, 1.5);
    CHECK(fabs(got_norm - norm[0]) <= 1e-5 * norm[0], "norm %g vs %g", got_norm, norm[0]);
    sl_test_close("clip.after0", g0, a0, (size_t)n0, 1e-7, 1e-6);
    sl_test_close("clip.after1", g1, a1, (size_t)n1, 1e-7, 1e-6);
    /* non-finite detection */
    g1[3] = NAN;
    CHECK(sl_grad_first_nonfinite(cr, 2) == 1, "NaN found in tensor 1");
    /* global norm: same bits with 1 and 2 threads on a large tensor */
    int64_t big = 3000001;
    float *bg = sl_alloc((size_t)big * 4);
    for (int64_t i = 0; i < big; i++) bg[i] = (float)sin((double)i * 0.37) * 1e-3f;
    SlParamRef br = {NULL, bg, big, 0, "big"};
    omp_set_num_threads(1);
    double n1t = sl_grad_global_norm(&br, 1);
    omp_set_num_threads(2);
    double n2t = sl_grad_global_norm(&br, 1);
    CHECK(memcmp(&n1t, &n2t, sizeof n1t) == 0, "global norm differs across thread counts: %.17g vs %.17g", n1t, n2t);
    sl_free(bg);
    sl_free(g0); sl_free(g1); sl_free(norm); sl_free(a0); sl_free(a1);
    for (int i = 0; i < 3; i++) { sl_free(w[i]); sl_free(grad[i]); }
    sl_st_close(&g);
    return sl_test_finish("test_optim");
}
