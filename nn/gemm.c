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
 * bf16 kernel (gemm.h): the AVX-512 tile's plan, with every packed value
 * rounded to bfloat16 in registers (integer round-to-nearest-even, denormals
 * kept). DPBF16 path: panels of K pairs (one uint32 per row or column holding
 * k = 2q low, 2q+1 high; an odd kc padded with zeros), packed straight from the
 * operand (a stored row's consecutive elements are its pairs: 16x16 word
 * transposes; two stored rows side by side otherwise; gathers through an fp32
 * panel), and a 12x32 micro-kernel of VDPBF16PS (a broadcast pair of A times a
 * pair row of B, 16 columns a register) in the fp32 micro-kernel's register
 * layout, ending in the same store. FMA path: the fp32 packers' panels rounded
 * with rows 2q and 2q+1 swapped, on the fp32 micro-kernel. Both paths never read
 * op(B) in place, and run every shape (skinny products too: swapped when A is
 * transposed, else in partial panels) and nested calls on their micro-kernel,
 * so the plan does not reach the bits. BLAS path: tile_blas on rounded copies.
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
#include "nn/bf16.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "nn/avx512_transpose.h"
#define SL_GEMM_HAVE_AVX512 1
#define SL_AVX512 __attribute__((target("avx512f,avx2,fma"))) /* halves: VCVTPH2PS zmm is AVX512F */
/* VDPBF16PS: GCC 10 and clang 9 know the target; older compilers build without the DPBF16 path */
#if defined(__clang__) ? __clang_major__ >= 9 : __GNUC__ >= 10
#define SL_GEMM_HAVE_DPBF16 1
#define SL_AVX512BF16 __attribute__((target("avx512f,avx512bf16,avx2,fma")))
#else
#define SL_GEMM_HAVE_DPBF16 0
#endif
#else
#define SL_GEMM_HAVE_AVX512 0
#define SL_GEMM_HAVE_DPBF16 0
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
static int g_dpbf16_ok = 0; /* and AVX512_BF16 (the bf16 kernel's DPBF16 path) */
/* Each thread that runs AVX-512 tiles packs into its own buffer (A panel block +
 * B panel block), allocated on its first tile and freed when the thread exits:
 * pool workers keep theirs for the process, and callers on different
 * pthreads (tests/test_dist.c runs two trainers at once) never share one. */
static pthread_key_t g_pack_key;
static pthread_key_t g_scratch_key; /* BLAS tiles' widening scratch, see thread_scratch */
static void scratch_free(void *s);

/* Per thread: the A panels [BM, KC], one B panel [KC, NR], a tile's partial sums [BM, TN]
 * (tile_avx512), then the bf16 pair panels of the DPBF16 path: A [BM, KC/2], B [KC/2, NR] (uint32). */
