/* quant.c - NF4 frozen U-Net: layer selection, arena rebuild, streaming load, files.
 * See quant.h for the contract and the file layout.
 */
#include "pipeline/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nf4.h"
#include "styles/adapter.h"

#define NF4_STREAM_CHUNK (4096 * SL_NF4_BLOCK) /* elements converted per read (1 MB of fp32) */

/* ---- selection ---- */

static const struct { const char *name, *patterns; } nf4_presets[] = {
    {"attn", "to_q,to_k,to_v,to_out.0"},
    {"ff", "ff.net.0.proj,ff.net.2"},
    {"proj", "proj_in,proj_out"},
    {"time", "time_embedding.linear_1,time_embedding.linear_2,time_emb_proj"},
    {"all", "*"},
};

static int match_list(const char *list, const char *name) {
    char tok[256];
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len > 0 && len < sizeof tok) {
            memcpy(tok, p, len);
            tok[len] = 0;
            int preset = 0;
            for (size_t k = 0; k < sizeof nf4_presets / sizeof nf4_presets[0]; k++)
                if (!strcmp(tok, nf4_presets[k].name)) {
                    preset = 1;
                    if (match_list(nf4_presets[k].patterns, name)) return 1;
                }
            if (!preset && sl_adapter_pattern_match(tok, name)) return 1;
        }
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

int sl_nf4_select(const char *which, const char *name) {
    return match_list(which && *which ? which : SL_NF4_DEFAULT_LAYERS, name);
}

/* Every token must select at least one linear; one that selects only convs is refused. */
static SlStatus check_which(const SlUNet *u, const char *which, SlCtx *ctx) {
    char tok[256];
    const char *p = which;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len >= sizeof tok) return sl_fail(ctx, SL_ERR_ARG, "nf4: layer pattern too long");
        memcpy(tok, p, len);
        tok[len] = 0;
        if (len) {
            int lin = 0, conv = 0;
            for (int i = 0; i < u->n_mods; i++)
                if (match_list(tok, u->mods[i].name)) lin += u->mods[i].lin != NULL, conv += u->mods[i].conv != NULL;
            if (!lin && conv)
                return sl_fail(ctx, SL_ERR_UNSUPPORTED, "nf4: '%s' selects only convolutions (%d); NF4 is supported on linear layers only", tok, conv);
            if (!lin) return sl_fail(ctx, SL_ERR_ARG, "nf4: '%s' matches no linear layer of the U-Net", tok);
        }
        p += len;
        if (*p == ',') p++;
    }
    return SL_OK;
}

/* ---- arena rebuild ---- */

typedef struct Plan {
    SlLinear **lin;     /* [n_params]: the module of a quantized weight, else NULL */
    int *dq;            /* [n_params] format of each quantized weight */
    size_t bytes, work_floats, max_blocks;
} Plan;

static void plan_free(Plan *pl) {
    free(pl->lin);
    free(pl->dq);
}

/* The linear whose weight p is (NF4 is for linears only), or NULL. */
static SlUNetModRef *mod_of_param(SlUNet *u, const SlUNetParam *p) {
    SlUNetModRef *m = sl_unet_module_of_param(u, p);
    return m && m->lin ? m : NULL;
}

static void plan_sizes(SlUNet *u, Plan *pl) {
    pl->bytes = pl->work_floats = pl->max_blocks = 0;
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        if (!pl->lin[i]) {
            pl->bytes += sl_align_up((size_t)sl_shape_numel(p->ndim, p->shape) * sizeof(float));
            continue;
        }
        const SlLinear *m = pl->lin[i];
        SlNf4Weight tmp = {.O = m->O, .I = m->I};
        pl->bytes += sl_align_up(sizeof(SlNf4Linear)) + sl_nf4_bytes(m->O, m->I, pl->dq[i]);
        if (sl_nf4_work_floats(&tmp) > pl->work_floats) pl->work_floats = sl_nf4_work_floats(&tmp);
        size_t nb = (size_t)((m->O * m->I + SL_NF4_BLOCK - 1) / SL_NF4_BLOCK);
        if (nb > pl->max_blocks) pl->max_blocks = nb;
    }
    pl->bytes += sl_align_up(pl->work_floats * sizeof(float));
}

