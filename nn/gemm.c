/* gemm.c - deterministic tiled SGEMM: an AVX-512 kernel of our own, OpenBLAS
 * (single-threaded per tile) as the portable fallback, and the plain reference
 * twin; see gemm.h. sl_sgemm and sl_gemm_op share one driver (gemm_run); an
 * operand is an SlGemmOperand throughout (fp32, binary16, or gathered).
 *
 * Tiles: M is cut into ceil(M/256) near-equal parts rounded up to the
 * micro-kernel's 12 rows, N into ceil(N/512) parts rounded up to 32 columns;
 * a product worth threading (>= SL_GEMM_PAR_FLOPS) gets an even number of
 * tiles, so two threads share the work evenly. All of it from (M, N) alone.
 * A product with N < 96, M >= 96 and A transposed is computed as
 * C^T = op(B)^T op(A)^T with the micro-kernel storing its blocks transposed
 * (the wide side becomes N; a gathered B then fills the A panels). Tiles of
 * at most 72 rows read an fp32 op(B) in place when it is stored untransposed
 * (each panel would be used too few times to repay the copy); binary16 and
 * gathered B are always packed. The arithmetic is the same either way.
 *
 * AVX-512 tile: for each block of 256 along K, op(A)'s tile rows are packed
 * into panels of 12 rows ([kc,12] each); then op(B)'s tile columns are packed
 * one panel of 32 ([kc,32], the one the micro-kernel keeps in L1) at a time,
 * each just before the sweep over the A panels that uses it. The packers widen
 * binary16 with VCVTPH2PS (exact) or call the gather callback, so every
 * operand format reaches the micro-kernel as the same fp32 numbers. The
 * micro-kernel holds a 12x32 block of C in 24 zmm registers and adds alpha * acc
 * into C (beta * C on the first K block, C itself after); when C's rows are a
 * multiple of 1024 floats apart (conv outputs) the sums between K blocks go
 * through a compact per-thread [mb, nb] buffer instead of C (those rows would
 * share cache sets). An element's bits therefore depend only on the K blocking:
 * not on the tile plan, the format of the operands or the thread count.
 * Each thread packs into its own buffer, allocated on its first tile (see thread_pack).
 *
 * OpenBLAS tile: one cblas_sgemm per tile on the operands in place; binary16
 * operands and gathers are first widened / gathered (the tile's rows of op(A),
 * its [K, nb] block of op(B)) into a per-thread scratch that grows but is never
 * freed before the thread exits (thread_scratch), so the call, and its bits, are
 * those of fp32 operands in the same layout. A gathered op(B) is untransposed:
 * OpenBLAS may sum it in another order than the same B stored transposed (its
 * SkylakeX small-matrix kernels do), so its bits match sl_sgemm on op(B) stored
 * untransposed, not on a transposed B.
 *
 * Dimension letters: M, N, K as gemm.h; mb/nb a tile, kc a K block,
 * mr/nr a micro-tile (<= 12 x 32).
 */
#include "nn/gemm.h"

#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pool.h"
#include "core/tensor.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "nn/avx512_transpose.h"
#define SL_GEMM_HAVE_AVX512 1
#define SL_AVX512 __attribute__((target("avx512f,avx2,fma"))) /* halves: VCVTPH2PS zmm is AVX512F */
#else
#define SL_GEMM_HAVE_AVX512 0
#endif

#define SL_GEMM_MR 12
#define SL_GEMM_NR 32
#define SL_GEMM_KC 256
#define SL_GEMM_TM 256                /* target tile rows (before rounding to MR) */
#define SL_GEMM_TN 512                /* target tile columns */
#define SL_GEMM_BM (SL_GEMM_TM + SL_GEMM_MR) /* most rows a tile can have */
#ifndef SL_GEMM_PAR_FLOPS
#define SL_GEMM_PAR_FLOPS 8.0e6       /* below this a product runs on one thread */
#endif
#define SL_GEMM_DIRECT_B_ROWS 72      /* tiles with at most this many rows read op(B) unpacked */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
/* Whether the AVX-512 tiles can run at all: the CPU has AVX-512F and the packing
 * buffers' thread key exists. A fact about the process, set once; the kernel a
 * product uses is its caller's SlKernels. */
static int g_avx512_ok = 0;
/* Each thread that runs AVX-512 tiles packs into its own buffer (A panel block +
 * B panel block), allocated on its first tile and freed when the thread exits:
 * pool workers keep theirs for the process, and callers on different
 * pthreads (tests/test_dist.c runs two trainers at once) never share one. */