static size_t pack_floats(void) {
    return (size_t)SL_GEMM_BM * SL_GEMM_KC + (size_t)SL_GEMM_KC * SL_GEMM_NR + (size_t)SL_GEMM_BM * SL_GEMM_TN +
           (size_t)SL_GEMM_BM * SL_GEMM_KC / 2 + (size_t)SL_GEMM_KC / 2 * SL_GEMM_NR;
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
#if SL_GEMM_HAVE_DPBF16
    g_dpbf16_ok = g_avx512_ok && __builtin_cpu_supports("avx512bf16");
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

/* 16 stored 16-bit values widened to fp32 (exact): binary16 by VCVTPH2PS, bfloat16 by a shift. */
SL_AVX512 static inline __attribute__((always_inline)) __m512 widen16(__m256i h, int fmt) {
    if (fmt == SL_GEMM_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* n (<= 16) consecutive stored elements from element offset off, widened to fp32; lanes past n are 0. */
SL_AVX512 static inline __attribute__((always_inline)) __m512 ld16(const void *base, int64_t off, int64_t n, int fmt) {
    if (n <= 0) return _mm512_setzero_ps();
    if (fmt == SL_GEMM_F32) {
        const float *p = (const float *)base + off;
        return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
    }
    const uint16_t *h = (const uint16_t *)base + off;
    if (n >= 16) return widen16(_mm256_loadu_si256((const __m256i *)h), fmt);
    if (n == 12) /* an A panel's row: 8 + 4 halves, never reading past them */
        return widen16(_mm256_set_m128i(_mm_loadl_epi64((const __m128i *)(h + 8)), _mm_loadu_si128((const __m128i *)h)),
                       fmt);
    uint16_t t[16] = {0};
    memcpy(t, h, (size_t)n * sizeof(uint16_t));
    return widen16(_mm256_loadu_si256((const __m256i *)t), fmt);
}

/* One stored element, widened. */
SL_AVX512 static inline __attribute__((always_inline)) float ld1(const void *base, int64_t off, int fmt) {
    if (fmt == SL_GEMM_F32) return ((const float *)base)[off];
    if (fmt == SL_GEMM_BF16) return sl_bf16_to_float(((const uint16_t *)base)[off]);
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

/* ---- the bf16 kernel's panels: packed fp32 rounded to bfloat16 (AVX-512F integer ops) ---- */

/* x rounded to bfloat16 as nn/bf16.h's sl_float_to_bf16 does (ties to even, NaN quieted,
 * denormals kept), in each lane's upper 16 bits; the lower 16 bits are left over. */
SL_AVX512 static inline __attribute__((always_inline)) __m512i bf16_hi(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    const __mmask16 nan =
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
}

/* FMA path: a packed fp32 panel p [kc, w] (w = MR or NR) in place, every value rounded to
 * bfloat16, rows 2q and 2q+1 swapped so that the fp32 micro-kernel adds each pair in
 * VDPBF16PS's order (2q+1 first). An unpaired last row stays last: VDPBF16PS adds a zero
 * product before it, which changes no sum (a sum that starts at +0 is never -0). */
SL_AVX512 static void panel_round_swap(float *p, int64_t w, int64_t kc) {
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    for (int64_t j = 0; j < w; j += 16) {
        const __mmask16 m = w - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - j)) - 1u);
        int64_t k = 0;
        for (; k + 2 <= kc; k += 2) {
            float *r0 = p + k * w + j, *r1 = r0 + w;
            const __m512i x0 = bf16_hi(_mm512_maskz_loadu_ps(m, r0)), x1 = bf16_hi(_mm512_maskz_loadu_ps(m, r1));
            _mm512_mask_storeu_ps(r0, m, _mm512_castsi512_ps(_mm512_and_si512(x1, hi)));
            _mm512_mask_storeu_ps(r1, m, _mm512_castsi512_ps(_mm512_and_si512(x0, hi)));
        }
        if (k < kc) {
            float *r0 = p + k * w + j;
            _mm512_mask_storeu_ps(r0, m, _mm512_castsi512_ps(_mm512_and_si512(bf16_hi(_mm512_maskz_loadu_ps(m, r0)), hi)));
        }
    }
}

/* DPBF16 path: a packed fp32 panel p [kc, w] as bfloat16 pairs q [ceil(kc/2), w]:
 * q[i*w + j] holds bf16(p[2i][j]) in its low half, bf16(p[2i+1][j]) (0 past kc) in its high half. */
SL_AVX512 static void panel_to_pairs(uint32_t *q, const float *p, int64_t w, int64_t kc) {
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    for (int64_t j = 0; j < w; j += 16) {
        const __mmask16 m = w - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - j)) - 1u);
        for (int64_t k = 0; k < kc; k += 2) {
            const __m512i lo = _mm512_srli_epi32(bf16_hi(_mm512_maskz_loadu_ps(m, p + k * w + j)), 16);
            const __m512i up = k + 1 < kc ? _mm512_and_si512(bf16_hi(_mm512_maskz_loadu_ps(m, p + (k + 1) * w + j)), hi)
                                          : _mm512_setzero_si512();
            _mm512_mask_storeu_epi32(q + (k / 2) * w + j, m, _mm512_or_si512(lo, up));
        }
    }
}

/* The bf16 kernel's step after packing n panels [kc, w] at p: rounded in place (FMA path)
 * or rewritten as pairs at q, n panels [ceil(kc/2), w] (DPBF16 path). */
SL_AVX512 static void panels_bf16(int path, float *p, uint32_t *q, int64_t n, int64_t w, int64_t kc) {
    const int64_t kc2 = (kc + 1) / 2;
    for (int64_t i = 0; i < n; i++) {
        if (path == SL_GEMM_BF16_PATH_FMA) panel_round_swap(p + i * kc * w, w, kc);
        else panel_to_pairs(q + i * kc2 * w, p + i * kc * w, w, kc);
    }
}

/* DPBF16 path, packing straight from the operand (no fp32 panel in between; the same numbers):
 * 16 pair words from n (<= 32) consecutive stored elements at element offset off (element 2w in
 * word w's low half, 2w+1 in its high half; zeros past n), rounded as bf16_hi. */
