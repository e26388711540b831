/* nn.h - layer kernels with forward and backward side by side.
 *
 * Layout: images are NCHW float32 (as PyTorch), token sequences are [B,T,D]
 * row-major. Weights have PyTorch's shapes: Linear w [O,I], Conv2d w
 * [Co,Ci,kh,kw]. Argument order follows llm.c: outputs first, then caches,
 * then inputs, then weights, then dimensions.
 *
 * Backward functions ACCUMULATE (+=) into every gradient they are given
 * (input gradients included); the caller zeroes them. A NULL gradient pointer
 * means "not wanted" and that work is skipped.
 *
 * Scratch memory is passed in (sizes from the *_workspace functions) so that
 * nothing is allocated inside a training step.
 *
 * Every fast kernel has a plain `_ref` twin with the same arguments (less the
 * last), kept as the test oracle and as the portable fallback.
 *
 * The fast kernels take, last, the caller's kernel configuration `kern`
 * (nn/kernels.h; NULL: the CPU's default): a plan passes its own to every call,
 * so the kernels (and bits) follow the plan, never a global setting.
 *
 * Dimension letters: B batch, C channels, G groups, H/W height/width,
 * N rows, I in-features, O out-features, T tokens, Tq/Tk query/key tokens,
 * NH heads, HD head dim.
 */
#ifndef SL_NN_H
#define SL_NN_H

#include <stddef.h>
#include <stdint.h>

#include "nn/kernels.h"

/* ---- Linear: out[N,O] = in[N,I] w[O,I]^T + b[O] ---- */
void sl_linear_forward(float *out, const float *in, const float *w, const float *b,
                       int64_t N, int64_t I, int64_t O, const SlKernels *kern);
void sl_linear_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *w, int64_t N, int64_t I, int64_t O, const SlKernels *kern);
void sl_linear_forward_ref(float *out, const float *in, const float *w, const float *b,
                           int64_t N, int64_t I, int64_t O);
void sl_linear_backward_ref(float *din, float *dw, float *db, const float *dout,
                            const float *in, const float *w, int64_t N, int64_t I, int64_t O);
/* A frozen binary16 weight w16 [O,I] (no dw): the same products with the halves widened
 * while packing (nn/gemm.h sl_gemm_op), bit-identical to the fp32 kernels on the widened
 * weight. out is overwritten (+ b); din +=. */
void sl_linear_forward_f16(float *out, const float *in, const uint16_t *w16, const float *b,
                           int64_t N, int64_t I, int64_t O, const SlKernels *kern);
void sl_linear_backward_input_f16(float *din, const float *dout, const uint16_t *w16,
                                  int64_t N, int64_t I, int64_t O, const SlKernels *kern);
/* A frozen bfloat16 weight wb [O,I] (--base bf16, no dw): both products run on the bf16 GEMM
 * kernel whatever kern->gemm says (sl_kernels_bf16; nn/gemm.h): in / dout rounded to bfloat16
 * while packed, fp32 sums; the bias is added in fp32. Not the fp32 result: each operand
 * carries bfloat16's relative error (<= 2^-9). The bits do not depend on the thread count.
 * out is overwritten (+ b); din +=. */
void sl_linear_forward_bf16(float *out, const float *in, const uint16_t *wb, const float *b,
                            int64_t N, int64_t I, int64_t O, const SlKernels *kern);
void sl_linear_backward_input_bf16(float *din, const float *dout, const uint16_t *wb,
                                   int64_t N, int64_t I, int64_t O, const SlKernels *kern);

/* ---- Conv2d (groups = 1, dilation = 1), asymmetric zero padding allowed ---- */
typedef struct SlConvDims {
    int64_t B, Ci, H, W;       /* input */
    int64_t Co, kh, kw;        /* weight [Co,Ci,kh,kw] */
    int64_t stride;
    int64_t pad_t, pad_l, pad_b, pad_r;
    int64_t Ho, Wo;            /* filled by sl_conv_dims */
} SlConvDims;

