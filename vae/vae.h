/* vae.h - Stable Diffusion's AutoencoderKL, forward only (the VAE is frozen).
 *
 * What it computes (diffusers' AutoencoderKL, vae.py / resnet.py / unet_2d_blocks.py):
 *   encode: conv_in; per down block `layers_per_block` ResnetBlock2D and, on all
 *     but the last, Downsample2D (pad right/bottom by 1, 3x3 stride-2 conv);
 *     mid block (resnet, single-head attention, resnet); GroupNorm + SiLU;
 *     conv_out to 2*latent channels; quant_conv (1x1). The moments split into
 *     mean and logvar; logvar is clamped to [-30, 20] (DiagonalGaussianDistribution).
 *   decode: post_quant_conv (1x1); conv_in; mid block; up blocks in reversed
 *     channel order, `layers_per_block + 1` resnets each and, on all but the
 *     last, nearest x2 upsampling + 3x3 conv; GroupNorm + SiLU; conv_out.
 * All GroupNorms use eps 1e-6. Latents are RAW: the pipeline applies
 * (z - shift_factor) * scaling_factor after encode and the inverse before
 * decode; encode/decode never do.
 *
 * Weights: loaded by diffusers name ("encoder.down_blocks.0.resnets.0.norm1.weight")
 * from an SlWeights. If the weights use the original LDM names (single-file
 * checkpoints, `first_stage_model.` prefix set on the view by the caller) or
 * diffusers' deprecated attention names, sl_vae_load detects it and installs
 * a key-map table built from the config (sl_vae_ldm_key_map). The attention
 * projections are Linear [C,C] in diffusers and 1x1 convs [C,C,1,1] in LDM
 * files; both are accepted (same numbers).
 *
 * Memory: one arena for the weights; activations come from an arena planned
 * for the call's (B,H,W) by a dry run of the same forward code, kept and reused
 * while the size stays the same (encode and decode keep one each). Large 3x3
 * convs run in bands of output rows so that the im2col workspace stays under
 * `work_budget` floats.
 *
 * Tiled decode/encode (optional): the input is split into overlapping tiles,
 * each tile is run through the whole network on its own, and the outputs are
 * blended with linear ramps across each overlap (weights sum to one). As in
 * diffusers' tiled_decode, GroupNorm statistics (and the mid-block attention)
 * are computed PER TILE, not over the whole image, so a tiled result is not
 * equal to the untiled one. The cost depends on the model and the tile size:
 * on tests/test_vae.c's random-weight 3-block model with 8x8-latent tiles
 * (overlap 4) the max difference is ~60% of max|output| and the mean ~4-5%
 * (the test prints it; a trained VAE on natural images with diffusers'
 * 64-latent tiles differs far less, but is not measured here). Tiling bounds
 * memory by the tile size rather than the image size.
 *
 * Not thread-safe: one SlVae runs one call at a time (it owns the activation
 * arenas). No backward (the VAE is frozen in LoRA training).
 *
 * Configs without quant convs, with shift_factor or 16 latent channels (SD3 /
 * Flux VAEs) are covered; block types other than DownEncoderBlock2D /
 * UpDecoderBlock2D are refused.
 *
 * Not here: scaling/shift of latents, image I/O, the tiny VAE (TAESD),
 * SpatialNorm decoders (MoVQ), attention down/up blocks.
 *
 * Dimension letters: B batch, C channels, H/W image height/width,
 * h/w latent height/width (H = h * 2^(n_blocks-1)), lc latent channels.
 */
#ifndef SL_VAE_H
#define SL_VAE_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/weights.h"
#include "nn/kernels.h"

#define SL_VAE_MAX_BLOCKS 8
#define SL_VAE_MAX_LAYERS 8   /* layers_per_block bound (decoder uses +1) */

typedef struct SlVaeConfig {
    int in_channels;                       /* image channels (3) */
    int out_channels;                      /* decoded channels (3) */
    int latent_channels;                   /* lc (4; 16 for SD3/Flux) */
    int n_blocks;                          /* len(block_out_channels) */
    int block_out[SL_VAE_MAX_BLOCKS];      /* block_out_channels */
    int layers_per_block;
    int norm_num_groups;
    int sample_size;                       /* image size the model was trained at */
    double scaling_factor;                 /* default 0.18215 */
    int has_shift;                         /* shift_factor present and not null */
    double shift_factor;                   /* 0 when absent */
    int use_quant_conv;                    /* default 1 */
    int use_post_quant_conv;               /* default 1 */
    int mid_block_add_attention;           /* default 1 */
} SlVaeConfig;

/* Reads a diffusers `vae/config.json`. Unsupported block types or act_fn are
 * SL_ERR_UNSUPPORTED naming the value; inconsistent sizes SL_ERR_FORMAT. */
