/* train.h - training a style adapter (or, with `full`, every U-Net weight) on
 * a folder of images with the denoising loss.
 *
 * One step (sl_trainer_step), for each shard of micro_batch images of the batch
 * (one shard of B by default), for each of grad_accum micro-batches:
 *   pick samples in a seeded per-epoch permutation; take their cached VAE
 *   latent distribution (mean, std) and sample z = mean + std * n, scaled by
 *   the VAE's scaling factor; take their cached text embedding (or the empty
 *   caption's, with probability caption_dropout); draw t ~ U[0, T) and noise;
 *   x_t = add_noise; U-Net forward; loss = MSE(pred, eps or v), optionally
 *   min-SNR-gamma weighted per sample; backward through the frozen U-Net into
 *   the adapter (gradients accumulate); with several shards, each starts from
 *   zeroed gradients and the shards' gradients are summed in order in double,
 *   rounded once (the same sum as dist.h's rank-order all-reduce, so N ranks x
 *   batch b give the bytes of one process with batch N b and micro_batch b);
 * then the data-parallel slot (reduce_grads, if set: one fused buffer of every
 * trainable gradient, e.g. an MPI all-reduce), clipping by global norm, a NaN
 * check, AdamW at the scheduled learning rate, and the gradients are zeroed.
 *
 * Every random draw is a Philox counter keyed by (seed, purpose, global sample
 * index), so a run is the same bytes for any thread count and a resumed run
 * continues exactly where a checkpoint left it.
 *
 * Caches: each image's latent distribution (and its mirror's, with flip) and
 * each caption's embedding are computed once and kept in memory; with
 * cache_dir they are also stored there as safetensors files keyed by a hash of
 * the image bytes (or caption), the settings and the encoder weights, so a
 * second run skips encoding.
 *
 * Checkpoints: <out> (the adapter, in the chosen format) and <out>.state
 * (.safetensors: exact fp32 trainable weights, AdamW moments, step, settings),
 * each written atomically; resume checks that the settings that shape the run
 * are the same.
 *
 * Dimension letters: B batch, C latent channels, h/w latent size, R image
 * size, T text tokens, D text width.
 */
#ifndef SL_PIPELINE_TRAIN_H
#define SL_PIPELINE_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "pipeline/data.h"
#include "pipeline/model.h"
#include "pipeline/optim.h"
#include "styles/adapter.h"

#define SL_TRAIN_MAX_SAMPLE_PROMPTS 8

typedef struct SlTrainConfig {
    const char *model, *config_dir, *data, *out, *cache_dir, *log_csv;
    int64_t steps, batch, grad_accum, resolution;   /* resolution 0: the VAE's sample_size */
    /* images per forward/backward (0: = batch; must divide batch). Not a setting of the
     * run (resume may change it); it caps activation memory and, with a double buffer
     * of the trainable gradients, fixes the gradient sum's order (see above). */
    int64_t micro_batch;
    /* adapter */
    int64_t rank, conv_rank;
    float alpha;                 /* <= 0: = rank */
    const char *targets;         /* NULL: "attn" */
    int dora, rslora, gaussian_init;
    float dropout;
    int full;                    /* train every U-Net weight instead (baseline) */
    const char *base;            /* [nf4] NULL/"fp32"; "fp16": binary16 frozen U-Net weights (pipeline/half.h); "nf4": NF4 frozen U-Net linears (pipeline/quant.h) */
    const char *nf4_layers;      /* [nf4] NULL: SL_NF4_DEFAULT_LAYERS */
    int nf4_double_quant;        /* [nf4] double-quantized absmax */
    /* objective and optimizer */
    float lr;
    SlLrSchedule lr_schedule;
    int64_t warmup;
    SlAdamWConfig adam;
    float grad_clip;             /* <= 0: off */
    float min_snr_gamma;         /* <= 0: off */
    float noise_offset;
    float caption_dropout;
    int clip_skip;               /* A1111 convention, 1 = last layer */
    /* data */
    const char *trigger, *caption;
    int flip;                    /* random horizontal flip */
    int stop_on_bad_image;
    /* run */
    uint64_t seed;
    int64_t save_every;          /* 0: only at the end */
    int resume;
    SlAdapterFormat format;      /* KOHYA or PEFT */
    SlDType save_dtype;          /* F32, F16, BF16 */
    int64_t sample_every;        /* 0: off */
    const char *sample_prompts[SL_TRAIN_MAX_SAMPLE_PROMPTS];
    int n_sample_prompts;
    int sample_steps;
    float sample_cfg;
    const char *base_model_name; /* for ss_sd_model_name (default: the model path) */
    FILE *progress;              /* progress bars of the set-up work (NULL: none) */
    SlKernels kernels;           /* the kernels of every model part (nn/kernels.h; zero: the CPU's default) */
    /* data parallelism (default: one process, dp_world 0 or 1): this process is
     * rank dp_rank of dp_world and `batch` is per rank. The settings (state file,
     * metadata) record the global batch batch * dp_world, so a run resumes with
     * any rank count that keeps the global batch. With cache_dir and cache_sync,
     * rank r first encodes the images i % dp_world == r into the folder, then
     * cache_sync(cache_user) (a barrier across the ranks), then every rank reads
     * them all: the encoders run once, split across the ranks. cache_sync runs
     * twice (latents, text) unless set-up fails first; it returns nonzero if
     * another rank failed, and set-up then stops (SL_ERR_INTERRUPTED). */
    int dp_rank, dp_world;
    int (*cache_sync)(void *user);
    void *cache_user;
} SlTrainConfig;

