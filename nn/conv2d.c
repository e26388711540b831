/* conv2d.c - 2-D convolution (groups 1, dilation 1, asymmetric zero padding).
 *
 * Fast path: per image, im2col into the caller's workspace and sl_sgemm
 * (nn/gemm.h: tiled AVX-512 or OpenBLAS, same bits for any thread count), by bands of
 * output rows when the column matrix would be large; a 1x1 stride-1 unpadded
 * conv skips im2col (the input already is the column matrix). Backward reuses the same buffer: first im2col for dw, then
 * the column gradient for din, scattered back with col2im.
 * Implicit im2col (forward, when the caller's SlKernels runs the product on the
 * AVX-512 GEMM kernel and does not ask for im2col): no
 * column matrix at all; sl_gemm_op gathers each [kc, 32] panel of it straight
 * from the image (conv_gather) while packing, one product per image. On that
 * kernel an element's bits depend only on K's blocking, not on the tiles, so
 * this equals the banded im2col path bit for bit whenever every band of the
 * latter also runs on it (>= SL_GEMM_AVX_MIN_N columns); otherwise, and with
 * kern->conv == SL_CONV_KERNEL_IM2COL, im2col.
 * Small images (P < SL_GEMM_AVX_MIN_N, e.g. the U-Net's 8x8 latents) with a batch wide
 * enough run as ONE product [Co, B*P] (gathered or im2col'd across the batch, same bits)
 * into the workspace, then scattered to [B,Co,P] with the bias: per image they were too
 * narrow for the AVX-512 kernel.
 * Frozen binary16 weights (the _f16 entry points) go through the same code as
 * a SL_GEMM_F16 operand; frozen bfloat16 weights (_bf16) as a SL_GEMM_BF16 operand
 * with the products on the bf16 kernel (implicit im2col too: it gathers for that kernel).
 * The _ref twins are direct loops with double accumulators (no BLAS).
 *
 * Dimension letters: B batch, Ci/Co channels, H/W input size, Ho/Wo output
 * size, K = Ci*kh*kw (im2col rows), P = Ho*Wo (im2col columns).
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "nn/gemm.h"
#include "nn_par.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SL_CONV_HAVE_AVX512 1
#define SL_CONV_AVX512 __attribute__((target("avx512f")))
#else
#define SL_CONV_HAVE_AVX512 0
#endif

SlConvDims sl_conv_dims(int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co, int64_t k,
                        int64_t stride, int64_t pad_t, int64_t pad_l, int64_t pad_b, int64_t pad_r) {
    SlConvDims d;
    d.B = B; d.Ci = Ci; d.H = H; d.W = W;
    d.Co = Co; d.kh = k; d.kw = k;
    d.stride = stride;
    d.pad_t = pad_t; d.pad_l = pad_l; d.pad_b = pad_b; d.pad_r = pad_r;
    d.Ho = (H + pad_t + pad_b - k) / stride + 1;
    d.Wo = (W + pad_l + pad_r - k) / stride + 1;
    return d;
}

static int conv_is_pointwise(const SlConvDims *d) {
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad_t == 0 && d->pad_l == 0 &&
           d->pad_b == 0 && d->pad_r == 0;
}

/* The im2col buffer holds a band of output rows at a time, at most this many
 * floats (16 MB), so that a VAE conv at 512 px (K = 1152, P = 262144) does not
 * need a 1.2 GB buffer. Bands of >= ~1000 columns keep sgemm efficient. */
#define SL_CONV_BAND_FLOATS ((int64_t)1 << 22)

/* Output rows per band: as many as fit in SL_CONV_BAND_FLOATS, at least one. */
static int64_t conv_band_rows(const SlConvDims *d) {
    const int64_t K = d->Ci * d->kh * d->kw, per_row = K * d->Wo;
    int64_t rows = per_row > 0 ? SL_CONV_BAND_FLOATS / per_row : d->Ho;
    if (rows < 1) rows = 1;
    if (rows > d->Ho) rows = d->Ho;
    return rows;
}