/* Marks the selected linears; a selected module with a hook already is refused. */
static SlStatus plan_select(SlUNet *u, const char *which, int dq, Plan *pl, SlCtx *ctx) {
    memset(pl, 0, sizeof *pl);
    which = which && *which ? which : SL_NF4_DEFAULT_LAYERS;
    SL_TRY(check_which(u, which, ctx));
    pl->lin = calloc((size_t)u->n_params + 1, sizeof *pl->lin);
    pl->dq = calloc((size_t)u->n_params + 1, sizeof *pl->dq);
    if (!pl->lin || !pl->dq) {
        plan_free(pl);
        return sl_fail(ctx, SL_ERR_NOMEM, "nf4: out of memory");
    }
    for (int i = 0; i < u->n_params; i++) {
        SlUNetModRef *mr = mod_of_param(u, &u->params[i]);
        if (!mr || !sl_nf4_select(which, mr->name)) continue;
        if (mr->lin->hook) {
            plan_free(pl);
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "nf4: %s already carries a hook (quantize before applying adapters)", mr->name);
        }
        pl->lin[i] = mr->lin;
        pl->dq[i] = dq;
    }
    return SL_OK;
}

static void fill_stats(SlNf4Stats *s, const SlUNet *u, const Plan *pl, size_t before, int dq) {
    if (!s) return;
    memset(s, 0, sizeof *s);
    s->arena_before = before;
    s->arena_after = u->weights.size;
    s->work_bytes = pl->work_floats * sizeof(float);
    s->double_quant = dq;
    for (int i = 0; i < u->n_params; i++)
        if (pl->lin[i]) {
            const int64_t n = pl->lin[i]->O * pl->lin[i]->I;
            s->n_layers++;
            s->n_quant += n;
            s->fp32_bytes += (size_t)n * sizeof(float);
            s->nf4_bytes += sl_nf4_packed_bytes(pl->lin[i]->O, pl->lin[i]->I, pl->dq[i]);
        }
}

/* The NF4 state of param p (its module's hook), or NULL when p is dense or not a linear weight. */
static SlNf4Linear *nf4_of_param(SlUNet *u, const SlUNetParam *p) {
    if (p->init_w) return NULL;
    SlUNetModRef *mr = mod_of_param(u, p);
    return mr ? sl_nf4_linear_of(mr->lin->hook) : NULL;
}

/* Copies (same double-quant setting) or converts an NF4 weight into the bound dst. */
static void nf4_copy(SlNf4Weight *dst, const SlNf4Weight *src, float *dense, float *tmp) {
    if (src->dq != dst->dq) {
        sl_nf4_dequantize_range(dense, src, 0, src->O * src->I, SL_NF4_ISA_AUTO);
        sl_nf4_quantize(dst, dense, tmp);
        return;
    }
    memcpy(dst->blocks, src->blocks, (size_t)src->n_blocks * sizeof(SlNf4Block));
    if (!src->dq) {
        memcpy(dst->absmax, src->absmax, (size_t)src->n_blocks * sizeof(float));
        return;
    }
    memcpy(dst->absmax_q, src->absmax_q, (size_t)src->n_blocks);
    memcpy(dst->absmax2, src->absmax2, (size_t)((src->n_blocks + SL_NF4_DQ_BLOCK - 1) / SL_NF4_DQ_BLOCK) * sizeof(float));
    dst->offset = src->offset;
}

/* Rebuilds u's weight arena to the plan: param i NF4 (format pl->dq[i]) when pl->lin[i],
 * else dense fp32. Each weight is taken from its current form (dense: copied or quantized;
 * NF4: kept, converted or dequantized). Every weight must be dense or NF4 (no adapter hook
 * on top of an NF4 base). On failure u is unchanged. */
