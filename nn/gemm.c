/* gemm.c - deterministic tiled SGEMM: an AVX-512 kernel of our own, OpenBLAS
 * (single-threaded per tile) as the portable fallback, and the plain reference
 * twin; see gemm.h.
 *
 * Tiles: M is cut into ceil(M/256) near-equal parts rounded up to the
 * micro-kernel's 12 rows, N into ceil(N/512) parts rounded up to 32 columns;
 * a product worth threading (>= SL_GEMM_PAR_FLOPS) gets an even number of
 * tiles, so two threads share the work evenly. All of it from (M, N) alone.
 * A product with N < 96, M >= 96 and A transposed is computed as
 * C^T = op(B)^T op(A)^T with the micro-kernel storing its blocks transposed
 * (the wide side becomes N). Tiles of at most 72 rows read op(B) in place
 * when it is stored untransposed (each panel would be used too few times
 * to repay the copy); the arithmetic is the same either way.
 *
 * AVX-512 tile: for each block of 256 along K, op(A)'s tile rows are packed
 * into panels of 12 rows ([kc,12] each) and op(B)'s tile columns into panels of
 * 32 ([kc,32] each, the one the micro-kernel keeps in L1); the micro-kernel
 * holds a 12x32 block of C in 24 zmm registers and adds alpha * acc into C
 * (beta * C on the first K block, C itself after). Each thread packs into its
 * own buffer, allocated on its first tile (see thread_pack).
 *
 * Dimension letters: M, N, K as gemm.h; mb/nb a tile, kc a K block,
 * mr/nr a micro-tile (<= 12 x 32).
 */
#include "nn/gemm.h"

#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SL_GEMM_HAVE_AVX512 1
#define SL_AVX512 __attribute__((target("avx512f,avx2,fma")))
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
#define SL_GEMM_AVX_MIN_N 96          /* narrower products are swapped (or, narrow both ways, OpenBLAS) */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_kernel = SL_GEMM_KERNEL_BLAS;
static int g_have_avx512 = 0;
/* Each thread that runs AVX-512 tiles packs into its own buffer (A panel block +
 * B panel block), allocated on its first tile and freed when the thread exits:
 * OpenMP workers keep theirs for the process, and callers on different
 * pthreads (tests/test_dist.c runs two trainers at once) never share one. */
static pthread_key_t g_pack_key;

static size_t pack_floats(void) { return (size_t)SL_GEMM_BM * SL_GEMM_KC + (size_t)SL_GEMM_KC * SL_GEMM_TN; }

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
    g_have_avx512 = __builtin_cpu_supports("avx512f");
#endif
    if (g_have_avx512 && pthread_key_create(&g_pack_key, free) != 0) g_have_avx512 = 0;
    const char *env = getenv("SL_GEMM");
    g_kernel = g_have_avx512 && !(env && !strcmp(env, "blas")) ? SL_GEMM_KERNEL_AVX512 : SL_GEMM_KERNEL_BLAS;
}
void sl_gemm_init(void) { pthread_once(&g_once, init_once); }

int sl_gemm_kernel(void) {
    sl_gemm_init();
    return g_kernel;
}

int sl_gemm_set_kernel(int kernel) {
    sl_gemm_init();
    if (kernel == SL_GEMM_KERNEL_AVX512 && !g_have_avx512) return -1;
    if (kernel != SL_GEMM_KERNEL_AVX512 && kernel != SL_GEMM_KERNEL_BLAS) return -1;
    const int old = g_kernel;
    g_kernel = kernel;
    return old;
}

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

/* -------------------------------------------------------- BLAS tile -- */

static void tile_blas(int ta, int tb, int64_t mb, int64_t nb, int64_t K, float alpha, const float *a, int64_t lda,
                      const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)mb, (int)nb,
                (int)K, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* ------------------------------------------------------ AVX-512 tile -- */
#if SL_GEMM_HAVE_AVX512

/* In-register 16x16 transpose: r[j] lane k <- r[k] lane j. */
SL_AVX512 static inline void transpose16_regs(__m512 *r) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
    }
}

