/* test_bf16_base.c - a frozen bfloat16 U-Net (pipeline/half.h, `--base bf16`).
 *
 * Kernels (nn.h's _bf16 entry points): the products run on the bf16 GEMM kernel whatever
 * the caller's kernels say, so
 *   - they give the SAME BITS as the fp32 entry points run on the bf16 kernel with the
 *     widened weights (the kernel rounds those back to the same bfloat16), 1 or 2 threads;
 *   - against the double-accumulating reference twin on bf16-rounded inputs they differ
 *     only by fp32 summation (K_TOL);
 *   - against fp32 on the unrounded inputs they differ by the inputs' rounding.
 * The tiny-sd1 U-Net (shared golden files, diffusers + PEFT in fp32):
 *   - unet.out within OUT_TOL of its max (the bound, PyTorch's own bf16 is about there);
 *   - the golden PEFT LoRA's 64 gradients each at cosine >= GRAD_COS with PEFT's, and the
 *     loss within LOSS_RTOL;
 *   - forward and LoRA backward bit-identical with 1 and 2 threads;
 *   - DoRA refused; widening back (sl_unet_half_to_dense) leaves no bfloat16 weight.
 * Loading: the streaming load equals the in-place conversion; a BF16 file loads with nothing
 * rounded, an F16 file rounds to the nearest bfloat16 of each half; a value that rounds to
 * Inf, NF4 + bf16 and fp16 + bf16 are refused.
 */
#define _DEFAULT_SOURCE /* realpath */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "core/tensor.h"
#include "nn/bf16.h"
#include "nn/nn.h"
#include "pipeline/half.h"
#include "pipeline/quant.h"
#include "styles/adapter.h"
#include "test_util.h"

#define OUT_TOL 2e-2     /* unet.out: max |err| <= OUT_TOL * max |golden| */
#define GRAD_COS 0.999   /* each LoRA gradient's cosine against PEFT's fp32 one */
#define LOSS_RTOL 2e-3   /* the MSE loss, relative */

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

static double rel_err(const float *a, const float *b, size_t n) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) e += (a[i] - (double)b[i]) * (a[i] - (double)b[i]), s += (double)b[i] * b[i];
    return sqrt(e / (s + 1e-300));
}

static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / (sqrt(aa * bb) + 1e-300);
}

static float *round_copy(const float *x, size_t n) {
    float *r = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) r[i] = sl_bf16_round(x[i]);
    return r;
}

/* ---- kernels ---- */

