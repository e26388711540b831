/* eval_style.c - the style distance between two image sets (see eval.h).
 *
 * Features per image, after an area resize to 64x64:
 *   conv1 3->16 3x3 s1, ReLU; conv2 16->32 3x3 s2, ReLU; conv3 32->32 3x3 s2,
 *   ReLU (He-normal weights from the counter RNG, stream 1 + layer, no bias) on
 *   the image centred per channel and divided by twice its overall standard
 *   deviation; Gram G[c][d] = sum_p f_c(p) f_d(p) / P per layer;
 *   channel mean/std of the 0..1 pixels; an 8-bin histogram of HSV saturation;
 *   on the luma's Sobel gradient: an 8-bin magnitude histogram (bins of 0.25,
 *   the last open) and an 8-bin orientation histogram (mod 180 degrees,
 *   magnitude-weighted, pixels with magnitude > 0.25); the fraction of pixels
 *   with luma < 0.2; the fraction of edge pixels (magnitude > 0.5) whose 3x3
 *   neighbourhood holds a pixel with luma < INK_LUMA (dark outlines).
 * A set's summary is the sum of these over its images, divided by n when
 * compared, so sets of different sizes compare directly.
 *
 * Dimension letters: C channels, H height, W width, P = H*W positions.
 */
#include <math.h>
#include <string.h>

#include "core/rng.h"
#include "core/tensor.h"
#include "nn/nn.h"
#include "pipeline/eval.h"

#define SIDE 64
/* Ink: luma under 0.35. At 0.15 only near-pure black counted: a VAE round trip of
 * the outline style's own images (the best a latent model can draw; the shipped VAE
 * decodes their 1-2 px lines at luma 0.2-0.3) kept 0.3% of its edges as ink against
 * the originals' 71%, so the term measured the VAE's blur, not the style. */
#define INK_LUMA 0.35f

SlStatus sl_style_net_init(SlStyleNet *net, uint64_t seed, SlCtx *ctx) {
    static const int ch[SL_STYLE_LAYERS + 1] = {3, 16, 32, 32};
    memset(net, 0, sizeof *net);
    memcpy(net->ch, ch, sizeof ch);
    for (int l = 0; l < SL_STYLE_LAYERS; l++) {
        int64_t n = (int64_t)ch[l + 1] * ch[l] * 9;
        net->w[l] = sl_alloc((size_t)n * sizeof(float));
        if (!net->w[l]) { sl_style_net_free(net); return sl_fail(ctx, SL_ERR_NOMEM, "style net: out of memory"); }
        sl_rng_normal(net->w[l], n, seed, 1 + (uint64_t)l, 0);
        float he = sqrtf(2.0f / (float)(ch[l] * 9));
        for (int64_t i = 0; i < n; i++) net->w[l][i] *= he;
    }
    return SL_OK;
}

void sl_style_net_free(SlStyleNet *net) {
    for (int l = 0; l < SL_STYLE_LAYERS; l++) sl_free(net->w[l]);
    memset(net, 0, sizeof *net);
}

void sl_style_stats_init(SlStyleStats *s) { memset(s, 0, sizeof *s); }

static int hist_bin(float v, float width) {
    int b = (int)(v / width);
    return b < 0 ? 0 : b >= SL_STYLE_HIST ? SL_STYLE_HIST - 1 : b;
}

