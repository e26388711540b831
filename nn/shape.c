/* shape.c - layout helpers: nearest x2 upsampling, [B,C,S] <-> [B,S,C]
 * transposes, and the sinusoidal timestep embedding of diffusers.
 *
 * Dimension letters: B batch, C channels, H/W size, S = H*W pixels,
 * dim embedding width.
 */
#include <math.h>

#include "nn.h"
#include "nn_par.h"

/* out [B,C,2H,2W] from in [B,C,H,W]. */
void sl_upsample_nearest2x_forward(float *out, const float *in, int64_t B, int64_t C, int64_t H, int64_t W) {
    const int64_t W2 = 2 * W;
#pragma omp parallel for schedule(static) if (SL_NN_PAR(4 * B * C * H * W))
    for (int64_t p = 0; p < B * C; p++) {
        const float *x = in + p * H * W;
        float *y = out + p * 4 * H * W;
        for (int64_t iy = 0; iy < H; iy++) {
            float *r0 = y + (2 * iy) * W2, *r1 = r0 + W2;
            for (int64_t ix = 0; ix < W; ix++) {
                const float v = x[iy * W + ix];
                r0[2 * ix] = r0[2 * ix + 1] = v;
                r1[2 * ix] = r1[2 * ix + 1] = v;
            }
        }
    }
}

/* din [B,C,H,W] += sum of each 2x2 block of dout [B,C,2H,2W]. */
void sl_upsample_nearest2x_backward(float *din, const float *dout, int64_t B, int64_t C, int64_t H, int64_t W) {
    const int64_t W2 = 2 * W;
#pragma omp parallel for schedule(static) if (SL_NN_PAR(4 * B * C * H * W))
    for (int64_t p = 0; p < B * C; p++) {
        float *dx = din + p * H * W;
        const float *dy = dout + p * 4 * H * W;
        for (int64_t iy = 0; iy < H; iy++) {
            const float *r0 = dy + (2 * iy) * W2, *r1 = r0 + W2;
            for (int64_t ix = 0; ix < W; ix++)
                dx[iy * W + ix] += (r0[2 * ix] + r0[2 * ix + 1]) + (r1[2 * ix] + r1[2 * ix + 1]);
        }
    }
}

/* Blocked transpose of B matrices [R,Cc] into [Cc,R]; parallel over (matrix,
 * block row) so that one image (B = 1) still uses every thread. Each 32x32
 * tile goes through a local buffer so that the strided side is never the inner
 * loop (a 4 KB stride, e.g. S = 1024, otherwise thrashes one L1 set). */
static void transpose_batched(float *out, const float *in, int64_t B, int64_t R, int64_t Cc) {
    const int64_t T = 32, nrb = (R + T - 1) / T;
#pragma omp parallel for schedule(static) if (SL_NN_PAR(B * R * Cc))
    for (int64_t t = 0; t < B * nrb; t++) {
        const int64_t b = t / nrb, r0 = (t % nrb) * T, r1 = r0 + T < R ? r0 + T : R;
        const float *x = in + b * R * Cc;
        float *y = out + b * R * Cc;
        float tile[32][33]; /* [r - r0][c - c0]: rows of x read whole, rows of y written whole */
        for (int64_t c0 = 0; c0 < Cc; c0 += T) {
            const int64_t c1 = c0 + T < Cc ? c0 + T : Cc;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) tile[r - r0][c - c0] = x[r * Cc + c];
            for (int64_t c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++) y[c * R + r] = tile[r - r0][c - c0];
        }
    }
}

/* out [B,S,C] from in [B,C,S]. */
void sl_transpose_cs_sc(float *out, const float *in, int64_t B, int64_t C, int64_t S) {
    transpose_batched(out, in, B, C, S);
}

/* out [B,C,S] from in [B,S,C]. */
void sl_transpose_sc_cs(float *out, const float *in, int64_t B, int64_t C, int64_t S) {
    transpose_batched(out, in, B, S, C);
}

/* out [B,dim] from t [B]. Follows diffusers' get_timestep_embedding step by
 * step in float32 (exponent, exp, t * freq), so the arguments of sin/cos are
 * the same float32 values torch computes; sin/cos themselves are taken in
 * double and rounded. Scale is 1 (the diffusers default). */
void sl_timestep_embedding(float *out, const float *t, int64_t B, int64_t dim,
                           int flip_sin_to_cos, float freq_shift, float max_period) {
    const int64_t half = dim / 2;
    const float lnp = (float)-log((double)max_period);
    const float denom = (float)half - freq_shift;
    for (int64_t b = 0; b < B; b++) {
        float *y = out + b * dim;
        for (int64_t i = 0; i < half; i++) {
            const float ex = (lnp * (float)i) / denom;
            const float freq = (float)exp((double)ex);
            const float arg = t[b] * freq;
            const float s = (float)sin((double)arg), c = (float)cos((double)arg);
            y[flip_sin_to_cos ? half + i : i] = s;
            y[flip_sin_to_cos ? i : half + i] = c;
        }
        if (dim % 2) y[dim - 1] = 0.0f;
    }
}
