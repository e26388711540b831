/* nf4.c - NF4 quantization (bitsandbytes quantize_4bit semantics) and fused NF4 x fp32
 * kernels; see nf4.h for the format, the citations and the determinism argument.
 *
 * Dequantization is one multiply per element (code value x block scale) in every path, so
 * the AVX-512, AVX2 and scalar dequantizers give identical bits; the SIMD paths are
 * compiled with target attributes and chosen at run time (__builtin_cpu_supports).
 */
#include "nn/nf4.h"

#include <math.h>
#include <string.h>

#include <immintrin.h>

#include "core/tensor.h"
#include "nn/gemm.h"

/* bitsandbytes functional.py get_4bit_type('nf4') (= csrc/kernels.cu dDequantizeNF4). */
const float sl_nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

/* bitsandbytes functional.py create_dynamic_map(signed=True, max_exponent_bits=7,
 * total_bits=8) evaluated with torch 1.13 (tests/reference/nf4_ref.py cmap). */
const float sl_nf4_dynamic_map[256] = {
    -0.992968738f, -0.978906214f, -0.96484375f, -0.950781226f,
    -0.936718702f, -0.922656238f, -0.908593774f, -0.89453125f,
    -0.880468726f, -0.866406202f, -0.852343738f, -0.838281214f,
    -0.82421875f, -0.810156226f, -0.796093702f, -0.782031238f,
    -0.767968774f, -0.75390625f, -0.739843786f, -0.725781262f,
    -0.711718798f, -0.697656274f, -0.68359375f, -0.669531286f,
    -0.655468762f, -0.641406238f, -0.627343774f, -0.61328125f,
    -0.599218726f, -0.585156262f, -0.571093798f, -0.557031274f,
    -0.54296875f, -0.528906226f, -0.514843762f, -0.500781238f,
    -0.486718774f, -0.47265625f, -0.458593726f, -0.444531262f,
    -0.430468738f, -0.416406214f, -0.40234375f, -0.388281226f,
    -0.374218762f, -0.360156238f, -0.346093714f, -0.33203125f,
    -0.317968726f, -0.303906262f, -0.289843738f, -0.275781274f,
    -0.26171875f, -0.247656256f, -0.233593762f, -0.219531253f,
    -0.205468744f, -0.19140625f, -0.177343741f, -0.163281247f,
    -0.149218753f, -0.135156244f, -0.12109375f, -0.107031256f,
    -0.0985937491f, -0.0957812443f, -0.0929687545f, -0.0901562497f,
    -0.0873437524f, -0.0845312476f, -0.0817187428f, -0.078906253f,
    -0.0760937482f, -0.0732812509f, -0.0704687461f, -0.0676562563f,
    -0.0648437515f, -0.0620312467f, -0.0592187531f, -0.0564062484f,
    -0.053593751f, -0.05078125f, -0.047968749f, -0.0451562516f,
    -0.0423437469f, -0.0395312496f, -0.0367187522f, -0.0339062475f,
    -0.0310937501f, -0.0282812472f, -0.0254687499f, -0.0226562507f,
    -0.0198437497f, -0.0170312505f, -0.0142187504f, -0.0114062503f,
    -0.00971874967f, -0.00915624946f, -0.00859375019f, -0.00803124998f,
    -0.00746874977f, -0.00690625003f, -0.00634374982f, -0.00578125007f,
    -0.00521875033f, -0.00465624966f, -0.00409374991f, -0.00353124971f,
    -0.00296874996f, -0.00240624999f, -0.00184375001f, -0.00128124992f,
    -0.000943750085f, -0.000831249985f, -0.00071875006f, -0.000606250076f,
    -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f,
    -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f,
    -7.7499999e-06f, -3.25000019e-06f, -5.50000038e-07f, 0.0f,
    5.50000038e-07f, 3.25000019e-06f, 7.7499999e-06f, 2.12499981e-05f,
    4.37499984e-05f, 6.62500024e-05f, 8.87499991e-05f, 0.000156250011f,
    0.000268750038f, 0.000381250022f, 0.000493750034f, 0.000606250076f,
    0.00071875006f, 0.000831249985f, 0.000943750085f, 0.00128124992f,
    0.00184375001f, 0.00240624999f, 0.00296874996f, 0.00353124971f,
    0.00409374991f, 0.00465624966f, 0.00521875033f, 0.00578125007f,
    0.00634374982f, 0.00690625003f, 0.00746874977f, 0.00803124998f,
    0.00859375019f, 0.00915624946f, 0.00971874967f, 0.0114062503f,
    0.0142187504f, 0.0170312505f, 0.0198437497f, 0.0226562507f,
    0.0254687499f, 0.0282812472f, 0.0310937501f, 0.0339062475f,
    0.0367187522f, 0.0395312496f, 0.0423437469f, 0.0451562516f,
    0.047968749f, 0.05078125f, 0.053593751f, 0.0564062484f,
    0.0592187531f, 0.0620312467f, 0.0648437515f, 0.0676562563f,
    0.0704687461f, 0.0732812509f, 0.0760937482f, 0.078906253f,
    0.0817187428f, 0.0845312476f, 0.0873437524f, 0.0901562497f,
    0.0929687545f, 0.0957812443f, 0.0985937491f, 0.107031256f,
    0.12109375f, 0.135156244f, 0.149218753f, 0.163281247f,
    0.177343741f, 0.19140625f, 0.205468744f, 0.219531253f,
    0.233593762f, 0.247656256f, 0.26171875f, 0.275781274f,
    0.289843738f, 0.303906262f, 0.317968726f, 0.33203125f,
    0.346093714f, 0.360156238f, 0.374218762f, 0.388281226f,
    0.40234375f, 0.416406214f, 0.430468738f, 0.444531262f,
    0.458593726f, 0.47265625f, 0.486718774f, 0.500781238f,
    0.514843762f, 0.528906226f, 0.54296875f, 0.557031274f,
    0.571093798f, 0.585156262f, 0.599218726f, 0.61328125f,
    0.627343774f, 0.641406238f, 0.655468762f, 0.669531286f,
    0.68359375f, 0.697656274f, 0.711718798f, 0.725781262f,
    0.739843786f, 0.75390625f, 0.767968774f, 0.782031238f,
    0.796093702f, 0.810156226f, 0.82421875f, 0.838281214f,
    0.852343738f, 0.866406202f, 0.880468726f, 0.89453125f,
    0.908593774f, 0.922656238f, 0.936718702f, 0.950781226f,
    0.96484375f, 0.978906214f, 0.992968738f, 1.0f,
};

