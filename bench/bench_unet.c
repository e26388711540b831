/* bench_unet.c - SD-1.5-shaped U-Net forward + backward time, GFLOP/s and peak RSS.
 *
 * Usage: bench_unet [config.json] [--hw 32] [--batch 1] [--tokens 77] [--iters 1] [--full] [--ckpt] [--infer]
 * Default config: $SL_SHARED_DIR/sd15/unet/config.json (../shared if unset).
 * Weights are seeded random (860M floats = 3.4 GB for SD 1.5: run one instance).
 * Without --full the weights are frozen (the LoRA case: backward computes input
 * gradients only); --full also accumulates every weight gradient (+3.4 GB);
 * --ckpt turns on gradient checkpointing (smaller activations, one more forward);
 * --infer plans for inference (no backward caches, as the sampler does) and
 * times the forward only (--batch 2 is one guided sampling step).
 * Compare with tests/reference/bench_unet_torch.py (same shapes, torch 2 threads).
 * FLOPs: forward counted from the planned layers; backward nominally 1x forward
 * (frozen: input gradients) or 2x (full: input + weight gradients).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench/bench_util.h"
#include "core/rng.h"
#include "unet/unet.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Process CPU seconds (all threads): on a loaded machine this says what the work costs. */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double peak_rss_gb(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_maxrss / (1024.0 * 1024.0);
}

int main(int argc, char **argv) {
    char cfg_path[1024];
    const char *shared = getenv("SL_SHARED_DIR");
    snprintf(cfg_path, sizeof cfg_path, "%s/sd15/unet/config.json", shared && *shared ? shared : "../shared");
    int64_t hw = 32, B = 1, T = 77;
    int iters = 1, full = 0, ckpt = 0, infer = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hw") && i + 1 < argc) hw = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--full")) full = 1;
        else if (!strcmp(argv[i], "--ckpt")) ckpt = 1;
        else if (!strcmp(argv[i], "--infer")) infer = 1;
        else if (argv[i][0] != '-') snprintf(cfg_path, sizeof cfg_path, "%s", argv[i]);
        else {
            fprintf(stderr, "usage: %s [config.json] [--hw N] [--batch B] [--tokens T] [--iters N] [--full] [--ckpt] [--infer]\n", argv[0]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlUNetConfig cfg;
    SlUNet u;
    if (sl_unet_config_load(&cfg, cfg_path, &ctx) != SL_OK || sl_unet_init(&u, &cfg, &ctx) != SL_OK) {
        fprintf(stderr, "bench_unet: %s\n", ctx.msg);
        return 1;
    }
    double t0 = now();
    sl_unet_init_random(&u, 1);
    if (full && sl_unet_enable_grads(&u, &ctx) != SL_OK) {
        fprintf(stderr, "bench_unet: %s\n", ctx.msg);
        return 1;
    }
    sl_unet_set_checkpointing(&u, ckpt);
    sl_unet_set_inference(&u, infer);
    const SlKernels kern = bench_kernels("bench_unet");
    sl_unet_set_kernels(&u, &kern);
    if (sl_unet_plan(&u, B, hw, hw, T, &ctx) != SL_OK) {
        fprintf(stderr, "bench_unet: %s\n", ctx.msg);
        return 1;
    }
    printf("config %s: %lld weights (%.2f GB), weights %.2f GB, activations %.2f GB, init %.1f s\n", cfg_path,
           (long long)sl_unet_n_weights(&u), sl_unet_n_weights(&u) * 4e-9, u.weights.size * 1e-9, u.acts.size * 1e-9,
           now() - t0);
    const int64_t Cin = cfg.in_channels, Cout = cfg.out_channels;
    float *x = malloc(sizeof(float) * (size_t)(B * Cin * hw * hw)), *ehs = malloc(sizeof(float) * (size_t)(B * T * cfg.cross_dim));
    float *out = malloc(sizeof(float) * (size_t)(B * Cout * hw * hw)), *dout = malloc(sizeof(float) * (size_t)(B * Cout * hw * hw));
    float *dx = calloc((size_t)(B * Cin * hw * hw), sizeof(float));
    float *ts = malloc(sizeof(float) * (size_t)B);
    sl_rng_normal(x, B * Cin * hw * hw, 2, 0, 0);
    sl_rng_normal(ehs, B * T * cfg.cross_dim, 2, 1, 0);
    sl_rng_normal(dout, B * Cout * hw * hw, 2, 2, 0);
    for (int64_t b = 0; b < B; b++) ts[b] = 500.0f + (float)b;
    const double ff = sl_unet_forward_flops(&u), fb = ff * (full ? 2.0 : 1.0);
    double best_f = 1e30, best_b = 1e30, cpu_f = 0, cpu_b = 0;
    for (int it = 0; it < iters; it++) {
        double a = now(), ca = cpu_now();
        sl_unet_forward(&u, out, x, ts, ehs);
        double b = now(), cb = cpu_now();
        if (infer) {
            if (b - a < best_f) { best_f = b - a; cpu_f = cb - ca; }
            continue;
        }
        sl_unet_zero_grads(&u);
        memset(dx, 0, sizeof(float) * (size_t)(B * Cin * hw * hw)); /* backward accumulates */
        sl_unet_backward(&u, dx, dout);
        double c = now(), cc = cpu_now();
        if (b - a < best_f) { best_f = b - a; cpu_f = cb - ca; }
        if (c - b < best_b) { best_b = c - b; cpu_b = cc - cb; }
    }
    if (infer) best_b = 0;
    printf("stylora unet %s B=%lld %lldx%lld T=%lld: forward %.2f s (%.1f GFLOP, %.1f GFLOP/s), backward %.2f s "
           "(%.1f GFLOP/s nominal), total %.2f s, peak RSS %.2f GB, checkpointing %s\n",
           infer ? "inference (forward only)" : full ? "full-grad" : "frozen", (long long)B, (long long)hw, (long long)hw, (long long)T, best_f, ff * 1e-9,
           ff * 1e-9 / best_f, best_b, best_b > 0 ? fb * 1e-9 / best_b : 0.0, best_f + best_b, peak_rss_gb(), ckpt ? "on" : "off");
    printf("cpu seconds (all threads): forward %.2f (%.1f GFLOP/s per cpu-second), backward %.2f\n", cpu_f,
           ff * 1e-9 / cpu_f, cpu_b);
    printf("out[0] %.6g dx[0] %.6g\n", out[0], dx[0]);
    fflush(stdout);
    free(x);
    free(ehs);
    free(out);
    free(dout);
    free(dx);
    free(ts);
    sl_unet_free(&u);
    return 0;
}
