/* sample_jobs.h - the jobs of `stylora sample`: options, prompts files,
 * <lora:NAME:WEIGHT> tags, adapters per job, and the grid image.
 */
#ifndef SL_SAMPLE_JOBS_H
#define SL_SAMPLE_JOBS_H

#include <stdint.h>

#include "core/image.h"
#include "pipeline/model.h"
#include "pipeline/sampler.h"

#define SAMPLE_MAX_LORA 8
#define SAMPLE_TEXT_MAX 4096
/* the prompt as written, its tags and the --lora ones appended as tags */
#define SAMPLE_WRITTEN_MAX (SAMPLE_TEXT_MAX + SAMPLE_MAX_LORA * 300)
#define SAMPLE_MAX_HASHES 32
/* --cfg range: A1111's slider ends at 30; 100 leaves room, 1e30 is refused (it "worked", exit 0) */
#define SAMPLE_CFG_MIN 0.0
#define SAMPLE_CFG_MAX 100.0

typedef struct SampleArgs {
    const char *model, *config, *prompt, *negative, *prompts_file, *lora_dir, *out;
    const char *lora[SAMPLE_MAX_LORA];
    const char *merge, *sampler, *schedule, *steps, *cfg, *seed, *width, *height, *batch, *clip_skip, *eta;
    const char *preview, *grid, *quiet, *vae_tile, *lora_alpha, *threads;
    const char *base, *nf4_layers, *nf4_dq; /* [nf4] --base nf4 */
    const char *from_png;
    struct SamplePngArgs *png;       /* owned strings the --from-png settings point into */
} SampleArgs;

typedef struct SampleLora {
    char path[1024];
    char name[256];                  /* as the tag names it (the file stem for --lora) */
    float weight;
} SampleLora;

typedef struct SampleJob {
    char where[64];                  /* "--prompt" or "prompts.txt:12" for messages */
    char prompt[SAMPLE_TEXT_MAX];    /* without <lora:...> tags */
    char written[SAMPLE_WRITTEN_MAX]; /* with them, --lora adapters appended as tags (A1111's infotext) */
    char negative[SAMPLE_TEXT_MAX];
    uint64_t seed;
    int steps, width, height, batch;
    float cfg, eta;
    SlSamplerKind sampler;
    int karras;                      /* -1: the scheduler config decides */
    int n_lora;
    SampleLora lora[SAMPLE_MAX_LORA];
} SampleJob;

/* Adapter state across jobs (the base stays loaded). */
typedef struct SampleRun {
    const char *out_dir;
    int merge, clip_skip, preview, grid, quiet, vae_tile;
    float lora_alpha;                /* alpha for adapter files that store none (PEFT) */
    int image_index, n_images;
    void *adapters;                  /* styles/ state of the job being run */
    char model_hash[11];             /* A1111's "Model hash"; "" for a diffusers folder */
    const char *png_lora_hashes;     /* --from-png: the PNG's "Lora hashes" value, or NULL */
    const char *png_path;
    int n_hashes;                    /* adapter files hashed so far (A1111's "Lora hashes") */
    struct { char path[1024], hash[13]; } hashes[SAMPLE_MAX_HASHES];
} SampleRun;

/* Parses argv (exits with usage on a bad command line). */
void sample_args_parse(SampleArgs *a, int argc, char **argv);
/* --from-png FILE: fills every setting the command line left unset from the PNG's A1111
 * "parameters" text (prompt with its tags, negative prompt, Steps, Sampler, Schedule type,
 * CFG scale, Seed, Size, Clip skip, Eta DDIM). Other fields are logged once as ignored.
 * A missing chunk or a bad value is an error naming the file and field. */
SlStatus sample_args_from_png(SampleArgs *a, SlCtx *ctx);
/* The "Model hash" a PNG named ("" when none or not read from a PNG). */
const char *sample_args_png_model_hash(const SampleArgs *a);
/* Its "Lora hashes" value, or NULL. */
const char *sample_args_png_lora_hashes(const SampleArgs *a);
void sample_args_free(SampleArgs *a);
/* Builds the job list from --prompt or the prompts file. A bad line is an
 * error naming the file and line number. *jobs is malloc'd. */
SlStatus sample_jobs_build(const SampleArgs *a, SampleJob **jobs, int *n, SlCtx *ctx);
/* Splits "FILE[:WEIGHT]" (the value of option `opt`, for messages): when what follows
 * the last ':' reads as a number it is the weight, which must be finite and in
 * [CLI_LORA_WEIGHT_MIN, CLI_LORA_WEIGHT_MAX] ("FILE:nan" is an error, not a file
 * name); otherwise the whole argument is the path and the weight is 1. */
SlStatus sample_split_lora(const char *opt, const char *arg, char *path, size_t n, float *weight, SlCtx *ctx);
/* Removes <lora:NAME:WEIGHT> tags from prompt (in place) and appends them to j. */
SlStatus sample_parse_lora_tags(SampleJob *j, char *prompt, const char *lora_dir, SlCtx *ctx);

/* Parses the run's options (exits 2 on a bad one); jobs may be NULL to only check them. */
void sample_run_init(SampleRun *r, const SampleArgs *a, const SampleJob *jobs, int n_jobs);
void sample_run_free(SampleRun *r, SlModel *m);
/* Attaches (or merges, with --merge) the job's adapters to the model. */
SlStatus sample_adapters_apply(SampleRun *r, SlModel *m, const SampleJob *j, SlCtx *ctx);
/* Detaches / unmerges them, leaving the base weights bit-exact. */
SlStatus sample_adapters_remove(SampleRun *r, SlModel *m, SlCtx *ctx);

/* A1111's "Model hash" of the model at path: the first 10 hex digits of the whole file's
 * SHA-256 (modules/sd_models.py CheckpointInfo.calculate_shorthash). A diffusers folder
 * gets "": A1111 matches the hash against its checkpoint files, and no single file's
 * hash exists that a folder could honestly name. */
SlStatus sample_model_hash(const char *path, char out[11], SlCtx *ctx);
/* A1111's Lora hash of an adapter file (12 hex digits, cached in r by path): its
 * "sshs_model_hash" metadata when present, else kohya's addnet hash, the SHA-256 of
 * everything after the safetensors header (extensions-builtin/Lora/network.py
 * NetworkOnDisk, modules/hashes.py addnet_hash_safetensors). */
SlStatus sample_lora_hash(SampleRun *r, const char *path, char out[13], SlCtx *ctx);
/* --from-png: warns for each adapter of j whose name the PNG's "Lora hashes" lists with
 * another hash (the file by that name is not the one the image was made with). */
void sample_check_lora_hashes(const SampleRun *r, const SampleJob *j, const char (*lora_hash)[13], SlCtx *ctx);
/* A1111's "parameters" text of one image of job j (seed: that image's). */
void sample_format_parameters(char *buf, size_t n, const SampleRun *r, const char *model_name, const SampleJob *j,
                              uint64_t seed, const char (*lora_hash)[13]);

/* A near-square grid of same-sized images. */
SlStatus sample_grid(SlImage *out, const SlImage *imgs, int n, SlCtx *ctx);
/* The last path component without ".safetensors" (points into a static buffer). */
const char *sample_model_name(const char *path);

#endif
