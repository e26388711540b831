/* train.c - the trainer; see train.h. */
#include "pipeline/train.h"
#include "pipeline/half.h"
#include "pipeline/quant.h" /* [nf4] */

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/outpath.h"
#include "core/image.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "pipeline/denoise.h"

/* Philox streams, one per purpose: draws never collide between purposes. */
enum {
    STREAM_PERM = 1,       /* per-epoch shuffles: stream + epoch << 8 */
    STREAM_T = 2,          /* timestep of sample g */
    STREAM_NOISE = 3,      /* noise of sample g */
    STREAM_LATENT = 4,     /* latent sampling noise of sample g */
    STREAM_FLIP = 5,
    STREAM_CAPDROP = 6,
    STREAM_OFFSET = 7,     /* noise offset of sample g */
    STREAM_ADAPTER = 8,    /* adapter init */
    STREAM_DROPOUT = 9,
    STREAM_SAMPLE = 10,    /* sample images during training */
    STREAM_BATCHES = 11,   /* buckets: per-epoch order of the batches: stream + epoch << 8 */
};

/* 2: + the data and model hashes; 1 (without them) still resumes, with a warning */
#define STATE_FORMAT "stylora-train-state-2"
#define STATE_FORMAT_1 "stylora-train-state-1"

void sl_train_config_default(SlTrainConfig *c) {
    memset(c, 0, sizeof *c);
    c->steps = 1000;
    c->batch = 1;
    c->grad_accum = 1;
    c->micro_batch = 0;
    c->rank = 8;
    c->alpha = 8;
    c->lr = 1e-3f;
    c->lr_schedule = SL_LR_CONSTANT;
    c->adam = sl_adamw_defaults();
    c->grad_clip = 1.0f;
    c->clip_skip = 1;
    c->flip = 0;
    c->seed = 42;
    c->format = SL_ADAPTER_FMT_KOHYA;
    c->save_dtype = SL_F32;
    c->sample_steps = 20;
    c->sample_cfg = 5.0f;
}

void sl_trainer_state_path(char *buf, size_t n, const char *out) { snprintf(buf, n, "%s.state", out); }

/* ---- settings that shape the run (checked on resume, kept in metadata) ---- */

typedef struct Setting { const char *key; char val[256]; } Setting;

static int settings_of(const SlTrainConfig *c, Setting *s) {
    int n = 0;
#define SET(k, ...) (s[n].key = (k), snprintf(s[n].val, sizeof s[n].val, __VA_ARGS__), n++)
    SET("steps_total", "%lld", (long long)c->steps);
    SET("batch", "%lld", (long long)(c->batch * (c->dp_world > 1 ? c->dp_world : 1))); /* the global batch */
    SET("grad_accum", "%lld", (long long)c->grad_accum);
    SET("resolution", "%lld", (long long)c->resolution);
    SET("rank", "%lld", (long long)c->rank);
    SET("conv_rank", "%lld", (long long)c->conv_rank);
    SET("alpha", "%.9g", c->alpha);
    SET("targets", "%s", c->targets ? c->targets : "attn");
    SET("dora", "%d", c->dora);
    SET("rslora", "%d", c->rslora);
    SET("init", "%s", c->gaussian_init ? "gaussian" : "kaiming");
    SET("dropout", "%.9g", c->dropout);
    SET("full", "%d", c->full);
    if (c->base && strcmp(c->base, "fp32")) SET("base", "%s%s", c->base, c->nf4_double_quant ? "+dq" : ""); /* [nf4] */
    SET("lr", "%.9g", c->lr);
    SET("lr_scheduler", "%s", sl_lr_schedule_name(c->lr_schedule));
    SET("warmup", "%lld", (long long)c->warmup);
    SET("adam", "%.9g,%.9g,%.9g,%.9g", c->adam.beta1, c->adam.beta2, c->adam.eps, c->adam.weight_decay);
    SET("grad_clip", "%.9g", c->grad_clip);
    SET("min_snr_gamma", "%.9g", c->min_snr_gamma);
    SET("noise_offset", "%.9g", c->noise_offset);
    SET("caption_dropout", "%.9g", c->caption_dropout);
    SET("clip_skip", "%d", c->clip_skip);
    SET("trigger", "%s", c->trigger ? c->trigger : "");
    SET("caption", "%s", c->caption ? c->caption : "");
    SET("flip", "%d", c->flip);
    if (c->buckets) /* (only then: a run without buckets keeps its bytes) */
        SET("buckets", "step %lld, sides %lld..%lld", (long long)c->bucket_step, (long long)c->min_bucket,
            (long long)c->max_bucket);
    SET("seed", "%llu", (unsigned long long)c->seed);
#undef SET
    return n;
}

/* ---- caches ---- */

static uint64_t hash_floats(const float *x, size_t n, uint64_t h) { return sl_hash_bytes(x, n * sizeof(float), h); }

static SlStatus cache_read(const char *path, const char *const *names, float *const *dst, const size_t *n, int k,
                           int *hit, SlCtx *ctx) {
    *hit = 0;
    if (!sl_path_is_file(path)) return SL_OK;
    SlStFile f;
    SlCtx quiet;
    sl_ctx_init(&quiet);
    if (sl_st_open(&f, path, &quiet) != SL_OK) {
        sl_log(ctx, SL_LOG_WARN, "cache: ignoring unreadable %s (%s)", path, quiet.msg);
        return SL_OK;
    }
    int ok = 1;
    for (int i = 0; i < k && ok; i++) {
        const SlStEntry *e = sl_st_find(&f, names[i]);
        ok = e && e->dtype == SL_F32 && (size_t)sl_shape_numel(e->ndim, e->shape) == n[i] &&
             sl_st_read_f32(&f, e, dst[i], &quiet) == SL_OK;
    }
    sl_st_close(&f);
    *hit = ok;
    return SL_OK;
}

static SlStatus cache_write(const char *path, const char *const *names, float *const *src, const size_t *n, int k,
                            SlCtx *ctx) {
    SlStWriter w;
    sl_st_writer_init(&w);
    SlStatus st = SL_OK;
    for (int i = 0; i < k && !st; i++) {
        int64_t shape[1] = {(int64_t)n[i]};
        st = sl_st_writer_add(&w, names[i], SL_F32, 1, shape, src[i], ctx);
    }
    if (!st) st = sl_st_writer_save(&w, path, ctx);
    sl_st_writer_free(&w);
    if (st) { /* a cache that cannot be written only costs time */
        sl_log(ctx, SL_LOG_WARN, "cache: %s", ctx->msg);
        sl_ctx_clear(ctx);
    }
    return SL_OK;
}

/* mean/std [nf, C, h, w] of image `path` (with buckets h x w is its bucket's latent
 * size and *bucket its index; else the square, *bucket 0): from the cache folder
 * (*hit) or the VAE (then stored in the folder). Errors (an unreadable image) go
 * into fctx. */
static SlStatus latent_of(SlTrainer *tr, const char *path, uint64_t salt, float *mean, float *std, float *img,
                          float *logvar, int *hit, int *bucket, SlCtx *fctx, SlCtx *ctx) {
    const SlTrainConfig *c = &tr->cfg;
    const int nf = c->flip ? 2 : 1;
    int64_t H = tr->R, W = tr->R;
    SlStatus fst = SL_OK;
    *bucket = 0;
    *hit = 0;
    if (c->buckets) { /* the bucket from the declared size; the cache key holds it */
        int iw = 0, ih = 0, ic = 0, rw, rh;
        fst = sl_image_probe(path, &iw, &ih, &ic, fctx);
        if (!fst && (iw < 1 || ih < 1)) fst = sl_fail(fctx, SL_ERR_FORMAT, "%s: image has no pixels", path);
        if (fst) return fst;
        *bucket = sl_buckets_select(&tr->buckets, iw, ih, &rw, &rh);
        W = tr->buckets.b[*bucket].w;
        H = tr->buckets.b[*bucket].h;
        salt = sl_hash_bytes(&W, sizeof W, sl_hash_bytes(&H, sizeof H, salt));
    }
    const int64_t f = sl_vae_downscale(&tr->model.vae_cfg);
    const size_t nl = (size_t)(tr->C * (H / f) * (W / f));
    uint64_t key;
    fst = sl_file_hash(path, salt, &key, fctx);
    char cpath[4096] = "";
    if (!fst && c->cache_dir) {
        if (c->buckets)
            snprintf(cpath, sizeof cpath, "%s/lat_%016llx_%d_%lldx%lld.safetensors", c->cache_dir, (unsigned long long)key,
                     nf, (long long)W, (long long)H);
        else
            snprintf(cpath, sizeof cpath, "%s/lat_%016llx_%d.safetensors", c->cache_dir, (unsigned long long)key, nf);
        const char *names[2] = {"mean", "std"};
        float *dst[2] = {mean, std};
        size_t n[2] = {nf * nl, nf * nl};
        cache_read(cpath, names, dst, n, 2, hit, ctx);
    }
    for (int fl = 0; !fst && !*hit && fl < nf; fl++) {
        fst = c->buckets ? sl_data_prepare_image_bucket(img, path, &tr->buckets, *bucket, fl, 0, fctx)
                         : sl_data_prepare_image(img, path, (int)tr->R, 0.5f, fl, 0, fctx);
        if (!fst) fst = sl_vae_encode(tr->model.vae, img, 1, H, W, mean + fl * nl, logvar, fctx);
        for (size_t k = 0; !fst && k < nl; k++) std[fl * nl + k] = expf(0.5f * logvar[k]);
    }
    if (!fst && !*hit && cpath[0]) {
        const char *names[2] = {"mean", "std"};
        float *src[2] = {mean, std};
        size_t n[2] = {nf * nl, nf * nl};
        cache_write(cpath, names, src, n, 2, ctx);
    }
    return fst;
}