static SlStatus arena_rebuild(SlUNet *u, Plan *pl, SlCtx *ctx) {
    size_t max_numel = 0;
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        if (!p->init_w && !nf4_of_param(u, p))
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "nf4: %s has no dense weight and no NF4 hook directly on it (remove adapters first)", p->name);
        const size_t n = (size_t)sl_shape_numel(p->ndim, p->shape);
        if (pl->lin[i] && !p->init_w && n > max_numel) max_numel = n;
    }
    plan_sizes(u, pl);
    SlArena a;
    SL_TRY(sl_arena_init(&a, pl->bytes, "unet weights", ctx));
    float *tmp = malloc(pl->max_blocks * sizeof(float) + 1);
    float *dense = max_numel ? malloc(max_numel * sizeof(float)) : NULL;
    if (!tmp || (max_numel && !dense)) {
        sl_arena_free(&a);
        free(tmp), free(dense);
        return sl_fail(ctx, SL_ERR_NOMEM, "nf4: out of memory");
    }
    float *work = sl_arena_take_f32(&a, (int64_t)pl->work_floats);
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        SlNf4Linear *cur = nf4_of_param(u, p);
        const int64_t n = sl_shape_numel(p->ndim, p->shape);
        if (!pl->lin[i]) {
            float *dst = sl_arena_take_f32(&a, n);
            if (cur) {
                sl_nf4_dequantize_range(dst, &cur->W, 0, n, SL_NF4_ISA_AUTO);
                mod_of_param(u, p)->lin->hook = NULL;
            } else {
                memcpy(dst, p->init_w, (size_t)n * sizeof(float));
            }
            p->init_w = *p->w = dst;
            continue;
        }
        SlLinear *m = pl->lin[i];
        SlNf4Linear *q = sl_arena_take(&a, sizeof *q);
        sl_nf4_bind(&q->W, sl_arena_take(&a, sl_nf4_bytes(m->O, m->I, pl->dq[i])), m->O, m->I, pl->dq[i]);
        if (cur) nf4_copy(&q->W, &cur->W, dense, tmp);
        else sl_nf4_quantize(&q->W, p->init_w, tmp);
        sl_nf4_linear_init(q, work);
        p->init_w = *p->w = NULL;
        m->hook = &q->hook;
    }
    free(tmp), free(dense);
    sl_arena_free(&u->weights);
    u->weights = a;
    return SL_OK;
}

static SlStatus plan_alloc(SlUNet *u, Plan *pl, SlCtx *ctx) {
    memset(pl, 0, sizeof *pl);
    pl->lin = calloc((size_t)u->n_params + 1, sizeof *pl->lin);
    pl->dq = calloc((size_t)u->n_params + 1, sizeof *pl->dq);
    if (pl->lin && pl->dq) return SL_OK;
    plan_free(pl);
    return sl_fail(ctx, SL_ERR_NOMEM, "nf4: out of memory");
}

SlStatus sl_unet_quantize_nf4(SlUNet *u, const char *which, int dq, SlNf4Stats *stats, SlCtx *ctx) {
    if (!u->weights.base) return sl_fail(ctx, SL_ERR_ARG, "nf4: the U-Net has no weights loaded");
    Plan pl;
    SL_TRY(plan_select(u, which, dq, &pl, ctx));
    const size_t before = u->weights.size;
    SlStatus st = arena_rebuild(u, &pl, ctx);
    if (st == SL_OK) fill_stats(stats, u, &pl, before, dq);
    plan_free(&pl);
    return st;
}

void sl_unet_nf4_formats(SlUNet *u, int *fmt) {
    for (int i = 0; i < u->n_params; i++) {
        SlNf4Linear *q = nf4_of_param(u, &u->params[i]);
        fmt[i] = q ? q->W.dq : -1;
    }
}

SlStatus sl_unet_nf4_convert(SlUNet *u, const int *fmt, SlNf4Stats *stats, SlCtx *ctx) {
    Plan pl;
    SL_TRY(plan_alloc(u, &pl, ctx));
    int dq = 0;
    SlStatus st = SL_OK;
    for (int i = 0; i < u->n_params && st == SL_OK; i++) {
        if (fmt[i] < 0) continue;
        SlUNetModRef *mr = mod_of_param(u, &u->params[i]);
        if (!mr) st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "nf4: %s is not a linear weight; NF4 is for linear layers only", u->params[i].name);
        else pl.lin[i] = mr->lin, pl.dq[i] = fmt[i] != 0, dq |= fmt[i] != 0;
    }
    const size_t before = u->weights.size;
    if (st == SL_OK) st = arena_rebuild(u, &pl, ctx);
    if (st == SL_OK) fill_stats(stats, u, &pl, before, dq);
    plan_free(&pl);
    return st;
}

