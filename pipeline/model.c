/* model.c - loading a whole model from its layouts; see model.h. */
#include "pipeline/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "pipeline/half.h"
#include "pipeline/quant.h"

static SlStatus load_text(SlModel *m, SlWeights *w, const char *cfg_dir, SlClipLayout layout, SlCtx *ctx) {
    char p[4096], tp[4096];
    snprintf(tp, sizeof tp, "%s/text_encoder/config.json", cfg_dir);
    SL_TRY(sl_clip_config_load(&m->clip_cfg, tp, ctx));
    SL_TRY(sl_clip_load(&m->clip, &m->clip_cfg, w, layout, ctx));
    snprintf(p, sizeof p, "%s/tokenizer", cfg_dir);
    if (sl_path_is_dir(p)) SL_TRY(sl_tokenizer_load(&m->tok, p, ctx));
    return SL_OK;
}

static SlStatus load_sched(SlModel *m, const char *cfg_dir, SlCtx *ctx) {
    char p[4096];
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", cfg_dir);
    if (!sl_path_is_file(p)) {
        /* SD's training schedule when a model has no scheduler folder */
        sl_sched_config_default(&m->sched_cfg);
        m->sched_cfg.beta_start = 0.00085;
        m->sched_cfg.beta_end = 0.012;
        m->sched_cfg.beta_schedule = SL_BETA_SCALED_LINEAR;
        m->sched_cfg.steps_offset = 1;
        m->sched_cfg.set_alpha_to_one = 0;
        m->sched_cfg.clip_sample = 0;
        sl_log(ctx, SL_LOG_WARN, "%s: no scheduler/scheduler_config.json; using SD 1.x's scaled_linear schedule", m->path);
    } else {
        SL_TRY(sl_sched_config_load(&m->sched_cfg, p, ctx));
    }
    SL_TRY(sl_schedule_init(&m->sched, &m->sched_cfg, ctx));
    m->has_sched = 1;
    return SL_OK;
}

/* A U-Net folder written by `stylora quantize` loads as NF4 (pipeline/quant.h); with
 * unet_dense it is dequantized to fp32 afterwards (--base fp32 on such a model). */
static SlStatus load_unet_prequant(SlModel *m, SlWeights *w, const char *layers, int dense, SlCtx *ctx) {
    SL_TRY(sl_unet_init_shapes(&m->unet, &m->unet_cfg, ctx));
    m->has_unet = 1;
    SlNf4Stats s;
    SL_TRY(sl_unet_load_prequant(&m->unet, w, &s, ctx));
    sl_weights_report_unused(w, 8, ctx);
    sl_log(ctx, SL_LOG_INFO, "%s: pre-quantized U-Net (stylora quantize, layers %s): %d NF4%s linears, %.1f MB -> %.1f MB",
           m->path, layers ? layers : "?", s.n_layers, s.double_quant ? "+dq" : "", (double)s.fp32_bytes / 1e6,
           (double)s.nf4_bytes / 1e6);
    if (!dense) return SL_OK;
    sl_log(ctx, SL_LOG_WARN, "%s: --base fp32 on a pre-quantized model: its %d NF4 linears are dequantized to fp32 "
           "(the NF4-rounded values; the original fp32 weights are not in this model)", m->path, s.n_layers);
    return sl_unet_dequantize_nf4(&m->unet, ctx);
}

static SlStatus load_unet(SlModel *m, SlWeights *w, const char *cfg_dir, int ldm, const SlModelOpts *o, SlCtx *ctx) {
    char p[4096];
    snprintf(p, sizeof p, "%s/unet/config.json", cfg_dir);
    SL_TRY(sl_unet_config_load(&m->unet_cfg, p, ctx));
    int nf4 = 0;
    const char *layers = NULL;
    if (!ldm) SL_TRY(sl_weights_nf4_probe(w, &nf4, &layers, ctx));
    if (o->unet_half && o->unet_bf16) return sl_fail(ctx, SL_ERR_ARG, "the U-Net is held in fp16 or in bf16, not both");
    if (nf4 && (o->unet_half || o->unet_bf16))
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: the U-Net is pre-quantized to NF4: --base %s does not apply "
                       "(leave --base out to use it as NF4, or --base fp32)", m->path, o->unet_bf16 ? "bf16" : "fp16");
    if (nf4) return load_unet_prequant(m, w, layers, o->unet_dense, ctx);
    SL_TRY(sl_unet_init_shapes(&m->unet, &m->unet_cfg, ctx));
    m->has_unet = 1;
    if (ldm) {
        SlKeyPair *pairs;
        int n;
        SL_TRY(sl_unet_ldm_map(&m->unet, &pairs, &n, ctx));
        SlStatus st = sl_weights_set_map(w, pairs, n, ctx);
        sl_unet_free_map(pairs, n);
        SL_TRY(st);
    }
    const int half = !o->unet_bf16 && (o->unet_half || (o->unet_half_if_f16 && sl_unet_weights_all_f16(&m->unet, w)));
    if (!half && !o->unet_bf16) SL_TRY(sl_unet_alloc_weights(&m->unet, ctx));
    if (half && !o->unet_half)
        sl_log(ctx, SL_LOG_INFO, "%s: the U-Net's weights are stored F16: held as they are (exact, half the memory "
               "of fp32; --base fp32 widens them)", m->path);
    if (o->unet_bf16) {
        SlHalfStats hs;
        SL_TRY(sl_unet_load_bf16(&m->unet, w, &hs, ctx));
        sl_half_log_stats(ctx, &hs);
    } else if (half) {
        SlHalfStats hs;
        SL_TRY(sl_unet_load_half(&m->unet, w, &hs, ctx));
        sl_half_log_stats(ctx, &hs);
    } else {
        SL_TRY(sl_unet_load(&m->unet, w, ctx));
    }
    sl_weights_report_unused(w, 8, ctx);
    return SL_OK;
}

