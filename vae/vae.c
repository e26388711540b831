/* vae.c - AutoencoderKL forward: encoder, decoder, activation planning.
 *
 * The encoder/decoder walks below run in two modes (see vae_internal.h):
 * planning records the sizes each op needs and counts FLOPs; running
 * computes with the buffers of the resulting plan. Activations rotate through
 * three equal buffers (the VAE is frozen: nothing is kept for a backward).
 *
 * Dimension letters: B batch, C/Ci/Co channels, H/W current spatial size,
 * T = H*W tokens in the mid-block attention, G groups.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"
#include "vae_internal.h"

#define VAE_EPS 1e-6f

static void rec(size_t *m, int64_t v) {
    if ((size_t)v > *m) *m = (size_t)v;
}

/* ---- ops ---- */

/* out [B,Co,Ho,Wo] = conv(in [B,Ci,H,W]). When the im2col matrix of a whole
 * image exceeds the budget, the conv runs on bands of output rows: the
 * band's input rows (with halo) are gathered, convolved with the padding that
 * applies at that band's edges, and the output rows scattered back. */
static void op_conv(VaeRun *r, float *out, const float *in, const float *w, const float *b, int64_t B,
                    int64_t Ci, int64_t H, int64_t W, int64_t Co, int64_t k, int64_t stride, int64_t pt,
                    int64_t pl, int64_t pb, int64_t pr, int64_t *Ho_out, int64_t *Wo_out) {
    SlConvDims d = sl_conv_dims(B, Ci, H, W, Co, k, stride, pt, pl, pb, pr);
    const int64_t Ho = d.Ho, Wo = d.Wo;
    *Ho_out = Ho;
    *Wo_out = Wo;
    const size_t full = sl_conv2d_workspace(&d);
    int64_t R = Ho;  /* rows per band */
    size_t need = full;
    if (full > r->work_budget && Ho > 1) {
        /* per output row: im2col Ci*k*k*Wo, output band Co*Wo, input band Ci*stride*W */
        const size_t per_row = (size_t)(Ci * k * k * Wo + Co * Wo + Ci * stride * W);
        const size_t fixed = (size_t)(Ci * k * W);
        R = r->work_budget > fixed + per_row ? (int64_t)((r->work_budget - fixed) / per_row) : 1;
        if (R < 1) R = 1;
        if (R > Ho) R = Ho;
        SlConvDims db = sl_conv_dims(1, Ci, (R - 1) * stride + k, W, Co, k, stride, 0, pl, 0, pr);
        need = sl_conv2d_workspace(&db) + (size_t)(Ci * ((R - 1) * stride + k) * W) + (size_t)(Co * R * Wo);
    }
    if (r->planning) {
        rec(&r->max_work, (int64_t)need);
        r->flops += 2.0 * (double)(B * Co * Ho * Wo) * (double)(Ci * k * k);
        return;
    }
    if (R == Ho) {
        sl_conv2d_forward(out, in, w, b, &d, r->plan->work, &r->plan->kern);
        return;
    }
    for (int64_t bi = 0; bi < B; bi++) {
        const float *x = in + bi * Ci * H * W;
        float *y = out + bi * Co * Ho * Wo;
        for (int64_t o0 = 0; o0 < Ho; o0 += R) {
            const int64_t o1 = o0 + R < Ho ? o0 + R : Ho;
            int64_t iy0 = o0 * stride - pt, iy1 = (o1 - 1) * stride - pt + k - 1; /* inclusive */
            int64_t bpt = 0, bpb = 0;
            if (iy0 < 0) { bpt = -iy0; iy0 = 0; }
            if (iy1 > H - 1) { bpb = iy1 - (H - 1); iy1 = H - 1; }
            const int64_t Hb = iy1 - iy0 + 1;
            SlConvDims db = sl_conv_dims(1, Ci, Hb, W, Co, k, stride, bpt, pl, bpb, pr);
            float *col = r->plan->work;
            float *xin = col + sl_conv2d_workspace(&db);   /* [Ci,Hb,W] */
            float *yb = xin + Ci * Hb * W;                 /* [Co,o1-o0,Wo] */
            for (int64_t c = 0; c < Ci; c++)
                memcpy(xin + c * Hb * W, x + (c * H + iy0) * W, (size_t)(Hb * W) * sizeof(float));
            sl_conv2d_forward(yb, xin, w, b, &db, col, &r->plan->kern);
            for (int64_t c = 0; c < Co; c++)
                memcpy(y + (c * Ho + o0) * Wo, yb + c * (o1 - o0) * Wo, (size_t)((o1 - o0) * Wo) * sizeof(float));
        }
    }
}

