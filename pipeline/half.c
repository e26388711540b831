/* half.c - binary16 frozen U-Net: arena rebuild, streaming load, widening back.
 * See half.h for the contract.
 */
#include "pipeline/half.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"

#define HALF_STREAM_CHUNK ((int64_t)1 << 18) /* elements converted per read (1 MB of fp32) */

static const uint16_t *mod_w16(const SlUNetModRef *m) { return m->lin ? m->lin->w16 : m->conv->w16; }
static SlHook *mod_hook(const SlUNetModRef *m) { return m->lin ? m->lin->hook : m->conv->hook; }
static void mod_set_w16(SlUNetModRef *m, const uint16_t *w16) {
    if (m->lin) m->lin->w16 = w16;
    else m->conv->w16 = w16;
}

static int name_listed(const char *name, const char *const *names, int n) {
    if (!names) return 1;
    for (int k = 0; k < n; k++)
        if (!strcmp(names[k], name)) return 1;
    return 0;
}

/* 1 if any of the n halves is Inf/NaN (exponent all ones). */
static int half_nonfinite(const uint16_t *h, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((h[i] & 0x7C00u) == 0x7C00u) return 1;
    return 0;
}

/* dst[0..n) = src rounded to binary16; counts the values that changed. Fails when a
 * finite value overflows. */
static SlStatus round_half(uint16_t *dst, const float *src, size_t n, const char *name, int64_t *rounded,
                           SlCtx *ctx) {
    sl_f32_to_f16(dst, src, n);
    int64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        const float back = sl_half_to_float(dst[i]);
        if ((dst[i] & 0x7C00u) == 0x7C00u)
            return sl_fail(ctx, SL_ERR_NUMERIC, "fp16: weight %s has a value (%g) outside binary16's range "
                           "(|w| <= 65504): use --base fp32", name, (double)src[i]);
        r += back != src[i];
    }
    *rounded += r;
    return SL_OK;
}

typedef struct Plan {
    SlUNetModRef **mod;   /* [n_params]: the module of a weight, else NULL */
    char *half;           /* [n_params]: 1 = binary16 in the new arena */
} Plan;

static void plan_free(Plan *pl) {
    free(pl->mod);
    free(pl->half);
}

static SlStatus plan_init(SlUNet *u, Plan *pl, SlCtx *ctx) {
    pl->mod = calloc((size_t)u->n_params + 1, sizeof *pl->mod);
    pl->half = calloc((size_t)u->n_params + 1, 1);
    if (!pl->mod || !pl->half) {
        plan_free(pl);
        return sl_fail(ctx, SL_ERR_NOMEM, "fp16: out of memory");
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
    for (int i = 0; i < u->n_params; i++)
        if (pl->half[i]) {
            const int64_t n = sl_shape_numel(u->params[i].ndim, u->params[i].shape);
            s->n_layers++;
            s->n_half += n;
            s->fp32_bytes += (size_t)n * sizeof(float);
            s->half_bytes += (size_t)n * sizeof(uint16_t);
        }
}

/* Rebuilds the arena so that param i is binary16 when pl->half[i], else fp32; every
 * weight is taken from its current form (fp32 or binary16). On failure u is unchanged. */
static SlStatus rebuild(SlUNet *u, Plan *pl, int64_t *rounded, SlCtx *ctx) {
    for (int i = 0; i < u->n_params; i++) {
        const SlUNetParam *p = &u->params[i];
        if (!p->init_w && !(pl->mod[i] && mod_w16(pl->mod[i])))
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "fp16: %s is held in another format (NF4?): fp16 and NF4 "
                           "layers cannot be combined", p->name);
    }
    SlArena a;
    SL_TRY(sl_arena_init(&a, plan_bytes(u, pl), "unet weights", ctx));
    /* first pass: fill the new arena (u untouched, so a failure leaves it as it was) */
    void **dst = calloc((size_t)u->n_params + 1, sizeof *dst);
    if (!dst) {
        sl_arena_free(&a);
        return sl_fail(ctx, SL_ERR_NOMEM, "fp16: out of memory");
    }
    SlStatus st = SL_OK;
    for (int i = 0; i < u->n_params && st == SL_OK; i++) {
        const SlUNetParam *p = &u->params[i];
        const size_t n = (size_t)sl_shape_numel(p->ndim, p->shape);
        const uint16_t *cur16 = p->init_w ? NULL : mod_w16(pl->mod[i]);
        if (pl->half[i]) {
            uint16_t *h = sl_arena_take(&a, n * sizeof(uint16_t));
            if (cur16) memcpy(h, cur16, n * sizeof(uint16_t));
            else st = round_half(h, p->init_w, n, p->name, rounded, ctx);
            dst[i] = h;
        } else {
            float *f = sl_arena_take_f32(&a, (int64_t)n);
            if (cur16) sl_f16_to_f32(f, cur16, n);
            else memcpy(f, p->init_w, n * sizeof(float));
            dst[i] = f;
        }
    }
    if (st != SL_OK) {
        free(dst);
        sl_arena_free(&a);
        return st;
    }
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        if (pl->half[i]) {
            p->init_w = *p->w = NULL;
            mod_set_w16(pl->mod[i], dst[i]);
        } else {
            p->init_w = *p->w = dst[i];
            if (pl->mod[i]) mod_set_w16(pl->mod[i], NULL);
        }
    }
    free(dst);
    sl_arena_free(&u->weights);
    u->weights = a;
    return SL_OK;
}