/* Encodes every image (and its mirror with flip) into the latent cache. */
static SlStatus cache_latents(SlTrainer *tr, SlCtx *ctx) {
    const SlTrainConfig *c = &tr->cfg;
    const int nf = c->flip ? 2 : 1;
    const size_t nl = (size_t)(tr->C * tr->h * tr->w), ni = (size_t)(3 * tr->R * tr->R);
    int64_t nvae;
    float *vw = sl_vae_weight_data(tr->model.vae, &nvae);
    uint64_t salt = hash_floats(vw, (size_t)nvae, SL_FNV1A64_OFFSET);
    salt = sl_hash_bytes(&tr->R, sizeof tr->R, salt);
    tr->valid = malloc((size_t)tr->data.n * sizeof(int));
    tr->item_bucket = malloc((size_t)tr->data.n * sizeof(int));
    tr->lat_mean = sl_alloc((size_t)tr->data.n * nf * nl * sizeof(float));
    tr->lat_std = sl_alloc((size_t)tr->data.n * nf * nl * sizeof(float));
    float *img = sl_alloc(ni * sizeof(float)), *logvar = sl_alloc(nl * sizeof(float));
    if (!tr->valid || !tr->item_bucket || !tr->lat_mean || !tr->lat_std || !img || !logvar) {
        sl_free(img);
        sl_free(logvar);
        return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the latent cache");
    }
    if (c->cache_dir && c->dp_world > 1 && c->cache_sync) {
        /* this rank's share into the folder (slot 0 as scratch); errors are the main loop's to report */
        for (int i = c->dp_rank; i < tr->data.n; i += c->dp_world) {
            SlCtx fctx = *ctx;
            int hit, bucket;
            latent_of(tr, tr->data.items[i].path, salt, tr->lat_mean, tr->lat_std, img, logvar, &hit, &bucket, &fctx, ctx);
        }
        if (c->cache_sync(c->cache_user)) {
            sl_free(img);
            sl_free(logvar);
            return sl_fail(ctx, SL_ERR_INTERRUPTED, "set-up stopped: another rank failed");
        }
    }
    SlProgress bar;
    sl_progress_begin(&bar, "encoding images", tr->data.n, c->progress, c->progress == NULL);
    SlStatus st = SL_OK;
    for (int i = 0; i < tr->data.n && !st; i++) {
        SlCtx fctx = *ctx;
        float *mean = tr->lat_mean + (size_t)tr->n_valid * nf * nl, *std = tr->lat_std + (size_t)tr->n_valid * nf * nl;
        int hit = 0, bucket = 0;
        SlStatus fst = latent_of(tr, tr->data.items[i].path, salt, mean, std, img, logvar, &hit, &bucket, &fctx, ctx);
        if (fst) {
            if (c->stop_on_bad_image || fst == SL_ERR_NUMERIC) { *ctx = fctx; st = fst; break; } /* NUMERIC: the VAE */
            sl_log(ctx, SL_LOG_WARN, "skipping image: %s", fctx.msg);
            continue;
        }
        if (hit) tr->cache_hits++;
        else tr->cache_misses++;
        tr->item_bucket[tr->n_valid] = bucket;
        tr->valid[tr->n_valid++] = i;
        sl_progress_update(&bar, i + 1, NULL);
    }
    sl_progress_end(&bar);
    sl_free(img);
    sl_free(logvar);
    SL_TRY(st);
    if (tr->n_valid == 0) return sl_fail(ctx, SL_ERR_FORMAT, "%s: none of the %d images could be read", tr->data.root, tr->data.n);
    return SL_OK;
}

/* Encodes every valid image's caption, plus the empty caption (last). */
static SlStatus cache_text(SlTrainer *tr, SlCtx *ctx) {
    const size_t nt = (size_t)(tr->T * tr->D);
    tr->text = sl_alloc((size_t)(tr->n_valid + 1) * nt * sizeof(float));
    if (!tr->text) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the text cache");
    const SlClip *clip = tr->model.clip;
    int64_t nw = 0;
    uint64_t salt = SL_FNV1A64_OFFSET;
    for (int64_t l = 0; l < clip->cfg.L; l++) { /* a cheap fingerprint of the text encoder */
        nw = clip->cfg.D * clip->cfg.D;
        salt = hash_floats(clip->params.layers[l].q.w, (size_t)nw, salt);
    }
    salt = hash_floats(clip->params.tok_emb, (size_t)(clip->cfg.V * clip->cfg.D), salt);
    salt = sl_hash_bytes(&tr->cfg.clip_skip, sizeof tr->cfg.clip_skip, salt);
    /* split across ranks (see SlTrainConfig.dp_world): pass 0 encodes this rank's share into the folder */
    const SlTrainConfig *c = &tr->cfg;
    const int split = c->cache_dir && c->dp_world > 1 && c->cache_sync;
    for (int pass = split ? 0 : 1; pass < 2; pass++) {
        if (pass == 1 && split && c->cache_sync(c->cache_user))
            return sl_fail(ctx, SL_ERR_INTERRUPTED, "set-up stopped: another rank failed");
        for (int i = pass == 0 ? c->dp_rank : 0; i <= tr->n_valid; i += pass == 0 ? c->dp_world : 1) {
            const char *cap = i < tr->n_valid ? tr->data.items[tr->valid[i]].caption : "";
            float *dst = tr->text + (size_t)i * nt;
            char cpath[4096] = "";
            int hit = 0;
            if (tr->cfg.cache_dir) {
                uint64_t key = sl_hash_bytes(cap, strlen(cap), salt);
                snprintf(cpath, sizeof cpath, "%s/te_%016llx.safetensors", tr->cfg.cache_dir, (unsigned long long)key);
                const char *names[1] = {"text"};
                float *d[1] = {dst};
                size_t n[1] = {nt};
                cache_read(cpath, names, d, n, 1, &hit, ctx);
            }
            if (hit) { tr->cache_hits += pass; continue; }
            tr->cache_misses += pass;
            const char *pp[1] = {cap};
            SlStatus st = sl_model_encode_prompts(&tr->model, pp, 1, tr->cfg.clip_skip, dst, NULL, ctx);
            if (st && pass == 0) { /* pass 1 reports it (and every rank must reach cache_sync) */
                sl_ctx_clear(ctx);
                continue;
            }
            if (st) {
                if (i < tr->n_valid) sl_fail_prefix(ctx, "caption of %s", tr->data.items[tr->valid[i]].path);
                return st;
            }
            if (cpath[0]) {
                const char *names[1] = {"text"};
                float *s[1] = {dst};
                size_t n[1] = {nt};
                cache_write(cpath, names, s, n, 1, ctx);
            }
        }
    }
    return SL_OK;
}

/* ---- aspect-ratio buckets ---- */

/* Resolves the bucket settings (defaults: see SlTrainConfig) and makes the sizes.
 * m: the pixel multiple the model needs (VAE factor x U-Net downsamplings); every
 * side is a multiple of the step, so the step must be one of m. */
static SlStatus buckets_init(SlTrainer *tr, int64_t m, SlCtx *ctx) {
    SlTrainConfig *c = &tr->cfg;
    const int64_t R = tr->R;
    if (!c->bucket_step) { /* kohya's 64 at 512 and above; R/8 below, so a small model still gets several buckets */
        const int64_t want = R / 8 < 64 ? R / 8 : 64;
        c->bucket_step = want > m ? (want + m - 1) / m * m : m;
    }
    const int64_t st = c->bucket_step;
    if (st % m)
        return sl_fail(ctx, SL_ERR_ARG, "--bucket-step %lld is not a multiple of %lld, the pixel multiple this model's "
                                        "VAE and U-Net need", (long long)st, (long long)m);
    if (!c->min_bucket) c->min_bucket = (R / 2 + st - 1) / st * st;
    if (!c->max_bucket) c->max_bucket = 2 * R / st * st;
    if (c->min_bucket % st || c->max_bucket % st || c->min_bucket > c->max_bucket)
        return sl_fail(ctx, SL_ERR_ARG, "--min-bucket %lld and --max-bucket %lld must be multiples of the bucket step %lld, "
                                        "min <= max", (long long)c->min_bucket, (long long)c->max_bucket, (long long)st);
    if (c->max_bucket > 16 * R)
        return sl_fail(ctx, SL_ERR_ARG, "--max-bucket %lld: at most 16 x the resolution %lld", (long long)c->max_bucket, (long long)R);
    return sl_buckets_make(&tr->buckets, (int)R, (int)c->min_bucket, (int)c->max_bucket, (int)st, ctx);
}

