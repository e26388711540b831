/* norm.c - GroupNorm (NCHW) and LayerNorm (last dim), forward and backward.
 *
 * Statistics are accumulated in double (two passes: mean, then the mean of
 * squared deviations) so results track PyTorch's to ~1e-6 relative. rstd is
 * 1/sqrt(var + eps) with the biased (population) variance, as PyTorch.
 * The fast versions are OpenMP-parallel over (batch, group) / rows; the _ref
 * twins are the same maths, single-threaded and written as plainly as possible.
 *
 * Dimension letters: B batch, C channels, G groups, HW pixels per channel,
 * N rows, D normalized width. Each group holds C/G consecutive channels.
 */
#include <math.h>

#include "nn.h"
#include "nn_exp.h"
#include "nn_par.h"

/* Mean and rstd of x[0..n) in double. The sums are vectorized (double lanes,
 * combined in an order fixed by the build, never by the thread count). */
static void norm_stats(const float *x, int64_t n, float eps, float *mean_out, float *rstd_out) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += (double)x[i];
    const double m = s / (double)n;
    double v = 0.0;
#pragma omp simd reduction(+ : v)
    for (int64_t i = 0; i < n; i++) {
        const double t = (double)x[i] - m;
        v += t * t;
    }
    v /= (double)n;
    *mean_out = (float)m;
    *rstd_out = (float)(1.0 / sqrt(v + (double)eps));
}

/* Shared body of groupnorm and groupnorm+silu. */
static void groupnorm_forward_impl(float *out, float *mean, float *rstd, const float *in,
                                   const float *gamma, const float *beta, int64_t B, int64_t C,
                                   int64_t HW, int64_t G, float eps, int with_silu) {
    const int64_t cpg = C / G;
#pragma omp parallel for schedule(static) if (SL_NN_PAR(B * C * HW))
    for (int64_t bg = 0; bg < B * G; bg++) {
        const int64_t bi = bg / G, g = bg % G;
        const float *x = in + (bi * C + g * cpg) * HW;
        float *y = out + (bi * C + g * cpg) * HW;
        float m, r;
        norm_stats(x, cpg * HW, eps, &m, &r);
        mean[bg] = m;
        rstd[bg] = r;
        for (int64_t cc = 0; cc < cpg; cc++) {
            const int64_t c = g * cpg + cc;
            /* y = (x - mean)*a + beta with a = rstd*gamma; not x*a + (beta - mean*a),
             * which cancels badly when |mean| >> std */
            const float a = r * (gamma ? gamma[c] : 1.0f);
            const float sh = beta ? beta[c] : 0.0f;
            const float *xc = x + cc * HW;
            float *yc = y + cc * HW;
#pragma omp simd
            for (int64_t i = 0; i < HW; i++) yc[i] = (xc[i] - m) * a + sh;
            if (with_silu) sl_nn_xsigmoid_inplace(yc, HW, 1.0f);
        }
    }
}

/* out [B,C,HW] (may alias in), mean/rstd [B*G], gamma/beta [C] (NULL = 1 / 0). */
void sl_groupnorm_forward(float *out, float *mean, float *rstd, const float *in,
                          const float *gamma, const float *beta,
                          int64_t B, int64_t C, int64_t HW, int64_t G, float eps) {
    groupnorm_forward_impl(out, mean, rstd, in, gamma, beta, B, C, HW, G, eps, 0);
}

void sl_groupnorm_silu_forward(float *out, float *mean, float *rstd, const float *in,
                               const float *gamma, const float *beta,
                               int64_t B, int64_t C, int64_t HW, int64_t G, float eps) {
    groupnorm_forward_impl(out, mean, rstd, in, gamma, beta, B, C, HW, G, eps, 1);
}

/* din [B,C,HW] +=, dgamma/dbeta [C] +=. Parallel over groups (each group owns
 * its channels' dgamma/dbeta), batch inside. */
