/* vae_internal.h - private state shared by vae/vae*.c (not a public header).
 *
 * An activation plan is made by running the forward code in "planning" mode:
 * every op records the sizes it would need (and its FLOPs) instead of
 * computing, so the plan can never disagree with the code that uses it.
 */
#ifndef SL_VAE_INTERNAL_H
#define SL_VAE_INTERNAL_H

#include "vae.h"

/* One planned activation arena: three rotating buffers of the largest
 * activation, attention buffers at the mid-block size, GroupNorm stats and
 * the conv / attention workspaces. */
typedef struct VaePlan {
    int valid;
    int64_t B, H, W;            /* input size the plan is for */
    SlArena arena;
    float *buf[3];              /* [max_act] each */
    float *q, *k, *v, *o;       /* [max_attn] each: [B,T,C] */
    float *lse;                 /* [max_lse] */
    float *gn_mean, *gn_rstd;   /* [max_gn] */
    float *work;                /* [max_work] conv im2col (+ band copies) */
    float *attn_work;           /* [max_attn_work] */
    SlKernels kern;             /* the kernels every product of this plan runs on (SlVae.kern when planned) */
} VaePlan;

/* State threaded through the forward walk. */
typedef struct VaeRun {
    int planning;               /* 1: record sizes only, touch no data */
    size_t work_budget;
    /* recorded (planning) or available (running) sizes, floats */
    size_t max_act, max_attn, max_lse, max_gn, max_work, max_attn_work;
    double flops;               /* counted in planning mode */
    const VaePlan *plan;        /* running mode: the buffers */
} VaeRun;

struct SlVae {
    SlVaeConfig cfg;
    SlVaeParams p;
    SlArena weights;            /* every parameter */
    size_t work_budget;
    SlKernels kern;             /* kernels of the next plans (sl_vae_set_kernels; zero: the CPU's default) */
    VaePlan enc, dec;
};

/* Forward walks (vae.c). In planning mode the data pointers may be NULL.
 * encoder: image [B,in,H,W] -> moments [B,2lc,h,w] written into *moments_out
 * (a pointer into the plan's buffers); decoder: latent -> image. */
void vae_encoder_walk(VaeRun *r, const SlVaeConfig *cfg, const SlVaeParams *p, const float *image,
                      int64_t B, int64_t H, int64_t W, const float **moments_out, int64_t *h,
                      int64_t *w);
void vae_decoder_walk(VaeRun *r, const SlVaeConfig *cfg, const SlVaeParams *p, const float *latent,
                      int64_t B, int64_t h, int64_t w, float *image);

#endif
