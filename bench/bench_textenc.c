/* bench_textenc.c - CLIP text encoder forward time at CLIP-L size (SD 1.x), random weights.
 *
 * Usage: bench_textenc [config.json] [--torch]
 *   config.json  a CLIPTextConfig (default $SL_SHARED_DIR/sd15/text_encoder/config.json,
 *                else ../shared/sd15/text_encoder/config.json)
 *   --torch      also runs tests/reference/bench_textenc_torch.py (PyTorch, same config, same
 *                thread count) with /usr/bin/python3 and prints its line below ours.
 * Prints one line per implementation: min and median of REPS forwards of one 77-token prompt
 * (B=1, hidden states kept, as the trainer does when clip-skip is used). Threads: OMP_NUM_THREADS.
 * Not a test: nothing is asserted.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "textenc/clip.h"

#define REPS 7

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *shared = getenv("SL_SHARED_DIR");
    const char *src = getenv("SL_SOURCE_DIR");
    char cfg_path[1024];
    snprintf(cfg_path, sizeof cfg_path, "%s/sd15/text_encoder/config.json", shared && *shared ? shared : "../shared");
    int run_torch = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--torch") == 0) run_torch = 1;
        else snprintf(cfg_path, sizeof cfg_path, "%s", argv[i]);
    }
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlClipConfig cfg;
    SlClip *m = NULL;
    double t0 = now_s();
    if (sl_clip_config_load(&cfg, cfg_path, &ctx) || sl_clip_init_random(&m, &cfg, 42, &ctx)) {
        fprintf(stderr, "bench_textenc: %s\n", ctx.msg);
        return 1;
    }
    double t_init = now_s() - t0;
    const SlKernels kern = bench_kernels("bench_textenc");
    sl_clip_set_kernels(m, &kern);
    enum { B = 1, T = 77 };
    int32_t ids[B * T];
    for (int t = 0; t < T; t++) ids[t] = (int32_t)(cfg.eos_id == 2 ? cfg.V - 1 : cfg.eos_id);
    ids[0] = (int32_t)(cfg.bos_id < cfg.V ? cfg.bos_id : 0);
    for (int t = 1; t < 16; t++) ids[t] = (int32_t)((320 + 97 * t) % cfg.V);
    const size_t BTD = (size_t)B * T * cfg.D;
    float *last = malloc(BTD * sizeof(float));
    float *hs = malloc((size_t)(cfg.L + 1) * BTD * sizeof(float));
    float *pooled = malloc((size_t)B * cfg.D * sizeof(float));
    double times[REPS];
    int rc = 0;
    if (sl_clip_forward(m, ids, B, T, last, hs, pooled, &ctx)) rc = 1; /* warm-up, allocates activations */
    for (int r = 0; r < REPS && !rc; r++) {
        t0 = now_s();
        if (sl_clip_forward(m, ids, B, T, last, hs, pooled, &ctx)) rc = 1;
        times[r] = now_s() - t0;
    }
    if (rc) {
        fprintf(stderr, "bench_textenc: %s\n", ctx.msg);
        return 1;
    }
    qsort(times, REPS, sizeof times[0], cmp_d);
    printf("textenc CLIP D=%lld L=%lld V=%lld (%.1fM params), 1x%d tokens, %d threads\n", (long long)cfg.D,
           (long long)cfg.L, (long long)cfg.V, sl_clip_param_count(&cfg) / 1e6, T, omp_get_max_threads());
    printf("  stylora  forward: min %8.1f ms  median %8.1f ms   (random init %.2f s, weights %.0f MiB)\n",
           1e3 * times[0], 1e3 * times[REPS / 2], t_init, m->weights.size / 1048576.0);
    fflush(stdout);
    if (run_torch) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/reference/bench_textenc_torch.py '%s' %d",
                 src && *src ? src : ".", cfg_path, omp_get_max_threads());
        FILE *p = popen(cmd, "r");
        char line[512];
        while (p && fgets(line, sizeof line, p)) fputs(line, stdout);
        if (!p || pclose(p) != 0) fprintf(stderr, "bench_textenc: '%s' failed\n", cmd);
    }
    free(last); free(hs); free(pooled);
    sl_clip_free(m);
    return 0;
}