static pthread_key_t g_pack_key;
static pthread_key_t g_scratch_key; /* BLAS tiles' widening scratch, see thread_scratch */
static void scratch_free(void *s);

/* Per thread: the A panels [BM, KC], one B panel [KC, NR] and a tile's partial sums [BM, TN] (tile_avx512). */
static size_t pack_floats(void) {
    return (size_t)SL_GEMM_BM * SL_GEMM_KC + (size_t)SL_GEMM_KC * SL_GEMM_NR + (size_t)SL_GEMM_BM * SL_GEMM_TN;
}

/* The calling thread's packing buffer, or NULL when it cannot be allocated. */
static float *thread_pack(void) {
    float *p = pthread_getspecific(g_pack_key);
    if (p) return p;
    void *mem = NULL;
    if (posix_memalign(&mem, 64, pack_floats() * sizeof(float)) != 0) return NULL;
    if (pthread_setspecific(g_pack_key, mem) != 0) {
        free(mem);
        return NULL;
    }
    return mem;
}

static void init_once(void) {
    openblas_set_num_threads(1);
#if SL_GEMM_HAVE_AVX512
    __builtin_cpu_init();
    g_avx512_ok = __builtin_cpu_supports("avx512f") && pthread_key_create(&g_pack_key, free) == 0;
#endif
    if (pthread_key_create(&g_scratch_key, scratch_free) != 0) abort();
}
void sl_gemm_init(void) { pthread_once(&g_once, init_once); }

/* ------------------------------------------------------------ tiling -- */

typedef struct GemmTiles {
    int64_t bm, bn; /* tile size */
    int64_t tm, tn; /* tiles along M, N */
} GemmTiles;

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t round_up(int64_t a, int64_t m) { return cdiv(a, m) * m; }

static GemmTiles tiles_for(int64_t M, int64_t N, int64_t tm, int64_t tn) {
    GemmTiles t;
    t.bm = round_up(cdiv(M, tm), SL_GEMM_MR);
    t.bn = round_up(cdiv(N, tn), SL_GEMM_NR);
    t.tm = cdiv(M, t.bm);
    t.tn = cdiv(N, t.bn);
    return t;
}

/* The tile plan: a function of the shape only (never of the thread count). */
static GemmTiles gemm_plan(int64_t M, int64_t N, int64_t K) {
    GemmTiles t = tiles_for(M, N, cdiv(M, SL_GEMM_TM), cdiv(N, SL_GEMM_TN));
    if (2.0 * (double)M * (double)N * (double)K < SL_GEMM_PAR_FLOPS || (t.tm * t.tn) % 2 == 0) return t;
    /* odd tile count: split one more time along the side that keeps tiles fuller */
    const GemmTiles a = tiles_for(M, N, t.tm + 1, t.tn), b = tiles_for(M, N, t.tm, t.tn + 1);
    const int a_ok = (a.tm * a.tn) % 2 == 0 && a.bm >= 2 * SL_GEMM_MR;
    const int b_ok = (b.tm * b.tn) % 2 == 0 && b.bn >= SL_GEMM_NR;
    if (a_ok && (!b_ok || a.bm * 2 >= b.bn)) return a;
    if (b_ok) return b;
    return t;
}

/* ------------------------------------------------------ AVX-512 tile -- */
#if SL_GEMM_HAVE_AVX512

/* ---- operand loads: op(X)(r, c) lives at element offset trans ? c*ld + r : r*ld + c of X->p ---- */

static int64_t op_off(const SlGemmOperand *x, int64_t r, int64_t c) { return x->trans ? c * x->ld + r : r * x->ld + c; }

/* n (<= 16) consecutive stored elements from element offset off, widened to fp32; lanes past n are 0. */
SL_AVX512 static inline __attribute__((always_inline)) __m512 ld16(const void *base, int64_t off, int64_t n, int fmt) {
    if (n <= 0) return _mm512_setzero_ps();
    if (fmt == SL_GEMM_F32) {
        const float *p = (const float *)base + off;
        return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
    }
    const uint16_t *h = (const uint16_t *)base + off;
    if (n >= 16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
    if (n == 12) /* an A panel's row: 8 + 4 halves, never reading past them */
        return _mm512_cvtph_ps(_mm256_set_m128i(_mm_loadl_epi64((const __m128i *)(h + 8)),
                                                _mm_loadu_si128((const __m128i *)h)));
    uint16_t t[16] = {0};
    memcpy(t, h, (size_t)n * sizeof(uint16_t));
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)t));
}