/* Batches per epoch with global batch G: each bucket's samples in runs of G. */
static int64_t bucket_batches(const SlTrainer *tr, int64_t G) {
    int64_t n = 0;
    for (int k = 0; k < tr->buckets.n; k++) n += (tr->bucket_first[k + 1] - tr->bucket_first[k] + G - 1) / G;
    return n;
}

/* n_batches for the current global batch (the world may have changed since init). */
static void bucket_sync(SlTrainer *tr) {
    const int64_t G = tr->cfg.batch * tr->world;
    if (G == tr->batches_g) return;
    tr->n_batches = bucket_batches(tr, G);
    tr->batches_g = G;
    tr->perm_epoch = -1;
}

/* Groups the samples by bucket (bucket_first), sizes the epoch's batch list and
 * logs the bucket counts (as kohya prints them at start). */
static SlStatus buckets_plan_batches(SlTrainer *tr, SlCtx *ctx) {
    const SlTrainConfig *c = &tr->cfg;
    const int nb = tr->buckets.n;
    const int64_t G = c->batch * (c->dp_world > 1 ? c->dp_world : 1); /* the global batch */
    tr->bucket_first = calloc((size_t)nb + 1, sizeof(int64_t));
    int *images = calloc((size_t)nb, sizeof(int));
    if (!tr->bucket_first || !images) {
        free(images);
        return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the buckets");
    }
    for (int i = 0; i < tr->n_valid; i++) {
        images[tr->item_bucket[i]]++;
        tr->bucket_first[tr->item_bucket[i] + 1] += tr->data.items[tr->valid[i]].repeats;
    }
    for (int k = 0; k < nb; k++) tr->bucket_first[k + 1] += tr->bucket_first[k];
    tr->n_batches = bucket_batches(tr, G);
    tr->batches_g = G;
    sl_log(ctx, SL_LOG_INFO, "buckets: %d sizes of about %lldx%lld in steps of %lld px, sides %lld..%lld; %lld batches of %lld "
           "per epoch", nb, (long long)tr->R, (long long)tr->R, (long long)c->bucket_step, (long long)c->min_bucket,
           (long long)c->max_bucket, (long long)tr->n_batches, (long long)G);
    for (int k = 0; k < nb; k++) {
        const int64_t ns = tr->bucket_first[k + 1] - tr->bucket_first[k];
        if (!images[k]) continue;
        if (ns != images[k])
            sl_log(ctx, SL_LOG_INFO, "bucket %dx%d: %d image%s (%lld with repeats)", tr->buckets.b[k].w, tr->buckets.b[k].h,
                   images[k], images[k] == 1 ? "" : "s", (long long)ns);
        else
            sl_log(ctx, SL_LOG_INFO, "bucket %dx%d: %d image%s", tr->buckets.b[k].w, tr->buckets.b[k].h, images[k],
                   images[k] == 1 ? "" : "s");
    }
    free(images);
    const int64_t most = bucket_batches(tr, c->batch); /* (a world of 1: the most batches) */
    tr->batch_bucket = malloc((size_t)most * sizeof(int));
    tr->batch_start = malloc((size_t)most * sizeof(int64_t));
    if (!tr->batch_bucket || !tr->batch_start) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the buckets");
    return SL_OK;
}

/* ---- parameters ---- */

static SlStatus collect_params(SlTrainer *tr, SlCtx *ctx) {
    if (tr->cfg.full) {
        SlUNet *u = &tr->model.unet;
        tr->params = calloc((size_t)u->n_params, sizeof(SlParamRef));
        if (!tr->params) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
        for (int i = 0; i < u->n_params; i++) {
            SlUNetParam *p = &u->params[i];
            tr->params[i] = (SlParamRef){*p->w, *p->g, sl_shape_numel(p->ndim, p->shape), 1, p->name};
        }
        tr->n_params = u->n_params;
        return SL_OK;
    }
    SlAdapter *ad = &tr->adapter;
    tr->params = calloc((size_t)ad->n * 3, sizeof(SlParamRef));
    if (!tr->params) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < ad->n; i++) {
        SlLoraMod *m = &ad->mods[i];
        int64_t na = m->r * m->I * m->k * m->k, nb = m->O * m->r;
        tr->params[tr->n_params++] = (SlParamRef){m->A, m->dA, na, 1, m->name};
        tr->params[tr->n_params++] = (SlParamRef){m->B, m->dB, nb, 1, m->name};
        if (m->mag) tr->params[tr->n_params++] = (SlParamRef){m->mag, m->dmag, m->O, 1, m->name};
    }
    return SL_OK;
}

static void zero_grads(SlTrainer *tr) {
    if (tr->cfg.full) sl_unet_zero_grads(&tr->model.unet);
    else sl_adapter_zero_grads(&tr->adapter);
}

/* ---- checkpoints ---- */

static SlStatus write_state(SlTrainer *tr, SlCtx *ctx) {
    char path[4096], buf[64];
    sl_trainer_state_path(path, sizeof path, tr->cfg.out);
    SlStWriter w;
    sl_st_writer_init(&w);
    SlStatus st = sl_st_writer_meta(&w, "stylora.format", STATE_FORMAT, ctx);
    snprintf(buf, sizeof buf, "%lld", (long long)tr->step);
    if (!st) st = sl_st_writer_meta(&w, "stylora.step", buf, ctx);
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)tr->data_hash);
    if (!st) st = sl_st_writer_meta(&w, "stylora.data_hash", buf, ctx);
    snprintf(buf, sizeof buf, "%d", tr->data.n);
    if (!st) st = sl_st_writer_meta(&w, "stylora.data_images", buf, ctx);
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)tr->model_hash);
    if (!st) st = sl_st_writer_meta(&w, "stylora.model_hash", buf, ctx);
    Setting s[64];
    int ns = settings_of(&tr->cfg, s);
    for (int i = 0; i < ns && !st; i++) {
        char key[128];
        snprintf(key, sizeof key, "stylora.train.%s", s[i].key);
        st = sl_st_writer_meta(&w, key, s[i].val, ctx);
    }
    for (int i = 0; i < tr->n_params && !st; i++) {
        char name[64];
        int64_t shape[1] = {tr->params[i].n};
        snprintf(name, sizeof name, "w.%05d", i);
        st = sl_st_writer_add(&w, name, SL_F32, 1, shape, tr->params[i].w, ctx);
        snprintf(name, sizeof name, "m.%05d", i);
        if (!st) st = sl_st_writer_add(&w, name, SL_F32, 1, shape, tr->opt.m[i], ctx);
        snprintf(name, sizeof name, "v.%05d", i);
        if (!st) st = sl_st_writer_add(&w, name, SL_F32, 1, shape, tr->opt.v[i], ctx);
    }
    if (!st) st = sl_st_writer_save(&w, path, ctx);
    sl_st_writer_free(&w);
    return st;
}

/* The data folder and the base weights against the checkpoint's hashes: a
 * difference is an error naming what changed, or with resume_anyway a warning.
 * A version-1 state has no hashes: a warning that they cannot be checked. */
static SlStatus check_same_inputs(SlTrainer *tr, const SlStFile *f, const char *path, int v1, SlCtx *ctx) {
    const SlTrainConfig *c = &tr->cfg;
    if (v1) {
        sl_log(ctx, SL_LOG_WARN, "%s: an older checkpoint without data and model hashes: cannot check that %s and %s "
                                 "are the ones it was made with", path, c->data, c->model);
        return SL_OK;
    }
    const char *dh = sl_st_meta(f, "stylora.data_hash"), *dn = sl_st_meta(f, "stylora.data_images");
    const char *mh = sl_st_meta(f, "stylora.model_hash");
    if (!dh || !dn || !mh) return sl_fail(ctx, SL_ERR_FORMAT, "%s: the checkpoint lacks its data or model hash", path);
    char now[2][32];
    snprintf(now[0], sizeof now[0], "%016llx", (unsigned long long)tr->data_hash);
    snprintf(now[1], sizeof now[1], "%016llx", (unsigned long long)tr->model_hash);
    char msg[2][2048];
    int n = 0;
    if (strcmp(dh, now[0]) != 0)
        snprintf(msg[n++], sizeof msg[0], "the data folder differs from the one this run started with: %s has %d images "
                                          "(content hash %s), the checkpoint's had %s (hash %s): images, captions or "
                                          "repeat folders changed", c->data, tr->data.n, now[0], dn, dh);
    if (strcmp(mh, now[1]) != 0)
        snprintf(msg[n++], sizeof msg[0], "the base model differs from the one this run started with: %s has weights "
                                          "hash %s, the checkpoint's %s", c->model, now[1], mh);
    for (int i = 0; i < n; i++) {
        if (!c->resume_anyway)
            return sl_fail(ctx, SL_ERR_ARG, "%s: %s; resume with the same %s, or pass --resume-anyway", path, msg[i],
                           strstr(msg[i], "data folder") ? "data" : "model");
        sl_log(ctx, SL_LOG_WARN, "%s: %s; resuming anyway (--resume-anyway)", path, msg[i]);
    }
    return SL_OK;
}

