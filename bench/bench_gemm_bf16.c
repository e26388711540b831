/* bench_gemm_bf16.c - the bf16 GEMM kernel (nn/gemm.h, SL_GEMM_KERNEL_BF16) beside the fp32
 * AVX-512 kernel and OpenBLAS's multi-threaded sgemm, at SD-1.5 U-Net shapes (64x64 latent =
 * 4096 pixels), with 2 threads and then 1:
 *   linear_4096x320x320    x [4096,320] W^T, W [320,320]      (attention projections at 64x64)
 *   conv3x3_320_64x64      w [320,2880] col [2880,4096]        (a 320-channel 3x3 conv at 64x64; implicit im2col)
 *   linear_1024x640x2560   x [1024,640] W^T, W [2560,640]     (GEGLU projection at 32x32)
 *   linear_64x1280x1280    x [64,1280] W^T, W [1280,1280]     (projections at 8x8)
 * The fp32 kernel multiplies fp32 x and W; the bf16 kernel fp32 x (rounded while packed) and W
 * stored as bfloat16 (SL_GEMM_BF16), as a bf16 frozen base will hold it. The conv runs through
 * sl_conv2d_forward (fp32 weights: both kernels read them the same way; bias added) with the
 * column matrix gathered while packing; OpenBLAS multiplies an im2col matrix made beforehand.
 * Each figure is the best of --iters calls after a warm-up, the three taken in turn.
 *
 * Usage: bench_gemm_bf16 [--iters 5] [--threads T] [--path dpbf16|fma|blas]
 *   --threads: only T (default: 2, then 1); --path: force the bf16 kernel's path
 *   (sl_gemm_op_bf16_path; the conv row then shows the CPU's path).
 * Prints one line per shape and thread count and RESULT lines gemm_{fp32,bf16,openblas}_<shape>.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "core/tensor.h"
#include "nn/gemm.h"
#include "nn/nn.h"

#include <cblas.h> /* after the stylora headers: its <complex.h> defines I (see nn/module.h) */
#undef I

void openblas_set_num_threads(int num_threads);

typedef struct Shape { const char *name; int64_t M, N, K; int conv; } Shape;

static const char *path_name(int p) {
    return p == SL_GEMM_BF16_PATH_DPBF16 ? "dpbf16" : p == SL_GEMM_BF16_PATH_FMA ? "fma" : "blas";
}

static void fill(float *x, size_t n, uint32_t mul, float scale) {
    for (size_t j = 0; j < n; j++) x[j] = ((float)((j * mul) % 1000) * 1e-3f - 0.5f) * scale;
}

/* col [Ci*9, H*W] of a 3x3, stride 1, pad 1 convolution of in [Ci, H, W]. */
static void im2col3(float *col, const float *in, int64_t Ci, int64_t H, int64_t W) {
    for (int64_t c = 0; c < Ci; c++)
        for (int64_t ky = 0; ky < 3; ky++)
            for (int64_t kx = 0; kx < 3; kx++) {
                float *row = col + ((c * 3 + ky) * 3 + kx) * H * W;
                for (int64_t y = 0; y < H; y++)
                    for (int64_t x = 0; x < W; x++) {
                        const int64_t iy = y + ky - 1, ix = x + kx - 1;
                        row[y * W + x] = iy >= 0 && iy < H && ix >= 0 && ix < W ? in[(c * H + iy) * W + ix] : 0.0f;
                    }
            }
}