/* Small images whose per-image product is too narrow for the AVX-512 kernel (P < its
 * minimum N: the U-Net's 8x8 latents, OpenBLAS ran them at ~80 GFLOP/s) but whose whole
 * batch is not: one product over [Co, B*P] (see conv_forward_batched). */
static int conv_batchable(const SlConvDims *d) {
    const int64_t P = d->Ho * d->Wo;
    return d->B > 1 && P < SL_GEMM_AVX_MIN_N && d->B * P >= SL_GEMM_AVX_MIN_N;
}

size_t sl_conv2d_workspace(const SlConvDims *d) {
    if (conv_is_pointwise(d)) return 0; /* the input already is the column matrix */
    /* col [K, band_rows*Wo]; for a batched small conv also its output [Co, B*P] */
    const size_t K = (size_t)(d->Ci * d->kh * d->kw), P = (size_t)(d->Ho * d->Wo), B = (size_t)d->B;
    size_t n = K * (size_t)(conv_band_rows(d) * d->Wo);
    /* batched: output [Co, B*P], then (explicit path) col [K, B*P] and one image's col [K, P] */
    const size_t nb = (size_t)d->Co * B * P + K * B * P + K * P;
    return conv_batchable(d) && nb > n ? nb : n;
}

/* col [K, (oy1-oy0)*Wo] <- patches of output rows [oy0,oy1) of one image x [Ci,H,W]. */
static void conv_im2col(float *col, const float *x, const SlConvDims *d, int64_t oy0, int64_t oy1) {
    const int64_t H = d->H, W = d->W, Wo = d->Wo, s = d->stride;
    const int64_t K = d->Ci * d->kh * d->kw, Pb = (oy1 - oy0) * Wo;
#pragma omp parallel for schedule(static) if (SL_NN_PAR(K * Pb))
    for (int64_t r = 0; r < K; r++) {
        const int64_t ci = r / (d->kh * d->kw), ky = (r / d->kw) % d->kh, kx = r % d->kw;
        const float *xc = x + ci * H * W;
        float *c = col + r * Pb;
        for (int64_t oy = oy0; oy < oy1; oy++) {
            const int64_t iy = oy * s - d->pad_t + ky;
            float *crow = c + (oy - oy0) * Wo;
            if (iy < 0 || iy >= H) {
                for (int64_t ox = 0; ox < Wo; ox++) crow[ox] = 0.0f;
                continue;
            }
            const float *xrow = xc + iy * W;
            if (s == 1) {
                /* ix = ox + off; valid for ox in [lo, hi) */
                const int64_t off = kx - d->pad_l;
                int64_t lo = off < 0 ? -off : 0, hi = W - off < Wo ? W - off : Wo;
                if (lo > Wo) lo = Wo;
                if (hi < lo) hi = lo;
                for (int64_t ox = 0; ox < lo; ox++) crow[ox] = 0.0f;
                for (int64_t ox = lo; ox < hi; ox++) crow[ox] = xrow[ox + off];
                for (int64_t ox = hi; ox < Wo; ox++) crow[ox] = 0.0f;
            } else {
                for (int64_t ox = 0; ox < Wo; ox++) {
                    const int64_t ix = ox * s - d->pad_l + kx;
                    crow[ox] = (ix >= 0 && ix < W) ? xrow[ix] : 0.0f;
                }
            }
        }
    }
}

/* dx [Ci,H,W] += col2im(dcol [K, (oy1-oy0)*Wo]) for output rows [oy0,oy1).
 * Parallel over input channels: each channel's plane is written by one thread. */