SlStatus sl_vae_config_load(SlVaeConfig *cfg, const char *path, SlCtx *ctx);
SlStatus sl_vae_config_from(SlVaeConfig *cfg, const SlConfig *json, SlCtx *ctx);
/* Checks sizes (also for configs built by hand). */
SlStatus sl_vae_config_validate(const SlVaeConfig *cfg, SlCtx *ctx);
/* Spatial factor between image and latent: 2^(n_blocks-1). */
int sl_vae_downscale(const SlVaeConfig *cfg);

/* ---- parameters ---- */

/* ResnetBlock2D without time embedding; prefix "<...>.resnets.{j}." */
typedef struct SlVaeResnet {
    int Ci, Co;
    float *norm1_w, *norm1_b;   /* norm1.{weight,bias} [Ci] */
    float *conv1_w, *conv1_b;   /* conv1 [Co,Ci,3,3], [Co] */
    float *norm2_w, *norm2_b;   /* norm2 [Co] */
    float *conv2_w, *conv2_b;   /* conv2 [Co,Co,3,3], [Co] */
    float *short_w, *short_b;   /* conv_shortcut [Co,Ci,1,1], [Co]; NULL when Ci == Co */
} SlVaeResnet;

/* Single-head self-attention of the mid block; prefix "<...>.mid_block.attentions.0." */
typedef struct SlVaeAttn {
    int C;
    float *norm_w, *norm_b;     /* group_norm [C] */
    float *q_w, *q_b;           /* to_q [C,C] (LDM: q [C,C,1,1]), [C] */
    float *k_w, *k_b;           /* to_k */
    float *v_w, *v_b;           /* to_v */
    float *o_w, *o_b;           /* to_out.0 (LDM: proj_out) */
} SlVaeAttn;

typedef struct SlVaeMid {
    SlVaeResnet res[2];         /* mid_block.resnets.{0,1} (LDM mid.block_1, block_2) */
    SlVaeAttn attn;             /* valid when has_attn */
    int has_attn;
} SlVaeMid;

typedef struct SlVaeParams {
    /* encoder.* */
    float *enc_conv_in_w, *enc_conv_in_b;             /* encoder.conv_in [C0,in,3,3] */
    SlVaeResnet enc_res[SL_VAE_MAX_BLOCKS][SL_VAE_MAX_LAYERS]; /* encoder.down_blocks.{i}.resnets.{j} */
    float *enc_down_w[SL_VAE_MAX_BLOCKS];             /* encoder.down_blocks.{i}.downsamplers.0.conv.weight [Ci,Ci,3,3] */
    float *enc_down_b[SL_VAE_MAX_BLOCKS];             /* NULL on the last block */
    SlVaeMid enc_mid;                                 /* encoder.mid_block */
    float *enc_norm_out_w, *enc_norm_out_b;           /* encoder.conv_norm_out [Clast] */
    float *enc_conv_out_w, *enc_conv_out_b;           /* encoder.conv_out [2lc,Clast,3,3] */
    float *quant_w, *quant_b;                         /* quant_conv [2lc,2lc,1,1]; NULL if unused */
    /* decoder.* */
    float *post_quant_w, *post_quant_b;               /* post_quant_conv [lc,lc,1,1]; NULL if unused */
    float *dec_conv_in_w, *dec_conv_in_b;             /* decoder.conv_in [Clast,lc,3,3] */
    SlVaeMid dec_mid;                                 /* decoder.mid_block */
    SlVaeResnet dec_res[SL_VAE_MAX_BLOCKS][SL_VAE_MAX_LAYERS + 1]; /* decoder.up_blocks.{i}.resnets.{j} */
    float *dec_up_w[SL_VAE_MAX_BLOCKS];               /* decoder.up_blocks.{i}.upsamplers.0.conv.weight [C,C,3,3] */
    float *dec_up_b[SL_VAE_MAX_BLOCKS];               /* NULL on the last block */
    float *dec_norm_out_w, *dec_norm_out_b;           /* decoder.conv_norm_out [C0] */
    float *dec_conv_out_w, *dec_conv_out_b;           /* decoder.conv_out [out,C0,3,3] */
} SlVaeParams;

typedef struct SlVae SlVae;

/* Number of float parameters for cfg (the weight arena holds this many, aligned). */
int64_t sl_vae_param_count(const SlVaeConfig *cfg);

/* The (diffusers name, LDM name) table for cfg, unprefixed
 * ("encoder.mid_block.attentions.0.to_q.weight" -> "encoder.mid.attn_1.q.weight").
 * *pairs is malloc'd (free with sl_vae_key_map_free). */
SlStatus sl_vae_ldm_key_map(const SlVaeConfig *cfg, SlKeyPair **pairs, int *n, SlCtx *ctx);
void sl_vae_key_map_free(SlKeyPair *pairs, int n);

/* Allocates the weights and loads them from w. Names are probed when w has no
 * key map: diffusers names; original LDM names ("encoder.mid.block_1...",
 * single-file checkpoints: give a view with prefix SL_CKPT_VAE_PREFIX, or none
 * for a standalone LDM VAE file); or diffusers' deprecated attention names
 * (query/key/value/proj_attn). For the last two a key map is installed on w.
 * Every missing/mis-shaped tensor is an error naming it. */
