/* nn_exp.h - internal to nn/: a vectorized e^x for softmax and SiLU.
 *
 * Range reduction x = n ln2 + r (|r| <= ln2/2, ln2 split in two parts), a
 * degree-7 Taylor polynomial for e^r, then scaling by 2^n. Relative error
 * about 2e-7 (measured against double exp in tests/test_nn_forward.c).
 * Inputs below -87 give exactly 0 (so -inf works as a mask); inputs above 88
 * are clamped to e^88. AVX-512 and AVX2+FMA paths, scalar fallback; with
 * AVX-512, sl_nn_exp16 is the same e^x on one vector (SiLU uses it directly).
 *
 * Not a public header: only the nn/ sources (and the nn tests) include it.
 */
#ifndef SL_NN_EXP_H
#define SL_NN_EXP_H

#include <math.h>
#include <stdint.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

/* Scalar e^x: 0 for x < -87 (and -inf), e^88 for x > 88. */
static inline float sl_nn_expf(float x) {
    const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float n = floorf(xc * 1.44269504f + 0.5f);
    const float r = (xc - n * 0.693145752f) - n * 1.42860677e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)n + 127) << 23;
    return x < -87.0f ? 0.0f : p * u.f;
}

#if defined(__AVX512F__)
/* e^x for 16 lanes: the reduction and polynomial of sl_nn_expf, 2^n by scalef;
 * 0 below -87 (and for -inf, NaN). */
static inline __m512 sl_nn_exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.0f);
    const __mmask16 live = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.0f));
    const __m512 nn = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fnmadd_ps(nn, _mm512_set1_ps(1.42860677e-6f), _mm512_fnmadd_ps(nn, _mm512_set1_ps(0.693145752f), xc));
    __m512 q = _mm512_set1_ps(1.0f / 5040.0f);
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 720.0f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 120.0f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 24.0f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 6.0f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0.5f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(live, q, nn);
}
#endif

/* p[j] = e^(p[j] - sub) for j < n; returns the sum. Vector versions use the
 * same reduction and polynomial as sl_nn_expf (AVX-512 scales by 2^n with scalef). */
static inline float sl_nn_exp_row(float *p, int64_t n, float sub) {
    int64_t j = 0;
    float sum = 0.0f;
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    const __m512 vs = _mm512_set1_ps(sub);
    for (; j < n; j += 16) {
        const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
        const __m512 e = _mm512_maskz_mov_ps(k, sl_nn_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p + j), vs)));
        _mm512_mask_storeu_ps(p + j, k, e);
        acc = _mm512_add_ps(acc, e);
    }
    return _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 acc = _mm256_setzero_ps();
    const __m256 vs = _mm256_set1_ps(sub), lo = _mm256_set1_ps(-87.0f), hi = _mm256_set1_ps(88.0f), l2e = _mm256_set1_ps(1.44269504f);
    const __m256 c1 = _mm256_set1_ps(0.693145752f), c2 = _mm256_set1_ps(1.42860677e-6f);
    for (; j + 8 <= n; j += 8) {
        const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(p + j), vs);
        const __m256 live = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
        const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
        const __m256 nn = _mm256_round_ps(_mm256_mul_ps(xc, l2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256 r = _mm256_fnmadd_ps(nn, c2, _mm256_fnmadd_ps(nn, c1, xc));
        __m256 q = _mm256_set1_ps(1.0f / 5040.0f);
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f / 720.0f));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f / 120.0f));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f / 24.0f));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f / 6.0f));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.5f));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f));
        const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nn), _mm256_set1_epi32(127)), 23);
        const __m256 e = _mm256_and_ps(_mm256_mul_ps(q, _mm256_castsi256_ps(bits)), live);
        _mm256_storeu_ps(p + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float t[8];
    _mm256_storeu_ps(t, acc);
    sum = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
#endif
    for (; j < n; j++) {
        p[j] = sl_nn_expf(p[j] - sub);
        sum += p[j];
    }
    return sum;
}

/* y[i] = y[i] * sigmoid(a * y[i]) in place (SiLU for a = 1, quick_gelu for 1.702). */
static inline void sl_nn_xsigmoid_inplace(float *y, int64_t n, float a) {
#if defined(__AVX512F__)
    const __m512 na = _mm512_set1_ps(-a), one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 x = _mm512_maskz_loadu_ps(k, y + i);
        const __m512 e = sl_nn_exp16(_mm512_mul_ps(na, x));
        _mm512_mask_storeu_ps(y + i, k, _mm512_div_ps(x, _mm512_add_ps(one, e)));
    }
#else
    float t[64]; /* e^(-a y) for one chunk */
    for (int64_t i0 = 0; i0 < n; i0 += 64) {
        const int64_t m = n - i0 < 64 ? n - i0 : 64;
#pragma omp simd
        for (int64_t j = 0; j < m; j++) t[j] = -a * y[i0 + j];
        sl_nn_exp_row(t, m, 0.0f);
#pragma omp simd
        for (int64_t j = 0; j < m; j++) y[i0 + j] = y[i0 + j] / (1.0f + t[j]);
    }
#endif
}

#endif
