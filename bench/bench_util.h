/* bench_util.h - shared pieces of the bench/ programs run by bench/run.sh:
 * clocks, peak RSS, the RESULT line run.sh reads, model loading (a diffusers
 * folder's real weights, or only its configs with seeded random weights) and
 * FLOP counts from layer shapes.
 *
 * RESULT line (one per figure a program measures, on stdout):
 *   RESULT <name> seconds=<best> flops=<per call> rss_mib=<peak RSS of this process> [key=value ...]
 * seconds is the best of the timed calls after one warm-up call (the warm-up
 * pays first-touch of the arenas); flops is counted from the layer shapes
 * (multiply-add = 2), the same figure run.sh divides by either side's time.
 *
 * Header-only (static functions): bench/bench_*.c each build into their own
 * executable and include this.
 */
#ifndef SL_BENCH_UTIL_H
#define SL_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core/status.h"
#include "core/weights.h"
#include "pipeline/half.h"
#include "pipeline/quant.h"
#include "styles/adapter.h"
#include "textenc/clip.h"
#include "unet/unet.h"
#include "vae/vae.h"

static inline double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Peak resident set of this process so far, MiB (ru_maxrss is KiB on Linux). */
static inline double bench_peak_rss_mib(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_maxrss / 1024.0;
}

/* Resets the peak resident set to the current one (Linux: "5" to /proc/self/clear_refs
 * resets the high-water mark that ru_maxrss reads). Returns 0, or -1 when the kernel
 * does not allow it (the peak then keeps counting from the start). */
static inline int bench_reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    const int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static inline void bench_die(const char *prog, const SlCtx *ctx) {
    fprintf(stderr, "%s: %s\n", prog, ctx->msg);
    exit(1);
}

/* The kernels asked for by SL_GEMM / SL_CONV / SL_ATTENTION (as tools/kernels_env.c; the
 * library never reads the environment): passed to each model the program plans. */
static inline SlKernels bench_kernels(const char *prog) {
    static const char *const var[3] = {"SL_GEMM", "SL_CONV", "SL_ATTENTION"}, *const what[3] = {"gemm", "conv", "attention"};
    SlKernels k = {0};
    SlCtx ctx;
    sl_ctx_init(&ctx);
    for (int i = 0; i < 3; i++) {
        const char *s = getenv(var[i]);
        if (s && *s && sl_kernels_parse(&k, what[i], s, var[i], &ctx) != SL_OK) bench_die(prog, &ctx);
    }
    return k;
}

/* Prints the RESULT line (extra: "" or " key=value ..."). */
static inline void bench_result(const char *name, double seconds, double flops, const char *extra) {
    printf("RESULT %s seconds=%.6f flops=%.6e rss_mib=%.1f%s\n", name, seconds, flops, bench_peak_rss_mib(),
           extra ? extra : "");
    fflush(stdout);
}

/* ---- model parts: real weights from <dir>/<part>/, or configs only + random ---- */

static inline SlStatus bench_unet_open(SlUNet *u, SlUNetConfig *cfg, const char *dir, int random, SlCtx *ctx) {
    char p[4096];
    snprintf(p, sizeof p, "%s/unet/config.json", dir);
    SL_TRY(sl_unet_config_load(cfg, p, ctx));
    SL_TRY(sl_unet_init(u, cfg, ctx));
    if (random) {
        sl_unet_init_random(u, 1);
        return SL_OK;
    }
    SlWeights w;
    snprintf(p, sizeof p, "%s/unet", dir);
    SL_TRY(sl_weights_open_dir(&w, p, ctx));
    SlStatus st = sl_unet_load(u, &w, ctx);
    sl_weights_close(&w);
    return st;
}

/* The U-Net of <dir> made with sl_unet_init_shapes (no weight arena) and its weight files
 * opened in *w, for the loaders that stream into another format (NF4, binary16). */
static inline SlStatus bench_unet_shapes_open(SlUNet *u, SlUNetConfig *cfg, const char *dir, SlWeights *w,
                                              SlCtx *ctx) {
    char p[4096];
    snprintf(p, sizeof p, "%s/unet/config.json", dir);
    SL_TRY(sl_unet_config_load(cfg, p, ctx));
    SL_TRY(sl_unet_init_shapes(u, cfg, ctx));
    snprintf(p, sizeof p, "%s/unet", dir);
    return sl_weights_open_dir(w, p, ctx);
}

/* An NF4 frozen U-Net as `stylora train --base nf4` has it (pipeline/quant.h; which
 * NULL = SL_NF4_DEFAULT_LAYERS). Real weights: streamed from <dir>/unet/ into NF4
 * (sl_unet_load_nf4, as sl_model_load_nf4 does: the fp32 copy never exists). random:
 * seeded fp32 weights quantized in place (sl_unet_quantize_nf4; the fp32 arena exists
 * until the NF4 one is built, so the caller resets the peak RSS after this). */
static inline SlStatus bench_unet_open_nf4(SlUNet *u, SlUNetConfig *cfg, const char *dir, int random,
                                           const char *which, int dq, SlNf4Stats *stats, SlCtx *ctx) {
    if (random) {
        SL_TRY(bench_unet_open(u, cfg, dir, 1, ctx));
        return sl_unet_quantize_nf4(u, which, dq, stats, ctx);
    }
    SlWeights w;
    SL_TRY(bench_unet_shapes_open(u, cfg, dir, &w, ctx));
    SlStatus st = sl_unet_load_nf4(u, &w, which, dq, stats, ctx);
    sl_weights_close(&w);
    return st;
}