static void test_linear(int64_t N, int64_t I, int64_t O) {
    const SlKernels k_avx = {SL_GEMM_KERNEL_AVX512, 0, 0}, k_bf = {SL_GEMM_KERNEL_BF16, 0, 0};
    float *x = malloc(N * I * sizeof(float)), *w = malloc(O * I * sizeof(float)), *b = malloc(O * sizeof(float));
    uint16_t *wb = malloc(O * I * sizeof(uint16_t));
    sl_test_fill(x, (size_t)(N * I), 5, 1.0f), sl_test_fill(w, (size_t)(O * I), 6, 0.1f), sl_test_fill(b, (size_t)O, 7, 0.1f);
    sl_f32_to_bf16(wb, w, (size_t)(O * I));
    sl_bf16_to_f32(w, wb, (size_t)(O * I)); /* w: exactly the bfloat16 values */
    float *y = malloc(N * O * sizeof(float)), *y2 = malloc(N * O * sizeof(float)), *yr = malloc(N * O * sizeof(float));
    float *yf = malloc(N * O * sizeof(float));
    omp_set_num_threads(1);
    sl_linear_forward_bf16(y, x, wb, b, N, I, O, &k_avx); /* the bf16 kernel even when AVX-512 is asked for */
    sl_linear_forward(y2, x, w, b, N, I, O, &k_bf);
    CHECK(same_bits(y, y2, (size_t)(N * O)), "linear %lldx%lldx%lld: bf16 weights == the bf16 kernel on the widened "
          "weights (bitwise)", (long long)N, (long long)I, (long long)O);
    omp_set_num_threads(2);
    sl_linear_forward_bf16(y2, x, wb, b, N, I, O, NULL);
    CHECK(same_bits(y, y2, (size_t)(N * O)), "linear forward: 1 and 2 threads the same bits");
    float *xr = round_copy(x, (size_t)(N * I));
    sl_linear_forward_ref(yr, xr, w, b, N, I, O);
    char what[128];
    snprintf(what, sizeof what, "linear %lldx%lldx%lld vs the reference on bf16-rounded x", (long long)N, (long long)I,
             (long long)O);
    sl_test_close(what, y, yr, (size_t)(N * O), 2e-7 * (double)I * 0.1 + 1e-6, 1e-5);
    sl_linear_forward(yf, x, w, b, N, I, O, NULL);
    const double e = rel_err(y, yf, (size_t)(N * O));
    CHECK(e > 0 && e < 1e-2, "linear vs fp32 on the unrounded x: rel %.2e (the rounding of x, bfloat16's 2^-9)", e);

    float *d = calloc((size_t)(N * I), sizeof(float)), *d2 = calloc((size_t)(N * I), sizeof(float));
    float *dr = calloc((size_t)(N * I), sizeof(float));
    omp_set_num_threads(1);
    sl_linear_backward_input_bf16(d, y, wb, N, I, O, &k_avx);
    sl_linear_backward(d2, NULL, NULL, y, x, w, N, I, O, &k_bf);
    CHECK(same_bits(d, d2, (size_t)(N * I)), "linear input gradient: bf16 weights == the bf16 kernel (bitwise)");
    omp_set_num_threads(2);
    memset(d2, 0, (size_t)(N * I) * sizeof(float));
    sl_linear_backward_input_bf16(d2, y, wb, N, I, O, NULL);
    CHECK(same_bits(d, d2, (size_t)(N * I)), "linear input gradient: 1 and 2 threads the same bits");
    float *yrr = round_copy(y, (size_t)(N * O));
    sl_linear_backward_ref(dr, NULL, NULL, yrr, x, w, N, I, O);
    snprintf(what, sizeof what, "linear input gradient vs the reference on bf16-rounded dout");
    sl_test_close(what, d, dr, (size_t)(N * I), 2e-7 * (double)O * 0.1 + 1e-6, 1e-5);
    free(x), free(w), free(b), free(wb), free(y), free(y2), free(yr), free(yf), free(xr), free(d), free(d2), free(dr), free(yrr);
}

