/* test_half.c - a frozen binary16 U-Net (pipeline/half.h, `--base fp16`).
 *
 * The binary16 kernels are the fp32 kernels with the halves widened while packing, so a
 * U-Net held in binary16 must give the SAME BITS as the fp32 U-Net holding the widened
 * values (sl_unet_half_to_dense): forward, and the LoRA step's backward (dA, dB and the
 * input gradient through every frozen linear and conv). Against the original fp32 U-Net the
 * only difference is the rounding of the weights (relative error <= 2^-11 per weight):
 * outputs agree to HALF_OUT_RTOL of their scale. Also: the streaming load equals the
 * in-place conversion, an F16 file loads exactly (no value rounded), a value outside
 * binary16's range and NF4 + fp16 are refused, DoRA on the frozen base is refused.
 */
#define _DEFAULT_SOURCE /* realpath */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "core/tensor.h"
#include "nn/nn.h"
#include "pipeline/half.h"
#include "pipeline/quant.h"
#include "styles/adapter.h"
#include "test_util.h"

/* Output of the tiny U-Net on binary16 weights vs fp32: weights rounded by <= 2^-11
 * relative; through ~20 layers the output moves by ~1e-3 of its scale at most. */
#define HALF_OUT_RTOL 3e-3

#define B_ 2
#define H_ 16
#define T_ 7

typedef struct In {
    float *x, t[B_], *ehs, *dout;
    size_t nx, no, ne;
} In;

static void in_make(In *in, const SlUNetConfig *c) {
    in->nx = (size_t)B_ * c->in_channels * H_ * H_;
    in->no = (size_t)B_ * c->out_channels * H_ * H_;
    in->ne = (size_t)B_ * T_ * c->cross_dim;
    in->x = malloc(in->nx * sizeof(float)), in->ehs = malloc(in->ne * sizeof(float));
    in->dout = malloc(in->no * sizeof(float));
    sl_test_fill(in->x, in->nx, 1, 1.0f), sl_test_fill(in->ehs, in->ne, 2, 1.0f), sl_test_fill(in->dout, in->no, 3, 1.0f);
    in->t[0] = 411.0f, in->t[1] = 37.0f;
}

static void in_free(In *in) { free(in->x), free(in->ehs), free(in->dout); }

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* Everything one LoRA step computes: output, d sample, and every dA / dB. */
typedef struct Step {
    float *out, *ds, *dA, *dB;
    int64_t na, nb;
} Step;

static void step_free(Step *s) { free(s->out), free(s->ds), free(s->dA), free(s->dB); }

static void lora_step(SlUNet *u, In *in, SlAdapter *ad, Step *s, SlCtx *ctx) {
    CHECK_OK(sl_unet_plan(u, B_, H_, H_, T_, ctx), ctx);
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, u, ctx), ctx);
    SlAdapter *one[1] = {ad};
    SlAdapterSet set;
    CHECK_OK(sl_adapter_set_apply(&set, &sites, one, NULL, 1, 0.0f, 0, ctx), ctx);
    sl_adapter_zero_grads(ad);
    s->na = s->nb = 0;
    for (int i = 0; i < ad->n; i++) s->na += ad->mods[i].r * ad->mods[i].I * ad->mods[i].k * ad->mods[i].k, s->nb += ad->mods[i].O * ad->mods[i].r;
    s->out = malloc(in->no * sizeof(float)), s->ds = calloc(in->nx, sizeof(float));
    s->dA = malloc((size_t)s->na * sizeof(float)), s->dB = malloc((size_t)s->nb * sizeof(float));
    sl_unet_forward(u, s->out, in->x, in->t, in->ehs);
    sl_unet_backward(u, s->ds, in->dout);
    int64_t ka = 0, kb = 0;
    for (int i = 0; i < ad->n; i++) {
        const SlLoraMod *lm = &ad->mods[i];
        const int64_t a = lm->r * lm->I * lm->k * lm->k, b = lm->O * lm->r;
        memcpy(s->dA + ka, lm->dA, (size_t)a * sizeof(float));
        memcpy(s->dB + kb, lm->dB, (size_t)b * sizeof(float));
        ka += a, kb += b;
    }
    sl_adapter_set_remove(&set);
    sl_sites_free(&sites);
}

static double rel_err(const float *a, const float *b, size_t n) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) e += (a[i] - (double)b[i]) * (a[i] - (double)b[i]), s += (double)b[i] * b[i];
    return sqrt(e / (s + 1e-300));
}