/* 3x3 stride-1 pad-1 conv (Co x Ci). */
static void op_conv3(VaeRun *r, float *out, const float *in, const float *w, const float *b, int64_t B,
                     int64_t Ci, int64_t Co, int64_t H, int64_t W) {
    int64_t Ho, Wo;
    op_conv(r, out, in, w, b, B, Ci, H, W, Co, 3, 1, 1, 1, 1, 1, &Ho, &Wo);
    if (r->planning) rec(&r->max_act, B * Co * H * W);
}

static void op_conv1(VaeRun *r, float *out, const float *in, const float *w, const float *b, int64_t B,
                     int64_t Ci, int64_t Co, int64_t H, int64_t W) {
    int64_t Ho, Wo;
    op_conv(r, out, in, w, b, B, Ci, H, W, Co, 1, 1, 0, 0, 0, 0, &Ho, &Wo);
    if (r->planning) rec(&r->max_act, B * Co * H * W);
}

/* out = [silu](groupnorm(in)), in [B,C,HW]. */
static void op_norm(VaeRun *r, float *out, const float *in, const float *g, const float *b, int64_t B,
                    int64_t C, int64_t HW, int64_t G, int silu) {
    if (r->planning) {
        rec(&r->max_gn, B * G);
        rec(&r->max_act, B * C * HW);
        return;
    }
    if (silu) sl_groupnorm_silu_forward(out, r->plan->gn_mean, r->plan->gn_rstd, in, g, b, B, C, HW, G, VAE_EPS);
    else sl_groupnorm_forward(out, r->plan->gn_mean, r->plan->gn_rstd, in, g, b, B, C, HW, G, VAE_EPS);
}