static void test_conv(const int64_t *q) { /* B Ci H Co k stride */
    const SlKernels k_avx = {SL_GEMM_KERNEL_AVX512, 0, 0}, k_bf = {SL_GEMM_KERNEL_BF16, 0, 0};
    SlConvDims d = sl_conv_dims(q[0], q[1], q[2], q[2], q[3], q[4], q[5], q[4] / 2, q[4] / 2, q[4] / 2, q[4] / 2);
    const size_t nx = (size_t)(d.B * d.Ci * d.H * d.W), ny = (size_t)(d.B * d.Co * d.Ho * d.Wo);
    const size_t nw = (size_t)(d.Co * d.Ci * d.kh * d.kw);
    const double K = (double)(d.Ci * d.kh * d.kw);
    float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float)), *b = malloc((size_t)d.Co * sizeof(float));
    uint16_t *wb = malloc(nw * sizeof(uint16_t));
    sl_test_fill(x, nx, 8, 1.0f), sl_test_fill(w, nw, 9, 0.05f), sl_test_fill(b, (size_t)d.Co, 10, 0.1f);
    sl_f32_to_bf16(wb, w, nw);
    sl_bf16_to_f32(w, wb, nw);
    float *work = malloc((sl_conv2d_workspace(&d) + 1) * sizeof(float));
    float *y = malloc(ny * sizeof(float)), *y2 = malloc(ny * sizeof(float)), *yr = malloc(ny * sizeof(float));
    char what[160];
    snprintf(what, sizeof what, "conv B%lld Ci%lld %lldpx Co%lld k%lld s%lld", (long long)q[0], (long long)q[1],
             (long long)q[2], (long long)q[3], (long long)q[4], (long long)q[5]);
    omp_set_num_threads(1);
    sl_conv2d_forward_bf16(y, x, wb, b, &d, work, &k_avx);
    sl_conv2d_forward(y2, x, w, b, &d, work, &k_bf);
    CHECK(same_bits(y, y2, ny), "%s forward: bf16 weights == the bf16 kernel on the widened weights (bitwise)", what);
    omp_set_num_threads(2);
    sl_conv2d_forward_bf16(y2, x, wb, b, &d, work, NULL);
    CHECK(same_bits(y, y2, ny), "%s forward: 1 and 2 threads the same bits", what);
    float *xr = round_copy(x, nx);
    sl_conv2d_forward_ref(yr, xr, w, b, &d, NULL);
    char w2[320];
    snprintf(w2, sizeof w2, "%s forward vs the reference on bf16-rounded x", what);
    sl_test_close(w2, y, yr, ny, 2e-7 * K * 0.05 + 1e-6, 1e-5);

    float *g = calloc(nx, sizeof(float)), *g2 = calloc(nx, sizeof(float)), *gr = calloc(nx, sizeof(float));
    omp_set_num_threads(1);
    sl_conv2d_backward_input_bf16(g, y, wb, &d, work, &k_avx);
    sl_conv2d_backward(g2, NULL, NULL, y, x, w, &d, work, &k_bf);
    CHECK(same_bits(g, g2, nx), "%s input gradient: bf16 weights == the bf16 kernel (bitwise)", what);
    omp_set_num_threads(2);
    memset(g2, 0, nx * sizeof(float));
    sl_conv2d_backward_input_bf16(g2, y, wb, &d, work, NULL);
    CHECK(same_bits(g, g2, nx), "%s input gradient: 1 and 2 threads the same bits", what);
    float *yrr = round_copy(y, ny);
    sl_conv2d_backward_ref(gr, NULL, NULL, yrr, x, w, &d, NULL);
    snprintf(w2, sizeof w2, "%s input gradient vs the reference on bf16-rounded dout", what);
    sl_test_close(w2, g, gr, nx, 2e-7 * (double)(d.Co * d.kh * d.kw) * 0.05 * 4 + 1e-6, 1e-5);
    free(x), free(w), free(b), free(wb), free(work), free(y), free(y2), free(yr), free(xr), free(g), free(g2), free(gr);
    free(yrr);
}

static void test_kernels(void) {
    const int saved = omp_get_max_threads();
    test_linear(77, 200, 130);
    test_linear(256, 320, 320);
    test_linear(5, 64, 40); /* small: one tile, the skinny paths */
    const int64_t geo[][6] = {{2, 64, 16, 96, 3, 1}, {1, 32, 13, 40, 3, 2}, {1, 96, 8, 64, 1, 1},
                              {2, 32, 8, 64, 3, 1} /* 8x8: one product across the batch */};
    for (size_t i = 0; i < sizeof geo / sizeof geo[0]; i++) test_conv(geo[i]);
    omp_set_num_threads(saved);
}

/* ---- the tiny-sd1 U-Net against the golden files ---- */

typedef struct Golden {
    SlStFile f;
    float *sample, *ts, *ehs, *out, *target, *loss;
    int64_t no, B, H, W, T;
} Golden;

