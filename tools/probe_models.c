/* probe_models.c - the model components of `stylora probe`.
 *
 *   textenc     in input_ids [B,T] (I64/I32)   out last_hidden_state [B,T,D], hidden_state.K [B,T,D]
 *   vae-encode  in image [B,3,H,W] in [-1,1]   out mean, logvar [B,lc,H/f,W/f]
 *   vae-decode  in latent [B,lc,h,w] (raw z)   out image [B,3,h*f,w*f]
 *   unet        in sample [B,C,h,w], timestep [B], encoder_hidden_states [B,T,D]   out out [B,C,h,w]
 *   unet-grad   the same + target [B,C,h,w], with --lora FILE   out loss, <adapter key>.grad
 *   (unet, unet-grad and denoise take --lora FILE[:WEIGHT] and --merge)
 *   denoise     in latents [B,C,h,w], cond [B,T,D], uncond [B,T,D] (optional)
 *               --set sampler=ddim|euler|euler_a|dpmpp_2m steps=N cfg=S seed=N karras=0|1 eta=E
 *               out latents (after the last step, before the VAE)
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pipeline/denoise.h"
#include "pipeline/model.h"
#include "pipeline/half.h"
#include "pipeline/quant.h" /* [nf4] */
#include "probe.h"
#include "probe_adapters.h"

static SlStatus load(SlModel *m, const ProbeArgs *a, int text, int vae, int unet, SlCtx *ctx) {
    SlModelOpts o = {.config_dir = a->config ? a->config : probe_setting(a, "config"), .skip_text = !text, .skip_vae = !vae, .skip_unet = !unet,
                     .unet_dense = a->base && !strcmp(a->base, "fp32"), /* [nf4] a pre-quantized model: dequantized */
                     .unet_half = a->base && !strcmp(a->base, "fp16"), /* pipeline/half.h */
                     .unet_bf16 = a->base && !strcmp(a->base, "bf16")};
    /* [nf4] --base nf4: the U-Net linears are streamed into NF4 (pipeline/quant.h); a
     * pre-quantized model is NF4 without it */
    if (a->base && strcmp(a->base, "fp32") && strcmp(a->base, "nf4") && strcmp(a->base, "fp16") && strcmp(a->base, "bf16"))
        return sl_fail(ctx, SL_ERR_ARG, "--base is fp32, fp16, bf16 or nf4, not '%s'", a->base);
    SL_TRY(cli_kernels_from_env(&o.kernels, ctx));
    const char *dq = probe_setting(a, "nf4_dq");
    if (a->base && !strcmp(a->base, "nf4"))
        SL_TRY(sl_model_load_nf4(m, a->model, &o, probe_setting(a, "nf4_layers"), dq && strcmp(dq, "0"), ctx));
    else
        SL_TRY(sl_model_load(m, a->model, &o, ctx));
    if (unet && a->merge && sl_unet_count_nf4(&m->unet)) { /* merging needs dense weights: dequantize first */
        sl_log(ctx, SL_LOG_WARN, "--merge on an NF4 base: the NF4 layers are dequantized to fp32 first");
        SlStatus st = sl_unet_dequantize_nf4(&m->unet, ctx);
        if (st) sl_model_free(m);
        return st;
    }
    if (unet && a->merge && sl_unet_count_half(&m->unet)) {
        sl_log(ctx, SL_LOG_WARN, "--merge on an %s base: the %s weights are widened to fp32 first",
               sl_unet_count_bf16(&m->unet) ? "bf16" : "fp16", sl_unet_count_bf16(&m->unet) ? "bfloat16" : "binary16");
        SlStatus st = sl_unet_half_to_dense(&m->unet, NULL, 0, ctx);
        if (st) sl_model_free(m);
        return st;
    }
    return SL_OK;
}

static SlStatus add_out(const ProbeArgs *a, const char *name, int ndim, const int64_t *shape, float *data, SlCtx *ctx) {
    probe_keep(a, data);
    return sl_st_writer_add(a->out, name, SL_F32, ndim, shape, data, ctx);
}

