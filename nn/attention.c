/* attention.c - multi-head scaled-dot-product attention, forward and backward.
 *
 * Two forward kernels, both flash-attention style (online softmax, no Tq x Tk
 * matrix), chosen per call by the caller's SlKernels (nn/kernels.h):
 *   - lanes (AVX-512, the default when the CPU has it): 16 query rows across
 *     the lanes of a vector, so the softmax is vertical and every FMA is full
 *     whatever the head dim; see "forward, AVX-512 lanes kernel" below. About
 *     1.6x the row kernel at the U-Net's 1024-token, head-dim-40 self-attention.
 *   - rows (AVX2 / scalar), described next; backward always uses its layout.
 *
 * Row kernel: a block of SL_ATT_BK keys is packed
 * transposed into the thread's workspace (Kt [HD,BK]) and reused by every
 * query row of a task's block of SL_ATT_BQ rows; scores are computed for
 * groups of SL_ATT_RG = 4 rows at once (each Kt load feeds 4 rows). Each row
 * keeps a running max m and sum l (online softmax), and its output row doubles
 * as the accumulator, so no Tq x Tk matrix is ever stored. Only lse [B,NH,Tq]
 * is kept for backward, which recomputes the scores tile by tile:
 *   pass 1, parallel over key blocks:   dK, dV (each key row owned by one task)
 *   pass 2, parallel over query blocks: dQ
 * so no two threads ever write the same gradient element. When B*NH is a
 * multiple of the thread count, one task per head does both in one pass.
 * exp() on the hot path is nn_exp.h's vectorized polynomial (rel. error ~2e-7).
 * Workspace holds one slot per processor (omp_get_num_procs(), fixed for the
 * process) and the kernels use at most that many threads, so a workspace
 * planned under one omp_set_num_threads() stays valid under any other.
 *
 * The _ref twins are plain per-row loops in double, independent of lse; they
 * are the oracle for both forward kernels (tests/test_nn_forward.c).
 *
 * Dimension letters: B batch, Tq/Tk query/key tokens, NH heads, HD head dim;
 * rows of q/k/v/out have stride NH*HD and head h starts at column h*HD.
 */
#include <math.h>
#include <omp.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "nn/avx512_transpose.h"
#define SL_ATT_X86 1
#define SL_ATT_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
#define SL_ATT_X86 0
#endif

#include "nn.h"
#include "nn_exp.h"

#define SL_ATT_BQ 64 /* query rows per task */
#define SL_ATT_BK 64 /* keys per packed block */

#define SL_ATT_RG 4  /* query rows per group in backward's rank-R updates */

/* Floats of workspace one thread uses: Kt, Vt [HD,BK]; p, ds [RG,BK]; m, l [BQ];
 * a scratch [RG,HD] that stands in for the output rows of a short last group. */
static size_t att_thread_floats(int64_t HD) {
    size_t n = (size_t)(2 * HD * SL_ATT_BK + 2 * SL_ATT_RG * SL_ATT_BK + 2 * SL_ATT_BQ + SL_ATT_RG * HD);
    return (n + 15) & ~(size_t)15;
}

/* Workspace slots: one per processor, independent of the current thread setting. */
static int att_slots(void) {
    const int p = omp_get_num_procs();
    return p > 0 ? p : 1;
}

/* Threads a kernel may use: the current setting, capped by the slots. */
static int att_threads(void) {
    const int t = omp_get_max_threads(), s = att_slots();
    return t < s ? t : s;
}

/* Whether a call has enough work (about 4 MFLOP) to wake a second thread. */
static int att_worth_threads(int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD) {
    return 4.0 * (double)B * (double)NH * (double)Tq * (double)Tk * (double)HD >= 4.0e6;
}


/* max(init, p[0..n)) */
static float att_max_row(const float *p, int64_t n, float init) {
    int64_t j = 0;
    float mx = init;
#if defined(__AVX512F__)
    __m512 vm = _mm512_set1_ps(init);
    for (; j < n; j += 16) {
        const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
        vm = _mm512_mask_max_ps(vm, k, vm, _mm512_maskz_loadu_ps(k, p + j));
    }
    mx = _mm512_reduce_max_ps(vm);
#endif
    for (; j < n; j++) mx = p[j] > mx ? p[j] : mx;
    return mx;
}

/* Mt [HD,BK] <- rows M[j*ld + 0..HD) for j < nk; columns nk..BK zeroed. */
static void att_pack_t(float *Mt, const float *M, int64_t ld, int64_t nk, int64_t HD) {
    for (int64_t d = 0; d < HD; d++) {
        float *dst = Mt + d * SL_ATT_BK;
        for (int64_t j = 0; j < nk; j++) dst[j] = M[j * ld + d];
        for (int64_t j = nk; j < SL_ATT_BK; j++) dst[j] = 0.0f;
    }
}

/* s[0..BK) = a * (x [HD] . Mt[:,j]) */
static void att_row_dot_t(float *s, const float *x, const float *Mt, int64_t HD, float a) {
#if defined(__AVX512F__)
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t d = 0; d < HD; d++) {
        const __m512 xv = _mm512_set1_ps(x[d]);
        const float *m = Mt + d * SL_ATT_BK;
        c0 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(m), c0);
        c1 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(m + 16), c1);
        c2 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(m + 32), c2);
        c3 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(m + 48), c3);
    }
    const __m512 av = _mm512_set1_ps(a);
    _mm512_storeu_ps(s, _mm512_mul_ps(c0, av));
    _mm512_storeu_ps(s + 16, _mm512_mul_ps(c1, av));
    _mm512_storeu_ps(s + 32, _mm512_mul_ps(c2, av));
    _mm512_storeu_ps(s + 48, _mm512_mul_ps(c3, av));
#elif defined(__AVX2__) && defined(__FMA__)
    for (int half = 0; half < 2; half++) {
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        const float *mb = Mt + half * 32;
        for (int64_t d = 0; d < HD; d++) {
            const __m256 xv = _mm256_set1_ps(x[d]);
            const float *m = mb + d * SL_ATT_BK;
            c0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(m), c0);
            c1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(m + 8), c1);
            c2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(m + 16), c2);
            c3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(m + 24), c3);
        }
        const __m256 av = _mm256_set1_ps(a);
        float *sb = s + half * 32;
        _mm256_storeu_ps(sb, _mm256_mul_ps(c0, av));
        _mm256_storeu_ps(sb + 8, _mm256_mul_ps(c1, av));
        _mm256_storeu_ps(sb + 16, _mm256_mul_ps(c2, av));
        _mm256_storeu_ps(sb + 24, _mm256_mul_ps(c3, av));
    }