void sl_groupnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                           const float *in, const float *gamma, const float *mean, const float *rstd,
                           int64_t B, int64_t C, int64_t HW, int64_t G) {
    const int64_t cpg = C / G;
    const double n = (double)(cpg * HW);
#pragma omp parallel for schedule(static) if (SL_NN_PAR(B * C * HW))
    for (int64_t g = 0; g < G; g++) {
        for (int64_t bi = 0; bi < B; bi++) {
            const int64_t bg = bi * G + g;
            const float m = mean[bg], r = rstd[bg];
            const int64_t off = (bi * C + g * cpg) * HW;
            double s1 = 0.0, s2 = 0.0; /* sum dxhat, sum dxhat*xhat */
            for (int64_t cc = 0; cc < cpg; cc++) {
                const int64_t c = g * cpg + cc;
                const float gm = gamma ? gamma[c] : 1.0f;
                const float *x = in + off + cc * HW, *dy = dout + off + cc * HW;
                float a1 = 0.0f, a2 = 0.0f; /* per-channel partials */
                double c1 = 0.0, c2 = 0.0;
                for (int64_t i = 0; i < HW; i++) {
                    const float xh = (x[i] - m) * r;
                    a1 += dy[i];
                    a2 += dy[i] * xh;
                    if ((i & 255) == 255) { c1 += a1; c2 += a2; a1 = a2 = 0.0f; }
                }
                c1 += a1;
                c2 += a2;
                if (dbeta) dbeta[c] += (float)c1;
                if (dgamma) dgamma[c] += (float)c2;
                s1 += c1 * gm;
                s2 += c2 * gm;
            }
            if (!din) continue;
            const float k1 = (float)(s1 / n), k2 = (float)(s2 / n);
            for (int64_t cc = 0; cc < cpg; cc++) {
                const int64_t c = g * cpg + cc;
                const float gm = gamma ? gamma[c] : 1.0f;
                const float *x = in + off + cc * HW, *dy = dout + off + cc * HW;
                float *dx = din + off + cc * HW;
                for (int64_t i = 0; i < HW; i++) {
                    const float xh = (x[i] - m) * r;
                    dx[i] += r * (dy[i] * gm - k1 - xh * k2);
                }
            }
        }
    }
}

void sl_groupnorm_forward_ref(float *out, float *mean, float *rstd, const float *in,
                              const float *gamma, const float *beta,
                              int64_t B, int64_t C, int64_t HW, int64_t G, float eps) {
    const int64_t cpg = C / G;
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t g = 0; g < G; g++) {
            const int64_t off = (bi * C + g * cpg) * HW, n = cpg * HW;
            double s = 0.0, v = 0.0;
            for (int64_t i = 0; i < n; i++) s += in[off + i];
            const double m = s / (double)n;
            for (int64_t i = 0; i < n; i++) v += (in[off + i] - m) * (in[off + i] - m);
            v /= (double)n;
            const double r = 1.0 / sqrt(v + (double)eps);
            mean[bi * G + g] = (float)m;
            rstd[bi * G + g] = (float)r;
            for (int64_t i = 0; i < n; i++) {
                const int64_t c = g * cpg + i / HW;
                const double y = (in[off + i] - m) * r * (gamma ? gamma[c] : 1.0f) +
                                 (beta ? beta[c] : 0.0f);
                out[off + i] = (float)y;
            }
        }
}

void sl_groupnorm_backward_ref(float *din, float *dgamma, float *dbeta, const float *dout,
                               const float *in, const float *gamma, const float *mean, const float *rstd,
                               int64_t B, int64_t C, int64_t HW, int64_t G) {
    const int64_t cpg = C / G;
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t g = 0; g < G; g++) {
            const int64_t off = (bi * C + g * cpg) * HW, n = cpg * HW;
            const double m = mean[bi * G + g], r = rstd[bi * G + g];
            double s1 = 0.0, s2 = 0.0;
            for (int64_t i = 0; i < n; i++) {
                const int64_t c = g * cpg + i / HW;
                const double xh = (in[off + i] - m) * r;
                const double dxh = (double)dout[off + i] * (gamma ? gamma[c] : 1.0f);
                s1 += dxh;
                s2 += dxh * xh;
                if (dgamma) dgamma[c] += (float)(dout[off + i] * xh);
                if (dbeta) dbeta[c] += dout[off + i];
            }
            if (!din) continue;
            for (int64_t i = 0; i < n; i++) {
                const int64_t c = g * cpg + i / HW;
                const double xh = (in[off + i] - m) * r;
                const double dxh = (double)dout[off + i] * (gamma ? gamma[c] : 1.0f);
                din[off + i] += (float)(r * (dxh - s1 / (double)n - xh * s2 / (double)n));
            }
        }
}

/* ---- LayerNorm ---- */

/* out [N,D] (may alias in), mean/rstd [N], gamma/beta [D] (NULL = 1 / 0). */
void sl_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                          const float *gamma, const float *beta, int64_t N, int64_t D, float eps) {
#pragma omp parallel for schedule(static) if (SL_NN_PAR(N * D))
    for (int64_t n = 0; n < N; n++) {
        const float *x = in + n * D;
        float *y = out + n * D;
        float m, r;
        norm_stats(x, D, eps, &m, &r);
        mean[n] = m;
        rstd[n] = r;
        if (gamma && beta) {
#pragma omp simd
            for (int64_t i = 0; i < D; i++) y[i] = (x[i] - m) * r * gamma[i] + beta[i];
        } else {
            for (int64_t i = 0; i < D; i++) {
                const float xh = (x[i] - m) * r;
                y[i] = xh * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
            }
        }
    }
}