static float *gold_f32(Golden *g, const char *name, int64_t *n) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const SlStEntry *e = sl_st_find(&g->f, name);
    if (!e) return NULL;
    const int64_t k = sl_shape_numel(e->ndim, e->shape);
    float *p = malloc((size_t)(k ? k : 1) * sizeof(float));
    if (sl_st_read_f32(&g->f, e, p, &ctx) != SL_OK) {
        free(p);
        return NULL;
    }
    if (n) *n = k;
    return p;
}

static int gold_open(Golden *g, const char *dir) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char p[4200];
    snprintf(p, sizeof p, "%s/expected.safetensors", dir);
    if (sl_st_open(&g->f, p, &ctx) != SL_OK) return 0;
    g->sample = gold_f32(g, "unet.in.sample", NULL), g->ts = gold_f32(g, "unet.in.timesteps", NULL);
    g->ehs = gold_f32(g, "unet.in.encoder_hidden_states", NULL), g->out = gold_f32(g, "unet.out", &g->no);
    g->target = gold_f32(g, "lora.in.target", NULL), g->loss = gold_f32(g, "lora.loss", NULL);
    const SlStEntry *es = sl_st_find(&g->f, "unet.in.sample"), *ee = sl_st_find(&g->f, "unet.in.encoder_hidden_states");
    if (!es || !ee || !g->sample || !g->ts || !g->ehs || !g->out || !g->target || !g->loss) return 0;
    g->B = es->shape[0], g->H = es->shape[2], g->W = es->shape[3], g->T = ee->shape[1];
    return 1;
}

static void gold_close(Golden *g) {
    free(g->sample), free(g->ts), free(g->ehs), free(g->out), free(g->target), free(g->loss);
    sl_st_close(&g->f);
}

/* The golden LoRA step on u: out, loss, the 64 gradients (dA, dB of each module, in order)
 * and the smallest cosine of one of them against PEFT's. */
typedef struct Step {
    float *out, *grads;
    int64_t ng;
    int n_compared;
    double loss, min_cos;
} Step;

static void lora_step(SlUNet *u, Golden *g, const char *dir, Step *s, SlCtx *ctx) {
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, u, ctx), ctx);
    char p[4200];
    snprintf(p, sizeof p, "%s/lora/pytorch_lora_weights.safetensors", dir);
    SlAdapter ad;
    SlAdapterLoadOpts lo = {.alpha = 8.0f};
    CHECK_OK(sl_adapter_load(&ad, p, &sites, &lo, NULL, ctx), ctx);
    CHECK_OK(sl_adapter_enable_grads(&ad, ctx), ctx);
    SlAdapterSet set;
    SlAdapter *one[1] = {&ad};
    CHECK_OK(sl_adapter_set_apply(&set, &sites, one, NULL, 1, 0.0f, 0, ctx), ctx);
    const size_t no = (size_t)g->no;
    s->out = malloc(no * sizeof(float));
    float *dout = malloc(no * sizeof(float));
    sl_unet_forward(u, s->out, g->sample, g->ts, g->ehs);
    double loss = 0;
    for (size_t i = 0; i < no; i++) {
        const double d = (double)s->out[i] - g->target[i];
        loss += d * d;
        dout[i] = (float)(2.0 * d / (double)no);
    }
    s->loss = loss / (double)no;
    sl_adapter_zero_grads(&ad);
    sl_unet_backward(u, NULL, dout);
    s->ng = 0;
    s->n_compared = 0;
    s->min_cos = 2;
    for (int i = 0; i < ad.n; i++) s->ng += ad.mods[i].r * ad.mods[i].I + ad.mods[i].O * ad.mods[i].r;
    s->grads = malloc((size_t)s->ng * sizeof(float));
    int64_t k = 0;
    for (int i = 0; i < ad.n; i++) {
        const SlLoraMod *lm = &ad.mods[i];
        memcpy(s->grads + k, lm->dA, (size_t)(lm->r * lm->I) * sizeof(float)), k += lm->r * lm->I;
        memcpy(s->grads + k, lm->dB, (size_t)(lm->O * lm->r) * sizeof(float)), k += lm->O * lm->r;
        char key[300];
        for (int ab = 0; ab < 2; ab++) { /* against PEFT's gradient of the same tensor */
            snprintf(key, sizeof key, "lora.grad.%s.lora_%c.weight", lm->name, ab ? 'B' : 'A');
            int64_t n = 0;
            float *gr = gold_f32(g, key, &n);
            CHECK(gr != NULL, "%s present", key);
            if (!gr) continue;
            const double c = cosine(ab ? lm->dB : lm->dA, gr, (size_t)n);
            CHECK(c >= GRAD_COS, "%s: cosine %.6f against PEFT's (want >= %.3f)", key, c, GRAD_COS);
            s->min_cos = fmin(s->min_cos, c);
            s->n_compared++;
            free(gr);
        }
    }
    sl_adapter_set_remove(&set);
    sl_adapter_free(&ad);
    sl_sites_free(&sites);
    free(dout);
}