/* One shape at `threads`: best seconds of the fp32 kernel [0], the bf16 kernel [1], OpenBLAS [2]. */
static void run_shape(const Shape *s, int threads, int iters, int path, double best[3]) {
    const int64_t M = s->M, N = s->N, K = s->K;
    float *a = malloc(sizeof(float) * (size_t)(M * K)), *b = malloc(sizeof(float) * (size_t)(K * N));
    float *c = malloc(sizeof(float) * (size_t)(M * N)), *bias = calloc((size_t)M, sizeof(float));
    uint16_t *b16 = malloc(sizeof(uint16_t) * (size_t)(K * N));
    if (!a || !b || !c || !bias || !b16) {
        fprintf(stderr, "bench_gemm_bf16: out of memory\n");
        exit(1);
    }
    SlConvDims d = {0};
    float *img = NULL, *work = NULL;
    if (s->conv) { /* a [Co, Ci*9] weights, b [Ci*9, HW] the image's columns; img [Ci, 64, 64] */
        d = sl_conv_dims(1, K / 9, 64, 64, M, 3, 1, 1, 1, 1, 1);
        img = malloc(sizeof(float) * (size_t)(K / 9 * 4096));
        work = malloc(sizeof(float) * (sl_conv2d_workspace(&d) + 1));
        if (!img || !work) exit(1);
        fill(img, (size_t)(K / 9 * 4096), 2654435761u, 1.0f);
        fill(a, (size_t)(M * K), 40503u, 0.02f);
        im2col3(b, img, K / 9, 64, 64);
    } else { /* a = x [M, K], b = W [N, K] (used transposed) */
        fill(a, (size_t)(M * K), 2654435761u, 1.0f);
        fill(b, (size_t)(K * N), 40503u, 0.05f);
        sl_f32_to_bf16(b16, b, (size_t)(K * N));
    }
    const SlKernels k32 = {SL_GEMM_KERNEL_AVX512, 0, 0}, kbf = {SL_GEMM_KERNEL_BF16, 0, 0};
    const SlGemmOperand xa = sl_gemm_f32(a, K, 0), wb = sl_gemm_bf16(b16, K, 1);
    omp_set_num_threads(threads);
    best[0] = best[1] = best[2] = 1e30;
    for (int it = 0; it <= iters; it++)
        for (int v = 0; v < 3; v++) {
            const double t0 = bench_now();
            if (v == 2) {
                openblas_set_num_threads(threads);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, s->conv ? CblasNoTrans : CblasTrans, (int)M, (int)N, (int)K,
                            1.0f, a, (int)K, b, s->conv ? (int)N : (int)K, 0.0f, c, (int)N);
            } else if (s->conv) {
                sl_conv2d_forward(c, img, a, bias, &d, work, v ? &kbf : &k32);
            } else if (v == 0) {
                sl_sgemm(0, 1, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N, &k32);
            } else if (path) {
                sl_gemm_op_bf16_path(path, M, N, K, 1.0f, &xa, &wb, 0.0f, c, N);
            } else {
                sl_gemm_op(M, N, K, 1.0f, &xa, &wb, 0.0f, c, N, &kbf);
            }
            const double dt = bench_now() - t0;
            if (v == 2) openblas_set_num_threads(1); /* sl_sgemm's tiles call it single-threaded */
            if (it > 0 && dt < best[v]) best[v] = dt;
        }
    free(a), free(b), free(c), free(bias), free(b16), free(img), free(work);
}

int main(int argc, char **argv) {
    int iters = 5, only = 0, path = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) only = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--path")) {
            const char *p = argv[i + 1];
            path = !strcmp(p, "dpbf16") ? SL_GEMM_BF16_PATH_DPBF16 : !strcmp(p, "fma") ? SL_GEMM_BF16_PATH_FMA
                   : !strcmp(p, "blas")  ? SL_GEMM_BF16_PATH_BLAS : -1;
        } else path = -1;
        if (path < 0 || iters < 1 || only < 0) {
            fprintf(stderr, "usage: %s [--iters N] [--threads T] [--path dpbf16|fma|blas]\n", argv[0]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    sl_gemm_init(); /* before the OpenBLAS calls: it sets OpenBLAS single-threaded once */
    const SlKernels k32 = {SL_GEMM_KERNEL_AVX512, 0, 0};
    if (!sl_kernels_available(&k32)) {
        printf("bench_gemm_bf16: no AVX-512 on this CPU (the fp32 column would be OpenBLAS tiles): nothing to compare\n");
        return 0;
    }
    printf("bf16 kernel path: %s%s; best of %d after a warm-up; GFLOP/s (2 M N K per call)\n",
           path_name(path ? path : sl_gemm_bf16_path()), path ? " (forced)" : " (this CPU's)", iters);
    static const Shape shapes[] = {
        {"linear_4096x320x320", 4096, 320, 320, 0},
        {"conv3x3_320_64x64", 320, 4096, 2880, 1},
        {"linear_1024x640x2560", 1024, 2560, 640, 0},
        {"linear_64x1280x1280", 64, 1280, 1280, 0},
    };
    const int tlist[2] = {only ? only : 2, 1};
    for (int ti = 0; ti < (only ? 1 : 2); ti++) {
        const int threads = tlist[ti];
        printf("%-22s %2s  %14s %14s %14s  %9s %9s\n", "shape", "th", "fp32-avx512", "bf16", "openblas", "bf16/fp32",
               "bf16/oblas");
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const Shape *s = &shapes[i];
            double best[3];
            run_shape(s, threads, iters, path, best);
            const double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K, g = flops * 1e-9;
            printf("%-22s %2d  %8.1f GF/s %8.1f GF/s %8.1f GF/s  %9.2f %9.2f%s\n", s->name, threads, g / best[0],
                   g / best[1], g / best[2], best[0] / best[1], best[2] / best[1],
                   path && s->conv ? "  (bf16: the CPU's path, not the forced one)" : "");
            static const char *const col[3] = {"fp32", "bf16", "openblas"};
            for (int v = 0; v < 3; v++) {
                char name[96], extra[48];
                snprintf(name, sizeof name, "gemm_%s_%s", col[v], s->name);
                snprintf(extra, sizeof extra, " threads=%d", threads);
                bench_result(name, best[v], flops, extra);
            }
        }
    }
    return 0;
}