/* ---- streaming load ---- */

static char *nf4_key(char *buf, size_t n, const char *param, const char *suffix) {
    snprintf(buf, n, "%s.%s", param, suffix);
    return buf;
}

/* Pre-quantized tensors of param p: 1 with *dq set when "<p>.nf4" exists, else 0. */
static int prequant_probe(SlWeights *w, const char *pname, int *dq) {
    char k[300];
    const SlStFile *f;
    if (!sl_weights_find(w, nf4_key(k, sizeof k, pname, "nf4"), &f)) return 0;
    const SlStEntry *e = sl_weights_find(w, nf4_key(k, sizeof k, pname, "absmax"), &f);
    *dq = e && e->dtype == SL_U8;
    return 1;
}

static SlStatus need(SlWeights *w, const char *pname, const char *suffix, SlDType dt, int64_t numel,
                     const void **data, SlCtx *ctx) {
    char k[300];
    const SlStFile *f;
    const SlStEntry *e = sl_weights_find(w, nf4_key(k, sizeof k, pname, suffix), &f);
    if (!e) return sl_fail(ctx, SL_ERR_MISSING, "%s: pre-quantized tensor %s is missing", w->label, k);
    if (e->dtype != dt || (int64_t)(e->nbytes / sl_dtype_size(dt)) != numel)
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: %s should be %s with %lld elements (%s, %zu bytes)", w->label, k,
                       sl_dtype_name(dt), (long long)numel, sl_dtype_name(e->dtype), e->nbytes);
    *data = sl_st_data(f, e);
    return SL_OK;
}

static SlStatus load_prequant(SlWeights *w, const SlUNetParam *p, SlNf4Weight *W, SlCtx *ctx) {
    char k[300];
    const SlStFile *f;
    sl_weights_find(w, nf4_key(k, sizeof k, p->name, "nf4"), &f);
    char want[64];
    snprintf(k, sizeof k, "stylora.nf4.shape.%s", p->name);
    const char *meta = f ? sl_st_meta(f, k) : NULL;
    sl_shape_str(p->ndim, p->shape, want, sizeof want);
    if (meta && strcmp(meta, want))
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: %s was quantized from shape %s, the model expects %s", w->label,
                       p->name, meta, want);
    const void *d;
    SL_TRY(need(w, p->name, "nf4", SL_U8, (W->O * W->I + 1) / 2, &d, ctx));
    memset(W->blocks, 0x77, (size_t)W->n_blocks * sizeof(SlNf4Block));
    memcpy(W->blocks, d, (size_t)(W->O * W->I + 1) / 2);
    if (!W->dq) {
        SL_TRY(need(w, p->name, "absmax", SL_F32, W->n_blocks, &d, ctx));
        memcpy(W->absmax, d, (size_t)W->n_blocks * sizeof(float));
    } else {
        SL_TRY(need(w, p->name, "absmax", SL_U8, W->n_blocks, &d, ctx));
        memcpy(W->absmax_q, d, (size_t)W->n_blocks);
        const int64_t nc = (W->n_blocks + SL_NF4_DQ_BLOCK - 1) / SL_NF4_DQ_BLOCK;
        SL_TRY(need(w, p->name, "absmax2", SL_F32, nc, &d, ctx));
        memcpy(W->absmax2, d, (size_t)nc * sizeof(float));
        SL_TRY(need(w, p->name, "offset", SL_F32, 1, &d, ctx));
        memcpy(&W->offset, d, sizeof(float));
    }
    return SL_OK;
}

