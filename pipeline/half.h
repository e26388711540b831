/* half.h - a frozen U-Net held in 16 bits: every linear and convolution weight stored as
 *   IEEE binary16 (`--base fp16`): widened to fp32 inside the GEMM's packing (nn/gemm.h
 *     sl_gemm_op), so the fp32 copy never exists and the products are bit-identical to the
 *     fp32 kernels on the widened weights;
 *   bfloat16 (`--base bf16`): the products run on the bf16 GEMM kernel (nn/gemm.h,
 *     SL_GEMM_KERNEL_BF16: activations and output gradients rounded to bfloat16 while packed,
 *     VDPBF16PS with fp32 sums where the CPU has AVX512_BF16). Not the fp32 result: both
 *     operands carry bfloat16's rounding (relative 2^-9), like PyTorch's frozen U-Net cast to
 *     bf16 (diffusers' `--mixed_precision bf16`). The adapter's own products (A, B), norms,
 *     softmax, the attention's QK^T and PV, the loss and AdamW stay fp32.
 *
 * Why. A LoRA run trains only the adapter: the base is read, never written. In fp32 the
 * SD-1.5 U-Net is 3.44 GB, most of a training step's peak memory; in binary16 it is half.
 * This is what the Python tools do for the frozen model: diffusers' LoRA training scripts
 * cast "all non-trainable weights (vae, non-lora text_encoder and non-lora unet)" to the
 * mixed-precision dtype (fp16/bf16) before training. Most published SD checkpoints are
 * fp16 already: loading those as binary16 is exact. From an fp32 file each weight is rounded
 * to the nearest binary16 (relative error <= 2^-11); to bfloat16 from fp32 or F16 (relative
 * error <= 2^-9; a BF16 file loads exactly); SlHalfStats counts how many values changed.
 * Biases and norm weights stay fp32 (they are small and added, not multiplied).
 * `stylora train` and `sample` use it by default when every such weight is stored F16 (exact:
 * SlModelOpts.unet_half_if_f16, sl_unet_weights_all_f16).
 *
 * Memory. The U-Net's weight arena (u->weights) is rebuilt as for NF4 (pipeline/quant.h):
 * selected weights as uint16_t, the rest fp32; a half weight has *p->w = p->init_w = NULL
 * and its module's w16 set. A bfloat16 weight also sets its module's w16_bf16.
 * Such a U-Net is frozen: no full fine-tuning, no DoRA (which
 * needs ||W|| rows in fp32), and merging widens the touched modules first
 * (sl_unet_half_to_dense). It cannot be combined with NF4 layers, nor hold both formats.
 * The text encoder and the VAE stay fp32 with either.
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

/* The 16-bit format of a frozen base. */
typedef enum SlHalfFmt { SL_HALF_FP16 = 1, SL_HALF_BF16 = 2 } SlHalfFmt;

typedef struct SlHalfStats {
    SlHalfFmt fmt;           /* the format they are held in */
    int n_layers;            /* weights held in 16 bits (linears + convs) */
    int64_t n_half;          /* their elements */
    int64_t n_rounded;       /* of those, values that were not exact in fmt (0 from a file storing fmt) */
    size_t fp32_bytes;       /* those weights in fp32 */
    size_t half_bytes;       /* in 16 bits */
    size_t arena_before;     /* u->weights.size before (0 when loaded directly) */
    size_t arena_after;
} SlHalfStats;

/* Converts every linear and conv weight of a loaded fp32 U-Net to binary16, in place
 * (peak: both arenas). Before any adapter is applied (a module with a hook is refused). A
 * weight whose values overflow binary16 (|w| > 65504) fails naming it. */
SlStatus sl_unet_to_half(SlUNet *u, SlHalfStats *stats, SlCtx *ctx);
/* The same to bfloat16 (a value that rounds to Inf fails naming its weight). A U-Net whose
 * weights are binary16 already is refused (and the other way round). */
SlStatus sl_unet_to_bf16(SlUNet *u, SlHalfStats *stats, SlCtx *ctx);
/* Loads a U-Net made with sl_unet_init_shapes from w straight into the half layout:
 * F16 tensors are copied as they are, others converted in chunks (the fp32 copy of a
 * weight never exists). Same checks as sl_unet_load (names, shapes, NaN/Inf). */
/* The weight arena sl_unet_load_half (or _bf16: the same bytes) makes, without making it
 * (memory plans): *total bytes, of which *half are the 16-bit linear and conv weights
 * (unaligned sum). */
SlStatus sl_unet_half_bytes(SlUNet *u, size_t *total, size_t *half, SlCtx *ctx);
SlStatus sl_unet_load_half(SlUNet *u, SlWeights *w, SlHalfStats *stats, SlCtx *ctx);
/* The same into bfloat16: BF16 tensors copied, others (F32, F16, ...) rounded in chunks. */
SlStatus sl_unet_load_bf16(SlUNet *u, SlWeights *w, SlHalfStats *stats, SlCtx *ctx);
/* Widens the 16-bit weights of the n modules `names` (diffusers names without "unet.";
 * NULL = all) back to fp32 (their exact values), e.g. before merging an adapter. */
SlStatus sl_unet_half_to_dense(SlUNet *u, const char *const *names, int n, SlCtx *ctx);
/* 1 when every linear and conv weight of u (made with sl_unet_init_shapes) is stored F16
 * in w, so that sl_unet_load_half is exact. */
int sl_unet_weights_all_f16(SlUNet *u, SlWeights *w);
/* Number of weights held in 16 bits (binary16 or bfloat16). */
int sl_unet_count_half(const SlUNet *u);
/* Of those, the ones in bfloat16. */
int sl_unet_count_bf16(const SlUNet *u);
/* One INFO line with the figures. */
void sl_half_log_stats(SlCtx *ctx, const SlHalfStats *s);

#endif
