/* half.c - 16-bit frozen U-Net (binary16 or bfloat16): arena rebuild, streaming load,
 * widening back. See half.h for the contract.
 */
#include "pipeline/half.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"
#include "nn/bf16.h"

#define HALF_STREAM_CHUNK ((int64_t)1 << 18) /* elements converted per read (1 MB of fp32) */

static const uint16_t *mod_w16(const SlUNetModRef *m) { return m->lin ? m->lin->w16 : m->conv->w16; }
static int mod_bf16(const SlUNetModRef *m) { return m->lin ? m->lin->w16_bf16 : m->conv->w16_bf16; }
static SlHook *mod_hook(const SlUNetModRef *m) { return m->lin ? m->lin->hook : m->conv->hook; }
/* w16 NULL: the module is fp32 again (its flag cleared too). */
static void mod_set_w16(SlUNetModRef *m, const uint16_t *w16, SlHalfFmt fmt) {
    const int bf = w16 && fmt == SL_HALF_BF16;
    if (m->lin) m->lin->w16 = w16, m->lin->w16_bf16 = bf;
    else m->conv->w16 = w16, m->conv->w16_bf16 = bf;
}

static const char *fmt_tag(SlHalfFmt fmt) { return fmt == SL_HALF_BF16 ? "bf16" : "fp16"; }

/* dst[0..n) = the 16-bit src widened (exact). */
static void widen16(float *dst, const uint16_t *src, size_t n, SlHalfFmt fmt) {
    if (fmt == SL_HALF_BF16) sl_bf16_to_f32(dst, src, n);
    else sl_f16_to_f32(dst, src, n);
}

static int name_listed(const char *name, const char *const *names, int n) {
    if (!names) return 1;
    for (int k = 0; k < n; k++)
        if (!strcmp(names[k], name)) return 1;
    return 0;
}

/* The exponent bits of fmt: all ones is Inf/NaN. */
static uint16_t exp_mask(SlHalfFmt fmt) { return fmt == SL_HALF_BF16 ? 0x7F80u : 0x7C00u; }

/* 1 if any of the n 16-bit values is Inf/NaN. */
static int half_nonfinite(const uint16_t *h, size_t n, SlHalfFmt fmt) {
    const uint16_t e = exp_mask(fmt);
    for (size_t i = 0; i < n; i++)
        if ((h[i] & e) == e) return 1;
    return 0;
}

/* dst[0..n) = the finite src rounded to fmt (nearest, ties to even); counts the values
 * that changed. Fails when a value overflows (binary16: |w| > 65504; bfloat16: only
 * within half an ulp of FLT_MAX). */
static SlStatus round_half(uint16_t *dst, const float *src, size_t n, SlHalfFmt fmt, const char *name,
                           int64_t *rounded, SlCtx *ctx) {
    if (fmt == SL_HALF_BF16) sl_f32_to_bf16(dst, src, n);
    else sl_f32_to_f16(dst, src, n);
    const uint16_t e = exp_mask(fmt);
    int64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        const float back = fmt == SL_HALF_BF16 ? sl_bf16_to_float(dst[i]) : sl_half_to_float(dst[i]);
        if ((dst[i] & e) == e)
            return fmt == SL_HALF_BF16
                       ? sl_fail(ctx, SL_ERR_NUMERIC, "bf16: weight %s has a value (%g) that rounds to Inf in bfloat16: "
                                 "use --base fp32", name, (double)src[i])
                       : sl_fail(ctx, SL_ERR_NUMERIC, "fp16: weight %s has a value (%g) outside binary16's range "
                                 "(|w| <= 65504): use --base fp32", name, (double)src[i]);
        r += back != src[i];
    }
    *rounded += r;
    return SL_OK;
}

typedef struct Plan {
    SlUNetModRef **mod;   /* [n_params]: the module of a weight, else NULL */
    char *half;           /* [n_params]: 1 = 16-bit (fmt) in the new arena */
    SlHalfFmt fmt;        /* the 16-bit format of the new arena's weights */
} Plan;

static void plan_free(Plan *pl) {
    free(pl->mod);
    free(pl->half);
}

static SlStatus plan_init(SlUNet *u, Plan *pl, SlHalfFmt fmt, SlCtx *ctx) {
    pl->mod = calloc((size_t)u->n_params + 1, sizeof *pl->mod);
    pl->half = calloc((size_t)u->n_params + 1, 1);
    pl->fmt = fmt;
    if (!pl->mod || !pl->half) {
        plan_free(pl);
        return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", fmt_tag(fmt));
    }
    for (int i = 0; i < u->n_params; i++) pl->mod[i] = sl_unet_module_of_param(u, &u->params[i]);
    return SL_OK;
}