#else
    float acc[SL_ATT_BK];
    for (int j = 0; j < SL_ATT_BK; j++) acc[j] = 0.0f;
    for (int64_t d = 0; d < HD; d++) {
        const float *m = Mt + d * SL_ATT_BK;
        for (int j = 0; j < SL_ATT_BK; j++) acc[j] += x[d] * m[j];
    }
    for (int j = 0; j < SL_ATT_BK; j++) s[j] = acc[j] * a;
#endif
}

/* S[t*BK + j] = a * (x_t . Mt[:,j]) for the RG = 4 rows x_t: each loaded
 * column of Mt feeds four rows, so the loop is FMA-bound, not load-bound. */
static void att_rows_dot_t4(float *S, const float *const *x, const float *Mt, int64_t HD, float a) {
#if defined(__AVX512F__)
    /* written out: gcc -O2 keeps an accumulator array in memory, not registers */
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
    for (int64_t d = 0; d < HD; d++) {
        const float *m = Mt + d * SL_ATT_BK;
        const __m512 m0 = _mm512_loadu_ps(m), m1 = _mm512_loadu_ps(m + 16);
        const __m512 m2 = _mm512_loadu_ps(m + 32), m3 = _mm512_loadu_ps(m + 48);
        __m512 xv = _mm512_set1_ps(x0[d]);
        c00 = _mm512_fmadd_ps(xv, m0, c00); c01 = _mm512_fmadd_ps(xv, m1, c01);
        c02 = _mm512_fmadd_ps(xv, m2, c02); c03 = _mm512_fmadd_ps(xv, m3, c03);
        xv = _mm512_set1_ps(x1[d]);
        c10 = _mm512_fmadd_ps(xv, m0, c10); c11 = _mm512_fmadd_ps(xv, m1, c11);
        c12 = _mm512_fmadd_ps(xv, m2, c12); c13 = _mm512_fmadd_ps(xv, m3, c13);
        xv = _mm512_set1_ps(x2[d]);
        c20 = _mm512_fmadd_ps(xv, m0, c20); c21 = _mm512_fmadd_ps(xv, m1, c21);
        c22 = _mm512_fmadd_ps(xv, m2, c22); c23 = _mm512_fmadd_ps(xv, m3, c23);
        xv = _mm512_set1_ps(x3[d]);
        c30 = _mm512_fmadd_ps(xv, m0, c30); c31 = _mm512_fmadd_ps(xv, m1, c31);
        c32 = _mm512_fmadd_ps(xv, m2, c32); c33 = _mm512_fmadd_ps(xv, m3, c33);
    }
    const __m512 av = _mm512_set1_ps(a);
#define SL_ATT_ST(t, u, c) _mm512_storeu_ps(S + (t) * SL_ATT_BK + 16 * (u), _mm512_mul_ps(c, av))
    SL_ATT_ST(0, 0, c00); SL_ATT_ST(0, 1, c01); SL_ATT_ST(0, 2, c02); SL_ATT_ST(0, 3, c03);
    SL_ATT_ST(1, 0, c10); SL_ATT_ST(1, 1, c11); SL_ATT_ST(1, 2, c12); SL_ATT_ST(1, 3, c13);
    SL_ATT_ST(2, 0, c20); SL_ATT_ST(2, 1, c21); SL_ATT_ST(2, 2, c22); SL_ATT_ST(2, 3, c23);
    SL_ATT_ST(3, 0, c30); SL_ATT_ST(3, 1, c31); SL_ATT_ST(3, 2, c32); SL_ATT_ST(3, 3, c33);
#undef SL_ATT_ST
#elif defined(__AVX2__) && defined(__FMA__)
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
    const __m256 av = _mm256_set1_ps(a);
    for (int qtr = 0; qtr < 4; qtr++) { /* 16 keys at a time: 8 accumulators */
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
        for (int64_t d = 0; d < HD; d++) {
            const float *m = Mt + d * SL_ATT_BK + 16 * qtr;
            const __m256 m0 = _mm256_loadu_ps(m), m1 = _mm256_loadu_ps(m + 8);
            __m256 xv = _mm256_set1_ps(x0[d]);
            c00 = _mm256_fmadd_ps(xv, m0, c00); c01 = _mm256_fmadd_ps(xv, m1, c01);
            xv = _mm256_set1_ps(x1[d]);
            c10 = _mm256_fmadd_ps(xv, m0, c10); c11 = _mm256_fmadd_ps(xv, m1, c11);
            xv = _mm256_set1_ps(x2[d]);
            c20 = _mm256_fmadd_ps(xv, m0, c20); c21 = _mm256_fmadd_ps(xv, m1, c21);
            xv = _mm256_set1_ps(x3[d]);
            c30 = _mm256_fmadd_ps(xv, m0, c30); c31 = _mm256_fmadd_ps(xv, m1, c31);
        }
        float *o = S + 16 * qtr;
        _mm256_storeu_ps(o, _mm256_mul_ps(c00, av)); _mm256_storeu_ps(o + 8, _mm256_mul_ps(c01, av));
        o += SL_ATT_BK;
        _mm256_storeu_ps(o, _mm256_mul_ps(c10, av)); _mm256_storeu_ps(o + 8, _mm256_mul_ps(c11, av));
        o += SL_ATT_BK;
        _mm256_storeu_ps(o, _mm256_mul_ps(c20, av)); _mm256_storeu_ps(o + 8, _mm256_mul_ps(c21, av));
        o += SL_ATT_BK;
        _mm256_storeu_ps(o, _mm256_mul_ps(c30, av)); _mm256_storeu_ps(o + 8, _mm256_mul_ps(c31, av));
    }
#else
    for (int t = 0; t < 4; t++) att_row_dot_t(S + t * SL_ATT_BK, x[t], Mt, HD, a);
#endif
}

/* y[0..HD) = y*c + sum_{j<nk} p[j] * M[j*ld + 0..HD) */
static void att_row_axpy_rows(float *y, float c, const float *p, const float *M, int64_t ld,
                              int64_t nk, int64_t HD) {
    int64_t d0 = 0;
#if defined(__AVX512F__)
    for (; d0 < HD; d0 += 16) {
        const int64_t w = HD - d0 < 16 ? HD - d0 : 16;
        const __mmask16 k = (__mmask16)((1u << w) - 1u);
        __m512 acc = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, y + d0), _mm512_set1_ps(c));
        const float *m = M + d0;
        for (int64_t j = 0; j < nk; j++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_maskz_loadu_ps(k, m + j * ld), acc);
        _mm512_mask_storeu_ps(y + d0, k, acc);
    }
#elif defined(__AVX2__) && defined(__FMA__)
    for (; d0 + 8 <= HD; d0 += 8) {
        __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(y + d0), _mm256_set1_ps(c));
        const float *m = M + d0;
        for (int64_t j = 0; j < nk; j++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(m + j * ld), acc);
        _mm256_storeu_ps(y + d0, acc);
    }
