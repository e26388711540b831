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
 * Buckets (cfg.buckets): each image goes to an aspect-ratio bucket (data.h), every
 * batch (one accumulation micro-batch of the global batch) holds one bucket's
 * images, and the U-Net is re-planned when the shape changes (its adapter caches
 * were planned for the square R x R, the largest area). Per epoch each bucket's
 * samples are shuffled, cut into batches, and the batches shuffled (kohya's
 * BucketManager.shuffle and make_buckets); all draws are Philox counters as above.
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
 * are the same, and that the data folder and the base weights are: the state
 * records content hashes of both (sl_train_data_hash, sl_train_model_hash) and a
 * resume with others is refused, or with resume_anyway warned about. Temporary
 * files that killed runs left beside the outputs are removed at set-up
 * (sl_train_clean_stale_tmp).
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
#include "pipeline/memplan.h"
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
    const char *base;            /* [nf4] NULL/"fp32"; "fp16": binary16 frozen U-Net weights (pipeline/half.h); "bf16": bfloat16 ones, their products on the bf16 kernel (half.h); "nf4": NF4 frozen U-Net linears (pipeline/quant.h) */
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
    /* aspect-ratio buckets (data.h; kohya's enable_bucket); 0 sizes: defaults from the
     * resolution R and the model's size multiple m (VAE factor x U-Net downsamplings):
     * step = the first multiple of m >= min(64, R/8); sides R/2 .. 2R (kohya's 256..1024
     * at 512) rounded inwards to the step. */
    int buckets;
    int64_t bucket_step, min_bucket, max_bucket;
    int stop_on_bad_image;
    /* run */
    uint64_t seed;
    int64_t save_every;          /* 0: only at the end */
    int resume;
    int resume_anyway;           /* resume even if the data folder or the base weights differ (a warning) */
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
    uint64_t data_hash, model_hash; /* content hashes recorded in the state (train_resume.c) */
    SlSites sites;
    SlAdapter adapter;
    SlAdapterSet set;
    int n_params;
    SlParamRef *params;
    SlAdamW opt;
    int64_t step;                /* optimizer steps done */
    int64_t *perm;               /* [n_samples] current epoch order (buckets: grouped by bucket) */
    /* aspect-ratio buckets (cfg.buckets): the sizes, each valid image's bucket, and the
     * epoch's batches, each a run of global-batch size through one bucket's shuffled
     * samples (the last of a bucket wraps to its start: every batch is full) */
    SlBuckets buckets;
    int *item_bucket;            /* [n_valid] */
    int64_t *bucket_first;       /* [buckets.n + 1] each bucket's samples in perm */
    int64_t n_batches;           /* batches per epoch, for the global batch batch x world = batches_g */
    int64_t batches_g;           /* (world may be set after init: test_dist's simulated ranks) */
    int *batch_bucket;           /* [n_batches] this epoch's order */
    int64_t *batch_start;        /* [n_batches] first sample within its bucket */
    int64_t bh, bw;              /* latent size of the current batch (= h, w without buckets) */
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
 * folder, settings that differ from the checkpoint's) come before any step.
 * On failure everything it allocated is freed and *tr is zeroed: step, save,
 * sample and eval_loss on it return SL_ERR_ARG; sl_trainer_free stays safe. */
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
/* The image (index into tr->valid) at position j (0 <= j < batch x ranks) of global
 * batch kb (= step x grad_accum + accumulation micro-batch): what that batch trains on. */
int sl_trainer_batch_item(SlTrainer *tr, int64_t kb, int64_t j);
/* Bytes of the trainable parameters, their gradients and the optimizer state. */
void sl_trainer_memory(const SlTrainer *tr, size_t *params, size_t *grads, size_t *optim);
/* The memory plan of an initialised trainer (pipeline/memplan.h): the rows from the
 * arenas it holds (frozen weights by dtype, encoders, trainable parameters, gradients,
 * optimizer state, activations of one micro-batch, caches) and the predicted peak.
 * available and advice are 0 and "". */
void sl_trainer_mem_plan(const SlTrainer *tr, SlMemPlan *plan);
/* The same plan predicted before anything is loaded, from c alone: the model's
 * config.json files, its safetensors headers (the stored dtypes decide the default
 * base), the file sizes and the data folder's image count; nothing of the model's
 * size is allocated. Errors name the file (a missing config, a bad resolution). */
SlStatus sl_train_predict_memory(const SlTrainConfig *c, SlMemPlan *plan, SlCtx *ctx);
/* Pieces both plans share (memplan.c): the bytes the U-Net's load maps (its folder's
 * weight files, or the single file), the trainer's step buffers, and the U-Net weight
 * arena split by dtype (shapes: a U-Net from sl_unet_init_shapes; half: 0, or the 16-bit
 * format of a half base, SL_HALF_FP16 / SL_HALF_BF16 of pipeline/half.h; total 0: its size
 * as planned, else the real arena's bytes). */
