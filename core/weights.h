/* weights.h - named weights from safetensors files, and model folder layouts.
 *
 * An SlWeights is a set of opened safetensors files (one file, a diffusers
 * component folder, or a sharded `*.safetensors.index.json`) seen through an
 * optional key map. Models always ask for tensors by their DIFFUSERS /
 * transformers name ("down_blocks.0.resnets.0.conv1.weight"); for a
 * single-file SD checkpoint the map translates that name to the original one
 * ("model.diffusion_model.input_blocks.1.0.in_layers.2.weight"). Maps are data
 * (tables of name pairs) that each model builds from its config.
 *
 * Every lookup marks the tensor used, so a loader can report the tensors it
 * never read (sl_weights_report_unused), as stable-diffusion.cpp does.
 *
 * Not here: what the tensors mean (vae/, unet/, textenc/ decide).
 */
#ifndef SL_WEIGHTS_H
#define SL_WEIGHTS_H

#include "safetensors.h"
#include "status.h"

typedef struct SlKeyPair {
    char *from;  /* diffusers name */
    char *to;    /* name in the file */
} SlKeyPair;

typedef struct SlWeights {
    int n_files;
    SlStFile *files;
    char label[1024];       /* folder or file, for messages */
    char prefix[256];       /* prepended to every (mapped) name, e.g. "text_model." or "" */
    int shared_files;       /* 1: files are borrowed from another SlWeights (not closed) */
    /* optional key map, sorted by `from` */
    int n_map;
    SlKeyPair *map;
    /* used[i][j]: tensor j of file i was read */
    unsigned char **used;
} SlWeights;

/* Opens every weight file of a diffusers component folder: `*.safetensors`
 * (if several exist, prefers names without ".fp16"/"ema" variants unless only
 * those exist), or a sharded `<name>.safetensors.index.json`. A folder with only
 * `.bin`/`.ckpt`/`.pt` files is refused with a message saying how to convert. */
SlStatus sl_weights_open_dir(SlWeights *w, const char *dir, SlCtx *ctx);
/* Opens a single .safetensors file. */
SlStatus sl_weights_open_file(SlWeights *w, const char *path, SlCtx *ctx);
/* A view of the files of `src` with another prefix/map (for the parts of a
 * single-file checkpoint). Close it with sl_weights_close; src must outlive it. */
void sl_weights_view(SlWeights *w, const SlWeights *src, const char *prefix);
void sl_weights_close(SlWeights *w);

/* Installs a key map (copied). Names not in the map are used as they are. */
SlStatus sl_weights_set_map(SlWeights *w, const SlKeyPair *pairs, int n, SlCtx *ctx);

/* Finds name (mapped, prefixed); NULL if absent. Marks it used. */
const SlStEntry *sl_weights_find(SlWeights *w, const char *name, const SlStFile **file);
/* Loads name as F32 into dst after checking its shape equals (ndim, shape).
 * A missing tensor is SL_ERR_MISSING, a wrong shape SL_ERR_SHAPE; both name the
 * tensor (both spellings when mapped), the file and the shapes. */
SlStatus sl_weights_load(SlWeights *w, const char *name, int ndim, const int64_t *shape, float *dst,
                         SlCtx *ctx);
/* The same, but a missing tensor leaves dst untouched and sets *found = 0. */
SlStatus sl_weights_load_opt(SlWeights *w, const char *name, int ndim, const int64_t *shape,
                             float *dst, int *found, SlCtx *ctx);
/* The entry of name after the same checks and errors as sl_weights_load, for readers that
 * convert it themselves (pipeline/half.c); NULL on failure (ctx says why). */
const SlStEntry *sl_weights_find_shaped(SlWeights *w, const char *name, int ndim, const int64_t *shape,
                                        const SlStFile **file, SlCtx *ctx);

/* Every model loader's check of the weights it read (U-Net, text encoder, VAE
 * encoder and decoder): SL_ERR_NUMERIC if x[0..n) holds a NaN or Inf, naming the
 * component, the tensor (and its key in the file when mapped), the file, the count
 * and the first bad element (offset + i, for a tensor checked in chunks). */
SlStatus sl_weights_check_finite(SlWeights *w, const char *component, const char *name, const float *x, size_t n,
                                 size_t offset, SlCtx *ctx);

/* Counts tensors under this view's prefix that were never read; logs up to
 * `max_list` of their names at WARN level. Returns the count. */
int sl_weights_report_unused(const SlWeights *w, int max_list, SlCtx *ctx);

/* ---- model layouts ---- */

typedef enum SlModelLayout {
    SL_LAYOUT_UNKNOWN = 0,
    SL_LAYOUT_DIFFUSERS,      /* folder with model_index.json or unet/ vae/ text_encoder/ */
    SL_LAYOUT_SINGLE_FILE,    /* one .safetensors with model.diffusion_model.* ... */
    SL_LAYOUT_COMPONENT,      /* one diffusers component folder (config.json + weights) */
} SlModelLayout;

/* Recognizes what `path` is. For a file it peeks at tensor names. */
SlModelLayout sl_model_layout(const char *path);
const char *sl_model_layout_name(SlModelLayout l);

/* Prefixes of the single-file (original Stable Diffusion) layout. */
#define SL_CKPT_UNET_PREFIX "model.diffusion_model."
#define SL_CKPT_VAE_PREFIX "first_stage_model."
#define SL_CKPT_TE1_PREFIX "cond_stage_model.transformer."   /* SD 1.x (HF CLIP inside) */
#define SL_CKPT_TE2_PREFIX "cond_stage_model.model."         /* SD 2.x (OpenCLIP) */

/* Joins path parts into buf ("a" + "b" -> "a/b"); returns buf. */
const char *sl_path_join(char *buf, size_t n, const char *a, const char *b);
int sl_path_is_dir(const char *path);
int sl_path_is_file(const char *path);

#endif