/* Defaults that work on the shipped model without tuning. */
void sl_train_config_default(SlTrainConfig *c);
/* Reads settings from a JSON object file (keys as the command's long options
 * without "--", '-' or '_' alike). Strings point into *holder (free with sl_config_free). */
struct SlConfig;
SlStatus sl_train_config_from_json(SlTrainConfig *c, const char *path, struct SlConfig *holder, SlCtx *ctx);

typedef struct SlTrainer {
    SlTrainConfig cfg;
    SlModel model;
    SlDataset data;
    int n_valid;                 /* images that could be read */
    int *valid;                  /* [n_valid] item indices */
    int64_t n_samples;           /* per epoch, with repeats */
    int64_t C, h, w, T, D, R;
    int64_t micro;               /* images per forward/backward: micro_batch, or batch */
    float *lat_mean, *lat_std;   /* [n_valid * (flip?2:1), C, h, w] */
    float *text;                 /* [(n_valid + 1), T, D]; the last is the empty caption */
    int cache_hits, cache_misses;
    SlSites sites;
    SlAdapter adapter;
    SlAdapterSet set;
    int n_params;
    SlParamRef *params;
    SlAdamW opt;
    int64_t step;                /* optimizer steps done */
    int64_t *perm;               /* [n_samples] current epoch order */
    int64_t perm_epoch;
    /* per-step buffers, [micro, ...] */
    float *x0, *eps, *xt, *target, *pred, *dout, *ehs, *tt, *snr_w;
    int64_t *tint;
    /* last step */
    float loss, lr, grad_norm;   /* loss: this rank's share of the global mean (sum over ranks) */
    double loss_share;           /* the same in double (summed across ranks in rank order) */
    /* data parallelism: this process is rank `rank` of `world` (1 by default);
     * rank r takes samples r*B.. of each global batch of world*B, and the loss
     * is normalised by the global batch, so reduce_grads must SUM */
    int rank, world;
    /* data-parallel slot: called with every trainable gradient in one buffer */
    void (*reduce_grads)(void *user, float *buf, size_t n);
    void *reduce_user;
    float *fused;                /* [n_fused] gather buffer when the grads are not contiguous */
    size_t n_fused;
    double *acc;                 /* [n_fused] sum of the shards' gradients (micro < batch only) */
} SlTrainer;

/* The trainer keeps a copy of *cfg, whose strings must outlive it.
 * Loads the model and data, fills the caches, creates (or, with cfg->resume,
 * restores) the adapter and optimizer. Logs progress through ctx. Errors
 * (empty folder, unreadable images with stop_on_bad_image, a read-only output
 * folder, settings that differ from the checkpoint's) come before any step. */
SlStatus sl_trainer_init(SlTrainer *tr, const SlTrainConfig *cfg, SlCtx *ctx);
void sl_trainer_free(SlTrainer *tr);
/* One optimizer step. A NaN/Inf loss or gradient is SL_ERR_NUMERIC naming the
 * step and the first tensor that went bad; nothing is updated then. */
SlStatus sl_trainer_step(SlTrainer *tr, SlCtx *ctx);
/* Mean loss over n fixed batches drawn with `seed` instead of the run's seed
 * (same images, timesteps and noise every call): a validation loss that shows
 * whether training helped. No gradients, no dropout. */
SlStatus sl_trainer_eval_loss(SlTrainer *tr, int n, uint64_t seed, double *loss, SlCtx *ctx);
/* Writes the adapter (cfg->out) and the state file, atomically. */
SlStatus sl_trainer_save(SlTrainer *tr, SlCtx *ctx);
/* Writes sample images for the configured prompts into dir (step in the names). */
SlStatus sl_trainer_sample(SlTrainer *tr, const char *dir, SlCtx *ctx);
/* Path of the state file for an adapter path. */
void sl_trainer_state_path(char *buf, size_t n, const char *out);
/* Bytes of the trainable parameters, their gradients and the optimizer state. */
void sl_trainer_memory(const SlTrainer *tr, size_t *params, size_t *grads, size_t *optim);

#endif