#endif
    for (int64_t d = d0; d < HD; d++) {
        float acc = y[d] * c;
        for (int64_t j = 0; j < nk; j++) acc += p[j] * M[j * ld + d];
        y[d] = acc;
    }
}

/* Y_t[0..HD) = Y_t*c_t + sum_{j<nk} P[t*BK + j] * M[j*ld + 0..HD) for the 4
 * rows t (distinct pointers): each loaded row of M feeds four outputs. */
static void att_rows_axpy_rows4(float *const *Y, const float *c, const float *P, const float *M,
                                int64_t ld, int64_t nk, int64_t HD) {
    const float *P0 = P, *P1 = P + SL_ATT_BK, *P2 = P + 2 * SL_ATT_BK, *P3 = P + 3 * SL_ATT_BK;
    int64_t d0 = 0;
#if defined(__AVX512F__)
    const __m512 c0 = _mm512_set1_ps(c[0]), c1 = _mm512_set1_ps(c[1]), c2 = _mm512_set1_ps(c[2]), c3 = _mm512_set1_ps(c[3]);
    for (; d0 < HD; d0 += 32) { /* two 16-wide chunks per pass: 8 accumulators */
        const int64_t wa = HD - d0 < 16 ? HD - d0 : 16, wb = HD - d0 - 16 <= 0 ? 0 : (HD - d0 - 16 < 16 ? HD - d0 - 16 : 16);
        const __mmask16 ka = (__mmask16)((1u << wa) - 1u), kb = (__mmask16)((1u << wb) - 1u);
        __m512 a0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(ka, Y[0] + d0), c0);
        __m512 a1 = _mm512_mul_ps(_mm512_maskz_loadu_ps(ka, Y[1] + d0), c1);
        __m512 a2 = _mm512_mul_ps(_mm512_maskz_loadu_ps(ka, Y[2] + d0), c2);
        __m512 a3 = _mm512_mul_ps(_mm512_maskz_loadu_ps(ka, Y[3] + d0), c3);
        __m512 b0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(kb, Y[0] + d0 + 16), c0);
        __m512 b1 = _mm512_mul_ps(_mm512_maskz_loadu_ps(kb, Y[1] + d0 + 16), c1);
        __m512 b2 = _mm512_mul_ps(_mm512_maskz_loadu_ps(kb, Y[2] + d0 + 16), c2);
        __m512 b3 = _mm512_mul_ps(_mm512_maskz_loadu_ps(kb, Y[3] + d0 + 16), c3);
        const float *m = M + d0;
        for (int64_t j = 0; j < nk; j++) {
            const __m512 va = _mm512_maskz_loadu_ps(ka, m + j * ld), vb = _mm512_maskz_loadu_ps(kb, m + j * ld + 16);
            __m512 pj = _mm512_set1_ps(P0[j]);
            a0 = _mm512_fmadd_ps(pj, va, a0); b0 = _mm512_fmadd_ps(pj, vb, b0);
            pj = _mm512_set1_ps(P1[j]);
            a1 = _mm512_fmadd_ps(pj, va, a1); b1 = _mm512_fmadd_ps(pj, vb, b1);
            pj = _mm512_set1_ps(P2[j]);
            a2 = _mm512_fmadd_ps(pj, va, a2); b2 = _mm512_fmadd_ps(pj, vb, b2);
            pj = _mm512_set1_ps(P3[j]);
            a3 = _mm512_fmadd_ps(pj, va, a3); b3 = _mm512_fmadd_ps(pj, vb, b3);
        }
        _mm512_mask_storeu_ps(Y[0] + d0, ka, a0); _mm512_mask_storeu_ps(Y[0] + d0 + 16, kb, b0);
        _mm512_mask_storeu_ps(Y[1] + d0, ka, a1); _mm512_mask_storeu_ps(Y[1] + d0 + 16, kb, b1);
        _mm512_mask_storeu_ps(Y[2] + d0, ka, a2); _mm512_mask_storeu_ps(Y[2] + d0 + 16, kb, b2);
        _mm512_mask_storeu_ps(Y[3] + d0, ka, a3); _mm512_mask_storeu_ps(Y[3] + d0 + 16, kb, b3);
    }
#elif defined(__AVX2__) && defined(__FMA__)
    const __m256 c0 = _mm256_set1_ps(c[0]), c1 = _mm256_set1_ps(c[1]), c2 = _mm256_set1_ps(c[2]), c3 = _mm256_set1_ps(c[3]);
    for (; d0 + 8 <= HD; d0 += 8) {
        __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(Y[0] + d0), c0), a1 = _mm256_mul_ps(_mm256_loadu_ps(Y[1] + d0), c1);
        __m256 a2 = _mm256_mul_ps(_mm256_loadu_ps(Y[2] + d0), c2), a3 = _mm256_mul_ps(_mm256_loadu_ps(Y[3] + d0), c3);
        const float *m = M + d0;
        for (int64_t j = 0; j < nk; j++) {
            const __m256 v = _mm256_loadu_ps(m + j * ld);
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(P0[j]), v, a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(P1[j]), v, a1);
            a2 = _mm256_fmadd_ps(_mm256_set1_ps(P2[j]), v, a2);
            a3 = _mm256_fmadd_ps(_mm256_set1_ps(P3[j]), v, a3);
        }
        _mm256_storeu_ps(Y[0] + d0, a0); _mm256_storeu_ps(Y[1] + d0, a1);
        _mm256_storeu_ps(Y[2] + d0, a2); _mm256_storeu_ps(Y[3] + d0, a3);
    }
#endif
    for (int64_t d = d0; d < HD; d++) {
        float a0 = Y[0][d] * c[0], a1 = Y[1][d] * c[1], a2 = Y[2][d] * c[2], a3 = Y[3][d] * c[3];
        for (int64_t j = 0; j < nk; j++) {
            const float v = M[j * ld + d];
            a0 += P0[j] * v; a1 += P1[j] * v; a2 += P2[j] * v; a3 += P3[j] * v;
        }
        Y[0][d] = a0; Y[1][d] = a1; Y[2][d] = a2; Y[3][d] = a3;
    }
}

/* M[j*ld + 0..HD) += sum_t P[t*BK + j] * x_t[0..HD) for j < nk, t < RG:
 * a rank-RG update, so each row of M is loaded and stored once per group. */
static void att_rows_add_outer_rg(float *M, int64_t ld, const float *P, const float *const *x,
                                  int64_t nk, int64_t HD) {
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
    for (int64_t j = 0; j < nk; j++) {
        const float a0 = P[j], a1 = P[SL_ATT_BK + j], a2 = P[2 * SL_ATT_BK + j], a3 = P[3 * SL_ATT_BK + j];
        float *m = M + j * ld;
#pragma omp simd
        for (int64_t d = 0; d < HD; d++) m[d] += (a0 * x0[d] + a1 * x1[d]) + (a2 * x2[d] + a3 * x3[d]);
    }
}

