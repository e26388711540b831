/* sampler.h - inference-time samplers over an SlSchedule: DDIM, Euler,
 * Euler ancestral, DPM++ 2M; default or Karras sigmas.
 *
 * Mirrors diffusers 0.30: DDIMScheduler, EulerDiscreteScheduler,
 * EulerAncestralDiscreteScheduler and DPMSolverMultistepScheduler
 * (algorithm_type "dpmsolver++", solver_order 2, solver_type "midpoint",
 * final_sigmas_type "zero", so the last step is first order).
 *
 * A denoise loop:
 *   SlSampler smp; sl_sampler_init(&smp, &sched, &opts, n_steps, ctx);
 *   x = noise * smp.init_noise_sigma;
 *   SlSamplerState st; sl_sampler_state_init(&st, history_buf, N);
 *   for i in 0..n_steps-1:
 *       xin = x * sl_sampler_input_scale(&smp, i)    (or sl_sampler_scale_model_input)
 *       u, c = unet(xin, smp.timesteps[i], ...)      (uncond and cond)
 *       sl_cfg_combine(eps, u, c, guidance, N)
 *       sl_sampler_step(&smp, &st, x, eps, i, x, noise_i (if sl_sampler_needs_noise), N, ctx)
 *
 * The sampler never draws randomness: ancestral / eta > 0 steps take the
 * caller's standard-normal noise for that step.
 *
 * Dimension letters: N elements of one latent batch (B*C*H*W), S steps.
 * Not here: the noise schedule tables (schedule.h), the model, the RNG.
 */
#ifndef SL_SAMPLER_H
#define SL_SAMPLER_H

#include <stddef.h>

#include "core/status.h"
#include "pipeline/schedule.h"

typedef enum SlSamplerKind { SL_SAMPLER_DDIM = 0, SL_SAMPLER_EULER, SL_SAMPLER_EULER_A, SL_SAMPLER_DPMPP_2M } SlSamplerKind;

typedef struct SlSamplerOpts {
    SlSamplerKind kind;
    int karras;          /* Karras sigmas (rho 7): Euler and DPM++ 2M only; -1 = take the config's use_karras_sigmas */
    float eta;           /* DDIM only: 0 deterministic, > 0 adds caller noise */
} SlSamplerOpts;

/* "ddim", "euler", "euler_a", "dpmpp_2m". */
const char *sl_sampler_kind_name(SlSamplerKind k);
int sl_sampler_kind_from_name(const char *s, SlSamplerKind *out); /* 1 if known */

typedef struct SlSampler {
    SlSamplerKind kind;
    int karras;
    float eta;
    SlPrediction pred;
    int n_steps;               /* S */
    double *timesteps;         /* [S] the model's timestep per step (whole numbers except Euler+Karras/linspace) */
    float *sigmas;             /* [S+1] Euler/DPM sigmas (last 0); NULL for DDIM */
    float init_noise_sigma;    /* scale of the initial latent noise */
    const SlSchedule *sched;   /* not owned; must outlive the sampler */
} SlSampler;

/* diffusers set_timesteps(n_steps) with the config's timestep_spacing and
 * steps_offset. Fails on n_steps outside [1, T], on Karras for DDIM / Euler
 * ancestral, on sample prediction for Euler ancestral, on eta < 0. */
SlStatus sl_sampler_init(SlSampler *s, const SlSchedule *sched, const SlSamplerOpts *opts, int n_steps, SlCtx *ctx);
void sl_sampler_free(SlSampler *s);

/* Factor the model input is multiplied by at step i: 1/sqrt(sigma^2+1) for
 * Euler-family, 1 otherwise. */
float sl_sampler_input_scale(const SlSampler *s, int i);
/* out[N] = scale_model_input(x, step i) (diffusers' exact division). out may alias x. */
void sl_sampler_scale_model_input(const SlSampler *s, float *out, const float *x, size_t N, int i);
/* 1 if step i reads the noise argument (Euler ancestral; DDIM with eta > 0). */
int sl_sampler_needs_noise(const SlSampler *s, int i);

/* Per-run multistep state (DPM++ 2M keeps one previous x0 prediction).
 * The caller owns the buffer (N floats) and must re-init between runs. */
typedef struct SlSamplerState {
    float *history;      /* [N] previous converted model output; caller-owned */
    size_t n;            /* N */
    int n_history;       /* 0 before the first step (diffusers' lower_order_nums, capped) */
    int next_step;       /* the step index expected next (steps must run 0, 1, 2, ...) */
} SlSamplerState;

void sl_sampler_state_init(SlSamplerState *st, float *history, size_t N);

/* One denoising step i (0-based) from sample x_i to prev: prev[N] = step(model_out[N], i, sample[N], noise[N]).
 * prev may alias sample. noise is required when sl_sampler_needs_noise(), else ignored (may be NULL).
 * st may be NULL except for DPM++ 2M, whose history must hold N floats.
 * Fails on i out of range, steps out of order (DPM++ 2M), missing noise or history. */
SlStatus sl_sampler_step(const SlSampler *s, SlSamplerState *st, float *prev, const float *model_out, int i,
                         const float *sample, const float *noise, size_t N, SlCtx *ctx);

/* Classifier-free guidance: out = uncond + scale * (cond - uncond), [N]. out may alias either. */
void sl_cfg_combine(float *out, const float *uncond, const float *cond, float scale, size_t N);

#endif