SL_AVX512 static inline __attribute__((always_inline)) __m512i ld_pairs16(const void *base, int64_t off, int64_t n,
                                                                         int fmt) {
    if (fmt == SL_GEMM_BF16) { /* already pairs in memory */
        const uint16_t *h = (const uint16_t *)base + off;
        if (n >= 32) return _mm512_loadu_si512(h);
        uint16_t t[32] = {0};
        if (n > 0) memcpy(t, h, (size_t)n * sizeof(uint16_t));
        return _mm512_loadu_si512(t);
    }
    const __m512i lo = _mm512_srli_epi32(bf16_hi(ld16(base, off, n, fmt)), 16);
    const __m512i hi = _mm512_srli_epi32(bf16_hi(ld16(base, off + 16, n - 16, fmt)), 16);
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(lo)), _mm512_cvtepi32_epi16(hi), 1);
}

/* 16 pair words of two stored rows' n (<= 16) consecutive elements at off0 (low halves) and off1
 * (high halves; has1 == 0: zeros, the pad of an odd kc); lanes past n zero. */
SL_AVX512 static inline __attribute__((always_inline)) __m512i ld_rows_pairs(const void *base, int64_t off0,
                                                                            int64_t off1, int has1, int64_t n,
                                                                            int fmt) {
    const __m512i lo = _mm512_srli_epi32(bf16_hi(ld16(base, off0, n, fmt)), 16);
    if (!has1) return lo;
    return _mm512_or_si512(lo, _mm512_and_si512(bf16_hi(ld16(base, off1, n, fmt)), _mm512_set1_epi32((int)0xffff0000u)));
}

/* qb [ceil(kc/2), NR]: the pair words of op(B)[k0..k0+kc, c0..c0+nr) (columns past nr and an odd
 * kc's pad zero), as panel_to_pairs of pack_b's panel; a gathered B goes through that panel (pb). */
SL_AVX512 static void pack_b_pairs(uint32_t *qb, float *pb, const SlGemmOperand *B, int64_t c0, int64_t nr, int64_t k0,
                                   int64_t kc) {
    const int fmt = B->fmt;
    const int64_t kc2 = (kc + 1) / 2;
    if (fmt == SL_GEMM_GATHER) {
        pack_b(pb, B, c0, nr, k0, kc);
        panel_to_pairs(qb, pb, SL_GEMM_NR, kc);
        return;
    }
    if (B->trans) { /* op(B)(k,j) stored at (j, k): a column's pairs are consecutive; 16x16 word transposes */
        for (int64_t j0 = 0; j0 < SL_GEMM_NR; j0 += 16)
            for (int64_t q0 = 0; q0 < kc2; q0 += 16) {
                __m512 r[16];
                for (int64_t jj = 0; jj < 16; jj++)
                    r[jj] = j0 + jj < nr ? _mm512_castsi512_ps(ld_pairs16(B->p, op_off(B, k0 + 2 * q0, c0 + j0 + jj),
                                                                          kc - 2 * q0, fmt))
                                         : _mm512_setzero_ps();
                sl_transpose16_regs(r); /* r[w] = word w of the 16 columns */
                const int64_t nw = kc2 - q0 < 16 ? kc2 - q0 : 16;
                for (int64_t w = 0; w < nw; w++) _mm512_storeu_ps((float *)(qb + (q0 + w) * SL_GEMM_NR + j0), r[w]);
            }
        return;
    }
    for (int64_t q = 0; q < kc2; q++) { /* op(B)(k,j) stored at (k, j): rows 2q and 2q+1 side by side */
        const int64_t k = k0 + 2 * q;
        const int has1 = 2 * q + 1 < kc;
        for (int64_t j0 = 0; j0 < SL_GEMM_NR; j0 += 16)
            _mm512_storeu_si512(qb + q * SL_GEMM_NR + j0, ld_rows_pairs(B->p, op_off(B, k, c0 + j0),
                                                                        op_off(B, k + 1, c0 + j0), has1, nr - j0, fmt));
    }
}

/* qa: ceil(mb/MR) panels [ceil(kc/2), MR] of the pair words of op(A)[r0..r0+mb, k0..k0+kc) (rows past
 * mb zero), as panel_to_pairs of pack_a's panels; a gathered operand (the B of a swapped product)
 * goes through those panels (pa). */