/* Fills Ho/Wo from the rest: Ho = (H + pad_t + pad_b - kh) / stride + 1. */
SlConvDims sl_conv_dims(int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co, int64_t k,
                        int64_t stride, int64_t pad_t, int64_t pad_l, int64_t pad_b, int64_t pad_r);
/* Floats of scratch needed by forward / backward (im2col buffers). */
size_t sl_conv2d_workspace(const SlConvDims *d);
void sl_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const SlConvDims *d, float *work, const SlKernels *kern);
void sl_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const SlConvDims *d, float *work, const SlKernels *kern);
void sl_conv2d_forward_ref(float *out, const float *in, const float *w, const float *b,
                           const SlConvDims *d, float *work);
void sl_conv2d_backward_ref(float *din, float *dw, float *db, const float *dout, const float *in,
                            const float *w, const SlConvDims *d, float *work);
/* A frozen binary16 weight w16 [Co,Ci,kh,kw] (as the linear _f16 pair): out = conv + b;
 * din += the input gradient. Bit-identical to the fp32 kernels on the widened weight. */
void sl_conv2d_forward_f16(float *out, const float *in, const uint16_t *w16, const float *b,
                           const SlConvDims *d, float *work, const SlKernels *kern);
void sl_conv2d_backward_input_f16(float *din, const float *dout, const uint16_t *w16,
                                  const SlConvDims *d, float *work, const SlKernels *kern);
/* A frozen bfloat16 weight wb [Co,Ci,kh,kw] (as the linear _bf16 pair: products on the bf16
 * kernel, the column matrix / dout rounded while packed; bias in fp32). */
void sl_conv2d_forward_bf16(float *out, const float *in, const uint16_t *wb, const float *b,
                            const SlConvDims *d, float *work, const SlKernels *kern);
void sl_conv2d_backward_input_bf16(float *din, const float *dout, const uint16_t *wb,
                                   const SlConvDims *d, float *work, const SlKernels *kern);

/* ---- GroupNorm over [B,C,HW] with G groups; mean/rstd [B*G] saved for backward ---- */
void sl_groupnorm_forward(float *out, float *mean, float *rstd, const float *in,
                          const float *gamma, const float *beta,
                          int64_t B, int64_t C, int64_t HW, int64_t G, float eps);
void sl_groupnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                           const float *in, const float *gamma, const float *mean, const float *rstd,
                           int64_t B, int64_t C, int64_t HW, int64_t G);
/* out = silu(groupnorm(in)) in one pass; mean/rstd as above. */
void sl_groupnorm_silu_forward(float *out, float *mean, float *rstd, const float *in,
                               const float *gamma, const float *beta,
                               int64_t B, int64_t C, int64_t HW, int64_t G, float eps);
void sl_groupnorm_forward_ref(float *out, float *mean, float *rstd, const float *in,
                              const float *gamma, const float *beta,
                              int64_t B, int64_t C, int64_t HW, int64_t G, float eps);
void sl_groupnorm_backward_ref(float *din, float *dgamma, float *dbeta, const float *dout,
                               const float *in, const float *gamma, const float *mean, const float *rstd,
                               int64_t B, int64_t C, int64_t HW, int64_t G);

/* ---- LayerNorm over the last dim D of [N,D]; mean/rstd [N] ---- */
void sl_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                          const float *gamma, const float *beta, int64_t N, int64_t D, float eps);
void sl_layernorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                           const float *in, const float *gamma, const float *mean, const float *rstd,
                           int64_t N, int64_t D);
void sl_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *in,
                              const float *gamma, const float *beta, int64_t N, int64_t D, float eps);
void sl_layernorm_backward_ref(float *din, float *dgamma, float *dbeta, const float *dout,
                               const float *in, const float *gamma, const float *mean, const float *rstd,
                               int64_t N, int64_t D);

