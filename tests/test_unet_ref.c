/* test_unet_ref.c - the U-Net against tests/reference/unet_ref.py golden files.
 *
 * For each tiny config in tests/data/unet_NAME.* (lin2: linear projections,
 * head list, 2 resnets and 2 transformer layers per block, mid block; conv3:
 * conv1x1 projections, 3 blocks, no mid block, per-block layers_per_block):
 *   - forward output (max abs err <= 1e-4 * max|ref|),
 *   - MSE loss (1e-5 relative),
 *   - full fine-tuning: the gradient of EVERY parameter, of the input sample and
 *     of encoder_hidden_states
 *     (each within 1e-3 * that tensor's max |ref|).
 * Both run again with gradient checkpointing (same tolerances).
 * conv3 is also loaded from a single-file checkpoint (model.diffusion_model.*,
 * names written by the Python script) through sl_unet_ldm_map: same output.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/weights.h"
#include "test_util.h"
#include "unet/unet.h"

#define FWD_TOL 1e-4
#define LOSS_RTOL 1e-5
#define GRAD_TOL 1e-3

static float *get(const SlStFile *f, const char *name, int64_t *n, SlCtx *ctx) {
    const SlStEntry *e = sl_st_find(f, name);
    if (!e) return NULL;
    int64_t k = sl_shape_numel(e->ndim, e->shape);
    float *p = malloc(sizeof(float) * (size_t)(k ? k : 1));
    if (sl_st_read_f32(f, e, p, ctx) != SL_OK) {
        free(p);
        return NULL;
    }
    if (n) *n = k;
    return p;
}

static void run(const char *name, int ldm, int ckpt) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char path[1200], what[300], label[64];
    snprintf(label, sizeof label, "%s%s", name, ckpt ? " (checkpointing)" : "");
    const char *src = sl_test_source();
    SlUNetConfig cfg;
    snprintf(path, sizeof path, "%s/tests/data/unet_%s.config.json", src, name);
    CHECK_OK(sl_unet_config_load(&cfg, path, &ctx), &ctx);
    if (sl_test_failures) return;
    SlUNet u;
    CHECK_OK(sl_unet_init(&u, &cfg, &ctx), &ctx);
    SlWeights w;
    snprintf(path, sizeof path, "%s/tests/data/unet_%s.weights.safetensors", src, name);
    CHECK_OK(sl_weights_open_file(&w, path, &ctx), &ctx);
    CHECK_OK(sl_unet_load(&u, &w, &ctx), &ctx);
    CHECK(sl_weights_report_unused(&w, 10, &ctx) == 0, "%s: every tensor used", name);
    sl_weights_close(&w);
    SlStFile ex;
    snprintf(path, sizeof path, "%s/tests/data/unet_%s.expected.safetensors", src, name);
    CHECK_OK(sl_st_open(&ex, path, &ctx), &ctx);
    if (sl_test_failures) return;
    int64_t n_out, n_s;
    float *sample = get(&ex, "in.sample", &n_s, &ctx), *ts = get(&ex, "in.timesteps", NULL, &ctx);
    float *ehs = get(&ex, "in.ehs", NULL, &ctx), *target = get(&ex, "in.target", NULL, &ctx);
    float *ref = get(&ex, "out", &n_out, &ctx), *rloss = get(&ex, "loss", NULL, &ctx);
    float *rgs = get(&ex, "grad.in.sample", NULL, &ctx);
    const SlStEntry *es = sl_st_find(&ex, "in.sample"), *ee = sl_st_find(&ex, "in.ehs");
    CHECK(sample && ts && ehs && target && ref && rloss && rgs && es && ee, "%s: inputs present", name);
    if (sl_test_failures) return;
    sl_unet_set_checkpointing(&u, ckpt);
    CHECK_OK(sl_unet_plan(&u, es->shape[0], es->shape[2], es->shape[3], ee->shape[1], &ctx), &ctx);
    CHECK_OK(sl_unet_enable_grads(&u, &ctx), &ctx);
    float *out = calloc((size_t)n_out, sizeof(float)), *dout = calloc((size_t)n_out, sizeof(float));
    float *gs = calloc((size_t)n_s, sizeof(float));
    sl_unet_forward(&u, out, sample, ts, ehs);
    snprintf(what, sizeof what, "%s: out", label);
    sl_test_close(what, out, ref, (size_t)n_out, FWD_TOL * sl_test_scale(ref, (size_t)n_out), 0);
    double loss = 0;
    for (int64_t i = 0; i < n_out; i++) {
        double d = (double)out[i] - target[i];
        loss += d * d;
        dout[i] = (float)(2.0 * d / (double)n_out);
    }
    float lf = (float)(loss / (double)n_out);
    snprintf(what, sizeof what, "%s: loss", label);
    sl_test_close(what, &lf, rloss, 1, 0, LOSS_RTOL);
    int64_t n_e = 0;
    float *rge = get(&ex, "grad.in.ehs", &n_e, &ctx), *ge = calloc((size_t)(n_e ? n_e : 1), sizeof(float));
    CHECK(rge != NULL, "%s: grad.in.ehs present", name);
    u.dehs = ge;
    sl_unet_zero_grads(&u);
    sl_unet_backward(&u, gs, dout);
    if (rge) {
        snprintf(what, sizeof what, "%s: grad.in.ehs", label);
        sl_test_close(what, ge, rge, (size_t)n_e, GRAD_TOL * sl_test_scale(rge, (size_t)n_e), 0);
    }
    free(rge);
    free(ge);
    u.dehs = NULL;
    snprintf(what, sizeof what, "%s: grad.in.sample", label);
    sl_test_close(what, gs, rgs, (size_t)n_s, GRAD_TOL * sl_test_scale(rgs, (size_t)n_s), 0);
    int compared = 0, failed_before = sl_test_failures;
    double worst = 0;
    for (int i = 0; i < u.n_params; i++) {
        SlUNetParam *p = &u.params[i];
        char key[200];
        snprintf(key, sizeof key, "grad.%s", p->name);
        int64_t n;
        float *g = get(&ex, key, &n, &ctx);
        CHECK(g && n == sl_shape_numel(p->ndim, p->shape), "%s: %s present", name, key);
        if (!g) continue;
        double sc = sl_test_scale(g, (size_t)n), e = 0;
        for (int64_t k = 0; k < n; k++) {
            double d = fabs((double)(*p->g)[k] - g[k]);
            if (d > e) e = d;
        }
        if (sc > 0 && e / sc > worst) worst = e / sc;
        snprintf(what, sizeof what, "%s: %s", label, key);
        sl_test_checks++;
        if (!(e <= GRAD_TOL * sc)) {
            sl_test_failures++;
            fprintf(stderr, "FAIL %s: max abs err %.3g > %.1g * max|ref| %.3g\n", what, e, GRAD_TOL, sc);
        }
        compared++;
        free(g);
    }
    printf("%s: %d parameter gradients compared, worst max-err/max|ref| %.3g%s\n", label, compared, worst,
           sl_test_failures == failed_before ? "" : " (FAILURES above)");
    CHECK(compared == u.n_params, "%s: all %d gradients compared", name, u.n_params);

    if (ldm) {
        /* the same weights from a single-file checkpoint through the key table */
        SlWeights f, view;
        snprintf(path, sizeof path, "%s/tests/data/unet_%s.ldm.safetensors", src, name);
        CHECK_OK(sl_weights_open_file(&f, path, &ctx), &ctx);
        sl_weights_view(&view, &f, SL_CKPT_UNET_PREFIX);
        SlKeyPair *pairs = NULL;
        int np = 0;
        CHECK_OK(sl_unet_ldm_map(&u, &pairs, &np, &ctx), &ctx);
        CHECK(np == u.n_params, "one map entry per parameter (%d)", np);
        CHECK_OK(sl_weights_set_map(&view, pairs, np, &ctx), &ctx);
        memset(u.weights.base, 0, u.weights.size);
        CHECK_OK(sl_unet_load(&u, &view, &ctx), &ctx);
        CHECK(sl_weights_report_unused(&view, 10, &ctx) == 0, "single file: every tensor used");
        sl_unet_forward(&u, out, sample, ts, ehs);
        snprintf(what, sizeof what, "%s: out from the single-file layout", name);
        sl_test_close(what, out, ref, (size_t)n_out, FWD_TOL * sl_test_scale(ref, (size_t)n_out), 0);
        sl_unet_free_map(pairs, np);
        sl_weights_close(&view);
        sl_weights_close(&f);
    }
    free(out);
    free(dout);
    free(gs);
    free(sample);
    free(ts);
    free(ehs);
    free(target);
    free(ref);
    free(rloss);
    free(rgs);
    sl_st_close(&ex);
    sl_unet_free(&u);
}

int main(void) {
    omp_set_num_threads(1); /* tiny tensors: threads only add overhead on a shared machine */
    run("lin2", 0, 0);
    run("conv3", 1, 0);
    run("lin2", 0, 1); /* gradient checkpointing: same numbers */
    run("conv3", 0, 1);
    return sl_test_finish("test_unet_ref");
}
