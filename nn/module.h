/* module.h - Linear and Conv2d modules with an adapter hook.
 *
 * A model (unet/, vae/, textenc/) holds its weight-bearing layers as SlLinear /
 * SlConv2d and calls sl_linmod_* / sl_convmod_* instead of the raw nn.h
 * kernels. Adapters (LoRA, DoRA, LoKr...), frozen NF4 weights and merged
 * weights plug in through `hook` without the model knowing which.
 *
 * Dimension letters: N rows, I in-features, O out-features; conv: B, Ci, Co,
 * H, W (input), Ho, Wo (output), k kernel.
 *
 * ---- The hook contract ------------------------------------------------------
 * A hook is a vtable (SlHookOps, every entry optional) plus the adapter's
 * state (`self`). With a hook installed:
 *
 * forward:  y = BASE(x)                      (dense: x W^T, or ops->base_forward)
 *           ops->forward(h, m, y, x, ...)    rewrites y in place (LoRA: y += s B A x;
 *                                            DoRA: y = c * (y + s B A x) per row)
 *           y += b                           (bias is never seen by the hook)
 * backward: db += sum_rows dout
 *           g = ops->backward(h, m, din, dout, x, ...)
 *               accumulates the adapter's own gradients, ADDS its share of dL/dx
 *               into din when din != NULL, and returns the gradient that the BASE
 *               product must see (dout itself for LoRA; c*dout for DoRA, in a
 *               buffer the hook owns). NULL return means "dout unchanged".
 *           BASE backward with g: dense: din += g W, dw += g^T x (when dw != NULL);
 *               or ops->base_backward_input(h, m, din, g, ...) (NF4: din only).
 * The hook may keep what backward needs from its forward call (e.g. A x) in
 * buffers it planned itself: the module tells it nothing but N. The model
 * calls every module's forward once per forward pass; with gradient
 * checkpointing (unet) it calls it AGAIN, with the same input, just before
 * that module's backward. So a single per-module cache is valid at backward
 * time, PROVIDED the hook's forward is a pure function of (x, its state): e.g.
 * a dropout mask must be drawn from a counter the trainer sets per step, not
 * one that advances on every call.
 * With ops->base_forward present, m->w may be NULL (the hook holds the frozen
 * weight in its own format) and m->dw must be NULL.
 * Without a base hook the base product reads m->w (fp32), or m->w16 (binary16, or
 * bfloat16 when m->w16_bf16; frozen: m->w and m->dw NULL) when m->w is NULL.
 * Hooks never allocate inside forward/backward.
 *
 * Not here: the adapters themselves (styles/), weight loading (models).
 */
#ifndef SL_MODULE_H
#define SL_MODULE_H

#include <stdint.h>

#include "nn.h"

typedef struct SlHook SlHook;
typedef struct SlLinear SlLinear;
typedef struct SlConv2d SlConv2d;

typedef struct SlHookOps {
    /* ---- Linear ---- */
    /* y [N,O] holds BASE(x) (no bias); rewrite it in place. x [N,I]. */
    void (*lin_forward)(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t N);
    /* See the contract above; returns the dout for the base product or NULL. */
    const float *(*lin_backward)(SlHook *h, const SlLinear *m, float *din, const float *dout,
                                 const float *x, int64_t N);
    /* Optional base replacement: y[N,O] = x W^T (no bias) / din[N,I] += g W. */
    void (*lin_base_forward)(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t N);
    void (*lin_base_backward_input)(SlHook *h, const SlLinear *m, float *din, const float *g,
                                    int64_t N);
    /* ---- Conv2d (same roles; d gives the geometry, work is the module's scratch
     * of sl_convmod_workspace floats, free for the hook to use) ---- */
    void (*conv_forward)(SlHook *h, const SlConv2d *m, float *y, const float *x,
                         const SlConvDims *d, float *work);
    const float *(*conv_backward)(SlHook *h, const SlConv2d *m, float *din, const float *dout,
                                  const float *x, const SlConvDims *d, float *work);
    void (*conv_base_forward)(SlHook *h, const SlConv2d *m, float *y, const float *x,
                              const SlConvDims *d, float *work);
    void (*conv_base_backward_input)(SlHook *h, const SlConv2d *m, float *din, const float *g,
                                     const SlConvDims *d, float *work);
} SlHookOps;

struct SlHook {
    const SlHookOps *ops;
    void *self;          /* the adapter's state */
};

/* out[N,O] = in[N,I] w^T + b. A 1x1 convolution applied to token rows is an
 * SlLinear too (`conv1x1` = 1: its key holds [O,I,1,1]). */
struct SlLinear {
    int64_t I, O;            /* in / out features. NB: <complex.h> (pulled in by cblas.h) defines I: include cblas.h only in files that do not touch these fields, or #undef I */
    float *w;            /* [O,I]  key <name>.weight */
    const uint16_t *w16; /* [O,I] in 16 bits when w == NULL: a frozen base (pipeline/half.h), IEEE
                            binary16 widened inside the GEMM's packing, or bfloat16 (w16_bf16) */
    int w16_bf16;        /* 1: w16 holds bfloat16 and its products run on the bf16 GEMM kernel
                            (--base bf16; nn.h's _bf16 entry points); 0: binary16 */
    float *b;            /* [O]    key <name>.bias, NULL if the layer has none */
    float *dw, *db;      /* same shapes; NULL when frozen */
    int conv1x1;         /* stored as a [O,I,1,1] conv weight */
    SlHook *hook;        /* NULL: plain layer */
    SlKernels kern;      /* the kernels its products run on (nn/kernels.h), stamped by the model's
                            plan; hooks use it for theirs too. Zero: the CPU's default */
};

struct SlConv2d {
    int64_t Ci, Co, k, stride, pad;
    float *w;            /* [Co,Ci,k,k] key <name>.weight */
    const uint16_t *w16; /* the same in 16 bits when w == NULL (frozen, as SlLinear.w16) */
    int w16_bf16;        /* as SlLinear.w16_bf16 */
    float *b;            /* [Co]        key <name>.bias (NULL if none) */
    float *dw, *db;
    SlHook *hook;
    SlKernels kern;      /* as SlLinear.kern */
};

/* out [N,O] = module(in [N,I]). */
void sl_linmod_forward(const SlLinear *m, float *out, const float *in, int64_t N);
/* Accumulates dw, db (when non-NULL), adapter grads (hook) and din (when non-NULL). */
void sl_linmod_backward(const SlLinear *m, float *din, const float *dout, const float *in, int64_t N);

/* Geometry of m applied to in [B,Ci,H,W] (symmetric padding m->pad). */
SlConvDims sl_convmod_dims(const SlConv2d *m, int64_t B, int64_t H, int64_t W);
/* Floats of scratch the module needs for these dims (forward and backward). */
size_t sl_convmod_workspace(const SlConv2d *m, int64_t B, int64_t H, int64_t W);
/* out [B,Co,Ho,Wo] = module(in [B,Ci,H,W]). */
void sl_convmod_forward(const SlConv2d *m, float *out, const float *in, int64_t B, int64_t H,
                        int64_t W, float *work);
void sl_convmod_backward(const SlConv2d *m, float *din, const float *dout, const float *in,
                         int64_t B, int64_t H, int64_t W, float *work);

#endif
