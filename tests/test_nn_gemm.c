/* test_nn_gemm.c - sl_sgemm (each available kernel: OpenBLAS tiles, AVX-512)
 * against its plain reference twin sl_sgemm_ref, on shapes that hit every
 * edge of the tiling (partial micro-tiles, partial K blocks, odd tile counts),
 * all four transpose combinations, strided sub-matrices, alpha/beta (beta 0
 * must ignore NaN already in C), the bytes-for-bytes independence of the
 * thread count, and two products run at once from two pthreads (each thread
 * packs into its own buffer).
 */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "nn/gemm.h"
#include "nn_test_common.h"

typedef struct Shape { int64_t M, N, K; } Shape;

/* One product of size s with padding pad on every leading dimension; returns the test's failures so far. */
static void check_one(int kernel, Shape s, int ta, int tb, float alpha, float beta, uint64_t *rng) {
    const int64_t pad = 3;
    const int64_t ar = ta ? s.K : s.M, ac = ta ? s.M : s.K, br = tb ? s.N : s.K, bc = tb ? s.K : s.N;
    const int64_t lda = ac + pad, ldb = bc + pad, ldc = s.N + pad;
    float *A = nt_randn_new(ar * lda, rng, 0.0, 1.0), *B = nt_randn_new(br * ldb, rng, 0.0, 1.0);
    float *C = nt_randn_new(s.M * ldc, rng, 0.0, 1.0);
    if (beta == 0.0f)
        for (int64_t i = 0; i < s.M * ldc; i++)
            if ((i % ldc) < s.N) C[i] = NAN; /* must not leak into the result */
    float *R = nt_copy(C, s.M * ldc);
    sl_sgemm(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, C, ldc);
    sl_sgemm_ref(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, R, ldc);
    char what[160];
    snprintf(what, sizeof what, "sgemm kernel %d M%lld N%lld K%lld ta%d tb%d alpha %g beta %g", kernel,
             (long long)s.M, (long long)s.N, (long long)s.K, ta, tb, alpha, beta);
    /* float sums of K products of N(0,1) values: error grows like sqrt(K) * eps * |terms| */
    const double atol = 2e-6 * (double)s.K + 1e-6;
    if (beta == 0.0f) /* the padding columns were left NaN in both */
        for (int64_t i = 0; i < s.M; i++)
            for (int64_t j = s.N; j < ldc; j++) C[i * ldc + j] = R[i * ldc + j] = 0.0f;
    sl_test_close(what, C, R, (size_t)(s.M * ldc), atol, 1e-5);
    sl_free(A);
    sl_free(B);
    sl_free(C);
    sl_free(R);
}

/* Same bits with 1 and 2 threads, for a product big enough to be tiled and threaded
 * (skinny: N < 96, the swapped path). */
static void check_threads(int kernel, int ta, int tb, int skinny, uint64_t *rng) {
    const int64_t M = skinny ? 2000 : 330, N = skinny ? 64 : 1100, K = 700;
    float *A = nt_randn_new(M * K, rng, 0.0, 1.0), *B = nt_randn_new(K * N, rng, 0.0, 1.0);
    float *C1 = nt_zeros(M * N), *C2 = nt_zeros(M * N);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    sl_sgemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C1, N);
    omp_set_num_threads(2);
    sl_sgemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C2, N);
    omp_set_num_threads(saved);
    CHECK(memcmp(C1, C2, sizeof(float) * (size_t)(M * N)) == 0, "kernel %d ta%d tb%d: 1 and 2 threads differ",
          kernel, ta, tb);
    sl_free(A);
    sl_free(B);
    sl_free(C1);
    sl_free(C2);
}

typedef struct Job { int64_t M, N, K; float *A, *B, *C; } Job;
static void *run_job(void *arg) {
    Job *j = arg;
    for (int rep = 0; rep < 3; rep++) sl_sgemm(0, 1, j->M, j->N, j->K, 1.0f, j->A, j->K, j->B, j->K, 0.0f, j->C, j->N);
    return NULL;
}

/* Two pthreads (each at OpenMP level 0) multiplying different matrices at the same time. */
static void check_pthreads(int kernel, uint64_t *rng) {
    const int64_t M = 300, N = 640, K = 300;
    Job jobs[2];
    float *ref[2];
    for (int i = 0; i < 2; i++) {
        jobs[i] = (Job){M, N, K, nt_randn_new(M * K, rng, 0.0, 1.0), nt_randn_new(N * K, rng, 0.0, 1.0), nt_zeros(M * N)};
        ref[i] = nt_zeros(M * N);
        sl_sgemm(0, 1, M, N, K, 1.0f, jobs[i].A, K, jobs[i].B, K, 0.0f, ref[i], N);
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(memcmp(jobs[i].C, ref[i], sizeof(float) * (size_t)(M * N)) == 0,
              "kernel %d: product %d from a second pthread differs from the same product alone", kernel, i);
        sl_free(jobs[i].A); sl_free(jobs[i].B); sl_free(jobs[i].C); sl_free(ref[i]);
    }
}

int main(void) {
    const Shape shapes[] = {
        {1, 1, 1},     {12, 32, 256},  {13, 33, 257},  {11, 31, 5},     {37, 70, 300},  {5, 1000, 3},
        {1000, 5, 40}, {64, 16, 1200}, {330, 530, 97}, {150, 600, 300}, {77, 320, 768}, {24, 64, 0},
        {13, 97, 257}, {11, 100, 5}, {25, 128, 16}, /* >= 96 columns: the AVX-512 micro-kernel with edges */
        {200, 16, 300}, {130, 64, 257}, {97, 33, 70}, {1100, 7, 600}, /* skinny: swapped (C^T) when A^T */
        {50, 200, 300}, {72, 1000, 520}, {73, 130, 33}, /* <= 72 rows: op(B) read in place */
    };
    const int kernels[] = {SL_GEMM_KERNEL_BLAS, SL_GEMM_KERNEL_AVX512};
    const int initial = sl_gemm_kernel();
    printf("default kernel: %d\n", initial);
    uint64_t rng = 12345;
    int tested = 0;
    for (size_t ki = 0; ki < sizeof kernels / sizeof kernels[0]; ki++) {
        if (sl_gemm_set_kernel(kernels[ki]) < 0) {
            printf("kernel %d not available on this CPU: skipped\n", kernels[ki]);
            continue;
        }
        tested++;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int t = 0; t < 4; t++) {
                check_one(kernels[ki], shapes[si], t & 1, t >> 1, 1.0f, 1.0f, &rng);
                check_one(kernels[ki], shapes[si], t & 1, t >> 1, 0.5f, 0.0f, &rng);
                check_one(kernels[ki], shapes[si], t & 1, t >> 1, -1.5f, -0.75f, &rng);
            }
        for (int t = 0; t < 8; t++) check_threads(kernels[ki], t & 1, (t >> 1) & 1, t >> 2, &rng);
        check_pthreads(kernels[ki], &rng);
    }
    CHECK(tested >= 1, "no kernel could be tested");
    CHECK(sl_gemm_set_kernel(99) < 0, "an unknown kernel must be refused");
    sl_gemm_set_kernel(initial);
    printf("%d checks, %d failures\n", sl_test_checks, sl_test_failures);
    return sl_test_failures ? 1 : 0;
}