double sl_mem_mapped_bytes(const char *model);
double sl_mem_step_buffer_bytes(int64_t micro, int64_t nl, int64_t nt, int64_t samples);
SlStatus sl_mem_unet_split(SlUNet *shapes, int nf4, int half, const char *which, int dq, double total, SlMemParts *m,
                           SlCtx *ctx);
/* Checks the prediction against `limit` bytes (plan->available = limit). If it does
 * not fit: with pick_micro, c->micro_batch becomes the largest divisor of the batch
 * that fits (plan re-predicted for it; plan->advice says what was picked); otherwise,
 * or if none fits, plan->advice names the settings that would fit (each re-predicted:
 * --micro-batch N, --base fp16 / nf4, a smaller --resolution) and *fits = 0. */
SlStatus sl_train_fit_memory(SlTrainConfig *c, double limit, int pick_micro, SlMemPlan *plan, int *fits, SlCtx *ctx);

/* ---- resume safety (train_resume.c) ---- */

/* A hash of the data the run trains on: every image's bytes, caption and repeat
 * count, in the dataset's order (an unreadable image by its file name). */
SlStatus sl_train_data_hash(const SlDataset *data, uint64_t *out, SlCtx *ctx);
/* A hash of the base weights at path (a diffusers folder: unet/, vae/,
 * text_encoder(_2)/ *.safetensors; or one .safetensors file): each file's name,
 * size and bytes, whole up to 64 MiB, beyond that its safetensors header and 256
 * evenly spaced 4 KiB samples (cheap on a multi-GB checkpoint). */
SlStatus sl_train_model_hash(const char *path, uint64_t *out, SlCtx *ctx);
/* Removes the temporary files this program writes (<out>.tmp.PID,
 * <out>.state.tmp.PID, the log's .tmp.PID, the write probe, cache entries'
 * .tmp.PID) whose process is gone (kill(PID, 0) fails with ESRCH); a live
 * process's files are kept. Returns how many were removed (each logged). */
int sl_train_clean_stale_tmp(const SlTrainConfig *c, SlCtx *ctx);

/* ---- the training loop (train_run.c), one for `stylora train` and its MPI ranks ---- */

/* What differs between one process and a data-parallel rank. Every field may be
 * zero/NULL (one process, nothing shown); tools/ fills them. Hooks may print. */
typedef struct SlTrainHooks {
    void *user;
    /* nonzero: this process writes nothing (ranks > 0): the adapter, the state, the
     * CSV log, the loss curve and the samples are the writer's */
    int silent;
    /* the gradient all-reduce, installed as SlTrainer.reduce_grads (NULL: none) */
    void (*reduce_grads)(void *user, float *buf, size_t n);
    /* 1 if this process was asked to stop (Ctrl-C), read once after each step */
    int (*stop_requested)(void *user);
    /* after each step on every process, with this process's stop request: may make
     * tr->loss the global batch's loss; returns the job's stop decision */
    int (*step_done)(void *user, SlTrainer *tr, int stop);
    /* a step failed (why: ctx); it may end the job instead of returning */
    void (*step_failed)(void *user, SlTrainer *tr, SlCtx *ctx);
    /* after a write only the writer made (log, checkpoint, samples), on every
     * process: returns nonzero if the write failed on any process */
    int (*agree)(void *user, int failed);
    /* after each step, writer only: loss_ema is the smoothed loss (factor 0.95) */
    void (*progress)(void *user, const SlTrainer *tr, double loss_ema);
    /* checkpoint policy: nonzero = save after this step (never asked at the last
     * step, which always saves). NULL: every cfg.save_every steps, and on stop. */
    int (*save_now)(void *user, const SlTrainer *tr, int stop);
    /* the run's HTML page (pipeline/report.h), writer only: its path (NULL: none),
     * rewritten at each checkpoint or sample and at the end, and the command line
     * it shows (NULL: none). Its images go in <out>.report/. A report that cannot
     * be written is a warning: it never stops the run. */
    const char *report_path;
    const char *cmdline;
} SlTrainHooks;

typedef struct SlTrainRunResult {
    int stopped;            /* 1: stopped on request, checkpoint at tr->step saved (resume continues) */
    int64_t first_step;     /* the step this run started at (> 0 after a resume) */
    double step_seconds;    /* wall time in the steps (with step_done) */
} SlTrainRunResult;

/* Trains an initialised trainer from tr->step to cfg.steps: each step, the CSV
 * log row (step, loss, lr, grad_norm; cfg.log_csv, default <out>.csv), the
 * checkpoint policy and the samples (cfg.sample_every, into the folder of out);
 * at the end the final save and the loss curve (<out>.loss.png). On resume the
 * log keeps its rows up to the checkpoint's step (rewritten atomically), so a
 * resumed run's log has each step once. A stop request ends the run after the
 * checkpoint of the step it came in (res->stopped), unless that is the last
 * step. Errors: a failed step (nothing updated, the last checkpoint kept), log,
 * save or sample; on a silent process whose writer failed, SL_ERR_INTERRUPTED. */
SlStatus sl_trainer_run(SlTrainer *tr, const SlTrainHooks *hooks, SlTrainRunResult *res, SlCtx *ctx);

#endif