static void test_unet(const char *dir) {
    Golden g;
    if (!gold_open(&g, dir)) {
        CHECK(0, "golden inputs in %s", dir);
        return;
    }
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1, .unet_bf16 = 1};
    SlModel m;
    if (sl_model_load(&m, dir, &mo, &ctx) != SL_OK) {
        CHECK(0, "load %s --base bf16: %s", dir, ctx.msg);
        gold_close(&g);
        return;
    }
    const int nb = sl_unet_count_bf16(&m.unet);
    CHECK(nb > 0 && nb == m.unet.n_mods && sl_unet_count_half(&m.unet) == nb, "every linear and conv is bfloat16 (%d of %d)",
          nb, m.unet.n_mods);
    CHECK_OK(sl_unet_plan(&m.unet, g.B, g.H, g.W, g.T, &ctx), &ctx);
    const size_t no = (size_t)g.no;
    float *out = malloc(no * sizeof(float));
    sl_unet_forward(&m.unet, out, g.sample, g.ts, g.ehs);
    const double scale = sl_test_scale(g.out, no);
    double maxerr = 0;
    for (size_t i = 0; i < no; i++) maxerr = fmax(maxerr, fabs((double)out[i] - g.out[i]));
    printf("bf16 base: unet.out max |err| %.3e = %.2e of max |golden| %.3g\n", maxerr, maxerr / scale, scale);
    CHECK(maxerr <= OUT_TOL * scale && maxerr > 0, "unet.out: max err %.3e of %.3g (want <= %.0e of it, > 0)", maxerr,
          scale, OUT_TOL);

    /* the golden LoRA: gradients against PEFT's, with 1 and 2 threads */
    const int saved = omp_get_max_threads();
    Step s1, s2;
    omp_set_num_threads(1);
    lora_step(&m.unet, &g, dir, &s1, &ctx);
    omp_set_num_threads(2);
    lora_step(&m.unet, &g, dir, &s2, &ctx);
    omp_set_num_threads(saved);
    CHECK(same_bits(s1.out, s2.out, no), "LoRA forward: 1 and 2 threads the same bits");
    CHECK(s1.ng == s2.ng && same_bits(s1.grads, s2.grads, (size_t)s1.ng), "LoRA gradients: 1 and 2 threads the same bits");
    const double lrel = fabs(s1.loss - g.loss[0]) / g.loss[0];
    printf("bf16 base: loss %.7g vs golden %.7g (rel %.2e)\n", s1.loss, (double)g.loss[0], lrel);
    CHECK(lrel <= LOSS_RTOL, "loss rel %.2e (want <= %.0e)", lrel, LOSS_RTOL);
    printf("bf16 base: %d LoRA gradients against PEFT's fp32 ones: smallest cosine %.6f (want >= %.3f)\n",
           s1.n_compared, s1.min_cos, GRAD_COS);
    CHECK(s1.n_compared == 64, "64 golden gradients compared (%d)", s1.n_compared);

    /* DoRA needs a dense weight: refused; widening back leaves no bfloat16 weight */
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, &m.unet, &ctx), &ctx);
    SlAdapterOpts o = sl_adapter_opts_default();
    o.dora = 1;
    o.rank = 4;
    SlAdapter bad;
    CHECK(sl_adapter_create(&bad, &sites, &o, &ctx) == SL_ERR_UNSUPPORTED, "DoRA on a bf16 base refused: %s", ctx.msg);
    sl_sites_free(&sites);
    CHECK_OK(sl_unet_half_to_dense(&m.unet, NULL, 0, &ctx), &ctx);
    CHECK(sl_unet_count_half(&m.unet) == 0 && sl_unet_count_bf16(&m.unet) == 0, "widened back: %d 16-bit weights left",
          sl_unet_count_half(&m.unet));
    int flags = 0;
    for (int j = 0; j < m.unet.n_mods; j++)
        flags += m.unet.mods[j].lin ? m.unet.mods[j].lin->w16_bf16 : m.unet.mods[j].conv->w16_bf16;
    CHECK(flags == 0, "widened back: %d modules still flagged bfloat16", flags);
    free(s1.out), free(s1.grads), free(s2.out), free(s2.grads), free(out);
    sl_model_free(&m);
    gold_close(&g);
}