static void conv_col2im_add(float *dx, const float *dcol, const SlConvDims *d, int64_t oy0, int64_t oy1) {
    const int64_t H = d->H, W = d->W, Wo = d->Wo, s = d->stride;
    const int64_t khw = d->kh * d->kw, Pb = (oy1 - oy0) * Wo;
#pragma omp parallel for schedule(static) if (SL_NN_PAR(d->Ci * khw * Pb))
    for (int64_t ci = 0; ci < d->Ci; ci++) {
        float *xc = dx + ci * H * W;
        for (int64_t kk = 0; kk < khw; kk++) {
            const int64_t ky = kk / d->kw, kx = kk % d->kw;
            const float *c = dcol + (ci * khw + kk) * Pb;
            for (int64_t oy = oy0; oy < oy1; oy++) {
                const int64_t iy = oy * s - d->pad_t + ky;
                if (iy < 0 || iy >= H) continue;
                float *xrow = xc + iy * W;
                const float *crow = c + (oy - oy0) * Wo;
                if (s == 1) {
                    const int64_t off = kx - d->pad_l;
                    int64_t lo = off < 0 ? -off : 0, hi = W - off < Wo ? W - off : Wo;
                    for (int64_t ox = lo; ox < hi; ox++) xrow[ox + off] += crow[ox];
                } else {
                    for (int64_t ox = 0; ox < Wo; ox++) {
                        const int64_t ix = ox * s - d->pad_l + kx;
                        if (ix >= 0 && ix < W) xrow[ix] += crow[ox];
                    }
                }
            }
        }
    }
}

/* ---------------------------------------------------- implicit im2col -- */

/* The column matrix of one image x [Ci,H,W]: col(k, p), k = (ci, ky, kx), p = oy*Wo + ox.
 * avx: the vector gather may run (the product is on the AVX-512 kernel; the gather is
 * called on OpenMP workers, so it carries the caller's choice instead of looking it up). */
typedef struct ConvGather {
    const float *x;
    const SlConvDims *d;
    int avx;
} ConvGather;

/* dst[k*ldd + l] = col(k0 + k, p0 + l) for k < kc, l < n, where pixels p0.. lie in output row oy
 * from column ox0 (n <= Wo - ox0): plain loops, any stride. */
static void gather_segment(const ConvGather *g, float *dst, int64_t ldd, int64_t k0, int64_t kc, int64_t oy,
                           int64_t ox0, int64_t n) {
    const SlConvDims *d = g->d;
    const int64_t H = d->H, W = d->W, s = d->stride;
    int64_t ci = k0 / (d->kh * d->kw), ky = (k0 / d->kw) % d->kh, kx = k0 % d->kw;
    for (int64_t k = 0; k < kc; k++) {
        float *o = dst + k * ldd;
        const int64_t iy = oy * s - d->pad_t + ky;
        if (iy < 0 || iy >= H) {
            for (int64_t l = 0; l < n; l++) o[l] = 0.0f;
        } else {
            const float *xrow = g->x + (ci * H + iy) * W;
            for (int64_t l = 0; l < n; l++) {
                const int64_t ix = (ox0 + l) * s - d->pad_l + kx;
                o[l] = ix >= 0 && ix < W ? xrow[ix] : 0.0f;
            }
        }
        if (++kx == d->kw) {
            kx = 0;
            if (++ky == d->kh) ky = 0, ci++;
        }
    }
}

