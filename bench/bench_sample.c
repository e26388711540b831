/* bench_sample.c - one guided sampling step: U-Net on a batch of 2 (uncond, cond),
 * classifier-free guidance, Euler scheduler update; base model, adapter merged into
 * the weights, or adapter applied unmerged through the hooks. The PyTorch twin is
 * tests/reference/bench_torch.py sample.
 *
 * Usage: bench_sample --model DIR [--random] [--res R] [--iters N] [--mode base|merged|unmerged]
 *                     [--rank 8] [--alpha 8] [--base fp32|fp16|bf16]
 *   (DIR, --random, --res as bench_train.) The adapter: rank 8 on to_q, to_k, to_v,
 *   to_out.0 of every attention, A and B both seeded random (a trained adapter has
 *   B != 0; the merge then really changes the weights). Merging is done once before
 *   timing (it is per image, not per step) and its time printed as merge_s.
 * Step = scale the model input (Euler, step 10 of 30), U-Net [2,C,h,w] at t,
 * sl_cfg_combine (guidance 7.5), sl_sampler_step. Prints RESULT sample_<mode>.
 * --base fp16: the U-Net's linear and conv weights held in binary16 (pipeline/half.h; base
 * and unmerged only), RESULT sample_<mode>_fp16. --base bf16: in bfloat16, their products on
 * the bf16 GEMM kernel (the same modes), RESULT sample_<mode>_bf16.
 * FLOPs: U-Net forward at B=2 (+ the adapter's forward when unmerged).
 */
#include "bench/bench_util.h"
#include "core/rng.h"
#include "pipeline/sampler.h"
#include "pipeline/schedule.h"

