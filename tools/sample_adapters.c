/* sample_adapters.c - a job's adapters in `stylora sample`.
 *
 * Runtime path (default): the U-Net is planned for the job's size (a batch of
 * 2 for guidance), its modules and the text encoder's become adapter sites,
 * and an SlAdapterSet hooks every adapter with its weight. --merge instead
 * adds w * s * B A into the weights (as fast as the base) and keeps copies to
 * restore them. Either way the base weights are bit-exact after the job.
 * Loaded adapter files are kept across jobs (by path), so a prompts file that
 * swaps adapters reads each file once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/half.h"
#include "pipeline/quant.h" /* [nf4] */
#include "sample_jobs.h"
#include "styles/adapter.h"

#define MAX_LOADED 32

typedef struct Loaded {
    char path[1024];
    SlAdapter ad;
} Loaded;

typedef struct AdState {
    SlSites sites;
    int have_sites;
    SlAdapterSet set;
    int set_applied;
    SlMergeState ms;
    int merged;
    int n_loaded;
    Loaded loaded[MAX_LOADED];
} AdState;

static SlStatus get_adapter(AdState *s, const SampleRun *r, const char *path, SlAdapter **out, SlCtx *ctx) {
    for (int i = 0; i < s->n_loaded; i++)
        if (strcmp(s->loaded[i].path, path) == 0) { *out = &s->loaded[i].ad; return SL_OK; }
    if (s->n_loaded == MAX_LOADED) { /* forget the oldest */
        sl_adapter_free(&s->loaded[0].ad);
        memmove(&s->loaded[0], &s->loaded[1], (MAX_LOADED - 1) * sizeof(Loaded));
        s->n_loaded--;
    }
    Loaded *l = &s->loaded[s->n_loaded];
    memset(l, 0, sizeof *l);
    snprintf(l->path, sizeof l->path, "%s", path);
    SlAdapterLoadOpts lo = {r->lora_alpha, 0, NULL};
    SL_TRY(sl_adapter_load(&l->ad, path, &s->sites, &lo, NULL, ctx));
    s->n_loaded++;
    *out = &l->ad;
    return SL_OK;
}

/* [nf4] Merging needs dense weights: the NF4 linears (or 16-bit weights, --base fp16 / bf16)
 * these adapters touch are widened to fp32 (and stay so for later jobs; the others stay). */
static SlStatus dequantize_targets(SlModel *m, SlAdapter *const *ads, int n, SlCtx *ctx) {
    const int n16 = sl_unet_count_half(&m->unet);
    const char *tag = sl_unet_count_bf16(&m->unet) ? "bf16" : "fp16";
    if (!sl_unet_count_nf4(&m->unet) && !n16) return SL_OK;
    int total = 0, k = 0;
    for (int i = 0; i < n; i++) total += ads[i]->n;
    const char **names = malloc(((size_t)total + 1) * sizeof *names);
    if (!names) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        for (int q = 0; q < ads[i]->n; q++)
            if (!strncmp(ads[i]->mods[q].name, "unet.", 5)) names[k++] = ads[i]->mods[q].name + 5;
    const int before = sl_unet_count_nf4(&m->unet);
    SlStatus st = k && before ? sl_unet_dequantize_nf4_modules(&m->unet, names, k, ctx) : SL_OK;
    if (!st && k && n16) st = sl_unet_half_to_dense(&m->unet, names, k, ctx);
    free(names);
    if (!st && n16 > sl_unet_count_half(&m->unet))
        sl_log(ctx, SL_LOG_INFO, "--merge on an %s base: %d weights widened to fp32 for merging (%d stay %s)", tag,
               n16 - sl_unet_count_half(&m->unet), sl_unet_count_half(&m->unet), tag);
    const int after = sl_unet_count_nf4(&m->unet);
    if (!st && after < before)
        sl_log(ctx, SL_LOG_WARN, "--merge on an NF4 base: %d NF4 linears dequantized to fp32 for merging (%d stay NF4)",
               before - after, after);
    return st;
}

SlStatus sample_adapters_apply(SampleRun *r, SlModel *m, const SampleJob *j, SlCtx *ctx) {
    if (!j->n_lora) return SL_OK;
    AdState *s = r->adapters;
    if (!s) {
        s = r->adapters = calloc(1, sizeof *s);
        if (!s) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    }
    /* sites for this job's size: the U-Net planned for the guided batch */
    const int64_t f = sl_vae_downscale(&m->vae_cfg), T = sl_model_text_len(m);
    SL_TRY(sl_unet_plan(&m->unet, 2, j->height / f, j->width / f, T, ctx));
    SL_TRY(sl_clip_reserve(m->clip, 1, (int)T, ctx));
    if (s->have_sites) sl_sites_free(&s->sites);
    sl_sites_init(&s->sites);
    s->have_sites = 1;
    SL_TRY(sl_sites_add_unet(&s->sites, &m->unet, ctx));
    SL_TRY(sl_sites_add_clip(&s->sites, m->clip, "text_encoder", ctx));
    SlAdapter *ads[SAMPLE_MAX_LORA];
    float w[SAMPLE_MAX_LORA];
    for (int i = 0; i < j->n_lora; i++) {
        SlStatus st = get_adapter(s, r, j->lora[i].path, &ads[i], ctx);
        if (st) { sl_fail_prefix(ctx, "%s", j->where); return st; }
        w[i] = j->lora[i].weight;
    }
    if (r->merge) {
        SL_TRY(dequantize_targets(m, ads, j->n_lora, ctx));
        memset(&s->ms, 0, sizeof s->ms);
        SL_TRY(sl_adapter_merge(&s->ms, &s->sites, ads, w, j->n_lora, ctx));
        s->merged = 1;
    } else {
        SL_TRY(sl_adapter_set_apply(&s->set, &s->sites, ads, w, j->n_lora, 0.0f, 0, ctx));
        s->set_applied = 1;
    }
    return SL_OK;
}

SlStatus sample_adapters_remove(SampleRun *r, SlModel *m, SlCtx *ctx) {
    (void)m;
    (void)ctx;
    AdState *s = r->adapters;
    if (!s) return SL_OK;
    if (s->merged) sl_adapter_unmerge(&s->ms);
    if (s->set_applied) sl_adapter_set_remove(&s->set);
    s->merged = s->set_applied = 0;
    return SL_OK;
}

void sample_run_free(SampleRun *r, SlModel *m) {
    AdState *s = r->adapters;
    if (!s) return;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    sample_adapters_remove(r, m, &ctx);
    for (int i = 0; i < s->n_loaded; i++) sl_adapter_free(&s->loaded[i].ad);
    if (s->have_sites) sl_sites_free(&s->sites);
    free(s);
    r->adapters = NULL;
}
