/* conv2d.c - 2-D convolution (groups 1, dilation 1, asymmetric zero padding).
 *
 * Fast path: per image, im2col into the caller's workspace and sl_sgemm
 * (nn/gemm.h: tiled AVX-512 or OpenBLAS, same bits for any thread count), by bands of
 * output rows when the column matrix would be large; a 1x1 stride-1 unpadded
 * conv skips im2col (the input already is the column matrix). Backward reuses the same buffer: first im2col for dw, then
 * the column gradient for din, scattered back with col2im.
 * The _ref twins are direct loops with double accumulators (no BLAS).
 *
 * Dimension letters: B batch, Ci/Co channels, H/W input size, Ho/Wo output
 * size, K = Ci*kh*kw (im2col rows), P = Ho*Wo (im2col columns).
 */
#include "nn.h"
#include "nn/gemm.h"
#include "nn_par.h"

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

size_t sl_conv2d_workspace(const SlConvDims *d) {
    if (conv_is_pointwise(d)) return 0; /* the input already is the column matrix */
    /* col [K, band_rows*Wo] */
    return (size_t)(d->Ci * d->kh * d->kw) * (size_t)(conv_band_rows(d) * d->Wo);
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

/* out [B,Co,Ho,Wo], in [B,Ci,H,W], w [Co,Ci,kh,kw], b [Co] or NULL,
 * work: sl_conv2d_workspace(d) floats. */
void sl_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const SlConvDims *d, float *work) {
    const int64_t K = d->Ci * d->kh * d->kw, P = d->Ho * d->Wo, Co = d->Co;
    const int pw = conv_is_pointwise(d);
    const int64_t band = pw ? d->Ho : conv_band_rows(d);
    for (int64_t bi = 0; bi < d->B; bi++) {
        const float *x = in + bi * d->Ci * d->H * d->W;
        float *y = out + bi * Co * P;
        float beta = 0.0f;
        if (b) {
            for (int64_t co = 0; co < Co; co++)
                for (int64_t p = 0; p < P; p++) y[co * P + p] = b[co];
            beta = 1.0f;
        }
        for (int64_t oy0 = 0; oy0 < d->Ho; oy0 += band) {
            const int64_t oy1 = oy0 + band < d->Ho ? oy0 + band : d->Ho, Pb = (oy1 - oy0) * d->Wo;
            const float *col = x; /* pointwise: one band, the input itself */
            if (!pw) {
                conv_im2col(work, x, d, oy0, oy1);
                col = work;
            }
            /* y[:, band] (+)= w [Co,K] col [K,Pb] */
            sl_sgemm(0, 0, Co, Pb, K, 1.0f, w, K, col, Pb, beta, y + oy0 * d->Wo, P);
        }
    }
}

/* din [B,Ci,H,W] +=, dw [Co,Ci,kh,kw] +=, db [Co] +=; any may be NULL. */
void sl_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const SlConvDims *d, float *work) {
    const int64_t K = d->Ci * d->kh * d->kw, P = d->Ho * d->Wo, Co = d->Co;
    const int pw = conv_is_pointwise(d);
    const int64_t band = pw ? d->Ho : conv_band_rows(d);
    for (int64_t bi = 0; bi < d->B; bi++) {
        const float *x = in + bi * d->Ci * d->H * d->W;
        const float *dy = dout + bi * Co * P;
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
                sl_sgemm(0, 1, Co, K, P, 1.0f, dy, P, x, P, 1.0f, dw, K);
            if (din)
                sl_sgemm(1, 0, K, P, Co, 1.0f, w, K, dy, P, 1.0f, din + bi * d->Ci * d->H * d->W, P);
            continue;
        }
        for (int64_t oy0 = 0; oy0 < d->Ho; oy0 += band) {
            const int64_t oy1 = oy0 + band < d->Ho ? oy0 + band : d->Ho, Pb = (oy1 - oy0) * d->Wo;
            const float *dyb = dy + oy0 * d->Wo; /* [Co,Pb] with row stride P */
            if (dw) {
                conv_im2col(work, x, d, oy0, oy1);
                /* dw [Co,K] += dy[:, band] col^T */
                sl_sgemm(0, 1, Co, K, Pb, 1.0f, dyb, P, work, Pb, 1.0f, dw, K);
            }
            if (din) {
                /* dcol [K,Pb] = w^T dy[:, band], then scatter-add into dx */
                sl_sgemm(1, 0, K, Pb, Co, 1.0f, w, K, dyb, P, 0.0f, work, Pb);
                conv_col2im_add(din + bi * d->Ci * d->H * d->W, work, d, oy0, oy1);
            }
        }
    }
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