SL_AVX512 static void pack_a_pairs(uint32_t *qa, float *pa, const SlGemmOperand *A, int64_t r0, int64_t mb, int64_t k0,
                                   int64_t kc) {
    const int fmt = A->fmt;
    const int64_t kc2 = (kc + 1) / 2;
    if (fmt == SL_GEMM_GATHER) {
        pack_a(pa, A, r0, mb, k0, kc);
        panels_bf16(SL_GEMM_BF16_PATH_DPBF16, pa, qa, cdiv(mb, SL_GEMM_MR), SL_GEMM_MR, kc);
        return;
    }
    for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
        const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
        uint32_t *dst = qa + (i0 / SL_GEMM_MR) * kc2 * SL_GEMM_MR;
        if (!A->trans) { /* op(A)(i,k) stored at (i, k): a row's pairs are consecutive; word transposes */
            for (int64_t q0 = 0; q0 < kc2; q0 += 16) {
                __m512 r[16];
                for (int64_t i = 0; i < 16; i++)
                    r[i] = i < mr ? _mm512_castsi512_ps(
                                        ld_pairs16(A->p, op_off(A, r0 + i0 + i, k0 + 2 * q0), kc - 2 * q0, fmt))
                                  : _mm512_setzero_ps();
                sl_transpose16_regs(r);
                const int64_t nw = kc2 - q0 < 16 ? kc2 - q0 : 16;
                for (int64_t w = 0; w < nw; w++)
                    _mm512_mask_storeu_ps((float *)(dst + (q0 + w) * SL_GEMM_MR), (__mmask16)0x0FFF, r[w]);
            }
        } else { /* op(A)(i,k) stored at (k, i): rows 2q and 2q+1 side by side, 12 lanes */
            for (int64_t q = 0; q < kc2; q++) {
                const int64_t k = k0 + 2 * q;
                _mm512_mask_storeu_epi32(dst + q * SL_GEMM_MR, (__mmask16)0x0FFF,
                                         ld_rows_pairs(A->p, op_off(A, r0 + i0, k), op_off(A, r0 + i0, k + 1),
                                                       2 * q + 1 < kc, mr, fmt));
            }
        }
    }
}

/* ---- micro-kernels ---- */

/* The 24 accumulators of a 12x32 block as parameters / arguments: c<i>_<h> is row i, columns 16h.. */
#define SL_ACC_P(i) __m512 c##i##_0, __m512 c##i##_1
#define SL_ACC_A(i) c##i##_0, c##i##_1

/* The micro-kernels' last step: c[0..mr, 0..nr) = alpha * acc + beta * cin, as ukr_12x32 describes. */
SL_AVX512 static inline __attribute__((always_inline)) void ukr_store(
    float *c, int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta, int trans_c, const float *cin, int64_t ldi,
    SL_ACC_P(0), SL_ACC_P(1), SL_ACC_P(2), SL_ACC_P(3), SL_ACC_P(4), SL_ACC_P(5), SL_ACC_P(6), SL_ACC_P(7),
    SL_ACC_P(8), SL_ACC_P(9), SL_ACC_P(10), SL_ACC_P(11)) {
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
    ukr_store(c, ldc, mr, nr, alpha, beta, trans_c, cin, ldi, SL_ACC_A(0), SL_ACC_A(1), SL_ACC_A(2), SL_ACC_A(3),
              SL_ACC_A(4), SL_ACC_A(5), SL_ACC_A(6), SL_ACC_A(7), SL_ACC_A(8), SL_ACC_A(9), SL_ACC_A(10),
              SL_ACC_A(11));
}

#if SL_GEMM_HAVE_DPBF16
/* ukr_12x32 on bfloat16 pair panels (pack_a_pairs, pack_b_pairs): qa [kc2, MR], qb [kc2, NR]. Each step
 * broadcasts row i's pair of A and multiplies it into the 32 columns' pairs of B with VDPBF16PS
 * (acc += a(2q+1) b(2q+1), then += a(2q) b(2q): exact products, fp32 sums). */
