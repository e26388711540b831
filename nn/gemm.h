/* gemm.h - the one SGEMM every layer calls: C = alpha * op(A) op(B) + beta * C,
 * row-major, with results that do not depend on the thread count.
 *
 * The output is cut into tiles whose size depends only on (M, N) - never on
 * the thread count; OpenMP threads take tiles, and each tile is computed by
 * one thread with a fixed reduction order over K. Every element is therefore
 * the same bits whatever runs it (1 or 2 threads give the same adapter bytes).
 *
 * Two tile kernels, chosen once at run time:
 *   - AVX-512 (when the CPU has it): a 12x32 register-blocked micro-kernel over
 *     packed panels of A and B (K in blocks of 256), written here. On Zen 5 and
 *     Intel server parts this runs at about twice OpenBLAS's AVX2 kernels.
 *   - OpenBLAS, single-threaded, one call per tile (any x86-64; OpenBLAS 0.3.21
 *     gives different bits for 1 and 2 of its own threads, hence the tiles).
 * SL_GEMM=blas in the environment forces the OpenBLAS kernel. Bits differ
 * between the two kernels (not between thread counts). Calls made from inside
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

/* trans_a / trans_b: 0 = as stored, 1 = transposed. lda/ldb/ldc are row strides. */
void sl_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* The reference twin: plain loops, double accumulators, no BLAS, single-threaded. */
void sl_sgemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* Keeps OpenBLAS single-threaded and picks the kernel (called by sl_sgemm; tools may call it early). */
void sl_gemm_init(void);

/* Kernel selection, for tests and benchmarks: SL_GEMM_KERNEL_BLAS or _AVX512.
 * sl_gemm_set_kernel returns the previous kernel, or -1 (and changes nothing)
 * when the requested one is not available on this CPU. Not thread-safe: call
 * it between products, not during one. */
enum { SL_GEMM_KERNEL_BLAS = 0, SL_GEMM_KERNEL_AVX512 = 1 };
int sl_gemm_kernel(void);
int sl_gemm_set_kernel(int kernel);

#endif