/* One stored element, widened. */
SL_AVX512 static inline __attribute__((always_inline)) float ld1(const void *base, int64_t off, int fmt) {
    if (fmt == SL_GEMM_F32) return ((const float *)base)[off];
    return _mm512_cvtss_f32(_mm512_cvtph_ps(_mm256_set1_epi16((short)((const uint16_t *)base)[off])));
}

/* out[k*12 + i] = stored[off + i*ldi + k] for i < 12, k < 16 (one A panel's 16 k steps). */
SL_AVX512 static void transpose12x16(float *out, const void *base, int64_t off, int64_t ldi, int fmt) {
    __m512 r[16];
    for (int i = 0; i < 12; i++) r[i] = ld16(base, off + i * ldi, 16, fmt);
    for (int i = 12; i < 16; i++) r[i] = _mm512_setzero_ps();
    sl_transpose16_regs(r);
    for (int k = 0; k < 16; k++) _mm512_mask_storeu_ps(out + k * 12, (__mmask16)0x0FFF, r[k]);
}

/* out[k*ldo + j] = stored[off + j*ldi + k] for j, k < 16. */
SL_AVX512 static void transpose16(float *out, int64_t ldo, const void *base, int64_t off, int64_t ldi, int fmt) {
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = ld16(base, off + i * ldi, 16, fmt);
    sl_transpose16_regs(r);
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(out + i * ldo, r[i]); /* r[i] = column i of the block */
}

/* Zero columns [n, w) of rows [0, kc) of a row-major panel of width w. */
static void zero_cols(float *p, int64_t w, int64_t n, int64_t kc) {
    if (n >= w) return;
    for (int64_t k = 0; k < kc; k++) memset(p + k * w + n, 0, (size_t)(w - n) * sizeof(float));
}

/* ceil(n/w) panels [kc,w] (w = MR or NR) of a gathered operand's columns [c0, c0+n) and
 * rows [k0, k0+kc): the gather writes each panel's first columns (ldd = w), the rest are zeroed. */
static void gather_panels(float *p, const SlGemmOperand *G, int64_t w, int64_t c0, int64_t n, int64_t k0,
                          int64_t kc) {
    for (int64_t j0 = 0; j0 < n; j0 += w) {
        const int64_t nc = n - j0 < w ? n - j0 : w;
        float *dst = p + (j0 / w) * kc * w;
        G->gather(G->ctx, dst, w, k0, kc, c0 + j0, nc);
        zero_cols(dst, w, nc, kc);
    }
}

/* pa: ceil(mb/MR) panels [kc,MR] of op(A)[r0..r0+mb, k0..k0+kc), rows past mb zero.
 * A gathered operand here is the B of a swapped product: op(A) = G^T, so panel
 * (i, k) = G(k, i) and the gather writes the panel directly (ldd = MR). */
SL_AVX512 static void pack_a(float *pa, const SlGemmOperand *A, int64_t r0, int64_t mb, int64_t k0, int64_t kc) {
    const int fmt = A->fmt;
    if (fmt == SL_GEMM_GATHER) {
        gather_panels(pa, A, SL_GEMM_MR, r0, mb, k0, kc);
        return;
    }
    if (A->trans) { /* op(A)(i,k) stored at (k, i): walk each stored row once, dealing MR-chunks to the panels */
        for (int64_t k = 0; k < kc; k++)
            for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
                const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
                _mm512_mask_storeu_ps(pa + (i0 / SL_GEMM_MR) * kc * SL_GEMM_MR + k * SL_GEMM_MR, (__mmask16)0x0FFF,
                                      ld16(A->p, op_off(A, r0 + i0, k0 + k), mr, fmt));
            }
        return;
    }
    for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
        const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
        float *dst = pa + (i0 / SL_GEMM_MR) * kc * SL_GEMM_MR;
        /* op(A)(i,k) stored at (i, k): 16 k at a time through a register transpose */
        int64_t k = 0;
        if (mr == SL_GEMM_MR)
            for (; k + 16 <= kc; k += 16)
                transpose12x16(dst + k * SL_GEMM_MR, A->p, op_off(A, r0 + i0, k0 + k), A->ld, fmt);
        for (int64_t i = 0; i < mr; i++) {
            const int64_t off = op_off(A, r0 + i0 + i, k0);
            for (int64_t kk = k; kk < kc; kk++) dst[kk * SL_GEMM_MR + i] = ld1(A->p, off + kk, fmt);
        }
        for (int64_t i = mr; i < SL_GEMM_MR; i++)
            for (int64_t kk = k; kk < kc; kk++) dst[kk * SL_GEMM_MR + i] = 0.0f;
    }
}

