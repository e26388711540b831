/* tensor.c - dtypes, views, conversions, aligned memory; see tensor.h. */
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static const struct { const char *name; size_t size; } k_dtypes[SL_DTYPE_COUNT] = {
    [SL_F32] = {"F32", 4}, [SL_F16] = {"F16", 2}, [SL_BF16] = {"BF16", 2},
    [SL_I64] = {"I64", 8}, [SL_I32] = {"I32", 4}, [SL_U8] = {"U8", 1},
    [SL_I8] = {"I8", 1},   [SL_BOOL] = {"BOOL", 1}, [SL_F64] = {"F64", 8},
    [SL_I16] = {"I16", 2},
};

size_t sl_dtype_size(SlDType dt) { return (unsigned)dt < SL_DTYPE_COUNT ? k_dtypes[dt].size : 0; }
const char *sl_dtype_name(SlDType dt) { return (unsigned)dt < SL_DTYPE_COUNT ? k_dtypes[dt].name : "?"; }

int sl_dtype_from_name(const char *s, SlDType *out) {
    for (int i = 0; i < SL_DTYPE_COUNT; i++)
        if (strcmp(s, k_dtypes[i].name) == 0) { *out = (SlDType)i; return 1; }
    return 0;
}

int64_t sl_shape_numel(int ndim, const int64_t *shape) {
    /* a zero dimension first: [2^32, 2^35, 0, 3] is a valid empty tensor (the safetensors
     * reader accepts it) whose other dimensions alone overflow an int64 product */
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}
int64_t sl_tensor_numel(const SlTensor *t) { return sl_shape_numel(t->ndim, t->shape); }
size_t sl_tensor_nbytes(const SlTensor *t) { return (size_t)sl_tensor_numel(t) * sl_dtype_size(t->dtype); }

const char *sl_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

SlTensor sl_tensor_make(void *data, SlDType dt, int ndim, const int64_t *shape) {
    SlTensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dt;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

/* ---- half / bfloat16 ---- */

float sl_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: normalize */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t sl_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow to inf */
    if (absx < 0x38800000u) { /* subnormal or zero in half */
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        int shift = (int)(126 - e); /* 14..24: half subnormal = m * 2^(e-126) */
        uint32_t half_m = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half_m & 1))) half_m++;
        return (uint16_t)(sign | half_m);
    }
    uint32_t h = ((absx - 0x38000000u) >> 13);
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

void sl_f16_to_f32(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++) { /* src may be unaligned (mapped files): load bytes */
        uint16_t h;
        memcpy(&h, (const char *)src + 2 * i, 2);
        dst[i] = sl_half_to_float(h);
    }
}

void sl_f32_to_f16(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) dst[i] = sl_float_to_half(src[i]);
}

void sl_bf16_to_f32(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
#endif
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, (const char *)src + 2 * i, 2);
        uint32_t b = (uint32_t)h << 16;
        memcpy(dst + i, &b, 4);
    }
}

void sl_f32_to_bf16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t x;
        memcpy(&x, src + i, 4);
        if ((x & 0x7fffffffu) > 0x7f800000u) { dst[i] = (uint16_t)((x >> 16) | 0x40); continue; }
        x += 0x7fff + ((x >> 16) & 1);
        dst[i] = (uint16_t)(x >> 16);
    }
}

SlStatus sl_convert_to_f32(float *dst, const void *src, SlDType dt, size_t n, SlCtx *ctx) {
    switch (dt) {
    case SL_F32: memmove(dst, src, n * 4); break;
    case SL_F16: sl_f16_to_f32(dst, src, n); break;
    case SL_BF16: sl_bf16_to_f32(dst, src, n); break;
    case SL_F64: for (size_t i = 0; i < n; i++) { double v; memcpy(&v, (const char *)src + 8 * i, 8); dst[i] = (float)v; } break;
    case SL_I64: for (size_t i = 0; i < n; i++) { int64_t v; memcpy(&v, (const char *)src + 8 * i, 8); dst[i] = (float)v; } break;
    case SL_I32: for (size_t i = 0; i < n; i++) { int32_t v; memcpy(&v, (const char *)src + 4 * i, 4); dst[i] = (float)v; } break;
    case SL_I16: for (size_t i = 0; i < n; i++) { int16_t v; memcpy(&v, (const char *)src + 2 * i, 2); dst[i] = (float)v; } break;
    case SL_U8: for (size_t i = 0; i < n; i++) dst[i] = ((const uint8_t *)src)[i]; break;
    case SL_I8: for (size_t i = 0; i < n; i++) dst[i] = ((const int8_t *)src)[i]; break;
    default: return sl_fail(ctx, SL_ERR_SHAPE, "cannot convert dtype %s to F32", sl_dtype_name(dt));
    }
    return SL_OK;
}

/* ---- memory ---- */

void *sl_alloc(size_t bytes) {
    if (bytes == 0) bytes = SL_ALIGN;
    void *p = NULL;
    if (posix_memalign(&p, SL_ALIGN, sl_align_up(bytes)) != 0) return NULL;
    return p;
}

void *sl_calloc(size_t bytes) {
    void *p = sl_alloc(bytes);
    if (p) memset(p, 0, sl_align_up(bytes ? bytes : SL_ALIGN));
    return p;
}

void sl_free(void *p) { free(p); }

SlStatus sl_arena_init(SlArena *a, size_t size, const char *role, SlCtx *ctx) {
    memset(a, 0, sizeof *a);
    a->role = role ? role : "arena";
    a->base = sl_calloc(size);
    if (!a->base)
        return sl_fail(ctx, SL_ERR_NOMEM, "cannot allocate %.1f MiB for %s", size / 1048576.0, a->role);
    a->size = sl_align_up(size ? size : SL_ALIGN);
    return SL_OK;
}

void *sl_arena_take(SlArena *a, size_t bytes) {
    size_t b = sl_align_up(bytes);
    if (a->used + b > a->size || a->used + b < a->used) return NULL;
    void *p = a->base + a->used;
    a->used += b;
    return p;
}

float *sl_arena_take_f32(SlArena *a, int64_t n) { return (float *)sl_arena_take(a, (size_t)n * sizeof(float)); }

void sl_arena_reset(SlArena *a) { a->used = 0; }

void sl_arena_free(SlArena *a) {
    sl_free(a->base);
    memset(a, 0, sizeof *a);
}

size_t sl_count_nonfinite(const float *x, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += !isfinite(x[i]);
    return c;
}

float sl_max_abs(const float *x, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) { float v = fabsf(x[i]); if (v > m) m = v; }
    return m;
}
