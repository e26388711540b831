/* bench_infer.c - VAE decode or text-encoder forward of a model, with its real
 * weights or random ones; the PyTorch twin is tests/reference/bench_torch.py vae|textenc.
 *
 * Usage: bench_infer vae|textenc --model DIR [--random] [--res R] [--iters N]
 *   vae      decodes one latent [1,C,R/f,R/f] (R default the VAE's sample_size; SD size: --res 256
 *            gives a 32x32 latent) with sl_vae_decode. FLOPs: sl_vae_decode_flops (convs and
 *            attention matmuls from the layer shapes).
 *   textenc  one 77-token prompt, B=1, last hidden state only. FLOPs: bench_clip_flops.
 * Prints RESULT vae_decode / textenc (best of N after a warm-up).
 */
#include <math.h>

#include "bench/bench_util.h"

static double run_vae(const char *model, int random, int64_t res, int iters, double *flops) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlVaeConfig cfg;
    SlVae *vae = NULL;
    if (bench_vae_open(&vae, &cfg, model, random, &ctx)) bench_die("bench_infer", &ctx);
    const SlKernels kern = bench_kernels("bench_infer");
    sl_vae_set_kernels(vae, &kern);
    const int64_t R = res ? res : cfg.sample_size, f = sl_vae_downscale(&cfg), h = R / f, w = R / f;
    const int64_t lc = cfg.latent_channels;
    float *lat = malloc((size_t)(lc * h * w) * sizeof(float)), *img = malloc((size_t)(cfg.out_channels * R * R) * sizeof(float));
    if (!lat || !img) fprintf(stderr, "bench_infer: out of memory\n"), exit(1);
    for (int64_t i = 0; i < lc * h * w; i++) lat[i] = cosf(0.37f * (float)i);
    double best = 1e30;
    for (int it = 0; it <= iters; it++) {
        double s = bench_now();
        if (sl_vae_decode(vae, lat, 1, h, w, img, &ctx)) bench_die("bench_infer", &ctx);
        double dt = bench_now() - s;
        if (it > 0 && dt < best) best = dt;
    }
    *flops = sl_vae_decode_flops(&cfg, 1, h, w);
    printf("stylora VAE decode %s 1x%lldx%lldx%lld: %.3f s, %.1f GFLOP, img[0] %.6g\n", model, (long long)lc,
           (long long)h, (long long)w, best, *flops * 1e-9, img[0]);
    free(lat);
    free(img);
    sl_vae_free(vae);
    return best;
}

static double run_textenc(const char *model, int random, int iters, double *flops) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlClipConfig cfg;
    SlClip *m = NULL;
    if (bench_clip_open(&m, &cfg, model, random, &ctx)) bench_die("bench_infer", &ctx);
    const SlKernels kern = bench_kernels("bench_infer");
    sl_clip_set_kernels(m, &kern);
    enum { B = 1, T = 77 };
    int32_t ids[B * T]; /* BOS, 15 word tokens, EOS padding (as bench_textenc) */
    for (int t = 0; t < T; t++) ids[t] = (int32_t)(cfg.eos_id == 2 ? cfg.V - 1 : cfg.eos_id);
    ids[0] = (int32_t)(cfg.bos_id < cfg.V ? cfg.bos_id : 0);
    for (int t = 1; t < 16; t++) ids[t] = (int32_t)((320 + 97 * t) % cfg.V);
    float *last = malloc((size_t)(B * T * cfg.D) * sizeof(float));
    if (!last) fprintf(stderr, "bench_infer: out of memory\n"), exit(1);
    double best = 1e30;
    for (int it = 0; it <= iters; it++) {
        double s = bench_now();
        if (sl_clip_forward(m, ids, B, T, last, NULL, NULL, &ctx)) bench_die("bench_infer", &ctx);
        double dt = bench_now() - s;
        if (it > 0 && dt < best) best = dt;
    }
    *flops = bench_clip_flops(&cfg, B, T);
    printf("stylora text encoder %s D=%lld L=%lld, 1x%d tokens: %.4f s, %.2f GFLOP, out[0] %.6g\n", model,
           (long long)cfg.D, (long long)cfg.L, T, best, *flops * 1e-9, last[0]);
    free(last);
    sl_clip_free(m);
    return best;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "", *model = NULL;
    int random = 0, iters = 3;
    int64_t res = 0;
    for (int i = 2; i < argc; i++) {
        int more = i + 1 < argc;
        if (!strcmp(argv[i], "--random")) random = 1;
        else if (!strcmp(argv[i], "--model") && more) model = argv[++i];
        else if (!strcmp(argv[i], "--res") && more) res = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && more) iters = atoi(argv[++i]);
        else model = NULL, i = argc;
    }
    const int vae = !strcmp(what, "vae"), te = !strcmp(what, "textenc");
    if (!model || iters < 1 || !(vae || te)) {
        fprintf(stderr, "usage: %s vae|textenc --model DIR [--random] [--res R] [--iters N]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    double flops, s = vae ? run_vae(model, random, res, iters, &flops) : run_textenc(model, random, iters, &flops);
    bench_result(vae ? "vae_decode" : "textenc", s, flops, "");
    return 0;
}
