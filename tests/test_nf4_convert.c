/* test_nf4_convert.c - NF4 U-Nets changing form: a folder written by sl_unet_nf4_write
 * loads as NF4 through plain sl_model_load (and dequantized with unet_dense), a foreign
 * stylora.quant value is refused, NF4 -> dense -> NF4 (sl_unet_dequantize_nf4_modules,
 * sl_unet_nf4_convert) gives the same bits, and the error sl_nf4_merge_error predicts
 * for re-quantizing a merged U-Net is the error the conversion then has.
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
#include "nn/nf4.h"
#include "pipeline/quant.h"
#include "styles/adapter.h"
#include "test_util.h"

#define B_ 1
#define H_ 16
#define T_ 7

typedef struct In {
    float *x, t[B_], *ehs, *out;
    size_t nx, no, ne;
} In;

static void in_make(In *in, const SlUNetConfig *c) {
    in->nx = (size_t)B_ * c->in_channels * H_ * H_;
    in->no = (size_t)B_ * c->out_channels * H_ * H_;
    in->ne = (size_t)B_ * T_ * c->cross_dim;
    in->x = malloc(in->nx * sizeof(float)), in->out = malloc(in->no * sizeof(float)), in->ehs = malloc(in->ne * sizeof(float));
    sl_test_fill(in->x, in->nx, 1, 1.0f), sl_test_fill(in->ehs, in->ne, 2, 1.0f);
    in->t[0] = 411.0f;
}

static void run(SlUNet *u, In *in, float *out, SlCtx *ctx) {
    CHECK_OK(sl_unet_plan(u, B_, H_, H_, T_, ctx), ctx);
    sl_unet_forward(u, out, in->x, in->t, in->ehs);
}

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* dir: a model folder with the golden parts linked and unet/ written from u. */
static void write_folder(const char *dir, const char *golden, SlUNet *u, SlCtx *ctx) {
    char sub[4200], f[4300];
    mkdir(dir, 0755);
    snprintf(sub, sizeof sub, "%s/unet", dir);
    mkdir(sub, 0755);
    snprintf(f, sizeof f, "%s/diffusion_pytorch_model.safetensors", sub);
    SlStWriter wr;
    sl_st_writer_init(&wr);
    CHECK_OK(sl_unet_nf4_write(u, &wr, SL_F32, NULL, ctx), ctx);
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

static void test_autoload(const char *golden, SlModel *q, In *in, const float *o_q, SlCtx *ctx) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/test_nf4_convert_model", sl_test_binary());
    write_folder(dir, golden, &q->unet, ctx);
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1};
    SlModel a;
    float *o = malloc(in->no * sizeof(float));
    if (sl_model_load(&a, dir, &mo, ctx) == SL_OK) {
        CHECK(sl_unet_count_nf4(&a.unet) == sl_unet_count_nf4(&q->unet), "plain sl_model_load: %d NF4 linears (want %d)",
              sl_unet_count_nf4(&a.unet), sl_unet_count_nf4(&q->unet));
        run(&a.unet, in, o, ctx);
        CHECK(same_bits(o, o_q, in->no), "pre-quantized folder through sl_model_load: same bits as the quantized U-Net");
        sl_model_free(&a);
    } else {
        CHECK(0, "sl_model_load of a pre-quantized folder: %s", ctx->msg);
    }
    mo.unet_dense = 1;
    if (sl_model_load(&a, dir, &mo, ctx) == SL_OK) {
        CHECK(sl_unet_count_nf4(&a.unet) == 0, "unet_dense: no NF4 linear left");
        run(&a.unet, in, o, ctx);
        sl_test_close("unet_dense (dequantized) vs NF4 output", o, o_q, in->no, 1e-5 * sl_test_scale(o_q, in->no), 1e-5);
        sl_model_free(&a);
    } else {
        CHECK(0, "sl_model_load unet_dense: %s", ctx->msg);
    }
    free(o);
    /* a quantization this build does not know */
    char f[4300];
    snprintf(f, sizeof f, "%s/test_nf4_convert_int8.safetensors", sl_test_binary());
    SlStWriter wr;
    sl_st_writer_init(&wr);
    const int64_t shape[1] = {4};
    const uint8_t bytes[4] = {1, 2, 3, 4};
    CHECK_OK(sl_st_writer_add(&wr, "x.weight", SL_U8, 1, shape, bytes, ctx), ctx);
    CHECK_OK(sl_st_writer_meta(&wr, "stylora.quant", "int8", ctx), ctx);
    CHECK_OK(sl_st_writer_save(&wr, f, ctx), ctx);
    sl_st_writer_free(&wr);
    SlWeights w;
    CHECK_OK(sl_weights_open_file(&w, f, ctx), ctx);
    int nf4 = 1;
    CHECK(sl_weights_nf4_probe(&w, &nf4, NULL, ctx) == SL_ERR_UNSUPPORTED && strstr(ctx->msg, "int8"),
          "stylora.quant=int8 refused: %s", ctx->msg);
    sl_weights_close(&w);
}