static SlStatus load_diffusers(SlModel *m, const SlModelOpts *o, SlCtx *ctx) {
    char p[4096], cp[4096];
    SlWeights w;
    if (!o->skip_text) {
        SL_TRY(sl_weights_open_dir(&w, sl_path_join(p, sizeof p, m->path, "text_encoder"), ctx));
        SlStatus st = load_text(m, &w, m->path, SL_CLIP_LAYOUT_AUTO, ctx);
        sl_weights_close(&w);
        SL_TRY(st);
    }
    if (!o->skip_vae) {
        SL_TRY(sl_vae_config_load(&m->vae_cfg, sl_path_join(cp, sizeof cp, m->path, "vae/config.json"), ctx));
        SL_TRY(sl_weights_open_dir(&w, sl_path_join(p, sizeof p, m->path, "vae"), ctx));
        SlStatus st = sl_vae_load(&m->vae, &m->vae_cfg, &w, ctx);
        if (!st) sl_weights_report_unused(&w, 8, ctx);
        sl_weights_close(&w);
        SL_TRY(st);
    }
    if (!o->skip_unet) {
        SL_TRY(sl_weights_open_dir(&w, sl_path_join(p, sizeof p, m->path, "unet"), ctx));
        SlStatus st = load_unet(m, &w, m->path, 0, o, ctx);
        sl_weights_close(&w);
        SL_TRY(st);
    }
    return load_sched(m, m->path, ctx);
}

static SlStatus load_single(SlModel *m, const SlModelOpts *o, SlCtx *ctx) {
    if (!o->config_dir)
        return sl_fail(ctx, SL_ERR_ARG,
                       "%s: a single-file checkpoint carries no configs; give a diffusers-layout folder with the "
                       "configs and tokenizer (--model-config DIR)", m->path);
    SlWeights all, view;
    SL_TRY(sl_weights_open_file(&all, m->path, ctx));
    SlStatus st = SL_OK;
    if (!o->skip_text) {
        const SlStEntry *e;
        sl_weights_view(&view, &all, SL_CKPT_TE2_PREFIX);
        e = sl_weights_find(&view, "token_embedding.weight", NULL);
        if (e) {
            st = load_text(m, &view, o->config_dir, SL_CLIP_LAYOUT_OPENCLIP, ctx);
        } else {
            sl_weights_close(&view);
            sl_weights_view(&view, &all, SL_CKPT_TE1_PREFIX);
            st = load_text(m, &view, o->config_dir, SL_CLIP_LAYOUT_AUTO, ctx);
        }
        sl_weights_close(&view);
    }
    if (!st && !o->skip_vae) {
        char cp[4096];
        st = sl_vae_config_load(&m->vae_cfg, sl_path_join(cp, sizeof cp, o->config_dir, "vae/config.json"), ctx);
        if (!st) {
            sl_weights_view(&view, &all, SL_CKPT_VAE_PREFIX);
            st = sl_vae_load(&m->vae, &m->vae_cfg, &view, ctx);
            sl_weights_close(&view);
        }
    }
    if (!st && !o->skip_unet) {
        sl_weights_view(&view, &all, SL_CKPT_UNET_PREFIX);
        st = load_unet(m, &view, o->config_dir, 1, o, ctx);
        sl_weights_close(&view);
    }
    sl_weights_close(&all);
    SL_TRY(st);
    return load_sched(m, o->config_dir, ctx);
}

