/* bench_sgemm.c - the machine's reference rate: OpenBLAS SGEMM at M = N = K = 1024,
 * multi-threaded (openblas_set_num_threads(threads), default all cores), best of
 * N calls after a warm-up. bench/run.sh divides stylora's achieved GFLOP/s by it.
 * Also times stylora's sl_sgemm (fixed tiles, OpenMP over single-threaded
 * OpenBLAS calls: thread-count-independent bits) on the same product, for scale.
 *
 * Usage: bench_sgemm [--n 1024] [--iters 5] [--threads T] [--f16 1] [--conv 1]
 * Prints RESULT sgemm_openblas and RESULT sgemm_stylora (flops = 2 n^3).
 * --f16 1 instead times sl_gemm_op with one binary16 operand (widened while
 * packing) against sl_sgemm on the same numbers in fp32, at U-Net-like shapes
 * (a linear x W^T with W [1280,320] fp16; a 3x3 conv's w [320,2880] fp16 times
 * its columns), printed side by side (RESULT gemm_f32_* / gemm_f16_*).
 * --conv 1 times sl_conv2d_forward at the SD VAE decoder's 3x3 convs (256 px
 * decode) through explicit im2col and implicit im2col, alternating, best of iters.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "core/tensor.h"
#include "nn/gemm.h"
#include "nn/nn.h"

#include <cblas.h> /* after the stylora headers: its <complex.h> defines I (see nn/module.h) */
#undef I

void openblas_set_num_threads(int num_threads);

static double best_of(int iters, int stylora, int n, const float *A, const float *B, float *C, const SlKernels *kern) {
    double best = 1e30;
    for (int it = 0; it <= iters; it++) {
        double s = bench_now();
        if (stylora) sl_sgemm(0, 0, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n, kern);
        else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        double dt = bench_now() - s;
        if (it > 0 && dt < best) best = dt;
    }
    return best;
}

typedef struct F16Shape { const char *name; int64_t M, N, K; int ta, tb, half_a; } F16Shape;

/* Best of iters (after a warm-up) of C = op(A) op(B) with the chosen operand in fp32 or fp16. */
static double best_op(int iters, const F16Shape *s, int half, const float *a, const uint16_t *ah, const float *b,
                      const uint16_t *bh, float *c) {
    const int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    const SlGemmOperand fa = sl_gemm_f32(a, lda, s->ta), ha = sl_gemm_f16(ah, lda, s->ta);
    const SlGemmOperand fb = sl_gemm_f32(b, ldb, s->tb), hb = sl_gemm_f16(bh, ldb, s->tb);
    const SlGemmOperand *A = half && s->half_a ? &ha : &fa, *B = half && !s->half_a ? &hb : &fb;
    double best = 1e30;
    for (int it = 0; it <= iters; it++) {
        double t0 = bench_now();
        sl_gemm_op(s->M, s->N, s->K, 1.0f, A, B, 0.0f, c, s->N, NULL);
        double dt = bench_now() - t0;
        if (it > 0 && dt < best) best = dt;
    }
    return best;
}

static int run_f16(int iters, int threads) {
    static const F16Shape shapes[] = {
        {"linear_2048x1280x320_Bt16", 2048, 1280, 320, 0, 1, 0},
        {"conv_320x1024x2880_A16", 320, 1024, 2880, 0, 0, 1},
    };
    omp_set_num_threads(threads);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const F16Shape *s = &shapes[i];
        const size_t na = (size_t)(s->M * s->K), nb = (size_t)(s->K * s->N), nc = (size_t)(s->M * s->N);
        float *a = malloc(na * sizeof(float)), *b = malloc(nb * sizeof(float)), *c = malloc(nc * sizeof(float));
        uint16_t *ah = malloc(na * sizeof(uint16_t)), *bh = malloc(nb * sizeof(uint16_t));
        if (!a || !b || !c || !ah || !bh) return fprintf(stderr, "bench_sgemm: out of memory\n"), 1;
        for (size_t j = 0; j < na; j++) a[j] = (float)((j * 2654435761u) % 1000) * 1e-3f - 0.5f;
        for (size_t j = 0; j < nb; j++) b[j] = (float)((j * 40503u) % 1000) * 1e-3f - 0.5f;
        sl_f32_to_f16(ah, a, na), sl_f16_to_f32(a, ah, na);
        sl_f32_to_f16(bh, b, nb), sl_f16_to_f32(b, bh, nb);
        const double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
        const double t32 = best_op(iters, s, 0, a, ah, b, bh, c), t16 = best_op(iters, s, 1, a, ah, b, bh, c);
        printf("%-28s %d threads: fp32 %.4f s (%.1f GFLOP/s)   fp16 %.4f s (%.1f GFLOP/s)   fp16/fp32 %.3f\n", s->name,
               threads, t32, flops * 1e-9 / t32, t16, flops * 1e-9 / t16, t16 / t32);
        char name[96], extra[32];
        snprintf(extra, sizeof extra, " threads=%d", threads);
        snprintf(name, sizeof name, "gemm_f32_%s", s->name);
        bench_result(name, t32, flops, extra);
        snprintf(name, sizeof name, "gemm_f16_%s", s->name);
        bench_result(name, t16, flops, extra);
        free(a), free(b), free(c), free(ah), free(bh);
    }
    return 0;
}

