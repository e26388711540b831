/* bf16.h - bfloat16 scalars: the upper half of an IEEE binary32 (1 sign, 8 exponent,
 * 7 mantissa bits). Widening is exact (the bits shifted up); narrowing rounds to
 * nearest, ties to even, with NaN kept NaN (quieted, sign kept) and overflow going to
 * Inf as the rounding says. Denormals are rounded like any other value (no flushing):
 * these are the numbers the bf16 GEMM kernel (nn/gemm.h, SL_GEMM_KERNEL_BF16) packs.
 *
 * The array forms, n elements at a time (vectorised where the CPU allows), are
 * core/tensor.h's sl_f32_to_bf16 and sl_bf16_to_f32; they give these functions' bits
 * (tests/test_gemm_bf16.c). Binary16's equivalents: sl_float_to_half / sl_half_to_float.
 *
 * Not here: the GEMM's vector rounding while packing (nn/gemm.c), safetensors I/O.
 */
#ifndef SL_NN_BF16_H
#define SL_NN_BF16_H

#include <stdint.h>
#include <string.h>

/* f rounded to the nearest bfloat16 (ties to even); a NaN stays a NaN. */
static inline uint16_t sl_float_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN, same sign */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* The bfloat16 h as fp32 (exact). */
static inline float sl_bf16_to_float(uint16_t h) {
    const uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* f rounded to bfloat16 and widened back: the fp32 number the bf16 kernel multiplies. */
static inline float sl_bf16_round(float f) { return sl_bf16_to_float(sl_float_to_bf16(f)); }

#endif