static void op_add(VaeRun *r, float *y, const float *x, int64_t n) {
    if (r->planning) return;
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

/* ResnetBlock2D (no temb, output_scale_factor 1): shortcut(x) +
 * conv2(silu(gn2(conv1(silu(gn1(x)))))). x is kept; t1, t2 are scratch; the
 * result is left in t2, which is returned. Three buffers suffice because each
 * conv writes into the buffer whose content was just consumed by the norm. */
static float *block_resnet(VaeRun *r, const float *x, float *t1, float *t2, const SlVaeResnet *p, int64_t Ci,
                           int64_t Co, int64_t B, int64_t H, int64_t W, int64_t G) {
    const int64_t HW = H * W;
    op_norm(r, t1, x, p->norm1_w, p->norm1_b, B, Ci, HW, G, 1);
    op_conv3(r, t2, t1, p->conv1_w, p->conv1_b, B, Ci, Co, H, W);
    op_norm(r, t1, t2, p->norm2_w, p->norm2_b, B, Co, HW, G, 1);
    op_conv3(r, t2, t1, p->conv2_w, p->conv2_b, B, Co, Co, H, W);
    if (Ci != Co) {
        op_conv1(r, t1, x, p->short_w, p->short_b, B, Ci, Co, H, W);
        op_add(r, t2, t1, B * Co * HW);
    } else {
        op_add(r, t2, x, B * Co * HW);
    }
    return t2;
}

/* Mid-block attention (one head of width C, group norm inside, residual,
 * rescale 1): x + proj(attn(q(n), k(n), v(n))) with n = gn(x) as [B,T,C].
 * Result in t2 (returned). */
static float *block_attn(VaeRun *r, const float *x, float *t1, float *t2, const SlVaeAttn *p, int64_t B,
                         int64_t C, int64_t T, int64_t G) {
    op_norm(r, t1, x, p->norm_w, p->norm_b, B, C, T, G, 0);
    if (r->planning) {
        rec(&r->max_act, B * C * T);
        rec(&r->max_attn, B * T * C);
        rec(&r->max_lse, B * T);
        rec(&r->max_attn_work, (int64_t)sl_attention_workspace(B, T, T, 1, C));
        r->flops += 2.0 * (double)(B * T) * (double)(C * C) * 4.0   /* q k v out projections */
                  + 2.0 * (double)B * (double)(T * T) * (double)C * 2.0;  /* QK^T and PV */
        return t2;
    }
    const VaePlan *pl = r->plan;
    sl_transpose_cs_sc(t2, t1, B, C, T);  /* [B,T,C] */
    sl_linear_forward(pl->q, t2, p->q_w, p->q_b, B * T, C, C, &pl->kern);
    sl_linear_forward(pl->k, t2, p->k_w, p->k_b, B * T, C, C, &pl->kern);
    sl_linear_forward(pl->v, t2, p->v_w, p->v_b, B * T, C, C, &pl->kern);
    sl_attention_forward(pl->o, pl->lse, pl->q, pl->k, pl->v, B, T, T, 1, C, 1.0f / sqrtf((float)C), 0,
                         pl->attn_work, &pl->kern);
    sl_linear_forward(t1, pl->o, p->o_w, p->o_b, B * T, C, C, &pl->kern);
    sl_transpose_sc_cs(t2, t1, B, C, T);
    op_add(r, t2, x, B * C * T);
    return t2;
}

/* The two plan buffers other than cur (NULL when planning). */
static void others(const VaeRun *r, const float *cur, float **a, float **b) {
    float *o[3] = {NULL, NULL, NULL};
    int n = 0;
    for (int i = 0; i < 3 && !r->planning; i++)
        if (r->plan->buf[i] != cur && n < 2) o[n++] = r->plan->buf[i];
    *a = o[0];
    *b = o[1];
}

/* UNetMidBlock2D: resnet, [attention], resnet. Returns the result buffer. */
static float *block_mid(VaeRun *r, float *x, const SlVaeMid *m, int64_t C, int64_t B, int64_t H, int64_t W,
                        int64_t G, int attn) {
    float *t1, *t2;
    others(r, x, &t1, &t2);
    x = block_resnet(r, x, t1, t2, &m->res[0], C, C, B, H, W, G);
    if (attn) {
        others(r, x, &t1, &t2);
        x = block_attn(r, x, t1, t2, &m->attn, B, C, H * W, G);
    }
    others(r, x, &t1, &t2);
    return block_resnet(r, x, t1, t2, &m->res[1], C, C, B, H, W, G);
}

void vae_encoder_walk(VaeRun *r, const SlVaeConfig *cfg, const SlVaeParams *p, const float *image,
                      int64_t B, int64_t H, int64_t W, const float **moments_out, int64_t *h_out,
                      int64_t *w_out) {
    const int n = cfg->n_blocks;
    const int64_t G = cfg->norm_num_groups, lc = cfg->latent_channels;
    float *x = r->planning ? NULL : r->plan->buf[0], *t1, *t2;
    op_conv3(r, x, image, p->enc_conv_in_w, p->enc_conv_in_b, B, cfg->in_channels, cfg->block_out[0], H, W);
    int64_t C = cfg->block_out[0];
    for (int i = 0; i < n; i++) {
        const int64_t Co = cfg->block_out[i];
        for (int j = 0; j < cfg->layers_per_block; j++) {
            others(r, x, &t1, &t2);
            x = block_resnet(r, x, t1, t2, &p->enc_res[i][j], j == 0 ? C : Co, Co, B, H, W, G);
        }
        C = Co;
        if (i < n - 1) { /* Downsample2D: pad (0,1,0,1), 3x3 stride 2 */
            int64_t Ho, Wo;
            others(r, x, &t1, &t2);
            op_conv(r, t1, x, p->enc_down_w[i], p->enc_down_b[i], B, C, H, W, C, 3, 2, 0, 0, 1, 1, &Ho, &Wo);
            H = Ho;
            W = Wo;
            if (r->planning) rec(&r->max_act, B * C * H * W);
            x = t1;
        }
    }
    x = block_mid(r, x, &p->enc_mid, C, B, H, W, G, cfg->mid_block_add_attention);
    others(r, x, &t1, &t2);
    op_norm(r, t1, x, p->enc_norm_out_w, p->enc_norm_out_b, B, C, H * W, G, 1);
    op_conv3(r, t2, t1, p->enc_conv_out_w, p->enc_conv_out_b, B, C, 2 * lc, H, W);
    x = t2;
    if (cfg->use_quant_conv) {
        op_conv1(r, t1, x, p->quant_w, p->quant_b, B, 2 * lc, 2 * lc, H, W);
        x = t1;
    }
    *moments_out = x;
    *h_out = H;
    *w_out = W;
}

void vae_decoder_walk(VaeRun *r, const SlVaeConfig *cfg, const SlVaeParams *p, const float *latent,
                      int64_t B, int64_t h, int64_t w, float *image) {
    const int n = cfg->n_blocks;
    const int64_t G = cfg->norm_num_groups, lc = cfg->latent_channels;
    int64_t H = h, W = w, C = cfg->block_out[n - 1];
    float *x = r->planning ? NULL : r->plan->buf[0], *t1, *t2;
    const float *z = latent;
    if (cfg->use_post_quant_conv) {
        float *pq = r->planning ? NULL : r->plan->buf[1];
        op_conv1(r, pq, latent, p->post_quant_w, p->post_quant_b, B, lc, lc, H, W);
        z = pq;
    }
    op_conv3(r, x, z, p->dec_conv_in_w, p->dec_conv_in_b, B, lc, C, H, W);
    x = block_mid(r, x, &p->dec_mid, C, B, H, W, G, cfg->mid_block_add_attention);
    for (int k = 0; k < n; k++) {
        const int64_t Co = cfg->block_out[n - 1 - k];
        for (int j = 0; j < cfg->layers_per_block + 1; j++) {
            others(r, x, &t1, &t2);
            x = block_resnet(r, x, t1, t2, &p->dec_res[k][j], j == 0 ? C : Co, Co, B, H, W, G);
        }
        C = Co;
        if (k < n - 1) { /* Upsample2D: nearest x2 into t1, then 3x3 conv back into x's buffer */
            others(r, x, &t1, &t2);
            if (r->planning) rec(&r->max_act, B * C * 4 * H * W);
            else sl_upsample_nearest2x_forward(t1, x, B, C, H, W);
            H *= 2;
            W *= 2;
            op_conv3(r, x, t1, p->dec_up_w[k], p->dec_up_b[k], B, C, C, H, W);
        }
    }
    others(r, x, &t1, &t2);
    op_norm(r, t1, x, p->dec_norm_out_w, p->dec_norm_out_b, B, C, H * W, G, 1);
    op_conv3(r, image, t1, p->dec_conv_out_w, p->dec_conv_out_b, B, C, cfg->out_channels, H, W);
}

/* ---- plans ---- */

/* Arena bytes for the sizes a planning walk recorded (matches plan_make's takes). */
static size_t plan_bytes(const VaeRun *r) {
    const size_t f = sizeof(float);
    return 3 * sl_align_up(r->max_act * f) + 4 * sl_align_up(r->max_attn * f) + sl_align_up(r->max_lse * f) +
           2 * sl_align_up(r->max_gn * f) + sl_align_up(r->max_work * f) + sl_align_up(r->max_attn_work * f);
}

static SlStatus plan_make(VaePlan *pl, const VaeRun *r, int64_t B, int64_t H, int64_t W, const SlKernels *kern,
                          const char *role, SlCtx *ctx) {
    sl_arena_free(&pl->arena);
    memset(pl, 0, sizeof *pl);
    SL_TRY(sl_arena_init(&pl->arena, plan_bytes(r), role, ctx));
    for (int i = 0; i < 3; i++) pl->buf[i] = sl_arena_take_f32(&pl->arena, (int64_t)r->max_act);
    pl->q = sl_arena_take_f32(&pl->arena, (int64_t)r->max_attn);
    pl->k = sl_arena_take_f32(&pl->arena, (int64_t)r->max_attn);
    pl->v = sl_arena_take_f32(&pl->arena, (int64_t)r->max_attn);
    pl->o = sl_arena_take_f32(&pl->arena, (int64_t)r->max_attn);
    pl->lse = sl_arena_take_f32(&pl->arena, (int64_t)r->max_lse);
    pl->gn_mean = sl_arena_take_f32(&pl->arena, (int64_t)r->max_gn);
    pl->gn_rstd = sl_arena_take_f32(&pl->arena, (int64_t)r->max_gn);
    pl->work = sl_arena_take_f32(&pl->arena, (int64_t)r->max_work);
    pl->attn_work = sl_arena_take_f32(&pl->arena, (int64_t)r->max_attn_work);
    pl->B = B;
    pl->H = H;
    pl->W = W;
    pl->kern = *kern;
    pl->valid = 1;
    return SL_OK;
}

static void run_init(VaeRun *r, size_t budget) {
    memset(r, 0, sizeof *r);
    r->work_budget = budget;
}

static SlStatus check_dims(int64_t B, int64_t H, int64_t W, int64_t min_hw, const char *what, SlCtx *ctx) {
    if (B < 1 || H < min_hw || W < min_hw || B > (1 << 20) || H > (1 << 20) || W > (1 << 20))
        return sl_fail(ctx, SL_ERR_ARG, "vae %s: bad size B %lld H %lld W %lld (need B >= 1, H, W >= %lld)",
                       what, (long long)B, (long long)H, (long long)W, (long long)min_hw);
    return SL_OK;
}

void sl_vae_latent_size(const SlVaeConfig *cfg, int64_t H, int64_t W, int64_t *h, int64_t *w) {
    for (int i = 0; i < cfg->n_blocks - 1; i++) {
        H = (H + 1 - 3) / 2 + 1;
        W = (W + 1 - 3) / 2 + 1;
    }
    *h = H;
    *w = W;
}

/* SL_ERR_NUMERIC if the encoder's or decoder's output out[0..n) is not all finite,
 * blaming the input in[0..n_in) if it was already bad, else the weights. */
static SlStatus check_output(const float *out, int64_t n, const float *in, int64_t n_in, const char *part,
                             const char *out_name, const char *in_name, SlCtx *ctx) {
    const size_t bad = sl_count_nonfinite(out, (size_t)n);
    if (!bad) return SL_OK;
    const size_t bad_in = sl_count_nonfinite(in, (size_t)n_in);
    if (bad_in)
        return sl_fail(ctx, SL_ERR_NUMERIC, "VAE %s: its input %s has %zu NaN/Inf values", part, in_name, bad_in);
    return sl_fail(ctx, SL_ERR_NUMERIC,
                   "VAE %s: its output %s has %zu NaN/Inf values of %lld from a finite %s: its weights overflow "
                   "float32 (a damaged or wrongly scaled VAE)",
                   part, out_name, bad, (long long)n, in_name);
}

SlStatus sl_vae_encode(SlVae *vae, const float *image, int64_t B, int64_t H, int64_t W, float *mean,
                       float *logvar, SlCtx *ctx) {
    SL_TRY(check_dims(B, H, W, sl_vae_downscale(&vae->cfg), "encode", ctx));
    VaeRun r;
    const float *mom;
    int64_t h, w;
    VaePlan *pl = &vae->enc;
    if (!pl->valid || pl->B != B || pl->H != H || pl->W != W) {
        run_init(&r, vae->work_budget);
        r.planning = 1;
        vae_encoder_walk(&r, &vae->cfg, &vae->p, NULL, B, H, W, &mom, &h, &w);
        SL_TRY(plan_make(pl, &r, B, H, W, &vae->kern, "VAE encoder activations", ctx));
    }
    run_init(&r, vae->work_budget);
    r.plan = pl;
    vae_encoder_walk(&r, &vae->cfg, &vae->p, image, B, H, W, &mom, &h, &w);
    /* moments [B,2lc,h,w]: mean = first lc channels, logvar = last lc */
    const int64_t lc = vae->cfg.latent_channels, plane = lc * h * w;
    /* before the clamp, which would hide an Inf logvar; left alone, a NaN here surfaced
     * in training as "the U-Net output went bad" */
    SL_TRY(check_output(mom, B * 2 * plane, image, B * vae->cfg.in_channels * H * W, "encoder", "latent", "image",
                        ctx));
    for (int64_t bi = 0; bi < B; bi++) {
        const float *m = mom + bi * 2 * plane;
        if (mean) memcpy(mean + bi * plane, m, (size_t)plane * sizeof(float));
        if (logvar) {
            float *lv = logvar + bi * plane;
            for (int64_t i = 0; i < plane; i++) {
                const float v = m[plane + i];
                lv[i] = v < -30.0f ? -30.0f : (v > 20.0f ? 20.0f : v);
            }
        }
    }
    return SL_OK;
}

SlStatus sl_vae_decode(SlVae *vae, const float *latent, int64_t B, int64_t h, int64_t w, float *image,
                       SlCtx *ctx) {
    SL_TRY(check_dims(B, h, w, 1, "decode", ctx));
    VaeRun r;
    VaePlan *pl = &vae->dec;
    if (!pl->valid || pl->B != B || pl->H != h || pl->W != w) {
        run_init(&r, vae->work_budget);
        r.planning = 1;
        vae_decoder_walk(&r, &vae->cfg, &vae->p, NULL, B, h, w, NULL);
        SL_TRY(plan_make(pl, &r, B, h, w, &vae->kern, "VAE decoder activations", ctx));
    }
    run_init(&r, vae->work_budget);
    r.plan = pl;
    vae_decoder_walk(&r, &vae->cfg, &vae->p, latent, B, h, w, image);
    /* a NaN image was written out as a wrong picture with exit status 0 */
    const int64_t f = sl_vae_downscale(&vae->cfg);
    return check_output(image, B * vae->cfg.out_channels * h * f * w * f, latent, B * vae->cfg.latent_channels * h * w,
                        "decoder", "image", "latent", ctx);
}

void sl_vae_sample(float *z, const float *mean, const float *logvar, const float *noise, int64_t n) {
    for (int64_t i = 0; i < n; i++) z[i] = mean[i] + expf(0.5f * logvar[i]) * noise[i];
}

double sl_vae_encode_flops(const SlVaeConfig *cfg, int64_t B, int64_t H, int64_t W) {
    SlVaeParams *p = calloc(1, sizeof *p);
    if (!p) return 0;
    VaeRun r;
    run_init(&r, (size_t)1 << 62);
    r.planning = 1;
    const float *mom;
    int64_t h, w;
    vae_encoder_walk(&r, cfg, p, NULL, B, H, W, &mom, &h, &w);
    free(p);
    return r.flops;
}

double sl_vae_decode_flops(const SlVaeConfig *cfg, int64_t B, int64_t h, int64_t w) {
    SlVaeParams *p = calloc(1, sizeof *p);
    if (!p) return 0;
    VaeRun r;
    run_init(&r, (size_t)1 << 62);
    r.planning = 1;
    vae_decoder_walk(&r, cfg, p, NULL, B, h, w, NULL);
    free(p);
    return r.flops;
}

size_t sl_vae_activation_plan_bytes(const SlVaeConfig *cfg, int decode, int64_t B, int64_t H, int64_t W,
                                    size_t work_budget) {
    SlVaeParams *p = calloc(1, sizeof *p);
    if (!p) return 0;
    VaeRun r;
    run_init(&r, work_budget ? work_budget : (size_t)1 << 24);
    r.planning = 1;
    if (decode) {
        vae_decoder_walk(&r, cfg, p, NULL, B, H, W, NULL);
    } else {
        const float *mom;
        int64_t h, w;
        vae_encoder_walk(&r, cfg, p, NULL, B, H, W, &mom, &h, &w);
    }
    free(p);
    return plan_bytes(&r);
}
