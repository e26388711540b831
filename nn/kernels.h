/* kernels.h - which compute kernels a model runs: an explicit configuration, no globals.
 *
 * A plan (U-Net, VAE, text encoder; the trainer and sampler through their model
 * options) carries one SlKernels and hands it to every GEMM, convolution and
 * attention call it makes (nn/module.h's modules hold a copy, stamped at plan
 * time). Two plans with different configurations can run in the same process,
 * on different threads at once, each getting its own kernels' bits.
 *
 * Every field's 0 is AUTO: the fastest kernel this CPU runs (AVX-512 where it
 * has it), so a zero-initialised SlKernels is the default. A kernel that needs
 * AVX-512 on a CPU without it falls back to the portable one (check with
 * sl_kernels_available first when that should be an error). Bits differ between
 * kernels, never between thread counts.
 *
 * The bf16 GEMM kernel is never AUTO: it rounds both operands of every product to
 * bfloat16 (a different result, not only different bits), so a plan opts in, for every
 * product (gemm = BF16) or for those of frozen bfloat16 weights only (nn.h's _bf16 entry
 * points run on sl_kernels_bf16(kern) whatever kern->gemm says: `--base bf16`). It runs
 * on every CPU: VDPBF16PS where the CPU has AVX512_BF16 (sl_kernels_available), else
 * the same rounded operands through the fp32 AVX-512 kernel (the same bits but for
 * denormals, see nn/gemm.h) or, without AVX-512, through OpenBLAS.
 *
 * Environment variables (SL_GEMM, SL_CONV, SL_ATTENTION) are read only by tools/
 * and bench/, which pass the parsed values here (sl_kernels_parse).
 */
#ifndef SL_NN_KERNELS_H
#define SL_NN_KERNELS_H

#include "core/status.h"

/* gemm: the tile kernel of nn/gemm.h */
enum { SL_GEMM_KERNEL_AUTO = 0, SL_GEMM_KERNEL_BLAS = 1, SL_GEMM_KERNEL_AVX512 = 2, SL_GEMM_KERNEL_BF16 = 3 };
/* conv: the forward's column matrix (nn/conv2d.c): gathered while packing when the GEMM
 * runs the AVX-512 kernel (AUTO), or always an explicit im2col buffer (same bits) */
enum { SL_CONV_KERNEL_AUTO = 0, SL_CONV_KERNEL_IM2COL = 1 };
/* attention: the forward kernel (nn/nn.h): lanes (AVX-512) or rows (AVX2 / scalar) */
enum { SL_ATT_KERNEL_AUTO = 0, SL_ATT_KERNEL_ROWS = 1, SL_ATT_KERNEL_LANES = 2 };

typedef struct SlKernels {
    int gemm;      /* SL_GEMM_KERNEL_* */
    int conv;      /* SL_CONV_KERNEL_* */
    int attention; /* SL_ATT_KERNEL_* */
} SlKernels;

/* The default for this CPU: AVX-512 GEMM and lanes attention when the CPU has AVX-512F,
 * else OpenBLAS and rows; conv AUTO (implicit wherever the GEMM runs AVX-512). */
SlKernels sl_kernels_default(void);

/* The kernel each call really runs under k (NULL or AUTO fields: the default;
 * an AVX-512 kernel on a CPU without it: the portable one; bf16 stays bf16 on any CPU). */
int sl_kernels_gemm(const SlKernels *k);         /* SL_GEMM_KERNEL_BLAS, _AVX512 or _BF16 */
int sl_kernels_attention(const SlKernels *k);    /* SL_ATT_KERNEL_ROWS or _LANES */
int sl_kernels_conv_implicit(const SlKernels *k); /* 1: gathered im2col (needs the AVX-512 or bf16 GEMM on AVX-512F) */

/* 1 when every kernel k asks for explicitly runs on this CPU, else 0 (bf16: 1 only
 * where VDPBF16PS runs; elsewhere its fallbacks give the bf16 results, slower). */
int sl_kernels_available(const SlKernels *k);

/* Sets k's field `what` ("gemm", "conv" or "attention") from its name
 * (gemm: auto|blas|avx512|bf16; conv: auto|implicit|im2col; attention: auto|rows|lanes).
 * An unknown name, or an AVX-512 kernel on a CPU without AVX-512, fails with
 * SL_ERR_ARG naming `source` (e.g. the environment variable) and the valid names.
 * bf16 is accepted on every CPU (it has fallbacks; sl_kernels_available tells). */
SlStatus sl_kernels_parse(SlKernels *k, const char *what, const char *name, const char *source, SlCtx *ctx);

/* k (NULL: the default) with its GEMM on the bf16 kernel, the other fields kept: what the
 * products of a frozen bfloat16 weight run on (nn/nn.h's _bf16 entry points). */
SlKernels sl_kernels_bf16(const SlKernels *k);

/* "blas", "avx512", "bf16", "implicit", "im2col", "rows", "lanes" or "auto": a field's name, for logs. */
const char *sl_kernels_name(const char *what, int value);

#endif