/* pb: ceil(nb/NR) panels [kc,NR] of op(B)[k0..k0+kc, c0..c0+nb), columns past nb zero
 * (a gather writes the first nr columns of each panel with ldd = NR; the rest are zeroed here). */
SL_AVX512 static void pack_b(float *pb, const SlGemmOperand *B, int64_t c0, int64_t nb, int64_t k0, int64_t kc) {
    const int fmt = B->fmt;
    if (fmt == SL_GEMM_GATHER) {
        gather_panels(pb, B, SL_GEMM_NR, c0, nb, k0, kc);
        return;
    }
    if (!B->trans) { /* op(B)(k,j) stored at (k, j): walk each stored row once, dealing NR-chunks to the panels */
        for (int64_t k = 0; k < kc; k++) {
            const int64_t off = op_off(B, k0 + k, c0);
            for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) {
                const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
                float *d = pb + (j0 / SL_GEMM_NR) * kc * SL_GEMM_NR + k * SL_GEMM_NR;
                _mm512_storeu_ps(d, ld16(B->p, off + j0, nr, fmt));
                _mm512_storeu_ps(d + 16, ld16(B->p, off + j0 + 16, nr - 16, fmt));
            }
        }
        return;
    }
    for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) { /* op(B)(k,j) stored at (j, k): transpose 16x16 blocks */
        const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
        float *dst = pb + (j0 / SL_GEMM_NR) * kc * SL_GEMM_NR;
        int64_t k = 0;
        if (nr == SL_GEMM_NR)
            for (; k + 16 <= kc; k += 16) {
                transpose16(dst + k * SL_GEMM_NR, SL_GEMM_NR, B->p, op_off(B, k0 + k, c0 + j0), B->ld, fmt);
                transpose16(dst + k * SL_GEMM_NR + 16, SL_GEMM_NR, B->p, op_off(B, k0 + k, c0 + j0 + 16), B->ld, fmt);
            }
        for (; k < kc; k++) {
            float *d = dst + k * SL_GEMM_NR;
            int64_t j = 0;
            for (; j < nr; j++) d[j] = ld1(B->p, op_off(B, k0 + k, c0 + j0 + j), fmt);
            for (; j < SL_GEMM_NR; j++) d[j] = 0.0f;
        }
    }
}

/* c[0..mr, 0..nr) (row stride ldc) = alpha * pa^T pb + beta * c (c not read when beta == 0).
 * pa [kc,MR] packed; pb [kc,NR] with row stride bs (NR when packed). With trans_c the block is stored
 * transposed: element (i, j) goes to c[j*ldc + i] (see the swap in sl_sgemm). Without it, the beta
 * term reads cin (row stride ldi) instead of c: a tile's partial sums can live in a compact
 * buffer between K blocks (same numbers through memory, same bits). */
