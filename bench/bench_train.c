/* bench_train.c - one training step of the U-Net, LoRA or full fine-tuning,
 * as pipeline/train.c runs it, timed; the PyTorch twin is
 * tests/reference/bench_torch.py train.
 *
 * Usage: bench_train --model DIR [--random] [--res R] [--batch B] [--iters N] [--full]
 *                    [--rank 8] [--alpha 8] [--targets attn]
 *                    [--base fp32|fp16|bf16|nf4] [--nf4-layers attn,ff,proj] [--nf4-dq]
 *   DIR      a diffusers folder: unet/ (and vae/, text_encoder/ configs for the latent
 *            size and text width). --random: configs only, seeded random weights
 *            (SD-1.5 shape: --model $SL_SHARED_DIR/sd15 --random --res 256).
 *   --res    image size (default the VAE's sample_size); latents res/f, f from the VAE config.
 *   --base nf4  LoRA on an NF4 frozen base (QLoRA), as `stylora train --base nf4`: the
 *            U-Net linears of --nf4-layers (default SL_NF4_DEFAULT_LAYERS) held as NF4
 *            (pipeline/quant.h; --nf4-dq: double-quantized absmax); real weights are
 *            streamed into NF4 like the trainer does, --random weights are quantized in
 *            place and the peak RSS is reset afterwards (rss_mib = from the NF4 U-Net on;
 *            load_rss_mib = the peak before, with the fp32 copy). Not with --full.
 *   --base fp16 LoRA on a binary16 frozen base (`stylora train --base fp16`, pipeline/half.h):
 *            every U-Net linear and conv weight in binary16, loaded and peak-reset as nf4.
 *   --base bf16 the same in bfloat16 (`stylora train --base bf16`): the frozen products on
 *            the bf16 GEMM kernel, the adapter and AdamW in fp32; RESULT train_lora_bf16.
 *
 * One step = what sl_trainer_step does after its batch is drawn: U-Net forward on
 * x_t [B,C,h,w], t [B], text [B,77,D]; the MSE loss against a target and its
 * gradient; U-Net backward into the trainable tensors (LoRA A/B on to_q, to_k,
 * to_v, to_out.0 of every attention, rank 8, alpha 8, as PEFT's default targets in
 * diffusers' train_text_to_image_lora.py; or, with --full, every U-Net weight);
 * AdamW step (torch defaults, lr 1e-4); gradients zeroed. Noise, timesteps and text
 * come pre-drawn (both sides), so the step is the model and optimizer work only.
 *
 * Prints RESULT lines (bench/bench_util.h): train_lora, train_lora_nf4 or train_full
 * (seconds of one step, FLOPs), and the memory plan: base weights (the U-Net weight
 * arena: with NF4, codes + scales + the dequantization tile + the dense rest),
 * trainable parameters, gradients, optimizer state and activations in bytes.
 * FLOPs: forward (sl_unet_forward_flops: convs, linears, attention matmuls from
 * the layer shapes) + backward (bench_unet_backward_flops) + the adapter's own
 * work (3 x its forward: forward, dA/dB, input gradient). AdamW not counted.
 */
#include <math.h>

#include "bench/bench_util.h"
#include "core/rng.h"
#include "pipeline/optim.h"

typedef struct Args {
    const char *model, *targets, *nf4_layers;
    int random, full, iters, plan_only, nf4, nf4_dq;
    int half; /* 0, or the 16-bit base's SlHalfFmt */
    int64_t res, batch, rank;
    float alpha;
} Args;

static void usage(const char *p) {
    fprintf(stderr, "usage: %s --model DIR [--random] [--res R] [--batch B] [--iters N] [--full] [--plan-only] "
                    "[--rank R] [--alpha A] [--targets LIST] [--base fp32|fp16|bf16|nf4] [--nf4-layers LIST] [--nf4-dq]\n", p);
    exit(2);
}

