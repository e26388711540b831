/* act.c - pointwise activations and their backward: SiLU, exact GELU (erf),
 * CLIP's quick_gelu, diffusers' GEGLU, and axpy.
 *
 * Forward may run in place (out == in). Backward accumulates into din.
 * These loops are memory bound; they are OpenMP-parallel above a size
 * threshold and left to the compiler's vectorizer otherwise. No _ref twins
 * except GEGLU's: the others are already their own plain definition (tests
 * check them against finite differences and double-precision formulas);
 * GEGLU's fast path uses a vectorized erf, its _ref twin libm's erff.
 *
 * Dimension letters: n elements, N rows, F features per half (GEGLU).
 */
#include <math.h>

#include "nn.h"
#include "nn_exp.h"

#define SL_ACT_PAR_MIN 32768 /* below this, threading costs more than it saves */

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

#define SL_ACT_CHUNK 4096 /* elements per OpenMP work item */

/* out = in * sigmoid(a * in), chunked so the vector exp of nn_exp.h is used. */
static void act_xsigmoid(float *out, const float *in, int64_t n, float a) {
    const int64_t nch = (n + SL_ACT_CHUNK - 1) / SL_ACT_CHUNK;
#pragma omp parallel for schedule(static) if (n >= SL_ACT_PAR_MIN)
    for (int64_t c = 0; c < nch; c++) {
        const int64_t i0 = c * SL_ACT_CHUNK, m = n - i0 < SL_ACT_CHUNK ? n - i0 : SL_ACT_CHUNK;
        if (out != in)
            for (int64_t j = 0; j < m; j++) out[i0 + j] = in[i0 + j];
        sl_nn_xsigmoid_inplace(out + i0, m, a);
    }
}

void sl_silu_forward(float *out, const float *in, int64_t n) { act_xsigmoid(out, in, n, 1.0f); }

/* d/dx x*s(x) = s(x) * (1 + x*(1 - s(x))) */
void sl_silu_backward(float *din, const float *dout, const float *in, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= SL_ACT_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float s = sigmoid_f(in[i]);
        din[i] += dout[i] * s * (1.0f + in[i] * (1.0f - s));
    }
}

static inline float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2)); }

/* d/dx = Phi(x) + x * phi(x) */
static inline float gelu_grad_f(float x) {
    const float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
    const float pdf = expf(-0.5f * x * x) * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
    return cdf + x * pdf;
}

void sl_gelu_forward(float *out, const float *in, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= SL_ACT_PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = gelu_f(in[i]);
}

void sl_gelu_backward(float *din, const float *dout, const float *in, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= SL_ACT_PAR_MIN)
    for (int64_t i = 0; i < n; i++) din[i] += dout[i] * gelu_grad_f(in[i]);
}

void sl_quick_gelu_forward(float *out, const float *in, int64_t n) { act_xsigmoid(out, in, n, 1.702f); }

/* d/dx x*s(ax) = s(ax) + a*x*s(ax)*(1 - s(ax)) */
void sl_quick_gelu_backward(float *din, const float *dout, const float *in, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= SL_ACT_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float s = sigmoid_f(1.702f * in[i]);
        din[i] += dout[i] * (s + 1.702f * in[i] * s * (1.0f - s));
    }
}

/* GEGLU's GELU uses erf(z) = 1 - r(t) t e^(-z^2), t = 1/(1 + p|z|) (Abramowitz-Stegun
 * 7.1.26, |error| <= 1.5e-7; the same formula PyTorch's vectorized CPU erf uses) so
 * that one vector exp per element serves both gelu(g) and gelu'(g) =
 * Phi(g) + g phi(g), phi(g) = e^(-g^2/2) / sqrt(2 pi) = e^(-z^2) / sqrt(2 pi). */
#define SL_GEGLU_CHUNK 64

