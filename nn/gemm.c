/* gemm.c - deterministic tiled SGEMM over single-threaded OpenBLAS; see gemm.h. */
#include "nn/gemm.h"

#include <cblas.h>
#include <pthread.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void init_once(void) { openblas_set_num_threads(1); }
void sl_gemm_init(void) { pthread_once(&g_once, init_once); }

void sl_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    sl_gemm_init();
    if (M <= 0 || N <= 0) return;
    const int64_t tm = (M + SL_GEMM_TILE_M - 1) / SL_GEMM_TILE_M, tn = (N + SL_GEMM_TILE_N - 1) / SL_GEMM_TILE_N;
    const int64_t tiles = tm * tn;
    const enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
#pragma omp parallel for schedule(dynamic, 1) if (tiles > 1)
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t m0 = (t / tn) * SL_GEMM_TILE_M, n0 = (t % tn) * SL_GEMM_TILE_N;
        const int64_t mb = M - m0 < SL_GEMM_TILE_M ? M - m0 : SL_GEMM_TILE_M;
        const int64_t nb = N - n0 < SL_GEMM_TILE_N ? N - n0 : SL_GEMM_TILE_N;
        /* rows m0.. of op(A): A + m0*lda (as stored) or A + m0 (transposed);
         * columns n0.. of op(B): B + n0 (as stored) or B + n0*ldb (transposed) */
        const float *a = trans_a ? A + m0 : A + m0 * lda;
        const float *b = trans_b ? B + n0 * ldb : B + n0;
        cblas_sgemm(CblasRowMajor, ta, tb, (int)mb, (int)nb, (int)K, alpha, a, (int)lda, b, (int)ldb, beta,
                    C + m0 * ldc + n0, (int)ldc);
    }
}
