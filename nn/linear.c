/* linear.c - fully connected layer: out[N,O] = in[N,I] w[O,I]^T + b[O].
 *
 * The fast path is three GEMMs (forward, din, dw; nn/gemm.h: tiled
 * AVX-512 or OpenBLAS, same bits for any thread count); the _ref
 * twins are plain triple loops with double accumulators, used as the test
 * oracle and never calling BLAS.
 *
 * Dimension letters: N rows (tokens), I in-features, O out-features.
 * Frozen 16-bit weights: binary16 (_f16: widened while packing, the fp32 kernels'
 * bits) and bfloat16 (_bf16: the products on the bf16 kernel, nn/gemm.h).
 * Not here: LoRA (styles/), quantized weights (nn/nf4).
 */
#include "nn.h"
#include "nn/gemm.h"

/* out [N,O] = in [N,I] op(W)^T + b, W [O,I] as an sl_gemm_op operand (fp32 or binary16). */
static void linear_forward_op(float *out, const float *in, const SlGemmOperand *W, const float *b, int64_t N,
                              int64_t I, int64_t O, const SlKernels *kern) {
    if (N <= 0 || O <= 0) return;
    float beta = 0.0f;
    if (b) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < O; o++) out[n * O + o] = b[o];
        beta = 1.0f;
    }
    if (I <= 0) {
        if (!b)
            for (int64_t i = 0; i < N * O; i++) out[i] = 0.0f;
        return;
    }
    const SlGemmOperand A = sl_gemm_f32(in, I, 0);
    sl_gemm_op(N, O, I, 1.0f, &A, W, beta, out, O, kern);
}

/* out [N,O], in [N,I], w [O,I], b [O] or NULL. out is overwritten. */
void sl_linear_forward(float *out, const float *in, const float *w, const float *b,
                       int64_t N, int64_t I, int64_t O, const SlKernels *kern) {
    const SlGemmOperand W = sl_gemm_f32(w, I, 1);
    linear_forward_op(out, in, &W, b, N, I, O, kern);
}

/* din [N,I] += dout w; dw [O,I] += dout^T in; db [O] += sum_n dout. */
void sl_linear_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *w, int64_t N, int64_t I, int64_t O, const SlKernels *kern) {
    if (N <= 0 || O <= 0) return;
    if (din && I > 0)
        sl_sgemm(0, 0, N, I, O, 1.0f, dout, O, w, I, 1.0f, din, I, kern);
    if (dw && I > 0)
        sl_sgemm(1, 0, O, I, N, 1.0f, dout, O, in, I, 1.0f, dw, I, kern);
    if (db) {
        for (int64_t n = 0; n < N; n++) {
            const float *d = dout + n * O;
            for (int64_t o = 0; o < O; o++) db[o] += d[o];
        }
    }
}

/* ---- frozen binary16 weights: w16 is widened inside sl_gemm_op's packing ---- */

void sl_linear_forward_f16(float *out, const float *in, const uint16_t *w16, const float *b,
                           int64_t N, int64_t I, int64_t O, const SlKernels *kern) {
    const SlGemmOperand W = sl_gemm_f16(w16, I, 1);
    linear_forward_op(out, in, &W, b, N, I, O, kern);
}

void sl_linear_backward_input_f16(float *din, const float *dout, const uint16_t *w16,
                                  int64_t N, int64_t I, int64_t O, const SlKernels *kern) {
    if (N <= 0 || O <= 0 || I <= 0 || !din) return;
    const SlGemmOperand A = sl_gemm_f32(dout, O, 0), B = sl_gemm_f16(w16, I, 0);
    sl_gemm_op(N, I, O, 1.0f, &A, &B, 1.0f, din, I, kern);
}

/* ---- frozen bfloat16 weights: every product on the bf16 kernel (in rounded while packed) ---- */

void sl_linear_forward_bf16(float *out, const float *in, const uint16_t *wb, const float *b,
                            int64_t N, int64_t I, int64_t O, const SlKernels *kern) {
    const SlKernels kb = sl_kernels_bf16(kern);
    const SlGemmOperand W = sl_gemm_bf16(wb, I, 1);
    linear_forward_op(out, in, &W, b, N, I, O, &kb);
}

void sl_linear_backward_input_bf16(float *din, const float *dout, const uint16_t *wb,
                                   int64_t N, int64_t I, int64_t O, const SlKernels *kern) {
    if (N <= 0 || O <= 0 || I <= 0 || !din) return;
    const SlKernels kb = sl_kernels_bf16(kern);
    const SlGemmOperand A = sl_gemm_f32(dout, O, 0), B = sl_gemm_bf16(wb, I, 0);
    sl_gemm_op(N, I, O, 1.0f, &A, &B, 1.0f, din, I, &kb);
}

void sl_linear_forward_ref(float *out, const float *in, const float *w, const float *b,
                           int64_t N, int64_t I, int64_t O) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            double s = b ? b[o] : 0.0;
            for (int64_t i = 0; i < I; i++) s += (double)in[n * I + i] * w[o * I + i];
            out[n * O + o] = (float)s;
        }
}

void sl_linear_backward_ref(float *din, float *dw, float *db, const float *dout,
                            const float *in, const float *w, int64_t N, int64_t I, int64_t O) {
    if (din)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < I; i++) {
                double s = 0.0;
                for (int64_t o = 0; o < O; o++) s += (double)dout[n * O + o] * w[o * I + i];
                din[n * I + i] += (float)s;
            }
    if (dw)
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < I; i++) {
                double s = 0.0;
                for (int64_t n = 0; n < N; n++) s += (double)dout[n * O + o] * in[n * I + i];
                dw[o * I + i] += (float)s;
            }
    if (db)
        for (int64_t o = 0; o < O; o++) {
            double s = 0.0;
            for (int64_t n = 0; n < N; n++) s += dout[n * O + o];
            db[o] += (float)s;
        }
}