/* ---- layout ---- */

static int64_t nf4_n_blocks(int64_t O, int64_t I) { return (O * I + SL_NF4_BLOCK - 1) / SL_NF4_BLOCK; }

size_t sl_nf4_bytes(int64_t O, int64_t I, int dq) {
    const size_t nb = (size_t)nf4_n_blocks(O, I);
    size_t s = sl_align_up(nb * sizeof(SlNf4Block));
    if (dq)
        s += sl_align_up(nb) + sl_align_up((nb + SL_NF4_DQ_BLOCK - 1) / SL_NF4_DQ_BLOCK * sizeof(float));
    else
        s += sl_align_up(nb * sizeof(float));
    return s;
}

size_t sl_nf4_packed_bytes(int64_t O, int64_t I, int dq) {
    const size_t nb = (size_t)nf4_n_blocks(O, I);
    size_t s = (size_t)(O * I + 1) / 2;
    if (dq) return s + nb + (nb + SL_NF4_DQ_BLOCK - 1) / SL_NF4_DQ_BLOCK * sizeof(float) + sizeof(float);
    return s + nb * sizeof(float);
}

void sl_nf4_bind(SlNf4Weight *W, void *mem, int64_t O, int64_t I, int dq) {
    uint8_t *p = mem;
    memset(W, 0, sizeof *W);
    W->O = O;
    W->I = I;
    W->n_blocks = nf4_n_blocks(O, I);
    W->dq = dq;
    const size_t nb = (size_t)W->n_blocks;
    W->blocks = (SlNf4Block *)p;
    p += sl_align_up(nb * sizeof(SlNf4Block));
    if (dq) {
        W->absmax_q = p;
        p += sl_align_up(nb);
        W->absmax2 = (float *)p;
    } else {
        W->absmax = (float *)p;
    }
}

