/* unet.h - the Stable Diffusion U-Net (diffusers UNet2DConditionModel), forward and backward.
 *
 * Supported: down blocks CrossAttnDownBlock2D / DownBlock2D, up blocks
 * CrossAttnUpBlock2D / UpBlock2D, mid block UNetMidBlock2DCrossAttn or none,
 * ResnetBlock2D with a time embedding ("default" scale-shift), Transformer2DModel
 * with conv1x1 or linear projections, BasicTransformerBlock (self attention,
 * cross attention, GEGLU feed-forward), positional timestep embedding. Any
 * other config value is refused with SL_ERR_UNSUPPORTED naming the key.
 *
 * Use:
 *   sl_unet_config_load / sl_unet_config_parse   -> SlUNetConfig
 *   sl_unet_init(u, cfg, ctx)                     builds modules, allocates the weight arena
 *   sl_unet_load(u, weights, ctx)                 diffusers names; for a single file
 *                                                 install sl_unet_ldm_map() first
 *   sl_unet_enable_grads(u, ctx)                  (full fine-tuning) dw/db for every weight
 *   sl_unet_set_checkpointing(u, 1)               (optional) recompute module caches in backward
 *   sl_unet_set_inference(u, 1)                   (optional) forward only: no backward caches
 *   sl_unet_set_kernels(u, &k)                    (optional) kernels other than the CPU's default
 *   sl_unet_plan(u, B, H, W, T, ctx)              allocates activations for these sizes
 *   sl_unet_forward(u, out, sample, t, ehs)       no allocation
 *   sl_unet_backward(u, dsample, dout)            reverse walk; grads accumulate (caller zeroes)
 *   sl_unet_free(u)
 * Adapters find a layer by its diffusers name with sl_unet_find_linear/conv and
 * set its `hook` (nn/module.h).
 *
 * Dimension letters: B batch, C channels, H/W latent height/width, T text
 * tokens, D cross-attention width, S = H*W tokens of an image row-major.
 *
 * Not here: noise schedules, the text encoder, adapters (styles/).
 */
#ifndef SL_UNET_H
#define SL_UNET_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"
#include "core/weights.h"
#include "nn/module.h"

#define SL_UNET_MAX_BLOCKS 6
#define SL_UNET_MAX_LAYERS 8     /* layers_per_block */
#define SL_UNET_MAX_TLAYERS 16   /* transformer_layers_per_block */

typedef struct SlUNetConfig {
    int64_t in_channels, out_channels;
    int n_blocks;
    int64_t block_out[SL_UNET_MAX_BLOCKS];   /* block_out_channels */
    int down_attn[SL_UNET_MAX_BLOCKS];       /* down block i is CrossAttnDownBlock2D */
    int up_attn[SL_UNET_MAX_BLOCKS];         /* up block i is CrossAttnUpBlock2D */
    int64_t layers[SL_UNET_MAX_BLOCKS];      /* layers_per_block of down block i */
    int64_t heads[SL_UNET_MAX_BLOCKS];       /* attention heads of down block i (resolved) */
    int64_t tlayers[SL_UNET_MAX_BLOCKS];     /* transformer layers of down block i */
    int64_t up_tlayers[SL_UNET_MAX_BLOCKS];  /* transformer layers of up block i */
    int has_mid;                             /* mid_block_type UNetMidBlock2DCrossAttn */
    int64_t groups;                          /* norm_num_groups */
    float eps;                               /* norm_eps (resnets, conv_norm_out) */
    int64_t cross_dim;                       /* cross_attention_dim */
    int linear_proj;                         /* use_linear_projection */
    int flip_sin_to_cos;
    float freq_shift;
    int64_t time_dim;                        /* block_out[0] * 4 */
} SlUNetConfig;

/* Parses a diffusers unet config.json (label names it in messages). */
SlStatus sl_unet_config_load(SlUNetConfig *cfg, const char *path, SlCtx *ctx);
SlStatus sl_unet_config_parse(SlUNetConfig *cfg, const char *json, const char *label, SlCtx *ctx);

/* ---- modules ---- */

typedef struct SlUNetNorm {    /* GroupNorm (G > 0) over [B,C,S] or LayerNorm (G = 0) over [N,C] */
    int64_t C, G;
    float eps;
    float *g, *b;              /* [C] keys <name>.weight, <name>.bias */
    float *dg, *db;
} SlUNetNorm;

