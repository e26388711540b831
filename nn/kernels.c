/* kernels.c - the kernel configuration of kernels.h: CPU detection and names.
 * Nothing here is stored: every answer is a function of the argument and the CPU.
 */
#include "nn/kernels.h"

#include <string.h>

static int have_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

static int have_avx512bf16(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

/* Never the bf16 kernel: AUTO keeps fp32 products. */
SlKernels sl_kernels_default(void) {
    const int avx = have_avx512();
    SlKernels k = {avx ? SL_GEMM_KERNEL_AVX512 : SL_GEMM_KERNEL_BLAS, SL_CONV_KERNEL_AUTO,
                   avx ? SL_ATT_KERNEL_LANES : SL_ATT_KERNEL_ROWS};
    return k;
}

int sl_kernels_gemm(const SlKernels *k) {
    if (k && k->gemm == SL_GEMM_KERNEL_BLAS) return SL_GEMM_KERNEL_BLAS;
    if (k && k->gemm == SL_GEMM_KERNEL_BF16) return SL_GEMM_KERNEL_BF16;
    return have_avx512() ? SL_GEMM_KERNEL_AVX512 : SL_GEMM_KERNEL_BLAS;
}

int sl_kernels_attention(const SlKernels *k) {
    if (k && k->attention == SL_ATT_KERNEL_ROWS) return SL_ATT_KERNEL_ROWS;
    return have_avx512() ? SL_ATT_KERNEL_LANES : SL_ATT_KERNEL_ROWS;
}

int sl_kernels_conv_implicit(const SlKernels *k) {
    const int g = sl_kernels_gemm(k);
    return !(k && k->conv == SL_CONV_KERNEL_IM2COL) &&
           (g == SL_GEMM_KERNEL_AVX512 || (g == SL_GEMM_KERNEL_BF16 && have_avx512()));
}

SlKernels sl_kernels_bf16(const SlKernels *k) {
    SlKernels b = {0, 0, 0};
    if (k) b = *k;
    b.gemm = SL_GEMM_KERNEL_BF16;
    return b;
}

int sl_kernels_available(const SlKernels *k) {
    if (!k) return 1;
    if (k->gemm == SL_GEMM_KERNEL_BF16 && !have_avx512bf16()) return 0;
    if (have_avx512()) return 1;
    return k->gemm != SL_GEMM_KERNEL_AVX512 && k->attention != SL_ATT_KERNEL_LANES;
}

typedef struct KernelName {
    const char *what, *name;
    int value, avx512;
} KernelName;

static const KernelName k_names[] = {
    {"gemm", "auto", SL_GEMM_KERNEL_AUTO, 0},     {"gemm", "blas", SL_GEMM_KERNEL_BLAS, 0},
    {"gemm", "avx512", SL_GEMM_KERNEL_AVX512, 1}, {"gemm", "bf16", SL_GEMM_KERNEL_BF16, 0},
    {"conv", "auto", SL_CONV_KERNEL_AUTO, 0},
    {"conv", "implicit", SL_CONV_KERNEL_AUTO, 0}, {"conv", "im2col", SL_CONV_KERNEL_IM2COL, 0},
    {"attention", "auto", SL_ATT_KERNEL_AUTO, 0}, {"attention", "rows", SL_ATT_KERNEL_ROWS, 0},
    {"attention", "lanes", SL_ATT_KERNEL_LANES, 1},
};
#define N_NAMES (sizeof k_names / sizeof k_names[0])

static int *field(SlKernels *k, const char *what) {
    if (!strcmp(what, "gemm")) return &k->gemm;
    if (!strcmp(what, "conv")) return &k->conv;
    if (!strcmp(what, "attention")) return &k->attention;
    return NULL;
}

SlStatus sl_kernels_parse(SlKernels *k, const char *what, const char *name, const char *source, SlCtx *ctx) {
    int *f = field(k, what);
    if (!f) return sl_fail(ctx, SL_ERR_ARG, "%s: unknown kernel kind '%s' (gemm, conv or attention)", source, what);
    char valid[128] = "";
    for (size_t i = 0; i < N_NAMES; i++) {
        if (strcmp(k_names[i].what, what)) continue;
        if (!strcmp(k_names[i].name, name)) {
            if (k_names[i].avx512 && !have_avx512())
                return sl_fail(ctx, SL_ERR_ARG, "%s=%s: this CPU has no AVX-512 (valid here: auto or the portable kernel)",
                               source, name);
            *f = k_names[i].value;
            return SL_OK;
        }
        if (valid[0]) strncat(valid, ", ", sizeof valid - strlen(valid) - 1);
        strncat(valid, k_names[i].name, sizeof valid - strlen(valid) - 1);
    }
    return sl_fail(ctx, SL_ERR_ARG, "%s='%s': not a %s kernel (valid: %s)", source, name, what, valid);
}

const char *sl_kernels_name(const char *what, int value) {
    for (size_t i = 0; i < N_NAMES; i++)
        if (!strcmp(k_names[i].what, what) && k_names[i].value == value) return k_names[i].name;
    return "?";
}