/* ---- quantization ---- */

/* Nearest NF4 code of x in [-1, 1]: the number of midpoints strictly below x
 * (dQuantizeNF4's `x > threshold` tests). */
static uint8_t nf4_nearest(float x) {
    uint8_t q = 0;
    for (int k = 0; k < 15; k++) q += x > 0.5f * (sl_nf4_code[k] + sl_nf4_code[k + 1]);
    return q;
}

void sl_nf4_quantize_range(SlNf4Weight *W, float *absmax, const float *w, int64_t e0, int64_t n) {
    assert(e0 % SL_NF4_BLOCK == 0);
    const int64_t total = W->O * W->I;
    (void)total;
    assert(e0 + n <= total && (n % SL_NF4_BLOCK == 0 || e0 + n == total));
    const int64_t b0 = e0 / SL_NF4_BLOCK, nb = (n + SL_NF4_BLOCK - 1) / SL_NF4_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < nb; k++) {
        const float *v = w + k * SL_NF4_BLOCK;
        const int64_t len = n - k * SL_NF4_BLOCK < SL_NF4_BLOCK ? n - k * SL_NF4_BLOCK : SL_NF4_BLOCK;
        float am = 0.0f;
        for (int64_t j = 0; j < len; j++) am = fmaxf(am, fabsf(v[j]));
        const float inv = am > 0.0f ? 1.0f / am : 0.0f; /* kQuantizeBlockwise multiplies by 1/absmax */
        SlNf4Block *blk = &W->blocks[b0 + k];
        memset(blk, 0x77, sizeof *blk); /* past the end: bitsandbytes loads 0.0 -> code 7 */
        for (int64_t j = 0; j < len; j++) {
            const uint8_t q = nf4_nearest(v[j] * inv);
            blk->qs[j / 2] = (uint8_t)((j & 1) ? (blk->qs[j / 2] & 0xF0) | q : (blk->qs[j / 2] & 0x0F) | (q << 4));
        }
        absmax[b0 + k] = am;
    }
}

void sl_nf4_compress_absmax(SlNf4Weight *W, const float *absmax) {
    const int64_t nb = W->n_blocks;
    double sum = 0.0;
    for (int64_t b = 0; b < nb; b++) sum += absmax[b];
    const float offset = (float)(sum / (double)nb);   /* absmax.mean() */
    W->offset = offset;
    const int64_t nc = (nb + SL_NF4_DQ_BLOCK - 1) / SL_NF4_DQ_BLOCK;
    for (int64_t c = 0; c < nc; c++) {
        const int64_t s = c * SL_NF4_DQ_BLOCK, e = s + SL_NF4_DQ_BLOCK < nb ? s + SL_NF4_DQ_BLOCK : nb;
        float am = 0.0f;
        for (int64_t b = s; b < e; b++) am = fmaxf(am, fabsf(absmax[b] - offset));
        W->absmax2[c] = am;
        const float inv = am > 0.0f ? 1.0f / am : 0.0f;
        for (int64_t b = s; b < e; b++) {
            const float x = (absmax[b] - offset) * inv;
            int best = 0;
            float bd = INFINITY;
            for (int k = 0; k < 256; k++) {
                const float d = fabsf(sl_nf4_dynamic_map[k] - x);
                if (d < bd) bd = d, best = k;
            }
            W->absmax_q[b] = (uint8_t)best;
        }
    }
}

void sl_nf4_quantize(SlNf4Weight *W, const float *w, float *tmp) {
    float *am = W->dq ? tmp : W->absmax;
    sl_nf4_quantize_range(W, am, w, 0, W->O * W->I);
    if (W->dq) sl_nf4_compress_absmax(W, am);
}

/* ---- dequantization ---- */

static inline float nf4_elem(const SlNf4Weight *W, int64_t e) {
    const uint8_t byte = W->blocks[e / SL_NF4_BLOCK].qs[(e % SL_NF4_BLOCK) / 2];
    const uint8_t q = (e & 1) ? (byte & 15) : (byte >> 4);
    return sl_nf4_code[q] * sl_nf4_block_scale(W, e / SL_NF4_BLOCK);
}

