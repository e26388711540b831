/* plot.c - loss curve PNG; see plot.h. */
#include "pipeline/plot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/image.h"

static void px(SlImage *im, int x, int y, const uint8_t rgb[3]) {
    if (x < 0 || y < 0 || x >= im->w || y >= im->h) return;
    memcpy(im->data + ((size_t)y * im->w + x) * 3, rgb, 3);
}

static void line(SlImage *im, int x0, int y0, int x1, int y1, const uint8_t rgb[3]) {
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1, err = dx + dy;
    for (;;) {
        px(im, x0, y0, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) { err += dy; x0 += sx; }
        if (e2 <= dx) { err += dx; y0 += sy; }
    }
}

SlStatus sl_plot_curve_png(const char *path, const float *v, int n, float smoothing, int W, int H, SlCtx *ctx) {
    SlImage im = {0};
    SL_TRY(sl_image_alloc(&im, W, H, 3, ctx));
    memset(im.data, 255, (size_t)W * H * 3);
    const int L = 40, R = 10, T = 10, Bm = 30; /* margins */
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i]; }
    if (!(hi > lo)) { lo = isfinite(lo) ? lo - 1 : 0; hi = lo + 2; }
    const uint8_t axis[3] = {0, 0, 0}, grid[3] = {225, 225, 225}, raw[3] = {190, 190, 190}, ema_c[3] = {30, 90, 200};
    for (int g = 0; g <= 4; g++) {
        int y = T + (H - T - Bm) * g / 4;
        line(&im, L, y, W - R, y, grid);
    }
    line(&im, L, T, L, H - Bm, axis);
    line(&im, L, H - Bm, W - R, H - Bm, axis);
#define XOF(i) (L + (int)((double)(W - L - R) * (i) / (n > 1 ? n - 1 : 1)))
#define YOF(val) (H - Bm - (int)((double)(H - T - Bm) * ((val) - lo) / (hi - lo)))
    for (int i = 1; i < n; i++)
        if (isfinite(v[i]) && isfinite(v[i - 1])) line(&im, XOF(i - 1), YOF(v[i - 1]), XOF(i), YOF(v[i]), raw);
    double ema = n ? v[0] : 0, prev = ema;
    for (int i = 1; i < n; i++) {
        if (!isfinite(v[i])) continue;
        ema = smoothing * ema + (1 - smoothing) * v[i];
        line(&im, XOF(i - 1), YOF(prev), XOF(i), YOF(ema), ema_c);
        prev = ema;
    }
#undef XOF
#undef YOF
    SlStatus st = sl_image_write_png(&im, path, NULL, 0, ctx);
    sl_image_free(&im);
    return st;
}