SL_AVX512 static void transpose16(float *out, int64_t ldo, const float *in, int64_t ldi) {
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(in + i * ldi);
    transpose16_regs(r);
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(out + i * ldo, r[i]); /* r[i] = column i of the block */
}

/* out[k*12 + i] = in[i*ldi + k] for i < 12, k < 16 (one A panel's 16 k steps). */
SL_AVX512 static void transpose12x16(float *out, const float *in, int64_t ldi) {
    __m512 r[16];
    for (int i = 0; i < 12; i++) r[i] = _mm512_loadu_ps(in + i * ldi);
    for (int i = 12; i < 16; i++) r[i] = _mm512_setzero_ps();
    transpose16_regs(r);
    for (int k = 0; k < 16; k++) _mm512_mask_storeu_ps(out + k * 12, (__mmask16)0x0FFF, r[k]);
}



/* pa: ceil(mb/MR) panels [kc,MR] of op(A)[0..mb, k0..k0+kc), rows past mb zero. */
SL_AVX512 static void pack_a(float *pa, int ta, const float *a, int64_t lda, int64_t mb, int64_t k0, int64_t kc) {
    if (ta) { /* op(A)(i,k) = a[k*lda + i]: walk each stored row once, dealing MR-chunks to the panels */
        for (int64_t k = 0; k < kc; k++) {
            const float *src = a + (k0 + k) * lda;
            for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
                const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
                const __mmask16 m = (__mmask16)((1u << mr) - 1u);
                _mm512_mask_storeu_ps(pa + (i0 / SL_GEMM_MR) * kc * SL_GEMM_MR + k * SL_GEMM_MR, (__mmask16)0x0FFF,
                                      _mm512_maskz_loadu_ps(m, src + i0));
            }
        }
        return;
    }
    for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
        const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
        float *dst = pa + (i0 / SL_GEMM_MR) * kc * SL_GEMM_MR;
        /* op(A)(i,k) = a[i*lda + k]: 16 k at a time through a register transpose */
        int64_t k = 0;
        if (mr == SL_GEMM_MR)
            for (; k + 16 <= kc; k += 16) transpose12x16(dst + k * SL_GEMM_MR, a + i0 * lda + k0 + k, lda);
        for (int64_t i = 0; i < mr; i++) {
            const float *src = a + (i0 + i) * lda + k0;
            for (int64_t kk = k; kk < kc; kk++) dst[kk * SL_GEMM_MR + i] = src[kk];
        }
        for (int64_t i = mr; i < SL_GEMM_MR; i++)
            for (int64_t kk = k; kk < kc; kk++) dst[kk * SL_GEMM_MR + i] = 0.0f;
    }
}

/* pb: ceil(nb/NR) panels [kc,NR] of op(B)[k0..k0+kc, 0..nb), columns past nb zero. */
SL_AVX512 static void pack_b(float *pb, int tb, const float *b, int64_t ldb, int64_t nb, int64_t k0, int64_t kc) {
    if (!tb) { /* op(B)(k,j) = b[k*ldb + j]: walk each stored row once, dealing NR-chunks to the panels */
        for (int64_t k = 0; k < kc; k++) {
            const float *src = b + (k0 + k) * ldb;
            for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) {
                const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
                const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
                const __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u) : 0;
                float *d = pb + (j0 / SL_GEMM_NR) * kc * SL_GEMM_NR + k * SL_GEMM_NR;
                _mm512_storeu_ps(d, _mm512_maskz_loadu_ps(m0, src + j0));
                _mm512_storeu_ps(d + 16, _mm512_maskz_loadu_ps(m1, src + j0 + 16));
            }
        }
        return;
    }
    for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) { /* op(B)(k,j) = b[j*ldb + k]: transpose 16x16 blocks */
        const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
        float *dst = pb + (j0 / SL_GEMM_NR) * kc * SL_GEMM_NR;
        int64_t k = 0;
        if (nr == SL_GEMM_NR)
            for (; k + 16 <= kc; k += 16) {
                transpose16(dst + k * SL_GEMM_NR, SL_GEMM_NR, b + j0 * ldb + k0 + k, ldb);
                transpose16(dst + k * SL_GEMM_NR + 16, SL_GEMM_NR, b + (j0 + 16) * ldb + k0 + k, ldb);
            }
        for (; k < kc; k++) {
            float *d = dst + k * SL_GEMM_NR;
            int64_t j = 0;
            for (; j < nr; j++) d[j] = b[(j0 + j) * ldb + k0 + k];
            for (; j < SL_GEMM_NR; j++) d[j] = 0.0f;
        }
    }
}