/* ---- loading ---- */

/* The 16-bit weight of param p (NULL when it is fp32). */
static const uint16_t *param_w16(const SlUNet *u, const SlUNetParam *p) {
    for (int j = 0; j < u->n_mods; j++) {
        const SlUNetModRef *m = &u->mods[j];
        if (m->lin && p->w == &m->lin->w) return m->lin->w16;
        if (m->conv && p->w == &m->conv->w) return m->conv->w16;
    }
    return NULL;
}

/* dir/unet/diffusion_pytorch_model.safetensors from a: the linear and conv weights stored as
 * `store` (a bfloat16 weight widened first), the rest F32; the other parts linked from the
 * golden model. */
static void write_model(const char *dir, const char *golden, SlUNet *a, SlDType store, SlCtx *ctx) {
    char sub[4200], f[4300];
    mkdir(dir, 0755);
    snprintf(sub, sizeof sub, "%s/unet", dir);
    mkdir(sub, 0755);
    snprintf(f, sizeof f, "%s/diffusion_pytorch_model.safetensors", sub);
    SlStWriter wr;
    sl_st_writer_init(&wr);
    for (int i = 0; i < a->n_params; i++) {
        const SlUNetParam *p = &a->params[i];
        if (!sl_unet_module_of_param(a, p)) {
            CHECK_OK(sl_st_writer_add(&wr, p->name, SL_F32, p->ndim, p->shape, p->init_w, ctx), ctx);
            continue;
        }
        const int64_t n = sl_shape_numel(p->ndim, p->shape);
        float *tmp = malloc((size_t)n * sizeof(float));
        if (p->init_w) memcpy(tmp, p->init_w, (size_t)n * sizeof(float));
        else sl_bf16_to_f32(tmp, param_w16(a, p), (size_t)n);
        CHECK_OK(sl_st_writer_add_f32_as(&wr, p->name, store, p->ndim, p->shape, tmp, ctx), ctx);
        free(tmp);
    }
    CHECK_OK(sl_st_writer_save(&wr, f, ctx), ctx);
    sl_st_writer_free(&wr);
    const char *parts[] = {"vae", "text_encoder", "scheduler", "model_index.json", "unet/config.json"};
    for (int i = 0; i < 5; i++) {
        char s1[4300], s2[4300];
        snprintf(s1, sizeof s1, "%s/%s", golden, parts[i]);
        snprintf(s2, sizeof s2, "%s/%s", dir, parts[i]);
        unlink(s2);
        CHECK(symlink(s1, s2) == 0, "link %s", s2);
    }
}