#if SL_CONV_HAVE_AVX512
/* Lanes [lo, hi) of 16 set (empty when hi <= lo). */
static __mmask16 lanes16(int64_t lo, int64_t hi) {
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    return hi <= lo ? 0 : (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

/* gather_segment for stride 1 and 2 and kernels up to 8x8: 32 pixels at a time by masked
 * vector loads (lanes whose input column falls in the padding are masked off, so read as 0
 * and never touch memory), with the masks and row offsets worked out once per kx / ky. */
SL_CONV_AVX512 static void gather_segment_avx512(const ConvGather *g, float *dst, int64_t ldd, int64_t k0,
                                                 int64_t kc, int64_t oy, int64_t ox0, int64_t n) {
    const SlConvDims *d = g->d;
    const int64_t H = d->H, W = d->W, s = d->stride;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    int64_t roff[8]; /* per ky: offset of input row iy in its plane, or -1 (padding row) */
    for (int64_t ky = 0; ky < d->kh; ky++) {
        const int64_t iy = oy * s - d->pad_t + ky;
        roff[ky] = iy >= 0 && iy < H ? iy * W : -1;
    }
    for (int64_t l0 = 0; l0 < n; l0 += 32) {
        const int64_t cnt = n - l0 < 32 ? n - l0 : 32;
        const __mmask16 st0 = lanes16(0, cnt), st1 = lanes16(0, cnt - 16);
        int64_t xo[8][2];     /* per kx, per half: input column of the half's lane 0 */
        __mmask16 m[8][2][2]; /* per kx, per half: masks of the (one or two) loads */
        for (int64_t kx = 0; kx < d->kw; kx++)
            for (int h = 0; h < 2; h++) {
                const int64_t ix = (ox0 + l0 + 16 * h) * s - d->pad_l + kx;
                xo[kx][h] = ix;
                m[kx][h][0] = lanes16(-ix, W - ix);
                m[kx][h][1] = lanes16(-ix - 16, W - ix - 16);
            }
        const int prefetch = (ox0 + l0 + 32 + 16) * s - d->pad_l < W; /* the row goes on past this chunk */
        int64_t ci = k0 / (d->kh * d->kw), ky = (k0 / d->kw) % d->kh, kx = k0 % d->kw;
        for (int64_t k = 0; k < kc; k++) {
            float *o = dst + k * ldd + l0;
            __m512 v0 = _mm512_setzero_ps(), v1 = _mm512_setzero_ps();
            if (roff[ky] >= 0) {
                const float *xr = g->x + ci * H * W + roff[ky];
                if (kx == 0 && prefetch) { /* the next panel's pixels of this input row, into L2 (the
                                            * rows of many channel planes at once defeat the prefetcher) */
                    const char *nx = (const char *)(xr + xo[0][1] + 16 * s);
                    _mm_prefetch(nx, _MM_HINT_T1);
                    _mm_prefetch(nx + 64, _MM_HINT_T1);
                    if (s == 2) _mm_prefetch(nx + 128, _MM_HINT_T1), _mm_prefetch(nx + 192, _MM_HINT_T1);
                }
                if (s == 1) {
                    v0 = _mm512_maskz_loadu_ps(m[kx][0][0], xr + xo[kx][0]);
                    v1 = _mm512_maskz_loadu_ps(m[kx][1][0], xr + xo[kx][1]);
                } else { /* lane l reads ix + 2l: load 32 consecutive, keep the even ones */
                    v0 = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m[kx][0][0], xr + xo[kx][0]), even,
                                                _mm512_maskz_loadu_ps(m[kx][0][1], xr + xo[kx][0] + 16));
                    v1 = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m[kx][1][0], xr + xo[kx][1]), even,
                                                _mm512_maskz_loadu_ps(m[kx][1][1], xr + xo[kx][1] + 16));
                }
            }
            _mm512_mask_storeu_ps(o, st0, v0);
            _mm512_mask_storeu_ps(o + 16, st1, v1);
            if (++kx == d->kw) {
                kx = 0;
                if (++ky == d->kh) ky = 0, ci++;
            }
        }
    }
}
#endif

/* SlGemmGather over the column matrix: output pixels [j0, j0+nc) cut into runs within one output row. */
static void conv_gather(const void *ctx, float *dst, int64_t ldd, int64_t k0, int64_t kc, int64_t j0, int64_t nc) {
    const ConvGather *g = ctx;
    const int64_t Wo = g->d->Wo;
    for (int64_t j = 0; j < nc;) {
        const int64_t p = j0 + j, oy = p / Wo, ox0 = p % Wo, n = nc - j < Wo - ox0 ? nc - j : Wo - ox0;
#if SL_CONV_HAVE_AVX512
        if (g->avx && g->d->stride <= 2 && g->d->kh <= 8 && g->d->kw <= 8)
            gather_segment_avx512(g, dst + j, ldd, k0, kc, oy, ox0, n);
        else
#endif
            gather_segment(g, dst + j, ldd, k0, kc, oy, ox0, n);
        j += n;
    }
}

/* Whether the forward product of d runs as implicit im2col: only where it gives the
 * banded im2col path's bits (see the file comment). band: the im2col path's band rows. */