static void deq_blocks_ref(float *dst, const SlNf4Weight *W, int64_t b0, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        const float s = sl_nf4_block_scale(W, b0 + b);
        const uint8_t *q = W->blocks[b0 + b].qs;
        float *d = dst + b * SL_NF4_BLOCK;
        for (int j = 0; j < SL_NF4_BLOCK / 2; j++) {
            d[2 * j] = sl_nf4_code[q[j] >> 4] * s;
            d[2 * j + 1] = sl_nf4_code[q[j] & 15] * s;
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)
#define SL_NF4_X86 1

/* 16 packed bytes -> 32 code indices in element order (high nibble first). */
#define NF4_SPLIT(by, i0, i1)                                                    \
    do {                                                                         \
        const __m128i m0f_ = _mm_set1_epi8(0x0F);                                \
        const __m128i hi_ = _mm_and_si128(_mm_srli_epi16((by), 4), m0f_);        \
        const __m128i lo_ = _mm_and_si128((by), m0f_);                           \
        (i0) = _mm_unpacklo_epi8(hi_, lo_);                                      \
        (i1) = _mm_unpackhi_epi8(hi_, lo_);                                      \
    } while (0)

__attribute__((target("avx512f,avx512bw,avx512vl")))
static void deq_blocks_avx512(float *dst, const SlNf4Weight *W, int64_t b0, int64_t nb) {
    const __m512 tab = _mm512_loadu_ps(sl_nf4_code);
    for (int64_t b = 0; b < nb; b++) {
        const __m512 s = _mm512_set1_ps(sl_nf4_block_scale(W, b0 + b));
        const uint8_t *q = W->blocks[b0 + b].qs;
        float *d = dst + b * SL_NF4_BLOCK;
        for (int h = 0; h < 2; h++) {
            __m128i i0, i1;
            const __m128i by = _mm_loadu_si128((const __m128i *)(q + 16 * h));
            NF4_SPLIT(by, i0, i1);
            _mm512_storeu_ps(d + 32 * h, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(i0), tab), s));
            _mm512_storeu_ps(d + 32 * h + 16,
                             _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(i1), tab), s));
        }
    }
}

__attribute__((target("avx2")))
static inline __m256 nf4_lut8_avx2(__m128i idx8, __m256 tlo, __m256 thi) {
    const __m256i idx = _mm256_cvtepu8_epi32(idx8);
    const __m256 a = _mm256_permutevar8x32_ps(tlo, idx), b = _mm256_permutevar8x32_ps(thi, idx);
    const __m256i hi = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7));
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(hi));
}

__attribute__((target("avx2")))
static void deq_blocks_avx2(float *dst, const SlNf4Weight *W, int64_t b0, int64_t nb) {
    const __m256 tlo = _mm256_loadu_ps(sl_nf4_code), thi = _mm256_loadu_ps(sl_nf4_code + 8);
    for (int64_t b = 0; b < nb; b++) {
        const __m256 s = _mm256_set1_ps(sl_nf4_block_scale(W, b0 + b));
        const uint8_t *q = W->blocks[b0 + b].qs;
        float *d = dst + b * SL_NF4_BLOCK;
        for (int h = 0; h < 2; h++) {
            __m128i i0, i1;
            const __m128i by = _mm_loadu_si128((const __m128i *)(q + 16 * h));
            NF4_SPLIT(by, i0, i1);
            float *o = d + 32 * h;
            _mm256_storeu_ps(o, _mm256_mul_ps(nf4_lut8_avx2(i0, tlo, thi), s));
            _mm256_storeu_ps(o + 8, _mm256_mul_ps(nf4_lut8_avx2(_mm_srli_si128(i0, 8), tlo, thi), s));
            _mm256_storeu_ps(o + 16, _mm256_mul_ps(nf4_lut8_avx2(i1, tlo, thi), s));
            _mm256_storeu_ps(o + 24, _mm256_mul_ps(nf4_lut8_avx2(_mm_srli_si128(i1, 8), tlo, thi), s));
        }
    }
}
#endif

