/* data.c - training images and captions; see data.h. */
#include "pipeline/data.h"

#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/file.h"
#include "core/image.h"
#include "core/weights.h"

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    static const char *ext[] = {".png", ".jpg", ".jpeg", ".bmp", ".tga", ".gif"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (strcasecmp(dot, ext[i]) == 0) return 1;
    return 0;
}

/* "N_name" -> N (1 if the folder name has no such prefix). */
static int folder_repeats(const char *name, int inherited) {
    char *end;
    long n = strtol(name, &end, 10);
    if (end != name && *end == '_' && n >= 1 && n <= 100000) return (int)n;
    return inherited;
}

typedef struct Found { char **paths; int *repeats; int n, cap; } Found;

static SlStatus walk(Found *f, const char *dir, int repeats, int depth, SlCtx *ctx) {
    if (depth > 32) return sl_fail(ctx, SL_ERR_ARG, "%s: folders nested too deep", dir);
    DIR *d = opendir(dir);
    if (!d) return sl_fail(ctx, SL_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    struct dirent *de;
    SlStatus st = SL_OK;
    while (!st && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[4096];
        sl_path_join(p, sizeof p, dir, de->d_name);
        if (sl_path_is_dir(p)) {
            st = walk(f, p, folder_repeats(de->d_name, repeats), depth + 1, ctx);
        } else if (is_image_name(de->d_name)) {
            if (f->n == f->cap) {
                int cap = f->cap ? 2 * f->cap : 64;
                char **np = realloc(f->paths, (size_t)cap * sizeof(char *));
                int *nr = np ? realloc(f->repeats, (size_t)cap * sizeof(int)) : NULL;
                if (np) f->paths = np;
                if (!np || !nr) { st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory scanning %s", dir); break; }
                f->repeats = nr;
                f->cap = cap;
            }
            f->paths[f->n] = strdup(p);
            f->repeats[f->n] = repeats;
            if (!f->paths[f->n]) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
            else f->n++;
        }
    }
    closedir(d);
    return st;
}

static int cmp_item(const void *a, const void *b) {
    return strcmp(((const SlDataItem *)a)->path, ((const SlDataItem *)b)->path);
}

/* Trims whitespace and collapses newlines into spaces, in place. */
static void clean_caption(char *s) {
    size_t o = 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
        if (c == ' ' && (o == 0 || s[o - 1] == ' ')) continue;
        s[o++] = c;
    }
    while (o && s[o - 1] == ' ') o--;
    s[o] = '\0';
}

static SlStatus read_caption(const char *img_path, const SlDataOpts *o, char **out, SlCtx *ctx) {
    char p[4096];
    snprintf(p, sizeof p, "%s", img_path);
    char *dot = strrchr(p, '.');
    char *text = NULL;
    static const char *exts[] = {".txt", ".caption"};
    for (int i = 0; i < 2 && !text; i++) {
        snprintf(dot, sizeof p - (size_t)(dot - p), "%s", exts[i]);
        if (!sl_path_is_file(p)) continue;
        size_t len = 0;
        SL_TRY(sl_read_file(p, 1u << 20, &text, &len, ctx));
        /* the text would end there silently: a NUL has no place in a caption (hostile or corrupt file) */
        const char *nul = memchr(text, '\0', len);
        if (nul) {
            size_t at = (size_t)(nul - text);
            free(text);
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: caption file has a NUL byte at byte offset %zu; captions are text",
                           p, at);
        }
    }
    if (!text) text = strdup(o->default_caption ? o->default_caption : "");
    if (!text) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    clean_caption(text);
    if (o->trigger && *o->trigger) {
        size_t n = strlen(o->trigger) + strlen(text) + 3;
        char *t = malloc(n);
        if (!t) { free(text); return sl_fail(ctx, SL_ERR_NOMEM, "out of memory"); }
        snprintf(t, n, "%s%s%s", o->trigger, *text ? ", " : "", text);
        free(text);
        text = t;
    }
    *out = text;
    return SL_OK;
}

