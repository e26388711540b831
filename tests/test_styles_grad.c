/* test_styles_grad.c - finite-difference checks of the adapter hooks (no Python).
 *
 * L = sum(y * R). Central differences (eps 0.05: the output is linear in each of A,
 * B, m, x, so the difference is exact up to float rounding) against the hooks'
 * backward, |fd - an| <= 2e-3 * max|an| + 1e-2 |an|:
 *   - two LoRA adapters (weights 0.7 and -0.4) on one linear: A, B of both, x
 *   - the same with dropout 0.3 in training (the mask is fixed for a step)
 *   - LoCon on a 3x3 conv, stride 2 and stride 1: A, B, x
 *   - DoRA on a linear: m and x (A and B see a detached norm, which differences
 *     cannot reproduce: those are checked against PyTorch in test_styles_dora.c)
 * Dropout: same step -> same bits, another step -> another mask, training off -> no
 * dropout. kaiming init bound and B = 0 at creation.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "styles/adapter.h"
#include "test_util.h"

#define FD_EPS 0.05f
#define FD_ATOL 2e-3
#define FD_RTOL 1e-2

typedef struct Net {   /* one module, linear or conv, with its input and R */
    SlLinear *lin;
    SlConv2d *conv;
    int64_t N, B, H, W;
    float *x, *y, *R, *din, *work;
    size_t ny, nx;
} Net;

static double net_loss(Net *n) {
    if (n->lin) sl_linmod_forward(n->lin, n->y, n->x, n->N);
    else sl_convmod_forward(n->conv, n->y, n->x, n->B, n->H, n->W, n->work);
    double l = 0;
    for (size_t i = 0; i < n->ny; i++) l += (double)n->y[i] * n->R[i];
    return l;
}

static void net_backward(Net *n) {
    memset(n->din, 0, sizeof(float) * n->nx);
    net_loss(n);
    if (n->lin) sl_linmod_backward(n->lin, n->din, n->R, n->x, n->N);
    else sl_convmod_backward(n->conv, n->din, n->R, n->x, n->B, n->H, n->W, n->work);
}

static void fd_check(const char *what, Net *n, float *p, const float *an, int64_t len) {
    float *fd = malloc(sizeof(float) * (size_t)len);
    for (int64_t i = 0; i < len; i++) {
        float keep = p[i];
        p[i] = keep + FD_EPS;
        double lp = net_loss(n);
        p[i] = keep - FD_EPS;
        double lm = net_loss(n);
        p[i] = keep;
        fd[i] = (float)((lp - lm) / (2.0 * FD_EPS));
    }
    sl_test_close(what, an, fd, (size_t)len, FD_ATOL * sl_test_scale(fd, (size_t)len), FD_RTOL);
    free(fd);
}

static void randomize(float *p, int64_t n, uint64_t stream, float sc) {
    sl_rng_normal(p, n, 11, stream, 0);
    for (int64_t i = 0; i < n; i++) p[i] *= sc;
}