/* Quantizes param p from the file, chunk by chunk. buf: NF4_STREAM_CHUNK floats; am: n_blocks floats (dq). */
static SlStatus load_streaming(SlWeights *w, const SlUNetParam *p, SlNf4Weight *W, float *buf, float *am,
                               SlCtx *ctx) {
    const SlStFile *f;
    const SlStEntry *e = sl_weights_find(w, p->name, &f);
    if (!e) return sl_fail(ctx, SL_ERR_MISSING, "unet: %s: tensor %s is missing", w->label, p->name);
    char a[64], b[64];
    if (sl_shape_numel(e->ndim, e->shape) != W->O * W->I || e->shape[0] != W->O)
        return sl_fail(ctx, SL_ERR_SHAPE, "unet: %s: %s has shape %s, expected %s", w->label, p->name,
                       sl_shape_str(e->ndim, e->shape, a, sizeof a), sl_shape_str(p->ndim, p->shape, b, sizeof b));
    const size_t es = sl_dtype_size(e->dtype);
    const uint8_t *src = sl_st_data(f, e);
    float *absmax = W->dq ? am : W->absmax;
    const int64_t total = W->O * W->I;
    for (int64_t e0 = 0; e0 < total; e0 += NF4_STREAM_CHUNK) {
        const int64_t n = total - e0 < NF4_STREAM_CHUNK ? total - e0 : NF4_STREAM_CHUNK;
        SL_TRY(sl_convert_to_f32(buf, src + (size_t)e0 * es, e->dtype, (size_t)n, ctx));
        SL_TRY(sl_weights_check_finite(w, "U-Net", p->name, buf, (size_t)n, (size_t)e0, ctx));
        sl_nf4_quantize_range(W, absmax, buf, e0, n);
    }
    if (W->dq) sl_nf4_compress_absmax(W, am);
    return SL_OK;
}

SlStatus sl_unet_nf4_bytes(SlUNet *u, const char *which, int dq, size_t *total, size_t *nf4, size_t *tile,
                           SlCtx *ctx) {
    Plan pl;
    SL_TRY(plan_select(u, which, dq, &pl, ctx));
    plan_sizes(u, &pl);
    *total = pl.bytes;
    *tile = sl_align_up(pl.work_floats * sizeof(float));
    *nf4 = 0;
    for (int i = 0; i < u->n_params; i++)
        if (pl.lin[i]) *nf4 += sl_align_up(sizeof(SlNf4Linear)) + sl_nf4_bytes(pl.lin[i]->O, pl.lin[i]->I, pl.dq[i]);
    plan_free(&pl);
    return SL_OK;
}

/* which NULL: only the pre-quantized tensors become NF4 (the rest loads dense). */
static SlStatus load_nf4(SlUNet *u, SlWeights *w, const char *which, int dq, SlNf4Stats *stats, SlCtx *ctx) {
    if (u->weights.base) return sl_fail(ctx, SL_ERR_ARG, "nf4: loading NF4 needs a U-Net from sl_unet_init_shapes");
    Plan pl;
    SL_TRY(which ? plan_select(u, which, dq, &pl, ctx) : plan_alloc(u, &pl, ctx));
    /* pre-quantized tensors decide their own format (and are taken even if not selected) */
    for (int i = 0; i < u->n_params; i++) {
        int fdq;
        SlUNetModRef *mr = mod_of_param(u, &u->params[i]);
        if (mr && prequant_probe(w, u->params[i].name, &fdq)) {
            pl.lin[i] = mr->lin;
            pl.dq[i] = fdq;
        }
    }
    plan_sizes(u, &pl);
    SlStatus st = sl_arena_init(&u->weights, pl.bytes, "unet weights (nf4)", ctx);
    float *buf = malloc(NF4_STREAM_CHUNK * sizeof(float));
    float *am = malloc(pl.max_blocks * sizeof(float) + 1);
    if (st == SL_OK && (!buf || !am)) st = sl_fail(ctx, SL_ERR_NOMEM, "nf4: out of memory");
    float *work = st == SL_OK ? sl_arena_take_f32(&u->weights, (int64_t)pl.work_floats) : NULL;
    for (int i = 0; i < u->n_params && st == SL_OK; i++) {
        SlUNetParam *p = &u->params[i];
        if (!pl.lin[i]) {
            p->init_w = *p->w = sl_arena_take_f32(&u->weights, sl_shape_numel(p->ndim, p->shape));
            st = sl_weights_load(w, p->name, p->ndim, p->shape, p->init_w, ctx);
            if (st != SL_OK) sl_fail_prefix(ctx, "unet");
            else st = sl_weights_check_finite(w, "U-Net", p->name, p->init_w,
                                              (size_t)sl_shape_numel(p->ndim, p->shape), 0, ctx);
            continue;
        }
        SlLinear *m = pl.lin[i];
        SlNf4Linear *q = sl_arena_take(&u->weights, sizeof *q);
        sl_nf4_bind(&q->W, sl_arena_take(&u->weights, sl_nf4_bytes(m->O, m->I, pl.dq[i])), m->O, m->I, pl.dq[i]);
        int fdq;
        if (prequant_probe(w, p->name, &fdq)) st = load_prequant(w, p, &q->W, ctx);
        else st = load_streaming(w, p, &q->W, buf, am, ctx);
        sl_nf4_linear_init(q, work);
        p->init_w = *p->w = NULL;
        m->hook = &q->hook;
    }
    free(buf);
    free(am);
    for (int i = 0; i < u->n_params; i++) dq |= pl.lin[i] && pl.dq[i];
    if (st == SL_OK) fill_stats(stats, u, &pl, 0, dq);
    plan_free(&pl);
    return st;
}