/* din [N,D] +=, dgamma/dbeta [D] +=. Rows in parallel for din; columns in
 * parallel for dgamma/dbeta so no two threads write the same element. */
void sl_layernorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                           const float *in, const float *gamma, const float *mean, const float *rstd,
                           int64_t N, int64_t D) {
    if (din) {
#pragma omp parallel for schedule(static) if (SL_NN_PAR(N * D))
        for (int64_t n = 0; n < N; n++) {
            const float *x = in + n * D, *dy = dout + n * D;
            float *dx = din + n * D;
            const float m = mean[n], r = rstd[n];
            double s1 = 0.0, s2 = 0.0;
            for (int64_t i = 0; i < D; i++) {
                const float dxh = dy[i] * (gamma ? gamma[i] : 1.0f);
                s1 += dxh;
                s2 += dxh * ((x[i] - m) * r);
            }
            const float k1 = (float)(s1 / (double)D), k2 = (float)(s2 / (double)D);
            for (int64_t i = 0; i < D; i++) {
                const float dxh = dy[i] * (gamma ? gamma[i] : 1.0f);
                dx[i] += r * (dxh - k1 - (x[i] - m) * r * k2);
            }
        }
    }
    if (dgamma || dbeta) {
        const int64_t blk = 64, nblk = (D + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (SL_NN_PAR(N * D))
        for (int64_t jb = 0; jb < nblk; jb++) {
            const int64_t j0 = jb * blk, j1 = j0 + blk < D ? j0 + blk : D;
            float ag[64], ab[64];
            for (int64_t j = j0; j < j1; j++) ag[j - j0] = ab[j - j0] = 0.0f;
            for (int64_t n = 0; n < N; n++) {
                const float *x = in + n * D, *dy = dout + n * D;
                const float m = mean[n], r = rstd[n];
                for (int64_t j = j0; j < j1; j++) {
                    ag[j - j0] += dy[j] * ((x[j] - m) * r);
                    ab[j - j0] += dy[j];
                }
            }
            for (int64_t j = j0; j < j1; j++) {
                if (dgamma) dgamma[j] += ag[j - j0];
                if (dbeta) dbeta[j] += ab[j - j0];
            }
        }
    }
}

void sl_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *in,
                              const float *gamma, const float *beta, int64_t N, int64_t D, float eps) {
    for (int64_t n = 0; n < N; n++) {
        double s = 0.0, v = 0.0;
        for (int64_t i = 0; i < D; i++) s += in[n * D + i];
        const double m = s / (double)D;
        for (int64_t i = 0; i < D; i++) v += (in[n * D + i] - m) * (in[n * D + i] - m);
        const double r = 1.0 / sqrt(v / (double)D + (double)eps);
        mean[n] = (float)m;
        rstd[n] = (float)r;
        for (int64_t i = 0; i < D; i++)
            out[n * D + i] = (float)((in[n * D + i] - m) * r * (gamma ? gamma[i] : 1.0f) +
                                     (beta ? beta[i] : 0.0f));
    }
}

void sl_layernorm_backward_ref(float *din, float *dgamma, float *dbeta, const float *dout,
                               const float *in, const float *gamma, const float *mean, const float *rstd,
                               int64_t N, int64_t D) {
    for (int64_t n = 0; n < N; n++) {
        const double m = mean[n], r = rstd[n];
        double s1 = 0.0, s2 = 0.0;
        for (int64_t i = 0; i < D; i++) {
            const double xh = (in[n * D + i] - m) * r;
            const double dxh = (double)dout[n * D + i] * (gamma ? gamma[i] : 1.0f);
            s1 += dxh;
            s2 += dxh * xh;
            if (dgamma) dgamma[i] += (float)(dout[n * D + i] * xh);
            if (dbeta) dbeta[i] += dout[n * D + i];
        }
        if (!din) continue;
        for (int64_t i = 0; i < D; i++) {
            const double xh = (in[n * D + i] - m) * r;
            const double dxh = (double)dout[n * D + i] * (gamma ? gamma[i] : 1.0f);
            din[n * D + i] += (float)(r * (dxh - s1 / (double)D - xh * s2 / (double)D));
        }
    }
}
