/* nf4.h - 4-bit NormalFloat (NF4) frozen weights, as bitsandbytes' quantize_4bit, and
 * fused kernels that multiply with them without materialising the fp32 matrix.
 *
 * Format (bitsandbytes-foundation/bitsandbytes: bitsandbytes/functional.py quantize_4bit /
 * dequantize_4bit / create_dynamic_map, csrc/kernels.cu kQuantizeBlockwise (NF4 case),
 * dQuantizeNF4, dDequantizeNF4):
 *   - W [O,I] is flattened row-major and cut into blocks of SL_NF4_BLOCK = 64 consecutive
 *     elements (a block may span two rows when I % 64 != 0; the last block may be short).
 *   - absmax[b] = max |w| over block b; each element x * (1/absmax) is mapped to the NEAREST
 *     of the 16 NF4 values (dQuantizeNF4 compares against the midpoints); an all-zero block
 *     gives code 7 (0.0), and so do the missing elements past the end of a short last block
 *     (kQuantizeBlockwise loads them as 0.0).
 *   - two codes per byte, the FIRST element in the HIGH nibble (qvals = q(v[2j]) << 4 | q(v[2j+1])).
 *   - dequantization: w = nf4[q] * absmax[b].
 *   - double quantization (compress_statistics=True): offset = mean(absmax); the centred
 *     absmax - offset is quantized with quantize_blockwise(code = the 256-entry "dynamic"
 *     map, blocksize 256): absmax2[c] = max |.| of its block c, a code byte = nearest map
 *     value of (absmax - offset) / absmax2; recovered absmax = map[q] * absmax2[c] + offset.
 * In memory the codes are SlNf4Block (32 bytes per 64 elements) and the per-block scales
 * are parallel arrays (bitsandbytes' QuantState.absmax / state2), so a file stores them as
 * they are (see pipeline/quant.h for the safetensors layout).
 *
 * Fused kernels. Rows of W are processed in tiles of a FIXED number of rows (depends on I
 * only, never on the thread count): a tile is dequantized into `work` (SIMD: AVX-512 or
 * AVX2 chosen at run time, a scalar fallback) and multiplied with sl_sgemm. Each output
 * element therefore has one reduction order for any thread count (forward: one sl_sgemm
 * over the full I; backward-input: the tiles' contributions added in tile order).
 *
 * Dimension letters: N rows of activations, I in-features, O out-features.
 *
 * Not here: which model layers are quantized, files (pipeline/quant.c).
 */
#ifndef SL_NN_NF4_H
#define SL_NN_NF4_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "nn/module.h"

#define SL_NF4_BLOCK 64      /* elements per absmax (bitsandbytes blocksize=64) */
#define SL_NF4_DQ_BLOCK 256  /* absmax values per second-level scale (blocksize=256) */

/* 64 codes, two per byte, element 2j in the high nibble of qs[j]. */
typedef struct SlNf4Block {
    uint8_t qs[SL_NF4_BLOCK / 2];
} SlNf4Block;
static_assert(sizeof(SlNf4Block) == SL_NF4_BLOCK / 2, "SlNf4Block must be 32 packed bytes");

/* The 16 NF4 values (index = code). */
extern const float sl_nf4_code[16];
/* bitsandbytes' 8-bit dynamic map (create_dynamic_map(signed=True)), index = code byte. */
extern const float sl_nf4_dynamic_map[256];

typedef struct SlNf4Weight {
    int64_t O, I;            /* shape of the dense W */
    int64_t n_blocks;        /* ceil(O*I / 64) */
    SlNf4Block *blocks;      /* [n_blocks] (past the end of a short last block: code 7 = 0.0, as bitsandbytes pads with zeros) */
    int dq;                  /* 1: double-quantized scales */
    float *absmax;           /* [n_blocks] fp32 scales (dq = 0) */
    uint8_t *absmax_q;       /* [n_blocks] (dq = 1) */
    float *absmax2;          /* [ceil(n_blocks/256)] (dq = 1) */
    float offset;            /* (dq = 1) */
} SlNf4Weight;

/* Bytes of memory sl_nf4_bind needs for an [O,I] weight (each array SL_ALIGN-aligned). */
size_t sl_nf4_bytes(int64_t O, int64_t I, int dq);
/* Packed size as stored by bitsandbytes: codes (O*I+1)/2 bytes + scales. */
size_t sl_nf4_packed_bytes(int64_t O, int64_t I, int dq);
/* Carves W's arrays out of mem (sl_nf4_bytes(O,I,dq) bytes, 64-byte aligned). */
void sl_nf4_bind(SlNf4Weight *W, void *mem, int64_t O, int64_t I, int dq);

