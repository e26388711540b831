/* bench_nf4.c - NF4 frozen U-Net at SD-1.5 shape: bytes, resident memory, step times,
 * and the output agreement with fp32, side by side.
 *
 * Usage: bench_nf4 [config.json] [--hw 32] [--tokens 77] [--layers LIST] [--dq] [--reps 3]
 *                  [--iters 2] [--no-unet]
 * Default config: $SL_SHARED_DIR/sd15/unet/config.json. Weights are seeded random
 * (sl_unet_init_random), 3.4 GB fp32 for SD 1.5: run one instance.
 *   1. bytes (computed from the config, no allocation): the quantized linears in fp32, fp16,
 *      nf4 and nf4+double-quant (bitsandbytes' packed sizes), and the whole frozen U-Net.
 *      Issue target: nf4 <= 0.16x the fp32 bytes of the quantized weights.
 *   2. per-linear kernels at the U-Net's shapes (N = tokens of the level at --hw latents,
 *      B = 1): fp32 sl_sgemm forward + input backward vs the fused NF4 kernels, summed over
 *      every quantized linear (each unique shape timed, best of --reps, times its count).
 *      Process CPU time (all threads; OMP_WAIT_POLICY=passive) is used: wall time on the
 *      shared 2-core machine varies 2x between runs.
 *      Issue target: NF4 step time <= 1.3x fp32.
 *   3. (unless --no-unet) the whole U-Net: RSS (from /proc/self/statm) with fp32 weights and
 *      after sl_unet_quantize_nf4 and its steps (the fp32 arena is freed by then), a training
 *      step's frozen-base work (forward + input backward; best of --iters) and a sampling
 *      step (forward), the cosine of the NF4 output against fp32 (random weights: a worst
 *      case, README NF4 section). Run it under `flock /tmp/sd15.lock` on shared machines.
 * The figures end in `name: value` lines (nf4_bytes_ratio_vs_fp32, nf4_train_step_ratio_vs_fp32, ...).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "nn/gemm.h"
#include "nn/nf4.h"
#include "pipeline/quant.h"
#include "unet/unet.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU seconds of the process (all threads): steadier than wall time on a shared machine. */
static double cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double rss_gb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE) / 1e9;
}

static void fill(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(seed >> 40) / 16777216.0 - 0.5) * 2.0f;
    }
}

typedef struct Shape { int64_t N, O, I; int count; } Shape;

/* Tokens a module sees at latent size hw: the resolution level is found from the module
 * name (down_blocks.i / up_blocks.i / mid_block); the cross-attention k/v see T rows. */
static int64_t rows_of(const SlUNetConfig *c, const char *name, int64_t hw, int64_t T) {
    int level = 0;
    const int nb = c->n_blocks;
    if (!strncmp(name, "down_blocks.", 12)) level = atoi(name + 12);
    else if (!strncmp(name, "up_blocks.", 10)) level = nb - 1 - atoi(name + 10);
    else if (!strncmp(name, "mid_block", 9)) level = nb - 1;
    else return 1; /* time embedding */
    if (strstr(name, "time_emb_proj")) return 1;
    if (strstr(name, "attn2.to_k") || strstr(name, "attn2.to_v")) return T;
    const int64_t s = hw >> level;
    return s * s;
}