int sl_nf4_isa_supported(SlNf4Isa isa) {
    switch (isa) {
    case SL_NF4_ISA_AUTO:
    case SL_NF4_ISA_REF: return 1;
#ifdef SL_NF4_X86
    case SL_NF4_ISA_AVX2: return __builtin_cpu_supports("avx2");
    case SL_NF4_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
#endif
    default: return 0;
    }
}

SlNf4Isa sl_nf4_isa_best(void) {
    if (sl_nf4_isa_supported(SL_NF4_ISA_AVX512)) return SL_NF4_ISA_AVX512;
    if (sl_nf4_isa_supported(SL_NF4_ISA_AVX2)) return SL_NF4_ISA_AVX2;
    return SL_NF4_ISA_REF;
}

const char *sl_nf4_isa_name(SlNf4Isa isa) {
    switch (isa) {
    case SL_NF4_ISA_AUTO: return "auto";
    case SL_NF4_ISA_REF: return "scalar";
    case SL_NF4_ISA_AVX2: return "avx2";
    case SL_NF4_ISA_AVX512: return "avx512";
    }
    return "?";
}

static void deq_blocks(float *dst, const SlNf4Weight *W, int64_t b0, int64_t nb, SlNf4Isa isa) {
    switch (isa) {
#ifdef SL_NF4_X86
    case SL_NF4_ISA_AVX512: deq_blocks_avx512(dst, W, b0, nb); return;
    case SL_NF4_ISA_AVX2: deq_blocks_avx2(dst, W, b0, nb); return;
#endif
    default: deq_blocks_ref(dst, W, b0, nb); return;
    }
}

void sl_nf4_dequantize_range(float *dst, const SlNf4Weight *W, int64_t e0, int64_t n, SlNf4Isa isa) {
    if (isa == SL_NF4_ISA_AUTO) isa = sl_nf4_isa_best();
    assert(sl_nf4_isa_supported(isa));
    int64_t e = e0;
    const int64_t end = e0 + n;
    for (; e < end && e % SL_NF4_BLOCK; e++) dst[e - e0] = nf4_elem(W, e);
    const int64_t nb = (end - e) / SL_NF4_BLOCK;
    if (nb > 0) deq_blocks(dst + (e - e0), W, e / SL_NF4_BLOCK, nb, isa);
    for (e += nb * SL_NF4_BLOCK; e < end; e++) dst[e - e0] = nf4_elem(W, e);
}

void sl_nf4_dequantize_ref(float *w, const SlNf4Weight *W) {
    const int64_t n = W->O * W->I;
    for (int64_t e = 0; e < n; e++) w[e] = nf4_elem(W, e);
}

/* ---- fused kernels ---- */

#define NF4_TILE_FLOATS (1 << 19)   /* dequantized tile: 2 MB */
#define NF4_CHUNK (64 * SL_NF4_BLOCK) /* parallel dequantization grain (elements) */

int64_t sl_nf4_tile_rows(const SlNf4Weight *W) {
    int64_t r = NF4_TILE_FLOATS / (W->I > 0 ? W->I : 1);
    if (r >= 32) r -= r % 16;
    if (r < 1) r = 1;
    return r < W->O ? r : W->O;
}

size_t sl_nf4_work_floats(const SlNf4Weight *W) { return (size_t)(sl_nf4_tile_rows(W) * W->I); }

/* work[0..n) = elements [e0, e0+n), threads take chunks aligned to absolute NF4_CHUNK
 * boundaries (each element is one exact multiply: any split gives the same bits). */
static void deq_parallel(float *work, const SlNf4Weight *W, int64_t e0, int64_t n, SlNf4Isa isa) {
    const int64_t c0 = e0 / NF4_CHUNK, c1 = (e0 + n + NF4_CHUNK - 1) / NF4_CHUNK;
#pragma omp parallel for schedule(static) if (c1 - c0 > 1)
    for (int64_t c = c0; c < c1; c++) {
        const int64_t s = c * NF4_CHUNK > e0 ? c * NF4_CHUNK : e0;
        const int64_t e = (c + 1) * NF4_CHUNK < e0 + n ? (c + 1) * NF4_CHUNK : e0 + n;
        sl_nf4_dequantize_range(work + (s - e0), W, s, e - s, isa);
    }
}