/* Quantizes n elements of the flattened weight starting at element e0 (e0 % 64 == 0; n % 64
 * == 0 unless the range ends at O*I) into W's codes and the fp32 scales absmax[e0/64 ..]
 * (absmax = W->absmax when dq = 0, a caller buffer of n_blocks floats when dq = 1). */
void sl_nf4_quantize_range(SlNf4Weight *W, float *absmax, const float *w, int64_t e0, int64_t n);
/* Double-quantizes the fp32 scales absmax [n_blocks] into W (dq = 1). */
void sl_nf4_compress_absmax(SlNf4Weight *W, const float *absmax);
/* Whole weight: w [O,I] -> W (bound). tmp: n_blocks floats when W->dq (else may be NULL). */
void sl_nf4_quantize(SlNf4Weight *W, const float *w, float *tmp);
/* Scale of block b. */
static inline float sl_nf4_block_scale(const SlNf4Weight *W, int64_t b) {
    if (!W->dq) return W->absmax[b];
    return sl_nf4_dynamic_map[W->absmax_q[b]] * W->absmax2[b / SL_NF4_DQ_BLOCK] + W->offset;
}

/* Instruction sets of the dequantizer. */
typedef enum SlNf4Isa { SL_NF4_ISA_AUTO = 0, SL_NF4_ISA_REF, SL_NF4_ISA_AVX2, SL_NF4_ISA_AVX512 } SlNf4Isa;
/* 1 if this CPU (and build) can run isa. */
int sl_nf4_isa_supported(SlNf4Isa isa);
/* The isa AUTO resolves to. */
SlNf4Isa sl_nf4_isa_best(void);
const char *sl_nf4_isa_name(SlNf4Isa isa);

/* dst[0..n) = elements [e0, e0+n) of the dequantized, flattened W (any e0, n). */
void sl_nf4_dequantize_range(float *dst, const SlNf4Weight *W, int64_t e0, int64_t n, SlNf4Isa isa);
/* Reference: w [O,I] = dequantize(W), scalar. */
void sl_nf4_dequantize_ref(float *w, const SlNf4Weight *W);

/* Rows per tile of the fused kernels (a function of I only) and their scratch size. */
int64_t sl_nf4_tile_rows(const SlNf4Weight *W);
size_t sl_nf4_work_floats(const SlNf4Weight *W);

/* y [N,O] = x [N,I] W^T (overwrites y). work: sl_nf4_work_floats(W) floats. */
void sl_nf4_linear_forward(float *y, const float *x, const SlNf4Weight *W, int64_t N, float *work,
                           const SlKernels *kern);
/* din [N,I] += g [N,O] W. kern: the GEMM's kernels (nn/kernels.h; NULL: the default). */
void sl_nf4_linear_backward_input(float *din, const float *g, const SlNf4Weight *W, int64_t N,
                                  float *work, const SlKernels *kern);
/* Same, with the dequantizer's isa forced (tests, benches). */
void sl_nf4_linear_forward_isa(float *y, const float *x, const SlNf4Weight *W, int64_t N, float *work,
                               SlNf4Isa isa, const SlKernels *kern);
void sl_nf4_linear_backward_input_isa(float *din, const float *g, const SlNf4Weight *W, int64_t N,
                                      float *work, SlNf4Isa isa, const SlKernels *kern);
/* Plain twins (scalar dequantization per element, double accumulation): the test oracle. */
void sl_nf4_linear_forward_ref(float *y, const float *x, const SlNf4Weight *W, int64_t N);
void sl_nf4_linear_backward_input_ref(float *din, const float *g, const SlNf4Weight *W, int64_t N);

/* ---- the NF4 base hook (nn/module.h: it REPLACES the dense base product) ----
 * Installed on an SlLinear whose m->w is NULL and m->dw NULL: lin_base_forward runs
 * sl_nf4_linear_forward, lin_base_backward_input sl_nf4_linear_backward_input; the
 * weight gets no gradient (frozen). Adapters stack on top (styles/adapter_set.c keeps it
 * as the base). `work` is scratch of at least sl_nf4_work_floats(&W) floats; hooks of one
 * model may share it (modules run one at a time). */
typedef struct SlNf4Linear {
    SlHook hook;             /* hook.self = this */
    SlNf4Weight W;
    float *work;
} SlNf4Linear;

/* Sets q->hook (ops + self); q->W and q->work are the caller's. */
void sl_nf4_linear_init(SlNf4Linear *q, float *work);
/* The NF4 state behind a hook, or NULL when h is not an NF4 base hook. */
SlNf4Linear *sl_nf4_linear_of(SlHook *h);

#endif