static SlStatus read_state(SlTrainer *tr, SlCtx *ctx) {
    char path[4096];
    sl_trainer_state_path(path, sizeof path, tr->cfg.out);
    if (!sl_path_is_file(path))
        return sl_fail(ctx, SL_ERR_MISSING, "%s: no checkpoint to resume from (it is written next to --out)", path);
    SlStFile f;
    SL_TRY(sl_st_open(&f, path, ctx));
    SlStatus st = SL_OK;
    const char *fmt = sl_st_meta(&f, "stylora.format"), *step = sl_st_meta(&f, "stylora.step");
    const int v1 = fmt && !strcmp(fmt, STATE_FORMAT_1);
    if (!fmt || (strcmp(fmt, STATE_FORMAT) != 0 && !v1) || !step)
        st = sl_fail(ctx, SL_ERR_FORMAT, "%s: not a stylora training checkpoint", path);
    Setting s[64];
    int ns = settings_of(&tr->cfg, s);
    for (int i = 0; i < ns && !st; i++) {
        char key[128];
        snprintf(key, sizeof key, "stylora.train.%s", s[i].key);
        const char *v = sl_st_meta(&f, key);
        if (!v || strcmp(v, s[i].val) != 0)
            st = sl_fail(ctx, SL_ERR_ARG, "%s: the checkpoint was made with %s = %s, this run has %s: resume with the same settings",
                         path, s[i].key, v ? v : "(none)", s[i].val);
    }
    const char *bk = sl_st_meta(&f, "stylora.train.buckets"); /* (a setting only runs with buckets have) */
    if (!st && bk && !tr->cfg.buckets)
        st = sl_fail(ctx, SL_ERR_ARG, "%s: the checkpoint was made with buckets (%s), this run has none: resume with --buckets",
                     path, bk);
    if (!st) st = check_same_inputs(tr, &f, path, v1, ctx);
    for (int i = 0; i < tr->n_params && !st; i++) {
        char name[64];
        int64_t shape[1] = {tr->params[i].n};
        snprintf(name, sizeof name, "w.%05d", i);
        st = sl_st_load_f32(&f, name, 1, shape, tr->params[i].w, ctx);
        snprintf(name, sizeof name, "m.%05d", i);
        if (!st) st = sl_st_load_f32(&f, name, 1, shape, tr->opt.m[i], ctx);
        snprintf(name, sizeof name, "v.%05d", i);
        if (!st) st = sl_st_load_f32(&f, name, 1, shape, tr->opt.v[i], ctx);
    }
    if (!st) {
        tr->step = strtoll(step, NULL, 10);
        tr->opt.step = tr->step;
    }
    sl_st_close(&f);
    return st;
}

static SlStatus set_adapter_meta(SlTrainer *tr, SlCtx *ctx) {
    SlAdapter *ad = &tr->adapter;
    const SlTrainConfig *c = &tr->cfg;
    char v[1536];
#define META(k, ...) (snprintf(v, sizeof v, __VA_ARGS__), sl_adapter_set_meta(ad, k, v, ctx))
    SL_TRY(META("ss_sd_model_name", "%s", c->base_model_name ? c->base_model_name : tr->model.path));
    SL_TRY(META("ss_resolution", "(%lld, %lld)", (long long)tr->R, (long long)tr->R));
    SL_TRY(META("ss_max_train_steps", "%lld", (long long)c->steps));
    SL_TRY(META("ss_steps", "%lld", (long long)tr->step));
    SL_TRY(META("ss_seed", "%llu", (unsigned long long)c->seed));
    SL_TRY(META("ss_learning_rate", "%g", c->lr));
    SL_TRY(META("ss_unet_lr", "%g", c->lr));
    SL_TRY(META("ss_lr_scheduler", "%s", sl_lr_schedule_name(c->lr_schedule)));
    SL_TRY(META("ss_lr_warmup_steps", "%lld", (long long)c->warmup));
    SL_TRY(META("ss_batch_size_per_device", "%lld", (long long)c->batch));
    SL_TRY(META("ss_gradient_accumulation_steps", "%lld", (long long)c->grad_accum));
    SL_TRY(META("ss_num_train_images", "%d", tr->n_valid));
    SL_TRY(META("ss_max_grad_norm", "%g", c->grad_clip));
    SL_TRY(META("ss_min_snr_gamma", "%g", c->min_snr_gamma));
    SL_TRY(META("ss_noise_offset", "%g", c->noise_offset));
    SL_TRY(META("ss_caption_dropout_rate", "%g", c->caption_dropout));
    SL_TRY(META("ss_clip_skip", "%d", c->clip_skip));
    SL_TRY(META("ss_network_dropout", "%g", c->dropout));
    SL_TRY(META("ss_optimizer", "AdamW(betas=(%g, %g), eps=%g, weight_decay=%g)", c->adam.beta1, c->adam.beta2,
                c->adam.eps, c->adam.weight_decay));
    SL_TRY(META("ss_training_comment", "trained with stylora%s%s", c->trigger ? "; trigger: " : "", c->trigger ? c->trigger : ""));
    SL_TRY(META("ss_base_model_version", "%s", tr->D == 1024 ? "sd_v2" : "sd_v1"));
    SL_TRY(META("ss_v2", "%s", tr->D == 1024 ? "True" : "False"));
    SL_TRY(META("ss_flip_aug", "%s", c->flip ? "True" : "False"));
    if (c->buckets) { /* kohya's bucket keys (only with buckets: a run without keeps its bytes) */
        SL_TRY(META("ss_enable_bucket", "True"));
        SL_TRY(META("ss_min_bucket_reso", "%lld", (long long)c->min_bucket));
        SL_TRY(META("ss_max_bucket_reso", "%lld", (long long)c->max_bucket));
        SL_TRY(META("ss_bucket_no_upscale", "False"));
        char info[8192];
        size_t o = (size_t)snprintf(info, sizeof info, "{\"buckets\": {");
        for (int k = 0, id = 0; k < tr->buckets.n && o < sizeof info; k++) {
            const int64_t ns = tr->bucket_first[k + 1] - tr->bucket_first[k];
            if (ns)
                o += (size_t)snprintf(info + o, sizeof info - o, "%s\"%d\": {\"resolution\": [%d, %d], \"count\": %lld}",
                                      id ? ", " : "", id, tr->buckets.b[k].w, tr->buckets.b[k].h, (long long)ns), id++;
        }
        if (o < sizeof info) snprintf(info + o, sizeof info - o, "}}");
        if (o + 2 >= sizeof info) snprintf(info, sizeof info, "{\"buckets\": {}}"); /* (hundreds of buckets: left out) */
        SL_TRY(sl_adapter_set_meta(ad, "ss_bucket_info", info, ctx));
    }
    if (c->trigger) SL_TRY(META("ss_tag_frequency", "{\"%s\": {\"%s\": %d}}", "data", c->trigger, tr->n_valid));
    Setting s[64];
    int ns = settings_of(c, s);
    for (int i = 0; i < ns; i++) {
        char key[128];
        snprintf(key, sizeof key, "stylora.train.%s", s[i].key);
        SL_TRY(sl_adapter_set_meta(ad, key, s[i].val, ctx));
    }
#undef META
    return SL_OK;
}

static SlStatus save_full_unet(SlTrainer *tr, SlCtx *ctx) {
    SlUNet *u = &tr->model.unet;
    SlStWriter w;
    sl_st_writer_init(&w);
    SlStatus st = SL_OK;
    for (int i = 0; i < u->n_params && !st; i++) {
        SlUNetParam *p = &u->params[i];
        st = sl_st_writer_add_f32_as(&w, p->name, tr->cfg.save_dtype, p->ndim, p->shape, *p->w, ctx);
    }
    if (!st) st = sl_st_writer_save(&w, tr->cfg.out, ctx);
    sl_st_writer_free(&w);
    return st;
}

/* SL_ERR_ARG unless tr is a trainer sl_trainer_init made (a zeroed one has no micro-batch). */
static SlStatus trainer_ready(const SlTrainer *tr, SlCtx *ctx) {
    return tr->micro > 0 ? SL_OK : sl_fail(ctx, SL_ERR_ARG, "the trainer is not initialised (sl_trainer_init failed or was not called)");
}