/* The kernels alone: binary16 linear/conv vs fp32 on the widened weights, bitwise. */
static void test_kernels(void) {
    const int64_t N = 77, I = 200, O = 130;
    float *x = malloc(N * I * sizeof(float)), *w = malloc(O * I * sizeof(float)), *b = malloc(O * sizeof(float));
    uint16_t *h = malloc(O * I * sizeof(uint16_t));
    sl_test_fill(x, (size_t)(N * I), 5, 1.0f), sl_test_fill(w, (size_t)(O * I), 6, 0.1f), sl_test_fill(b, (size_t)O, 7, 0.1f);
    sl_f32_to_f16(h, w, (size_t)(O * I));
    sl_f16_to_f32(w, h, (size_t)(O * I));
    float *y1 = malloc(N * O * sizeof(float)), *y2 = malloc(N * O * sizeof(float));
    sl_linear_forward(y1, x, w, b, N, I, O, NULL);
    sl_linear_forward_f16(y2, x, h, b, N, I, O, NULL);
    CHECK(same_bits(y1, y2, (size_t)(N * O)), "linear forward: binary16 == fp32 on the widened weight");
    float *d1 = calloc((size_t)(N * I), sizeof(float)), *d2 = calloc((size_t)(N * I), sizeof(float));
    sl_linear_backward(d1, NULL, NULL, y1, x, w, N, I, O, NULL);
    sl_linear_backward_input_f16(d2, y1, h, N, I, O, NULL);
    CHECK(same_bits(d1, d2, (size_t)(N * I)), "linear input gradient: binary16 == fp32");
    free(x), free(w), free(b), free(h), free(y1), free(y2), free(d1), free(d2);

    const int64_t geo[][6] = {{2, 64, 16, 96, 3, 1}, {1, 32, 13, 40, 3, 2}, {1, 96, 8, 64, 1, 1}}; /* B Ci H Co k stride */
    for (size_t g = 0; g < sizeof geo / sizeof geo[0]; g++) {
        const int64_t *q = geo[g];
        SlConvDims d = sl_conv_dims(q[0], q[1], q[2], q[2], q[3], q[4], q[5], q[4] / 2, q[4] / 2, q[4] / 2, q[4] / 2);
        const size_t nx = (size_t)(d.B * d.Ci * d.H * d.W), ny = (size_t)(d.B * d.Co * d.Ho * d.Wo);
        const size_t nw = (size_t)(d.Co * d.Ci * d.kh * d.kw);
        float *cx = malloc(nx * sizeof(float)), *cw = malloc(nw * sizeof(float)), *cb = malloc((size_t)d.Co * sizeof(float));
        uint16_t *ch = malloc(nw * sizeof(uint16_t));
        sl_test_fill(cx, nx, 8, 1.0f), sl_test_fill(cw, nw, 9, 0.05f), sl_test_fill(cb, (size_t)d.Co, 10, 0.1f);
        sl_f32_to_f16(ch, cw, nw);
        sl_f16_to_f32(cw, ch, nw);
        float *work = malloc((sl_conv2d_workspace(&d) + 1) * sizeof(float));
        float *c1 = malloc(ny * sizeof(float)), *c2 = malloc(ny * sizeof(float));
        sl_conv2d_forward(c1, cx, cw, cb, &d, work, NULL);
        sl_conv2d_forward_f16(c2, cx, ch, cb, &d, work, NULL);
        CHECK(same_bits(c1, c2, ny), "conv %zu forward: binary16 == fp32 on the widened weight", g);
        float *g1 = calloc(nx, sizeof(float)), *g2 = calloc(nx, sizeof(float));
        sl_conv2d_backward(g1, NULL, NULL, c1, cx, cw, &d, work, NULL);
        sl_conv2d_backward_input_f16(g2, c1, ch, &d, work, NULL);
        CHECK(same_bits(g1, g2, nx), "conv %zu input gradient: binary16 == fp32", g);
        free(cx), free(cw), free(cb), free(ch), free(work), free(c1), free(c2), free(g1), free(g2);
    }
}

/* A LoRA step (attn + resnet convs, so LoCon hooks sit on binary16 convs) on the fp16 base
 * vs the same on the widened fp32 weights (bitwise) and on the original fp32 weights. */