static inline int64_t att_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- forward, AVX-512 "lanes" kernel: one zmm lane per query row ----
 *
 * A task owns SL_ATT_LB query rows, handled SL_ATT_L = 16 at a time as the 16
 * lanes of a vector. Scores of 16 rows against 16 keys are 16 vectors S_j
 * (one per key), computed from Qt [HD,16] (the rows transposed, pre-scaled)
 * and the head's keys transposed once per call into blocks Kt [Tkp/16,HD,16]
 * (Tkp = Tk rounded up to 16, zero-padded; one block is contiguous, as a
 * [HD,Tkp] layout would put a block's rows 4 KB apart, all in one L1 set):
 * S_j += Qt[d] * Kt[k0/16,d,j], every FMA a full vector whatever HD is. The online softmax is then vertical (max, exp and sums
 * across the 16 key vectors, per lane), and the output accumulates transposed,
 * Ot [HD,16] += V[k0+j,d] * P_j, read back into rows at the end. Masked keys
 * (past Tk, or j > i when causal) get score -inf before the softmax. Each row
 * block is computed by one thread in a fixed order, so results do not depend
 * on the thread count. Compiled for AVX-512 with a target attribute and chosen
 * per call (SlKernels.attention, resolved by sl_kernels_attention); otherwise the row kernel below runs. */
#define SL_ATT_L 16   /* lanes: query rows per vector, and keys per step */
#define SL_ATT_LB 64  /* query rows per task */

static int64_t att_pad16(int64_t n) { return (n + SL_ATT_L - 1) / SL_ATT_L * SL_ATT_L; }

/* Floats the lanes kernel shares between threads: transposed keys [B*NH, Tkp/16, HD, 16],
 * then packed values [B*NH, Tkp, HD]. */
static size_t att_lanes_shared_floats(int64_t B, int64_t Tk, int64_t NH, int64_t HD) {
    return (size_t)(2 * B * NH * HD * att_pad16(Tk));
}

#if SL_ATT_X86
/* 2^x for 16 lanes, x <= 0 (scores minus their running max, in log2 units):
 * x = n + r, |r| <= 1/2, 2^r by its degree-7 Taylor polynomial in r ln2
 * (relative error about 1e-8 before rounding), scaled by 2^n with scalef;
 * exactly 0 below -126 (and for -inf). */
SL_ATT_AVX512 static inline __m512 att_exp2_16(__m512 x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_GE_OQ);
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.5252733804e-5f); /* ln2^7 / 7! */
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.5403530393e-4f)); /* ln2^6 / 6! */
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3333558146e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.6181291076e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5504108665e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022650696e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718056e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(live, p, n);
}

static inline __mmask16 att_mask(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

/* dst[c*ldd + r] = src[r*lds + c] * mul[c] for r < ns, c < sl (missing rows read
 * as 0), storing dn rows of dl lanes: a transposed copy of a tile of up to 16x16. */
SL_ATT_AVX512 static void att_transpose_tile(float *dst, int64_t ldd, int64_t dn, int64_t dl, const float *src,
                                             int64_t lds, int64_t ns, int64_t sl, __m512 mul) {
    __m512 r[16];
    const __mmask16 ks = att_mask(sl), kd = att_mask(dl);
    for (int64_t i = 0; i < 16; i++)
        r[i] = i < ns ? _mm512_mul_ps(_mm512_maskz_loadu_ps(ks, src + i * lds), mul) : _mm512_setzero_ps();
    sl_transpose16_regs(r);
    for (int64_t i = 0; i < dn; i++) _mm512_mask_storeu_ps(dst + i * ldd, kd, r[i]);
}

/* S[j] = sum_d Qt[d] * kp[d*ldk + j] for j < 16 (kp = Kt + k0). Written out:
 * gcc -O2 keeps an accumulator array in memory, not registers. */
SL_ATT_AVX512 static void att_qk16(__m512 *S, const float *Qt, const float *kp, int64_t ldk, int64_t HD) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    __m512 s8 = s0, s9 = s0, s10 = s0, s11 = s0, s12 = s0, s13 = s0, s14 = s0, s15 = s0;
    for (int64_t d = 0; d < HD; d++, kp += ldk) {
        const __m512 q = _mm512_loadu_ps(Qt + d * SL_ATT_L);
#define SL_ATT_F(j) s##j = _mm512_fmadd_ps(q, _mm512_set1_ps(kp[j]), s##j)
        SL_ATT_F(0); SL_ATT_F(1); SL_ATT_F(2); SL_ATT_F(3); SL_ATT_F(4); SL_ATT_F(5); SL_ATT_F(6); SL_ATT_F(7);
        SL_ATT_F(8); SL_ATT_F(9); SL_ATT_F(10); SL_ATT_F(11); SL_ATT_F(12); SL_ATT_F(13); SL_ATT_F(14); SL_ATT_F(15);
#undef SL_ATT_F
    }
    S[0] = s0; S[1] = s1; S[2] = s2; S[3] = s3; S[4] = s4; S[5] = s5; S[6] = s6; S[7] = s7;
    S[8] = s8; S[9] = s9; S[10] = s10; S[11] = s11; S[12] = s12; S[13] = s13; S[14] = s14; S[15] = s15;
}

/* Ot[d] = Ot[d]*corr + sum_j vp[j*ldv + d] * P[j] for d < HD, j < 16: 16 output
 * vectors at a time (then 8, then 1), each broadcast V element feeding one FMA;
 * 16 accumulators keep both FMA pipes busy through the FMA latency. Written out
 * (macros): with an accumulator array gcc spills it and copies it with memcpy. */