int main(int argc, char **argv) {
    char cfg_path[1024];
    const char *shared = getenv("SL_SHARED_DIR");
    snprintf(cfg_path, sizeof cfg_path, "%s/sd15/unet/config.json", shared && *shared ? shared : "../shared");
    int64_t hw = 32, T = 77;
    int reps = 3, dq = 0, do_unet = 1, iters = 2;
    const char *layers = SL_NF4_DEFAULT_LAYERS;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hw") && i + 1 < argc) hw = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc) layers = argv[++i];
        else if (!strcmp(argv[i], "--dq")) dq = 1;
        else if (!strcmp(argv[i], "--no-unet")) do_unet = 0;
        else if (argv[i][0] != '-') snprintf(cfg_path, sizeof cfg_path, "%s", argv[i]);
        else {
            fprintf(stderr, "usage: %s [config.json] [--hw N] [--tokens T] [--layers LIST] [--dq] [--reps N] [--iters N] [--no-unet]\n", argv[0]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlUNetConfig cfg;
    SlUNet u;
    if (sl_unet_config_load(&cfg, cfg_path, &ctx) != SL_OK || sl_unet_init_shapes(&u, &cfg, &ctx) != SL_OK) {
        fprintf(stderr, "bench_nf4: %s\n", ctx.msg);
        return 1;
    }
    printf("config %s, layers \"%s\", dequantizer %s\n", cfg_path, layers, sl_nf4_isa_name(sl_nf4_isa_best()));
    /* ---- 1. bytes ---- */
    double all = 0, q = 0, q_nf4 = 0, q_dq = 0;
    int nq = 0;
    Shape shapes[256];
    int ns = 0;
    for (int i = 0; i < u.n_params; i++) {
        SlUNetParam *p = &u.params[i];
        const double n = (double)sl_shape_numel(p->ndim, p->shape);
        all += n;
        for (int j = 0; j < u.n_mods; j++) {
            SlLinear *m = u.mods[j].lin;
            if (!m || p->w != &m->w || !sl_nf4_select(layers, u.mods[j].name)) continue;
            q += n;
            nq++;
            q_nf4 += (double)sl_nf4_packed_bytes(m->O, m->I, 0);
            q_dq += (double)sl_nf4_packed_bytes(m->O, m->I, 1);
            const int64_t N = rows_of(&cfg, u.mods[j].name, hw, T);
            int k = 0;
            while (k < ns && !(shapes[k].N == N && shapes[k].O == m->O && shapes[k].I == m->I)) k++;
            if (k == ns && ns < 256) shapes[ns++] = (Shape){N, m->O, m->I, 0};
            if (k < 256) shapes[k].count++;
        }
    }
    const double rest = all - q;
    printf("\n1. bytes at this shape (%d quantized linears, %.1fM of %.1fM weights)\n", nq, q / 1e6, all / 1e6);
    printf("   %-22s %12s %12s %10s\n", "", "linears MB", "U-Net MB", "x fp32");
    printf("   %-22s %12.1f %12.1f %10.3f\n", "fp32", q * 4 / 1e6, all * 4 / 1e6, 1.0);
    printf("   %-22s %12.1f %12.1f %10.3f\n", "fp16", q * 2 / 1e6, all * 2 / 1e6, 0.5);
    printf("   %-22s %12.1f %12.1f %10.3f   (rest fp32)\n", "nf4", q_nf4 / 1e6, (q_nf4 + rest * 4) / 1e6, q_nf4 / (q * 4));
    printf("   %-22s %12.1f %12.1f %10.3f   (rest fp32)\n", "nf4 + double quant", q_dq / 1e6, (q_dq + rest * 4) / 1e6, q_dq / (q * 4));
    printf("   %-22s %12s %12.1f %10s   (rest fp16)\n", "nf4 + dq, rest fp16", "", (q_dq + rest * 2) / 1e6, "");
    printf("   target: nf4 <= 0.16x of the quantized weights' fp32 bytes: %s\n", q_nf4 / (q * 4) <= 0.16 ? "met" : "MISSED");

    /* ---- 2. kernels ---- */
    printf("\n2. linears at %lldx%lld latents (B=1, T=%lld): forward + input backward, CPU ms (all threads), best of %d\n", (long long)hw,
           (long long)hw, (long long)T, reps);
    printf("   %6s %6s %6s %5s %10s %10s %7s\n", "N", "O", "I", "count", "fp32 ms", "nf4 ms", "ratio");
    double t32 = 0, t4 = 0;
    for (int k = 0; k < ns; k++) {
        Shape s = shapes[k];
        float *w = malloc(sizeof(float) * (size_t)(s.O * s.I)), *x = malloc(sizeof(float) * (size_t)(s.N * s.I));
        float *y = malloc(sizeof(float) * (size_t)(s.N * s.O)), *din = malloc(sizeof(float) * (size_t)(s.N * s.I));
        fill(w, (size_t)(s.O * s.I), 1);
        fill(x, (size_t)(s.N * s.I), 2);
        SlNf4Weight W;
        void *mem = sl_alloc(sl_nf4_bytes(s.O, s.I, dq));
        sl_nf4_bind(&W, mem, s.O, s.I, dq);
        float *tmp = malloc(sizeof(float) * (size_t)W.n_blocks);
        sl_nf4_quantize(&W, w, tmp);
        float *work = malloc(sizeof(float) * sl_nf4_work_floats(&W));
        double b32 = 1e30, b4 = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = cpu();
            sl_sgemm(0, 1, s.N, s.O, s.I, 1.0f, x, s.I, w, s.I, 0.0f, y, s.O, NULL);
            memset(din, 0, sizeof(float) * (size_t)(s.N * s.I));
            sl_sgemm(0, 0, s.N, s.I, s.O, 1.0f, y, s.O, w, s.I, 1.0f, din, s.I, NULL);
            double t1 = cpu();
            sl_nf4_linear_forward(y, x, &W, s.N, work, NULL);
            memset(din, 0, sizeof(float) * (size_t)(s.N * s.I));
            sl_nf4_linear_backward_input(din, y, &W, s.N, work, NULL);
            double t2 = cpu();
            if (t1 - t0 < b32) b32 = t1 - t0;
            if (t2 - t1 < b4) b4 = t2 - t1;
        }
        printf("   %6lld %6lld %6lld %5d %10.3f %10.3f %7.2f\n", (long long)s.N, (long long)s.O, (long long)s.I, s.count,
               b32 * 1e3, b4 * 1e3, b4 / b32);
        t32 += b32 * s.count;
        t4 += b4 * s.count;
        free(w), free(x), free(y), free(din), free(tmp), free(work);
        sl_free(mem);
    }
    printf("   all quantized linears: fp32 %.1f ms, nf4%s %.1f ms: %.2fx (target <= 1.3x: %s)\n", t32 * 1e3, dq ? "+dq" : "",
           t4 * 1e3, t4 / t32, t4 / t32 <= 1.3 ? "met" : "MISSED");
    sl_unet_free(&u);
    /* machine-readable figures (name: value) */
    printf("\nunet_fp32_mb: %.1f\nunet_fp16_mb: %.1f\nunet_nf4_mb: %.1f\nunet_nf4dq_mb: %.1f\n", all * 4 / 1e6, all * 2 / 1e6,
           (q_nf4 + rest * 4) / 1e6, (q_dq + rest * 4) / 1e6);
    printf("nf4_bytes_ratio_vs_fp32: %.3f\nnf4dq_bytes_ratio_vs_fp32: %.3f\nnf4_linears_cpu_ratio_vs_fp32: %.2f\n", q_nf4 / (q * 4),
           q_dq / (q * 4), t4 / t32);
    if (!do_unet) return 0;

    /* ---- 3. the whole U-Net ---- */
    printf("\n3. U-Net at %lldx%lld latents, B=1, T=%lld (seeded random weights)\n", (long long)hw, (long long)hw, (long long)T);
    const double rss0 = rss_gb();
    if (sl_unet_init(&u, &cfg, &ctx) != SL_OK) {
        fprintf(stderr, "bench_nf4: %s\n", ctx.msg);
        return 1;
    }
    sl_unet_init_random(&u, 1234);
    const SlKernels kern = bench_kernels("bench_nf4");
    sl_unet_set_kernels(&u, &kern);
    if (sl_unet_plan(&u, 1, hw, hw, T, &ctx) != SL_OK) {
        fprintf(stderr, "bench_nf4: %s\n", ctx.msg);
        return 1;
    }
    const size_t nx = (size_t)(cfg.in_channels * hw * hw), no = (size_t)(cfg.out_channels * hw * hw);
    float *sample = malloc(sizeof(float) * nx), *ehs = malloc(sizeof(float) * (size_t)(T * cfg.cross_dim));
    float *o32 = malloc(sizeof(float) * no), *o4 = malloc(sizeof(float) * no), *ds = malloc(sizeof(float) * nx);
    float t = 500.0f;
    fill(sample, nx, 3);
    fill(ehs, (size_t)(T * cfg.cross_dim), 4);
    const double rss32 = rss_gb();
    double f32 = 1e30, b32u = 1e30, f4 = 1e30, b4u = 1e30, c32 = 1e30, c4 = 1e30;
    for (int it = 0; it < iters; it++) {
        double t0 = now(), k0 = cpu();
        sl_unet_forward(&u, o32, sample, &t, ehs);
        double t1 = now();
        memset(ds, 0, sizeof(float) * nx);
        sl_unet_backward(&u, ds, o32);
        double t2 = now();
        f32 = fmin(f32, t1 - t0), b32u = fmin(b32u, t2 - t1), c32 = fmin(c32, cpu() - k0);
    }
    SlNf4Stats st;
    if (sl_unet_quantize_nf4(&u, layers, dq, &st, &ctx) != SL_OK) {
        fprintf(stderr, "bench_nf4: %s\n", ctx.msg);
        return 1;
    }
    const double rss4 = rss_gb();
    for (int it = 0; it < iters; it++) {
        double t3 = now(), k3 = cpu();
        sl_unet_forward(&u, o4, sample, &t, ehs);
        double t4b = now();
        memset(ds, 0, sizeof(float) * nx);
        sl_unet_backward(&u, ds, o4);
        double t5 = now();
        f4 = fmin(f4, t4b - t3), b4u = fmin(b4u, t5 - t4b), c4 = fmin(c4, cpu() - k3);
    }
    const double rss4s = rss_gb();
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < no; i++) ab += (double)o32[i] * o4[i], aa += (double)o32[i] * o32[i], bb += (double)o4[i] * o4[i];
    printf("   %-10s %10s %10s %10s %10s %12s\n", "", "RSS GB", "arena GB", "fwd s", "bwd s", "fwd+bwd cpu s");
    printf("   %-10s %10.2f %10.2f %10.2f %10.2f %12.2f\n", "fp32", rss32 - rss0, st.arena_before / 1e9, f32, b32u, c32);
    printf("   %-10s %10.2f %10.2f %10.2f %10.2f %12.2f\n", dq ? "nf4+dq" : "nf4", rss4 - rss0, st.arena_after / 1e9, f4, b4u, c4);
    printf("   step (fwd+bwd) nf4 / fp32: %.2fx wall, %.2fx cpu (target <= 1.3x)\n", (f4 + b4u) / (f32 + b32u), c4 / c32);
    printf("   (RSS includes the activations planned for this size; arena = frozen weights incl. the %.1f MB tile)\n",
           st.work_bytes / 1e6);
    printf("   output cosine nf4 vs fp32: %.5f (issue target >= 0.99; random weights, see README)\n", ab / sqrt(aa * bb + 1e-300));
    printf("\nfp32_step_rss_gb: %.2f\nnf4_step_rss_gb: %.2f\nnf4_rss_ratio_vs_fp32: %.3f\n", rss32 - rss0, rss4s - rss0,
           (rss4s - rss0) / (rss32 - rss0));
    printf("fp32_train_step_s: %.2f\nnf4_train_step_s: %.2f\nnf4_train_step_ratio_vs_fp32: %.2f\nnf4_train_step_cpu_ratio_vs_fp32: %.2f\n",
           f32 + b32u, f4 + b4u, (f4 + b4u) / (f32 + b32u), c4 / c32);
    printf("fp32_sample_step_s: %.2f\nnf4_sample_step_s: %.2f\nnf4_sample_step_ratio_vs_fp32: %.2f\nnf4_output_cosine_random: %.5f\n",
           f32, f4, f4 / f32, ab / sqrt(aa * bb + 1e-300));
    free(sample), free(ehs), free(o32), free(o4), free(ds);
    sl_unet_free(&u);
    return 0;
}