static void test_unet(const char *golden) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1}, mh = mo;
    mh.unet_half = 1;
    SlModel f, h;
    if (sl_model_load(&f, golden, &mo, &ctx) != SL_OK || sl_model_load(&h, golden, &mh, &ctx) != SL_OK) {
        CHECK(0, "load %s: %s", golden, ctx.msg);
        return;
    }
    const int nh = sl_unet_count_half(&h.unet);
    CHECK(nh > 0 && nh == h.unet.n_mods, "every linear and conv is binary16 (%d of %d)", nh, h.unet.n_mods);
    CHECK(h.unet.weights.size < f.unet.weights.size * 6 / 10, "weight arena %zu vs fp32 %zu", h.unet.weights.size,
          f.unet.weights.size);
    In in;
    in_make(&in, &f.unet_cfg);
    CHECK_OK(sl_unet_plan(&h.unet, B_, H_, H_, T_, &ctx), &ctx); /* sites need the planned rows */
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, &h.unet, &ctx), &ctx);
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "attn,resnet";
    o.rank = 4;
    SlAdapter ad;
    CHECK_OK(sl_adapter_create(&ad, &sites, &o, &ctx), &ctx);
    sl_sites_free(&sites);
    o.dora = 1;
    o.targets = "attn";
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, &h.unet, &ctx), &ctx);
    SlAdapter bad;
    CHECK(sl_adapter_create(&bad, &sites, &o, &ctx) == SL_ERR_UNSUPPORTED, "DoRA on an fp16 base refused: %s", ctx.msg);
    sl_sites_free(&sites);
    CHECK_OK(sl_adapter_enable_grads(&ad, &ctx), &ctx);
    int convs = 0;
    for (int i = 0; i < ad.n; i++) {
        sl_test_fill(ad.mods[i].B, (size_t)(ad.mods[i].O * ad.mods[i].r), 100 + (uint32_t)i, 0.05f);
        convs += ad.mods[i].k > 1;
    }
    CHECK(convs > 0, "the adapter has conv (LoCon) modules");
    Step sh, sw, sf;
    lora_step(&h.unet, &in, &ad, &sh, &ctx);
    lora_step(&f.unet, &in, &ad, &sf, &ctx);
    CHECK_OK(sl_unet_half_to_dense(&h.unet, NULL, 0, &ctx), &ctx);
    CHECK(sl_unet_count_half(&h.unet) == 0, "widened back: %d binary16 weights left", sl_unet_count_half(&h.unet));
    lora_step(&h.unet, &in, &ad, &sw, &ctx);
    CHECK(same_bits(sh.out, sw.out, in.no), "output: fp16 base == fp32 holding the widened weights (bitwise)");
    CHECK(same_bits(sh.ds, sw.ds, in.nx), "d sample: bitwise");
    CHECK(same_bits(sh.dA, sw.dA, (size_t)sh.na), "dA: bitwise");
    CHECK(same_bits(sh.dB, sw.dB, (size_t)sh.nb), "dB: bitwise");
    const double eo = rel_err(sh.out, sf.out, in.no), ea = rel_err(sh.dA, sf.dA, (size_t)sh.na);
    printf("fp16 vs fp32 base: output rel %.2e, dA rel %.2e, dB rel %.2e, d sample rel %.2e\n", eo, ea,
           rel_err(sh.dB, sf.dB, (size_t)sh.nb), rel_err(sh.ds, sf.ds, in.nx));
    CHECK(eo > 0 && eo < HALF_OUT_RTOL, "output vs the fp32 base: rel %.2e (rounding happened, within %.0e)", eo, HALF_OUT_RTOL);
    CHECK(ea < 10 * HALF_OUT_RTOL, "dA vs the fp32 base: rel %.2e", ea);
    step_free(&sh), step_free(&sw), step_free(&sf);
    sl_adapter_free(&ad);
    in_free(&in);
    sl_model_free(&f), sl_model_free(&h);
}