/* c[0..mr, 0..nr) (row stride ldc) = alpha * pa^T pb + beta * c (c not read when beta == 0).
 * pa [kc,MR] packed; pb [kc,NR] with row stride bs (NR when packed). With trans_c the block is stored
 * transposed: element (i, j) goes to c[j*ldc + i] (see the swap in sl_sgemm). */
SL_AVX512 static void ukr_12x32(int64_t kc, const float *pa, const float *pb, int64_t bs, float *c, int64_t ldc,
                                int64_t mr, int64_t nr, float alpha, float beta, int trans_c) {
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
            transpose16_regs(r);
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
        __m512 r0 = _mm512_mul_ps(va, c##i##_0), r1 = _mm512_mul_ps(va, c##i##_1);  \
        if (beta != 0.0f) {                                                         \
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);            \
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);       \
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
SL_AVX512 static void tile_avx512_lowmem(int ta, int tb, int64_t mb, int64_t nb, int64_t K, float alpha,
                                         const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                                         float *c, int64_t ldc, int tc) {
    float pa[SL_GEMM_KC * SL_GEMM_MR] __attribute__((aligned(64)));
    float pb[SL_GEMM_KC * SL_GEMM_NR] __attribute__((aligned(64)));
    for (int64_t k0 = 0; k0 < K; k0 += SL_GEMM_KC) {
        const int64_t kc = K - k0 < SL_GEMM_KC ? K - k0 : SL_GEMM_KC;
        const float bk = k0 == 0 ? beta : 1.0f;
        for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) {
            const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
            pack_b(pb, tb, tb ? b + j0 * ldb : b + j0, ldb, nr, k0, kc);
            for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
                const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
                pack_a(pa, ta, ta ? a + i0 : a + i0 * lda, lda, mr, k0, kc);
                ukr_12x32(kc, pa, pb, SL_GEMM_NR, tc ? c + j0 * ldc + i0 : c + i0 * ldc + j0, ldc, mr, nr, alpha, bk,
                          tc);
            }
        }
    }
}

/* One tile: a = op(A)'s first tile row, b = op(B)'s first tile column (as stored),
 * c the tile's corner (tc: C is stored transposed, element (i,j) at c[j*ldc + i]);
 * pa/pb the calling thread's packing buffer (NULL: low-memory path). */
SL_AVX512 static void tile_avx512(int ta, int tb, int64_t mb, int64_t nb, int64_t K, float alpha, const float *a,
                                  int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
                                  int tc, float *pa, float *pb) {
    if (!pa) {
        tile_avx512_lowmem(ta, tb, mb, nb, K, alpha, a, lda, b, ldb, beta, c, ldc, tc);
        return;
    }
    /* Few rows: each B panel feeds few micro-kernel calls, so copying it costs more
     * than it saves; stored rows of op(B) are then read in place (full panels). */
    const int direct = !tb && mb <= SL_GEMM_DIRECT_B_ROWS;
    for (int64_t k0 = 0; k0 < K; k0 += SL_GEMM_KC) {
        const int64_t kc = K - k0 < SL_GEMM_KC ? K - k0 : SL_GEMM_KC;
        const float bk = k0 == 0 ? beta : 1.0f;
        pack_a(pa, ta, a, lda, mb, k0, kc);
        if (!direct) pack_b(pb, tb, b, ldb, nb, k0, kc);
        for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) {
            const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
            const float *bp = pb + (j0 / SL_GEMM_NR) * kc * SL_GEMM_NR;
            int64_t bs = SL_GEMM_NR;
            if (direct && nr == SL_GEMM_NR) {
                bp = b + k0 * ldb + j0;
                bs = ldb;
            } else if (direct) {
                pack_b(pb, 0, b + j0, ldb, nr, k0, kc);
                bp = pb;
            }
            for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
                const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
                ukr_12x32(kc, pa + (i0 / SL_GEMM_MR) * kc * SL_GEMM_MR, bp, bs,
                          tc ? c + j0 * ldc + i0 : c + i0 * ldc + j0, ldc, mr, nr, alpha, bk, tc);
            }
        }
    }
}
#endif