SlStatus sl_trainer_save(SlTrainer *tr, SlCtx *ctx) {
    SL_TRY(trainer_ready(tr, ctx));
    SL_TRY(write_state(tr, ctx));
    if (tr->cfg.full) return save_full_unet(tr, ctx);
    SL_TRY(set_adapter_meta(tr, ctx));
    SlAdapterSaveOpts so = {tr->cfg.format, tr->cfg.save_dtype};
    return sl_adapter_save(&tr->adapter, tr->cfg.out, &so, ctx);
}

/* ---- set-up ---- */

/* The path check every output gets (core/outpath.h), then a real write into the folder:
 * access() cannot see every refusal (quotas, some network and FUSE file systems). */
static SlStatus check_out_writable(const char *out, SlCtx *ctx) {
    if (sl_path_check_writable("output", out, ctx) != SL_OK) {
        sl_fail_prefix(ctx, "checked before training");
        return SL_ERR_IO;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", out);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.stylora-write-test.%ld", dir, (long)getpid());
    FILE *f = fopen(probe, "wb");
    if (!f) return sl_fail(ctx, SL_ERR_IO, "%s: cannot write into %s: %s (checked before training)", out, dir, strerror(errno));
    fclose(f);
    unlink(probe);
    return SL_OK;
}

static SlStatus trainer_init(SlTrainer *tr, const SlTrainConfig *cfg, SlCtx *ctx);

SlStatus sl_trainer_init(SlTrainer *tr, const SlTrainConfig *cfg, SlCtx *ctx) {
    SlStatus st = trainer_init(tr, cfg, ctx);
    if (st) sl_trainer_free(tr); /* nothing half-made survives: the trainer is zeroed */
    return st;
}

static SlStatus trainer_init(SlTrainer *tr, const SlTrainConfig *cfg, SlCtx *ctx) {
    memset(tr, 0, sizeof *tr);
    tr->cfg = *cfg;
    SlTrainConfig *c = &tr->cfg;
    if (!c->model || !c->data || !c->out) return sl_fail(ctx, SL_ERR_ARG, "training needs a model, a data folder and an output path");
    if (c->steps < 1 || c->batch < 1 || c->grad_accum < 1 || c->rank < 1 || !(c->lr > 0) || c->caption_dropout < 0 ||
        c->caption_dropout > 1 || c->dropout < 0 || c->dropout >= 1)
        return sl_fail(ctx, SL_ERR_ARG, "bad training settings: steps, batch, grad accumulation and rank must be >= 1, "
                                        "lr > 0, dropouts in [0,1)");
    if (c->micro_batch < 0 || (c->micro_batch > 0 && c->batch % c->micro_batch != 0))
        return sl_fail(ctx, SL_ERR_ARG, "micro-batch %lld must divide the batch %lld", (long long)c->micro_batch,
                       (long long)c->batch);
    if (c->dp_world > 1 && (c->dp_rank < 0 || c->dp_rank >= c->dp_world))
        return sl_fail(ctx, SL_ERR_ARG, "data-parallel rank %d is not in [0, %d)", c->dp_rank, c->dp_world);
    if (c->alpha <= 0) c->alpha = (float)c->rank;
    SL_TRY(check_out_writable(c->out, ctx));
    if (c->cache_dir && !sl_path_is_dir(c->cache_dir) && mkdir(c->cache_dir, 0755) != 0 &&
        !sl_path_is_dir(c->cache_dir)) /* (another rank may have made it just now) */
        return sl_fail(ctx, SL_ERR_IO, "%s: cannot create the cache folder: %s", c->cache_dir, strerror(errno));
    if (c->dp_world <= 1 || c->dp_rank == 0) { /* only rank 0 writes beside --out */
        SlTrainConfig own = *c;
        if (c->dp_world > 1) own.cache_dir = NULL; /* the other ranks (maybe other hosts) write the cache now */
        sl_train_clean_stale_tmp(&own, ctx);
    }
    /* the data first: an empty folder fails before any model loads */
    SlDataOpts dopts = {c->caption, c->trigger, 0};
    SL_TRY(sl_dataset_scan(&tr->data, c->data, &dopts, ctx));
    sl_log(ctx, SL_LOG_INFO, "data: %d images in %s", tr->data.n, c->data);
    SL_TRY(sl_train_data_hash(&tr->data, &tr->data_hash, ctx));
    const int half = c->base && !strcmp(c->base, "fp16"), bf16 = c->base && !strcmp(c->base, "bf16");
    /* by default a LoRA run holds an F16 checkpoint's U-Net as it is stored (exact, half the
     * memory; pipeline/half.h); --base fp32 forces fp32, --full and DoRA need it. --base bf16:
     * bfloat16 weights, their products on the bf16 kernel (the adapter and AdamW stay fp32) */
    SlModelOpts mo = {.config_dir = c->config_dir, .unet_dense = c->base && !strcmp(c->base, "fp32"), .unet_half = half,
                      .unet_half_if_f16 = !c->base && !c->full && !c->dora, .unet_bf16 = bf16, .kernels = c->kernels};
    const int nf4 = c->base && !strcmp(c->base, "nf4"); /* [nf4] */
    if (c->base && !nf4 && !half && !bf16 && strcmp(c->base, "fp32")) return sl_fail(ctx, SL_ERR_ARG, "base '%s': use fp32, fp16, bf16 or nf4", c->base); /* [nf4] */
    if ((nf4 || half || bf16) && (c->full || c->dora)) return sl_fail(ctx, SL_ERR_UNSUPPORTED, "an %s base is frozen and has no fp32 weight: no --full, no DoRA", nf4 ? "NF4" : bf16 ? "bf16" : "fp16"); /* [nf4] */
    if (nf4) SL_TRY(sl_model_load_nf4(&tr->model, c->model, &mo, c->nf4_layers, c->nf4_double_quant, ctx)); /* [nf4] */
    else SL_TRY(sl_model_load(&tr->model, c->model, &mo, ctx));
    /* after the load, so a path that is no model gets the loader's message */
    SL_TRY(sl_train_model_hash(c->model, &tr->model_hash, ctx));
    SlModel *m = &tr->model;
    const int f = sl_vae_downscale(&m->vae_cfg);
    tr->R = c->resolution ? c->resolution : m->vae_cfg.sample_size;
    const int64_t down = (int64_t)f << (m->unet_cfg.n_blocks - 1);
    if (tr->R % down)
        return sl_fail(ctx, SL_ERR_ARG, "resolution %lld must be a multiple of %lld for this model", (long long)tr->R, (long long)down);
    c->resolution = tr->R;
    if (c->buckets) SL_TRY(buckets_init(tr, down, ctx));
    tr->C = m->vae_cfg.latent_channels;
    tr->h = tr->w = tr->R / f;
    tr->bh = tr->h;
    tr->bw = tr->w;
    tr->T = sl_model_text_len(m);
    tr->D = m->clip_cfg.D;
    if (tr->C != m->unet_cfg.in_channels || tr->D != m->unet_cfg.cross_dim)
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: the VAE/text encoder do not fit the U-Net (latent channels %lld vs %lld, text width %lld vs %lld)",
                       m->path, (long long)tr->C, (long long)m->unet_cfg.in_channels, (long long)tr->D, (long long)m->unet_cfg.cross_dim);
    SL_TRY(cache_latents(tr, ctx));
    SL_TRY(cache_text(tr, ctx));
    sl_log(ctx, SL_LOG_INFO, "caches: %d hits, %d misses; %d of %d images usable", tr->cache_hits, tr->cache_misses,
           tr->n_valid, tr->data.n);
    tr->n_samples = 0;
    for (int i = 0; i < tr->n_valid; i++) tr->n_samples += tr->data.items[tr->valid[i]].repeats;
    if (c->buckets) SL_TRY(buckets_plan_batches(tr, ctx));
    /* the U-Net is planned for the largest batch it will see (a micro-batch, or 2 for guided
     * samples), so the adapter caches planned from it cover every later call */
    tr->micro = c->micro_batch > 0 ? c->micro_batch : c->batch;
    int64_t Bmax = tr->micro > 2 ? tr->micro : 2;
    SL_TRY(sl_unet_plan(&m->unet, Bmax, tr->h, tr->w, tr->T, ctx));
    if (c->full) {
        SL_TRY(sl_unet_enable_grads(&m->unet, ctx));
    } else {
        sl_sites_init(&tr->sites);
        SL_TRY(sl_sites_add_unet(&tr->sites, &m->unet, ctx));
        SlAdapterOpts ao = sl_adapter_opts_default();
        ao.targets = c->targets;
        ao.rank = c->rank;
        ao.conv_rank = c->conv_rank;
        ao.alpha = c->alpha;
        ao.rslora = c->rslora;
        ao.dora = c->dora;
        ao.init = c->gaussian_init ? SL_LORA_INIT_GAUSSIAN : SL_LORA_INIT_KAIMING;
        ao.seed = c->seed ^ ((uint64_t)STREAM_ADAPTER << 56);
        SL_TRY(sl_adapter_create(&tr->adapter, &tr->sites, &ao, ctx));
        SL_TRY(sl_adapter_enable_grads(&tr->adapter, ctx));
        SlAdapter *ads[1] = {&tr->adapter};
        float w1[1] = {1.0f};
        SL_TRY(sl_adapter_set_apply(&tr->set, &tr->sites, ads, w1, 1, c->dropout, c->seed ^ ((uint64_t)STREAM_DROPOUT << 56), ctx));
        sl_adapter_set_training(&tr->set, 1);
    }
    SL_TRY(collect_params(tr, ctx));
    SL_TRY(sl_adamw_init(&tr->opt, tr->params, tr->n_params, &c->adam, ctx));
    if (c->resume) {
        SL_TRY(read_state(tr, ctx));
        sl_log(ctx, SL_LOG_INFO, "resuming at step %lld of %lld", (long long)tr->step, (long long)c->steps);
    }
    /* step buffers */
    const size_t B = (size_t)tr->micro, nl = (size_t)(tr->C * tr->h * tr->w), nt = (size_t)(tr->T * tr->D);
    tr->x0 = sl_alloc(B * nl * sizeof(float));
    tr->eps = sl_alloc(B * nl * sizeof(float));
    tr->xt = sl_alloc(B * nl * sizeof(float));
    tr->target = sl_alloc(B * nl * sizeof(float));
    tr->pred = sl_alloc(B * nl * sizeof(float));
    tr->dout = sl_alloc(B * nl * sizeof(float));
    tr->ehs = sl_alloc(B * nt * sizeof(float));
    tr->tt = sl_alloc(B * sizeof(float));
    tr->snr_w = sl_alloc(B * sizeof(float));
    tr->tint = malloc(B * sizeof(int64_t));
    tr->perm = malloc((size_t)tr->n_samples * sizeof(int64_t));
    tr->perm_epoch = -1;
    if (!tr->x0 || !tr->eps || !tr->xt || !tr->target || !tr->pred || !tr->dout || !tr->ehs || !tr->tt || !tr->snr_w ||
        !tr->tint || !tr->perm)
        return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the training buffers");
    for (int i = 0; i < tr->n_params; i++) tr->n_fused += (size_t)tr->params[i].n;
    if (tr->micro < c->batch && !(tr->acc = sl_alloc(tr->n_fused * sizeof(double))))
        return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the micro-batch gradient sum (%zu doubles)", tr->n_fused);
    tr->world = c->dp_world > 1 ? c->dp_world : 1;
    tr->rank = tr->world > 1 ? c->dp_rank : 0;
    return SL_OK;
}