typedef struct SlUNetResnet {  /* ResnetBlock2D, key <name> */
    int64_t Ci, Co, H, W;
    SlUNetNorm norm1;          /* <name>.norm1 */
    SlConv2d conv1;            /* <name>.conv1 */
    SlLinear temb;             /* <name>.time_emb_proj */
    SlUNetNorm norm2;          /* <name>.norm2 */
    SlConv2d conv2;            /* <name>.conv2 */
    int has_shortcut;
    SlConv2d shortcut;         /* <name>.conv_shortcut (1x1, only if Ci != Co) */
    /* acts */
    const float *in; float *din;     /* [B,Ci,S] */
    float *out, *dout;               /* [B,Co,S] */
    float *n1, *mean1, *rstd1, *a1;  /* [B,Ci,S], [B*G], [B*G], [B,Ci,S] (silu) */
    float *h1;                       /* [B,Co,S] conv1 + temb */
    float *n2, *mean2, *rstd2, *a2;  /* [B,Co,S] ... */
} SlUNetResnet;

typedef struct SlUNetTBlock {  /* BasicTransformerBlock <name>.transformer_blocks.i */
    SlUNetNorm ln1, ln2, ln3;  /* .norm1 .norm2 .norm3 (LayerNorm eps 1e-5) */
    SlLinear q1, k1, v1, o1;   /* .attn1.to_q/.to_k/.to_v/.to_out.0 */
    SlLinear q2, k2, v2, o2;   /* .attn2.* (k, v read encoder_hidden_states [B,T,D]) */
    SlLinear ff1, ff2;         /* .ff.net.0.proj [2*4C, C] (GEGLU: hidden then gate), .ff.net.2 [C, 4C] */
    /* acts ([N,C] with N = B*S unless noted) */
    float *x;                                      /* block input */
    float *n1, *m1, *r1, *qq1, *kk1, *vv1, *at1, *lse1;
    float *xa;                                     /* after attn1 */
    float *n2, *m2, *r2, *qq2, *kk2, *vv2, *at2, *lse2;  /* kk2, vv2 [B*T,C] */
    float *xb;                                     /* after attn2 */
    float *n3, *m3, *r3, *f1, *gg;                 /* f1 [N,8C], gg [N,4C] */
} SlUNetTBlock;

typedef struct SlUNetTransformer {  /* Transformer2DModel, key <name> */
    int64_t C, H, W, heads, n_tblocks;
    SlUNetNorm norm;           /* <name>.norm (GroupNorm eps 1e-6) */
    SlLinear proj_in;          /* <name>.proj_in (conv1x1 unless use_linear_projection) */
    SlUNetTBlock *tb;          /* n_tblocks */
    SlLinear proj_out;         /* <name>.proj_out */
    /* acts */
    const float *in; float *din;     /* [B,C,S] */
    float *out, *dout;               /* [B,C,S] */
    float *gn, *mean, *rstd;         /* [B,C,S], [B*G] x2 */
    float *tok;                      /* [B,S,C] transposed gn */
    float *hout;                     /* [B,S,C] last block output */
    float *po;                       /* [B,S,C] proj_out result */
} SlUNetTransformer;

typedef struct SlUNetSampler { /* Downsample2D (conv 3x3 stride 2 pad 1) or Upsample2D (nearest x2 + conv) */
    int up;
    int64_t C, H, W;           /* input size */
    SlConv2d conv;             /* <name>.conv */
    const float *in; float *din;
    float *out, *dout;
    float *u;                  /* [B,C,2H,2W] upsampled input (up only) */
} SlUNetSampler;

typedef struct SlUNetConcat {  /* torch.cat([a, b], dim=1) */
    int64_t Ca, Cb, S;
    const float *a, *b; float *da, *db;
    float *out, *dout;         /* [B,Ca+Cb,S] */
} SlUNetConcat;

typedef enum SlUNetLayerKind {
    SL_UL_CONV_IN, SL_UL_RESNET, SL_UL_TRANSFORMER, SL_UL_SAMPLER, SL_UL_CONCAT, SL_UL_OUT
} SlUNetLayerKind;