static int conv_implicit_allowed(const SlKernels *kern) {
    return sl_kernels_conv_implicit(kern) && omp_get_level() == 0;
}

static int conv_implicit(const SlConvDims *d, int64_t band, const SlKernels *kern) {
    if (!conv_implicit_allowed(kern)) return 0;
    const int64_t last = d->Ho % band ? d->Ho % band : band; /* the narrowest band */
    return last * d->Wo >= SL_GEMM_AVX_MIN_N;
}

/* ------------------------------------------------------------ forward -- */

/* The column matrix of the whole batch: col(k, b*P + p) = image b's col(k, p). */
typedef struct ConvGatherBatch {
    const float *in;
    const SlConvDims *d;
    int avx; /* as ConvGather */
} ConvGatherBatch;

static void conv_gather_batch(const void *ctx, float *dst, int64_t ldd, int64_t k0, int64_t kc, int64_t j0,
                              int64_t nc) {
    const ConvGatherBatch *g = ctx;
    const SlConvDims *d = g->d;
    const int64_t P = d->Ho * d->Wo;
    for (int64_t j = 0; j < nc;) {
        const int64_t b = (j0 + j) / P, p = (j0 + j) % P, n = nc - j < P - p ? nc - j : P - p;
        const ConvGather one = {g->in + b * d->Ci * d->H * d->W, d, g->avx};
        conv_gather(&one, dst + j, ldd, k0, kc, p, n);
        j += n;
    }
}

/* out [B,Co,P] = w [Co,K] col [K,B*P] (+ b) through work [Co,B*P]: one product for the batch,
 * its columns gathered while packing (implicit) or im2col'd into work first; the same bits
 * either way (nn/gemm.h's contract). */
static void conv_forward_batched(float *out, const float *in, const SlGemmOperand *wop, const float *b,
                                 const SlConvDims *d, float *work, int implicit, const SlKernels *kern) {
    const int64_t K = d->Ci * d->kh * d->kw, P = d->Ho * d->Wo, Co = d->Co, N = d->B * P;
    if (implicit) {
        const ConvGatherBatch g = {in, d, 1};
        const SlGemmOperand col = {SL_GEMM_GATHER, 0, NULL, 0, conv_gather_batch, &g};
        sl_gemm_op(Co, N, K, 1.0f, wop, &col, 0.0f, work, N, kern);
    } else {
        float *col = work + Co * N, *one = col + K * N;
        for (int64_t bi = 0; bi < d->B; bi++) {
            conv_im2col(one, in + bi * d->Ci * d->H * d->W, d, 0, d->Ho);
            for (int64_t k = 0; k < K; k++) memcpy(col + k * N + bi * P, one + k * P, (size_t)P * sizeof(float));
        }
        const SlGemmOperand cop = sl_gemm_f32(col, N, 0);
        sl_gemm_op(Co, N, K, 1.0f, wop, &cop, 0.0f, work, N, kern);
    }
    for (int64_t bi = 0; bi < d->B; bi++)
        for (int64_t co = 0; co < Co; co++) {
            const float *src = work + co * N + bi * P, bias = b ? b[co] : 0.0f;
            float *y = out + (bi * Co + co) * P;
            for (int64_t p = 0; p < P; p++) y[p] = src[p] + bias;
        }
}

