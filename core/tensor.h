/* tensor.h - dtypes, a row-major tensor view, and aligned arenas.
 *
 * An SlTensor is a view: it never owns its data. Data lives in an SlArena
 * (one per role: frozen weights, adapter, grads, moments, activations) or in
 * a mapped file. Shapes are row-major, outermost first, like PyTorch.
 *
 * Dimension letters used across the project: B batch, C channels, H/W image
 * height/width, T tokens, D model width, N rows of a GEMM, K reduction.
 */
#ifndef SL_TENSOR_H
#define SL_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define SL_MAX_DIMS 8
#define SL_ALIGN 64

typedef enum SlDType {
    SL_F32 = 0, SL_F16, SL_BF16, SL_I64, SL_I32, SL_U8, SL_I8, SL_BOOL, SL_F64, SL_I16,
    SL_DTYPE_COUNT
} SlDType;

typedef struct SlTensor {
    void *data;                   /* not owned */
    SlDType dtype;
    int ndim;
    int64_t shape[SL_MAX_DIMS];
    const char *name;             /* not owned; may be NULL */
} SlTensor;

size_t sl_dtype_size(SlDType dt);
const char *sl_dtype_name(SlDType dt);            /* "F32", "F16", ... (safetensors spelling) */
int sl_dtype_from_name(const char *s, SlDType *out); /* 1 if known */

int64_t sl_shape_numel(int ndim, const int64_t *shape);
int64_t sl_tensor_numel(const SlTensor *t);
size_t sl_tensor_nbytes(const SlTensor *t);
/* Formats "[2,4,16,16]" into buf. */
const char *sl_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* Builds a view. */
SlTensor sl_tensor_make(void *data, SlDType dt, int ndim, const int64_t *shape);

/* Element conversion; `n` elements. Vectorized where the CPU allows. */
void sl_f16_to_f32(float *dst, const uint16_t *src, size_t n);
void sl_bf16_to_f32(float *dst, const uint16_t *src, size_t n);
void sl_f32_to_f16(uint16_t *dst, const float *src, size_t n);  /* round to nearest even */
void sl_f32_to_bf16(uint16_t *dst, const float *src, size_t n); /* round to nearest even */
float sl_half_to_float(uint16_t h);
uint16_t sl_float_to_half(float f);

/* Converts any numeric dtype to f32 (integers are cast). Returns SL_ERR_SHAPE for BOOL. */
SlStatus sl_convert_to_f32(float *dst, const void *src, SlDType dt, size_t n, SlCtx *ctx);

/* ---- aligned memory ---- */

/* 64-byte aligned allocation; sl_free on NULL is a no-op. Returns NULL on failure. */
void *sl_alloc(size_t bytes);
void *sl_calloc(size_t bytes);
void sl_free(void *p);

/* An arena: one aligned block, carved by bumping an offset. Plan the total
 * with sl_arena_plan, allocate once, then take pieces. */
typedef struct SlArena {
    uint8_t *base;
    size_t size;
    size_t used;
    const char *role;   /* for error messages: "frozen weights", "activations", ... */
} SlArena;

/* Rounds bytes up to SL_ALIGN. Use to sum a plan before sl_arena_init. */
static inline size_t sl_align_up(size_t bytes) { return (bytes + (SL_ALIGN - 1)) & ~(size_t)(SL_ALIGN - 1); }

/* Allocates `size` zeroed bytes. */
SlStatus sl_arena_init(SlArena *a, size_t size, const char *role, SlCtx *ctx);
/* Takes `bytes` (rounded up to SL_ALIGN) from the arena; NULL if it does not fit
 * (a planning bug: callers assert). */
void *sl_arena_take(SlArena *a, size_t bytes);
float *sl_arena_take_f32(SlArena *a, int64_t n);
void sl_arena_reset(SlArena *a);
void sl_arena_free(SlArena *a);

/* ---- small helpers ---- */
/* Counts the non-finite values in x[0..n). */
size_t sl_count_nonfinite(const float *x, size_t n);
/* max |x| */
float sl_max_abs(const float *x, size_t n);

#endif