static void test_linear(int dropout, SlCtx *ctx) {
    const int64_t I = 7, O = 5, N = 6;
    float w[35], b[5];
    randomize(w, O * I, 1, 0.4f);
    randomize(b, O, 2, 0.1f);
    SlLinear lin = {.I = I, .O = O, .w = w, .b = b};
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add(&sites, "unet.blk.to_v", &lin, NULL, N, ctx), ctx);
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "attn";
    o.rank = 3;
    o.alpha = 6;
    SlAdapter a1, a2;
    CHECK_OK(sl_adapter_create(&a1, &sites, &o, ctx), ctx);
    const float bound = 1.0f / sqrtf((float)I);
    CHECK(sl_max_abs(a1.mods[0].A, 21) <= bound && sl_max_abs(a1.mods[0].A, 21) > 0.5f * bound &&
              sl_max_abs(a1.mods[0].B, 15) == 0.0f, "kaiming init within 1/sqrt(fan_in) = %g, B zero", bound);
    o.rank = 2;
    o.alpha = 1;
    o.seed = 3;
    o.rslora = 1;
    o.init = SL_LORA_INIT_GAUSSIAN;
    CHECK_OK(sl_adapter_create(&a2, &sites, &o, ctx), ctx);
    randomize(a1.mods[0].B, O * 3, 3, 0.5f);
    randomize(a2.mods[0].B, O * 2, 4, 0.5f);
    CHECK_OK(sl_adapter_enable_grads(&a1, ctx), ctx);
    CHECK_OK(sl_adapter_enable_grads(&a2, ctx), ctx);
    SlAdapter *two[2] = {&a1, &a2};
    float wts[2] = {0.7f, -0.4f};
    SlAdapterSet set;
    CHECK_OK(sl_adapter_set_apply(&set, &sites, two, wts, 2, dropout ? 0.3f : 0.0f, 77, ctx), ctx);
    if (sl_test_failures) return;
    set.training = 1;
    set.step = 5;
    float x[42], y[30], R[30], din[42];
    randomize(x, N * I, 5, 1.0f);
    randomize(R, N * O, 6, 1.0f);
    Net n = {.lin = &lin, .N = N, .x = x, .y = y, .R = R, .din = din, .ny = 30, .nx = 42};
    net_backward(&n);
    char what[96];
    const char *tag = dropout ? "LoRA+dropout" : "LoRA";
    for (int k = 0; k < 2; k++) {
        SlLoraMod *lm = &two[k]->mods[0];
        snprintf(what, sizeof what, "%s adapter %d dA", tag, k);
        fd_check(what, &n, lm->A, lm->dA, lm->r * I);
        snprintf(what, sizeof what, "%s adapter %d dB", tag, k);
        fd_check(what, &n, lm->B, lm->dB, O * lm->r);
    }
    snprintf(what, sizeof what, "%s dx", tag);
    fd_check(what, &n, x, din, N * I);
    if (dropout) {
        float y1[30], y2[30], y3[30];
        net_loss(&n);
        memcpy(y1, y, sizeof y1);
        net_loss(&n);
        CHECK(!memcmp(y1, y, sizeof y1), "dropout: same step, same bits");
        set.step = 6;
        net_loss(&n);
        memcpy(y2, y, sizeof y2);
        CHECK(memcmp(y1, y2, sizeof y1) != 0, "dropout: another step, another mask");
        set.training = 0;
        net_loss(&n);
        memcpy(y3, y, sizeof y3);
        sl_adapter_set_remove(&set);
        CHECK_OK(sl_adapter_set_apply(&set, &sites, two, wts, 2, 0.0f, 77, ctx), ctx);
        net_loss(&n);
        CHECK(!memcmp(y3, y, sizeof y3), "dropout off outside training");
    }
    sl_adapter_set_remove(&set);
    sl_adapter_free(&a1);
    sl_adapter_free(&a2);
    sl_sites_free(&sites);
}

static void test_locon(int64_t stride, int dropout, SlCtx *ctx) {
    const int64_t Ci = 3, Co = 4, k = 3, B = 2, H = 5, W = 5;
    float w[4 * 3 * 9], bias[4];
    randomize(w, Co * Ci * k * k, 7, 0.3f);
    randomize(bias, Co, 8, 0.1f);
    SlConv2d conv = {.Ci = Ci, .Co = Co, .k = k, .stride = stride, .pad = 1, .w = w, .b = bias};
    SlConvDims d = sl_convmod_dims(&conv, B, H, W);
    const int64_t P = d.Ho * d.Wo;
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add(&sites, "unet.down_blocks.0.resnets.0.conv1", NULL, &conv, B * P, ctx), ctx);
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "resnet";
    o.rank = 2;
    o.alpha = 3;
    SlAdapter a;
    CHECK_OK(sl_adapter_create(&a, &sites, &o, ctx), ctx);
    if (sl_test_failures) return;
    SlLoraMod *lm = &a.mods[0];
    CHECK(lm->conv && lm->k == 3, "LoCon module created");
    randomize(lm->B, Co * 2, 9, 0.5f);
    CHECK_OK(sl_adapter_enable_grads(&a, ctx), ctx);
    SlAdapter *one[1] = {&a};
    SlAdapterSet set;
    CHECK_OK(sl_adapter_set_apply(&set, &sites, one, NULL, 1, dropout ? 0.4f : 0.0f, 5, ctx), ctx);
    set.training = dropout;
    set.step = 3;
    const size_t nx = (size_t)(B * Ci * H * W), ny = (size_t)(B * Co * P);
    float *x = malloc(sizeof(float) * nx), *din = malloc(sizeof(float) * nx);
    float *y = malloc(sizeof(float) * ny), *R = malloc(sizeof(float) * ny);
    float *work = malloc(sizeof(float) * sl_convmod_workspace(&conv, B, H, W));
    randomize(x, (int64_t)nx, 10, 1.0f);
    randomize(R, (int64_t)ny, 12, 1.0f);
    Net n = {.conv = &conv, .B = B, .H = H, .W = W, .x = x, .y = y, .R = R, .din = din, .work = work, .ny = ny, .nx = nx};
    net_backward(&n);
    char what[96];
    const char *tag = dropout ? " +dropout" : "";
    snprintf(what, sizeof what, "LoCon stride %lld%s dA", (long long)stride, tag);
    fd_check(what, &n, lm->A, lm->dA, 2 * Ci * k * k);
    snprintf(what, sizeof what, "LoCon stride %lld%s dB", (long long)stride, tag);
    fd_check(what, &n, lm->B, lm->dB, Co * 2);
    snprintf(what, sizeof what, "LoCon stride %lld%s dx", (long long)stride, tag);
    fd_check(what, &n, x, din, (int64_t)nx);
    if (dropout) {   /* the mask really drops: training off changes the output */
        float *yd = malloc(sizeof(float) * ny);
        net_loss(&n);
        memcpy(yd, y, sizeof(float) * ny);
        set.training = 0;
        net_loss(&n);
        CHECK(memcmp(yd, y, sizeof(float) * ny) != 0, "LoCon dropout changes the output");
        free(yd);
    }
    /* merge: the composed kernel gives the same output */
    float *yh = malloc(sizeof(float) * ny), *wc = malloc(sizeof w);
    net_loss(&n);
    memcpy(yh, y, sizeof(float) * ny);
    sl_adapter_set_remove(&set);
    memcpy(wc, w, sizeof w);
    SlMergeState ms = {0};
    CHECK_OK(sl_adapter_merge(&ms, &sites, one, NULL, 1, ctx), ctx);
    net_loss(&n);
    snprintf(what, sizeof what, "LoCon stride %lld merged == hook", (long long)stride);
    sl_test_close(what, y, yh, ny, 1e-5 * sl_test_scale(yh, ny), 0);
    sl_adapter_unmerge(&ms);
    CHECK(!memcmp(wc, w, sizeof w), "LoCon unmerge bit-exact");
    free(x); free(din); free(y); free(R); free(work); free(yh); free(wc);
    sl_adapter_free(&a);
    sl_sites_free(&sites);
}

