/* gemm.h - the one SGEMM every layer calls: C = alpha * op(A) op(B) + beta * C,
 * row-major, with results that do not depend on the thread count.
 *
 * The output is cut into tiles whose size depends only on (M, N) - never on
 * the thread count; the threads of core/pool.h take tiles, and each tile is computed by
 * one thread with a fixed reduction order over K. Every element is therefore
 * the same bits whatever runs it (1 or 2 threads give the same adapter bytes).
 *
 * Two tile kernels, chosen per call by the caller's SlKernels (nn/kernels.h):
 *   - AVX-512 (when the CPU has it): a 12x32 register-blocked micro-kernel over
 *     packed panels of A and B (K in blocks of 256), written here. On Zen 5 and
 *     Intel server parts this runs at about twice OpenBLAS's AVX2 kernels.
 *   - OpenBLAS, single-threaded, one call per tile (any x86-64; OpenBLAS 0.3.21
 *     gives different bits for 1 and 2 of its own threads, hence the tiles).
 * Bits differ between the two kernels (not between thread counts), so a plan
 * passes the same SlKernels to every product it makes. Calls made from inside
 * an OpenMP region run serially on the OpenBLAS kernel. Thread-safe: each
 * thread packs into its own buffer (about 0.9 MB, kept until the thread exits).
 * Skinny products (N < 96) with A transposed run as C^T = op(B)^T op(A)^T with
 * transposed stores so the wide side fills the micro-kernel; other skinny
 * products use the OpenBLAS kernel. Small products (under ~8 MFLOP) run on the calling thread only.
 *
 * Dimension letters: M rows of C, N columns of C, K the reduction.
 */
#ifndef SL_NN_GEMM_H
#define SL_NN_GEMM_H

#include <stdint.h>

#include "nn/kernels.h"

/* Products with fewer columns than this are swapped (A transposed) or go to OpenBLAS
 * even when the AVX-512 kernel is selected; on that kernel every other product's
 * element (i, j) is the same bits whatever the tile plan (only K is blocked). */
#define SL_GEMM_AVX_MIN_N 96

/* trans_a / trans_b: 0 = as stored, 1 = transposed. lda/ldb/ldc are row strides.
 * kern: the kernel configuration (NULL: the CPU's default, sl_kernels_default()). */
void sl_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const SlKernels *kern);

/* The reference twin: plain loops, double accumulators, no BLAS, single-threaded. */
void sl_sgemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* Keeps OpenBLAS single-threaded and creates the per-thread buffer keys, once per
 * process (called by sl_sgemm; tools may call it early). Chooses no kernel. */
void sl_gemm_init(void);

/* ---- Operands from other sources ------------------------------------------
 * sl_gemm_op is sl_sgemm with each operand described by an SlGemmOperand, so a
 * product can read frozen weights stored as IEEE binary16 (converted while
 * packing: the fp32 matrix is never materialised) or let the caller gather
 * op(B) on the fly (an implicit-im2col convolution packs straight from the
 * image). Contract: the result is BIT-IDENTICAL to sl_sgemm on the same
 * numbers in fp32 (f16 widened exactly; the gathered matrix materialised),
 * with the same thread-count independence.
 *   SL_GEMM_F32  p = const float *, ld and trans as sl_sgemm
 *   SL_GEMM_F16  p = const uint16_t * (binary16), ld and trans as sl_sgemm
 *   SL_GEMM_GATHER (B only; trans ignored): gather(ctx, dst, ldd, k0, kc, j0, nc)
 *                writes op(B)[k0..k0+kc, j0..j0+nc) into dst[k*ldd + j]
 *                (row-major, nc <= ldd). It may be called from several
 *                threads at once and must be a pure function of its arguments.
 *                It writes only those nc columns (the caller zero-fills any
 *                columns past nc that it needs). The AVX-512 packers call it
 *                for each B panel ([<= 256, <= 32], ldd = 32) and, in a
 *                swapped product (N < 96, A transposed), for each A panel
 *                ([<= 256, <= 12], ldd = 12); the OpenBLAS kernel calls it for
 *                a tile's whole [K, nb] block (ldd = nb).
 * A gathered A, or an unknown format, aborts. Binary16 or gathered operands on the
 * OpenBLAS kernel (no AVX-512, kern->gemm BLAS, nested calls, skinny products) are
 * widened a tile at a time into per-thread scratch (grown as needed, kept until the
 * thread exits; an allocation failure there aborts: the product has no error path).
 */
enum { SL_GEMM_F32 = 0, SL_GEMM_F16 = 1, SL_GEMM_GATHER = 2 };
typedef void (*SlGemmGather)(const void *ctx, float *dst, int64_t ldd, int64_t k0, int64_t kc, int64_t j0,
                             int64_t nc);
typedef struct SlGemmOperand {
    int fmt;               /* SL_GEMM_F32 / SL_GEMM_F16 / SL_GEMM_GATHER */
    int trans;             /* 0 = as stored, 1 = transposed */
    const void *p;         /* float * or uint16_t * */
    int64_t ld;            /* row stride of the stored matrix, in elements */
    SlGemmGather gather;   /* SL_GEMM_GATHER only */
    const void *ctx;
} SlGemmOperand;

static inline SlGemmOperand sl_gemm_f32(const float *p, int64_t ld, int trans) {
    SlGemmOperand o = {SL_GEMM_F32, trans, p, ld, 0, 0};
    return o;
}
static inline SlGemmOperand sl_gemm_f16(const uint16_t *p, int64_t ld, int trans) {
    SlGemmOperand o = {SL_GEMM_F16, trans, p, ld, 0, 0};
    return o;
}

/* C [M,N] (row stride ldc) = alpha * op(A) op(B) + beta * C. */
void sl_gemm_op(int64_t M, int64_t N, int64_t K, float alpha, const SlGemmOperand *A, const SlGemmOperand *B,
                float beta, float *C, int64_t ldc, const SlKernels *kern);

#endif
