/* optim.h - AdamW over the trainable tensors, learning-rate schedules and
 * gradient clipping, with torch.optim.AdamW's exact update order.
 *
 * The optimizer sees a list of (weight, grad, n) references; its two moment
 * buffers live in one arena sized from that list (STYLE rule 2), so the
 * optimizer state shrinks with the trainable parameters: LoRA's is a few MB,
 * full fine-tuning's is 2x the U-Net.
 *
 * Reductions (the global gradient norm) use a fixed chunking and double
 * accumulation, so results are the same bytes for any thread count.
 *
 * Dimension letters: n elements of one tensor, P tensors.
 */
#ifndef SL_PIPELINE_OPTIM_H
#define SL_PIPELINE_OPTIM_H

#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

typedef struct SlParamRef {
    float *w;          /* [n] weights (updated in place) */
    float *g;          /* [n] gradient (read; the caller zeroes it between steps) */
    int64_t n;
    int decay;         /* 1: apply weight decay to this tensor */
    const char *name;  /* for messages (not owned) */
} SlParamRef;

typedef struct SlAdamWConfig {
    float beta1, beta2, eps, weight_decay;
} SlAdamWConfig;

typedef struct SlAdamW {
    SlAdamWConfig cfg;
    int64_t step;        /* steps taken */
    int n_params;
    SlParamRef *params;  /* copy of the list */
    float **m, **v;      /* per tensor, into the arena */
    SlArena state;       /* both moments, fp32 */
} SlAdamW;

/* torch's defaults: beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0.01. */
SlAdamWConfig sl_adamw_defaults(void);
SlStatus sl_adamw_init(SlAdamW *o, const SlParamRef *params, int n, const SlAdamWConfig *cfg, SlCtx *ctx);
void sl_adamw_free(SlAdamW *o);
/* One step at learning rate lr (as torch.optim.AdamW.step). */
void sl_adamw_step(SlAdamW *o, float lr);
/* Bytes of optimizer state (both moments). */
size_t sl_adamw_state_bytes(const SlAdamW *o);

/* sqrt(sum of squared gradients) over all tensors (deterministic). */
double sl_grad_global_norm(const SlParamRef *p, int n);
/* torch.nn.utils.clip_grad_norm_: if norm > max_norm, scales every gradient by
 * max_norm / (norm + 1e-6). Returns the norm before clipping. */
double sl_grad_clip(SlParamRef *p, int n, double max_norm);
/* Index of the first tensor holding a NaN/Inf gradient, or -1. */
int sl_grad_first_nonfinite(const SlParamRef *p, int n);

typedef enum SlLrSchedule { SL_LR_CONSTANT = 0, SL_LR_CONSTANT_WARMUP, SL_LR_LINEAR, SL_LR_COSINE } SlLrSchedule;
int sl_lr_schedule_from_name(const char *s, SlLrSchedule *out); /* 1 if known */
const char *sl_lr_schedule_name(SlLrSchedule s);
/* The learning rate for 0-based `step` of `total`, as diffusers' get_scheduler
 * (LambdaLR factors): constant; constant_with_warmup (step/warmup ramp);
 * linear (ramp, then linear decay to 0 at total); cosine (ramp, then
 * 0.5 * (1 + cos(pi * progress))). */
float sl_lr_at(SlLrSchedule s, float base_lr, int64_t step, int64_t warmup, int64_t total);

#endif
