/* vae_tiled.c - tiled encode/decode with linear blending of overlaps.
 *
 * Tiles are laid out per axis in latent units: n tiles of size T spread evenly
 * over the length so consecutive tiles overlap by at least O. Each tile runs
 * through the whole network on its own (so GroupNorm statistics and the
 * mid-block attention are per tile, as in diffusers' tiled_decode). Outputs are
 * blended with separable weights w_y(y) * w_x(x): a tile's weight ramps
 * linearly from 0 to 1 across its overlap with the previous tile and from 1
 * to 0 across the overlap with the next; the result is divided by the sum of
 * the weights (exactly 1 wherever only two tiles meet).
 *
 * Dimension letters: B batch, C channels, n_h/n_w the size in latent units,
 * f the image/latent factor, T/O tile and overlap in latent units.
 */
#include <stdlib.h>
#include <string.h>

#include "vae_internal.h"

/* Tile starts along one axis of length n (latent units). */
static int tile_starts(int64_t n, int64_t T, int64_t O, int64_t *starts, int cap) {
    if (n <= T) { starts[0] = 0; return 1; }
    int64_t cnt = (n - O + (T - O) - 1) / (T - O);
    if (cnt < 2) cnt = 2;
    if (cnt > cap) cnt = cap;
    for (int64_t k = 0; k < cnt; k++) {
        /* round(k * (n - T) / (cnt - 1)) */
        starts[k] = (2 * k * (n - T) + (cnt - 1)) / (2 * (cnt - 1));
    }
    return (int)cnt;
}

/* Weights of tile k (size Tl = min(T,n) latent units) along one axis in
 * output pixels: wt [Tl*f]. */
static void tile_weights(float *wt, const int64_t *starts, int cnt, int k, int64_t Tl, int64_t f) {
    const int64_t s = starts[k] * f, L = Tl * f;
    for (int64_t i = 0; i < L; i++) {
        const int64_t p = s + i;
        float wv = 1.0f;
        if (k > 0) {
            const int64_t prev_end = (starts[k - 1] + Tl) * f;
            if (p < prev_end) {
                const float r = ((float)(p - s) + 0.5f) / (float)(prev_end - s);
                if (r < wv) wv = r;
            }
        }
        if (k < cnt - 1) {
            const int64_t next_start = starts[k + 1] * f;
            const int64_t end = s + L;
            if (p >= next_start) {
                const float r = ((float)(end - p) - 0.5f) / (float)(end - next_start);
                if (r < wv) wv = r;
            }
        }
        wt[i] = wv;
    }
}

#define VAE_MAX_TILES 4096

/* Shared driver. enc = 1: in is the image [B,Cin,n_h*f,n_w*f], outputs mean and
 * logvar [B,lc,n_h,n_w]; enc = 0: in is the latent, output the image. */