/* A 16-bit frozen U-Net as `stylora train --base fp16` (fmt SL_HALF_FP16) or `--base bf16`
 * (SL_HALF_BF16) has it (pipeline/half.h). Real weights: streamed from <dir>/unet/ into 16
 * bits (sl_unet_load_half / _bf16: the fp32 copy never exists). random: seeded fp32 weights
 * converted in place (sl_unet_to_half / _bf16; the caller resets the peak RSS after this, as
 * for NF4). */
static inline SlStatus bench_unet_open_half(SlUNet *u, SlUNetConfig *cfg, const char *dir, int random, SlHalfFmt fmt,
                                            SlHalfStats *stats, SlCtx *ctx) {
    const int bf = fmt == SL_HALF_BF16;
    if (random) {
        SL_TRY(bench_unet_open(u, cfg, dir, 1, ctx));
        return bf ? sl_unet_to_bf16(u, stats, ctx) : sl_unet_to_half(u, stats, ctx);
    }
    SlWeights w;
    SL_TRY(bench_unet_shapes_open(u, cfg, dir, &w, ctx));
    SlStatus st = bf ? sl_unet_load_bf16(u, &w, stats, ctx) : sl_unet_load_half(u, &w, stats, ctx);
    sl_weights_close(&w);
    return st;
}

static inline SlStatus bench_vae_open(SlVae **vae, SlVaeConfig *cfg, const char *dir, int random, SlCtx *ctx) {
    char p[4096];
    snprintf(p, sizeof p, "%s/vae/config.json", dir);
    SL_TRY(sl_vae_config_load(cfg, p, ctx));
    if (random) {
        SL_TRY(sl_vae_create(vae, cfg, ctx));
        sl_vae_init_random(*vae, 42);
        return SL_OK;
    }
    SlWeights w;
    snprintf(p, sizeof p, "%s/vae", dir);
    SL_TRY(sl_weights_open_dir(&w, p, ctx));
    SlStatus st = sl_vae_load(vae, cfg, &w, ctx);
    sl_weights_close(&w);
    return st;
}

static inline SlStatus bench_clip_open(SlClip **m, SlClipConfig *cfg, const char *dir, int random, SlCtx *ctx) {
    char p[4096];
    snprintf(p, sizeof p, "%s/text_encoder/config.json", dir);
    SL_TRY(sl_clip_config_load(cfg, p, ctx));
    if (random) return sl_clip_init_random(m, cfg, 42, ctx);
    SlWeights w;
    snprintf(p, sizeof p, "%s/text_encoder", dir);
    SL_TRY(sl_weights_open_dir(&w, p, ctx));
    SlStatus st = sl_clip_load(m, cfg, &w, SL_CLIP_LAYOUT_AUTO, ctx);
    sl_weights_close(&w);
    return st;
}

/* ---- FLOPs from layer shapes ---- */

/* Attention matmul FLOPs of one U-Net forward at the planned size: per
 * BasicTransformerBlock Q K^T and P V of self attention (2 * 2*B*S*S*C) and of
 * cross attention (2 * 2*B*S*T*C). sl_unet_forward_flops includes these. */
static inline double bench_unet_attn_flops(const SlUNet *u) {
    double f = 0;
    for (int i = 0; i < u->n_tr; i++) {
        const SlUNetTransformer *t = &u->tr[i];
        const double S = (double)(t->H * t->W), C = (double)t->C;
        f += (double)t->n_tblocks * (4.0 * u->B * S * S * C + 4.0 * u->B * S * u->T * C);
    }
    return f;
}

/* Extra FLOPs of a LoRA adapter's forward over its sites: 2*N*r*(I+O) per
 * linear module (A x, then B (A x)); N = the site's planned rows. */
static inline double bench_lora_forward_flops(const SlAdapter *ad, const SlSites *sites) {
    double f = 0;
    for (int i = 0; i < ad->n; i++) {
        const SlLoraMod *m = &ad->mods[i];
        int s = sl_sites_find(sites, m->name);
        if (s < 0) continue;
        f += 2.0 * (double)sites->v[s].rows * (double)m->r * (double)(m->I * m->k * m->k + m->O);
    }
    return f;
}

/* Backward FLOPs of the U-Net (not counting adapters) given its forward F and
 * attention part A: frozen weights (LoRA) = input gradients only, 1x for every
 * conv/linear and 2x for the attention matmuls (dQ, dK, dP, dV):
 * (F - A) + 2A; full fine-tuning adds the weight gradients: 2(F - A) + 2A. */
static inline double bench_unet_backward_flops(const SlUNet *u, int full) {
    const double F = sl_unet_forward_flops(u), A = bench_unet_attn_flops(u);
    return full ? 2.0 * (F - A) + 2.0 * A : (F - A) + 2.0 * A;
}

/* CLIP text encoder forward FLOPs for B x T tokens: per layer q, k, v, out
 * (4 * 2*N*D*D), fc1 + fc2 (2 * 2*N*D*F), attention Q K^T and P V (2 * 2*B*T*T*D). */
static inline double bench_clip_flops(const SlClipConfig *c, int64_t B, int64_t T) {
    const double N = (double)(B * T), D = (double)c->D, F = (double)c->F;
    return (double)c->L * (8.0 * N * D * D + 4.0 * N * D * F + 4.0 * (double)B * T * T * D);
}

#endif