typedef struct SlUNetLayer {
    SlUNetLayerKind kind;
    int index;                 /* into the array of its kind */
    int src, src2;             /* layers whose outputs it reads (-1: the sample); src2 for concat */
    int64_t C, H, W;           /* output size per batch item */
    float *out, *dout;         /* [B,C,H,W] (the OUT layer writes the caller's buffer) */
} SlUNetLayer;

typedef struct SlUNetParam {   /* one named weight tensor */
    char name[128];            /* diffusers key */
    int ndim;
    int64_t shape[4];
    float **w, **g;            /* slots in the module structs */
    float *init_w;             /* position in the weight arena */
} SlUNetParam;

typedef struct SlUNetModRef {  /* a weight-bearing module by name (for hooks) */
    char name[128];            /* diffusers module name, e.g. "...attn1.to_q" */
    SlLinear *lin;             /* exactly one of lin / conv */
    SlConv2d *conv;
    int64_t rows;              /* linear: N rows per call at the planned size (0 before planning) */
} SlUNetModRef;

typedef struct SlUNet {
    SlUNetConfig cfg;
    /* time embedding */
    SlLinear time1;            /* time_embedding.linear_1 [4c0, c0] */
    SlLinear time2;            /* time_embedding.linear_2 [4c0, 4c0] */
    SlConv2d conv_in;          /* conv_in [c0, Cin, 3, 3] */
    SlUNetNorm norm_out;       /* conv_norm_out */
    SlConv2d conv_out;         /* conv_out [Cout, c0, 3, 3] */
    int n_res, n_tr, n_smp, n_cat, n_layers;
    SlUNetResnet *res;
    SlUNetTransformer *tr;
    SlUNetSampler *smp;
    SlUNetConcat *cat;
    SlUNetLayer *layers;       /* execution order */
    int n_params, n_mods;
    SlUNetParam *params;
    SlUNetModRef *mods;
    SlArena weights;           /* all weights */
    SlArena grads;             /* all dw/db when enabled (size 0 otherwise) */
    int checkpoint;            /* gradient checkpointing (set with sl_unet_set_checkpointing) */
    int inference;             /* next plan is forward-only (set with sl_unet_set_inference) */
    int planned_inference;     /* the current plan is forward-only: backward refuses to run */
    SlKernels kern;            /* kernels of the next plan (sl_unet_set_kernels; zero: the CPU's default) */
    /* planned sizes */
    int64_t B, H, W, T;
    SlArena acts;
    float *x0, *dx0;           /* conv_in out [B,c0,H,W] */
    float *tsin;               /* [B,c0] sinusoidal embedding */
    float *t1, *t1a, *emb, *emb_act, *demb_act; /* [B,4c0] */
    float *no, *no_mean, *no_rstd, *no_act; /* conv_norm_out: [B,c0,H,W], [B*G] x2, silu [B,c0,H,W] */
    const float *sample, *ehs; /* inputs of the last forward */
    float *dehs;               /* caller-set, may be NULL: backward accumulates dL/d(ehs) [B,T,D] here */
    float *scratch[6];         /* each max_act floats */
    float *work;               /* conv / attention workspace */
    size_t max_act;
    size_t max_work;
    double flops;              /* forward FLOPs at the planned size */
} SlUNet;

SlStatus sl_unet_init(SlUNet *u, const SlUNetConfig *cfg, SlCtx *ctx);
/* Builds modules, parameter names/shapes and the layer list WITHOUT the weight
 * arena (weight pointers stay NULL): for key listings, maps and memory plans.
 * Free with sl_unet_free; do not load, plan or run such a U-Net. */
SlStatus sl_unet_init_shapes(SlUNet *u, const SlUNetConfig *cfg, SlCtx *ctx);
/* Gives a U-Net from sl_unet_init_shapes its fp32 weight arena (sl_unet_init = both). */
SlStatus sl_unet_alloc_weights(SlUNet *u, SlCtx *ctx);
void sl_unet_free(SlUNet *u);
/* Loads every weight by diffusers name (through w's map if installed). */
SlStatus sl_unet_load(SlUNet *u, SlWeights *w, SlCtx *ctx);
/* Fills the weights with a seeded pseudo-random init (benches, FD tests): uniform with
 * std 1/sqrt(fan_in) (biases 0.02), norm weights 1 and biases 0. */