SL_AVX512BF16 static void ukr_bf16_12x32(int64_t kc2, const uint32_t *qa, const uint32_t *qb, float *c, int64_t ldc,
                                         int64_t mr, int64_t nr, float alpha, float beta, int trans_c,
                                         const float *cin, int64_t ldi) {
    SL_Z(0) SL_Z(1) SL_Z(2) SL_Z(3) SL_Z(4) SL_Z(5) SL_Z(6) SL_Z(7) SL_Z(8) SL_Z(9) SL_Z(10) SL_Z(11)
    for (int64_t q = 0; q < kc2; q++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(qb), b1 = (__m512bh)_mm512_loadu_si512(qb + 16);
        __m512bh av;
#define SL_R(i)                                               \
    av = (__m512bh)_mm512_set1_epi32((int)qa[i]);             \
    c##i##_0 = _mm512_dpbf16_ps(c##i##_0, av, b0);            \
    c##i##_1 = _mm512_dpbf16_ps(c##i##_1, av, b1);
        SL_R(0) SL_R(1) SL_R(2) SL_R(3) SL_R(4) SL_R(5) SL_R(6) SL_R(7) SL_R(8) SL_R(9) SL_R(10) SL_R(11)
#undef SL_R
        qa += SL_GEMM_MR;
        qb += SL_GEMM_NR;
    }
    ukr_store(c, ldc, mr, nr, alpha, beta, trans_c, cin, ldi, SL_ACC_A(0), SL_ACC_A(1), SL_ACC_A(2), SL_ACC_A(3),
              SL_ACC_A(4), SL_ACC_A(5), SL_ACC_A(6), SL_ACC_A(7), SL_ACC_A(8), SL_ACC_A(9), SL_ACC_A(10),
              SL_ACC_A(11));
}
#endif
#undef SL_Z

/* One micro-tile on the kernel `path` runs (0: fp32; the bf16 kernel's FMA or DPBF16 path):
 * pa/pb its fp32 panels (pb row stride bs), qa/qb its pair panels (DPBF16 only). */
SL_AVX512 static inline void ukr_run(int path, int64_t kc, const float *pa, const float *pb, int64_t bs,
                                     const uint32_t *qa, const uint32_t *qb, float *c, int64_t ldc, int64_t mr,
                                     int64_t nr, float alpha, float beta, int trans_c, const float *cin, int64_t ldi) {
#if SL_GEMM_HAVE_DPBF16
    if (path == SL_GEMM_BF16_PATH_DPBF16) {
        ukr_bf16_12x32((kc + 1) / 2, qa, qb, c, ldc, mr, nr, alpha, beta, trans_c, cin, ldi);
        return;
    }
#else
    (void)qa, (void)qb;
#endif
    (void)path;
    ukr_12x32(kc, pa, pb, bs, c, ldc, mr, nr, alpha, beta, trans_c, cin, ldi);
}

/* A thread's packing buffer (thread_pack) cut into its parts; see pack_floats. */
typedef struct PackBuf {
    float *a, *b;      /* A panels [BM, KC], one B panel [KC, NR] */
    float *ct;         /* a tile's partial sums [BM, TN] */
    uint32_t *qa, *qb; /* DPBF16 pair panels: A [BM, KC/2], B [KC/2, NR] */
} PackBuf;

/* The same products as tile_avx512 without a packing buffer (only if it could
 * not be allocated): one A panel and one B panel at a time on the stack, so
 * A is re-packed per B panel. Each micro-tile sees the same packed numbers in
 * the same order, so the result is the same bits, only slower. */
SL_AVX512 static void tile_avx512_lowmem(const SlGemmOperand *A, const SlGemmOperand *B, int64_t m0, int64_t n0,
                                         int64_t mb, int64_t nb, int64_t K, float alpha, float beta, float *c,
                                         int64_t ldc, int tc, int path) {
    float pa[SL_GEMM_KC * SL_GEMM_MR] __attribute__((aligned(64)));
    float pb[SL_GEMM_KC * SL_GEMM_NR] __attribute__((aligned(64)));
    uint32_t qa[SL_GEMM_KC / 2 * SL_GEMM_MR] __attribute__((aligned(64)));
    uint32_t qb[SL_GEMM_KC / 2 * SL_GEMM_NR] __attribute__((aligned(64)));
    for (int64_t k0 = 0; k0 < K; k0 += SL_GEMM_KC) {
        const int64_t kc = K - k0 < SL_GEMM_KC ? K - k0 : SL_GEMM_KC;
        const float bk = k0 == 0 ? beta : 1.0f;
        for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) {
            const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
            if (path == SL_GEMM_BF16_PATH_DPBF16) {
                pack_b_pairs(qb, pb, B, n0 + j0, nr, k0, kc);
            } else {
                pack_b(pb, B, n0 + j0, nr, k0, kc);
                if (path) panels_bf16(path, pb, qb, 1, SL_GEMM_NR, kc);
            }
            for (int64_t i0 = 0; i0 < mb; i0 += SL_GEMM_MR) {
                const int64_t mr = mb - i0 < SL_GEMM_MR ? mb - i0 : SL_GEMM_MR;
                if (path == SL_GEMM_BF16_PATH_DPBF16) {
                    pack_a_pairs(qa, pa, A, m0 + i0, mr, k0, kc);
                } else {
                    pack_a(pa, A, m0 + i0, mr, k0, kc);
                    if (path) panels_bf16(path, pa, qa, 1, SL_GEMM_MR, kc);
                }
                float *cb = tc ? c + j0 * ldc + i0 : c + i0 * ldc + j0;
                ukr_run(path, kc, pa, pb, SL_GEMM_NR, qa, qb, cb, ldc, mr, nr, alpha, bk, tc, cb, ldc);
            }
        }
    }
}