#define SL_ATT_PV_LD(t) __m512 a##t = _mm512_mul_ps(_mm512_loadu_ps(o + 16 * (t)), corr)
#define SL_ATT_PV_FMA(t) a##t = _mm512_fmadd_ps(_mm512_set1_ps(v[t]), p, a##t)
#define SL_ATT_PV_ST(t) _mm512_storeu_ps(o + 16 * (t), a##t)
#define SL_ATT_PV8(M, o0) M(o0); M(o0 + 1); M(o0 + 2); M(o0 + 3); M(o0 + 4); M(o0 + 5); M(o0 + 6); M(o0 + 7)
SL_ATT_AVX512 static void att_pv16(float *Ot, __m512 corr, const __m512 *P, const float *vp, int64_t ldv,
                                   int64_t HD) {
    int64_t d0 = 0;
    for (; d0 + 16 <= HD; d0 += 16) {
        float *o = Ot + d0 * SL_ATT_L;
        SL_ATT_PV_LD(0); SL_ATT_PV_LD(1); SL_ATT_PV_LD(2); SL_ATT_PV_LD(3);
        SL_ATT_PV_LD(4); SL_ATT_PV_LD(5); SL_ATT_PV_LD(6); SL_ATT_PV_LD(7);
        SL_ATT_PV_LD(8); SL_ATT_PV_LD(9); SL_ATT_PV_LD(10); SL_ATT_PV_LD(11);
        SL_ATT_PV_LD(12); SL_ATT_PV_LD(13); SL_ATT_PV_LD(14); SL_ATT_PV_LD(15);
        const float *v = vp + d0;
        for (int j = 0; j < SL_ATT_L; j++, v += ldv) {
            const __m512 p = P[j];
            SL_ATT_PV_FMA(0); SL_ATT_PV_FMA(1); SL_ATT_PV_FMA(2); SL_ATT_PV_FMA(3);
            SL_ATT_PV_FMA(4); SL_ATT_PV_FMA(5); SL_ATT_PV_FMA(6); SL_ATT_PV_FMA(7);
            SL_ATT_PV_FMA(8); SL_ATT_PV_FMA(9); SL_ATT_PV_FMA(10); SL_ATT_PV_FMA(11);
            SL_ATT_PV_FMA(12); SL_ATT_PV_FMA(13); SL_ATT_PV_FMA(14); SL_ATT_PV_FMA(15);
        }
        SL_ATT_PV_ST(0); SL_ATT_PV_ST(1); SL_ATT_PV_ST(2); SL_ATT_PV_ST(3);
        SL_ATT_PV_ST(4); SL_ATT_PV_ST(5); SL_ATT_PV_ST(6); SL_ATT_PV_ST(7);
        SL_ATT_PV_ST(8); SL_ATT_PV_ST(9); SL_ATT_PV_ST(10); SL_ATT_PV_ST(11);
        SL_ATT_PV_ST(12); SL_ATT_PV_ST(13); SL_ATT_PV_ST(14); SL_ATT_PV_ST(15);
    }
    for (; d0 + 8 <= HD; d0 += 8) {
        float *o = Ot + d0 * SL_ATT_L;
        SL_ATT_PV_LD(0); SL_ATT_PV_LD(1); SL_ATT_PV_LD(2); SL_ATT_PV_LD(3);
        SL_ATT_PV_LD(4); SL_ATT_PV_LD(5); SL_ATT_PV_LD(6); SL_ATT_PV_LD(7);
        const float *v = vp + d0;
        for (int j = 0; j < SL_ATT_L; j++, v += ldv) {
            const __m512 p = P[j];
            SL_ATT_PV_FMA(0); SL_ATT_PV_FMA(1); SL_ATT_PV_FMA(2); SL_ATT_PV_FMA(3);
            SL_ATT_PV_FMA(4); SL_ATT_PV_FMA(5); SL_ATT_PV_FMA(6); SL_ATT_PV_FMA(7);
        }
        SL_ATT_PV_ST(0); SL_ATT_PV_ST(1); SL_ATT_PV_ST(2); SL_ATT_PV_ST(3);
        SL_ATT_PV_ST(4); SL_ATT_PV_ST(5); SL_ATT_PV_ST(6); SL_ATT_PV_ST(7);
    }
    for (; d0 < HD; d0++) {
        float *o = Ot + d0 * SL_ATT_L;
        __m512 a = _mm512_mul_ps(_mm512_loadu_ps(o), corr);
        for (int j = 0; j < SL_ATT_L; j++) a = _mm512_fmadd_ps(_mm512_set1_ps(vp[j * ldv + d0]), P[j], a);
        _mm512_storeu_ps(o, a);
    }
}
#undef SL_ATT_PV_LD
#undef SL_ATT_PV_FMA
#undef SL_ATT_PV_ST
#undef SL_ATT_PV8

/* Rows i0..i0+nr (nr <= 16) of one head: oh/lh the head's output rows and lse,
 * qh its query rows (stride ld), Kt its keys in transposed blocks [Tkp/16,HD,16],
 * Vp its value rows packed [Tkp,HD] (rows past Tk zero). Qt, Ot [HD,16] are
 * the thread's scratch. */
SL_ATT_AVX512 static void att_lanes_rows(float *oh, float *lh, const float *qh, const float *Kt, const float *Vp,
                                         int64_t ld, int64_t Tk, int64_t i0, int64_t nr, int64_t HD, float scale,
                                         int causal, float *Qt, float *Ot) {
    const float s2 = scale * 1.44269504088896341f; /* scores in log2 units: softmax by 2^x */
    for (int64_t d0 = 0; d0 < HD; d0 += SL_ATT_L)
        att_transpose_tile(Qt + d0 * SL_ATT_L, SL_ATT_L, att_min(SL_ATT_L, HD - d0), SL_ATT_L, qh + i0 * ld + d0, ld, nr,
                           att_min(SL_ATT_L, HD - d0), _mm512_set1_ps(s2));
    memset(Ot, 0, sizeof(float) * (size_t)(HD * SL_ATT_L));
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 m = ninf, l = _mm512_setzero_ps();
    const int64_t kend = causal ? att_min(Tk, i0 + nr) : Tk;
    __m512 S[SL_ATT_L];
    for (int64_t k0 = 0; k0 < kend; k0 += SL_ATT_L) {
        const int64_t nk = att_min(SL_ATT_L, Tk - k0);
        att_qk16(S, Qt, Kt + k0 * HD, SL_ATT_L, HD); /* block k0/16: [HD,16] */
        if (nk < SL_ATT_L || (causal && k0 + SL_ATT_L - 1 > i0))
            for (int64_t j = 0; j < SL_ATT_L; j++) { /* lane r keeps key k0+j iff k0+j < Tk and (!causal or k0+j <= i0+r) */
                const int64_t first = causal ? k0 + j - i0 : 0; /* first lane that keeps it */
                __mmask16 keep = j >= nk || first >= SL_ATT_L ? 0 : (first <= 0 ? 0xFFFF : (__mmask16)(0xFFFFu << first));
                S[j] = _mm512_mask_mov_ps(ninf, keep, S[j]);
            }
        __m512 mx = m;
        for (int j = 0; j < SL_ATT_L; j++) mx = _mm512_max_ps(mx, S[j]);
        const __m512 corr = att_exp2_16(_mm512_sub_ps(m, mx)); /* m = -inf first: 0 */
        __m512 sum = _mm512_setzero_ps();
        for (int j = 0; j < SL_ATT_L; j++) {
            S[j] = att_exp2_16(_mm512_sub_ps(S[j], mx));
            sum = _mm512_add_ps(sum, S[j]);
        }
        l = _mm512_fmadd_ps(l, corr, sum);
        m = mx;
        att_pv16(Ot, corr, S, Vp + k0 * HD, HD, HD);
    }
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), l);
    for (int64_t d0 = 0; d0 < HD; d0 += SL_ATT_L)
        att_transpose_tile(oh + i0 * ld + d0, ld, nr, att_min(SL_ATT_L, HD - d0), Ot + d0 * SL_ATT_L, SL_ATT_L,
                           att_min(SL_ATT_L, HD - d0), SL_ATT_L, inv);
    float mv[SL_ATT_L], lv[SL_ATT_L];
    _mm512_storeu_ps(mv, m);
    _mm512_storeu_ps(lv, l);
    for (int64_t r = 0; r < nr; r++) lh[i0 + r] = mv[r] * 0.693147180559945309f + logf(lv[r]);
}

