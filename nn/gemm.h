/* gemm.h - the one SGEMM every layer calls: C = alpha * op(A) op(B) + beta * C,
 * row-major, with results that do not depend on the thread count.
 *
 * OpenBLAS 0.3.21 gives different bits for the same product with 1 and 2
 * threads (it splits the work differently). stylora promises the same adapter
 * bytes for any thread count, so OpenBLAS is kept single-threaded and the
 * output is cut into tiles of a FIXED size (SL_GEMM_TILE_M x SL_GEMM_TILE_N,
 * independent of the thread count); OpenMP threads take tiles, and each tile
 * is one single-threaded OpenBLAS call. Every element is therefore computed
 * by the same kernel with the same reduction order whatever runs it.
 *
 * Dimension letters: M rows of C, N columns of C, K the reduction.
 */
#ifndef SL_NN_GEMM_H
#define SL_NN_GEMM_H

#include <stdint.h>

#define SL_GEMM_TILE_M 256
#define SL_GEMM_TILE_N 512

/* trans_a / trans_b: 0 = as stored, 1 = transposed. lda/ldb/ldc are row strides. */
void sl_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* Keeps OpenBLAS single-threaded (called by sl_sgemm; tools may call it early). */
void sl_gemm_init(void);

#endif