void sl_unet_init_random(SlUNet *u, uint64_t seed);
/* Allocates a gradient for every weight (full fine-tuning). */
SlStatus sl_unet_enable_grads(SlUNet *u, SlCtx *ctx);
void sl_unet_zero_grads(SlUNet *u);
/* Gradient checkpointing per module (resnet, transformer, upsampler): only the
 * layer outputs are kept; each module's internal caches share one region and
 * its forward is recomputed just before its backward. Call before sl_unet_plan. */
void sl_unet_set_checkpointing(SlUNet *u, int on);
/* Inference (no-grad) plans: with on, the next sl_unet_plan keeps no backward
 * state - every module's internal caches share one region (as with
 * checkpointing) and no gradient buffers are allocated - so sampling needs far
 * less memory and touches less of it. Outputs are the same bits as a training
 * plan's. sl_unet_backward must not follow such a plan (it returns at once).
 * Call before sl_unet_plan; returns the previous setting. */
int sl_unet_set_inference(SlUNet *u, int on);
/* The kernels (nn/kernels.h) every product of the next plan runs on: sl_unet_plan
 * stamps them on each module (hooks read them there) and passes them to attention.
 * Call before sl_unet_plan (after init); NULL: the CPU's default. */
void sl_unet_set_kernels(SlUNet *u, const SlKernels *k);
/* Plans and allocates activations for sample [B,Cin,H,W] and ehs [B,T,D].
 * H and W must be divisible by 2^(n_blocks-1). */
SlStatus sl_unet_plan(SlUNet *u, int64_t B, int64_t H, int64_t W, int64_t T, SlCtx *ctx);
/* The activation arena bytes sl_unet_plan would allocate for these sizes, without
 * allocating (memory plans, pipeline/memplan.h). It sets the planned sizes and the
 * modules' rows as sl_unet_plan does, but no buffer: on a planned U-Net, plan it again
 * before running it; on one from sl_unet_init_shapes, adapter caches can be sized from it. */
SlStatus sl_unet_plan_bytes(SlUNet *u, int64_t B, int64_t H, int64_t W, int64_t T, size_t *bytes, SlCtx *ctx);
/* out [B,Cout,H,W] = unet(sample [B,Cin,H,W], timesteps [B], ehs [B,T,D]).
 * sample and ehs must stay valid until backward. */
void sl_unet_forward(SlUNet *u, float *out, const float *sample, const float *timesteps, const float *ehs);
/* Backward of the last forward from dout [B,Cout,H,W]: accumulates every
 * non-NULL weight gradient and hook gradient; dsample [B,Cin,H,W] (may be NULL)
 * is accumulated too, and u->dehs [B,T,D] when the caller set it (text-encoder
 * training); with u->dehs NULL that work is skipped. */
void sl_unet_backward(SlUNet *u, float *dsample, const float *dout);

/* The linear or conv module whose weight p is, or NULL (biases, norms, embeddings). */
SlUNetModRef *sl_unet_module_of_param(SlUNet *u, const SlUNetParam *p);
/* Finds a module by diffusers name ("down_blocks.0.attentions.0.proj_in"); NULL if absent. */
SlLinear *sl_unet_find_linear(SlUNet *u, const char *name);
SlConv2d *sl_unet_find_conv(SlUNet *u, const char *name);
/* Finds a parameter by key ("conv_in.weight"); NULL if absent. */
SlUNetParam *sl_unet_find_param(SlUNet *u, const char *name);
/* Total number of weight floats. */
int64_t sl_unet_n_weights(const SlUNet *u);
/* Approximate FLOPs of one forward at the planned size (multiply-add = 2). */
double sl_unet_forward_flops(const SlUNet *u);

/* Builds the single-file (original LDM, "model.diffusion_model.*" without the
 * prefix) key table for this config: pairs[i].from = diffusers name,
 * pairs[i].to = LDM name. Returns a malloc'd array (free with sl_unet_free_map). */
SlStatus sl_unet_ldm_map(const SlUNet *u, SlKeyPair **pairs, int *n, SlCtx *ctx);
void sl_unet_free_map(SlKeyPair *pairs, int n);

#endif