/* One head's keys into blocks Kt [Tkp/16,HD,16] and values into Vp [Tkp,HD]
 * (rows past Tk zero); kh/vh its rows, stride ld. (Vector code stays out of the
 * OpenMP region's body: clang does not give that body the target attribute.) */
SL_ATT_AVX512 static void att_lanes_pack_head(float *Kt, float *Vp, const float *kh, const float *vh, int64_t ld,
                                              int64_t Tk, int64_t HD) {
    const int64_t Tkp = att_pad16(Tk);
    for (int64_t j0 = 0; j0 < Tkp; j0 += SL_ATT_L)
        for (int64_t d0 = 0; d0 < HD; d0 += SL_ATT_L)
            att_transpose_tile(Kt + j0 * HD + d0 * SL_ATT_L, SL_ATT_L, att_min(SL_ATT_L, HD - d0), SL_ATT_L,
                               kh + j0 * ld + d0, ld, att_min(SL_ATT_L, Tk - j0), att_min(SL_ATT_L, HD - d0),
                               _mm512_set1_ps(1.0f));
    for (int64_t j = 0; j < Tkp; j++)
        for (int64_t d = 0; d < HD; d++) Vp[j * HD + d] = j < Tk ? vh[j * ld + d] : 0.0f;
}

/* The lanes forward: transpose every head's keys into the shared Kt, then
 * tasks of SL_ATT_LB query rows of one head. */
SL_ATT_AVX512 static void att_forward_lanes(float *out, float *lse, const float *q, const float *k, const float *v,
                                            int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD, float scale,
                                            int causal, float *work) {
    const int64_t ld = NH * HD, Tkp = att_pad16(Tk);
    const int64_t nqb = (Tq + SL_ATT_LB - 1) / SL_ATT_LB, ntask = B * NH * nqb;
    const size_t tstride = att_thread_floats(HD);
    float *Kt_all = work + (size_t)att_slots() * tstride; /* [B*NH, Tkp/16, HD, 16] */
    float *Vp_all = Kt_all + B * NH * HD * Tkp;         /* [B*NH, Tkp, HD] */
#pragma omp parallel num_threads(att_threads()) if (att_worth_threads(B, Tq, Tk, NH, HD))
    {
        float *ws = work + (size_t)omp_get_thread_num() * tstride;
        float *Qt = ws, *Ot = Qt + HD * SL_ATT_L; /* [HD,16] each */
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < B * NH; bh++) {
            const int64_t off = (bh / NH) * Tk * ld + (bh % NH) * HD;
            att_lanes_pack_head(Kt_all + bh * HD * Tkp, Vp_all + bh * Tkp * HD, k + off, v + off, ld, Tk, HD);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntask; task++) {
            const int64_t bh = task / nqb, qb = task % nqb, b = bh / NH, h = bh % NH;
            const int64_t q0 = qb * SL_ATT_LB, q1 = att_min(q0 + SL_ATT_LB, Tq);
            const int64_t off = b * Tq * ld + h * HD;
            for (int64_t i0 = q0; i0 < q1; i0 += SL_ATT_L)
                att_lanes_rows(out + off, lse + bh * Tq, q + off, Kt_all + bh * HD * Tkp, Vp_all + bh * Tkp * HD, ld,
                               Tk, i0, att_min(SL_ATT_L, q1 - i0), HD, scale, causal, Qt, Ot);
        }
    }
}
#endif

/* The row kernel (AVX2 / scalar, and the fallback): see the file comment. */
static void att_forward_rows(float *out, float *lse, const float *q, const float *k, const float *v,
                             int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD,
                             float scale, int causal, float *work) {
    const int64_t ld = NH * HD;
    const int64_t nqb = (Tq + SL_ATT_BQ - 1) / SL_ATT_BQ;
    const int64_t ntask = B * NH * nqb;
    const size_t tstride = att_thread_floats(HD);
#pragma omp parallel num_threads(att_threads()) if (att_worth_threads(B, Tq, Tk, NH, HD))
    {
        float *ws = work + (size_t)omp_get_thread_num() * tstride;
        float *Kt = ws;                      /* [HD,BK] */
        float *s = Kt + 2 * HD * SL_ATT_BK;  /* [RG,BK] scores, then probabilities */
        float *m = s + 2 * SL_ATT_RG * SL_ATT_BK; /* [BQ] running max */
        float *l = m + SL_ATT_BQ;            /* [BQ] running sum */
        float *dummy = l + SL_ATT_BQ;        /* [RG,HD] */
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntask; task++) {
            const int64_t bh = task / nqb, qb = task % nqb;
            const int64_t b = bh / NH, h = bh % NH;
            const int64_t q0 = qb * SL_ATT_BQ, q1 = att_min(q0 + SL_ATT_BQ, Tq);
            const float *qh = q + b * Tq * ld + h * HD;
            const float *kh = k + b * Tk * ld + h * HD;
            const float *vh = v + b * Tk * ld + h * HD;
            float *oh = out + b * Tq * ld + h * HD;
            for (int64_t i = q0; i < q1; i++) {
                m[i - q0] = -INFINITY;
                l[i - q0] = 0.0f;
                memset(oh + i * ld, 0, (size_t)HD * sizeof(float));
            }
            const int64_t kend = causal ? att_min(Tk, q1) : Tk;
            for (int64_t k0 = 0; k0 < kend; k0 += SL_ATT_BK) {
                const int64_t nk = att_min(SL_ATT_BK, Tk - k0);
                att_pack_t(Kt, kh + k0 * ld, ld, nk, HD);
                for (int64_t i0 = q0; i0 < q1; i0 += SL_ATT_RG) {
                    const int64_t ilast = att_min(i0 + SL_ATT_RG, q1) - 1;
                    if (causal && ilast + 1 - k0 <= 0) continue; /* whole group masked */
                    const float *xs[SL_ATT_RG]; /* rows past q1 repeat the last one */
                    for (int64_t t = 0; t < SL_ATT_RG; t++) xs[t] = qh + att_min(i0 + t, ilast) * ld;
                    att_rows_dot_t4(s, xs, Kt, HD, scale);
                    float *ys[SL_ATT_RG], corr[SL_ATT_RG];
                    int64_t nvmax = 0;
                    for (int64_t t = 0; t < SL_ATT_RG; t++) {
                        const int64_t i = i0 + t;
                        float *si = s + t * SL_ATT_BK;
                        const int64_t nv = i > ilast ? 0 : (causal ? att_min(nk, i + 1 - k0) : nk);
                        ys[t] = i > ilast ? dummy + t * HD : oh + i * ld;
                        corr[t] = 1.0f;
                        if (nv > 0) {
                            const float mx = att_max_row(si, nv, m[i - q0]);
                            corr[t] = m[i - q0] == -INFINITY ? 0.0f : sl_nn_expf(m[i - q0] - mx);
                            const float sum = sl_nn_exp_row(si, nv, mx);
                            m[i - q0] = mx;
                            l[i - q0] = l[i - q0] * corr[t] + sum;
                        }
                        for (int64_t j = nv > 0 ? nv : 0; j < nk; j++) si[j] = 0.0f;
                        if (nv > nvmax) nvmax = nv;
                    }
                    att_rows_axpy_rows4(ys, corr, s, vh + k0 * ld, ld, nvmax, HD);
                }
            }
            for (int64_t i = q0; i < q1; i++) {
                const float inv = 1.0f / l[i - q0];
                float *o = oh + i * ld;
                for (int64_t d = 0; d < HD; d++) o[d] *= inv;
                lse[(b * NH + h) * Tq + i] = m[i - q0] + logf(l[i - q0]);
            }
        }
    }
}