/* ---- Pointwise activations (out may alias in for forward) ---- */
void sl_silu_forward(float *out, const float *in, int64_t n);
void sl_silu_backward(float *din, const float *dout, const float *in, int64_t n);
/* GELU with erf (PyTorch's default, approximate='none'). */
void sl_gelu_forward(float *out, const float *in, int64_t n);
void sl_gelu_backward(float *din, const float *dout, const float *in, int64_t n);
/* CLIP's quick_gelu: x * sigmoid(1.702 x). */
void sl_quick_gelu_forward(float *out, const float *in, int64_t n);
void sl_quick_gelu_backward(float *din, const float *dout, const float *in, int64_t n);
/* GEGLU (diffusers): in [N,2F] = [hidden | gate] along the last dim; out[N,F] = hidden * gelu(gate).
 * The fast pair uses a vectorized erf (abs. error <= 1.5e-7, as PyTorch's CPU kernel); _ref uses erff. */
void sl_geglu_forward(float *out, const float *in, int64_t N, int64_t F);
void sl_geglu_backward(float *din, const float *dout, const float *in, int64_t N, int64_t F);
void sl_geglu_forward_ref(float *out, const float *in, int64_t N, int64_t F);
void sl_geglu_backward_ref(float *din, const float *dout, const float *in, int64_t N, int64_t F);

/* ---- Multi-head scaled-dot-product attention ----
 * q [B,Tq,NH*HD], k,v [B,Tk,NH*HD] (heads interleaved as PyTorch's view(B,T,NH,HD)),
 * out [B,Tq,NH*HD]. lse [B,NH,Tq] (log-sum-exp of the scaled scores) is saved for
 * backward. causal: key j is masked for query i when j > i.
 * Tiled with an online softmax: the full Tq x Tk score matrix is never stored for
 * all heads at once. */
size_t sl_attention_workspace(int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD);
void sl_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD,
                          float scale, int causal, float *work, const SlKernels *kern);
void sl_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                           const float *q, const float *k, const float *v, const float *out,
                           const float *lse, int64_t B, int64_t Tq, int64_t Tk, int64_t NH,
                           int64_t HD, float scale, int causal, float *work);
void sl_attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                              int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HD,
                              float scale, int causal, float *work);
void sl_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                               const float *q, const float *k, const float *v, const float *out,
                               const float *lse, int64_t B, int64_t Tq, int64_t Tk, int64_t NH,
                               int64_t HD, float scale, int causal, float *work);
/* The forward kernel is kern->attention: LANES (AVX-512, query rows across vector
 * lanes; the default when the CPU has AVX-512) or ROWS (AVX2/scalar). Bits differ
 * between the two, not between thread counts. Backward has one kernel. */

/* ---- Shape helpers ---- */
/* Nearest-neighbour x2: in [B,C,H,W] -> out [B,C,2H,2W]. */
void sl_upsample_nearest2x_forward(float *out, const float *in, int64_t B, int64_t C, int64_t H, int64_t W);
void sl_upsample_nearest2x_backward(float *din, const float *dout, int64_t B, int64_t C, int64_t H, int64_t W);
/* [B,C,S] <-> [B,S,C] (out must not alias in). */
void sl_transpose_cs_sc(float *out, const float *in, int64_t B, int64_t C, int64_t S);
void sl_transpose_sc_cs(float *out, const float *in, int64_t B, int64_t C, int64_t S);

/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * out [B,dim], t [B]; half = dim/2, exponent = -ln(max_period) * i / (half - freq_shift);
 * emb = [sin, cos] (or [cos, sin] if flip_sin_to_cos); a zero column is padded if dim is odd. */
void sl_timestep_embedding(float *out, const float *t, int64_t B, int64_t dim,
                           int flip_sin_to_cos, float freq_shift, float max_period);

/* y[i] += a * x[i] */
void sl_axpy(float *y, float a, const float *x, int64_t n);

#endif
