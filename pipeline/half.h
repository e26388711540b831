/* half.h - a frozen U-Net held in IEEE binary16 (`--base fp16`): every linear and
 * convolution weight stored as halves, widened to fp32 inside the GEMM's packing
 * (nn/gemm.h sl_gemm_op), so the fp32 copy never exists and the products are
 * bit-identical to the fp32 kernels on the widened weights.
 *
 * Why. A LoRA run trains only the adapter: the base is read, never written. In fp32 the
 * SD-1.5 U-Net is 3.44 GB, most of a training step's peak memory; in binary16 it is half.
 * This is what the Python tools do for the frozen model: diffusers' LoRA training scripts
 * cast "all non-trainable weights (vae, non-lora text_encoder and non-lora unet)" to the
 * mixed-precision dtype (fp16/bf16) before training. Most published SD checkpoints are
 * fp16 already: loading those is exact. From an fp32 file each weight is rounded to the
 * nearest binary16 (relative error <= 2^-11); sl_half_stats counts how many values changed.
 * Biases and norm weights stay fp32 (they are small and added, not multiplied).
 * `stylora train` and `sample` use it by default when every such weight is stored F16 (exact:
 * SlModelOpts.unet_half_if_f16, sl_unet_weights_all_f16).
 *
 * Memory. The U-Net's weight arena (u->weights) is rebuilt as for NF4 (pipeline/quant.h):
 * selected weights as uint16_t, the rest fp32; a half weight has *p->w = p->init_w = NULL
 * and its module's w16 set. Such a U-Net is frozen: no full fine-tuning, no DoRA (which
 * needs ||W|| rows in fp32), and merging widens the touched modules first
 * (sl_unet_half_to_dense). It cannot be combined with NF4 layers.
 *
 * Not here: the kernels (nn/linear.c, nn/conv2d.c, nn/gemm.c), adapters (styles/).
 */
#ifndef SL_PIPELINE_HALF_H
#define SL_PIPELINE_HALF_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/weights.h"
#include "pipeline/model.h"
#include "unet/unet.h"

typedef struct SlHalfStats {
    int n_layers;            /* weights held in binary16 (linears + convs) */
    int64_t n_half;          /* their elements */
    int64_t n_rounded;       /* of those, values that were not already binary16 (0 from an fp16 file) */
    size_t fp32_bytes;       /* those weights in fp32 */
    size_t half_bytes;       /* in binary16 */
    size_t arena_before;     /* u->weights.size before (0 when loaded directly) */
    size_t arena_after;
} SlHalfStats;

/* Converts every linear and conv weight of a loaded fp32 U-Net to binary16, in place
 * (peak: both arenas). Before any adapter is applied (a module with a hook is refused). A
 * weight whose values overflow binary16 (|w| > 65504) fails naming it. */
SlStatus sl_unet_to_half(SlUNet *u, SlHalfStats *stats, SlCtx *ctx);
/* Loads a U-Net made with sl_unet_init_shapes from w straight into the half layout:
 * F16 tensors are copied as they are, others converted in chunks (the fp32 copy of a
 * weight never exists). Same checks as sl_unet_load (names, shapes, NaN/Inf). */
/* The weight arena sl_unet_load_half makes, without making it (memory plans): *total
 * bytes, of which *half are the binary16 linear and conv weights (unaligned sum). */
SlStatus sl_unet_half_bytes(SlUNet *u, size_t *total, size_t *half, SlCtx *ctx);
SlStatus sl_unet_load_half(SlUNet *u, SlWeights *w, SlHalfStats *stats, SlCtx *ctx);
/* Widens the half weights of the n modules `names` (diffusers names without "unet.";
 * NULL = all) back to fp32 (the binary16 values), e.g. before merging an adapter. */
SlStatus sl_unet_half_to_dense(SlUNet *u, const char *const *names, int n, SlCtx *ctx);
/* 1 when every linear and conv weight of u (made with sl_unet_init_shapes) is stored F16
 * in w, so that sl_unet_load_half is exact. */
int sl_unet_weights_all_f16(SlUNet *u, SlWeights *w);
/* Number of weights held in binary16. */
int sl_unet_count_half(const SlUNet *u);
/* One INFO line with the figures. */
void sl_half_log_stats(SlCtx *ctx, const SlHalfStats *s);

#endif