/* Per-thread slots (rows kernel, backward, lanes scratch), then the lanes
 * kernel's shared transposed keys; the _ref twins need 2*Tk. */
size_t sl_attention_workspace(int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD) {
    (void)Tq;
    const size_t fast = (size_t)att_slots() * att_thread_floats(HD) + att_lanes_shared_floats(B, Tk, NH, HD);
    const size_t ref = (size_t)(2 * Tk);
    return fast > ref ? fast : ref;
}

void sl_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD,
                          float scale, int causal, float *work, const SlKernels *kern) {
#if SL_ATT_X86
    if (sl_kernels_attention(kern) == SL_ATT_KERNEL_LANES) {
        att_forward_lanes(out, lse, q, k, v, B, Tq, Tk, NH, HD, scale, causal, work);
        return;
    }
#endif
    att_forward_rows(out, lse, q, k, v, B, Tq, Tk, NH, HD, scale, causal, work);
}

/* For query row i against the packed key block (Kt, Vt): probabilities p,
 * and ds = p * (dO.v - D). Returns the number of valid keys. */
static int64_t att_row_grad(float *p, float *ds, const float *qi, const float *doi, float Di,
                            float lsei, const float *Kt, const float *Vt, int64_t nv, int64_t HD,
                            float scale) {
    att_row_dot_t(p, qi, Kt, HD, scale);
    att_row_dot_t(ds, doi, Vt, HD, 1.0f);
    sl_nn_exp_row(p, nv, lsei);
#pragma omp simd
    for (int64_t j = 0; j < nv; j++) ds[j] = p[j] * (ds[j] - Di);
    return nv;
}

static float att_dot(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

void sl_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                           const float *q, const float *k, const float *v, const float *out,
                           const float *lse, int64_t B, int64_t Tq, int64_t Tk, int64_t NH,
                           int64_t HD, float scale, int causal, float *work) {
    const int64_t ld = NH * HD;
    const size_t tstride = att_thread_floats(HD);
    const int64_t nkb = (Tk + SL_ATT_BK - 1) / SL_ATT_BK;
    const int64_t nqb = (Tq + SL_ATT_BQ - 1) / SL_ATT_BQ;
    const int nt = att_threads();
    /* One pass when whole heads spread evenly over the threads: a task then
     * owns dQ, dK, dV of its head and the scores are computed once, not twice. */
    const int fused = dq && (dk || dv) && (B * NH) % nt == 0;
#pragma omp parallel num_threads(nt) if (att_worth_threads(B, Tq, Tk, NH, HD))
    {
        float *ws = work + (size_t)omp_get_thread_num() * tstride;
        float *Kt = ws, *Vt = Kt + HD * SL_ATT_BK;  /* [HD,BK] each */
        float *p = Vt + HD * SL_ATT_BK;             /* [RG,BK] */
        float *ds = p + SL_ATT_RG * SL_ATT_BK;      /* [RG,BK] */
        float *dummy = ds + SL_ATT_RG * SL_ATT_BK + 2 * SL_ATT_BQ; /* [RG,HD] */
        /* pass 1: dK, dV (and dQ when fused); task = one key block of one (b,h),
         * or when fused all key blocks of one (b,h), which then owns its dQ too */
        if (dk || dv) {
            const int64_t ntask = fused ? B * NH : B * NH * nkb;
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < ntask; task++) {
                const int64_t bh = fused ? task : task / nkb;
                const int64_t kb0 = fused ? 0 : task % nkb, kb1 = fused ? nkb : kb0 + 1;
                const int64_t b = bh / NH, h = bh % NH;
                for (int64_t kb = kb0; kb < kb1; kb++) {
                    const int64_t k0 = kb * SL_ATT_BK, nk = att_min(SL_ATT_BK, Tk - k0);
                    const int64_t qoff = b * Tq * ld + h * HD, koff = (b * Tk + k0) * ld + h * HD;
                    att_pack_t(Kt, k + koff, ld, nk, HD);
                    att_pack_t(Vt, v + koff, ld, nk, HD);
                    /* query rows in groups of RG; p/ds rows of a group are zero past
                     * each row's last valid key so the group update can use nvmax */
                    for (int64_t i0 = causal ? k0 : 0; i0 < Tq; i0 += SL_ATT_RG) {
                        const float *qs[SL_ATT_RG], *dos[SL_ATT_RG];
                        int64_t nvmax = 0;
                        for (int64_t t = 0; t < SL_ATT_RG; t++) {
                            const int64_t i = i0 + t < Tq ? i0 + t : i0;
                            qs[t] = q + qoff + i * ld;
                            dos[t] = dout + qoff + i * ld;
                        }
                        att_rows_dot_t4(p, qs, Kt, HD, scale);  /* scores */
                        att_rows_dot_t4(ds, dos, Vt, HD, 1.0f); /* dP = dO V^T */
                        for (int64_t t = 0; t < SL_ATT_RG; t++) {
                            float *pt = p + t * SL_ATT_BK, *dst = ds + t * SL_ATT_BK;
                            const int64_t i = i0 + t;
                            int64_t nv = i < Tq ? (causal ? att_min(nk, i + 1 - k0) : nk) : 0;
                            if (nv < 0) nv = 0;
                            if (nv > 0) {
                                const float Di = att_dot(dos[t], out + qoff + i * ld, HD);
                                sl_nn_exp_row(pt, nv, lse[bh * Tq + i]);
#pragma omp simd
                                for (int64_t j = 0; j < nv; j++) dst[j] = pt[j] * (dst[j] - Di) * scale;
                            }
                            for (int64_t j = nv; j < nk; j++) pt[j] = dst[j] = 0.0f;
                            if (nv > nvmax) nvmax = nv;
                        }
                        if (fused) {
                            float *ys[SL_ATT_RG];
                            const float one[SL_ATT_RG] = {1.0f, 1.0f, 1.0f, 1.0f};
                            for (int64_t t = 0; t < SL_ATT_RG; t++)
                                ys[t] = i0 + t < Tq ? dq + qoff + (i0 + t) * ld : dummy + t * HD;
                            att_rows_axpy_rows4(ys, one, ds, k + koff, ld, nvmax, HD);
                        }
                        if (dv) att_rows_add_outer_rg(dv + koff, ld, p, dos, nvmax, HD);
                        if (dk) att_rows_add_outer_rg(dk + koff, ld, ds, qs, nvmax, HD);
                    }
                }
            }
        }
        /* pass 2: dQ; task = one query block of one (b,h) */
        if (dq && !fused) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < B * NH * nqb; task++) {
                const int64_t bh = task / nqb, qb = task % nqb;
                const int64_t b = bh / NH, h = bh % NH;
                const int64_t q0 = qb * SL_ATT_BQ, q1 = att_min(q0 + SL_ATT_BQ, Tq);
                const int64_t qoff = b * Tq * ld + h * HD, kbase = b * Tk * ld + h * HD;
                const int64_t kend = causal ? att_min(Tk, q1) : Tk;
                for (int64_t k0 = 0; k0 < kend; k0 += SL_ATT_BK) {
                    const int64_t nk = att_min(SL_ATT_BK, Tk - k0);
                    att_pack_t(Kt, k + kbase + k0 * ld, ld, nk, HD);
                    att_pack_t(Vt, v + kbase + k0 * ld, ld, nk, HD);
                    for (int64_t i = q0; i < q1; i++) {
                        const int64_t nv = causal ? att_min(nk, i + 1 - k0) : nk;
                        if (nv <= 0) continue;
                        const float *qi = q + qoff + i * ld, *doi = dout + qoff + i * ld;
                        const float Di = att_dot(doi, out + qoff + i * ld, HD);
                        att_row_grad(p, ds, qi, doi, Di, lse[bh * Tq + i], Kt, Vt, nv, HD, scale);
                        for (int64_t j = 0; j < nv; j++) ds[j] *= scale;
                        att_row_axpy_rows(dq + qoff + i * ld, 1.0f, ds, k + kbase + k0 * ld, ld, nv, HD);
                    }
                }
            }
        }
    }
}