SL_AVX512 static void ukr_12x32(int64_t kc, const float *pa, const float *pb, int64_t bs, float *c, int64_t ldc,
                                int64_t mr, int64_t nr, float alpha, float beta, int trans_c, const float *cin,
                                int64_t ldi) {
#define SL_Z(i) __m512 c##i##_0 = _mm512_setzero_ps(), c##i##_1 = _mm512_setzero_ps();
    SL_Z(0) SL_Z(1) SL_Z(2) SL_Z(3) SL_Z(4) SL_Z(5) SL_Z(6) SL_Z(7) SL_Z(8) SL_Z(9) SL_Z(10) SL_Z(11)
#undef SL_Z
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_loadu_ps(pb), b1 = _mm512_loadu_ps(pb + 16);
        __m512 av;
#define SL_R(i)                                  \
    av = _mm512_set1_ps(pa[i]);                  \
    c##i##_0 = _mm512_fmadd_ps(av, b0, c##i##_0); \
    c##i##_1 = _mm512_fmadd_ps(av, b1, c##i##_1);
        SL_R(0) SL_R(1) SL_R(2) SL_R(3) SL_R(4) SL_R(5) SL_R(6) SL_R(7) SL_R(8) SL_R(9) SL_R(10) SL_R(11)
#undef SL_R
        pa += SL_GEMM_MR;
        pb += bs;
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (trans_c) { /* 16x16 register transposes: row j of C gets column j of the block (mr lanes) */
        const __mmask16 mm = (__mmask16)((1u << mr) - 1u);
        for (int h = 0; h < 2; h++) {
            __m512 r[16];
#define SL_T(i) r[i] = _mm512_mul_ps(va, h ? c##i##_1 : c##i##_0);
            SL_T(0) SL_T(1) SL_T(2) SL_T(3) SL_T(4) SL_T(5) SL_T(6) SL_T(7) SL_T(8) SL_T(9) SL_T(10) SL_T(11)
#undef SL_T
            r[12] = r[13] = r[14] = r[15] = _mm512_setzero_ps();
            sl_transpose16_regs(r);
            for (int64_t jj = 0; jj < 16 && h * 16 + jj < nr; jj++) {
                float *cj = c + (h * 16 + jj) * ldc;
                __m512 v = r[jj];
                if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mm, cj), v);
                _mm512_mask_storeu_ps(cj, mm, v);
            }
        }
        return;
    }
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u) : 0;
#define SL_S(i)                                                                     \
    if (i < mr) {                                                                   \
        float *ci = c + (i) * ldc;                                                  \
        const float *ii = cin + (i) * ldi;                                          \
        __m512 r0 = _mm512_mul_ps(va, c##i##_0), r1 = _mm512_mul_ps(va, c##i##_1);  \
        if (beta != 0.0f) {                                                         \
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ii), r0);            \
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ii + 16), r1);       \
        }                                                                           \
        _mm512_mask_storeu_ps(ci, m0, r0);                                          \
        _mm512_mask_storeu_ps(ci + 16, m1, r1);                                     \
    }
    SL_S(0) SL_S(1) SL_S(2) SL_S(3) SL_S(4) SL_S(5) SL_S(6) SL_S(7) SL_S(8) SL_S(9) SL_S(10) SL_S(11)
#undef SL_S
}

/* The same products as tile_avx512 without a packing buffer (only if it could
 * not be allocated): one A panel and one B panel at a time on the stack, so
 * A is re-packed per B panel. Each micro-tile sees the same packed numbers in
 * the same order, so the result is the same bits, only slower. */
SL_AVX512 static void tile_avx512_lowmem(const SlGemmOperand *A, const SlGemmOperand *B, int64_t m0, int64_t n0,
                                         int64_t mb, int64_t nb, int64_t K, float alpha, float beta, float *c,
                                         int64_t ldc, int tc) {
    float pa[SL_GEMM_KC * SL_GEMM_MR] __attribute__((aligned(64)));
    float pb[SL_GEMM_KC * SL_GEMM_NR] __attribute__((aligned(64)));
    for (int64_t k0 = 0; k0 < K; k0 += SL_GEMM_KC) {
        const int64_t kc = K - k0 < SL_GEMM_KC ? K - k0 : SL_GEMM_KC;
        const float bk = k0 == 0 ? beta : 1.0f;
        for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) {
            const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
            pack_b(pb, B, n0 + j0, nr, k0, kc);
            for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
                const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
                pack_a(pa, A, m0 + i0, mr, k0, kc);
                float *cb = tc ? c + j0 * ldc + i0 : c + i0 * ldc + j0;
                ukr_12x32(kc, pa, pb, SL_GEMM_NR, cb, ldc, mr, nr, alpha, bk, tc, cb, ldc);
            }
        }
    }
}

/* One tile: rows m0..m0+mb of op(A) times columns n0..n0+nb of op(B) into c, the tile's corner
 * (tc: C is stored transposed, element (i,j) at c[j*ldc + i]); pa/pb the calling thread's
 * packing buffer (NULL: low-memory path). */
