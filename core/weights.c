/* weights.c - named weights over safetensors files; see weights.h. */
#include "weights.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"

const char *sl_path_join(char *buf, size_t n, const char *a, const char *b) {
    size_t la = strlen(a);
    if (la && a[la - 1] == '/') snprintf(buf, n, "%s%s", a, b);
    else snprintf(buf, n, "%s/%s", a, b);
    return buf;
}

int sl_path_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int sl_path_is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

static int is_pickle_name(const char *s) {
    return ends_with(s, ".ckpt") || ends_with(s, ".pt") || ends_with(s, ".pth") || ends_with(s, ".bin");
}

#define PICKLE_HINT SL_ST_PICKLE_HINT

static SlStatus weights_alloc(SlWeights *w, int n, const char *label, SlCtx *ctx) {
    memset(w, 0, sizeof *w);
    snprintf(w->label, sizeof w->label, "%s", label);
    w->files = calloc((size_t)n, sizeof(SlStFile));
    w->used = calloc((size_t)n, sizeof(unsigned char *));
    if (!w->files || !w->used) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", label);
    return SL_OK;
}

static SlStatus weights_add(SlWeights *w, const char *path, SlCtx *ctx) {
    SlStFile *f = &w->files[w->n_files];
    SL_TRY(sl_st_open(f, path, ctx));
    w->used[w->n_files] = calloc((size_t)(f->n ? f->n : 1), 1);
    w->n_files++;
    if (!w->used[w->n_files - 1]) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path);
    return SL_OK;
}

SlStatus sl_weights_open_file(SlWeights *w, const char *path, SlCtx *ctx) {
    if (is_pickle_name(path)) return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s", path, PICKLE_HINT);
    SL_TRY(weights_alloc(w, 1, path, ctx));
    SlStatus st = weights_add(w, path, ctx);
    if (st) sl_weights_close(w);
    return st;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Lists the files of dir ending in suffix, sorted. */
static int list_dir(const char *dir, const char *suffix, char ***out) {
    DIR *d = opendir(dir);
    *out = NULL;
    if (!d) return -1;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !ends_with(de->d_name, suffix)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            char **p = realloc(*out, (size_t)cap * sizeof(char *));
            if (!p) break;
            *out = p;
        }
        (*out)[n] = strdup(de->d_name);
        if ((*out)[n]) n++;
    }
    closedir(d);
    if (n) qsort(*out, (size_t)n, sizeof(char *), name_cmp);
    return n;
}

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

static int is_variant(const char *name) {
    return strstr(name, ".fp16.") || strstr(name, ".bf16.") || strstr(name, ".ema.") || strstr(name, ".non_ema.");
}

SlStatus sl_weights_open_dir(SlWeights *w, const char *dir, SlCtx *ctx) {
    memset(w, 0, sizeof *w);
    if (!sl_path_is_dir(dir)) return sl_fail(ctx, SL_ERR_IO, "%s: not a folder", dir);
    char path[4096];
    char **idx = NULL;
    int nidx = list_dir(dir, ".safetensors.index.json", &idx);
    SlStatus st = SL_OK;
    if (nidx > 0) {
        /* sharded: the index maps tensor -> shard file */
        SlConfig cfg;
        sl_path_join(path, sizeof path, dir, idx[0]);
        free_list(idx, nidx);
        SL_TRY(sl_config_load(&cfg, path, ctx));
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(cfg.root, "weight_map");
        if (!cJSON_IsObject(wm)) {
            sl_config_free(&cfg);
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: no 'weight_map' object", path);
        }
        int n = cJSON_GetArraySize(wm), nu = 0;
        char **names = calloc((size_t)(n ? n : 1), sizeof(char *));
        const cJSON *it;
        cJSON_ArrayForEach(it, wm) {
            if (!cJSON_IsString(it) || strchr(it->valuestring, '/') || !ends_with(it->valuestring, ".safetensors")) {
                st = sl_fail(ctx, SL_ERR_FORMAT, "%s: weight_map entry '%s' is not a .safetensors file name in this folder",
                             path, it->string ? it->string : "");
                break;
            }
            int seen = 0;
            for (int i = 0; i < nu && !seen; i++) seen = strcmp(names[i], it->valuestring) == 0;
            if (!seen) names[nu++] = it->valuestring;
        }
        if (!st) st = weights_alloc(w, nu ? nu : 1, dir, ctx);
        for (int i = 0; !st && i < nu; i++) {
            char fp[4096];
            st = weights_add(w, sl_path_join(fp, sizeof fp, dir, names[i]), ctx);
        }
        free(names);
        sl_config_free(&cfg);
        if (!st && nu == 0) st = sl_fail(ctx, SL_ERR_MISSING, "%s: index lists no shards", dir);
        if (st) sl_weights_close(w);
        return st;
    }
    free_list(idx, nidx);
    char **files = NULL;
    int nf = list_dir(dir, ".safetensors", &files);
    if (nf <= 0) {
        free_list(files, nf);
        const char *pk[] = {".bin", ".ckpt", ".pt", ".pth"};
        for (int i = 0; i < 4; i++) {
            char **l;
            int k = list_dir(dir, pk[i], &l);
            if (k > 0) {
                st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: only %s found; %s", dir, l[0], PICKLE_HINT);
                free_list(l, k);
                return st;
            }
            free_list(l, k);
        }
        return sl_fail(ctx, SL_ERR_MISSING, "%s: no .safetensors weights in this folder", dir);
    }
    int nplain = 0;
    for (int i = 0; i < nf; i++) nplain += !is_variant(files[i]);
    st = weights_alloc(w, nf, dir, ctx);
    for (int i = 0; !st && i < nf; i++) {
        if (nplain && is_variant(files[i])) continue;
        st = weights_add(w, sl_path_join(path, sizeof path, dir, files[i]), ctx);
        if (!nplain) break; /* only variants: take the first */
    }
    free_list(files, nf);
    if (st) sl_weights_close(w);
    return st;
}