static size_t plan_bytes(const SlUNet *u, const Plan *pl) {
    size_t b = 0;
    for (int i = 0; i < u->n_params; i++) {
        const size_t n = (size_t)sl_shape_numel(u->params[i].ndim, u->params[i].shape);
        b += sl_align_up(n * (pl->half[i] ? sizeof(uint16_t) : sizeof(float)));
    }
    return b;
}

static void fill_stats(SlHalfStats *s, const SlUNet *u, const Plan *pl) {
    s->fmt = pl->fmt;
    for (int i = 0; i < u->n_params; i++)
        if (pl->half[i]) {
            const int64_t n = sl_shape_numel(u->params[i].ndim, u->params[i].shape);
            s->n_layers++;
            s->n_half += n;
            s->fp32_bytes += (size_t)n * sizeof(float);
            s->half_bytes += (size_t)n * sizeof(uint16_t);
        }
}

/* Rebuilds the arena so that param i is 16-bit (pl->fmt) when pl->half[i], else fp32;
 * every weight is taken from its current form (fp32, binary16 or bfloat16; a 16-bit
 * weight kept 16-bit keeps its format). On failure u is unchanged. */
static SlStatus rebuild(SlUNet *u, Plan *pl, int64_t *rounded, SlCtx *ctx) {
    const char *tag = fmt_tag(pl->fmt);
    for (int i = 0; i < u->n_params; i++) {
        const SlUNetParam *p = &u->params[i];
        if (!p->init_w && !(pl->mod[i] && mod_w16(pl->mod[i])))
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s is held in another format (NF4?): %s and NF4 "
                           "layers cannot be combined", tag, p->name, tag);
    }
    SlArena a;
    SL_TRY(sl_arena_init(&a, plan_bytes(u, pl), "unet weights", ctx));
    /* first pass: fill the new arena (u untouched, so a failure leaves it as it was) */
    void **dst = calloc((size_t)u->n_params + 1, sizeof *dst);
    SlHalfFmt *fmt = calloc((size_t)u->n_params + 1, sizeof *fmt); /* [n_params]: a 16-bit weight's format */
    if (!dst || !fmt) {
        free(dst), free(fmt);
        sl_arena_free(&a);
        return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", tag);
    }
    SlStatus st = SL_OK;
    for (int i = 0; i < u->n_params && st == SL_OK; i++) {
        const SlUNetParam *p = &u->params[i];
        const size_t n = (size_t)sl_shape_numel(p->ndim, p->shape);
        const uint16_t *cur16 = p->init_w ? NULL : mod_w16(pl->mod[i]);
        const SlHalfFmt cur_fmt = cur16 && mod_bf16(pl->mod[i]) ? SL_HALF_BF16 : SL_HALF_FP16;
        if (pl->half[i]) {
            uint16_t *h = sl_arena_take(&a, n * sizeof(uint16_t));
            fmt[i] = cur16 ? cur_fmt : pl->fmt;
            if (cur16) memcpy(h, cur16, n * sizeof(uint16_t));
            else st = round_half(h, p->init_w, n, pl->fmt, p->name, rounded, ctx);
            dst[i] = h;
        } else {
            float *f = sl_arena_take_f32(&a, (int64_t)n);
            if (cur16) widen16(f, cur16, n, cur_fmt);
            else memcpy(f, p->init_w, n * sizeof(float));
            dst[i] = f;
        }
    }
    if (st != SL_OK) {
        free(dst), free(fmt);
        sl_arena_free(&a);
        return st;
    }
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        if (pl->half[i]) {
            p->init_w = *p->w = NULL;
            mod_set_w16(pl->mod[i], dst[i], fmt[i]);
        } else {
            p->init_w = *p->w = dst[i];
            if (pl->mod[i]) mod_set_w16(pl->mod[i], NULL, SL_HALF_FP16);
        }
    }
    free(dst), free(fmt);
    sl_arena_free(&u->weights);
    u->weights = a;
    return SL_OK;
}