/* ---- reference: one query row at a time, double accumulators ---- */

/* p[0..nv) = softmax of the scaled scores of row i (as double-exact as floats allow);
 * returns the log-sum-exp. */
static double att_ref_probs(float *p, const float *qi, const float *kh, int64_t ld, int64_t nv,
                            int64_t HD, float scale) {
    double mx = -INFINITY;
    for (int64_t j = 0; j < nv; j++) {
        double s = 0.0;
        for (int64_t d = 0; d < HD; d++) s += (double)qi[d] * kh[j * ld + d];
        s *= scale;
        p[j] = (float)s;
        if (s > mx) mx = s;
    }
    double sum = 0.0;
    for (int64_t j = 0; j < nv; j++) {
        double s = 0.0;
        for (int64_t d = 0; d < HD; d++) s += (double)qi[d] * kh[j * ld + d];
        sum += exp(s * scale - mx);
    }
    for (int64_t j = 0; j < nv; j++) {
        double s = 0.0;
        for (int64_t d = 0; d < HD; d++) s += (double)qi[d] * kh[j * ld + d];
        p[j] = (float)(exp(s * scale - mx) / sum);
    }
    return mx + log(sum);
}

void sl_attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                              int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD,
                              float scale, int causal, float *work) {
    const int64_t ld = NH * HD;
    float *p = work; /* [Tk] */
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t i = 0; i < Tq; i++) {
                const int64_t nv = causal ? att_min(Tk, i + 1) : Tk;
                const float *qi = q + (b * Tq + i) * ld + h * HD;
                const float *kh = k + b * Tk * ld + h * HD, *vh = v + b * Tk * ld + h * HD;
                lse[(b * NH + h) * Tq + i] = (float)att_ref_probs(p, qi, kh, ld, nv, HD, scale);
                float *o = out + (b * Tq + i) * ld + h * HD;
                for (int64_t d = 0; d < HD; d++) {
                    double acc = 0.0;
                    for (int64_t j = 0; j < nv; j++) acc += (double)p[j] * vh[j * ld + d];
                    o[d] = (float)acc;
                }
            }
}

void sl_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                               const float *q, const float *k, const float *v, const float *out,
                               const float *lse, int64_t B, int64_t Tq, int64_t Tk, int64_t NH,
                               int64_t HD, float scale, int causal, float *work) {
    (void)out; (void)lse; /* the reference recomputes the softmax itself */
    const int64_t ld = NH * HD;
    float *p = work, *dp = work + Tk; /* [Tk] each */
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t i = 0; i < Tq; i++) {
                const int64_t nv = causal ? att_min(Tk, i + 1) : Tk;
                const int64_t qo = (b * Tq + i) * ld + h * HD;
                const float *kh = k + b * Tk * ld + h * HD, *vh = v + b * Tk * ld + h * HD;
                att_ref_probs(p, q + qo, kh, ld, nv, HD, scale);
                double D = 0.0; /* sum_j p_j dp_j = dO . O */
                for (int64_t j = 0; j < nv; j++) {
                    double s = 0.0;
                    for (int64_t d = 0; d < HD; d++) s += (double)dout[qo + d] * vh[j * ld + d];
                    dp[j] = (float)s;
                    D += p[j] * s;
                }
                for (int64_t j = 0; j < nv; j++) {
                    const double dsj = (double)p[j] * ((double)dp[j] - D) * scale;
                    for (int64_t d = 0; d < HD; d++) {
                        const int64_t ko = (b * Tk + j) * ld + h * HD + d;
                        if (dq) dq[qo + d] += (float)(dsj * kh[j * ld + d]);
                        if (dk) dk[ko] += (float)(dsj * q[qo + d]);
                        if (dv) dv[ko] += (float)((double)p[j] * dout[qo + d]);
                    }
                }
            }
}