static SlStatus run_textenc(const ProbeArgs *a, SlCtx *ctx) {
    const SlStEntry *e = probe_input(a, "input_ids", 1, ctx);
    if (!e) return ctx->status;
    if (e->ndim != 2) return sl_fail(ctx, SL_ERR_SHAPE, "%s: input_ids must be [B,T]", a->in->path);
    int B = (int)e->shape[0], T = (int)e->shape[1];
    int64_t *ids64 = malloc((size_t)B * T * sizeof *ids64);
    int32_t *ids = malloc((size_t)B * T * sizeof *ids);
    SlModel m;
    SlStatus st = (!ids64 || !ids) ? sl_fail(ctx, SL_ERR_NOMEM, "out of memory") : sl_st_read_i64(a->in, e, ids64, ctx);
    if (!st) st = load(&m, a, 1, 0, 0, ctx);
    if (st) { free(ids64); free(ids); return st; }
    for (int64_t i = 0; i < (int64_t)B * T; i++) ids[i] = (int32_t)ids64[i];
    const SlClipConfig *c = &m.clip_cfg;
    size_t one = (size_t)B * T * c->D;
    float *last = sl_alloc(one * sizeof(float)), *hs = sl_alloc((size_t)(c->L + 1) * one * sizeof(float));
    if (!last || !hs) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    if (!st) st = sl_clip_forward(m.clip, ids, B, T, last, hs, NULL, ctx);
    int64_t shape[3] = {B, T, c->D};
    if (!st) st = add_out(a, "last_hidden_state", 3, shape, last, ctx);
    else sl_free(last);
    if (!st) {
        probe_keep(a, hs);
        for (int k = 0; !st && k <= c->L; k++) {
            char name[64];
            snprintf(name, sizeof name, "hidden_state.%d", k);
            st = sl_st_writer_add(a->out, name, SL_F32, 3, shape, hs + (size_t)k * one, ctx);
        }
    } else {
        sl_free(hs);
    }
    free(ids64);
    free(ids);
    sl_model_free(&m);
    return st;
}

static SlStatus run_vae_encode(const ProbeArgs *a, SlCtx *ctx) {
    int64_t s[4];
    float *img = probe_keep(a, probe_input_f32(a, "image", 4, s, ctx));
    if (!img) return ctx->status;
    SlModel m;
    SL_TRY(load(&m, a, 0, 1, 0, ctx));
    int64_t h, w;
    sl_vae_latent_size(&m.vae_cfg, s[2], s[3], &h, &w);
    int64_t os[4] = {s[0], m.vae_cfg.latent_channels, h, w};
    size_t n = (size_t)sl_shape_numel(4, os);
    float *mean = sl_alloc(n * sizeof(float)), *logvar = sl_alloc(n * sizeof(float));
    SlStatus st = (!mean || !logvar) ? sl_fail(ctx, SL_ERR_NOMEM, "out of memory") : SL_OK;
    if (!st && s[1] != m.vae_cfg.in_channels)
        st = sl_fail(ctx, SL_ERR_SHAPE, "%s: image has %lld channels, the VAE takes %d", a->in->path, (long long)s[1],
                     m.vae_cfg.in_channels);
    if (!st) st = sl_vae_encode(m.vae, img, s[0], s[2], s[3], mean, logvar, ctx);
    if (!st) st = add_out(a, "mean", 4, os, mean, ctx);
    else sl_free(mean);
    if (!st) st = add_out(a, "logvar", 4, os, logvar, ctx);
    else sl_free(logvar);
    sl_model_free(&m);
    return st;
}

static SlStatus run_vae_decode(const ProbeArgs *a, SlCtx *ctx) {
    int64_t s[4];
    float *lat = probe_keep(a, probe_input_f32(a, "latent", 4, s, ctx));
    if (!lat) return ctx->status;
    const char *tile = probe_setting(a, "tile"); /* checked before the model loads */
    const int tile_n = tile ? (int)cli_int("probe", "--set tile", tile, 8, 4096) : 0;
    SlModel m;
    SL_TRY(load(&m, a, 0, 1, 0, ctx));
    int f = sl_vae_downscale(&m.vae_cfg);
    int64_t os[4] = {s[0], m.vae_cfg.out_channels, s[2] * f, s[3] * f};
    float *img = sl_alloc((size_t)sl_shape_numel(4, os) * sizeof(float));
    SlStatus st = !img ? sl_fail(ctx, SL_ERR_NOMEM, "out of memory") : SL_OK;
    if (!st && s[1] != m.vae_cfg.latent_channels)
        st = sl_fail(ctx, SL_ERR_SHAPE, "%s: latent has %lld channels, the VAE takes %d", a->in->path, (long long)s[1],
                     m.vae_cfg.latent_channels);
    if (!st && tile) st = sl_vae_decode_tiled(m.vae, lat, s[0], s[2], s[3], tile_n, tile_n / 4, img, ctx);
    else if (!st) st = sl_vae_decode(m.vae, lat, s[0], s[2], s[3], img, ctx);
    if (!st) st = add_out(a, "image", 4, os, img, ctx);
    else sl_free(img);
    sl_model_free(&m);
    return st;
}