/* sl_unet_to_half / sl_unet_to_bf16. */
static SlStatus to_16(SlUNet *u, SlHalfFmt fmt, SlHalfStats *stats, SlCtx *ctx) {
    const char *tag = fmt_tag(fmt);
    if (!u->weights.base) return sl_fail(ctx, SL_ERR_ARG, "%s: the U-Net has no weights loaded", tag);
    Plan pl;
    SL_TRY(plan_init(u, &pl, fmt, ctx));
    for (int i = 0; i < u->n_params; i++) {
        if (!pl.mod[i]) continue;
        if (mod_hook(pl.mod[i])) { /* the message names the module before the plan is freed */
            sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s already carries a hook (convert before applying adapters; "
                    "NF4 layers cannot be combined with %s)", tag, pl.mod[i]->name, tag);
            plan_free(&pl);
            return SL_ERR_UNSUPPORTED;
        }
        if (!u->params[i].init_w && mod_w16(pl.mod[i]) && mod_bf16(pl.mod[i]) != (fmt == SL_HALF_BF16)) {
            sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s is held in %s already (widen it first: sl_unet_half_to_dense)",
                    tag, pl.mod[i]->name, mod_bf16(pl.mod[i]) ? "bfloat16" : "binary16");
            plan_free(&pl);
            return SL_ERR_UNSUPPORTED;
        }
        pl.half[i] = 1;
    }
    SlHalfStats s = {.arena_before = u->weights.size};
    SlStatus st = rebuild(u, &pl, &s.n_rounded, ctx);
    if (st == SL_OK) {
        fill_stats(&s, u, &pl);
        s.arena_after = u->weights.size;
        if (stats) *stats = s;
    }
    plan_free(&pl);
    return st;
}

SlStatus sl_unet_to_half(SlUNet *u, SlHalfStats *stats, SlCtx *ctx) { return to_16(u, SL_HALF_FP16, stats, ctx); }
SlStatus sl_unet_to_bf16(SlUNet *u, SlHalfStats *stats, SlCtx *ctx) { return to_16(u, SL_HALF_BF16, stats, ctx); }

SlStatus sl_unet_half_to_dense(SlUNet *u, const char *const *names, int n, SlCtx *ctx) {
    Plan pl;
    SL_TRY(plan_init(u, &pl, SL_HALF_FP16, ctx)); /* (no weight is rounded: the format is not used) */
    int any = 0;
    for (int i = 0; i < u->n_params; i++) {
        const SlUNetModRef *m = pl.mod[i];
        if (!m || u->params[i].init_w || !mod_w16(m)) continue;
        pl.half[i] = !name_listed(m->name, names, n);
        any |= !pl.half[i];
    }
    int64_t rounded = 0;
    SlStatus st = any ? rebuild(u, &pl, &rounded, ctx) : SL_OK;
    plan_free(&pl);
    return st;
}

int sl_unet_weights_all_f16(SlUNet *u, SlWeights *w) {
    int any = 0;
    for (int i = 0; i < u->n_params; i++) {
        if (!sl_unet_module_of_param(u, &u->params[i])) continue;
        const SlStFile *f = NULL;
        const SlStEntry *e = sl_weights_find(w, u->params[i].name, &f);
        if (!e || e->dtype != SL_F16) return 0;
        any = 1;
    }
    return any;
}

int sl_unet_count_half(const SlUNet *u) {
    int k = 0;
    for (int j = 0; j < u->n_mods; j++) k += mod_w16(&u->mods[j]) != NULL;
    return k;
}

int sl_unet_count_bf16(const SlUNet *u) {
    int k = 0;
    for (int j = 0; j < u->n_mods; j++) k += mod_w16(&u->mods[j]) != NULL && mod_bf16(&u->mods[j]);
    return k;
}

/* Reads one weight tensor into the 16-bit slot h [n] of format fmt (a copy when the file
 * stores that format, else converted in chunks: F16 -> bfloat16 rounds). */
static SlStatus load_one_half(SlWeights *w, const SlUNetParam *p, uint16_t *h, float *buf, SlHalfFmt fmt,
                              int64_t *rounded, SlCtx *ctx) {
    const SlStFile *f = NULL;
    const SlStEntry *e = sl_weights_find_shaped(w, p->name, p->ndim, p->shape, &f, ctx);
    if (!e) {
        sl_fail_prefix(ctx, "unet");
        return ctx->status;
    }
    const int64_t total = sl_shape_numel(p->ndim, p->shape);
    const uint8_t *src = sl_st_data(f, e);
    if (e->dtype == (fmt == SL_HALF_BF16 ? SL_BF16 : SL_F16)) {
        memcpy(h, src, (size_t)total * sizeof(uint16_t));
        if (!half_nonfinite(h, (size_t)total, fmt)) return SL_OK;
    }
    /* a 16-bit tensor found bad is converted below only for the shared check's message */
    const size_t es = sl_dtype_size(e->dtype);
    for (int64_t e0 = 0; e0 < total; e0 += HALF_STREAM_CHUNK) {
        const int64_t n = total - e0 < HALF_STREAM_CHUNK ? total - e0 : HALF_STREAM_CHUNK;
        SL_TRY(sl_convert_to_f32(buf, src + (size_t)e0 * es, e->dtype, (size_t)n, ctx));
        SL_TRY(sl_weights_check_finite(w, "U-Net", p->name, buf, (size_t)n, (size_t)e0, ctx));
        SL_TRY(round_half(h + e0, buf, (size_t)n, fmt, p->name, rounded, ctx));
    }
    return SL_OK;
}

