/* plot.h - a loss curve as a PNG: the raw values in light grey, an
 * exponential moving average in blue, on a white canvas with axes and
 * horizontal grid lines (no text: the CSV beside it has the numbers). */
#ifndef SL_PIPELINE_PLOT_H
#define SL_PIPELINE_PLOT_H

#include "core/status.h"

/* values[0..n) over steps; smoothing in [0,1) (0.9 typical). */
SlStatus sl_plot_curve_png(const char *path, const float *values, int n, float smoothing, int width, int height,
                           SlCtx *ctx);

#endif