SlStatus sl_style_stats_add(SlStyleStats *s, const SlStyleNet *net, const SlImage *img, SlCtx *ctx) {
    if (!img || !img->data || (img->c != 3 && img->c != 4))
        return sl_fail(ctx, SL_ERR_ARG, "style stats: need an RGB or RGBA image");
    SlImage r = {0};
    SL_TRY(sl_image_resize(&r, img, SIDE, SIDE, SL_RESIZE_AREA, ctx));
    const int P = SIDE * SIDE;
    /* plan: input, two activation buffers, im2col workspace */
    size_t wmax = 0, amax = (size_t)3 * P;
    SlConvDims d[SL_STYLE_LAYERS];
    int64_t hw = SIDE;
    for (int l = 0; l < SL_STYLE_LAYERS; l++) {
        int64_t stride = l == 0 ? 1 : 2;
        d[l] = sl_conv_dims(1, net->ch[l], hw, hw, net->ch[l + 1], 3, stride, 1, 1, 1, 1);
        hw = d[l].Ho;
        size_t ws = sl_conv2d_workspace(&d[l]), as = (size_t)(net->ch[l + 1] * d[l].Ho * d[l].Wo);
        if (ws > wmax) wmax = ws;
        if (as > amax) amax = as;
    }
    float *buf = sl_alloc((2 * amax + wmax + 1) * sizeof(float));
    if (!buf) { sl_image_free(&r); return sl_fail(ctx, SL_ERR_NOMEM, "style stats: out of memory"); }
    float *a = buf, *b = buf + amax, *work = buf + 2 * amax; /* a, b: [C, H, W] */
    /* colour, saturation, gradient, dark statistics on 0..1 pixels */
    float luma[SIDE * SIDE]; /* (H, W) */
    double sum[3] = {0}, sq[3] = {0}, dark = 0;
    double sat[SL_STYLE_HIST] = {0}, grad[SL_STYLE_HIST] = {0}, orient[SL_STYLE_HIST] = {0}, n_edge = 0, n_ink = 0;
    double osum = 0;
    for (int p = 0; p < P; p++) {
        float v[3];
        for (int c = 0; c < 3; c++) {
            v[c] = r.data[(size_t)p * r.c + c] / 255.0f;
            sum[c] += v[c];
            sq[c] += (double)v[c] * v[c];
            a[c * P + p] = v[c] * 2.0f - 1.0f;
        }
        float mx = fmaxf(v[0], fmaxf(v[1], v[2])), mn = fminf(v[0], fminf(v[1], v[2]));
        sat[hist_bin(mx > 0 ? (mx - mn) / mx : 0.0f, 1.0f / SL_STYLE_HIST)] += 1.0;
        luma[p] = 0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2];
        dark += luma[p] < 0.2f;
    }
    for (int y = 0; y < SIDE; y++)
        for (int x = 0; x < SIDE; x++) {
#define L(yy, xx) luma[((yy) < 0 ? 0 : (yy) >= SIDE ? SIDE - 1 : (yy)) * SIDE + ((xx) < 0 ? 0 : (xx) >= SIDE ? SIDE - 1 : (xx))]
            float gx = L(y - 1, x + 1) + 2 * L(y, x + 1) + L(y + 1, x + 1) - L(y - 1, x - 1) - 2 * L(y, x - 1) - L(y + 1, x - 1);
            float gy = L(y + 1, x - 1) + 2 * L(y + 1, x) + L(y + 1, x + 1) - L(y - 1, x - 1) - 2 * L(y - 1, x) - L(y - 1, x + 1);
#undef L
            float mag = sqrtf(gx * gx + gy * gy);
            grad[hist_bin(mag, 0.25f)] += 1.0;
            if (mag > 0.25f) { /* edge orientation mod 180, magnitude-weighted */
                float ang = atan2f(gy, gx);
                if (ang < 0) ang += (float)M_PI;
                orient[hist_bin(ang, (float)M_PI / SL_STYLE_HIST + 1e-6f)] += mag;
                osum += mag;
            }
            if (mag > 0.5f) { /* an edge pixel: is it dark ink? (darkest of its 3x3) */
                float mn = 1.0f;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int yy = y + dy, xx = x + dx;
                        if (yy >= 0 && xx >= 0 && yy < SIDE && xx < SIDE && luma[yy * SIDE + xx] < mn) mn = luma[yy * SIDE + xx];
                    }
                n_edge += 1.0;
                n_ink += mn < INK_LUMA;
            }
        }
    double tot_var = 0;
    for (int c = 0; c < 3; c++) {
        double m = sum[c] / P, var = sq[c] / P - m * m;
        for (int p = 0; p < P; p++) a[c * P + p] -= (float)(2.0 * m - 1.0);
        s->mean[c] += m;
        s->std[c] += sqrt(var > 0 ? var : 0);
        tot_var += var > 0 ? var : 0;
    }
    /* conv input: centred and contrast-normalised, so the Grams see texture, not colour */
    float inv = (float)(1.0 / (2.0 * sqrt(tot_var / 3.0) + 1e-3));
    for (int i = 0; i < 3 * P; i++) a[i] *= inv;
    for (int i = 0; i < SL_STYLE_HIST; i++) { s->sat[i] += sat[i] / P; s->grad[i] += grad[i] / P; }
    s->dark += dark / P;
    for (int i = 0; i < SL_STYLE_HIST; i++) s->orient[i] += osum > 0 ? orient[i] / osum : 1.0 / SL_STYLE_HIST;
    s->ink += n_edge > 0 ? n_ink / n_edge : 0.0;
    /* random conv features and their Gram matrices */
    for (int l = 0; l < SL_STYLE_LAYERS; l++) {
        sl_conv2d_forward(b, a, net->w[l], NULL, &d[l], work, NULL); /* a fixed feature net: the default kernels */
        int64_t C = d[l].Co, Q = d[l].Ho * d[l].Wo;
        for (int64_t i = 0; i < C * Q; i++) b[i] = b[i] > 0 ? b[i] : 0.0f;
        for (int64_t ci = 0; ci < C; ci++)
            for (int64_t cj = ci; cj < C; cj++) {
                double g = 0;
                for (int64_t q = 0; q < Q; q++) g += (double)b[ci * Q + q] * b[cj * Q + q];
                g /= (double)Q;
                s->gram[l][ci * C + cj] += g;
                if (cj != ci) s->gram[l][cj * C + ci] += g;
            }
        float *t = a; a = b; b = t;
    }
    s->n++;
    sl_free(buf);
    sl_image_free(&r);
    return SL_OK;
}