/* One tile: rows m0..m0+mb of op(A) times columns n0..n0+nb of op(B) into c, the tile's corner
 * (tc: C is stored transposed, element (i,j) at c[j*ldc + i]) on the fp32 kernel (path 0) or
 * the bf16 kernel's FMA or DPBF16 path; pk the calling thread's packing buffer (NULL: low-memory path). */
SL_AVX512 static void tile_avx512(const SlGemmOperand *A, const SlGemmOperand *B, int64_t m0, int64_t n0, int64_t mb,
                                  int64_t nb, int64_t K, float alpha, float beta, float *c, int64_t ldc, int tc,
                                  int path, const PackBuf *pk) {
    if (!pk) {
        tile_avx512_lowmem(A, B, m0, n0, mb, nb, K, alpha, beta, c, ldc, tc, path);
        return;
    }
    float *pa = pk->a, *pb = pk->b;
    /* Few rows: each B panel feeds few micro-kernel calls, so copying it costs more
     * than it saves; stored fp32 rows of op(B) are then read in place (full panels).
     * Halves and gathered operands are always packed (same numbers, same bits), and
     * so is everything the bf16 kernel reads (it rounds while packing). */
    const int direct = !path && B->fmt == SL_GEMM_F32 && !B->trans && mb <= SL_GEMM_DIRECT_B_ROWS;
    /* Several K blocks and C's rows a large power of two apart (conv outputs: ldc = Ho*Wo):
     * the tile's rows of C would share cache sets and fall out of L2 between K blocks, so the
     * partial sums go to the thread's compact [mb, nb] buffer instead. */
    float *ct = !tc && K > SL_GEMM_KC && ldc % 1024 == 0 ? pk->ct : NULL;
    for (int64_t k0 = 0; k0 < K; k0 += SL_GEMM_KC) {
        const int64_t kc = K - k0 < SL_GEMM_KC ? K - k0 : SL_GEMM_KC, kc2 = (kc + 1) / 2;
        const float bk = k0 == 0 ? beta : 1.0f;
        if (path == SL_GEMM_BF16_PATH_DPBF16) {
            pack_a_pairs(pk->qa, pa, A, m0, mb, k0, kc);
        } else {
            pack_a(pa, A, m0, mb, k0, kc);
            if (path) panels_bf16(path, pa, pk->qa, cdiv(mb, SL_GEMM_MR), SL_GEMM_MR, kc);
        }
        for (int64_t j0 = 0; j0 < nb; j0 += SL_GEMM_NR) {
            /* one B panel at a time, packed just before its sweep over the A panels (still in L1) */
            const int64_t nr = nb - j0 < SL_GEMM_NR ? nb - j0 : SL_GEMM_NR;
            const float *bp = pb;
            int64_t bs = SL_GEMM_NR;
            if (direct && nr == SL_GEMM_NR) {
                bp = (const float *)B->p + op_off(B, k0, n0 + j0);
                bs = B->ld;
            } else if (path == SL_GEMM_BF16_PATH_DPBF16) {
                pack_b_pairs(pk->qb, pb, B, n0 + j0, nr, k0, kc);
            } else {
                pack_b(pb, B, n0 + j0, nr, k0, kc);
                if (path) panels_bf16(path, pb, pk->qb, 1, SL_GEMM_NR, kc);
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
                ukr_run(path, kc, pa + (i0 / SL_GEMM_MR) * kc * SL_GEMM_MR, bp, bs,
                        pk->qa + (i0 / SL_GEMM_MR) * kc2 * SL_GEMM_MR, pk->qb, out, ldo, mr, nr, alpha, bk, tc, in,
                        ldi);
            }
        }
    }
}
#endif