static Args parse(int argc, char **argv) {
    Args a = {NULL, "attn", NULL, 0, 0, 3, 0, 0, 0, 0, 0, 1, 8, 8.0f};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, "--random")) a.random = 1;
        else if (!strcmp(s, "--full")) a.full = 1;
        else if (!strcmp(s, "--plan-only")) a.plan_only = 1;
        else if (!strcmp(s, "--nf4-dq")) a.nf4_dq = 1;
        else if (!v) usage(argv[0]);
        else if (!strcmp(s, "--model")) a.model = argv[++i];
        else if (!strcmp(s, "--targets")) a.targets = argv[++i];
        else if (!strcmp(s, "--nf4-layers")) a.nf4_layers = argv[++i];
        else if (!strcmp(s, "--base")) {
            a.nf4 = !strcmp(v, "nf4");
            a.half = !strcmp(v, "fp16") ? SL_HALF_FP16 : !strcmp(v, "bf16") ? SL_HALF_BF16 : 0;
            if (!a.nf4 && !a.half && strcmp(v, "fp32")) usage(argv[0]);
            i++;
        }
        else if (!strcmp(s, "--res")) a.res = atoll(argv[++i]);
        else if (!strcmp(s, "--batch")) a.batch = atoll(argv[++i]);
        else if (!strcmp(s, "--iters")) a.iters = atoi(argv[++i]);
        else if (!strcmp(s, "--rank")) a.rank = atoll(argv[++i]);
        else if (!strcmp(s, "--alpha")) a.alpha = (float)atof(argv[++i]);
        else usage(argv[0]);
    }
    if (!a.model || a.iters < 1 || a.batch < 1 || ((a.nf4 || a.half) && a.full)) usage(argv[0]);
    return a;
}

/* --plan-only --full: the memory of full fine-tuning from the shapes alone, without
 * allocating it (SD-1.5 full needs ~14 GB): every weight trainable, an fp32 gradient
 * each, AdamW's two fp32 moments each (as sl_adamw_init sizes them); the activation
 * arena is the one sl_unet_plan allocates at the run's size (0.6 GB at SD-1.5 / 256x256;
 * its size does not depend on which weights train: LoRA and full plan the same). */
static int plan_full(const Args *a, int64_t B, int64_t h, int64_t w, int64_t T, SlCtx *ctx) {
    char p[4096];
    SlUNetConfig ucfg;
    SlUNet u;
    snprintf(p, sizeof p, "%s/unet/config.json", a->model);
    if (sl_unet_config_load(&ucfg, p, ctx) || sl_unet_init_shapes(&u, &ucfg, ctx)) bench_die("bench_train", ctx);
    const size_t n = (size_t)sl_unet_n_weights(&u);
    if (sl_unet_plan(&u, B, h, w, T, ctx)) bench_die("bench_train", ctx);
    char extra[512];
    snprintf(extra, sizeof extra, " planned=1 base_weight_bytes=%zu trainable_params=%zu param_bytes=%zu grad_bytes=%zu "
             "optimizer_state_bytes=%zu activation_bytes=%zu", n * 4, n, n * 4, n * 4, n * 8, u.acts.size);
    printf("stylora full fine-tuning memory plan, U-Net %s: %zu weights, optimizer state %.2f GB (not run)\n",
           a->model, n, n * 8e-9);
    bench_result("train_full_plan", 0, 0, extra);
    sl_unet_free(&u);
    return 0;
}

