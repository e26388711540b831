/* bench_sgemm.c - the machine's reference rate: OpenBLAS SGEMM at M = N = K = 1024,
 * multi-threaded (openblas_set_num_threads(threads), default all cores), best of
 * N calls after a warm-up. bench/run.sh divides stylora's achieved GFLOP/s by it.
 * Also times stylora's sl_sgemm (fixed tiles, OpenMP over single-threaded
 * OpenBLAS calls: thread-count-independent bits) on the same product, for scale.
 *
 * Usage: bench_sgemm [--n 1024] [--iters 5] [--threads T]
 * Prints RESULT sgemm_openblas and RESULT sgemm_stylora (flops = 2 n^3).
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "nn/gemm.h"

#include <cblas.h> /* after the stylora headers: its <complex.h> defines I (see nn/module.h) */
#undef I

void openblas_set_num_threads(int num_threads);

static double best_of(int iters, int stylora, int n, const float *A, const float *B, float *C) {
    double best = 1e30;
    for (int it = 0; it <= iters; it++) {
        double s = bench_now();
        if (stylora) sl_sgemm(0, 0, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        double dt = bench_now() - s;
        if (it > 0 && dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    int n = 1024, iters = 5, threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s [--n N] [--iters K] [--threads T]\n", argv[0]);
            return 2;
        }
    }
    if (n < 1 || iters < 1 || threads < 1) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    const size_t nn = (size_t)n * (size_t)n;
    float *A = malloc(nn * sizeof(float)), *B = malloc(nn * sizeof(float)), *C = malloc(nn * sizeof(float));
    if (!A || !B || !C) return fprintf(stderr, "bench_sgemm: out of memory\n"), 1;
    for (size_t i = 0; i < nn; i++) {
        A[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        B[i] = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
    }
    const double flops = 2.0 * n * (double)n * n;
    openblas_set_num_threads(threads);
    double t = best_of(iters, 0, n, A, B, C);
    char extra[64];
    snprintf(extra, sizeof extra, " threads=%d", threads);
    printf("OpenBLAS sgemm %d^3, %d threads: %.4f s, %.1f GFLOP/s\n", n, threads, t, flops * 1e-9 / t);
    bench_result("sgemm_openblas", t, flops, extra);
    omp_set_num_threads(threads);
    t = best_of(iters, 1, n, A, B, C);
    printf("stylora sl_sgemm %d^3, %d OpenMP threads: %.4f s, %.1f GFLOP/s\n", n, threads, t, flops * 1e-9 / t);
    bench_result("sgemm_stylora", t, flops, extra);
    free(A);
    free(B);
    free(C);
    return 0;
}