int main(int argc, char **argv) {
    const char *model = NULL, *mode = "base";
    int random = 0, iters = 3, half = 0; /* half: 0, or the 16-bit base's SlHalfFmt */
    int64_t res = 0, rank = 8;
    float alpha = 8.0f;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(s, "--random")) random = 1;
        else if (!strcmp(s, "--model") && more) model = argv[++i];
        else if (!strcmp(s, "--mode") && more) mode = argv[++i];
        else if (!strcmp(s, "--base") && more) {
            const char *v = argv[++i];
            half = !strcmp(v, "fp16") ? SL_HALF_FP16 : !strcmp(v, "bf16") ? SL_HALF_BF16 : 0;
            if (!half && strcmp(v, "fp32")) model = NULL, i = argc;
        }
        else if (!strcmp(s, "--res") && more) res = atoll(argv[++i]);
        else if (!strcmp(s, "--iters") && more) iters = atoi(argv[++i]);
        else if (!strcmp(s, "--rank") && more) rank = atoll(argv[++i]);
        else if (!strcmp(s, "--alpha") && more) alpha = (float)atof(argv[++i]);
        else model = NULL, i = argc;
    }
    const int m_base = !strcmp(mode, "base"), m_merged = !strcmp(mode, "merged"), m_unmerged = !strcmp(mode, "unmerged");
    if (!model || iters < 1 || !(m_base || m_merged || m_unmerged) || (half && m_merged)) {
        fprintf(stderr, "usage: %s --model DIR [--random] [--res R] [--iters N] [--mode base|merged|unmerged] "
                        "[--rank R] [--alpha A] [--base fp32|fp16|bf16 (not merged)]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char p[4096];
    SlVaeConfig vcfg;
    SlClipConfig ccfg;
    SlSchedConfig scfg;
    SlSchedule sched;
    snprintf(p, sizeof p, "%s/vae/config.json", model);
    if (sl_vae_config_load(&vcfg, p, &ctx)) bench_die("bench_sample", &ctx);
    snprintf(p, sizeof p, "%s/text_encoder/config.json", model);
    if (sl_clip_config_load(&ccfg, p, &ctx)) bench_die("bench_sample", &ctx);
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", model);
    if (sl_sched_config_load(&scfg, p, &ctx) || sl_schedule_init(&sched, &scfg, &ctx)) bench_die("bench_sample", &ctx);
    SlSampler smp;
    SlSamplerOpts so = {SL_SAMPLER_EULER, 0, 0.0f};
    const int n_steps = 30, step = 10;
    if (sl_sampler_init(&smp, &sched, &so, n_steps, &ctx)) bench_die("bench_sample", &ctx);
    const int64_t R = res ? res : vcfg.sample_size, f = sl_vae_downscale(&vcfg), h = R / f, w = R / f;
    const int64_t B = 1, T = 77, D = ccfg.D;

    SlUNet u;
    SlUNetConfig ucfg;
    SlHalfStats hst;
    if (half ? bench_unet_open_half(&u, &ucfg, model, random, (SlHalfFmt)half, &hst, &ctx)
             : bench_unet_open(&u, &ucfg, model, random, &ctx))
        bench_die("bench_sample", &ctx);
    if (half && random && bench_reset_peak_rss()) fprintf(stderr, "bench_sample: cannot reset the peak RSS\n");
    const SlKernels kern = bench_kernels("bench_sample");
    sl_unet_set_kernels(&u, &kern);
    if (sl_unet_plan(&u, 2 * B, h, w, T, &ctx)) bench_die("bench_sample", &ctx);
    SlSites sites;
    SlAdapter ad;
    SlAdapterSet set;
    SlMergeState ms = {0};
    memset(&ad, 0, sizeof ad);
    memset(&set, 0, sizeof set);
    sl_sites_init(&sites);
    double merge_s = 0, flops_lora = 0;
    if (!m_base) {
        if (sl_sites_add_unet(&sites, &u, &ctx)) bench_die("bench_sample", &ctx);
        SlAdapterOpts ao = sl_adapter_opts_default();
        ao.rank = rank;
        ao.alpha = alpha;
        ao.seed = 7;
        if (sl_adapter_create(&ad, &sites, &ao, &ctx)) bench_die("bench_sample", &ctx);
        for (int i = 0; i < ad.n; i++) { /* a "trained" B: small random values, N(0, 0.01^2) */
            SlLoraMod *lm = &ad.mods[i];
            sl_rng_normal(lm->B, lm->O * lm->r, 11, (uint64_t)i, 0);
            for (int64_t k = 0; k < lm->O * lm->r; k++) lm->B[k] *= 0.01f;
        }
        SlAdapter *ads[1] = {&ad};
        float w1[1] = {1.0f};
        double t0 = bench_now();
        if (m_merged) {
            if (sl_adapter_merge(&ms, &sites, ads, w1, 1, &ctx)) bench_die("bench_sample", &ctx);
        } else {
            if (sl_adapter_set_apply(&set, &sites, ads, w1, 1, 0.0f, 9, &ctx)) bench_die("bench_sample", &ctx);
            flops_lora = bench_lora_forward_flops(&ad, &sites);
        }
        merge_s = bench_now() - t0;
    }
    const size_t N = (size_t)(B * ucfg.in_channels * h * w);
    float *x = malloc(N * sizeof(float)), *xin = malloc(2 * N * sizeof(float)), *eps2 = malloc(2 * N * sizeof(float));
    float *eps = malloc(N * sizeof(float)), *x0 = malloc(N * sizeof(float));
    float *ehs = malloc((size_t)(2 * B * T * D) * sizeof(float)), ts[2];
    if (!x || !xin || !eps2 || !eps || !x0 || !ehs) return fprintf(stderr, "bench_sample: out of memory\n"), 1;
    sl_rng_normal(x0, (int64_t)N, 5, 0, 0);
    sl_rng_normal(ehs, 2 * B * T * D, 5, 1, 0);
    ts[0] = ts[1] = (float)smp.timesteps[step];
    double best = 1e30;
    for (int it = 0; it <= iters; it++) { /* it 0: warm-up */
        memcpy(x, x0, N * sizeof(float)); /* the same step each time (not timed) */
        double s = bench_now();
        sl_sampler_scale_model_input(&smp, xin, x, N, step);
        memcpy(xin + N, xin, N * sizeof(float));
        sl_unet_forward(&u, eps2, xin, ts, ehs);
        sl_cfg_combine(eps, eps2, eps2 + N, 7.5f, N);
        if (sl_sampler_step(&smp, NULL, x, eps, step, x, NULL, N, &ctx)) bench_die("bench_sample", &ctx);
        double dt = bench_now() - s;
        if (it > 0 && dt < best) best = dt;
    }
    const double fl = sl_unet_forward_flops(&u) + flops_lora;
    char name[64], extra[256];
    snprintf(name, sizeof name, "sample_%s%s", mode, half == SL_HALF_BF16 ? "_bf16" : half ? "_fp16" : "");
    snprintf(extra, sizeof extra, " merge_s=%.4f x0=%.6g", merge_s, x[0]);
    printf("stylora guided sampling step (%s), U-Net %s, 2x%lldx%lldx%lld: %.3f s, %.1f GFLOP\n", mode, model,
           (long long)ucfg.in_channels, (long long)h, (long long)w, best, fl * 1e-9);
    bench_result(name, best, fl, extra);
    free(x); free(xin); free(eps2); free(eps); free(x0); free(ehs);
    if (m_merged) sl_adapter_unmerge(&ms);
    if (m_unmerged) sl_adapter_set_remove(&set);
    sl_adapter_free(&ad);
    sl_sites_free(&sites);
    sl_sampler_free(&smp);
    sl_schedule_free(&sched);
    sl_sched_config_free(&scfg);
    sl_unet_free(&u);
    return 0;
}