/* NF4 -> partly dense -> NF4 again: the same codes, hence the same output bits. */
static void test_roundtrip(SlModel *q, In *in, const float *o_q, SlCtx *ctx) {
    SlUNet *u = &q->unet;
    const int n0 = sl_unet_count_nf4(u);
    int *fmt = malloc((size_t)u->n_params * sizeof *fmt);
    sl_unet_nf4_formats(u, fmt);
    const char *names[2] = {"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "no.such.module"};
    CHECK_OK(sl_unet_dequantize_nf4_modules(u, names, 2, ctx), ctx);
    CHECK(sl_unet_count_nf4(u) == n0 - 1, "one module dequantized: %d -> %d NF4 linears", n0, sl_unet_count_nf4(u));
    float *o = malloc(in->no * sizeof(float));
    run(u, in, o, ctx);
    sl_test_close("one layer dequantized vs NF4 output", o, o_q, in->no, 1e-5 * sl_test_scale(o_q, in->no), 1e-5);
    CHECK_OK(sl_unet_nf4_convert(u, fmt, NULL, ctx), ctx);
    CHECK(sl_unet_count_nf4(u) == n0, "converted back: %d NF4 linears", sl_unet_count_nf4(u));
    run(u, in, o, ctx);
    CHECK(same_bits(o, o_q, in->no), "NF4 -> dense -> NF4: the same output bits");
    /* a weight that is no linear cannot be NF4 */
    int *bad = malloc((size_t)u->n_params * sizeof *bad);
    memcpy(bad, fmt, (size_t)u->n_params * sizeof *bad);
    int k = 0;
    while (k < u->n_params && strcmp(u->params[k].name, "conv_in.weight")) k++;
    CHECK(k < u->n_params, "conv_in.weight found");
    if (k < u->n_params) {
        bad[k] = 0;
        CHECK(sl_unet_nf4_convert(u, bad, NULL, ctx) == SL_ERR_UNSUPPORTED, "conv weight as NF4 refused: %s", ctx->msg);
    }
    free(bad), free(fmt), free(o);
}

/* Merge an adapter into the dequantized U-Net, predict the re-quantization error, convert,
 * and measure the error of the converted weights independently. */
static void test_merge_error(SlModel *q, SlCtx *ctx) {
    SlUNet *u = &q->unet;
    int *fmt = malloc((size_t)u->n_params * sizeof *fmt);
    sl_unet_nf4_formats(u, fmt);
    CHECK_OK(sl_unet_dequantize_nf4(u, ctx), ctx);
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, u, ctx), ctx);
    SlAdapterOpts o = sl_adapter_opts_default();
    o.targets = "attn";
    o.rank = 4;
    SlAdapter ad;
    CHECK_OK(sl_adapter_create(&ad, &sites, &o, ctx), ctx);
    for (int i = 0; i < ad.n; i++) sl_test_fill(ad.mods[i].B, (size_t)(ad.mods[i].O * ad.mods[i].r), 50 + (uint32_t)i, 1.0f);
    SlAdapter *one[1] = {&ad};
    const float wt = 0.2f;
    SlMergeState ms = {0};
    CHECK_OK(sl_adapter_merge(&ms, &sites, one, &wt, 1, ctx), ctx);
    SlNf4MergeError e;
    CHECK_OK(sl_nf4_merge_error(u, fmt, &ms, &e, ctx), ctx);
    printf("re-quantizing a merged attn LoRA: %d layers, weight rel err %.4f, delta rel err %.4f, delta cos %.4f\n",
           e.n_layers, e.weight_rel, e.delta_rel, e.delta_cos);
    CHECK(e.n_layers == ad.n, "%d merged NF4 layers measured (adapter has %d)", e.n_layers, ad.n);
    /* keep the merged values, convert, and measure ||Q(W') - W'|| / ||W'|| from the result */
    float **keep = calloc((size_t)ms.n, sizeof *keep);
    const float **wp = calloc((size_t)ms.n, sizeof *wp);
    for (int k = 0; k < ms.n; k++) {
        keep[k] = malloc(ms.numel[k] * sizeof(float));
        memcpy(keep[k], ms.w[k], ms.numel[k] * sizeof(float));
        wp[k] = ms.w[k];
    }
    int *which = malloc((size_t)ms.n * sizeof *which);
    for (int k = 0; k < ms.n; k++) {
        which[k] = -1;
        for (int i = 0; i < u->n_params; i++)
            if (*u->params[i].w == wp[k]) which[k] = i;
    }
    sl_adapter_merge_commit(&ms);
    CHECK_OK(sl_unet_nf4_convert(u, fmt, NULL, ctx), ctx);
    double err2 = 0, w2 = 0;
    for (int k = 0; k < e.n_layers && k < ad.n; k++) {
        SlLinear *lin = sl_unet_find_linear(u, ad.mods[k].name + 5);
        const SlNf4Linear *ql = lin ? sl_nf4_linear_of(lin->hook) : NULL;
        CHECK(ql != NULL, "%s is NF4 again", ad.mods[k].name);
        if (!ql) continue;
        int kk = -1;
        for (int j = 0; j < e.n_layers; j++)
            if (which[j] >= 0 && u->params[which[j]].w == &lin->w) kk = j;
        CHECK(kk >= 0, "%s was merged", ad.mods[k].name);
        if (kk < 0) continue;
        const int64_t n = ql->W.O * ql->W.I;
        float *d = malloc((size_t)n * sizeof(float));
        sl_nf4_dequantize_ref(d, &ql->W);
        for (int64_t j = 0; j < n; j++) err2 += (d[j] - (double)keep[kk][j]) * (d[j] - (double)keep[kk][j]), w2 += (double)keep[kk][j] * keep[kk][j];
        free(d);
    }
    const double rel = sqrt(err2 / (w2 + 1e-300));
    CHECK(fabs(rel - e.weight_rel) <= 1e-6 * e.weight_rel + 1e-9, "predicted re-quantization error %.7f == measured %.7f", e.weight_rel, rel);
    CHECK(e.weight_rel > 0.01 && e.weight_rel < 0.2, "weight relative error %.4f in NF4's range", e.weight_rel);
    CHECK(e.delta_cos > 0 && e.delta_cos <= 1.0 + 1e-9, "delta cosine %.4f in (0, 1]", e.delta_cos);
    for (int k = 0; k < e.n_layers; k++) free(keep[k]);
    free(keep), free(wp), free(which), free(fmt);
    sl_adapter_free(&ad);
    sl_sites_free(&sites);
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char rel[4096], golden[4096];
    snprintf(rel, sizeof rel, "%s/golden/tiny-sd1", sl_test_shared());
    if (!realpath(rel, golden)) snprintf(golden, sizeof golden, "%s", rel); /* the links must work from a subfolder */
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1};
    SlModel q;
    if (sl_model_load_nf4(&q, golden, &mo, NULL, 0, &ctx) != SL_OK) {
        CHECK(0, "nf4 load %s: %s", golden, ctx.msg);
        return sl_test_finish("test_nf4_convert");
    }
    In in;
    in_make(&in, &q.unet_cfg);
    float *o_q = malloc(in.no * sizeof(float));
    run(&q.unet, &in, o_q, &ctx);
    test_autoload(golden, &q, &in, o_q, &ctx);
    test_roundtrip(&q, &in, o_q, &ctx);
    test_merge_error(&q, &ctx);
    sl_model_free(&q);
    free(o_q), free(in.x), free(in.ehs), free(in.out);
    return sl_test_finish("test_nf4_convert");
}