/* Loads dir's U-Net into bfloat16 (*u made here; the caller frees it). */
static SlStatus load_bf16(const char *dir, const SlUNetConfig *cfg, SlUNet *u, SlHalfStats *s, SlCtx *ctx) {
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/unet", dir);
    SlWeights w;
    SL_TRY(sl_weights_open_dir(&w, sub, ctx));
    SlStatus st = sl_unet_init_shapes(u, cfg, ctx);
    if (!st) st = sl_unet_load_bf16(u, &w, s, ctx);
    sl_weights_close(&w);
    return st;
}

static void test_load(const char *golden) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1};
    SlModel a, b;
    if (sl_model_load(&a, golden, &mo, &ctx) != SL_OK) {
        CHECK(0, "load: %s", ctx.msg);
        return;
    }
    SlHalfStats s;
    CHECK_OK(sl_unet_to_bf16(&a.unet, &s, &ctx), &ctx);
    CHECK(s.fmt == SL_HALF_BF16 && s.n_layers == a.unet.n_mods && s.n_rounded > 0 && s.half_bytes * 2 == s.fp32_bytes,
          "stats: %d layers, %lld rounded, %zu/%zu bytes", s.n_layers, (long long)s.n_rounded, s.half_bytes, s.fp32_bytes);
    CHECK(sl_unet_count_bf16(&a.unet) == a.unet.n_mods, "in place: every module bfloat16");
    mo.unet_bf16 = 1;
    if (sl_model_load(&b, golden, &mo, &ctx) != SL_OK) {
        CHECK(0, "load bf16: %s", ctx.msg);
        sl_model_free(&a);
        return;
    }
    int same = 1, nearest = 1;
    for (int i = 0; i < a.unet.n_params; i++) {
        const SlUNetParam *p = &a.unet.params[i];
        const uint16_t *ha = param_w16(&a.unet, p), *hb = param_w16(&b.unet, &b.unet.params[i]);
        if (!ha) continue;
        const int64_t n = sl_shape_numel(p->ndim, p->shape);
        same &= hb && !memcmp(ha, hb, (size_t)n * sizeof(uint16_t));
    }
    CHECK(same, "streaming load == in-place conversion, every weight");

    /* a BF16 file: nothing rounded, the same bits */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/test_bf16_model", sl_test_binary());
    write_model(dir, golden, &a.unet, SL_BF16, &ctx);
    SlUNet u;
    SlHalfStats s2;
    CHECK_OK(load_bf16(dir, &a.unet_cfg, &u, &s2, &ctx), &ctx);
    CHECK(s2.n_rounded == 0 && s2.n_layers == s.n_layers, "BF16 file: %lld values rounded (want 0)", (long long)s2.n_rounded);
    same = 1;
    for (int i = 0; i < a.unet.n_params; i++) {
        const uint16_t *ha = param_w16(&a.unet, &a.unet.params[i]), *hu = param_w16(&u, &u.params[i]);
        if (ha) same &= hu && !memcmp(ha, hu, (size_t)sl_shape_numel(u.params[i].ndim, u.params[i].shape) * 2);
    }
    CHECK(same, "BF16 file: every weight's bits as stored");
    sl_unet_free(&u);

    /* an F16 file (the checkpoints people have; from the fp32 weights): each half rounded to
     * the nearest bfloat16 */
    SlModel c;
    mo.unet_bf16 = 0;
    CHECK_OK(sl_model_load(&c, golden, &mo, &ctx), &ctx);
    snprintf(dir, sizeof dir, "%s/test_bf16_model_f16", sl_test_binary());
    write_model(dir, golden, &c.unet, SL_F16, &ctx);
    sl_model_free(&c);
    CHECK_OK(load_bf16(dir, &a.unet_cfg, &u, &s2, &ctx), &ctx);
    SlWeights w;
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/unet", dir);
    CHECK_OK(sl_weights_open_dir(&w, sub, &ctx), &ctx);
    int64_t n_diff = 0;
    for (int i = 0; i < u.n_params && nearest; i++) {
        const SlUNetParam *p = &u.params[i];
        const uint16_t *hu = param_w16(&u, p);
        if (!hu) continue;
        const SlStFile *f = NULL;
        const SlStEntry *e = sl_weights_find(&w, p->name, &f);
        nearest &= e && e->dtype == SL_F16;
        if (!nearest) break;
        const uint16_t *h = (const uint16_t *)sl_st_data(f, e);
        for (int64_t k = 0; k < sl_shape_numel(p->ndim, p->shape); k++) {
            uint16_t hk;
            memcpy(&hk, h + k, 2);
            nearest &= hu[k] == sl_float_to_bf16(sl_half_to_float(hk));
            n_diff += sl_bf16_to_float(hu[k]) != sl_half_to_float(hk);
        }
    }
    sl_weights_close(&w);
    CHECK(nearest, "F16 file: every weight is the nearest bfloat16 of its half");
    CHECK(s2.n_rounded == n_diff && n_diff > 0, "F16 file: %lld values rounded, counted %lld", (long long)s2.n_rounded,
          (long long)n_diff);
    sl_unet_free(&u);

    /* a value that rounds to Inf in bfloat16: refused naming the weight, the U-Net unchanged */
    CHECK_OK(sl_model_load(&c, golden, &mo, &ctx), &ctx);
    const SlUNetParam *p0 = NULL;
    for (int i = 0; i < c.unet.n_params && !p0; i++)
        if (c.unet.params[i].ndim >= 2) p0 = &c.unet.params[i];
    p0->init_w[3] = FLT_MAX;
    CHECK(sl_unet_to_bf16(&c.unet, NULL, &ctx) == SL_ERR_NUMERIC && strstr(ctx.msg, p0->name) && strstr(ctx.msg, "Inf"),
          "a value rounding to Inf refused naming the weight: %s", ctx.msg);
    CHECK(sl_unet_count_half(&c.unet) == 0, "no weight converted after the refusal");
    sl_model_free(&c);

    /* NF4 + bf16, fp16 + bf16: refused */
    CHECK_OK(sl_model_load(&c, golden, &mo, &ctx), &ctx);
    CHECK_OK(sl_unet_quantize_nf4(&c.unet, NULL, 0, NULL, &ctx), &ctx);
    CHECK(sl_unet_to_bf16(&c.unet, NULL, &ctx) == SL_ERR_UNSUPPORTED, "bf16 on an NF4 U-Net refused: %s", ctx.msg);
    sl_model_free(&c);
    CHECK_OK(sl_model_load(&c, golden, &mo, &ctx), &ctx);
    CHECK_OK(sl_unet_to_half(&c.unet, NULL, &ctx), &ctx);
    CHECK(sl_unet_to_bf16(&c.unet, NULL, &ctx) == SL_ERR_UNSUPPORTED && strstr(ctx.msg, "binary16"),
          "bf16 on an fp16 U-Net refused: %s", ctx.msg);
    sl_model_free(&c);
    mo.unet_half = mo.unet_bf16 = 1;
    CHECK(sl_model_load(&c, golden, &mo, &ctx) == SL_ERR_ARG, "fp16 and bf16 at once refused: %s", ctx.msg);
    sl_model_free(&a), sl_model_free(&b);
}

int main(void) {
    char rel[4096], golden[4096];
    snprintf(rel, sizeof rel, "%s/golden/tiny-sd1", sl_test_shared());
    if (!realpath(rel, golden)) snprintf(golden, sizeof golden, "%s", rel);
    test_kernels();
    test_unet(golden);
    test_load(golden);
    return sl_test_finish("test_bf16_base");
}