SlStatus sl_unet_half_bytes(SlUNet *u, size_t *total, size_t *half, SlCtx *ctx) {
    Plan pl;
    SL_TRY(plan_init(u, &pl, SL_HALF_FP16, ctx)); /* (both formats take 2 bytes a value) */
    for (int i = 0; i < u->n_params; i++) pl.half[i] = pl.mod[i] != NULL; /* as sl_unet_load_half */
    SlHalfStats s = {0};
    fill_stats(&s, u, &pl);
    *total = plan_bytes(u, &pl);
    *half = s.half_bytes;
    plan_free(&pl);
    return SL_OK;
}

/* sl_unet_load_half / sl_unet_load_bf16. */
static SlStatus load_16(SlUNet *u, SlWeights *w, SlHalfFmt fmt, SlHalfStats *stats, SlCtx *ctx) {
    if (u->weights.base)
        return sl_fail(ctx, SL_ERR_ARG, "%s: loading needs a U-Net from sl_unet_init_shapes", fmt_tag(fmt));
    Plan pl;
    SL_TRY(plan_init(u, &pl, fmt, ctx));
    for (int i = 0; i < u->n_params; i++) pl.half[i] = pl.mod[i] != NULL;
    SlHalfStats s = {0};
    SlStatus st = sl_arena_init(&u->weights, plan_bytes(u, &pl),
                                fmt == SL_HALF_BF16 ? "unet weights (bf16)" : "unet weights (fp16)", ctx);
    float *buf = st == SL_OK ? malloc(HALF_STREAM_CHUNK * sizeof(float)) : NULL;
    if (st == SL_OK && !buf) st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", fmt_tag(fmt));
    for (int i = 0; i < u->n_params && st == SL_OK; i++) {
        SlUNetParam *p = &u->params[i];
        const int64_t n = sl_shape_numel(p->ndim, p->shape);
        if (!pl.half[i]) {
            p->init_w = *p->w = sl_arena_take_f32(&u->weights, n);
            st = sl_weights_load(w, p->name, p->ndim, p->shape, p->init_w, ctx);
            if (st != SL_OK) sl_fail_prefix(ctx, "unet");
            else st = sl_weights_check_finite(w, "U-Net", p->name, p->init_w, (size_t)n, 0, ctx);
            continue;
        }
        uint16_t *h = sl_arena_take(&u->weights, (size_t)n * sizeof(uint16_t));
        st = load_one_half(w, p, h, buf, fmt, &s.n_rounded, ctx);
        p->init_w = *p->w = NULL;
        mod_set_w16(pl.mod[i], h, fmt);
    }
    free(buf);
    if (st == SL_OK) {
        fill_stats(&s, u, &pl);
        s.arena_after = u->weights.size;
        if (stats) *stats = s;
    }
    plan_free(&pl);
    return st;
}

SlStatus sl_unet_load_half(SlUNet *u, SlWeights *w, SlHalfStats *stats, SlCtx *ctx) {
    return load_16(u, w, SL_HALF_FP16, stats, ctx);
}
SlStatus sl_unet_load_bf16(SlUNet *u, SlWeights *w, SlHalfStats *stats, SlCtx *ctx) {
    return load_16(u, w, SL_HALF_BF16, stats, ctx);
}

void sl_half_log_stats(SlCtx *ctx, const SlHalfStats *s) {
    const int bf = s->fmt == SL_HALF_BF16;
    sl_log(ctx, SL_LOG_INFO,
           "%s base: %d U-Net weights (%.1fM values) held in %s: %.1f MB fp32 -> %.1f MB; %lld values "
           "rounded (%.2f%%; 0 when the file stores %s)%s; U-Net weight arena %.1f MB (was %.1f MB)",
           bf ? "bf16" : "fp16", s->n_layers, (double)s->n_half / 1e6, bf ? "bfloat16" : "binary16",
           (double)s->fp32_bytes / 1e6, (double)s->half_bytes / 1e6,
           (long long)s->n_rounded, s->n_half ? 100.0 * (double)s->n_rounded / (double)s->n_half : 0.0,
           bf ? "BF16" : "F16", bf ? "; products on the bf16 GEMM kernel" : "", (double)s->arena_after / 1e6,
           (double)s->arena_before / 1e6);
}