void sl_nf4_linear_forward_isa(float *y, const float *x, const SlNf4Weight *W, int64_t N, float *work,
                               SlNf4Isa isa, const SlKernels *kern) {
    const int64_t I = W->I, O = W->O, tr = sl_nf4_tile_rows(W);
    for (int64_t o0 = 0; o0 < O; o0 += tr) {
        const int64_t r = O - o0 < tr ? O - o0 : tr;
        deq_parallel(work, W, o0 * I, r * I, isa);                  /* work [r,I] = W[o0:o0+r, :] */
        sl_sgemm(0, 1, N, r, I, 1.0f, x, I, work, I, 0.0f, y + o0, O, kern); /* y[:, o0:o0+r] = x work^T */
    }
}

void sl_nf4_linear_backward_input_isa(float *din, const float *g, const SlNf4Weight *W, int64_t N,
                                      float *work, SlNf4Isa isa, const SlKernels *kern) {
    const int64_t I = W->I, O = W->O, tr = sl_nf4_tile_rows(W);
    for (int64_t o0 = 0; o0 < O; o0 += tr) {
        const int64_t r = O - o0 < tr ? O - o0 : tr;
        deq_parallel(work, W, o0 * I, r * I, isa);
        sl_sgemm(0, 0, N, I, r, 1.0f, g + o0, O, work, I, 1.0f, din, I, kern); /* din += g[:, o0:o0+r] work */
    }
}

void sl_nf4_linear_forward(float *y, const float *x, const SlNf4Weight *W, int64_t N, float *work,
                           const SlKernels *kern) {
    sl_nf4_linear_forward_isa(y, x, W, N, work, SL_NF4_ISA_AUTO, kern);
}

void sl_nf4_linear_backward_input(float *din, const float *g, const SlNf4Weight *W, int64_t N, float *work,
                                  const SlKernels *kern) {
    sl_nf4_linear_backward_input_isa(din, g, W, N, work, SL_NF4_ISA_AUTO, kern);
}

void sl_nf4_linear_forward_ref(float *y, const float *x, const SlNf4Weight *W, int64_t N) {
    const int64_t I = W->I, O = W->O;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            double acc = 0.0;
            for (int64_t i = 0; i < I; i++) acc += (double)x[n * I + i] * nf4_elem(W, o * I + i);
            y[n * O + o] = (float)acc;
        }
}

void sl_nf4_linear_backward_input_ref(float *din, const float *g, const SlNf4Weight *W, int64_t N) {
    const int64_t I = W->I, O = W->O;
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < I; i++) {
            double acc = 0.0;
            for (int64_t o = 0; o < O; o++) acc += (double)g[n * O + o] * nf4_elem(W, o * I + i);
            din[n * I + i] += (float)acc;
        }
}

/* ---- the base hook ---- */

static void nf4_hook_forward(SlHook *h, const SlLinear *m, float *y, const float *x, int64_t N) {
    SlNf4Linear *q = h->self;
    assert(m->I == q->W.I && m->O == q->W.O);
    sl_nf4_linear_forward(y, x, &q->W, N, q->work, &m->kern);
}

static void nf4_hook_backward_input(SlHook *h, const SlLinear *m, float *din, const float *g, int64_t N) {
    SlNf4Linear *q = h->self;
    sl_nf4_linear_backward_input(din, g, &q->W, N, q->work, &m->kern);
}

static const SlHookOps nf4_hook_ops = {
    .lin_base_forward = nf4_hook_forward,
    .lin_base_backward_input = nf4_hook_backward_input,
};

void sl_nf4_linear_init(SlNf4Linear *q, float *work) {
    q->hook.ops = &nf4_hook_ops;
    q->hook.self = q;
    q->work = work;
}

SlNf4Linear *sl_nf4_linear_of(SlHook *h) { return h && h->ops == &nf4_hook_ops ? h->self : NULL; }