SlStatus sl_style_distance(SlStyleDistance *out, const SlStyleStats *a, const SlStyleStats *b, SlCtx *ctx) {
    memset(out, 0, sizeof *out);
    if (a->n < 1 || b->n < 1) return sl_fail(ctx, SL_ERR_ARG, "style distance: an image set is empty");
    const double na = a->n, nb = b->n;
    static const int ch[SL_STYLE_LAYERS] = {16, 32, 32};
    for (int l = 0; l < SL_STYLE_LAYERS; l++) {
        double dd = 0, ga = 0, gb = 0;
        for (int i = 0; i < ch[l] * ch[l]; i++) {
            double x = a->gram[l][i] / na, y = b->gram[l][i] / nb;
            dd += (x - y) * (x - y);
            ga += x * x;
            gb += y * y;
        }
        double den = 0.5 * (sqrt(ga) + sqrt(gb));
        out->gram += (den > 0 ? sqrt(dd) / den : 0.0) / SL_STYLE_LAYERS;
    }
    for (int c = 0; c < 3; c++)
        out->colour += (fabs(a->mean[c] / na - b->mean[c] / nb) + fabs(a->std[c] / na - b->std[c] / nb)) / 3.0;
    for (int i = 0; i < SL_STYLE_HIST; i++) {
        out->sat += 0.5 * fabs(a->sat[i] / na - b->sat[i] / nb);
        out->grad += 0.5 * fabs(a->grad[i] / na - b->grad[i] / nb);
        out->orient += 0.5 * fabs(a->orient[i] / na - b->orient[i] / nb);
    }
    out->dark = fabs(a->dark / na - b->dark / nb);
    out->ink = fabs(a->ink / na - b->ink / nb);
    out->total = (out->gram + out->colour + out->sat + out->grad + out->orient + out->dark + out->ink) / 7.0;
    return SL_OK;
}
