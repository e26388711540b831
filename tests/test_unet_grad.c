/* test_unet_grad.c - finite-difference checks of the U-Net backward (no Python needed).
 *
 * A tiny U-Net (2 blocks, conv1x1 and linear projections, mid block) with
 * seeded random weights; L = sum(out * R). For a few elements of one weight of
 * each layer kind (time embedding, conv_in, resnet norms/convs/time projection/
 * shortcut, transformer GroupNorm/proj/LayerNorm/attn1/attn2/GEGLU/ff, down-
 * and upsampler, conv_norm_out, conv_out) and of the input sample, the
 * analytic gradient is compared with a central difference:
 * |analytic - numeric| <= 2e-2 * max|numeric over the checked elements of that tensor| + 2e-4.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "test_util.h"
#include "unet/unet.h"

#define FD_EPS 3e-3f
#define FD_RTOL 2e-2
#define FD_ATOL 2e-4
#define N_ELEMS 4

static const char *k_cfg_fmt =
    "{\"block_out_channels\":[4,8],\"down_block_types\":[\"CrossAttnDownBlock2D\",\"DownBlock2D\"],"
    "\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\"],\"norm_num_groups\":2,\"layers_per_block\":1,"
    "\"attention_head_dim\":[2,2],\"cross_attention_dim\":3,\"in_channels\":2,\"out_channels\":2,"
    "\"use_linear_projection\":%s}";

typedef struct Case {
    SlUNet *u;
    float *sample, *ts, *ehs, *R, *out;
    int64_t n_out;
} Case;

static double loss(Case *c) {
    sl_unet_forward(c->u, c->out, c->sample, c->ts, c->ehs);
    double s = 0;
    for (int64_t i = 0; i < c->n_out; i++) s += (double)c->out[i] * c->R[i];
    return s;
}

static void check(Case *c, const char *what, float *p, const float *g, int64_t n) {
    float num[N_ELEMS], ana[N_ELEMS];
    int m = 0;
    for (int k = 0; k < N_ELEMS && k < n; k++) {
        int64_t i = (k * 7919) % n;
        float keep = p[i];
        p[i] = keep + FD_EPS;
        double lp = loss(c);
        p[i] = keep - FD_EPS;
        double lm = loss(c);
        p[i] = keep;
        num[m] = (float)((lp - lm) / (2.0 * FD_EPS));
        ana[m++] = g[i];
    }
    sl_test_close(what, ana, num, (size_t)m, FD_ATOL + FD_RTOL * sl_test_scale(num, (size_t)m), 0);
}

static void run(int linear) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char json[1024];
    snprintf(json, sizeof json, k_cfg_fmt, linear ? "true" : "false");
    SlUNetConfig cfg;
    CHECK_OK(sl_unet_config_parse(&cfg, json, "tiny", &ctx), &ctx);
    SlUNet u;
    CHECK_OK(sl_unet_init(&u, &cfg, &ctx), &ctx);
    if (sl_test_failures) return;
    sl_unet_init_random(&u, 7);
    /* non-trivial norm affine parameters */
    for (int i = 0; i < u.n_params; i++) {
        SlUNetParam *p = &u.params[i];
        if (p->ndim == 1) {
            int64_t n = p->shape[0];
            float tmp[4096];
            sl_rng_normal(tmp, n, 99, (uint64_t)i, 0);
            for (int64_t k = 0; k < n; k++) p->init_w[k] += 0.2f * tmp[k];
        }
    }
    const int64_t B = 2, H = 4, W = 4, T = 3;
    CHECK_OK(sl_unet_plan(&u, B, H, W, T, &ctx), &ctx);
    CHECK_OK(sl_unet_enable_grads(&u, &ctx), &ctx);
    const int64_t n_s = B * 2 * H * W, n_out = B * 2 * H * W;
    float *sample = malloc(sizeof(float) * n_s), *ehs = malloc(sizeof(float) * B * T * 3);
    float *R = malloc(sizeof(float) * n_out), *out = malloc(sizeof(float) * n_out);
    float *gs = calloc((size_t)n_s, sizeof(float)), ts[2] = {3.0f, 420.0f};
    sl_rng_normal(sample, n_s, 5, 1, 0);
    sl_rng_normal(ehs, B * T * 3, 5, 2, 0);
    sl_rng_normal(R, n_out, 5, 3, 0);
    Case c = {&u, sample, ts, ehs, R, out, n_out};
    loss(&c);
    sl_unet_zero_grads(&u);
    sl_unet_backward(&u, gs, R);
    const char *names[] = {
        "time_embedding.linear_1.weight", "time_embedding.linear_2.bias", "conv_in.weight",
        "down_blocks.0.resnets.0.norm1.weight", "down_blocks.0.resnets.0.conv1.weight",
        "down_blocks.0.resnets.0.time_emb_proj.weight", "down_blocks.0.resnets.0.norm2.bias",
        "down_blocks.0.resnets.0.conv2.bias", "down_blocks.1.resnets.0.conv_shortcut.weight",
        "down_blocks.0.attentions.0.norm.weight", "down_blocks.0.attentions.0.proj_in.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.norm1.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias",
        "down_blocks.0.attentions.0.transformer_blocks.0.norm2.bias",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.norm3.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight",
        "down_blocks.0.attentions.0.proj_out.weight", "down_blocks.0.downsamplers.0.conv.weight",
        "mid_block.resnets.0.conv1.weight", "mid_block.attentions.0.transformer_blocks.0.attn2.to_q.weight",
        "mid_block.resnets.1.norm1.bias", "up_blocks.0.resnets.0.conv_shortcut.weight",
        "up_blocks.0.upsamplers.0.conv.weight", "up_blocks.1.resnets.1.conv1.weight",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0.weight", "conv_norm_out.weight",
        "conv_out.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        SlUNetParam *p = sl_unet_find_param(&u, names[i]);
        CHECK(p != NULL, "param %s exists", names[i]);
        if (!p) continue;
        char what[256];
        snprintf(what, sizeof what, "fd %s %s", linear ? "linear" : "conv1x1", names[i]);
        check(&c, what, p->init_w, *p->g, sl_shape_numel(p->ndim, p->shape));
    }
    check(&c, linear ? "fd linear d(sample)" : "fd conv1x1 d(sample)", sample, gs, n_s);
    free(sample);
    free(ehs);
    free(R);
    free(out);
    free(gs);
    sl_unet_free(&u);
}

int main(void) {
    omp_set_num_threads(1); /* tiny tensors: threads only add overhead on a shared machine */
    run(0);
    run(1);
    return sl_test_finish("test_unet_grad");
}