/* out [B,Co,Ho,Wo], in [B,Ci,H,W], weight wop [Co, K] (fp32 or binary16), b [Co] or NULL. */
static void conv_forward_op(float *out, const float *in, const SlGemmOperand *wop, const float *b,
                            const SlConvDims *d, float *work, const SlKernels *kern) {
    const int64_t K = d->Ci * d->kh * d->kw, P = d->Ho * d->Wo, Co = d->Co;
    const int pw = conv_is_pointwise(d);
    const int64_t band = pw ? d->Ho : conv_band_rows(d);
    const int implicit = !pw && conv_implicit(d, band, kern);
    if (!pw && conv_batchable(d)) {
        conv_forward_batched(out, in, wop, b, d, work, conv_implicit_allowed(kern), kern);
        return;
    }
    for (int64_t bi = 0; bi < d->B; bi++) {
        const float *x = in + bi * d->Ci * d->H * d->W;
        float *y = out + bi * Co * P;
        float beta = 0.0f;
        if (b) {
            for (int64_t co = 0; co < Co; co++)
                for (int64_t p = 0; p < P; p++) y[co * P + p] = b[co];
            beta = 1.0f;
        }
        if (implicit) { /* y (+)= w [Co,K] col [K,P], col gathered while packing */
            const ConvGather g = {x, d, 1};
            const SlGemmOperand col = {SL_GEMM_GATHER, 0, NULL, 0, conv_gather, &g};
            sl_gemm_op(Co, P, K, 1.0f, wop, &col, beta, y, P, kern);
            continue;
        }
        for (int64_t oy0 = 0; oy0 < d->Ho; oy0 += band) {
            const int64_t oy1 = oy0 + band < d->Ho ? oy0 + band : d->Ho, Pb = (oy1 - oy0) * d->Wo;
            const float *col = x; /* pointwise: one band, the input itself */
            if (!pw) {
                conv_im2col(work, x, d, oy0, oy1);
                col = work;
            }
            /* y[:, band] (+)= w [Co,K] col [K,Pb] */
            const SlGemmOperand cop = sl_gemm_f32(col, Pb, 0);
            sl_gemm_op(Co, Pb, K, 1.0f, wop, &cop, beta, y + oy0 * d->Wo, P, kern);
        }
    }
}

/* out [B,Co,Ho,Wo], in [B,Ci,H,W], w [Co,Ci,kh,kw], b [Co] or NULL,
 * work: sl_conv2d_workspace(d) floats. */
void sl_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const SlConvDims *d, float *work, const SlKernels *kern) {
    const SlGemmOperand wop = sl_gemm_f32(w, d->Ci * d->kh * d->kw, 0);
    conv_forward_op(out, in, &wop, b, d, work, kern);
}

void sl_conv2d_forward_f16(float *out, const float *in, const uint16_t *w16, const float *b,
                           const SlConvDims *d, float *work, const SlKernels *kern) {
    const SlGemmOperand wop = sl_gemm_f16(w16, d->Ci * d->kh * d->kw, 0);
    conv_forward_op(out, in, &wop, b, d, work, kern);
}

void sl_conv2d_forward_bf16(float *out, const float *in, const uint16_t *wb, const float *b,
                            const SlConvDims *d, float *work, const SlKernels *kern) {
    const SlKernels kb = sl_kernels_bf16(kern);
    const SlGemmOperand wop = sl_gemm_bf16(wb, d->Ci * d->kh * d->kw, 0);
    conv_forward_op(out, in, &wop, b, d, work, &kb);
}

/* ----------------------------------------------------------- backward -- */

/* din of image (Ci,H,W) += the input gradient of output rows [oy0, oy1) (dyb [Co, Pb], row
 * stride P): dcol [K,Pb] = w^T dyb into work, scattered back (pointwise: straight into din). */
static void conv_din_band(float *dimg, const float *dyb, const SlGemmOperand *wT, const SlConvDims *d, int64_t oy0,
                          int64_t oy1, float *work, const SlKernels *kern) {
    const int64_t K = d->Ci * d->kh * d->kw, P = d->Ho * d->Wo, Pb = (oy1 - oy0) * d->Wo;
    const SlGemmOperand g = sl_gemm_f32(dyb, P, 0);
    if (conv_is_pointwise(d)) { /* dx [Ci,P] += w^T [Ci,Co] dy [Co,P] */
        sl_gemm_op(K, P, d->Co, 1.0f, wT, &g, 1.0f, dimg, P, kern);
        return;
    }
    sl_gemm_op(K, Pb, d->Co, 1.0f, wT, &g, 0.0f, work, Pb, kern);
    conv_col2im_add(dimg, work, d, oy0, oy1);
}