static SlStatus tiled_run(SlVae *v, int enc, const float *in, int64_t B, int64_t n_h, int64_t n_w, int64_t T,
                          int64_t O, float *out0, float *out1, SlCtx *ctx) {
    const SlVaeConfig *c = &v->cfg;
    const int64_t f = sl_vae_downscale(c);
    const int64_t fin = enc ? f : 1, fout = enc ? 1 : f;
    const int64_t Cin = enc ? c->in_channels : c->latent_channels;
    const int64_t Cout = enc ? c->latent_channels : c->out_channels;
    const int nout = enc ? 2 : 1;
    float *outs[2] = {out0, out1};

    int64_t *sy = malloc(VAE_MAX_TILES * sizeof *sy), *sx = malloc(VAE_MAX_TILES * sizeof *sx);
    const int64_t Th = T < n_h ? T : n_h, Tw = T < n_w ? T : n_w;
    const int64_t Hin = n_h * fin, Win = n_w * fin, Hout = n_h * fout, Wout = n_w * fout;
    const int64_t tin = B * Cin * Th * fin * Tw * fin, tout = B * Cout * Th * fout * Tw * fout;
    float *tile_in = sl_alloc((size_t)tin * sizeof(float));
    float *tile_out = sl_alloc((size_t)(nout * tout) * sizeof(float));
    float *wy = sl_alloc((size_t)(Th * fout) * sizeof(float)), *wx = sl_alloc((size_t)(Tw * fout) * sizeof(float));
    float *sumy = sl_calloc((size_t)Hout * sizeof(float)), *sumx = sl_calloc((size_t)Wout * sizeof(float));
    SlStatus st = SL_OK;
    if (!sy || !sx || !tile_in || !tile_out || !wy || !wx || !sumy || !sumx) {
        st = sl_fail(ctx, SL_ERR_NOMEM, "vae tiled: out of memory for tile buffers");
        goto done;
    }
    const int ny = tile_starts(n_h, T, O, sy, VAE_MAX_TILES), nx = tile_starts(n_w, T, O, sx, VAE_MAX_TILES);
    /* weight sums per axis (the 2-D sum is their product) */
    for (int ty = 0; ty < ny; ty++) {
        tile_weights(wy, sy, ny, ty, Th, fout);
        for (int64_t i = 0; i < Th * fout; i++) sumy[sy[ty] * fout + i] += wy[i];
    }
    for (int tx = 0; tx < nx; tx++) {
        tile_weights(wx, sx, nx, tx, Tw, fout);
        for (int64_t i = 0; i < Tw * fout; i++) sumx[sx[tx] * fout + i] += wx[i];
    }
    for (int o = 0; o < nout; o++)
        if (outs[o]) memset(outs[o], 0, (size_t)(B * Cout * Hout * Wout) * sizeof(float));

    const int64_t th_in = Th * fin, tw_in = Tw * fin, th_out = Th * fout, tw_out = Tw * fout;
    for (int ty = 0; ty < ny && st == SL_OK; ty++) {
        tile_weights(wy, sy, ny, ty, Th, fout);
        for (int tx = 0; tx < nx && st == SL_OK; tx++) {
            tile_weights(wx, sx, nx, tx, Tw, fout);
            const int64_t y0 = sy[ty] * fin, x0 = sx[tx] * fin;
            for (int64_t bc = 0; bc < B * Cin; bc++)
                for (int64_t yy = 0; yy < th_in; yy++)
                    memcpy(tile_in + (bc * th_in + yy) * tw_in, in + (bc * Hin + y0 + yy) * Win + x0,
                           (size_t)tw_in * sizeof(float));
            if (enc) st = sl_vae_encode(v, tile_in, B, th_in, tw_in, tile_out, tile_out + tout, ctx);
            else st = sl_vae_decode(v, tile_in, B, th_in, tw_in, tile_out, ctx);
            if (st != SL_OK) break;
            const int64_t oy0 = sy[ty] * fout, ox0 = sx[tx] * fout;
            for (int o = 0; o < nout; o++) {
                if (!outs[o]) continue;
                const float *src = tile_out + o * tout;
                for (int64_t bc = 0; bc < B * Cout; bc++)
                    for (int64_t yy = 0; yy < th_out; yy++) {
                        const float wyv = wy[yy] / sumy[oy0 + yy];
                        float *dst = outs[o] + (bc * Hout + oy0 + yy) * Wout + ox0;
                        const float *s = src + (bc * th_out + yy) * tw_out;
                        for (int64_t xx = 0; xx < tw_out; xx++)
                            dst[xx] += s[xx] * wyv * (wx[xx] / sumx[ox0 + xx]);
                    }
            }
        }
    }
done:
    free(sy);
    free(sx);
    sl_free(tile_in);
    sl_free(tile_out);
    sl_free(wy);
    sl_free(wx);
    sl_free(sumy);
    sl_free(sumx);
    return st;
}

static SlStatus check_tiles(int64_t tile, int64_t overlap, const char *what, SlCtx *ctx) {
    if (tile < 1 || overlap < 0 || overlap >= tile)
        return sl_fail(ctx, SL_ERR_ARG, "vae %s: need 0 <= overlap (%lld) < tile (%lld)", what,
                       (long long)overlap, (long long)tile);
    return SL_OK;
}

SlStatus sl_vae_decode_tiled(SlVae *vae, const float *latent, int64_t B, int64_t h, int64_t w, int64_t tile,
                             int64_t overlap, float *image, SlCtx *ctx) {
    SL_TRY(check_tiles(tile, overlap, "decode_tiled", ctx));
    if (h <= tile && w <= tile) return sl_vae_decode(vae, latent, B, h, w, image, ctx);
    if (B < 1) return sl_fail(ctx, SL_ERR_ARG, "vae decode_tiled: batch %lld", (long long)B);
    return tiled_run(vae, 0, latent, B, h, w, tile, overlap, image, NULL, ctx);
}

SlStatus sl_vae_encode_tiled(SlVae *vae, const float *image, int64_t B, int64_t H, int64_t W, int64_t tile,
                             int64_t overlap, float *mean, float *logvar, SlCtx *ctx) {
    SL_TRY(check_tiles(tile, overlap, "encode_tiled", ctx));
    const int64_t f = sl_vae_downscale(&vae->cfg);
    if (H % f || W % f || tile % f || overlap % f)
        return sl_fail(ctx, SL_ERR_ARG,
                       "vae encode_tiled: H %lld, W %lld, tile %lld and overlap %lld must be multiples of %lld",
                       (long long)H, (long long)W, (long long)tile, (long long)overlap, (long long)f);
    if (H <= tile && W <= tile) return sl_vae_encode(vae, image, B, H, W, mean, logvar, ctx);
    if (B < 1) return sl_fail(ctx, SL_ERR_ARG, "vae encode_tiled: batch %lld", (long long)B);
    return tiled_run(vae, 1, image, B, H / f, W / f, tile / f, overlap / f, mean, logvar, ctx);
}
