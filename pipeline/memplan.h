/* memplan.h - what a training run holds in memory: the plan printed before
 * step 1 and shown in the run's report (issue 22).
 *
 * A plan is rows of (label, bytes) in the order a person reads them (frozen
 * weights by dtype, trainable parameters, gradients, optimizer state,
 * activations per micro-batch, caches, ...), the predicted peak resident set,
 * and what was available. Its producer is sl_trainer_mem_plan; its consumers
 * (tools/ printing, the HTML report) only render the rows, so a row added
 * later needs no change there.
 *
 * Two producers fill the same rows (SlMemParts -> sl_mem_plan_from_parts):
 * sl_train_predict_memory (pipeline/train.h) from the configs, the safetensors
 * headers and the data folder, before anything big is allocated; and
 * sl_trainer_mem_plan from the arenas an initialised trainer really holds. The
 * predicted peak is max(training set, loading set): while the U-Net loads, its
 * weight files are mapped (file pages count in the resident set) beside the
 * weight arenas; during training, everything persistent plus the activations.
 * Rows whose label holds SL_MEMPLAN_TRANSIENT are the loading-time extra, not
 * part of the training set.
 *
 * Not here: measuring. The measured peak RSS is the caller's (getrusage).
 */
#ifndef SL_MEMPLAN_H
#define SL_MEMPLAN_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define SL_MEMPLAN_MAX_ROWS 32

typedef struct SlMemRow {
    char label[96];  /* "frozen weights, fp16 (U-Net linears+convs)" */
    double bytes;
} SlMemRow;

typedef struct SlMemPlan {
    int n;
    SlMemRow rows[SL_MEMPLAN_MAX_ROWS];
    double predicted_peak; /* bytes; 0: no prediction made */
    double available;      /* bytes: MemAvailable or --max-memory; 0: unknown */
    char advice[512];      /* "" when the run fits; else what to change, naming the setting */
} SlMemPlan;

/* Label marker of rows held only while the model loads (not summed into the training set). */
#define SL_MEMPLAN_TRANSIENT "while loading"

/* The process itself before any model: the binary, libc/libm/OpenMP/BLAS, thread
 * stacks, allocator slack, the tokenizer. Measured: `stylora train` on models/shapes64
 * peaks this much above the arenas of its plan (the binary alone: ~5 MiB). */
#define SL_MEMPLAN_PROGRAM_BYTES (8.0 * 1024 * 1024)

/* What a training run holds, in bytes, by part (0: the part is absent). */
typedef struct SlMemParts {
    int full;                  /* --full: the U-Net's fp32 weights are the trainable parameters */
    int64_t micro;             /* images per forward/backward */
    int64_t plan_batch;        /* the U-Net activation plan's batch: max(micro, 2) (set-up's, for guided samples) */
    int64_t images;            /* images in the latent cache */
    double unet_fp32, unet_fp16, unet_bf16, unet_nf4, nf4_tile; /* the U-Net weight arena by dtype */
    double text_encoder, vae;  /* their fp32 weight arenas */
    double trainable, grads, grad_sum, optimizer; /* grad_sum: the double accumulator (micro < batch) */
    double unet_acts;          /* the U-Net activation arena (forward caches kept for backward) */
    double adapter_caches;     /* the adapter hooks' caches (styles/) */
    double step_buffers;       /* x0, noise, x_t, target, prediction, dout, text [micro, ...] */
    double vae_encode_acts, vae_decode_acts, text_encoder_acts;
    double latent_cache, text_cache;
    double mapped_files;       /* the U-Net's weight files, mapped while it loads */
} SlMemParts;

/* Fills plan's rows (labels, in reading order) and predicted_peak from the parts;
 * plan->available and plan->advice are left as they were. */
void sl_mem_plan_from_parts(SlMemPlan *plan, const SlMemParts *m);
/* Sum of the rows that persist during training (every row not SL_MEMPLAN_TRANSIENT). */
double sl_mem_plan_persistent(const SlMemPlan *plan);
/* MemAvailable from /proc/meminfo in bytes; 0 when unknown. */
double sl_mem_available(void);
/* Parses a size: a number with an optional suffix K, M, G, T (powers of 1024; "B" and
 * "iB" accepted: 8G, 3500M, 2GiB, 123456); `opt` names the option in the error. */
SlStatus sl_mem_size_parse(const char *s, const char *opt, double *bytes, SlCtx *ctx);

/* Adds a row (ignored past SL_MEMPLAN_MAX_ROWS: the plan says so in its last row). */
void sl_mem_plan_add(SlMemPlan *p, const char *label, double bytes);

#endif