/* Reads timestep [B] (any numeric dtype) as floats. */
static float *read_timesteps(const ProbeArgs *a, int64_t B, SlCtx *ctx) {
    int64_t ts[1];
    float *t = probe_keep(a, probe_input_f32(a, "timestep", 1, ts, ctx));
    if (t && ts[0] != B) {
        sl_fail(ctx, SL_ERR_SHAPE, "%s: timestep has %lld entries for a batch of %lld", a->in->path, (long long)ts[0],
                (long long)B);
        return NULL;
    }
    return t;
}

static SlStatus run_unet(const ProbeArgs *a, SlCtx *ctx) {
    int64_t s[4], es[3];
    float *x = probe_keep(a, probe_input_f32(a, "sample", 4, s, ctx));
    float *ehs = x ? probe_keep(a, probe_input_f32(a, "encoder_hidden_states", 3, es, ctx)) : NULL;
    float *t = ehs ? read_timesteps(a, s[0], ctx) : NULL;
    if (!t) return ctx->status;
    SlModel m;
    SL_TRY(load(&m, a, 0, 0, 1, ctx));
    SlStatus st = SL_OK;
    if (s[1] != m.unet_cfg.in_channels || es[0] != s[0] || es[2] != m.unet_cfg.cross_dim)
        st = sl_fail(ctx, SL_ERR_SHAPE, "%s: sample/encoder_hidden_states shapes do not fit the U-Net (in %lld channels, cross dim %lld)",
                     a->in->path, (long long)m.unet_cfg.in_channels, (long long)m.unet_cfg.cross_dim);
    if (!st) st = sl_unet_plan(&m.unet, s[0], s[2], s[3], es[1], ctx);
    ProbeAdapters pa;
    memset(&pa, 0, sizeof pa);
    if (!st) st = probe_adapters_attach(&pa, a, &m.unet, 0, ctx);
    int64_t os[4] = {s[0], m.unet_cfg.out_channels, s[2], s[3]};
    float *out = st ? NULL : sl_alloc((size_t)sl_shape_numel(4, os) * sizeof(float));
    if (!st && !out) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    if (!st) {
        sl_unet_forward(&m.unet, out, x, t, ehs);
        st = add_out(a, "out", 4, os, out, ctx);
    }
    probe_adapters_detach(&pa);
    sl_model_free(&m);
    return st;
}

/* loss = mean((unet(sample, t, ehs) - target)^2); gradients of every adapter tensor. */
static SlStatus run_unet_grad(const ProbeArgs *a, SlCtx *ctx) {
    int64_t s[4], es[3], ts[4];
    float *x = probe_keep(a, probe_input_f32(a, "sample", 4, s, ctx));
    float *ehs = x ? probe_keep(a, probe_input_f32(a, "encoder_hidden_states", 3, es, ctx)) : NULL;
    float *tg = ehs ? probe_keep(a, probe_input_f32(a, "target", 4, ts, ctx)) : NULL;
    float *t = tg ? read_timesteps(a, s[0], ctx) : NULL;
    if (!t) return ctx->status;
    if (!a->lora[0]) return sl_fail(ctx, SL_ERR_ARG, "unet-grad needs --lora FILE (the adapter whose gradients to report)");
    if (memcmp(s, ts, sizeof s) != 0) return sl_fail(ctx, SL_ERR_SHAPE, "%s: target and sample differ in shape", a->in->path);
    SlModel m;
    SL_TRY(load(&m, a, 0, 0, 1, ctx));
    SlStatus st = sl_unet_plan(&m.unet, s[0], s[2], s[3], es[1], ctx);
    ProbeAdapters pa;
    memset(&pa, 0, sizeof pa);
    if (!st) st = probe_adapters_attach(&pa, a, &m.unet, 1, ctx);
    size_t n = (size_t)sl_shape_numel(4, s);
    float *out = st ? NULL : sl_alloc(2 * n * sizeof(float)), *dout = out ? out + n : NULL;
    if (!st && !out) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    if (!st) {
        sl_unet_forward(&m.unet, out, x, t, ehs);
        double loss = 0;
        for (size_t i = 0; i < n; i++) {
            double e = (double)out[i] - tg[i];
            loss += e * e;
            dout[i] = (float)(2.0 * e / (double)n);
        }
        sl_unet_backward(&m.unet, NULL, dout);
        float *l = probe_keep(a, sl_alloc(sizeof(float)));
        int64_t one[1] = {1};
        if (!l) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
        else {
            l[0] = (float)(loss / (double)n);
            st = sl_st_writer_add(a->out, "loss", SL_F32, 1, one, l, ctx);
        }
        if (!st) st = probe_adapters_write_grads(&pa, a, ctx);
        /* the writer references the gradient buffers: save before they go */
        if (!st) st = sl_st_writer_save(a->out, a->out_path, ctx);
        if (!st) *a->saved = 1;
    }
    sl_free(out);
    probe_adapters_detach(&pa);
    sl_model_free(&m);
    return st;
}