void sl_trainer_free(SlTrainer *tr) {
    sl_adapter_set_remove(&tr->set); /* (a no-op on the zeroed set of a --full run) */
    sl_adapter_free(&tr->adapter);
    sl_sites_free(&tr->sites);
    sl_adamw_free(&tr->opt);
    free(tr->params);
    sl_dataset_free(&tr->data);
    sl_model_free(&tr->model);
    free(tr->valid);
    free(tr->item_bucket);
    free(tr->bucket_first);
    free(tr->batch_bucket);
    free(tr->batch_start);
    sl_free(tr->lat_mean);
    sl_free(tr->lat_std);
    sl_free(tr->text);
    sl_free(tr->x0); sl_free(tr->eps); sl_free(tr->xt); sl_free(tr->target); sl_free(tr->pred); sl_free(tr->dout);
    sl_free(tr->ehs); sl_free(tr->tt); sl_free(tr->snr_w); sl_free(tr->fused); sl_free(tr->acc);
    free(tr->tint);
    free(tr->perm);
    memset(tr, 0, sizeof *tr);
}

/* ---- one step ---- */

/* The epoch order: a seeded Fisher-Yates shuffle of the samples (repeats included). */
static void epoch_perm(SlTrainer *tr, int64_t epoch) {
    if (tr->perm_epoch == epoch) return;
    int64_t k = 0;
    for (int i = 0; i < tr->n_valid; i++)
        for (int r = 0; r < tr->data.items[tr->valid[i]].repeats; r++) tr->perm[k++] = i;
    SlRng rng = {tr->cfg.seed, STREAM_PERM + ((uint64_t)epoch << 8), 0};
    for (int64_t i = tr->n_samples - 1; i > 0; i--) {
        int64_t j = (int64_t)sl_rng_uniform_int(&rng, (uint32_t)(i + 1));
        int64_t t = tr->perm[i];
        tr->perm[i] = tr->perm[j];
        tr->perm[j] = t;
    }
    tr->perm_epoch = epoch;
}

/* Buckets: the epoch order. Each bucket's samples (repeats included) shuffled in
 * place, cut into runs of the global batch G, and the runs shuffled (kohya's
 * BucketManager.shuffle, then make_buckets' batch list shuffled per epoch). */
static void epoch_batches(SlTrainer *tr, int64_t epoch) {
    if (tr->perm_epoch == epoch) return;
    const int nb = tr->buckets.n;
    const int64_t G = tr->cfg.batch * tr->world;
    SlRng rng = {tr->cfg.seed, STREAM_PERM + ((uint64_t)epoch << 8), 0};
    int64_t e = 0;
    for (int k = 0; k < nb; k++) {
        int64_t *seg = tr->perm + tr->bucket_first[k], n = 0;
        for (int i = 0; i < tr->n_valid; i++)
            if (tr->item_bucket[i] == k)
                for (int r = 0; r < tr->data.items[tr->valid[i]].repeats; r++) seg[n++] = i;
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)sl_rng_uniform_int(&rng, (uint32_t)(i + 1));
            int64_t t = seg[i];
            seg[i] = seg[j];
            seg[j] = t;
        }
        for (int64_t start = 0; start < n; start += G) {
            tr->batch_bucket[e] = k;
            tr->batch_start[e++] = start;
        }
    }
    assert(e == tr->n_batches);
    SlRng brng = {tr->cfg.seed, STREAM_BATCHES + ((uint64_t)epoch << 8), 0};
    for (int64_t i = tr->n_batches - 1; i > 0; i--) {
        int64_t j = (int64_t)sl_rng_uniform_int(&brng, (uint32_t)(i + 1));
        int tb = tr->batch_bucket[i];
        int64_t ts = tr->batch_start[i];
        tr->batch_bucket[i] = tr->batch_bucket[j];
        tr->batch_start[i] = tr->batch_start[j];
        tr->batch_bucket[j] = tb;
        tr->batch_start[j] = ts;
    }
    tr->perm_epoch = epoch;
}

/* The item (valid index) at position j of global batch kb (= step * grad_accum +
 * micro); its global sample index is kb * G + j. */
static int batch_item(SlTrainer *tr, int64_t kb, int64_t j) {
    const int64_t G = tr->cfg.batch * tr->world;
    if (!tr->cfg.buckets) {
        const uint64_t g = (uint64_t)(kb * G + j);
        epoch_perm(tr, (int64_t)(g / (uint64_t)tr->n_samples));
        return (int)tr->perm[g % (uint64_t)tr->n_samples];
    }
    bucket_sync(tr);
    epoch_batches(tr, kb / tr->n_batches);
    const int64_t e = kb % tr->n_batches, k = tr->batch_bucket[e];
    const int64_t nk = tr->bucket_first[k + 1] - tr->bucket_first[k];
    return (int)tr->perm[tr->bucket_first[k] + (tr->batch_start[e] + j) % nk]; /* the last run wraps to the start */
}

int sl_trainer_batch_item(SlTrainer *tr, int64_t kb, int64_t j) {
    assert(tr->micro > 0 && kb >= 0 && j >= 0 && j < tr->cfg.batch * tr->world);
    return batch_item(tr, kb, j);
}

/* Sets bh x bw to the latent size of accumulation micro-batch `micro` of the current
 * step (its bucket's, or the square) and plans the U-Net for it if it is not. */
static SlStatus plan_batch(SlTrainer *tr, int64_t micro, SlCtx *ctx) {
    int64_t h = tr->h, w = tr->w;
    if (tr->cfg.buckets) {
        const int64_t kb = tr->step * tr->cfg.grad_accum + micro, f = sl_vae_downscale(&tr->model.vae_cfg);
        bucket_sync(tr);
        epoch_batches(tr, kb / tr->n_batches);
        const SlBucket b = tr->buckets.b[tr->batch_bucket[kb % tr->n_batches]];
        h = b.h / f;
        w = b.w / f;
    }
    tr->bh = h;
    tr->bw = w;
    SlUNet *u = &tr->model.unet;
    if (u->B != tr->micro || u->H != h || u->W != w) return sl_unet_plan(u, tr->micro, h, w, tr->T, ctx);
    return SL_OK;
}

/* Fills x0, eps, xt, target, ehs, t [count] with the images first..first+count-1 of
 * this rank's batch in accumulation micro-batch `micro` of the current step. */
