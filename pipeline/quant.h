/* quant.h - an NF4 frozen U-Net (QLoRA's base): which layers, memory, files.
 *
 * Layers. `which` is a comma-separated list over the U-Net's linear modules (diffusers
 * names without "unet."): presets attn (to_q,to_k,to_v,to_out.0), ff (ff.net.0.proj,
 * ff.net.2), proj (proj_in,proj_out, also the 1x1-conv form), time (time_embedding.*,
 * *.time_emb_proj), all (every linear); other tokens are adapter-style patterns
 * (styles/adapter.h sl_adapter_pattern_match). NULL/"" = "attn,ff,proj" (the transformer
 * linears, ~80% of SD-1.5's linear weights). Convolutions are NOT supported: a pattern
 * that matches only convolutions is SL_ERR_UNSUPPORTED.
 *
 * Memory. The U-Net's weight arena (u->weights) is rebuilt: it holds the fp32 weights of
 * the layers that stay dense, and for each quantized linear an SlNf4Linear (nn/nf4.h) with
 * its codes and scales, plus one shared dequantization tile (`work`); the quantized
 * params get p->init_w = *p->w = NULL. sl_unet_free releases everything as before.
 *   sl_unet_quantize_nf4: from an fp32 U-Net already in memory (peak = fp32 + NF4, then
 *     the fp32 arena is freed: resident memory drops to the NF4 size).
 *   sl_unet_load_nf4: from files, streaming: a U-Net built with sl_unet_init_shapes gets
 *     the compact arena directly; each quantized weight is read from the mapped file in
 *     chunks of 256K elements and quantized, so its fp32 copy never exists in memory.
 *     Pre-quantized tensors (layout below) are taken as they are.
 * A U-Net with NF4 layers has no fp32 copy of them: sl_unet_init_random,
 * sl_unet_enable_grads (full fine-tuning), sl_unet_load, DoRA (needs ||W||) and
 * sl_adapter_merge do not apply to it; sl_unet_dequantize_nf4(_modules) turns (some of) it
 * back into dense fp32 (the dequantized values) when merging is wanted, and
 * sl_unet_nf4_convert re-quantizes a merged U-Net (`stylora lora merge` on an NF4 model;
 * the second rounding costs the adapter part of its delta: sl_nf4_merge_error measures it).
 *
 * Loading. sl_model_load (pipeline/model.h) recognises a pre-quantized U-Net folder
 * (sl_weights_nf4_probe) and loads it as NF4 without --base nf4.
 *
 * File layout (stylora quantize; safetensors, diffusers names), per quantized weight
 * "<name>.weight" [O,I] (or [O,I,1,1]):
 *   <name>.weight.nf4      U8  [(O*I+1)/2]   codes, bitsandbytes order (first element in
 *                                            the high nibble), blocks of 64 of the flattened W
 *   <name>.weight.absmax   F32 [nb]          nb = ceil(O*I/64)       (no double quant)
 *                          U8  [nb]          dynamic-map codes       (double quant)
 *   <name>.weight.absmax2  F32 [ceil(nb/256)] second-level scales    (double quant)
 *   <name>.weight.offset   F32 [1]           mean of the absmax      (double quant)
 * metadata: "stylora.quant" = "nf4", "stylora.nf4.blocksize" = "64",
 * "stylora.nf4.double_quant" = "true"/"false", "stylora.nf4.layers" = which,
 * "stylora.nf4.shape.<name>.weight" = "[O,I]" / "[O,I,1,1]" (the original shape).
 * Other weights are stored as ordinary tensors (F32 or F16).
 *
 * Not here: the kernels (nn/nf4.h), the adapters (styles/).
 */
#ifndef SL_PIPELINE_QUANT_H
#define SL_PIPELINE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/weights.h"
#include "pipeline/model.h"
#include "styles/adapter.h"
#include "unet/unet.h"

#define SL_NF4_DEFAULT_LAYERS "attn,ff,proj"

typedef struct SlNf4Stats {
    int n_layers;             /* linears quantized */
    int64_t n_quant;          /* their weight elements */
    size_t fp32_bytes;        /* those weights in fp32 (what NF4 replaces) */
    size_t nf4_bytes;         /* their codes + scales (bitsandbytes' packed size) */
    size_t arena_before;      /* u->weights.size before (0 when loaded directly) */
    size_t arena_after;       /* u->weights.size after (includes the shared tile) */
    size_t work_bytes;        /* the shared dequantization tile */
    int double_quant;
} SlNf4Stats;

/* 1 if module `name` (diffusers name) is selected by `which` (see above). */
int sl_nf4_select(const char *which, const char *name);

/* Quantizes the selected linears of a loaded fp32 U-Net in place (before any adapter is
 * applied: a module that already carries a hook is SL_ERR_UNSUPPORTED). */
SlStatus sl_unet_quantize_nf4(SlUNet *u, const char *which, int double_quant, SlNf4Stats *stats,
                              SlCtx *ctx);