void sl_weights_view(SlWeights *w, const SlWeights *src, const char *prefix) {
    memset(w, 0, sizeof *w);
    snprintf(w->label, sizeof w->label, "%s", src->label);
    snprintf(w->prefix, sizeof w->prefix, "%s", prefix ? prefix : "");
    w->n_files = src->n_files;
    w->files = src->files;
    w->used = src->used;
    w->shared_files = 1;
}

void sl_weights_close(SlWeights *w) {
    if (!w) return;
    if (!w->shared_files) {
        for (int i = 0; i < w->n_files; i++) { sl_st_close(&w->files[i]); free(w->used[i]); }
        free(w->files);
        free(w->used);
    }
    for (int i = 0; i < w->n_map; i++) { free(w->map[i].from); free(w->map[i].to); }
    free(w->map);
    memset(w, 0, sizeof *w);
}

static int pair_cmp(const void *a, const void *b) {
    return strcmp(((const SlKeyPair *)a)->from, ((const SlKeyPair *)b)->from);
}

SlStatus sl_weights_set_map(SlWeights *w, const SlKeyPair *pairs, int n, SlCtx *ctx) {
    for (int i = 0; i < w->n_map; i++) { free(w->map[i].from); free(w->map[i].to); }
    free(w->map);
    w->n_map = 0;
    w->map = calloc((size_t)(n ? n : 1), sizeof(SlKeyPair));
    if (!w->map) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        w->map[i].from = strdup(pairs[i].from);
        w->map[i].to = strdup(pairs[i].to);
        w->n_map++;
        if (!w->map[i].from || !w->map[i].to) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    }
    qsort(w->map, (size_t)n, sizeof(SlKeyPair), pair_cmp);
    return SL_OK;
}

static const char *map_name(const SlWeights *w, const char *name) {
    if (!w->n_map) return name;
    SlKeyPair key = {(char *)name, NULL};
    const SlKeyPair *p = bsearch(&key, w->map, (size_t)w->n_map, sizeof(SlKeyPair), pair_cmp);
    return p ? p->to : name;
}

const SlStEntry *sl_weights_find(SlWeights *w, const char *name, const SlStFile **file) {
    char full[1024];
    snprintf(full, sizeof full, "%s%s", w->prefix, map_name(w, name));
    for (int i = 0; i < w->n_files; i++) {
        const SlStEntry *e = sl_st_find(&w->files[i], full);
        if (e) {
            w->used[i][e - w->files[i].entries] = 1;
            if (file) *file = &w->files[i];
            return e;
        }
    }
    return NULL;
}

/* The entry of name with its shape checked, or NULL: missing (an error unless found is
 * given, which then says 0) or misshaped (an error). */
static const SlStEntry *find_shaped(SlWeights *w, const char *name, int ndim, const int64_t *shape,
                                    const SlStFile **file, int *found, SlCtx *ctx) {
    const SlStEntry *e = sl_weights_find(w, name, file);
    const char *mapped = map_name(w, name);
    if (!e) {
        if (found) *found = 0;
        else if (mapped != name || *w->prefix)
            sl_fail(ctx, SL_ERR_MISSING, "%s: missing weight '%s' (looked for '%s%s')", w->label, name, w->prefix, mapped);
        else
            sl_fail(ctx, SL_ERR_MISSING, "%s: missing weight '%s'", w->label, name);
        return NULL;
    }
    if (found) *found = 1;
    int same = e->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = e->shape[i] == shape[i];
    if (!same) {
        char a[128], b[128];
        sl_fail(ctx, SL_ERR_SHAPE, "%s: weight '%s' has shape %s, the model config expects %s", (*file)->path, e->name,
                sl_shape_str(e->ndim, e->shape, a, sizeof a), sl_shape_str(ndim, shape, b, sizeof b));
        return NULL;
    }
    return e;
}

