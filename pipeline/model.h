/* model.h - a whole Stable-Diffusion-style model: tokenizer, CLIP text
 * encoder, VAE, U-Net and noise schedule, loaded from the layouts people have.
 *
 *   diffusers folder     model_index.json; text_encoder/ tokenizer/ unet/ vae/
 *                        scheduler/, each with its config.json and weights
 *                        (sharded indexes too).
 *   single-file          one .safetensors in the original layout
 *                        (model.diffusion_model.*, first_stage_model.*,
 *                        cond_stage_model.*). It carries no configs: they come
 *                        from a diffusers-layout folder given as config_dir
 *                        (configs + tokenizer, no weights needed), as diffusers'
 *                        from_single_file takes `config=`.
 *
 * A U-Net folder written by `stylora quantize` (pipeline/quant.h: "stylora.quant" metadata,
 * U8 packed tensors) loads as an NF4 base by itself; opts->unet_dense dequantizes it to
 * fp32 instead (with a warning: the values are the NF4-rounded ones).
 *
 * Parts can be skipped (SlModelOpts) so that a probe or a training run loads
 * only what it needs. The tokenizer is optional (tiny test models ship none):
 * encoding a prompt without one is an error that says so.
 *
 * Not here: adapters (styles/), the denoise loop (pipeline/sampler.h).
 */
#ifndef SL_PIPELINE_MODEL_H
#define SL_PIPELINE_MODEL_H

#include "core/status.h"
#include "core/weights.h"
#include "pipeline/schedule.h"
#include "textenc/clip.h"
#include "textenc/tokenizer.h"
#include "unet/unet.h"
#include "vae/vae.h"

typedef struct SlModelOpts {
    const char *config_dir;  /* configs + tokenizer for a single-file checkpoint */
    int skip_text;           /* do not load the text encoder (nor the tokenizer) */
    int skip_vae;
    int skip_unet;
    int unet_dense;          /* a pre-quantized (NF4) U-Net is dequantized to fp32 (--base fp32) */
    int unet_half;           /* the U-Net's linear and conv weights load as binary16 (--base fp16,
                                pipeline/half.h); not with a pre-quantized U-Net */
    int unet_half_if_f16;    /* the same, but only when every one of those weights is stored F16
                                (then exact: the default of a LoRA training run); else fp32 */
    int unet_bf16;           /* the U-Net's linear and conv weights load as bfloat16 and their products
                                run on the bf16 GEMM kernel (--base bf16, pipeline/half.h); not with
                                unet_half nor a pre-quantized U-Net */
    SlKernels kernels;       /* the kernels every part runs on (nn/kernels.h; zero: the CPU's default) */
} SlModelOpts;

typedef struct SlModel {
    char path[1024];
    SlModelLayout layout;
    SlTokenizer *tok;        /* NULL when the model has none */
    SlClipConfig clip_cfg;
    SlClip *clip;            /* NULL if skipped */
    SlVaeConfig vae_cfg;
    SlVae *vae;              /* NULL if skipped */
    SlUNetConfig unet_cfg;
    SlUNet unet;
    int has_unet;
    SlSchedConfig sched_cfg;
    SlSchedule sched;
    int has_sched;
    int warned_dropped;      /* a text over the token limit was reported (once per run) */
} SlModel;

/* Loads path (diffusers folder or single-file .safetensors). Missing parts,
 * malformed configs and missing/misshaped weights fail naming the file and
 * the tensor or key. Unused weights are logged at WARN. */
SlStatus sl_model_load(SlModel *m, const char *path, const SlModelOpts *opts, SlCtx *ctx);
void sl_model_free(SlModel *m);
/* The kernels of every loaded part (sl_model_load applies opts->kernels): the text
 * encoder at once, the VAE and U-Net from their next plan. NULL: the CPU's default. */
void sl_model_set_kernels(SlModel *m, const SlKernels *k);

/* Tokenizes and encodes B prompts into cond [B,T,D] with T = the tokenizer's
 * model_max_length (77). clip_skip follows A1111: 1 = the last layer (no skip),
 * 2 = the penultimate hidden state through the final LayerNorm (diffusers'
 * clip_skip=1), ... ids (may be NULL) receives the token ids [B,T]. The first
 * prompt (or caption) longer than T-2 tokens is reported at WARN, as A1111 does:
 * "N tokens over the limit of 75 were dropped: '...'"; later ones are cut silently. */
SlStatus sl_model_encode_prompts(SlModel *m, const char *const *prompts, int B, int clip_skip, float *cond,
                                 int32_t *ids, SlCtx *ctx);
/* Tokens per prompt (the tokenizer's model_max_length, or the text encoder's
 * max_position_embeddings when there is no tokenizer). */
int sl_model_text_len(const SlModel *m);

#endif