/* Loads a U-Net made with sl_unet_init_shapes from w, quantizing the selected linears
 * while streaming (or taking pre-quantized tensors, whose own format wins; `which` is
 * then ignored for them). */
/* The weight arena sl_unet_load_nf4 makes for `which` (NULL: SL_NF4_DEFAULT_LAYERS), without
 * making it (memory plans): *total bytes, of which *nf4 the packed codes + block scales of the
 * selected linears and *tile the shared dequantization tile; the rest is fp32. */
SlStatus sl_unet_nf4_bytes(SlUNet *u, const char *which, int dq, size_t *total, size_t *nf4, size_t *tile,
                           SlCtx *ctx);
SlStatus sl_unet_load_nf4(SlUNet *u, SlWeights *w, const char *which, int double_quant, SlNf4Stats *stats,
                          SlCtx *ctx);
/* Loads a U-Net made with sl_unet_init_shapes from a pre-quantized file: the tensors stored
 * as NF4 become NF4 linears (their stored format), every other weight loads dense. */
SlStatus sl_unet_load_prequant(SlUNet *u, SlWeights *w, SlNf4Stats *stats, SlCtx *ctx);
/* *nf4 = 1 when w holds a pre-quantized U-Net: "stylora.quant" = "nf4" metadata, or U8
 * "<name>.nf4" tensors. *layers (may be NULL) gets the stored "stylora.nf4.layers" or NULL.
 * Another stylora.quant value or a block size other than 64 is SL_ERR_UNSUPPORTED. */
SlStatus sl_weights_nf4_probe(const SlWeights *w, int *nf4, const char **layers, SlCtx *ctx);
/* Replaces every NF4 linear by a dense fp32 weight holding the dequantized values (for
 * merging). Modules carrying an adapter hook on top are SL_ERR_UNSUPPORTED. */
SlStatus sl_unet_dequantize_nf4(SlUNet *u, SlCtx *ctx);
/* The same for the NF4 linears among the n modules `names` (diffusers names without "unet.";
 * names not NF4 or not in the U-Net are ignored); NULL names = all. */
SlStatus sl_unet_dequantize_nf4_modules(SlUNet *u, const char *const *names, int n, SlCtx *ctx);
/* Format of each weight, in u->params order: -1 dense, 0 NF4, 1 NF4 with double quant. */
void sl_unet_nf4_formats(SlUNet *u, int *fmt);
/* Rebuilds the weight arena so that weight i has format fmt[i] (as above): dense weights
 * are quantized, NF4 ones kept, converted or dequantized. Only linear weights can be NF4;
 * a module with an adapter hook on top of NF4 is SL_ERR_UNSUPPORTED. stats may be NULL. */
SlStatus sl_unet_nf4_convert(SlUNet *u, const int *fmt, SlNf4Stats *stats, SlCtx *ctx);
/* What re-quantizing merged weights costs (aggregated over the weights, Frobenius norms):
 * W0 the weight before merging (the dequantized NF4 base), W' = W0 + D after the merge,
 * Q(W') its re-quantized (dequantized) values. */
typedef struct SlNf4MergeError {
    int n_layers;        /* merged weights that fmt makes NF4 */
    double weight_rel;   /* ||Q(W') - W'|| / ||W'|| */
    double delta_rel;    /* ||(Q(W') - W0) - D|| / ||D||: the part of the adapter's delta lost */
    double delta_cos;    /* cosine of (Q(W') - W0) with D */
} SlNf4MergeError;
/* Measures the above for the weights ms touched whose format fmt[i] (sl_unet_nf4_formats
 * order) is NF4, with the same rounding sl_unet_nf4_convert will apply. Call after
 * sl_adapter_merge, before sl_adapter_merge_commit. */
SlStatus sl_nf4_merge_error(SlUNet *u, const int *fmt, const SlMergeState *ms, SlNf4MergeError *e, SlCtx *ctx);
/* Number of NF4 linears (the hook directly on the module). */
int sl_unet_count_nf4(const SlUNet *u);
/* Adds every U-Net weight to a writer in the layout above: NF4 layers as their packed
 * tensors, the others as `dense` (F32/F16/BF16). Pointers reference u (keep it alive). */
SlStatus sl_unet_nf4_write(SlUNet *u, SlStWriter *wr, SlDType dense, const char *which, SlCtx *ctx);

/* Model level (the tools' --base nf4). sl_model_quantize_nf4 quantizes a loaded model's
 * U-Net (logs the figures); sl_model_load_nf4 loads the model with its U-Net streamed
 * into NF4 (diffusers folders and single-file checkpoints; pre-quantized folders from
 * `stylora quantize` need this loader). which NULL = SL_NF4_DEFAULT_LAYERS. */
SlStatus sl_model_quantize_nf4(SlModel *m, const char *which, int double_quant, SlCtx *ctx);
SlStatus sl_model_load_nf4(SlModel *m, const char *path, const SlModelOpts *opts, const char *which,
                           int double_quant, SlCtx *ctx);

#endif