static void test_dora_fd(SlCtx *ctx) {
    const int64_t I = 6, O = 4, N = 5;
    float w[24], b[4];
    randomize(w, O * I, 13, 0.4f);
    randomize(b, O, 14, 0.1f);
    SlLinear lin = {.I = I, .O = O, .w = w, .b = b};
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add(&sites, "text_encoder.text_model.encoder.layers.0.mlp.fc1", &lin, NULL, N, ctx), ctx);
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "te";
    o.rank = 2;
    o.alpha = 2;
    o.dora = 1;
    SlAdapter a;
    CHECK_OK(sl_adapter_create(&a, &sites, &o, ctx), ctx);
    if (sl_test_failures) return;
    SlLoraMod *lm = &a.mods[0];
    randomize(lm->B, O * 2, 15, 0.5f);
    for (int64_t i = 0; i < O; i++) lm->mag[i] *= 1.0f + 0.1f * (float)i;
    CHECK_OK(sl_adapter_enable_grads(&a, ctx), ctx);
    SlAdapter *one[1] = {&a};
    SlAdapterSet set;
    CHECK_OK(sl_adapter_set_apply(&set, &sites, one, NULL, 1, 0.0f, 0, ctx), ctx);
    float x[30], y[20], R[20], din[30];
    randomize(x, N * I, 16, 1.0f);
    randomize(R, N * O, 17, 1.0f);
    Net n = {.lin = &lin, .N = N, .x = x, .y = y, .R = R, .din = din, .ny = 20, .nx = 30};
    net_backward(&n);
    fd_check("DoRA dm", &n, lm->mag, lm->dmag, O);
    fd_check("DoRA dx", &n, x, din, N * I);
    sl_adapter_set_remove(&set);
    /* DoRA with dropout is refused */
    CHECK(sl_adapter_set_apply(&set, &sites, one, NULL, 1, 0.1f, 0, ctx) == SL_ERR_UNSUPPORTED, "DoRA + dropout refused: %s", ctx->msg);
    sl_adapter_free(&a);
    sl_sites_free(&sites);
}

/* A stand-in for a quantized base: the hook owns the weight (m->w stays NULL). */
typedef struct FakeBase { SlHook hook; const float *w; } FakeBase;
static void fake_fwd(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t N) {
    sl_linear_forward(y, x, ((FakeBase *)h->self)->w, NULL, N, m->I, m->O, NULL);
}
static void fake_bwd_in(SlHook *h, const SlLinear *m, float *din, const float *g, int64_t N) {
    sl_linear_backward(din, NULL, NULL, g, NULL, ((FakeBase *)h->self)->w, N, m->I, m->O, NULL);
}
static const SlHookOps fake_ops = {.lin_base_forward = fake_fwd, .lin_base_backward_input = fake_bwd_in};