SlStatus sl_unet_load_nf4(SlUNet *u, SlWeights *w, const char *which, int dq, SlNf4Stats *stats, SlCtx *ctx) {
    return load_nf4(u, w, which ? which : "", dq, stats, ctx);
}

SlStatus sl_unet_load_prequant(SlUNet *u, SlWeights *w, SlNf4Stats *stats, SlCtx *ctx) {
    return load_nf4(u, w, NULL, 0, stats, ctx);
}

SlStatus sl_weights_nf4_probe(const SlWeights *w, int *nf4, const char **layers, SlCtx *ctx) {
    *nf4 = 0;
    if (layers) *layers = NULL;
    for (int i = 0; i < w->n_files; i++) {
        const SlStFile *f = &w->files[i];
        const char *q = sl_st_meta(f, "stylora.quant");
        if (q && strcmp(q, "nf4"))
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: stylora.quant is '%s'; this build reads 'nf4' only", f->path, q);
        const size_t pl = strlen(w->prefix);
        for (int j = 0; !q && j < f->n; j++) {
            const char *nm = f->entries[j].name;
            const size_t len = strlen(nm);
            if (f->entries[j].dtype == SL_U8 && len > 4 && !strcmp(nm + len - 4, ".nf4") && !strncmp(nm, w->prefix, pl)) q = "nf4";
        }
        if (!q) continue;
        *nf4 = 1;
        if (layers && !*layers) *layers = sl_st_meta(f, "stylora.nf4.layers");
        const char *bs = sl_st_meta(f, "stylora.nf4.blocksize");
        if (bs && strcmp(bs, "64"))
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: NF4 block size %s; only 64 is supported", f->path, bs);
    }
    return SL_OK;
}

/* ---- back to dense ---- */

int sl_unet_count_nf4(const SlUNet *u) {
    int n = 0;
    for (int i = 0; i < u->n_mods; i++)
        if (u->mods[i].lin && sl_nf4_linear_of(u->mods[i].lin->hook)) n++;
    return n;
}

SlStatus sl_unet_dequantize_nf4(SlUNet *u, SlCtx *ctx) {
    return sl_unet_dequantize_nf4_modules(u, NULL, 0, ctx);
}

SlStatus sl_unet_dequantize_nf4_modules(SlUNet *u, const char *const *names, int n, SlCtx *ctx) {
    int *fmt = malloc(((size_t)u->n_params + 1) * sizeof *fmt);
    if (!fmt) return sl_fail(ctx, SL_ERR_NOMEM, "nf4: out of memory");
    sl_unet_nf4_formats(u, fmt);
    int changed = 0;
    for (int i = 0; i < u->n_params; i++) {
        if (fmt[i] < 0) continue;
        const SlUNetModRef *mr = mod_of_param(u, &u->params[i]);
        int hit = !names;
        for (int k = 0; k < n && !hit; k++) hit = !strcmp(names[k], mr->name);
        if (hit) fmt[i] = -1, changed = 1;
    }
    SlStatus st = changed ? sl_unet_nf4_convert(u, fmt, NULL, ctx) : SL_OK;
    free(fmt);
    return st;
}