/* -------------------------------------------------------- BLAS tile -- */

/* Each thread that runs BLAS tiles of 16-bit or gathered operands (or bf16-rounded ones) widens the tile's
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

/* x [n] rounded to bfloat16 in place (the bf16 kernel's BLAS path). */
static void round_bf16(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = sl_bf16_round(x[i]);
}

/* The fp32 rows [r0, r0+nr) x columns [c0, c0+nc) of the STORED matrix x (fp32, binary16 or
 * bfloat16, widened exactly), into dst [nr, nc]. */
static void widen_block(float *dst, const SlGemmOperand *x, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    for (int64_t r = 0; r < nr; r++) {
        const int64_t off = (r0 + r) * x->ld + c0;
        if (x->fmt == SL_GEMM_F32) memcpy(dst + r * nc, (const float *)x->p + off, (size_t)nc * sizeof(float));
        else if (x->fmt == SL_GEMM_BF16) sl_bf16_to_f32(dst + r * nc, (const uint16_t *)x->p + off, (size_t)nc);
        else sl_f16_to_f32(dst + r * nc, (const uint16_t *)x->p + off, (size_t)nc);
    }
}

/* Rows m0..m0+mb of op(A) times columns n0..n0+nb of op(B): one single-threaded OpenBLAS call,
 * on the operands in place (fp32) or on the tile's part of them widened / gathered into scratch
 * (same dimensions and transposes, so the same call). bf16: both operands copied to scratch
 * and rounded to bfloat16 there (the bf16 kernel's BLAS path). */
static void tile_blas(const SlGemmOperand *A, const SlGemmOperand *B, int64_t m0, int64_t n0, int64_t mb, int64_t nb,
                      int64_t K, float alpha, float beta, float *c, int64_t ldc, int bf16) {
    const int ta = A->trans, tb = B->fmt == SL_GEMM_GATHER ? 0 : B->trans;
    const int wa = bf16 || A->fmt != SL_GEMM_F32, wb = bf16 || B->fmt != SL_GEMM_F32;
    float *s = wa || wb ? thread_scratch((size_t)((wa ? mb : 0) + (wb ? nb : 0)) * (size_t)K) : NULL;
    const float *a = (const float *)A->p + op_off(A, m0, 0), *b = (const float *)B->p + op_off(B, 0, n0);
    int64_t lda = A->ld, ldb = B->ld;
    if (wa) { /* op(A) rows m0.. : stored [M,K] rows, or stored [K,M] columns */
        if (ta) widen_block(s, A, 0, K, m0, mb);
        else widen_block(s, A, m0, mb, 0, K);
        if (bf16) round_bf16(s, mb * K);
        a = s;
        lda = ta ? mb : K;
    }
    if (wb) {
        float *sb = s + (wa ? mb * K : 0);
        if (B->fmt == SL_GEMM_GATHER) B->gather(B->ctx, sb, nb, 0, K, n0, nb);
        else if (tb) widen_block(sb, B, n0, nb, 0, K);
        else widen_block(sb, B, 0, K, n0, nb);
        if (bf16) round_bf16(sb, nb * K);
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
    int bf16; /* 0: fp32 kernels; else the bf16 kernel's path (SL_GEMM_BF16_PATH_*) */
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
        float *p = thread_pack();
        PackBuf pk;
        if (p) {
            pk.a = p;
            pk.b = pk.a + (size_t)SL_GEMM_BM * SL_GEMM_KC;
            pk.ct = pk.b + (size_t)SL_GEMM_KC * SL_GEMM_NR;
            pk.qa = (uint32_t *)(pk.ct + (size_t)SL_GEMM_BM * SL_GEMM_TN);
            pk.qb = pk.qa + (size_t)SL_GEMM_BM * SL_GEMM_KC / 2;
        }
        const int path = j->bf16 == SL_GEMM_BF16_PATH_BLAS ? 0 : j->bf16;
        tile_avx512(j->As, j->Bs, m0, n0, mb, nb, j->K, j->alpha, j->beta, c, j->ldc, j->swap, path, p ? &pk : NULL);
        return;
    }
#endif
    tile_blas(j->A, j->B, m0, n0, mb, nb, j->K, j->alpha, j->beta, c, j->ldc, j->bf16 != 0);
}