/* Streaming load == in-place conversion; an F16 file loads with nothing rounded; range and
 * format errors. */
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
    CHECK_OK(sl_unet_to_half(&a.unet, &s, &ctx), &ctx);
    CHECK(s.n_layers == a.unet.n_mods && s.n_rounded > 0 && s.half_bytes * 2 == s.fp32_bytes,
          "stats: %d layers, %lld rounded, %zu/%zu bytes", s.n_layers, (long long)s.n_rounded, s.half_bytes, s.fp32_bytes);
    mo.unet_half = 1;
    if (sl_model_load(&b, golden, &mo, &ctx) != SL_OK) {
        CHECK(0, "load fp16: %s", ctx.msg);
        sl_model_free(&a);
        return;
    }
    int same = 1;
    for (int j = 0; j < a.unet.n_mods; j++) {
        const SlUNetModRef *ma = &a.unet.mods[j], *mb = &b.unet.mods[j];
        const int64_t n = ma->lin ? ma->lin->O * ma->lin->I : ma->conv->Co * ma->conv->Ci * ma->conv->k * ma->conv->k;
        const uint16_t *ha = ma->lin ? ma->lin->w16 : ma->conv->w16, *hb = mb->lin ? mb->lin->w16 : mb->conv->w16;
        same &= ha && hb && !memcmp(ha, hb, (size_t)n * sizeof(uint16_t));
    }
    CHECK(same, "streaming load == in-place conversion, every weight");

    /* an F16 U-Net file: loads with no value rounded, same halves */
    char dir[4096], sub[4200], f[4300];
    snprintf(dir, sizeof dir, "%s/test_half_model", sl_test_binary());
    mkdir(dir, 0755);
    snprintf(sub, sizeof sub, "%s/unet", dir);
    mkdir(sub, 0755);
    snprintf(f, sizeof f, "%s/diffusion_pytorch_model.safetensors", sub);
    SlStWriter wr;
    sl_st_writer_init(&wr);
    for (int i = 0; i < a.unet.n_params; i++) { /* widened halves as F16, the rest as F32 */
        const SlUNetParam *p = &a.unet.params[i];
        if (p->init_w) {
            CHECK_OK(sl_st_writer_add(&wr, p->name, SL_F32, p->ndim, p->shape, p->init_w, &ctx), &ctx);
            continue;
        }
        const int64_t n = sl_shape_numel(p->ndim, p->shape);
        float *tmp = malloc((size_t)n * sizeof(float));
        const uint16_t *w16 = NULL;
        for (int j = 0; j < a.unet.n_mods; j++) {
            const SlUNetModRef *m = &a.unet.mods[j];
            if (m->lin && p->w == &m->lin->w) w16 = m->lin->w16;
            if (m->conv && p->w == &m->conv->w) w16 = m->conv->w16;
        }
        sl_f16_to_f32(tmp, w16, (size_t)n);
        CHECK_OK(sl_st_writer_add_f32_as(&wr, p->name, SL_F16, p->ndim, p->shape, tmp, &ctx), &ctx);
        free(tmp);
    }
    CHECK_OK(sl_st_writer_save(&wr, f, &ctx), &ctx);
    sl_st_writer_free(&wr);
    const char *parts[] = {"vae", "text_encoder", "scheduler", "model_index.json", "unet/config.json"};
    for (int i = 0; i < 5; i++) {
        char s1[4300], s2[4300];
        snprintf(s1, sizeof s1, "%s/%s", golden, parts[i]);
        snprintf(s2, sizeof s2, "%s/%s", dir, parts[i]);
        unlink(s2);
        CHECK(symlink(s1, s2) == 0, "link %s", s2);
    }
    SlWeights w;
    SlUNet u;
    CHECK_OK(sl_weights_open_dir(&w, sub, &ctx), &ctx);
    CHECK_OK(sl_unet_init_shapes(&u, &a.unet_cfg, &ctx), &ctx);
    SlHalfStats s2;
    CHECK_OK(sl_unet_load_half(&u, &w, &s2, &ctx), &ctx);
    CHECK(s2.n_rounded == 0 && s2.n_layers == s.n_layers, "F16 file: %lld values rounded (want 0)", (long long)s2.n_rounded);
    sl_weights_close(&w);
    sl_unet_free(&u);

    /* out of binary16's range: refused, naming the weight */
    SlModel c;
    mo.unet_half = 0;
    CHECK_OK(sl_model_load(&c, golden, &mo, &ctx), &ctx);
    const SlUNetParam *p0 = NULL;
    for (int i = 0; i < c.unet.n_params && !p0; i++)
        if (c.unet.params[i].ndim >= 2) p0 = &c.unet.params[i];
    p0->init_w[3] = 1e6f;
    CHECK(sl_unet_to_half(&c.unet, NULL, &ctx) == SL_ERR_NUMERIC && strstr(ctx.msg, p0->name) && strstr(ctx.msg, "65504"),
          "overflow refused naming the weight: %s", ctx.msg);
    CHECK(c.unet.params[0].init_w || sl_unet_count_half(&c.unet) == 0, "a refused conversion leaves the U-Net as it was");
    CHECK(sl_unet_count_half(&c.unet) == 0, "no weight converted after the refusal");
    sl_model_free(&c);

    /* NF4 + fp16: refused */
    CHECK_OK(sl_model_load(&c, golden, &mo, &ctx), &ctx);
    CHECK_OK(sl_unet_quantize_nf4(&c.unet, NULL, 0, NULL, &ctx), &ctx);
    CHECK(sl_unet_to_half(&c.unet, NULL, &ctx) == SL_ERR_UNSUPPORTED, "fp16 on an NF4 U-Net refused: %s", ctx.msg);
    sl_model_free(&c);
    sl_model_free(&a), sl_model_free(&b);
}

int main(void) {
    char rel[4096], golden[4096];
    snprintf(rel, sizeof rel, "%s/golden/tiny-sd1", sl_test_shared());
    if (!realpath(rel, golden)) snprintf(golden, sizeof golden, "%s", rel);
    test_kernels();
    test_unet(golden);
    test_load(golden);
    return sl_test_finish("test_half");
}
