/* export.c - writing weights out in another layout; see export.h.
 *
 * The LDM names come from the reader's own tables (unet/unet_map.c, vae/vae_load.c), used
 * in reverse. The one reshape is the VAE's attention: diffusers keeps q/k/v/out as Linear
 * [C,C], the original checkpoints as 1x1 convs [C,C,1,1] (diffusers'
 * scripts/convert_diffusers_to_original_stable_diffusion.py, reshape_weight_for_sd).
 */
#include "pipeline/export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_float(SlDType t) { return t == SL_F32 || t == SL_F16 || t == SL_BF16 || t == SL_F64; }

void sl_export_init(SlExport *x) {
    memset(x, 0, sizeof *x);
    sl_st_writer_init(&x->wr);
}

void sl_export_free(SlExport *x) {
    sl_st_writer_free(&x->wr);
    for (int i = 0; i < x->n_bufs; i++) free(x->bufs[i]);
    free(x->bufs);
    memset(x, 0, sizeof *x);
}

SlStatus sl_export_save(SlExport *x, const char *path, SlCtx *ctx) { return sl_st_writer_save(&x->wr, path, ctx); }

static float *keep_buf(SlExport *x, size_t n, SlCtx *ctx) {
    if (x->n_bufs == x->cap_bufs) {
        int cap = x->cap_bufs ? 2 * x->cap_bufs : 64;
        float **b = realloc(x->bufs, (size_t)cap * sizeof *b);
        if (!b) return NULL;
        x->bufs = b;
        x->cap_bufs = cap;
    }
    float *p = malloc(n * sizeof *p + 4);
    if (!p) sl_fail(ctx, SL_ERR_NOMEM, "out of memory exporting weights");
    else x->bufs[x->n_bufs++] = p;
    return p;
}

/* The output name of `name` (map, then prefix) into out; fails when a map lacks it. */
static SlStatus out_name(const SlExportPart *p, const char *name, char *out, size_t n, SlCtx *ctx) {
    const char *to = name;
    if (p->map) {
        to = NULL;
        for (int i = 0; i < p->n_map && !to; i++)
            if (!strcmp(p->map[i].from, name)) to = p->map[i].to;
        if (!to) return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: no single-file name for tensor %s", p->what, name);
    }
    if ((size_t)snprintf(out, n, "%s%s", p->prefix ? p->prefix : "", to) >= n)
        return sl_fail(ctx, SL_ERR_ARG, "%s: tensor name too long: %s", p->what, to);
    return SL_OK;
}

/* Adds one float tensor given as fp32 values, stored as `store`. */
static SlStatus add_f32(SlExport *x, const SlExportPart *p, const char *name, int ndim, const int64_t *shape,
                        const float *data, SlDType store, SlCtx *ctx) {
    char on[512];
    SL_TRY(out_name(p, name, on, sizeof on, ctx));
    int64_t sh[SL_MAX_DIMS];
    memcpy(sh, shape, (size_t)ndim * sizeof *sh);
    if (p->linear_as_conv && ndim == 2) { sh[2] = sh[3] = 1; ndim = 4; }
    return sl_st_writer_add_f32_as(&x->wr, on, store, ndim, sh, data, ctx);
}

static const SlExportTensor *find_repl(const SlExportPart *p, const char *name) {
    for (int i = 0; i < p->n_tensors; i++)
        if (!strcmp(p->tensors[i].name, name)) return &p->tensors[i];
    return NULL;
}

/* Adds the tensors of one source file (replacements first, raw bytes when the dtype stays). */
static SlStatus add_file(SlExport *x, const SlExportPart *p, const SlStFile *f, const char *pre, int *n_repl,
                         SlCtx *ctx) {
    const size_t lp = strlen(pre);
    for (int i = 0; i < f->n; i++) {
        const SlStEntry *e = &f->entries[i];
        if (strncmp(e->name, pre, lp)) continue;
        const char *name = e->name + lp;
        const SlExportTensor *r = find_repl(p, name);
        const SlDType store = p->keep_dtype && e->dtype != SL_F64 ? e->dtype : p->dtype;
        if (r) {
            if (r->ndim != e->ndim || memcmp(r->shape, e->shape, (size_t)e->ndim * sizeof *e->shape))
                return sl_fail(ctx, SL_ERR_SHAPE, "%s: %s: the merged tensor's shape differs from %s's", p->what, name,
                               f->path);
            (*n_repl)++;
            SL_TRY(add_f32(x, p, name, r->ndim, r->shape, r->data, is_float(e->dtype) ? store : SL_F32, ctx));
        } else if (!is_float(e->dtype) || (store == e->dtype && !(p->linear_as_conv && e->ndim == 2))) {
            char on[512];
            SL_TRY(out_name(p, name, on, sizeof on, ctx));
            SL_TRY(sl_st_writer_add(&x->wr, on, e->dtype, e->ndim, e->shape, sl_st_data(f, e), ctx));
        } else {
            float *buf = keep_buf(x, (size_t)sl_shape_numel(e->ndim, e->shape), ctx);
            if (!buf) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory exporting %s", name);
            SL_TRY(sl_st_read_f32(f, e, buf, ctx));
            SL_TRY(add_f32(x, p, name, e->ndim, e->shape, buf, store, ctx));
        }
    }
    return SL_OK;
}

SlStatus sl_export_add(SlExport *x, const SlExportPart *p, SlCtx *ctx) {
    if (!p->keep_dtype && p->dtype != SL_F32 && p->dtype != SL_F16 && p->dtype != SL_BF16)
        return sl_fail(ctx, SL_ERR_ARG, "%s: export dtype must be F32, F16 or BF16", p->what);
    if (!p->src) {
        for (int i = 0; i < p->n_tensors; i++) {
            const SlExportTensor *t = &p->tensors[i];
            SL_TRY(add_f32(x, p, t->name, t->ndim, t->shape, t->data, p->keep_dtype ? SL_F32 : p->dtype, ctx));
        }
        return SL_OK;
    }
    if (p->src->n_map)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s holds renamed (non-diffusers) tensors; export needs diffusers names",
                       p->what, p->src->label);
    int n_repl = 0;
    for (int i = 0; i < p->src->n_files; i++) SL_TRY(add_file(x, p, &p->src->files[i], p->src->prefix, &n_repl, ctx));
    if (n_repl != p->n_tensors)
        return sl_fail(ctx, SL_ERR_MISSING, "%s: %d of %d merged tensors were not found in %s", p->what,
                       p->n_tensors - n_repl, p->n_tensors, p->src->label);
    return SL_OK;
}
