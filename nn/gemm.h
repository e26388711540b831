/* gemm.h - the one SGEMM every layer calls: C = alpha * op(A) op(B) + beta * C,
 * row-major, with results that do not depend on the thread count.
 *
 * The output is cut into tiles whose size depends only on (M, N) - never on
 * the thread count; the threads of core/pool.h take tiles, and each tile is computed by
 * one thread with a fixed reduction order over K. Every element is therefore
 * the same bits whatever runs it (1 or 2 threads give the same adapter bytes).
 *
 * Three tile kernels, chosen per call by the caller's SlKernels (nn/kernels.h):
 *   - AVX-512 (when the CPU has it): a 12x32 register-blocked micro-kernel over
 *     packed panels of A and B (K in blocks of 256), written here. On Zen 5 and
 *     Intel server parts this runs at about twice OpenBLAS's AVX2 kernels.
 *   - OpenBLAS, single-threaded, one call per tile (any x86-64; OpenBLAS 0.3.21
 *     gives different bits for 1 and 2 of its own threads, hence the tiles).
 *   - bf16 (only when asked for; AUTO never picks it): both operands rounded to
 *     bfloat16 while packed, K taken in pairs, VDPBF16PS with fp32 sums (see
 *     "The bf16 kernel" below). A different result, not just different bits.
 * Bits differ between the kernels (not between thread counts), so a plan
 * passes the same SlKernels to every product it makes. Calls made from inside
 * an OpenMP region run serially on the OpenBLAS kernel. Thread-safe: each
 * thread packs into its own buffer (about 1 MB, kept until the thread exits).
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
 *   SL_GEMM_BF16 p = const uint16_t * (bfloat16), ld and trans as sl_sgemm; widened
 *                exactly like F16 (nn/bf16.h), on every kernel
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
 * A gathered A, or an unknown format, aborts. 16-bit or gathered operands on the
 * OpenBLAS kernel (no AVX-512, kern->gemm BLAS, nested calls, skinny products) are
 * widened a tile at a time into per-thread scratch (grown as needed, kept until the
 * thread exits; an allocation failure there aborts: the product has no error path).
 */
enum { SL_GEMM_F32 = 0, SL_GEMM_F16 = 1, SL_GEMM_GATHER = 2, SL_GEMM_BF16 = 3 };
typedef void (*SlGemmGather)(const void *ctx, float *dst, int64_t ldd, int64_t k0, int64_t kc, int64_t j0,
                             int64_t nc);
typedef struct SlGemmOperand {
    int fmt;               /* SL_GEMM_F32 / SL_GEMM_F16 / SL_GEMM_BF16 / SL_GEMM_GATHER */
    int trans;             /* 0 = as stored, 1 = transposed */
    const void *p;         /* float * or uint16_t * (binary16 or bfloat16) */
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

static inline SlGemmOperand sl_gemm_bf16(const uint16_t *p, int64_t ld, int trans) {
    SlGemmOperand o = {SL_GEMM_BF16, trans, p, ld, 0, 0};
    return o;
}

/* C [M,N] (row stride ldc) = alpha * op(A) op(B) + beta * C. */
void sl_gemm_op(int64_t M, int64_t N, int64_t K, float alpha, const SlGemmOperand *A, const SlGemmOperand *B,
                float beta, float *C, int64_t ldc, const SlKernels *kern);

/* ---- The bf16 kernel (kern->gemm == SL_GEMM_KERNEL_BF16) --------------------
 * C = alpha * bf16(op(A)) bf16(op(B)) + beta * C: every element of both operands, whatever
 * its format (fp32, binary16 or gathered: rounded; bfloat16: as stored), is rounded to the
 * nearest bfloat16 (ties to even, nn/bf16.h) when packed. Products of two bfloat16 are exact
 * in fp32; they are summed in fp32, K in pairs: for each pair (2q, 2q+1) the sum takes
 * a(2q+1) b(2q+1) then a(2q) b(2q), one rounding each (VDPBF16PS's order, checked on Zen 4),
 * the pairs in order within blocks of 256 along K, the blocks added into C with alpha and
 * beta exactly as the AVX-512 kernel does. On the DPBF16 and FMA paths an element's bits
 * depend on K alone (not on the tile plan, the skinny swap, a nested call or the thread
 * count); on every path they do not depend on the thread count. Paths, by CPU:
 *   DPBF16  AVX512_BF16: VDPBF16PS on bf16 pair panels. It treats denormal inputs and
 *           sums as zero (DAZ/FTZ, regardless of MXCSR).
 *   FMA     AVX-512F only: the same rounded operands, pairs swapped, on the fp32 micro-kernel
 *           (FMA of an exact product = VDPBF16PS's add): the DPBF16 bits except where a
 *           denormal operand or partial sum occurs (kept here, flushed there).
 *   BLAS    no AVX-512: the rounded operands into per-thread scratch, one OpenBLAS call
 *           per tile (its own summation order: close, not the same bits).
 * Called from inside an OpenMP region it runs serially on the same path. */
enum { SL_GEMM_BF16_PATH_CPU = 0, SL_GEMM_BF16_PATH_DPBF16 = 1, SL_GEMM_BF16_PATH_FMA = 2, SL_GEMM_BF16_PATH_BLAS = 3 };

/* The path the bf16 kernel runs on this CPU (never _CPU). */
int sl_gemm_bf16_path(void);

/* Test and bench hook: sl_gemm_op on the bf16 kernel forced onto `path` (SL_GEMM_BF16_PATH_*;
 * _CPU = as sl_gemm_op). A path this CPU cannot run is replaced by the next one it can
 * (DPBF16 -> FMA -> BLAS); returns the path that ran. */
int sl_gemm_op_bf16_path(int path, int64_t M, int64_t N, int64_t K, float alpha, const SlGemmOperand *A,
                         const SlGemmOperand *B, float beta, float *C, int64_t ldc);

#endif