SlStatus sl_model_load(SlModel *m, const char *path, const SlModelOpts *opts, SlCtx *ctx) {
    SlModelOpts none = {0};
    const SlModelOpts *o = opts ? opts : &none;
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    m->layout = sl_model_layout(path);
    SlStatus st;
    switch (m->layout) {
    case SL_LAYOUT_DIFFUSERS: st = load_diffusers(m, o, ctx); break;
    case SL_LAYOUT_SINGLE_FILE: st = load_single(m, o, ctx); break;
    default:
        if (sl_path_is_dir(path))
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: not a model folder (expected model_index.json or unet/, vae/, text_encoder/)", path);
        else if (sl_path_is_file(path)) {
            /* A pickle (.ckpt/.pt/.pth/.bin) gets weights.c's refusal, which says how to
             * convert (issue 12: `sample --model x.ckpt` said "not a checkpoint" instead). */
            SlWeights pw;
            st = sl_weights_open_file(&pw, path, ctx);
            if (st == SL_OK) sl_weights_close(&pw);
            if (st != SL_ERR_UNSUPPORTED)
                st = sl_fail(ctx, SL_ERR_FORMAT, "%s: not a Stable Diffusion checkpoint (no model.diffusion_model.* tensors)", path);
        }
        else
            st = sl_fail(ctx, SL_ERR_IO, "%s: no such file or folder", path);
    }
    if (!st) sl_model_set_kernels(m, &o->kernels);
    if (st) {
        SlCtx keep = *ctx;
        sl_model_free(m);
        *ctx = keep;
    }
    return st;
}

void sl_model_set_kernels(SlModel *m, const SlKernels *k) {
    if (m->clip) sl_clip_set_kernels(m->clip, k);
    if (m->vae) sl_vae_set_kernels(m->vae, k);
    if (m->has_unet) sl_unet_set_kernels(&m->unet, k);
}

void sl_model_free(SlModel *m) {
    sl_tokenizer_free(m->tok);
    sl_clip_free(m->clip);
    sl_vae_free(m->vae);
    if (m->has_unet) sl_unet_free(&m->unet);
    if (m->has_sched) sl_schedule_free(&m->sched);
    sl_sched_config_free(&m->sched_cfg);
    memset(m, 0, sizeof *m);
}

int sl_model_text_len(const SlModel *m) {
    if (m->tok) return sl_tokenizer_max_length(m->tok);
    return (int)m->clip_cfg.P;
}

SlStatus sl_model_encode_prompts(SlModel *m, const char *const *prompts, int B, int clip_skip, float *cond,
                                 int32_t *ids_out, SlCtx *ctx) {
    if (!m->clip) return sl_fail(ctx, SL_ERR_ARG, "%s: the text encoder was not loaded", m->path);
    if (!m->tok) return sl_fail(ctx, SL_ERR_MISSING, "%s: the model has no tokenizer/ folder, so prompts cannot be encoded", m->path);
    const SlClipConfig *c = &m->clip_cfg;
    if (clip_skip < 1 || clip_skip > c->L)
        return sl_fail(ctx, SL_ERR_ARG, "clip skip %d is outside [1, %lld] for this text encoder", clip_skip, (long long)c->L);
    int T = sl_model_text_len(m);
    if (T > c->P) T = (int)c->P;
    int32_t *ids = malloc((size_t)B * T * sizeof *ids);
    float *hs = clip_skip > 1 ? sl_alloc((size_t)(c->L + 1) * B * T * c->D * sizeof(float)) : NULL;
    SlStatus st = SL_OK;
    if (!ids || (clip_skip > 1 && !hs)) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory encoding prompts");
    for (int b = 0; !st && b < B; b++) {
        int n_dropped = 0;
        char dropped[160];
        st = sl_tokenizer_encode_dropped(m->tok, prompts[b], ids + (size_t)b * T, T, NULL, &n_dropped, dropped,
                                         sizeof dropped, ctx);
        if (st) sl_fail_prefix(ctx, "prompt %d", b + 1);
        if (!st && n_dropped > 0 && !m->warned_dropped) { /* silent truncation surprised users */
            m->warned_dropped = 1;
            sl_log(ctx, SL_LOG_WARN,
                   "%d tokens over the limit of %d were dropped: '%s' (from \"%.60s%s\"; other texts over the "
                   "limit are cut the same way without this warning)",
                   n_dropped, T - 2, dropped, prompts[b], strlen(prompts[b]) > 60 ? "..." : "");
        }
    }
    if (!st) st = sl_clip_forward(m->clip, ids, B, T, cond, hs, NULL, ctx);
    if (!st && clip_skip > 1) /* hidden state L+1-clip_skip through the final LayerNorm */
        st = sl_clip_final_norm(m->clip, cond, hs + (size_t)(c->L + 1 - clip_skip) * B * T * c->D, (int64_t)B * T, ctx);
    if (!st && ids_out) memcpy(ids_out, ids, (size_t)B * T * sizeof *ids);
    free(ids);
    sl_free(hs);
    return st;
}