SlStatus sl_unet_to_half(SlUNet *u, SlHalfStats *stats, SlCtx *ctx) {
    if (!u->weights.base) return sl_fail(ctx, SL_ERR_ARG, "fp16: the U-Net has no weights loaded");
    Plan pl;
    SL_TRY(plan_init(u, &pl, ctx));
    for (int i = 0; i < u->n_params; i++) {
        if (!pl.mod[i]) continue;
        if (mod_hook(pl.mod[i])) { /* the message names the module before the plan is freed */
            sl_fail(ctx, SL_ERR_UNSUPPORTED, "fp16: %s already carries a hook (convert before applying adapters; "
                    "NF4 layers cannot be combined with fp16)", pl.mod[i]->name);
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

SlStatus sl_unet_half_to_dense(SlUNet *u, const char *const *names, int n, SlCtx *ctx) {
    Plan pl;
    SL_TRY(plan_init(u, &pl, ctx));
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

/* Reads one weight tensor into the binary16 slot h [n] (copy when F16, else chunks). */
static SlStatus load_one_half(SlWeights *w, const SlUNetParam *p, uint16_t *h, float *buf, int64_t *rounded,
                              SlCtx *ctx) {
    const SlStFile *f = NULL;
    const SlStEntry *e = sl_weights_find_shaped(w, p->name, p->ndim, p->shape, &f, ctx);
    if (!e) {
        sl_fail_prefix(ctx, "unet");
        return ctx->status;
    }
    const int64_t total = sl_shape_numel(p->ndim, p->shape);
    const uint8_t *src = sl_st_data(f, e);
    if (e->dtype == SL_F16) {
        memcpy(h, src, (size_t)total * sizeof(uint16_t));
        if (!half_nonfinite(h, (size_t)total)) return SL_OK;
    }
    /* F16 found bad is converted below only for the shared check's message */
    const size_t es = sl_dtype_size(e->dtype);
    for (int64_t e0 = 0; e0 < total; e0 += HALF_STREAM_CHUNK) {
        const int64_t n = total - e0 < HALF_STREAM_CHUNK ? total - e0 : HALF_STREAM_CHUNK;
        SL_TRY(sl_convert_to_f32(buf, src + (size_t)e0 * es, e->dtype, (size_t)n, ctx));
        SL_TRY(sl_weights_check_finite(w, "U-Net", p->name, buf, (size_t)n, (size_t)e0, ctx));
        SL_TRY(round_half(h + e0, buf, (size_t)n, p->name, rounded, ctx));
    }
    return SL_OK;
}

SlStatus sl_unet_half_bytes(SlUNet *u, size_t *total, size_t *half, SlCtx *ctx) {
    Plan pl;
    SL_TRY(plan_init(u, &pl, ctx));
    for (int i = 0; i < u->n_params; i++) pl.half[i] = pl.mod[i] != NULL; /* as sl_unet_load_half */
    SlHalfStats s = {0};
    fill_stats(&s, u, &pl);
    *total = plan_bytes(u, &pl);
    *half = s.half_bytes;
    plan_free(&pl);
    return SL_OK;
}

SlStatus sl_unet_load_half(SlUNet *u, SlWeights *w, SlHalfStats *stats, SlCtx *ctx) {
    if (u->weights.base) return sl_fail(ctx, SL_ERR_ARG, "fp16: loading needs a U-Net from sl_unet_init_shapes");
    Plan pl;
    SL_TRY(plan_init(u, &pl, ctx));
    for (int i = 0; i < u->n_params; i++) pl.half[i] = pl.mod[i] != NULL;
    SlHalfStats s = {0};
    SlStatus st = sl_arena_init(&u->weights, plan_bytes(u, &pl), "unet weights (fp16)", ctx);
    float *buf = st == SL_OK ? malloc(HALF_STREAM_CHUNK * sizeof(float)) : NULL;
    if (st == SL_OK && !buf) st = sl_fail(ctx, SL_ERR_NOMEM, "fp16: out of memory");
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
        st = load_one_half(w, p, h, buf, &s.n_rounded, ctx);
        p->init_w = *p->w = NULL;
        mod_set_w16(pl.mod[i], h);
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

void sl_half_log_stats(SlCtx *ctx, const SlHalfStats *s) {
    sl_log(ctx, SL_LOG_INFO,
           "fp16 base: %d U-Net weights (%.1fM values) held in binary16: %.1f MB fp32 -> %.1f MB; %lld values "
           "rounded (%.2f%%; 0 from an fp16 checkpoint); U-Net weight arena %.1f MB (was %.1f MB)",
           s->n_layers, (double)s->n_half / 1e6, (double)s->fp32_bytes / 1e6, (double)s->half_bytes / 1e6,
           (long long)s->n_rounded, s->n_half ? 100.0 * (double)s->n_rounded / (double)s->n_half : 0.0,
           (double)s->arena_after / 1e6, (double)s->arena_before / 1e6);
}