/* LoRA over a base hook == LoRA over the dense weight; removal restores the base hook. */
static void test_base_delegation(SlCtx *ctx) {
    const int64_t I = 5, O = 3, N = 4;
    float w[15], x[20], R[12], y1[12], y2[12], d1[20], d2[20];
    randomize(w, O * I, 20, 0.5f);
    randomize(x, N * I, 21, 1.0f);
    randomize(R, N * O, 22, 1.0f);
    SlLinear dense = {.I = I, .O = O, .w = w}, quant = {.I = I, .O = O};
    FakeBase fb = {{&fake_ops, NULL}, w};
    fb.hook.self = &fb;
    quant.hook = &fb.hook;
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add(&sites, "unet.a.to_k", &dense, NULL, N, ctx), ctx);
    CHECK_OK(sl_sites_add(&sites, "unet.b.to_k", &quant, NULL, N, ctx), ctx);
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "to_k";
    SlAdapter a;
    CHECK_OK(sl_adapter_create(&a, &sites, &o, ctx), ctx);
    if (sl_test_failures) return;
    for (int i = 0; i < 2; i++) randomize(a.mods[i].B, O * a.mods[i].r, 23, 0.5f);
    memcpy(a.mods[1].A, a.mods[0].A, sizeof(float) * (size_t)(a.mods[0].r * I));
    SlAdapter *one[1] = {&a};
    SlAdapterSet set;
    CHECK_OK(sl_adapter_set_apply(&set, &sites, one, NULL, 1, 0.0f, 0, ctx), ctx);
    sl_linmod_forward(&dense, y1, x, N);
    sl_linmod_forward(&quant, y2, x, N);
    memset(d1, 0, sizeof d1);
    memset(d2, 0, sizeof d2);
    sl_linmod_backward(&dense, d1, R, x, N);
    sl_linmod_backward(&quant, d2, R, x, N);
    sl_test_close("LoRA over a base hook: y", y2, y1, 12, 1e-6, 0);
    sl_test_close("LoRA over a base hook: din", d2, d1, 20, 1e-6, 0);
    SlMergeState ms = {0};
    CHECK(sl_adapter_merge(&ms, &sites, one, NULL, 1, ctx) == SL_ERR_UNSUPPORTED, "merge into a hook-held weight refused: %s", ctx->msg);
    sl_adapter_unmerge(&ms);
    sl_adapter_set_remove(&set);
    CHECK(quant.hook == &fb.hook && dense.hook == NULL, "removal restores the previous hooks");
    sl_adapter_free(&a);
    sl_sites_free(&sites);
}

/* PEFT init_lora_weights="gaussian": A ~ N(0, 1/r^2); default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
static void test_init_stats(SlCtx *ctx) {
    SlLinear lin = {.I = 512, .O = 8};
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add(&sites, "unet.x.to_q", &lin, NULL, 1, ctx), ctx);
    for (int g = 0; g < 2; g++) {
        SlAdapterOpts o = sl_adapter_opts_default();
        o.rank = 8;
        o.init = g ? SL_LORA_INIT_GAUSSIAN : SL_LORA_INIT_KAIMING;
        SlAdapter a;
        CHECK_OK(sl_adapter_create(&a, &sites, &o, ctx), ctx);
        if (sl_test_failures) return;
        const int64_t n = 8 * 512;
        double m = 0, v = 0;
        for (int64_t i = 0; i < n; i++) m += a.mods[0].A[i];
        m /= (double)n;
        for (int64_t i = 0; i < n; i++) v += (a.mods[0].A[i] - m) * (a.mods[0].A[i] - m);
        const double sd = sqrt(v / (double)n), want = g ? 1.0 / 8 : 1.0 / sqrt(512.0) / sqrt(3.0);
        CHECK(fabs(sd / want - 1) < 0.05 && fabs(m) < 0.05 * want, "%s init: std %.5f (want %.5f), mean %.2g",
              g ? "gaussian" : "kaiming", sd, want, m);
        sl_adapter_free(&a);
    }
    sl_sites_free(&sites);
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    CHECK(sl_adapter_pattern_match("to_q", "unet.a.attn1.to_q") && !sl_adapter_pattern_match("to_q", "unet.a.attn1.xto_q") &&
              sl_adapter_pattern_match("unet.*resnets.*.conv1", "unet.up_blocks.0.resnets.2.conv1") &&
              !sl_adapter_pattern_match("unet.*resnets.*.conv1", "unet.up_blocks.0.resnets.2.conv2") &&
              sl_adapter_pattern_match("to_out.0", "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0"),
          "target patterns");
    test_linear(0, &ctx);
    test_linear(1, &ctx);
    test_locon(2, 0, &ctx);
    test_locon(1, 0, &ctx);
    test_locon(2, 1, &ctx);
    test_dora_fd(&ctx);
    test_base_delegation(&ctx);
    test_init_stats(&ctx);
    return sl_test_finish("test_styles_grad");
}