/* cdf[j] = Phi(g[j]) and e[j] = e^(-g[j]^2 / 2) for j < m (m <= SL_GEGLU_CHUNK). */
static inline void geglu_phi(float *cdf, float *e, const float *g, int64_t m) {
#pragma omp simd
    for (int64_t j = 0; j < m; j++) e[j] = -0.5f * g[j] * g[j];
    sl_nn_exp_row(e, m, 0.0f);
#pragma omp simd
    for (int64_t j = 0; j < m; j++) {
        const float a = fabsf(g[j]) * (float)M_SQRT1_2;
        const float t = 1.0f / (1.0f + 0.3275911f * a);
        const float r = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t +
                         0.254829592f) * t;
        const float erf_abs = 1.0f - r * e[j];
        cdf[j] = 0.5f * (1.0f + (g[j] < 0.0f ? -erf_abs : erf_abs));
    }
}

/* in [N,2F] = [hidden | gate], out [N,F] = hidden * gelu(gate). out must not alias in. */
void sl_geglu_forward(float *out, const float *in, int64_t N, int64_t F) {
#pragma omp parallel for schedule(static) if (N * F >= SL_ACT_PAR_MIN)
    for (int64_t r = 0; r < N; r++) {
        const float *h = in + r * 2 * F, *g = h + F;
        float *y = out + r * F;
        float cdf[SL_GEGLU_CHUNK], e[SL_GEGLU_CHUNK];
        for (int64_t j0 = 0; j0 < F; j0 += SL_GEGLU_CHUNK) {
            const int64_t m = F - j0 < SL_GEGLU_CHUNK ? F - j0 : SL_GEGLU_CHUNK;
            geglu_phi(cdf, e, g + j0, m);
#pragma omp simd
            for (int64_t j = 0; j < m; j++) y[j0 + j] = h[j0 + j] * (g[j0 + j] * cdf[j]);
        }
    }
}

/* din [N,2F] += [dout*gelu(gate) | dout*hidden*gelu'(gate)] */
void sl_geglu_backward(float *din, const float *dout, const float *in, int64_t N, int64_t F) {
    const float inv_sqrt_2pi = (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
#pragma omp parallel for schedule(static) if (N * F >= SL_ACT_PAR_MIN)
    for (int64_t r = 0; r < N; r++) {
        const float *h = in + r * 2 * F, *g = h + F, *dy = dout + r * F;
        float *dh = din + r * 2 * F, *dg = dh + F;
        float cdf[SL_GEGLU_CHUNK], e[SL_GEGLU_CHUNK];
        for (int64_t j0 = 0; j0 < F; j0 += SL_GEGLU_CHUNK) {
            const int64_t m = F - j0 < SL_GEGLU_CHUNK ? F - j0 : SL_GEGLU_CHUNK;
            geglu_phi(cdf, e, g + j0, m);
#pragma omp simd
            for (int64_t j = 0; j < m; j++) {
                const float gj = g[j0 + j];
                dh[j0 + j] += dy[j0 + j] * (gj * cdf[j]);
                dg[j0 + j] += dy[j0 + j] * h[j0 + j] * (cdf[j] + gj * e[j] * inv_sqrt_2pi);
            }
        }
    }
}

void sl_geglu_forward_ref(float *out, const float *in, int64_t N, int64_t F) {
    for (int64_t r = 0; r < N; r++) {
        const float *h = in + r * 2 * F, *g = h + F;
        for (int64_t j = 0; j < F; j++) out[r * F + j] = h[j] * gelu_f(g[j]);
    }
}

void sl_geglu_backward_ref(float *din, const float *dout, const float *in, int64_t N, int64_t F) {
    for (int64_t r = 0; r < N; r++) {
        const float *h = in + r * 2 * F, *g = h + F, *dy = dout + r * F;
        float *dh = din + r * 2 * F, *dg = dh + F;
        for (int64_t j = 0; j < F; j++) {
            dh[j] += dy[j] * gelu_f(g[j]);
            dg[j] += dy[j] * h[j] * gelu_grad_f(g[j]);
        }
    }
}

void sl_axpy(float *y, float a, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= SL_ACT_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}