const SlStEntry *sl_weights_find_shaped(SlWeights *w, const char *name, int ndim, const int64_t *shape,
                                        const SlStFile **file, SlCtx *ctx) {
    return find_shaped(w, name, ndim, shape, file, NULL, ctx);
}

static SlStatus load_impl(SlWeights *w, const char *name, int ndim, const int64_t *shape, float *dst, int *found,
                          SlCtx *ctx) {
    const SlStFile *f = NULL;
    const SlStEntry *e = find_shaped(w, name, ndim, shape, &f, found, ctx);
    if (!e) return found && !*found ? SL_OK : ctx->status;
    return sl_st_read_f32(f, e, dst, ctx);
}

SlStatus sl_weights_load(SlWeights *w, const char *name, int ndim, const int64_t *shape, float *dst, SlCtx *ctx) {
    return load_impl(w, name, ndim, shape, dst, NULL, ctx);
}

SlStatus sl_weights_load_opt(SlWeights *w, const char *name, int ndim, const int64_t *shape, float *dst, int *found,
                             SlCtx *ctx) {
    return load_impl(w, name, ndim, shape, dst, found, ctx);
}

SlStatus sl_weights_check_finite(SlWeights *w, const char *component, const char *name, const float *x, size_t n,
                                 size_t offset, SlCtx *ctx) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) && bad++ == 0) first = i;
    if (!bad) return SL_OK;
    const SlStFile *f = NULL;
    const SlStEntry *e = sl_weights_find(w, name, &f);
    const char *key = e && strcmp(e->name, name) != 0 ? e->name : NULL;
    return sl_fail(ctx, SL_ERR_NUMERIC,
                   "%s: weight '%s'%s%s%s in %s has %zu NaN/Inf value%s (the first at element %zu); the file is "
                   "damaged, or was saved from a run that diverged",
                   component, name, key ? " (key '" : "", key ? key : "", key ? "')" : "", f ? f->path : w->label, bad,
                   bad == 1 ? "" : "s", offset + first);
}

int sl_weights_report_unused(const SlWeights *w, int max_list, SlCtx *ctx) {
    int count = 0;
    size_t pl = strlen(w->prefix);
    for (int i = 0; i < w->n_files; i++)
        for (int j = 0; j < w->files[i].n; j++) {
            const char *nm = w->files[i].entries[j].name;
            if (w->used[i][j] || strncmp(nm, w->prefix, pl) != 0) continue;
            if (count < max_list) sl_log(ctx, SL_LOG_WARN, "%s: unused tensor '%s'", w->label, nm);
            count++;
        }
    if (count > max_list) sl_log(ctx, SL_LOG_WARN, "%s: ... %d unused tensors in all", w->label, count);
    return count;
}

SlModelLayout sl_model_layout(const char *path) {
    char buf[4096];
    if (sl_path_is_dir(path)) {
        if (sl_path_is_file(sl_path_join(buf, sizeof buf, path, "model_index.json")) ||
            sl_path_is_dir(sl_path_join(buf, sizeof buf, path, "unet")))
            return SL_LAYOUT_DIFFUSERS;
        if (sl_path_is_file(sl_path_join(buf, sizeof buf, path, "config.json"))) return SL_LAYOUT_COMPONENT;
        return SL_LAYOUT_UNKNOWN;
    }
    if (!ends_with(path, ".safetensors")) return SL_LAYOUT_UNKNOWN;
    SlStFile f;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    if (sl_st_open(&f, path, &ctx) != SL_OK) return SL_LAYOUT_UNKNOWN;
    SlModelLayout l = SL_LAYOUT_UNKNOWN;
    size_t pl = strlen(SL_CKPT_UNET_PREFIX);
    for (int i = 0; i < f.n && l == SL_LAYOUT_UNKNOWN; i++)
        if (strncmp(f.entries[i].name, SL_CKPT_UNET_PREFIX, pl) == 0) l = SL_LAYOUT_SINGLE_FILE;
    sl_st_close(&f);
    return l;
}

const char *sl_model_layout_name(SlModelLayout l) {
    switch (l) {
    case SL_LAYOUT_DIFFUSERS: return "diffusers pipeline folder";
    case SL_LAYOUT_SINGLE_FILE: return "single-file Stable Diffusion checkpoint";
    case SL_LAYOUT_COMPONENT: return "diffusers component folder";
    default: return "unknown";
    }
}