/* ------------------------------------------------------------ driver -- */

/* C = beta * C (K == 0: no product to add). */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

#ifdef SL_GEMM_PROFILE
/* Build with -DSL_GEMM_PROFILE: CPU seconds of the calling thread per product
 * shape, printed to stderr at exit (run with OMP_NUM_THREADS=1 for costs). */
#include <stdio.h>
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
static void sgemm_run(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void sl_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    const double t0 = prof_now();
    sgemm_run(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (omp_get_level() == 0) prof_add(trans_a, trans_b, M, N, K, prof_now() - t0);
}
static void sgemm_run(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#else
void sl_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#endif
    sl_gemm_init();
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    const int nested = omp_get_level() > 0; /* inside a parallel region: serial, OpenBLAS */
    int use_avx = g_kernel == SL_GEMM_KERNEL_AVX512 && !nested, swap = 0;
    /* A skinny product (few columns: the 1280-channel convs at 4x4 and 8x8 latents)
     * would leave most of the 32-wide micro-tile empty: when A is stored transposed
     * (the conv's input gradient w^T dy) compute C^T = op(B)^T op(A)^T instead, whose
     * B (= the stored A) is then read in place, and store the blocks transposed.
     * Other skinny products: OpenBLAS (measured faster than a transposing pack). */
    if (use_avx && N < SL_GEMM_AVX_MIN_N) {
        if (trans_a && M >= SL_GEMM_AVX_MIN_N) swap = 1;
        else use_avx = 0;
    }
    const int64_t Ms = swap ? N : M, Ns = swap ? M : N, ldas = swap ? ldb : lda, ldbs = swap ? lda : ldb;
    const int tas = swap ? !trans_b : trans_a, tbs = swap ? !trans_a : trans_b;
    const float *As = swap ? B : A, *Bs = swap ? A : B;
    const GemmTiles tp = gemm_plan(Ms, Ns, K);
    const int64_t tiles = tp.tm * tp.tn;
    const int par = tiles > 1 && !nested && 2.0 * (double)M * (double)N * (double)K >= SL_GEMM_PAR_FLOPS;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t m0 = (t / tp.tn) * tp.bm, n0 = (t % tp.tn) * tp.bn;
        const int64_t mb = Ms - m0 < tp.bm ? Ms - m0 : tp.bm, nb = Ns - n0 < tp.bn ? Ns - n0 : tp.bn;
        /* rows m0.. of op(A): A + m0*lda (as stored) or A + m0 (transposed);
         * columns n0.. of op(B): B + n0 (as stored) or B + n0*ldb (transposed) */
        const float *a = tas ? As + m0 : As + m0 * ldas;
        const float *b = tbs ? Bs + n0 * ldbs : Bs + n0;
        float *c = swap ? C + n0 * ldc + m0 : C + m0 * ldc + n0;
#if SL_GEMM_HAVE_AVX512
        if (use_avx) {
            float *pa = thread_pack();
            tile_avx512(tas, tbs, mb, nb, K, alpha, a, ldas, b, ldbs, beta, c, ldc, swap, pa,
                        pa ? pa + (size_t)SL_GEMM_BM * SL_GEMM_KC : NULL);
            continue;
        }
#endif
        tile_blas(trans_a, trans_b, mb, nb, K, alpha, a, lda, b, ldb, beta, c, ldc);
    }
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