SlStatus sl_dataset_scan(SlDataset *d, const char *dir, const SlDataOpts *opts, SlCtx *ctx) {
    memset(d, 0, sizeof *d);
    SlDataOpts none = {0};
    const SlDataOpts *o = opts ? opts : &none;
    snprintf(d->root, sizeof d->root, "%s", dir);
    if (!sl_path_is_dir(dir)) return sl_fail(ctx, SL_ERR_IO, "%s: training data folder not found", dir);
    Found f = {0};
    SlStatus st = walk(&f, dir, 1, 0, ctx);
    if (!st && f.n == 0)
        st = sl_fail(ctx, SL_ERR_MISSING, "%s: no images (png, jpg, jpeg, bmp, tga, gif) in this folder or below it", dir);
    if (!st) {
        d->items = calloc((size_t)f.n, sizeof(SlDataItem));
        if (!d->items) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    }
    if (!st) {
        for (int i = 0; i < f.n; i++) {
            d->items[i].path = f.paths[i]; /* ownership moves to the dataset */
            d->items[i].repeats = f.repeats[i];
            f.paths[i] = NULL;
            d->n_samples += f.repeats[i];
        }
        d->n = f.n;
        qsort(d->items, (size_t)d->n, sizeof(SlDataItem), cmp_item);
        int captioned = 0;
        for (int i = 0; !st && i < d->n; i++) {
            st = read_caption(d->items[i].path, o, &d->items[i].caption, ctx);
            captioned += !st && d->items[i].caption[0];
        }
        if (!st && captioned == 0)
            sl_log(ctx, SL_LOG_WARN,
                   "%s: no image has a caption (%d image%s), so training uses empty captions; give each image "
                   "a NAME.txt or NAME.caption beside it (kohya's --caption_extension), or one caption for all "
                   "with --caption, or a trigger word with --trigger",
                   dir, d->n, d->n == 1 ? "" : "s");
    }
    for (int i = 0; i < f.n; i++) free(f.paths[i]);
    free(f.paths);
    free(f.repeats);
    if (st) sl_dataset_free(d);
    return st;
}

void sl_dataset_free(SlDataset *d) {
    for (int i = 0; i < d->n; i++) { free(d->items[i].path); free(d->items[i].caption); }
    free(d->items);
    memset(d, 0, sizeof *d);
}

int sl_dataset_item_of_sample(const SlDataset *d, int64_t s) {
    for (int i = 0; i < d->n; i++) {
        if (s < d->items[i].repeats) return i;
        s -= d->items[i].repeats;
    }
    return d->n - 1;
}

/* An image read as RGB (alpha composited on white) under the pixel limit (<= 0: the default). */
static SlStatus read_rgb(SlImage *img, const char *path, int64_t max_pixels, int64_t *limit, SlCtx *ctx) {
    SlImageReadOpts ro = sl_image_read_opts_default();
    if (max_pixels > 0) ro.max_pixels = max_pixels;
    ro.channels = 3;
    *limit = ro.max_pixels;
    return sl_image_read(img, path, &ro, ctx);
}

/* The end both preparations share: the crop flipped if asked and written as CHW, a failure
 * prefixed with the file, every image freed. Returns st. */
static SlStatus finish_prepared(float *chw, SlImage *img, SlImage *rs, SlImage *cr, int flip, SlStatus st,
                                const char *path, SlCtx *ctx) {
    if (!st) {
        if (flip) sl_image_flip_h(cr);
        sl_image_to_chw(chw, cr, 3);
    }
    if (st) sl_fail_prefix(ctx, "%s", path);
    sl_image_free(img);
    sl_image_free(rs);
    sl_image_free(cr);
    return st;
}

SlStatus sl_data_prepare_image(float *chw, const char *path, int R, float crop_u, int flip, int64_t max_pixels,
                               SlCtx *ctx) {
    SlImage img = {0}, rs = {0}, cr = {0};
    int64_t limit;
    SL_TRY(read_rgb(&img, path, max_pixels, &limit, ctx));
    int w = img.w, h = img.h, nw, nh;
    if (w <= h) { nw = R; nh = (int)((int64_t)h * R / w); if (nh < R) nh = R; }
    else { nh = R; nw = (int)((int64_t)w * R / h); if (nw < R) nw = R; }
    SlStatus st = sl_image_resize(&rs, &img, nw, nh, (nw < w || nh < h) ? SL_RESIZE_AREA : SL_RESIZE_BILINEAR, ctx);
    if (!st) {
        if (crop_u < 0) crop_u = 0;
        if (crop_u > 1) crop_u = 1;
        int x = (int)((nw - R) * crop_u + 0.5f), y = (int)((nh - R) * crop_u + 0.5f);
        st = sl_image_crop(&cr, &rs, nw > R ? x : 0, nh > R ? y : 0, R, R, ctx);
    }
    return finish_prepared(chw, &img, &rs, &cr, flip, st, path, ctx);
}

SlStatus sl_file_hash(const char *path, uint64_t salt, uint64_t *out, SlCtx *ctx) {
    FILE *f = fopen(path, "rb");
    if (!f) return sl_fail(ctx, SL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint64_t h = sl_hash_bytes(&salt, sizeof salt, SL_FNV1A64_OFFSET);
    uint8_t buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) h = sl_hash_bytes(buf, k, h);
    int err = ferror(f);
    fclose(f);
    if (err) return sl_fail(ctx, SL_ERR_IO, "%s: read error", path);
    *out = h;
    return SL_OK;
}

/* ---- aspect-ratio buckets (kohya-ss/sd-scripts library/model_util.py, library/train_util.py) ---- */

static int bucket_cmp(const void *a, const void *b) {
    const SlBucket *x = a, *y = b;
    return x->w != y->w ? (x->w > y->w) - (x->w < y->w) : (x->h > y->h) - (x->h < y->h);
}