SL_AVX512 static void tile_avx512(const SlGemmOperand *A, const SlGemmOperand *B, int64_t m0, int64_t n0, int64_t mb,
                                  int64_t nb, int64_t K, float alpha, float beta, float *c, int64_t ldc, int tc,
                                  float *pa, float *pb, float *ctmp) {
    if (!pa) {
        tile_avx512_lowmem(A, B, m0, n0, mb, nb, K, alpha, beta, c, ldc, tc);
        return;
    }
    /* Few rows: each B panel feeds few micro-kernel calls, so copying it costs more
     * than it saves; stored fp32 rows of op(B) are then read in place (full panels).
     * Halves and gathered operands are always packed (same numbers, same bits). */
    const int direct = B->fmt == SL_GEMM_F32 && !B->trans && mb <= SL_GEMM_DIRECT_B_ROWS;
    /* Several K blocks and C's rows a large power of two apart (conv outputs: ldc = Ho*Wo):
     * the tile's rows of C would share cache sets and fall out of L2 between K blocks, so the
     * partial sums go to the thread's compact [mb, nb] buffer instead. */
    float *ct = !tc && K > SL_GEMM_KC && ldc % 1024 == 0 ? ctmp : NULL;
    for (int64_t k0 = 0; k0 < K; k0 += SL_GEMM_KC) {
        const int64_t kc = K - k0 < SL_GEMM_KC ? K - k0 : SL_GEMM_KC;
        const float bk = k0 == 0 ? beta : 1.0f;
        pack_a(pa, A, m0, mb, k0, kc);
        for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) {
            /* one B panel at a time, packed just before its sweep over the A panels (still in L1) */
            const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
            const float *bp = pb;
            int64_t bs = SL_GEMM_NR;
            if (direct && nr == SL_GEMM_NR) {
                bp = (const float *)B->p + op_off(B, k0, n0 + j0);
                bs = B->ld;
            } else {
                pack_b(pb, B, n0 + j0, nr, k0, kc);
            }
            for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
                const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
                float *cb = tc ? c + j0 * ldc + i0 : c + i0 * ldc + j0, *out = cb;
                const float *in = cb;
                int64_t ldi = ldc, ldo = ldc;
                if (ct) { /* partial sums in ct between K blocks: C read on the first, written on the last */
                    float *tb = ct + i0 * nb + j0;
                    if (k0 > 0) in = tb, ldi = nb;
                    if (k0 + kc < K) out = tb, ldo = nb;
                }
                ukr_12x32(kc, pa + (i0 / SL_GEMM_MR) * kc * SL_GEMM_MR, bp, bs, out, ldo, mr, nr, alpha, bk, tc, in,
                          ldi);
            }
        }
    }
}
#endif

/* -------------------------------------------------------- BLAS tile -- */

/* Each thread that runs BLAS tiles of fp16 or gathered operands widens the tile's
 * operands into its own scratch (grown when a larger tile comes, never shrunk,
 * freed when the thread exits), so no product allocates in the steady state. */
typedef struct Scratch { size_t n; float *p; } Scratch;
static void scratch_free(void *s) {
    if (s) free(((Scratch *)s)->p);
    free(s);
}

/* The calling thread's scratch of at least n floats; aborts when it cannot be had
 * (the product has no error path, and splitting K would change the bits). */
static float *thread_scratch(size_t n) {
    Scratch *s = pthread_getspecific(g_scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(g_scratch_key, s) != 0) goto fail;
    }
    if (s->n < n) {
        void *mem = NULL;
        if (posix_memalign(&mem, 64, n * sizeof(float)) != 0) goto fail;
        free(s->p);
        s->p = mem;
        s->n = n;
    }
    return s->p;
fail:
    fprintf(stderr, "nn/gemm.c: cannot allocate %zu floats of per-thread scratch for a widened GEMM tile\n", n);
    abort();
}

/* The fp32 rows [r0, r0+nr) x columns [c0, c0+nc) of the STORED matrix x (fp16), into dst [nr, nc]. */
static void widen_block(float *dst, const SlGemmOperand *x, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    const uint16_t *h = x->p;
    for (int64_t r = 0; r < nr; r++) sl_f16_to_f32(dst + r * nc, h + (r0 + r) * x->ld + c0, (size_t)nc);
}

/* Rows m0..m0+mb of op(A) times columns n0..n0+nb of op(B): one single-threaded OpenBLAS call,
 * on the operands in place (fp32) or on the tile's part of them widened / gathered into scratch
 * (same dimensions and transposes, so the same call). */