int main(int argc, char **argv) {
    const Args a = parse(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char p[4096];
    SlVaeConfig vcfg;
    SlClipConfig ccfg;
    snprintf(p, sizeof p, "%s/vae/config.json", a.model);
    if (sl_vae_config_load(&vcfg, p, &ctx)) bench_die("bench_train", &ctx);
    snprintf(p, sizeof p, "%s/text_encoder/config.json", a.model);
    if (sl_clip_config_load(&ccfg, p, &ctx)) bench_die("bench_train", &ctx);
    const int64_t R = a.res ? a.res : vcfg.sample_size, f = sl_vae_downscale(&vcfg), h = R / f, w = R / f;
    const int64_t B = a.batch, T = 77, D = ccfg.D;
    if (a.plan_only) return plan_full(&a, B, h, w, T, &ctx);

    SlUNet u;
    SlUNetConfig ucfg;
    SlNf4Stats nst;
    memset(&nst, 0, sizeof nst);
    SlHalfStats hst;
    memset(&hst, 0, sizeof hst);
    double t0 = bench_now(), load_rss = 0;
    if (a.nf4) {
        if (bench_unet_open_nf4(&u, &ucfg, a.model, a.random, a.nf4_layers, a.nf4_dq, &nst, &ctx))
            bench_die("bench_train", &ctx);
        load_rss = bench_peak_rss_mib();
        if (a.random && bench_reset_peak_rss()) fprintf(stderr, "bench_train: cannot reset the peak RSS\n");
    } else if (a.half) {
        if (bench_unet_open_half(&u, &ucfg, a.model, a.random, (SlHalfFmt)a.half, &hst, &ctx))
            bench_die("bench_train", &ctx);
        load_rss = bench_peak_rss_mib();
        if (a.random && bench_reset_peak_rss()) fprintf(stderr, "bench_train: cannot reset the peak RSS\n");
    } else if (bench_unet_open(&u, &ucfg, a.model, a.random, &ctx)) {
        bench_die("bench_train", &ctx);
    }
    if (a.full && sl_unet_enable_grads(&u, &ctx)) bench_die("bench_train", &ctx);
    const SlKernels kern = bench_kernels("bench_train");
    sl_unet_set_kernels(&u, &kern);
    if (sl_unet_plan(&u, B, h, w, T, &ctx)) bench_die("bench_train", &ctx);
    SlSites sites;
    SlAdapter ad;
    SlAdapterSet set;
    memset(&ad, 0, sizeof ad);
    memset(&set, 0, sizeof set);
    sl_sites_init(&sites);
    SlParamRef *params;
    int n_params = 0;
    if (a.full) {
        params = calloc((size_t)u.n_params, sizeof *params);
        if (!params) return fprintf(stderr, "bench_train: out of memory\n"), 1;
        for (int i = 0; i < u.n_params; i++) {
            SlUNetParam *q = &u.params[i];
            params[n_params++] = (SlParamRef){*q->w, *q->g, sl_shape_numel(q->ndim, q->shape), 1, q->name};
        }
    } else {
        if (sl_sites_add_unet(&sites, &u, &ctx)) bench_die("bench_train", &ctx);
        SlAdapterOpts ao = sl_adapter_opts_default();
        ao.targets = a.targets;
        ao.rank = a.rank;
        ao.alpha = a.alpha;
        ao.seed = 7;
        if (sl_adapter_create(&ad, &sites, &ao, &ctx) || sl_adapter_enable_grads(&ad, &ctx)) bench_die("bench_train", &ctx);
        SlAdapter *ads[1] = {&ad};
        float w1[1] = {1.0f};
        if (sl_adapter_set_apply(&set, &sites, ads, w1, 1, 0.0f, 9, &ctx)) bench_die("bench_train", &ctx);
        set.training = 1;
        params = calloc((size_t)ad.n * 2, sizeof *params);
        if (!params) return fprintf(stderr, "bench_train: out of memory\n"), 1;
        for (int i = 0; i < ad.n; i++) {
            SlLoraMod *m = &ad.mods[i];
            params[n_params++] = (SlParamRef){m->A, m->dA, m->r * m->I * m->k * m->k, 1, m->name};
            params[n_params++] = (SlParamRef){m->B, m->dB, m->O * m->r, 1, m->name};
        }
    }
    SlAdamW opt;
    SlAdamWConfig acfg = sl_adamw_defaults();
    if (sl_adamw_init(&opt, params, n_params, &acfg, &ctx)) bench_die("bench_train", &ctx);
    const double t_init = bench_now() - t0;

    const size_t nl = (size_t)(B * ucfg.in_channels * h * w), no = (size_t)(B * ucfg.out_channels * h * w);
    float *xt = malloc(nl * sizeof(float)), *target = malloc(no * sizeof(float)), *pred = malloc(no * sizeof(float));
    float *dout = malloc(no * sizeof(float)), *ehs = malloc((size_t)(B * T * D) * sizeof(float));
    float *ts = malloc((size_t)B * sizeof(float));
    if (!xt || !target || !pred || !dout || !ehs || !ts) return fprintf(stderr, "bench_train: out of memory\n"), 1;
    sl_rng_normal(xt, (int64_t)nl, 3, 0, 0);
    sl_rng_normal(target, (int64_t)no, 3, 1, 0);
    sl_rng_normal(ehs, B * T * D, 3, 2, 0);
    for (int64_t b = 0; b < B; b++) ts[b] = 500.0f + (float)b;

    double best = 1e30, loss = 0;
    for (int it = 0; it <= a.iters; it++) { /* it 0: warm-up */
        double s = bench_now();
        if (a.full) sl_unet_zero_grads(&u);
        else sl_adapter_zero_grads(&ad);
        sl_unet_forward(&u, pred, xt, ts, ehs);
        double acc = 0;
        const double norm = 1.0 / (double)no;
        for (size_t i = 0; i < no; i++) {
            float e = pred[i] - target[i];
            acc += (double)e * e;
            dout[i] = (float)(2.0 * e * norm);
        }
        loss = acc * norm;
        sl_unet_backward(&u, NULL, dout);
        sl_adamw_step(&opt, 1e-4f);
        set.step++;
        double dt = bench_now() - s;
        if (it > 0 && dt < best) best = dt;
    }
    const double ff = sl_unet_forward_flops(&u), fb = bench_unet_backward_flops(&u, a.full);
    const double fl = a.full ? 0 : 3.0 * bench_lora_forward_flops(&ad, &sites);
    size_t n_tr = 0;
    for (int i = 0; i < n_params; i++) n_tr += (size_t)params[i].n;
    char extra[1024], nx[512] = "";
    if (a.nf4)
        snprintf(nx, sizeof nx, " nf4_layers=%d nf4_weights=%lld nf4_fp32_bytes=%zu nf4_bytes=%zu nf4_tile_bytes=%zu "
                 "nf4_double_quant=%d load_rss_mib=%.1f", nst.n_layers, (long long)nst.n_quant, nst.fp32_bytes,
                 nst.nf4_bytes, nst.work_bytes, nst.double_quant, load_rss);
    if (a.half)
        snprintf(nx, sizeof nx, " half_weights=%d half_values=%lld half_fp32_bytes=%zu half_bytes=%zu load_rss_mib=%.1f",
                 hst.n_layers, (long long)hst.n_half, hst.fp32_bytes, hst.half_bytes, load_rss);
    snprintf(extra, sizeof extra,
             " loss=%.6g init_s=%.2f base_weight_bytes=%zu trainable_params=%zu param_bytes=%zu grad_bytes=%zu "
             "optimizer_state_bytes=%zu activation_bytes=%zu adapter_cache_bytes=%zu%s",
             loss, t_init, u.weights.size, n_tr, n_tr * sizeof(float), a.full ? u.grads.size : ad.grads.size,
             sl_adamw_state_bytes(&opt), u.acts.size, a.full ? (size_t)0 : set.cache.size, nx);
    printf("stylora %s step, U-Net %s, B=%lld latents %lldx%lld, T=%lld: %.3f s (forward %.1f GFLOP, backward %.1f, "
           "adapter %.2f)\n", a.full ? "full fine-tuning" : a.nf4 ? "LoRA on an NF4 base" : a.half == SL_HALF_BF16 ? "LoRA on a bf16 base" : a.half ? "LoRA on an fp16 base" : "LoRA", a.model,
           (long long)B, (long long)h, (long long)w, (long long)T, best, ff * 1e-9, fb * 1e-9, fl * 1e-9);
    bench_result(a.full ? "train_full" : a.nf4 ? "train_lora_nf4" : a.half == SL_HALF_BF16 ? "train_lora_bf16" : a.half ? "train_lora_fp16" : "train_lora", best, ff + fb + fl, extra);
    free(xt); free(target); free(pred); free(dout); free(ehs); free(ts);
    sl_adamw_free(&opt);
    free(params);
    if (!a.full) sl_adapter_set_remove(&set);
    sl_adapter_free(&ad);
    sl_sites_free(&sites);
    sl_unet_free(&u);
    return 0;
}