/* din [B,Ci,H,W] +=, dw [Co,Ci,kh,kw] +=, db [Co] +=; any may be NULL. */
void sl_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const SlConvDims *d, float *work, const SlKernels *kern) {
    const int64_t K = d->Ci * d->kh * d->kw, P = d->Ho * d->Wo, Co = d->Co;
    const int pw = conv_is_pointwise(d);
    const int64_t band = pw ? d->Ho : conv_band_rows(d);
    const SlGemmOperand wT = sl_gemm_f32(w, K, 1);
    for (int64_t bi = 0; bi < d->B; bi++) {
        const float *x = in + bi * d->Ci * d->H * d->W;
        const float *dy = dout + bi * Co * P;
        float *dimg = din ? din + bi * d->Ci * d->H * d->W : NULL;
        if (db) {
#pragma omp parallel for schedule(static) if (SL_NN_PAR(Co * P))
            for (int64_t co = 0; co < Co; co++) {
                double s = 0.0;
                for (int64_t p = 0; p < P; p++) s += dy[co * P + p];
                db[co] += (float)s;
            }
        }
        if (pw) {
            /* dw [Co,Ci] += dy [Co,P] x^T [P,Ci];  dx [Ci,P] += w^T [Ci,Co] dy [Co,P] */
            if (dw)
                sl_sgemm(0, 1, Co, K, P, 1.0f, dy, P, x, P, 1.0f, dw, K, kern);
            if (din) conv_din_band(dimg, dy, &wT, d, 0, d->Ho, work, kern);
            continue;
        }
        for (int64_t oy0 = 0; oy0 < d->Ho; oy0 += band) {
            const int64_t oy1 = oy0 + band < d->Ho ? oy0 + band : d->Ho, Pb = (oy1 - oy0) * d->Wo;
            const float *dyb = dy + oy0 * d->Wo; /* [Co,Pb] with row stride P */
            if (dw) {
                conv_im2col(work, x, d, oy0, oy1);
                /* dw [Co,K] += dy[:, band] col^T */
                sl_sgemm(0, 1, Co, K, Pb, 1.0f, dyb, P, work, Pb, 1.0f, dw, K, kern);
            }
            if (din) conv_din_band(dimg, dyb, &wT, d, oy0, oy1, work, kern);
        }
    }
}

/* din [B,Ci,H,W] += the input gradient through a frozen weight operand wT (w^T [K,Co]; no dw, db). */
static void conv_backward_input_op(float *din, const float *dout, const SlGemmOperand *wT, const SlConvDims *d,
                                   float *work, const SlKernels *kern) {
    if (!din) return;
    const int64_t P = d->Ho * d->Wo;
    const int64_t band = conv_is_pointwise(d) ? d->Ho : conv_band_rows(d);
    for (int64_t bi = 0; bi < d->B; bi++)
        for (int64_t oy0 = 0; oy0 < d->Ho; oy0 += band)
            conv_din_band(din + bi * d->Ci * d->H * d->W, dout + bi * d->Co * P + oy0 * d->Wo, wT, d, oy0,
                          oy0 + band < d->Ho ? oy0 + band : d->Ho, work, kern);
}

/* din += the input gradient through the frozen binary16 weight w16. */
void sl_conv2d_backward_input_f16(float *din, const float *dout, const uint16_t *w16,
                                  const SlConvDims *d, float *work, const SlKernels *kern) {
    const SlGemmOperand wT = sl_gemm_f16(w16, d->Ci * d->kh * d->kw, 1);
    conv_backward_input_op(din, dout, &wT, d, work, kern);
}

/* din += the input gradient through the frozen bfloat16 weight wb, on the bf16 kernel. */
void sl_conv2d_backward_input_bf16(float *din, const float *dout, const uint16_t *wb,
                                   const SlConvDims *d, float *work, const SlKernels *kern) {
    const SlKernels kb = sl_kernels_bf16(kern);
    const SlGemmOperand wT = sl_gemm_bf16(wb, d->Ci * d->kh * d->kw, 1);
    conv_backward_input_op(din, dout, &wT, d, work, &kb);
}