static void tile_blas(const SlGemmOperand *A, const SlGemmOperand *B, int64_t m0, int64_t n0, int64_t mb, int64_t nb,
                      int64_t K, float alpha, float beta, float *c, int64_t ldc) {
    const int ta = A->trans, tb = B->fmt == SL_GEMM_GATHER ? 0 : B->trans;
    const int wa = A->fmt != SL_GEMM_F32, wb = B->fmt != SL_GEMM_F32;
    float *s = wa || wb ? thread_scratch((size_t)((wa ? mb : 0) + (wb ? nb : 0)) * (size_t)K) : NULL;
    const float *a = (const float *)A->p + op_off(A, m0, 0), *b = (const float *)B->p + op_off(B, 0, n0);
    int64_t lda = A->ld, ldb = B->ld;
    if (wa) { /* op(A) rows m0.. : stored [M,K] rows, or stored [K,M] columns */
        if (ta) widen_block(s, A, 0, K, m0, mb);
        else widen_block(s, A, m0, mb, 0, K);
        a = s;
        lda = ta ? mb : K;
    }
    if (wb) {
        float *sb = s + (wa ? mb * K : 0);
        if (B->fmt == SL_GEMM_GATHER) B->gather(B->ctx, sb, nb, 0, K, n0, nb);
        else if (tb) widen_block(sb, B, n0, nb, 0, K);
        else widen_block(sb, B, 0, K, n0, nb);
        b = sb;
        ldb = tb ? K : nb;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)mb, (int)nb,
                (int)K, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* ------------------------------------------------------------ driver -- */

/* C = beta * C (K == 0: no product to add). */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

/* One product's tiles, for the pool: tile t's bits do not depend on the thread
 * that computes it (each thread packs into its own buffer), so the pool may hand
 * a tile to whichever thread is running (core/pool.h). */
typedef struct GemmJob {
    const SlGemmOperand *As, *Bs; /* the operands as computed (swapped or not) */
    const SlGemmOperand *A, *B;   /* as given (the OpenBLAS tiles) */
    GemmTiles tp;
    int64_t Ms, Ns, K;
    float alpha, beta;
    float *C;
    int64_t ldc;
    int swap, use_avx;
} GemmJob;

static void gemm_job_tile(void *ctx, int64_t t, int tid) {
    (void)tid;
    const GemmJob *j = ctx;
    const GemmTiles tp = j->tp;
    const int64_t m0 = (t / tp.tn) * tp.bm, n0 = (t % tp.tn) * tp.bn;
    const int64_t mb = j->Ms - m0 < tp.bm ? j->Ms - m0 : tp.bm, nb = j->Ns - n0 < tp.bn ? j->Ns - n0 : tp.bn;
    float *c = j->swap ? j->C + n0 * j->ldc + m0 : j->C + m0 * j->ldc + n0;
#if SL_GEMM_HAVE_AVX512
    if (j->use_avx) {
        float *pa = thread_pack(), *pb = pa ? pa + (size_t)SL_GEMM_BM * SL_GEMM_KC : NULL;
        tile_avx512(j->As, j->Bs, m0, n0, mb, nb, j->K, j->alpha, j->beta, c, j->ldc, j->swap, pa, pb,
                    pb ? pb + (size_t)SL_GEMM_KC * SL_GEMM_NR : NULL);
        return;
    }
#endif
    tile_blas(j->A, j->B, m0, n0, mb, nb, j->K, j->alpha, j->beta, c, j->ldc);
}

/* The product behind sl_sgemm and sl_gemm_op. */
static void gemm_run(int64_t M, int64_t N, int64_t K, float alpha, const SlGemmOperand *A, const SlGemmOperand *B,
                     float beta, float *C, int64_t ldc, const SlKernels *kern) {
    sl_gemm_init();
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    if (A->fmt == SL_GEMM_GATHER || (unsigned)A->fmt > SL_GEMM_GATHER || (unsigned)B->fmt > SL_GEMM_GATHER) {
        fprintf(stderr, "nn/gemm.c: sl_gemm_op: unsupported operand format (A %d, B %d)\n", A->fmt, B->fmt);
        abort();
    }
    const int nested = omp_get_level() > 0; /* inside a parallel region: serial, OpenBLAS */
    int use_avx = g_avx512_ok && sl_kernels_gemm(kern) == SL_GEMM_KERNEL_AVX512 && !nested, swap = 0;
    /* A skinny product (few columns: the 1280-channel convs at 4x4 and 8x8 latents)
     * would leave most of the 32-wide micro-tile empty: when A is stored transposed
     * (the conv's input gradient w^T dy) compute C^T = op(B)^T op(A)^T instead, whose
     * B (= the stored A) is then read in place, and store the blocks transposed.
     * Other skinny products: OpenBLAS (measured faster than a transposing pack). */
    if (use_avx && N < SL_GEMM_AVX_MIN_N) {
        if (A->trans && M >= SL_GEMM_AVX_MIN_N) swap = 1;
        else use_avx = 0;
    }
    SlGemmOperand As = *A, Bs = *B;
    if (swap) { /* op(A_s) = op(B)^T: the same stored matrix, the other transpose (a gather stays a gather) */
        As = *B;
        As.trans = !B->trans;
        Bs = *A;
        Bs.trans = !A->trans;
    }
    const int64_t Ms = swap ? N : M, Ns = swap ? M : N;
    const GemmTiles tp = gemm_plan(Ms, Ns, K);
    const int64_t tiles = tp.tm * tp.tn;
    const int par = tiles > 1 && !nested && 2.0 * (double)M * (double)N * (double)K >= SL_GEMM_PAR_FLOPS;
    GemmJob job = {&As, &Bs, A, B, tp, Ms, Ns, K, alpha, beta, C, ldc, swap, use_avx};
    if (par) sl_pool_for(tiles, gemm_job_tile, &job);
    else
        for (int64_t t = 0; t < tiles; t++) gemm_job_tile(&job, t, 0);
}

#ifdef SL_GEMM_PROFILE
/* Build with -DSL_GEMM_PROFILE: CPU seconds of the calling thread per product
 * shape, printed to stderr at exit (run with OMP_NUM_THREADS=1 for costs). */
#include <time.h>
typedef struct GemmProf { int64_t M, N, K; int ta, tb; long calls; double sec; } GemmProf;
static GemmProf g_prof[512];
static int g_nprof;
static double prof_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static void prof_dump(void) {
    double tot = 0;
    for (int i = 0; i < g_nprof; i++) tot += g_prof[i].sec;
    for (int i = 0; i < g_nprof; i++) {
        const GemmProf *p = &g_prof[i];
        fprintf(stderr, "gemm M%6lld N%6lld K%6lld ta%d tb%d calls %6ld  %8.4f s %5.1f%%  %6.1f GFLOP/s\n", (long long)p->M,
                (long long)p->N, (long long)p->K, p->ta, p->tb, p->calls, p->sec, 100 * p->sec / tot,
                2e-9 * (double)p->M * (double)p->N * (double)p->K * (double)p->calls / p->sec);
    }
    fprintf(stderr, "gemm total %.3f s\n", tot);
}
static void prof_add(int ta, int tb, int64_t M, int64_t N, int64_t K, double sec) {
    int i = 0;
    for (; i < g_nprof; i++)
        if (g_prof[i].M == M && g_prof[i].N == N && g_prof[i].K == K && g_prof[i].ta == ta && g_prof[i].tb == tb) break;
    if (i == g_nprof) {
        if (g_nprof == 512) return;
        if (g_nprof == 0) atexit(prof_dump);
        g_prof[g_nprof++] = (GemmProf){M, N, K, ta, tb, 0, 0.0};
    }
    g_prof[i].calls++;
    g_prof[i].sec += sec;
}
static void gemm_timed(int64_t M, int64_t N, int64_t K, float alpha, const SlGemmOperand *A, const SlGemmOperand *B,
                       float beta, float *C, int64_t ldc, const SlKernels *kern) {
    const double t0 = prof_now();
    gemm_run(M, N, K, alpha, A, B, beta, C, ldc, kern);
    if (omp_get_level() == 0) prof_add(A->trans, B->trans, M, N, K, prof_now() - t0);
}
#define SL_GEMM_RUN gemm_timed
#else
#define SL_GEMM_RUN gemm_run
#endif

void sl_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const SlKernels *kern) {
    const SlGemmOperand a = sl_gemm_f32(A, lda, trans_a), b = sl_gemm_f32(B, ldb, trans_b);
    SL_GEMM_RUN(M, N, K, alpha, &a, &b, beta, C, ldc, kern);
}

void sl_gemm_op(int64_t M, int64_t N, int64_t K, float alpha, const SlGemmOperand *A, const SlGemmOperand *B,
                float beta, float *C, int64_t ldc, const SlKernels *kern) {
    SL_GEMM_RUN(M, N, K, alpha, A, B, beta, C, ldc, kern);
}

void sl_sgemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(trans_a ? A[k * lda + i] : A[i * lda + k]) * (trans_b ? B[j * ldb + k] : B[k * ldb + j]);
            const double old = beta == 0.0f ? 0.0 : (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)((double)alpha * s + old);
        }
}