/* The bf16 kernel's path for a request (SL_GEMM_BF16_PATH_*): the one asked for, or the next
 * this CPU runs (DPBF16 -> FMA -> BLAS); _CPU: the best one. */
static int bf16_path(int want) {
    int p = want == SL_GEMM_BF16_PATH_CPU ? SL_GEMM_BF16_PATH_DPBF16 : want;
    if (p == SL_GEMM_BF16_PATH_DPBF16 && !g_dpbf16_ok) p = SL_GEMM_BF16_PATH_FMA;
    if (p == SL_GEMM_BF16_PATH_FMA && !g_avx512_ok) p = SL_GEMM_BF16_PATH_BLAS;
    return p;
}

/* The product behind sl_sgemm and sl_gemm_op; bf16_want: the bf16 kernel's path
 * (SL_GEMM_BF16_PATH_*) when kern asks for that kernel. Returns the bf16 path that ran (0: fp32). */
static int gemm_run(int64_t M, int64_t N, int64_t K, float alpha, const SlGemmOperand *A, const SlGemmOperand *B,
                    float beta, float *C, int64_t ldc, const SlKernels *kern, int bf16_want) {
    sl_gemm_init();
    const int kg = sl_kernels_gemm(kern), bf16 = kg == SL_GEMM_KERNEL_BF16 ? bf16_path(bf16_want) : 0;
    if (M <= 0 || N <= 0) return bf16;
    if (K <= 0) {
        scale_c(M, N, beta, C, ldc);
        return bf16;
    }
    if (A->fmt == SL_GEMM_GATHER || (unsigned)A->fmt > SL_GEMM_BF16 || (unsigned)B->fmt > SL_GEMM_BF16) {
        fprintf(stderr, "nn/gemm.c: sl_gemm_op: unsupported operand format (A %d, B %d)\n", A->fmt, B->fmt);
        abort();
    }
    /* Inside a parallel region: serial, on OpenBLAS for the fp32 kernels; the bf16 kernel keeps its path
     * (its bits then do not depend on where it is called from). */
    const int nested = omp_get_level() > 0;
    int use_avx = bf16 ? bf16 != SL_GEMM_BF16_PATH_BLAS : g_avx512_ok && kg == SL_GEMM_KERNEL_AVX512 && !nested;
    int swap = 0;
    /* A skinny product (few columns: the 1280-channel convs at 4x4 and 8x8 latents)
     * would leave most of the 32-wide micro-tile empty: when A is stored transposed
     * (the conv's input gradient w^T dy) compute C^T = op(B)^T op(A)^T instead, whose
     * B (= the stored A) is then read in place, and store the blocks transposed.
     * Other skinny products: OpenBLAS (measured faster than a transposing pack), but
     * the bf16 kernel's own micro-kernel in partial panels (OpenBLAS would change its bits). */
    if (use_avx && N < SL_GEMM_AVX_MIN_N) {
        if (A->trans && M >= SL_GEMM_AVX_MIN_N) swap = 1;
        else if (!bf16) use_avx = 0;
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
    GemmJob job = {&As, &Bs, A, B, tp, Ms, Ns, K, alpha, beta, C, ldc, swap, use_avx, bf16};
    if (par) sl_pool_for(tiles, gemm_job_tile, &job);
    else
        for (int64_t t = 0; t < tiles; t++) gemm_job_tile(&job, t, 0);
    return bf16;
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
    gemm_run(M, N, K, alpha, A, B, beta, C, ldc, kern, SL_GEMM_BF16_PATH_CPU);
    if (omp_get_level() == 0) prof_add(A->trans, B->trans, M, N, K, prof_now() - t0);
}
#define SL_GEMM_RUN gemm_timed
#else
#define SL_GEMM_RUN(...) (void)gemm_run(__VA_ARGS__, SL_GEMM_BF16_PATH_CPU)
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

int sl_gemm_bf16_path(void) {
    sl_gemm_init();
    return bf16_path(SL_GEMM_BF16_PATH_CPU);
}

int sl_gemm_op_bf16_path(int path, int64_t M, int64_t N, int64_t K, float alpha, const SlGemmOperand *A,
                         const SlGemmOperand *B, float beta, float *C, int64_t ldc) {
    const SlKernels k = {SL_GEMM_KERNEL_BF16, 0, 0};
    return gemm_run(M, N, K, alpha, A, B, beta, C, ldc, &k, path);
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
