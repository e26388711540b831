/* kernels_env.c - the kernel overrides of the environment, read here and nowhere else.
 *
 *   SL_GEMM=auto|blas|avx512|bf16   GEMM tile kernel (blas: OpenBLAS, also without AVX-512;
 *                                   bf16: every product's operands rounded to bfloat16, nn/gemm.h)
 *   SL_CONV=auto|implicit|im2col    convolution forward: gathered or explicit column matrix
 *   SL_ATTENTION=auto|rows|lanes    attention forward kernel
 *
 * Commands parse them into an SlKernels (nn/kernels.h) and pass it down in their
 * model or trainer options; the library itself never reads the environment.
 */
#include <stdlib.h>

#include "cli.h"

SlStatus cli_kernels_from_env(SlKernels *k, SlCtx *ctx) {
    static const struct { const char *var, *what; } v[] = {
        {"SL_GEMM", "gemm"}, {"SL_CONV", "conv"}, {"SL_ATTENTION", "attention"}};
    const SlKernels none = {0};
    *k = none;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *s = getenv(v[i].var);
        if (s && *s) SL_TRY(sl_kernels_parse(k, v[i].what, s, v[i].var, ctx));
    }
    return SL_OK;
}