SlStatus sl_nf4_merge_error(SlUNet *u, const int *fmt, const SlMergeState *ms, SlNf4MergeError *e, SlCtx *ctx) {
    memset(e, 0, sizeof *e);
    double err2 = 0, w2 = 0, d2 = 0, lost2 = 0, dot = 0, q2 = 0;
    for (int k = 0; k < ms->n; k++) {
        int i = 0;
        while (i < u->n_params && *u->params[i].w != ms->w[k]) i++;
        if (i == u->n_params || fmt[i] < 0) continue;
        SlUNetModRef *mr = mod_of_param(u, &u->params[i]);
        if (!mr) continue;
        const int64_t O = mr->lin->O, I = mr->lin->I, n = O * I;
        SlNf4Weight W;
        void *mem = sl_alloc(sl_nf4_bytes(O, I, fmt[i] != 0));
        float *tmp = malloc(((size_t)n / SL_NF4_BLOCK + 2) * sizeof(float)), *q = malloc((size_t)n * sizeof(float));
        if (!mem || !tmp || !q) {
            sl_free(mem), free(tmp), free(q);
            return sl_fail(ctx, SL_ERR_NOMEM, "nf4: out of memory");
        }
        sl_nf4_bind(&W, mem, O, I, fmt[i] != 0);
        sl_nf4_quantize(&W, ms->w[k], tmp);
        sl_nf4_dequantize_range(q, &W, 0, n, SL_NF4_ISA_AUTO);
        for (int64_t j = 0; j < n; j++) {
            const double wm = ms->w[k][j], w0 = ms->orig[k][j], d = wm - w0, dq = q[j] - w0;
            err2 += (q[j] - wm) * (q[j] - wm), w2 += wm * wm, d2 += d * d;
            lost2 += (dq - d) * (dq - d), dot += dq * d, q2 += dq * dq;
        }
        sl_free(mem), free(tmp), free(q);
        e->n_layers++;
    }
    e->weight_rel = w2 > 0 ? sqrt(err2 / w2) : 0;
    e->delta_rel = d2 > 0 ? sqrt(lost2 / d2) : 0;
    e->delta_cos = d2 > 0 && q2 > 0 ? dot / sqrt(d2 * q2) : 0;
    return SL_OK;
}

/* ---- files ---- */

SlStatus sl_unet_nf4_write(SlUNet *u, SlStWriter *wr, SlDType dense, const char *which, SlCtx *ctx) {
    char k[300], v[64];
    int dq = -1;
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        if (p->init_w) {
            SL_TRY(sl_st_writer_add_f32_as(wr, p->name, dense, p->ndim, p->shape, p->init_w, ctx));
            continue;
        }
        SlUNetModRef *mr = mod_of_param(u, p);
        SlNf4Linear *q = mr ? sl_nf4_linear_of(mr->lin->hook) : NULL;
        if (!q) return sl_fail(ctx, SL_ERR_UNSUPPORTED, "nf4: %s is neither dense nor NF4 (remove adapters first)", p->name);
        const SlNf4Weight *W = &q->W;
        dq = W->dq;
        const int64_t nbytes = (W->O * W->I + 1) / 2, nb = W->n_blocks, nc = (nb + SL_NF4_DQ_BLOCK - 1) / SL_NF4_DQ_BLOCK;
        const int64_t one = 1;
        SL_TRY(sl_st_writer_add(wr, nf4_key(k, sizeof k, p->name, "nf4"), SL_U8, 1, &nbytes, W->blocks, ctx));
        if (!W->dq) {
            SL_TRY(sl_st_writer_add(wr, nf4_key(k, sizeof k, p->name, "absmax"), SL_F32, 1, &nb, W->absmax, ctx));
        } else {
            SL_TRY(sl_st_writer_add(wr, nf4_key(k, sizeof k, p->name, "absmax"), SL_U8, 1, &nb, W->absmax_q, ctx));
            SL_TRY(sl_st_writer_add(wr, nf4_key(k, sizeof k, p->name, "absmax2"), SL_F32, 1, &nc, W->absmax2, ctx));
            SL_TRY(sl_st_writer_add(wr, nf4_key(k, sizeof k, p->name, "offset"), SL_F32, 1, &one, &W->offset, ctx));
        }
        snprintf(k, sizeof k, "stylora.nf4.shape.%s", p->name);
        SL_TRY(sl_st_writer_meta(wr, k, sl_shape_str(p->ndim, p->shape, v, sizeof v), ctx));
    }
    SL_TRY(sl_st_writer_meta(wr, "stylora.quant", "nf4", ctx));
    SL_TRY(sl_st_writer_meta(wr, "stylora.nf4.blocksize", "64", ctx));
    SL_TRY(sl_st_writer_meta(wr, "stylora.nf4.double_quant", dq == 1 ? "true" : "false", ctx));
    SL_TRY(sl_st_writer_meta(wr, "stylora.nf4.layers", which && *which ? which : SL_NF4_DEFAULT_LAYERS, ctx));
    return SL_OK;
}