static SlStatus make_batch(SlTrainer *tr, int64_t micro, int64_t first, int64_t count, SlCtx *ctx) {
    const SlTrainConfig *c = &tr->cfg;
    /* nl: this batch's latent size (bh x bw, the bucket's); nlmax: the square's, the
     * stride of the latent cache and of the random counters (the same without buckets) */
    const int64_t B = c->batch, nl = tr->C * tr->bh * tr->bw, nt = tr->T * tr->D, hw = tr->bh * tr->bw;
    const int64_t nlmax = tr->C * tr->h * tr->w;
    const int nf = c->flip ? 2 : 1;
    const SlSchedule *sched = &tr->model.sched;
    const float sf = (float)tr->model.vae_cfg.scaling_factor, shift = (float)tr->model.vae_cfg.shift_factor;
    for (int64_t b = 0; b < count; b++) {
        /* global sample index: rank r of W takes slots r*B.. of each global batch of W*B */
        const int64_t kb = tr->step * c->grad_accum + micro, j = tr->rank * B + first + b;
        const uint64_t g = (uint64_t)((kb * tr->world + tr->rank) * B + first + b);
        const int item = batch_item(tr, kb, j);
        uint32_t u[2];
        sl_rng_u32(u, 2, c->seed, STREAM_FLIP, 2 * g);
        const int flip = c->flip ? (int)(u[0] & 1) : 0;
        const size_t at = (size_t)item * nf * nlmax + (size_t)flip * nl;
        const float *mean = tr->lat_mean + at, *std = tr->lat_std + at;
        float *x0 = tr->x0 + b * nl, *eps = tr->eps + b * nl;
        sl_rng_normal(x0, nl, c->seed, STREAM_LATENT, g * (uint64_t)nlmax);
        for (int64_t i = 0; i < nl; i++) x0[i] = (mean[i] + std[i] * x0[i] - shift) * sf;
        sl_rng_normal(eps, nl, c->seed, STREAM_NOISE, g * (uint64_t)nlmax);
        if (c->noise_offset > 0) { /* per-channel offset (Crosslabs' noise offset) */
            float off[64];
            int64_t C = tr->C < 64 ? tr->C : 64;
            sl_rng_normal(off, C, c->seed, STREAM_OFFSET, g * 64);
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t i = 0; i < hw; i++) eps[ch * hw + i] += c->noise_offset * off[ch];
        }
        uint32_t tu;
        sl_rng_u32(&tu, 1, c->seed, STREAM_T, g);
        tr->tint[b] = (int64_t)(((uint64_t)tu * (uint64_t)sched->T) >> 32);
        tr->tt[b] = (float)tr->tint[b];
        float cd;
        sl_rng_uniform(&cd, 1, c->seed, STREAM_CAPDROP, g);
        const int empty = c->caption_dropout > 0 && cd < c->caption_dropout;
        memcpy(tr->ehs + b * nt, tr->text + (size_t)(empty ? tr->n_valid : item) * nt, (size_t)nt * sizeof(float));
        tr->snr_w[b] = c->min_snr_gamma > 0 ? sl_schedule_min_snr_weight(sched, tr->tint[b], c->min_snr_gamma, sched->cfg.prediction_type) : 1.0f;
    }
    SL_TRY(sl_schedule_add_noise(tr->xt, tr->x0, tr->eps, tr->tint, (int)count, (size_t)nl, sched, ctx));
    return sl_schedule_target(tr->target, tr->x0, tr->eps, tr->tint, (int)count, (size_t)nl, sched->cfg.prediction_type,
                              sched, ctx);
}

/* Forward and backward of the tr->micro images from slot `first` of accumulation
 * micro-batch `micro`; the gradients accumulate, *loss gets their loss share. */
static SlStatus shard_forward_backward(SlTrainer *tr, int64_t micro, int64_t first, double *loss, SlCtx *ctx) {
    const SlTrainConfig *c = &tr->cfg;
    SlUNet *u = &tr->model.unet;
    if (!c->full) sl_adapter_set_step(&tr->set, (uint64_t)(tr->step * c->grad_accum + micro));
    SL_TRY(plan_batch(tr, micro, ctx));
    const int64_t mb = tr->micro, nl = tr->C * tr->bh * tr->bw;
    SL_TRY(make_batch(tr, micro, first, mb, ctx));
    sl_unet_forward(u, tr->pred, tr->xt, tr->tt, tr->ehs);
    /* loss = mean over the global batch of w_b * mean_i (pred - target)^2, / accum; dL/dpred accordingly */
    const double norm = 1.0 / ((double)c->batch * tr->world * nl * c->grad_accum);
    for (int64_t b = 0; b < mb; b++) {
        double sb = 0;
        const float *p = tr->pred + b * nl, *t = tr->target + b * nl;
        float *d = tr->dout + b * nl;
        for (int64_t i = 0; i < nl; i++) {
            float e = p[i] - t[i];
            sb += (double)e * e;
            d[i] = (float)(2.0 * tr->snr_w[b] * e * norm);
        }
        *loss += tr->snr_w[b] * sb * norm;
    }
    if (!isfinite(*loss))
        return sl_fail(ctx, SL_ERR_NUMERIC, "step %lld: the loss is not finite (the U-Net output went bad); "
                                            "the last checkpoint is kept", (long long)tr->step + 1);
    sl_unet_backward(u, NULL, tr->dout);
    return SL_OK;
}

/* acc[n_fused] = (first) or += every trainable gradient, in the fused order, in double. */
static void grads_to_acc(SlTrainer *tr, int first) {
    size_t o = 0;
    for (int i = 0; i < tr->n_params; i++) {
        const float *g = tr->params[i].g;
        double *a = tr->acc + o;
        if (first)
            for (int64_t k = 0; k < tr->params[i].n; k++) a[k] = g[k];
        else
            for (int64_t k = 0; k < tr->params[i].n; k++) a[k] += g[k];
        o += (size_t)tr->params[i].n;
    }
}

/* every trainable gradient = acc rounded once to float */
static void acc_to_grads(SlTrainer *tr) {
    size_t o = 0;
    for (int i = 0; i < tr->n_params; i++) {
        float *g = tr->params[i].g;
        for (int64_t k = 0; k < tr->params[i].n; k++) g[k] = (float)tr->acc[o + k];
        o += (size_t)tr->params[i].n;
    }
}

SlStatus sl_trainer_step(SlTrainer *tr, SlCtx *ctx) {
    SL_TRY(trainer_ready(tr, ctx));
    const SlTrainConfig *c = &tr->cfg;
    const int64_t mb = tr->micro, shards = c->batch / mb; /* (each shard plans the U-Net for its shape) */
    /* Shards: the batch in micro-batches of mb images, each with all its grad_accum
     * micro-batches accumulated by the backward (float, in the GEMMs), from zeroed
     * gradients; the shards' gradients summed in order in double and rounded once.
     * One shard (the default) is the plain accumulation. The sum is the same as the
     * rank-order all-reduce of dist.h over ranks that each hold one shard, so
     * N ranks x batch b give the bytes of one process with batch N b, micro-batch b. */
    double loss = 0;
    for (int64_t j = 0; j < shards; j++) {
        zero_grads(tr);
        double ls = 0;
        for (int64_t micro = 0; micro < c->grad_accum; micro++)
            SL_TRY(shard_forward_backward(tr, micro, j * mb, &ls, ctx));
        if (shards > 1) grads_to_acc(tr, j == 0);
        loss += ls;
    }
    if (shards > 1) acc_to_grads(tr);
    if (tr->reduce_grads) { /* data-parallel slot: one fused buffer */
        if (!tr->fused && !(tr->fused = sl_alloc(tr->n_fused * sizeof(float))))
            return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the gradient buffer");
        size_t o = 0;
        for (int i = 0; i < tr->n_params; i++) {
            memcpy(tr->fused + o, tr->params[i].g, (size_t)tr->params[i].n * sizeof(float));
            o += (size_t)tr->params[i].n;
        }
        tr->reduce_grads(tr->reduce_user, tr->fused, tr->n_fused);
        o = 0;
        for (int i = 0; i < tr->n_params; i++) {
            memcpy(tr->params[i].g, tr->fused + o, (size_t)tr->params[i].n * sizeof(float));
            o += (size_t)tr->params[i].n;
        }
    }
    int bad = sl_grad_first_nonfinite(tr->params, tr->n_params);
    if (bad >= 0)
        return sl_fail(ctx, SL_ERR_NUMERIC, "step %lld: gradient of '%s' is not finite; the last checkpoint is kept",
                       (long long)tr->step + 1, tr->params[bad].name);
    tr->grad_norm = (float)(c->grad_clip > 0 ? sl_grad_clip(tr->params, tr->n_params, c->grad_clip)
                                             : sl_grad_global_norm(tr->params, tr->n_params));
    tr->lr = sl_lr_at(c->lr_schedule, c->lr, tr->step, c->warmup, c->steps);
    sl_adamw_step(&tr->opt, tr->lr);
    tr->loss = (float)loss;
    tr->loss_share = loss;
    tr->step++;
    return SL_OK;
}

