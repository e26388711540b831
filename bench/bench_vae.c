/* bench_vae.c - SD-1.5-size VAE speed and memory (random weights).
 *
 * Encodes a 1x3x256x256 image and decodes a 1x4x32x32 latent, printing wall
 * time, GFLOP/s (conv + attention FLOPs, as counted by sl_vae_*_flops) and
 * peak RSS. tests/reference/bench_vae_torch.py prints the same figures for
 * PyTorch (2 threads) so the two can be put side by side.
 *
 * Usage: bench_vae [config.json] [reps]   (default / "": $SL_SHARED_DIR/sd15/vae/config.json; reps 1)
 * The first call of each kind includes planning and first-touch of the
 * activation arena; with reps > 1 the best later call is printed as well.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "bench/bench_util.h"
#include "vae/vae.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;  /* KiB on Linux */
}

int main(int argc, char **argv) {
    char def[1024];
    const char *shared = getenv("SL_SHARED_DIR");
    snprintf(def, sizeof def, "%s/sd15/vae/config.json", shared && *shared ? shared : "../shared");
    const char *cfg_path = argc > 1 && argv[1][0] ? argv[1] : def;
    const int reps = argc > 2 ? atoi(argv[2]) : 1;

    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlVaeConfig cfg;
    SlVae *vae = NULL;
    if (sl_vae_config_load(&cfg, cfg_path, &ctx) != SL_OK || sl_vae_create(&vae, &cfg, &ctx) != SL_OK) {
        fprintf(stderr, "bench_vae: %s\n", ctx.msg);
        return 1;
    }
    sl_vae_init_random(vae, 42);
    const SlKernels kern = bench_kernels("bench_vae");
    sl_vae_set_kernels(vae, &kern);
    const int64_t f = sl_vae_downscale(&cfg), H = 256, W = 256, h = 32, w = 32, lc = cfg.latent_channels;
    float *img = malloc((size_t)(cfg.in_channels * H * W) * sizeof(float));
    float *mean = malloc((size_t)(lc * (H / f) * (W / f)) * sizeof(float));
    float *logvar = malloc((size_t)(lc * (H / f) * (W / f)) * sizeof(float));
    float *lat = malloc((size_t)(lc * h * w) * sizeof(float));
    float *dec = malloc((size_t)(cfg.out_channels * h * f * w * f) * sizeof(float));
    for (int64_t i = 0; i < cfg.in_channels * H * W; i++) img[i] = sinf(0.001f * (float)i);
    for (int64_t i = 0; i < lc * h * w; i++) lat[i] = cosf(0.37f * (float)i);
    printf("bench_vae (C): %lld params, weights %.1f MiB, peak RSS after load %.1f MiB\n",
           (long long)sl_vae_param_count(&cfg), (double)sl_vae_param_count(&cfg) * 4 / 1048576.0, peak_rss_mib());

    const double fe = sl_vae_encode_flops(&cfg, 1, H, W), fd = sl_vae_decode_flops(&cfg, 1, h, w);
    double first = 0, best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (sl_vae_encode(vae, img, 1, H, W, mean, logvar, &ctx) != SL_OK) {
            fprintf(stderr, "bench_vae: %s\n", ctx.msg);
            return 1;
        }
        double dt = now_s() - t0;
        if (r == 0) first = dt; else if (dt < best) best = dt;
    }
    printf("encode 1x3x%lldx%lld: %.3f s, %.1f GFLOP, %.1f GFLOP/s", (long long)H, (long long)W, first, fe * 1e-9,
           fe * 1e-9 / first);
    if (reps > 1) printf(" (best later %.3f s, %.1f GFLOP/s)", best, fe * 1e-9 / best);
    printf(", peak RSS %.1f MiB\n", peak_rss_mib());

    first = 0;
    best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (sl_vae_decode(vae, lat, 1, h, w, dec, &ctx) != SL_OK) {
            fprintf(stderr, "bench_vae: %s\n", ctx.msg);
            return 1;
        }
        double dt = now_s() - t0;
        if (r == 0) first = dt; else if (dt < best) best = dt;
    }
    printf("decode 1x%lldx%lldx%lld: %.3f s, %.1f GFLOP, %.1f GFLOP/s", (long long)lc, (long long)h, (long long)w,
           first, fd * 1e-9, fd * 1e-9 / first);
    if (reps > 1) printf(" (best later %.3f s, %.1f GFLOP/s)", best, fd * 1e-9 / best);
    printf(", peak RSS %.1f MiB\n", peak_rss_mib());
    printf("activation arenas now: %.1f MiB\n", (double)sl_vae_activation_bytes(vae) / 1048576.0);
    free(img); free(mean); free(logvar); free(lat); free(dec);
    sl_vae_free(vae);
    return 0;
}