/* ---- model level ---- */

static void log_stats(SlCtx *ctx, const SlNf4Stats *s) {
    sl_log(ctx, SL_LOG_INFO,
           "nf4%s: %d U-Net linears (%.1fM weights): %.1f MB fp32 -> %.1f MB nf4 (%.3fx); U-Net weight arena %.1f MB "
           "(was %.1f MB; %.1f MB dequantization tile)",
           s->double_quant ? "+dq" : "", s->n_layers, (double)s->n_quant / 1e6, (double)s->fp32_bytes / 1e6,
           (double)s->nf4_bytes / 1e6, s->fp32_bytes ? (double)s->nf4_bytes / (double)s->fp32_bytes : 0.0,
           (double)s->arena_after / 1e6, (double)s->arena_before / 1e6, (double)s->work_bytes / 1e6);
}

SlStatus sl_model_quantize_nf4(SlModel *m, const char *which, int dq, SlCtx *ctx) {
    if (!m->has_unet) return sl_fail(ctx, SL_ERR_ARG, "nf4: the model has no U-Net loaded");
    SlNf4Stats s;
    SL_TRY(sl_unet_quantize_nf4(&m->unet, which, dq, &s, ctx));
    log_stats(ctx, &s);
    return SL_OK;
}

SlStatus sl_model_load_nf4(SlModel *m, const char *path, const SlModelOpts *opts, const char *which, int dq,
                           SlCtx *ctx) {
    SlModelOpts o = opts ? *opts : (SlModelOpts){0};
    const int want_unet = !o.skip_unet;
    o.skip_unet = 1;
    SL_TRY(sl_model_load(m, path, &o, ctx));
    if (!want_unet) return SL_OK;
    char p[4096], cp[4096];
    SlWeights all, w;
    int have_all = 0;
    SlStatus st;
    if (m->layout == SL_LAYOUT_DIFFUSERS) {
        st = sl_unet_config_load(&m->unet_cfg, sl_path_join(cp, sizeof cp, m->path, "unet/config.json"), ctx);
        if (!st) st = sl_unet_init_shapes(&m->unet, &m->unet_cfg, ctx);
        if (st) goto fail;
        m->has_unet = 1;
        st = sl_weights_open_dir(&w, sl_path_join(p, sizeof p, m->path, "unet"), ctx);
        if (st) goto fail;
    } else {
        /* single file (sl_model_load accepted it, so config_dir is set) */
        st = sl_unet_config_load(&m->unet_cfg, sl_path_join(cp, sizeof cp, o.config_dir, "unet/config.json"), ctx);
        if (!st) st = sl_weights_open_file(&all, m->path, ctx);
        if (st) goto fail;
        have_all = 1;
        sl_weights_view(&w, &all, SL_CKPT_UNET_PREFIX);
        st = sl_unet_init_shapes(&m->unet, &m->unet_cfg, ctx);
        if (!st) {
            m->has_unet = 1;
            SlKeyPair *pairs;
            int n;
            st = sl_unet_ldm_map(&m->unet, &pairs, &n, ctx);
            if (!st) {
                st = sl_weights_set_map(&w, pairs, n, ctx);
                sl_unet_free_map(pairs, n);
            }
        }
        if (st) {
            sl_weights_close(&w);
            goto fail;
        }
    }
    SlNf4Stats s;
    st = sl_unet_load_nf4(&m->unet, &w, which, dq, &s, ctx);
    if (!st) {
        sl_weights_report_unused(&w, 8, ctx);
        log_stats(ctx, &s);
        sl_unet_set_kernels(&m->unet, &o.kernels); /* loaded after sl_model_load applied them to the rest */
    }
    sl_weights_close(&w);
fail:
    if (have_all) sl_weights_close(&all);
    if (st) {
        SlCtx keep = *ctx;
        sl_model_free(m);
        *ctx = keep;
    }
    return st;
}