void sl_conv2d_forward_ref(float *out, const float *in, const float *w, const float *b,
                           const SlConvDims *d, float *work) {
    (void)work;
    const int64_t H = d->H, W = d->W, Ho = d->Ho, Wo = d->Wo, s = d->stride;
    for (int64_t bi = 0; bi < d->B; bi++)
        for (int64_t co = 0; co < d->Co; co++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double acc = b ? b[co] : 0.0;
                    for (int64_t ci = 0; ci < d->Ci; ci++)
                        for (int64_t ky = 0; ky < d->kh; ky++) {
                            const int64_t iy = oy * s - d->pad_t + ky;
                            if (iy < 0 || iy >= H) continue;
                            for (int64_t kx = 0; kx < d->kw; kx++) {
                                const int64_t ix = ox * s - d->pad_l + kx;
                                if (ix < 0 || ix >= W) continue;
                                acc += (double)in[((bi * d->Ci + ci) * H + iy) * W + ix] *
                                       w[((co * d->Ci + ci) * d->kh + ky) * d->kw + kx];
                            }
                        }
                    out[((bi * d->Co + co) * Ho + oy) * Wo + ox] = (float)acc;
                }
}

void sl_conv2d_backward_ref(float *din, float *dw, float *db, const float *dout, const float *in,
                            const float *w, const SlConvDims *d, float *work) {
    (void)work;
    const int64_t H = d->H, W = d->W, Ho = d->Ho, Wo = d->Wo, s = d->stride;
    const int64_t Ci = d->Ci, Co = d->Co, kh = d->kh, kw = d->kw;
    if (db)
        for (int64_t co = 0; co < Co; co++) {
            double acc = 0.0;
            for (int64_t bi = 0; bi < d->B; bi++)
                for (int64_t p = 0; p < Ho * Wo; p++) acc += dout[(bi * Co + co) * Ho * Wo + p];
            db[co] += (float)acc;
        }
    if (dw)
        for (int64_t co = 0; co < Co; co++)
            for (int64_t ci = 0; ci < Ci; ci++)
                for (int64_t ky = 0; ky < kh; ky++)
                    for (int64_t kx = 0; kx < kw; kx++) {
                        double acc = 0.0;
                        for (int64_t bi = 0; bi < d->B; bi++)
                            for (int64_t oy = 0; oy < Ho; oy++) {
                                const int64_t iy = oy * s - d->pad_t + ky;
                                if (iy < 0 || iy >= H) continue;
                                for (int64_t ox = 0; ox < Wo; ox++) {
                                    const int64_t ix = ox * s - d->pad_l + kx;
                                    if (ix < 0 || ix >= W) continue;
                                    acc += (double)dout[((bi * Co + co) * Ho + oy) * Wo + ox] *
                                           in[((bi * Ci + ci) * H + iy) * W + ix];
                                }
                            }
                        dw[((co * Ci + ci) * kh + ky) * kw + kx] += (float)acc;
                    }
    if (din)
        /* gather form: input pixel (iy,ix) receives from every output (oy,ox)
         * with oy*s - pad_t + ky == iy. */
        for (int64_t bi = 0; bi < d->B; bi++)
            for (int64_t ci = 0; ci < Ci; ci++)
                for (int64_t iy = 0; iy < H; iy++)
                    for (int64_t ix = 0; ix < W; ix++) {
                        double acc = 0.0;
                        for (int64_t ky = 0; ky < kh; ky++) {
                            const int64_t ty = iy + d->pad_t - ky;
                            if (ty < 0 || ty % s) continue;
                            const int64_t oy = ty / s;
                            if (oy >= Ho) continue;
                            for (int64_t kx = 0; kx < kw; kx++) {
                                const int64_t tx = ix + d->pad_l - kx;
                                if (tx < 0 || tx % s) continue;
                                const int64_t ox = tx / s;
                                if (ox >= Wo) continue;
                                for (int64_t co = 0; co < Co; co++)
                                    acc += (double)dout[((bi * Co + co) * Ho + oy) * Wo + ox] *
                                           w[((co * Ci + ci) * kh + ky) * kw + kx];
                            }
                        }
                        din[((bi * Ci + ci) * H + iy) * W + ix] += (float)acc;
                    }
}
