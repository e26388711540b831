/* schedule.h - the diffusion noise schedule (training side) and its config.
 *
 * Follows diffusers 0.30 (DDIMScheduler / DDPMScheduler / EulerDiscrete /
 * DPMSolverMultistep share the same beta tables). Numerics match PyTorch 1.13
 * on CPU bit for bit where that is cheap: betas are float32 from torch's CPU
 * linspace (AVX2 kernel: 8-wide vectors whose first lane is an FMA), the
 * cumulative product accumulates in double and stores float32, as
 * torch.cumprod does on CPU.
 *
 * Dimension letters: T train timesteps, B batch, N elements per sample.
 *
 * Not here: the samplers that walk the schedule at inference time
 * (pipeline/sampler.h), randomness (the caller supplies noise), the UNet.
 */
#ifndef SL_SCHEDULE_H
#define SL_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef enum SlBetaSchedule { SL_BETA_LINEAR = 0, SL_BETA_SCALED_LINEAR, SL_BETA_SQUAREDCOS_CAP_V2 } SlBetaSchedule;
typedef enum SlPrediction { SL_PRED_EPSILON = 0, SL_PRED_V, SL_PRED_SAMPLE } SlPrediction;
typedef enum SlSpacing { SL_SPACING_LEADING = 0, SL_SPACING_TRAILING, SL_SPACING_LINSPACE } SlSpacing;

#define SL_SCHED_MAX_T 100000

/* A parsed diffusers scheduler_config.json. Keys absent or null take the
 * diffusers defaults (those of DDIMScheduler, except timestep_spacing, which
 * defaults to "linspace" when _class_name is an Euler* or DPMSolver* class). */
typedef struct SlSchedConfig {
    char class_name[64];         /* "_class_name" ("" if absent) */
    int num_train_timesteps;     /* "num_train_timesteps" (1000) */
    double beta_start;           /* "beta_start" (0.0001) */
    double beta_end;             /* "beta_end" (0.02) */
    SlBetaSchedule beta_schedule;/* "beta_schedule" ("linear") */
    float *trained_betas;        /* "trained_betas": [num_train_timesteps] or NULL; owned */
    SlPrediction prediction_type;/* "prediction_type" ("epsilon") */
    int steps_offset;            /* "steps_offset" (0) */
    SlSpacing timestep_spacing;  /* "timestep_spacing" */
    int set_alpha_to_one;        /* "set_alpha_to_one" (true) */
    int clip_sample;             /* "clip_sample" (true; DDIM only) */
    double clip_sample_range;    /* "clip_sample_range" (1.0) */
    int rescale_betas_zero_snr;  /* "rescale_betas_zero_snr" (false) */
    int use_karras_sigmas;       /* "use_karras_sigmas" (false): default for sigma samplers */
    double sigma_min, sigma_max; /* "sigma_min"/"sigma_max" for Karras; NAN if absent */
    double lambda_min_clipped;   /* DPM-Solver "lambda_min_clipped" (-inf) */
} SlSchedConfig;

/* Fills c with the defaults above (no allocation). */
void sl_sched_config_default(SlSchedConfig *c);
/* Parses JSON text (label names it in messages). Wrong JSON types fail with
 * SL_ERR_FORMAT naming label and key; valid but unsupported values (e.g.
 * thresholding: true, beta_schedule "foo") fail with SL_ERR_UNSUPPORTED naming
 * key and value. Bare -Infinity/Infinity (as Python's json writes
 * lambda_min_clipped) are accepted. Unknown keys are ignored, as diffusers does.
 * On failure c holds nothing that needs freeing. */
SlStatus sl_sched_config_parse(SlSchedConfig *c, const char *text, const char *label, SlCtx *ctx);
SlStatus sl_sched_config_load(SlSchedConfig *c, const char *path, SlCtx *ctx);
void sl_sched_config_free(SlSchedConfig *c);

const char *sl_prediction_name(SlPrediction p);   /* "epsilon", "v_prediction", "sample" */
const char *sl_spacing_name(SlSpacing s);         /* "leading", "trailing", "linspace" */
int sl_prediction_from_name(const char *s, SlPrediction *out); /* 1 if known */
int sl_spacing_from_name(const char *s, SlSpacing *out);       /* 1 if known */

/* The beta/alpha tables. */
typedef struct SlSchedule {
    SlSchedConfig cfg;        /* copy; cfg.trained_betas is NULL here */
    int T;                    /* num_train_timesteps */
    float *betas;             /* [T] */
    float *alphas_cumprod;    /* [T] (the last is 0 with rescale_betas_zero_snr) */
    float final_alpha_cumprod;/* 1 if set_alpha_to_one, else alphas_cumprod[0] */
} SlSchedule;

/* Builds the tables for cfg (cfg is copied; trained_betas are read, not kept). */
SlStatus sl_schedule_init(SlSchedule *s, const SlSchedConfig *cfg, SlCtx *ctx);
void sl_schedule_free(SlSchedule *s);

/* float32 linspace exactly as torch 1.13's CPU kernel computes it (out: [n]). */
void sl_linspace_f32_torch(float *out, float start, float end, int n);

/* ---- training side ---- */

/* Forward process, per sample b (t[b] in [0, T)):
 * x_t[b] = sqrt(acp[t]) x0[b] + sqrt(1 - acp[t]) eps[b]. x_t, x0, eps: [B, N].
 * x_t may alias x0 or eps. Fails with SL_ERR_ARG on a timestep out of range. */
SlStatus sl_schedule_add_noise(float *x_t, const float *x0, const float *eps, const int64_t *t, int B, size_t N,
                               const SlSchedule *s, SlCtx *ctx);
/* v-prediction target: v[b] = sqrt(acp[t]) eps[b] - sqrt(1 - acp[t]) x0[b]. [B, N]. */
SlStatus sl_schedule_velocity(float *v, const float *x0, const float *eps, const int64_t *t, int B, size_t N,
                              const SlSchedule *s, SlCtx *ctx);
/* The training target for prediction type p: eps, v, or x0. [B, N]. */
SlStatus sl_schedule_target(float *target, const float *x0, const float *eps, const int64_t *t, int B, size_t N,
                            SlPrediction p, const SlSchedule *s, SlCtx *ctx);
/* SNR(t) = acp / (1 - acp), computed as diffusers' compute_snr does ((sqrt a / sqrt(1-a))^2 in float32).
 * t must be in [0, T). */
float sl_schedule_snr(const SlSchedule *s, int64_t t);
/* Min-SNR-gamma loss weight: min(snr, gamma)/snr for epsilon, min(snr, gamma)/(snr+1)
 * for v_prediction, min(snr, gamma) for sample (as diffusers' training scripts). */
float sl_schedule_min_snr_weight(const SlSchedule *s, int64_t t, float gamma, SlPrediction p);

#endif