static void bucket_add(SlBuckets *bk, int w, int h) {
    for (int i = 0; i < bk->n; i++)
        if (bk->b[i].w == w && bk->b[i].h == h) return;
    bk->b[bk->n++] = (SlBucket){w, h};
}

SlStatus sl_buckets_make(SlBuckets *bk, int R, int min_side, int max_side, int step, SlCtx *ctx) {
    bk->n = 0;
    if (R < 1 || step < 1 || min_side < step || max_side < min_side || max_side > 65536)
        return sl_fail(ctx, SL_ERR_ARG, "buckets: resolution %d, sides %d..%d in steps of %d: need 1 <= step <= min "
                                        "<= max", R, min_side, max_side, step);
    if ((max_side - min_side) / step + 1 > SL_MAX_BUCKETS / 2 - 1)
        return sl_fail(ctx, SL_ERR_ARG, "buckets: sides %d..%d in steps of %d make more than %d buckets", min_side,
                       max_side, step, SL_MAX_BUCKETS);
    const int64_t area = (int64_t)R * R;
    const int sq = (int)(R / step) * step; /* floor(sqrt(R^2) / step) * step */
    if (sq >= step) bucket_add(bk, sq, sq);  /* (kohya adds it unconditionally; a 0 side is no bucket) */
    for (int w = min_side; w <= max_side; w += step) {
        int64_t h = area / w / step * step;
        if (h > max_side) h = max_side;
        if (h >= min_side) {
            bucket_add(bk, w, (int)h);
            bucket_add(bk, (int)h, w);
        }
    }
    qsort(bk->b, (size_t)bk->n, sizeof bk->b[0], bucket_cmp);
    return bk->n ? SL_OK : sl_fail(ctx, SL_ERR_ARG, "buckets: no size fits resolution %d within sides %d..%d", R, min_side, max_side);
}

/* kohya's resized_size: scale so the image covers bucket b, sides rounded half up. */
static void bucket_resize(SlBucket b, int iw, int ih, int *rw, int *rh) {
    const double ar = (double)iw / ih, ar_b = (double)b.w / b.h;
    const double scale = ar > ar_b ? (double)b.h / ih : (double)b.w / iw; /* wider: match the height */
    *rw = (int)(iw * scale + 0.5);
    *rh = (int)(ih * scale + 0.5);
    if (*rw < b.w) *rw = b.w; /* (never by the formula; a guard against rounding) */
    if (*rh < b.h) *rh = b.h;
}

int sl_buckets_select(const SlBuckets *bk, int img_w, int img_h, int *rw, int *rh) {
    assert(bk->n > 0 && img_w > 0 && img_h > 0);
    int best = -1;
    for (int i = 0; i < bk->n && best < 0; i++)
        if (bk->b[i].w == img_w && bk->b[i].h == img_h) best = i;
    if (best < 0) { /* numpy's argmin of |ar_bucket - ar_image|: the first of equal errors */
        const double ar = (double)img_w / img_h;
        double err = INFINITY;
        for (int i = 0; i < bk->n; i++) {
            double e = fabs((double)bk->b[i].w / bk->b[i].h - ar);
            if (e < err) { err = e; best = i; }
        }
    }
    bucket_resize(bk->b[best], img_w, img_h, rw, rh);
    return best;
}

SlStatus sl_data_prepare_image_bucket(float *chw, const char *path, const SlBuckets *bk, int bucket, int flip,
                                      int64_t max_pixels, SlCtx *ctx) {
    assert(bucket >= 0 && bucket < bk->n);
    const SlBucket b = bk->b[bucket];
    SlImage img = {0}, rs = {0}, cr = {0};
    int64_t limit;
    SL_TRY(read_rgb(&img, path, max_pixels, &limit, ctx));
    int nw, nh;
    bucket_resize(b, img.w, img.h, &nw, &nh);
    SlStatus st = SL_OK;
    if ((int64_t)nw * nh > limit) /* a 1x100000 strip would cover its bucket at 24 x 2.4M */
        st = sl_fail(ctx, SL_ERR_FORMAT, "%dx%d image: covering its %dx%d bucket takes %dx%d pixels, above the limit of "
                     "%lld: too extreme an aspect ratio", img.w, img.h, b.w, b.h, nw, nh, (long long)limit);
    if (!st && (nw != img.w || nh != img.h))
        st = sl_image_resize(&rs, &img, nw, nh, (nw < img.w || nh < img.h) ? SL_RESIZE_AREA : SL_RESIZE_BILINEAR, ctx);
    const SlImage *src = (nw != img.w || nh != img.h) ? &rs : &img;
    /* kohya's trim_and_resize_if_required without random_crop: p = trim // 2 */
    if (!st) st = sl_image_crop(&cr, src, (nw - b.w) / 2, (nh - b.h) / 2, b.w, b.h, ctx);
    return finish_prepared(chw, &img, &rs, &cr, flip, st, path, ctx);
}