SlStatus sl_vae_load(SlVae **out, const SlVaeConfig *cfg, SlWeights *w, SlCtx *ctx);
/* Allocates the weights without loading (filled with zeros): for tests and
 * benchmarks that set weights themselves through sl_vae_params. */
SlStatus sl_vae_create(SlVae **out, const SlVaeConfig *cfg, SlCtx *ctx);
void sl_vae_free(SlVae *vae);

const SlVaeConfig *sl_vae_config(const SlVae *vae);
SlVaeParams *sl_vae_params(SlVae *vae);
/* Fills the weights as PyTorch's default init would in distribution (conv /
 * linear weights and biases uniform in +-1/sqrt(fan_in), norms gamma 1 beta 0),
 * from Philox stream (seed, tensor index): for tests and benchmarks. */
void sl_vae_init_random(SlVae *vae, uint64_t seed);
/* Weight arena (every parameter, contiguous): for seeding random weights. */
float *sl_vae_weight_data(SlVae *vae, int64_t *n_floats);

/* Caps the conv im2col workspace (floats; default 1<<24 = 64 MiB). Convs that
 * need more run in bands of output rows. Takes effect at the next re-plan. */
void sl_vae_set_work_budget(SlVae *vae, size_t floats);
/* The kernels (nn/kernels.h) every product runs on from the next plan on (NULL: the
 * CPU's default, which a new VAE starts with). Takes effect at the next re-plan. */
void sl_vae_set_kernels(SlVae *vae, const SlKernels *k);
/* Frees the activation arenas (e.g. after encoding a dataset); the next call re-plans. */
void sl_vae_release_activations(SlVae *vae);
/* Bytes held by the activation arenas right now (for benchmarks). */
size_t sl_vae_activation_bytes(const SlVae *vae);

/* image [B,in,H,W] in [-1,1] -> mean, logvar [B,lc,h,w] with (h,w) from
 * sl_vae_latent_size (H / 2^(n-1) when H is a multiple of it). H, W >= 2^(n-1).
 * logvar clamped to [-30,20]. Either output may be NULL. A NaN/Inf in the output
 * (weights that overflow) is SL_ERR_NUMERIC naming the encoder, as in decode. */
SlStatus sl_vae_encode(SlVae *vae, const float *image, int64_t B, int64_t H, int64_t W,
                       float *mean, float *logvar, SlCtx *ctx);
/* latent [B,lc,h,w] (raw, unscaled) -> image [B,out,h*f,w*f], f = sl_vae_downscale.
 * A NaN/Inf in the image is SL_ERR_NUMERIC naming the decoder (or the latent, if it
 * held one already), never a wrong image. */
SlStatus sl_vae_decode(SlVae *vae, const float *latent, int64_t B, int64_t h, int64_t w,
                       float *image, SlCtx *ctx);
/* Latent size for an image size: each Downsample2D maps n -> floor((n + 1 - 3) / 2) + 1. */
void sl_vae_latent_size(const SlVaeConfig *cfg, int64_t H, int64_t W, int64_t *h, int64_t *w);

/* z = mean + exp(0.5 * logvar) * noise, n elements (noise from the caller). */
void sl_vae_sample(float *z, const float *mean, const float *logvar, const float *noise, int64_t n);

/* Tiled decode: tiles of `tile` x `tile` latent pixels overlapping by at least
 * `overlap` (0 <= overlap < tile), blended linearly (see the file comment).
 * Falls back to sl_vae_decode when the latent fits in one tile.
 * Uses one extra buffer of a tile's output. */
SlStatus sl_vae_decode_tiled(SlVae *vae, const float *latent, int64_t B, int64_t h, int64_t w,
                             int64_t tile, int64_t overlap, float *image, SlCtx *ctx);
/* Tiled encode: image tiles of `tile` x `tile` pixels overlapping by at least
 * `overlap` pixels; tile and overlap must be multiples of sl_vae_downscale and
 * H, W too. mean/logvar are blended in latent space (logvar after clamping). */
SlStatus sl_vae_encode_tiled(SlVae *vae, const float *image, int64_t B, int64_t H, int64_t W,
                             int64_t tile, int64_t overlap, float *mean, float *logvar, SlCtx *ctx);

/* Bytes of the activation arena a call would plan: encode (decode = 0) of an
 * image [B,in,H,W], or decode (decode = 1) of a latent [B,lc,H,W]; work_budget
 * as sl_vae_set_work_budget (0 = the default). For choosing tile sizes. */
size_t sl_vae_activation_plan_bytes(const SlVaeConfig *cfg, int decode, int64_t B, int64_t H, int64_t W,
                                    size_t work_budget);

/* Multiply-adds (x2 = FLOPs) of one encode / decode at this size: convs,
 * attention matmuls and projections (norms and pointwise ops not counted). */
double sl_vae_encode_flops(const SlVaeConfig *cfg, int64_t B, int64_t H, int64_t W);
double sl_vae_decode_flops(const SlVaeConfig *cfg, int64_t B, int64_t h, int64_t w);

#endif