static int run_conv(int iters, int threads) {
    static const int64_t geo[][3] = {{512, 32, 512}, {512, 64, 512}, {256, 128, 256}, {128, 256, 128}}; /* Ci, H, Co */
    omp_set_num_threads(threads);
    for (size_t g = 0; g < sizeof geo / sizeof geo[0]; g++) {
        const SlConvDims d = sl_conv_dims(1, geo[g][0], geo[g][1], geo[g][1], geo[g][2], 3, 1, 1, 1, 1, 1);
        const size_t nx = (size_t)(d.Ci * d.H * d.W), ny = (size_t)(d.Co * d.Ho * d.Wo), nw = (size_t)(d.Co * d.Ci * 9);
        float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float)), *y = malloc(ny * sizeof(float));
        float *b = calloc((size_t)d.Co, sizeof(float)), *work = malloc((sl_conv2d_workspace(&d) + 1) * sizeof(float));
        if (!x || !w || !y || !b || !work) return fprintf(stderr, "bench_sgemm: out of memory\n"), 1;
        for (size_t j = 0; j < nx; j++) x[j] = (float)((j * 2654435761u) % 1000) * 1e-3f - 0.5f;
        for (size_t j = 0; j < nw; j++) w[j] = (float)((j * 40503u) % 1000) * 1e-5f - 0.005f;
        double best[2] = {1e30, 1e30};
        for (int it = 0; it <= iters; it++)
            for (int imp = 0; imp < 2; imp++) {
                const SlKernels kc = {0, imp ? SL_CONV_KERNEL_AUTO : SL_CONV_KERNEL_IM2COL, 0};
                const double t0 = bench_now();
                sl_conv2d_forward(y, x, w, b, &d, work, &kc);
                const double dt = bench_now() - t0;
                if (it > 0 && dt < best[imp]) best[imp] = dt;
            }
        const double flops = 2.0 * (double)d.Co * (double)(d.Ci * 9) * (double)(d.Ho * d.Wo);
        printf("conv3x3 %4lld->%4lld at %3lldpx, %d threads: im2col %.4f s (%.1f GFLOP/s)  implicit %.4f s (%.1f GFLOP/s)\n",
               (long long)d.Ci, (long long)d.Co, (long long)d.H, threads, best[0], flops * 1e-9 / best[0], best[1],
               flops * 1e-9 / best[1]);
        free(x), free(w), free(y), free(b), free(work);
    }
    return 0;
}

int main(int argc, char **argv) {
    int n = 1024, iters = 5, threads = (int)sysconf(_SC_NPROCESSORS_ONLN), f16 = 0, conv = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--f16")) f16 = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--conv")) conv = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s [--n N] [--iters K] [--threads T] [--f16 1] [--conv 1]\n", argv[0]);
            return 2;
        }
    }
    if (n < 1 || iters < 1 || threads < 1) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (f16) return run_f16(iters, threads);
    if (conv) return run_conv(iters, threads);
    const size_t nn = (size_t)n * (size_t)n;
    float *A = malloc(nn * sizeof(float)), *B = malloc(nn * sizeof(float)), *C = malloc(nn * sizeof(float));
    if (!A || !B || !C) return fprintf(stderr, "bench_sgemm: out of memory\n"), 1;
    for (size_t i = 0; i < nn; i++) {
        A[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        B[i] = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
    }
    const double flops = 2.0 * n * (double)n * n;
    openblas_set_num_threads(threads);
    const SlKernels kern = bench_kernels("bench_sgemm");
    double t = best_of(iters, 0, n, A, B, C, &kern);
    char extra[64];
    snprintf(extra, sizeof extra, " threads=%d", threads);
    printf("OpenBLAS sgemm %d^3, %d threads: %.4f s, %.1f GFLOP/s\n", n, threads, t, flops * 1e-9 / t);
    bench_result("sgemm_openblas", t, flops, extra);
    omp_set_num_threads(threads);
    t = best_of(iters, 1, n, A, B, C, &kern);
    printf("stylora sl_sgemm %d^3, %d OpenMP threads: %.4f s, %.1f GFLOP/s\n", n, threads, t, flops * 1e-9 / t);
    bench_result("sgemm_stylora", t, flops, extra);
    free(A);
    free(B);
    free(C);
    return 0;
}