SlStatus sl_trainer_eval_loss(SlTrainer *tr, int n, uint64_t seed, double *loss, SlCtx *ctx) {
    SL_TRY(trainer_ready(tr, ctx));
    SlTrainConfig *c = &tr->cfg;
    SlUNet *u = &tr->model.unet;
    const int64_t B = c->batch, mb = tr->micro;
    const int64_t step = tr->step, perm_epoch = tr->perm_epoch;
    const uint64_t run_seed = c->seed;
    const float capdrop = c->caption_dropout;
    const int training = sl_adapter_set_training(&tr->set, 0);
    c->seed = seed;
    c->caption_dropout = 0;
    tr->perm_epoch = -1;
    double total = 0;
    SlStatus st = SL_OK;
    for (int k = 0; k < n && !st; k++) {
        tr->step = k;
        for (int64_t j = 0; j < B / mb && !st; j++) {
            st = plan_batch(tr, 0, ctx);
            if (!st) st = make_batch(tr, 0, j * mb, mb, ctx);
            if (st) break;
            sl_unet_forward(u, tr->pred, tr->xt, tr->tt, tr->ehs);
            const int64_t nl = tr->C * tr->bh * tr->bw;
            double sum = 0;
            for (int64_t i = 0; i < mb * nl; i++) {
                double e = (double)tr->pred[i] - tr->target[i];
                sum += e * e;
            }
            /* buckets: each batch's mean over its own size (without, the same sum as always) */
            total += c->buckets ? sum * (double)(tr->C * tr->h * tr->w) / (double)nl : sum;
        }
    }
    c->seed = run_seed;
    c->caption_dropout = capdrop;
    sl_adapter_set_training(&tr->set, training);
    tr->step = step;
    tr->perm_epoch = -1;
    (void)perm_epoch;
    *loss = total / ((double)n * B * (tr->C * tr->h * tr->w));
    return st;
}

void sl_trainer_memory(const SlTrainer *tr, size_t *params, size_t *grads, size_t *optim) {
    size_t n = 0;
    for (int i = 0; i < tr->n_params; i++) n += (size_t)tr->params[i].n;
    *params = n * sizeof(float);
    *grads = n * sizeof(float) + (tr->acc ? n * sizeof(double) : 0); /* + the micro-batch sum */
    *optim = sl_adamw_state_bytes(&tr->opt);
}

void sl_trainer_mem_plan(const SlTrainer *tr, SlMemPlan *plan) {
    memset(plan, 0, sizeof *plan);
    if (tr->micro <= 0) return; /* not initialised: no rows */
    const SlTrainConfig *c = &tr->cfg;
    const SlModel *md = &tr->model;
    SlMemParts m;
    memset(&m, 0, sizeof m);
    m.full = c->full;
    m.micro = tr->micro;
    m.plan_batch = tr->micro > 2 ? tr->micro : 2; /* set-up's plan (see memplan.c) */
    m.images = tr->n_valid;
    /* the U-Net arena as it is; its dtype split from a shapes-only twin (the hooks on the
     * real one stop the NF4 planner) */
    /* (an adapter's hook hides the NF4 hook of the linears it wraps from sl_unet_count_nf4) */
    const int nf4 = (c->base && !strcmp(c->base, "nf4")) || sl_unet_count_nf4(&md->unet) > 0;
    const int half = sl_unet_count_bf16(&md->unet) > 0 ? SL_HALF_BF16 : sl_unet_count_half(&md->unet) > 0 ? SL_HALF_FP16 : 0;
    SlUNet twin;
    SlCtx quiet;
    sl_ctx_init(&quiet);
    if (sl_unet_init_shapes(&twin, &md->unet_cfg, &quiet) == SL_OK) {
        sl_mem_unet_split(&twin, nf4, half, c->nf4_layers, c->nf4_double_quant, (double)md->unet.weights.size, &m, &quiet);
        size_t acts = 0;
        if (md->unet.B == m.plan_batch) acts = md->unet.acts.size;
        else if (sl_unet_plan_bytes(&twin, m.plan_batch, tr->h, tr->w, tr->T, &acts, &quiet) != SL_OK) acts = 0;
        m.unet_acts = (double)acts;
        sl_unet_free(&twin);
    }
    if (!nf4 && !half) m.unet_fp32 = (double)md->unet.weights.size;
    m.text_encoder = md->clip ? (double)md->clip->weights.size : 0;
    int64_t nvae = 0;
    if (md->vae) sl_vae_weight_data(md->vae, &nvae);
    m.vae = (double)nvae * sizeof(float);
    size_t pb, gb, ob;
    sl_trainer_memory(tr, &pb, &gb, &ob);
    m.trainable = c->full ? 0 : (double)pb;
    m.grad_sum = tr->acc ? (double)tr->n_fused * sizeof(double) : 0;
    m.grads = (double)gb - m.grad_sum;
    m.optimizer = (double)ob;
    m.adapter_caches = (double)tr->set.cache.size;
    m.step_buffers = sl_mem_step_buffer_bytes(tr->micro, tr->C * tr->h * tr->w, tr->T * tr->D, tr->n_samples);
    m.vae_encode_acts = md->vae ? (double)sl_vae_activation_bytes(md->vae) : 0;
    if (c->sample_every > 0 && c->n_sample_prompts > 0) /* (planned at the first sample) */
        m.vae_decode_acts = (double)sl_vae_activation_plan_bytes(&md->vae_cfg, 1, 1, tr->h, tr->w, 0);
    m.text_encoder_acts = md->clip ? (double)md->clip->acts_arena.size : 0;
    const size_t nl = (size_t)(tr->C * tr->h * tr->w) * (c->flip ? 2 : 1);
    m.latent_cache = 2.0 * (double)sl_align_up((size_t)tr->data.n * nl * sizeof(float)); /* (allocated for every image) */
    m.text_cache = (double)(tr->n_valid + 1) * (double)(tr->T * tr->D) * sizeof(float);
    m.mapped_files = sl_mem_mapped_bytes(c->model);
    sl_mem_plan_from_parts(plan, &m);
}

/* ---- samples during training ---- */

SlStatus sl_trainer_sample(SlTrainer *tr, const char *dir, SlCtx *ctx) {
    SL_TRY(trainer_ready(tr, ctx));
    const SlTrainConfig *c = &tr->cfg;
    if (!c->n_sample_prompts) return SL_OK;
    SlModel *m = &tr->model;
    const size_t nl = (size_t)(tr->C * tr->h * tr->w), nt = (size_t)(tr->T * tr->D);
    const int f = sl_vae_downscale(&m->vae_cfg);
    float *lat = sl_alloc(nl * sizeof(float)), *cond = sl_alloc(nt * sizeof(float)), *unc = sl_alloc(nt * sizeof(float));
    float *img = sl_alloc((size_t)3 * tr->R * tr->R * sizeof(float));
    SlStatus st = (!lat || !cond || !unc || !img) ? sl_fail(ctx, SL_ERR_NOMEM, "out of memory") : SL_OK;
    const char *empty[1] = {""};
    if (!st) st = sl_model_encode_prompts(m, empty, 1, c->clip_skip, unc, NULL, ctx);
    const int was_training = sl_adapter_set_training(&tr->set, 0);
    for (int i = 0; i < c->n_sample_prompts && !st; i++) {
        const char *pp[1] = {c->sample_prompts[i]};
        st = sl_model_encode_prompts(m, pp, 1, c->clip_skip, cond, NULL, ctx);
        sl_rng_normal(lat, (int64_t)nl, c->seed, STREAM_SAMPLE, (uint64_t)i * nl);
        SlDenoiseOpts o = {.steps = c->sample_steps, .guidance = c->sample_cfg, .seed = c->seed + (uint64_t)i};
        o.sampler.kind = SL_SAMPLER_EULER_A;
        o.sampler.karras = -1;
        if (!st) st = sl_denoise(&m->unet, &m->sched, lat, cond, unc, 1, tr->h, tr->w, tr->T, &o, ctx);
        for (size_t k = 0; !st && k < nl; k++) lat[k] = (float)(lat[k] / m->vae_cfg.scaling_factor + m->vae_cfg.shift_factor);
        if (!st) st = sl_vae_decode(m->vae, lat, 1, tr->h, tr->w, img, ctx);
        SlImage out = {0};
        if (!st) st = sl_image_from_chw(&out, img, 3, (int)(tr->h * f), (int)(tr->w * f), ctx);
        if (!st) {
            char path[4096];
            snprintf(path, sizeof path, "%s/sample-step%06lld-%d.png", dir, (long long)tr->step, i);
            SlImageText text[1] = {{(char *)"parameters", (char *)c->sample_prompts[i]}};
            st = sl_image_write_png(&out, path, text, 1, ctx);
        }
        sl_image_free(&out);
    }
    sl_adapter_set_training(&tr->set, was_training);
    sl_free(lat); sl_free(cond); sl_free(unc); sl_free(img);
    /* sampling re-planned the U-Net: plan it back for training */
    if (!st) st = sl_unet_plan(&m->unet, tr->micro > 2 ? tr->micro : 2, tr->h, tr->w, tr->T, ctx);
    return st;
}