static SlStatus run_denoise(const ProbeArgs *a, SlCtx *ctx) {
    int64_t s[4], cs[3], us[3];
    float *lat = probe_keep(a, probe_input_f32(a, "latents", 4, s, ctx));
    float *cond = lat ? probe_keep(a, probe_input_f32(a, "cond", 3, cs, ctx)) : NULL;
    if (!cond) return ctx->status;
    float *uncond = NULL;
    if (probe_input(a, "uncond", 0, ctx)) {
        uncond = probe_keep(a, probe_input_f32(a, "uncond", 3, us, ctx));
        if (!uncond) return ctx->status;
        if (memcmp(us, cs, sizeof cs) != 0) return sl_fail(ctx, SL_ERR_SHAPE, "%s: cond and uncond differ in shape", a->in->path);
    }
    SlDenoiseOpts o = {.steps = 20, .guidance = 7.5f, .seed = 0};
    o.sampler.kind = SL_SAMPLER_DDIM;
    o.sampler.karras = -1;
    const char *v;
    if ((v = probe_setting(a, "sampler")) && !sl_sampler_kind_from_name(v, &o.sampler.kind))
        return sl_fail(ctx, SL_ERR_ARG, "unknown sampler '%s' (ddim, euler, euler_a, dpmpp_2m)", v);
    /* the ranges of `stylora sample` */
    if ((v = probe_setting(a, "steps"))) o.steps = (int)cli_int("probe", "--set steps", v, 1, 1000);
    if ((v = probe_setting(a, "cfg"))) o.guidance = (float)cli_num("probe", "--set cfg", v, 0, 100, CLI_CLOSED);
    if ((v = probe_setting(a, "seed"))) o.seed = (uint64_t)cli_int("probe", "--set seed", v, 0, 1LL << 62);
    if ((v = probe_setting(a, "karras"))) o.sampler.karras = (int)cli_int("probe", "--set karras", v, -1, 1);
    if ((v = probe_setting(a, "eta"))) o.sampler.eta = (float)cli_num("probe", "--set eta", v, 0, 1, CLI_CLOSED);
    SlModel m;
    SL_TRY(load(&m, a, 0, 0, 1, ctx));
    SlStatus st = SL_OK;
    if (s[1] != m.unet_cfg.in_channels || cs[0] != s[0] || cs[2] != m.unet_cfg.cross_dim)
        st = sl_fail(ctx, SL_ERR_SHAPE, "%s: latents/cond shapes do not fit the U-Net", a->in->path);
    int guided = uncond && o.guidance > 1.0f;
    if (!st) st = sl_unet_plan(&m.unet, guided ? 2 * s[0] : s[0], s[2], s[3], cs[1], ctx);
    ProbeAdapters pa;
    memset(&pa, 0, sizeof pa);
    if (!st) st = probe_adapters_attach(&pa, a, &m.unet, 0, ctx);
    if (!st) st = sl_denoise(&m.unet, &m.sched, lat, cond, uncond, s[0], s[2], s[3], cs[1], &o, ctx);
    if (!st) st = sl_st_writer_add(a->out, "latents", SL_F32, 4, s, lat, ctx);
    probe_adapters_detach(&pa);
    sl_model_free(&m);
    return st;
}

const ProbeComponent probe_textenc = {"textenc", "input_ids [B,T] (I64/I32)",
                                      "last_hidden_state [B,T,D], hidden_state.K [B,T,D] for K=0..L", run_textenc};
const ProbeComponent probe_vae_encode = {"vae-encode", "image [B,3,H,W] in [-1,1]", "mean, logvar [B,lc,H/f,W/f]",
                                         run_vae_encode};
const ProbeComponent probe_vae_decode = {"vae-decode", "latent [B,lc,h,w] (raw z); --set tile=N for tiled decode",
                                         "image [B,3,h*f,w*f]", run_vae_decode};
const ProbeComponent probe_unet = {"unet", "sample [B,C,h,w], timestep [B], encoder_hidden_states [B,T,D]",
                                   "out [B,C,h,w]", run_unet};
const ProbeComponent probe_unet_grad = {"unet-grad",
                                        "sample [B,C,h,w], timestep [B], encoder_hidden_states [B,T,D], target [B,C,h,w]; --lora FILE",
                                        "loss (MSE against target), <adapter key>.grad for every adapter tensor", run_unet_grad};
const ProbeComponent probe_denoise = {"denoise",
                                      "latents [B,C,h,w], cond [B,T,D], uncond [B,T,D] (optional); --set sampler= steps= cfg= seed= karras= eta=",
                                      "latents (after the last step, before the VAE)", run_denoise};
