/* adapter_set.c - sites, targets, adapter creation, the active set, merge / unmerge.
 *
 * Memory: an adapter's A, B, m live in one "adapter weights" arena planned from the
 * matched sites; its gradients in a separate "adapter grads" arena; the hook caches
 * of an applied set in one "adapter caches" arena planned from the sites' rows.
 * Merge keeps malloc'd copies of the touched weights (the exact unmerge scheme).
 *
 * Not here: the hook arithmetic (lora.c), files (adapter_io.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_internal.h"
#include "core/rng.h"
#include "textenc/clip.h"
#include "unet/unet.h"

/* ---- sites ---- */

void sl_sites_init(SlSites *s) { memset(s, 0, sizeof *s); }

void sl_sites_free(SlSites *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

SlStatus sl_sites_add(SlSites *s, const char *name, SlLinear *lin, SlConv2d *conv, int64_t rows, SlCtx *ctx) {
    if (!name || (!lin == !conv)) return sl_fail(ctx, SL_ERR_ARG, "site %s: give exactly one of linear / conv", name ? name : "(null)");
    if (strlen(name) >= SL_ADAPTER_NAME_MAX) return sl_fail(ctx, SL_ERR_ARG, "site name too long: %s", name);
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        SlSite *v = realloc(s->v, sizeof *v * (size_t)cap);
        if (!v) return sl_fail(ctx, SL_ERR_NOMEM, "sites: out of memory");
        s->v = v;
        s->cap = cap;
    }
    SlSite *t = &s->v[s->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->lin = lin;
    t->conv = conv;
    t->rows = rows;
    return SL_OK;
}

SlStatus sl_sites_add_unet(SlSites *s, SlUNet *u, SlCtx *ctx) {
    if (u->B <= 0) return sl_fail(ctx, SL_ERR_ARG, "adapter sites: plan the U-Net (sl_unet_plan) first");
    char name[SL_ADAPTER_NAME_MAX];
    for (int i = 0; i < u->n_mods; i++) {
        const SlUNetModRef *m = &u->mods[i];
        snprintf(name, sizeof name, "unet.%s", m->name);
        int64_t rows = m->lin ? m->rows : u->B * u->H * u->W;
        SL_TRY(sl_sites_add(s, name, m->lin, m->conv, rows, ctx));
    }
    return SL_OK;
}

SlStatus sl_sites_add_clip(SlSites *s, SlClip *m, const char *ns, SlCtx *ctx) {
    if (m->cap_B <= 0 || m->cap_T <= 0)
        return sl_fail(ctx, SL_ERR_ARG, "adapter sites: reserve the text encoder (sl_clip_reserve) first");
    if (!ns) ns = "text_encoder";
    const int64_t rows = (int64_t)m->cap_B * m->cap_T;
    char name[SL_ADAPTER_NAME_MAX];
    static const char *const parts[6] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "self_attn.out_proj", "mlp.fc1", "mlp.fc2"};
    for (int64_t l = 0; l < m->cfg.L; l++) {
        SlClipLayer *L = &m->params.layers[l];
        SlLinear *lins[6] = {&L->q, &L->k, &L->v, &L->o, &L->fc1, &L->fc2};
        for (int p = 0; p < 6; p++) {
            snprintf(name, sizeof name, "%s.text_model.encoder.layers.%lld.%s", ns, (long long)l, parts[p]);
            SL_TRY(sl_sites_add(s, name, lins[p], NULL, rows, ctx));
        }
    }
    return SL_OK;
}

int sl_sites_find(const SlSites *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i].name, name)) return i;
    return -1;
}

/* ---- target patterns ---- */

static int glob_match(const char *p, const char *s) {
    for (; *p; p++, s++) {
        if (*p == '*') {
            while (p[1] == '*') p++;
            if (!p[1]) return 1;
            for (; *s; s++)
                if (glob_match(p + 1, s)) return 1;
            return 0;
        }
        if (!*s || (*p != '?' && *p != *s)) return 0;
    }
    return *s == 0;
}

int sl_adapter_pattern_match(const char *pattern, const char *name) {
    if (strpbrk(pattern, "*?")) return glob_match(pattern, name);
    size_t lp = strlen(pattern), ln = strlen(name);
    if (ln == lp) return !strcmp(pattern, name);
    return ln > lp && name[ln - lp - 1] == '.' && !strcmp(name + ln - lp, pattern);
}

/* Presets (data): name -> pattern list. */
static const struct { const char *name, *patterns; } k_presets[] = {
    {"attn", "to_q,to_k,to_v,to_out.0"},
    {"proj", "proj_in,proj_out"},
    {"ff", "ff.net.0.proj,ff.net.2"},
    {"resnet", "unet.*resnets.*.conv1,unet.*resnets.*.conv2"},
    {"te", "text_encoder*.q_proj,text_encoder*.k_proj,text_encoder*.v_proj,text_encoder*.out_proj,"
           "text_encoder*.fc1,text_encoder*.fc2"},
};

static int match_list(const char *list, const char *name, int depth) {
    char buf[256];
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len && len < sizeof buf) {
            memcpy(buf, p, len);
            buf[len] = 0;
            int preset = 0;
            for (size_t i = 0; depth == 0 && i < sizeof k_presets / sizeof k_presets[0]; i++)
                if (!strcmp(buf, k_presets[i].name)) {
                    preset = 1;
                    if (match_list(k_presets[i].patterns, name, 1)) return 1;
                }
            if (!preset && sl_adapter_pattern_match(buf, name)) return 1;
        }
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

/* ---- adapters ---- */

int sl_adapter_keep_ns(SlAdapter *ad, const char *ns) {
    const size_t ln = strlen(ns);
    int j = 0;
    for (int i = 0; i < ad->n; i++)
        if (!strncmp(ad->mods[i].name, ns, ln) && ad->mods[i].name[ln] == '.') ad->mods[j++] = ad->mods[i];
    int dropped = ad->n - j;
    ad->n = j;
    return dropped;
}

SlAdapterOpts sl_adapter_opts_default(void) {
    SlAdapterOpts o;
    memset(&o, 0, sizeof o);
    o.targets = "attn";
    o.rank = 4;
    o.alpha = 4;
    o.seed = 0;
    return o;
}

float sl_lora_scale(const SlAdapter *ad, const SlLoraMod *lm) {
    return ad->rslora ? lm->alpha / sqrtf((float)lm->r) : lm->alpha / (float)lm->r;
}

int64_t sl_adapter_n_params(const SlAdapter *ad) {
    int64_t n = 0;
    for (int i = 0; i < ad->n; i++) {
        const SlLoraMod *lm = &ad->mods[i];
        n += lm->r * lm->I * lm->k * lm->k + lm->O * lm->r + (lm->mag ? lm->O : 0);
    }
    return n;
}

SlStatus sl_adapter_create(SlAdapter *ad, const SlSites *sites, const SlAdapterOpts *opts, SlCtx *ctx) {
    memset(ad, 0, sizeof *ad);
    snprintf(ad->label, sizeof ad->label, "new adapter");
    const char *targets = opts->targets ? opts->targets : "attn";
    if (opts->rank < 1) return sl_fail(ctx, SL_ERR_ARG, "adapter: rank %lld < 1", (long long)opts->rank);
    int n = 0;
    for (int i = 0; i < sites->n; i++) n += match_list(targets, sites->v[i].name, 0);
    if (!n) return sl_fail(ctx, SL_ERR_ARG, "adapter targets \"%s\" match no module", targets);
    ad->mods = calloc((size_t)n, sizeof *ad->mods);
    if (!ad->mods) return sl_fail(ctx, SL_ERR_NOMEM, "adapter: out of memory");
    ad->rslora = opts->rslora;
    ad->dora = opts->dora;
    size_t bytes = 0;
    int j = 0;
    for (int i = 0; i < sites->n; i++) {
        const SlSite *st = &sites->v[i];
        if (!match_list(targets, st->name, 0)) continue;
        SlLoraMod *lm = &ad->mods[j++];
        snprintf(lm->name, sizeof lm->name, "%s", st->name);
        if (st->conv) {
            if (opts->dora) {
                sl_adapter_free(ad);
                return sl_fail(ctx, SL_ERR_UNSUPPORTED, "adapter: DoRA on conv module %s is not supported", st->name);
            }
            lm->conv = 1;
            lm->I = st->conv->Ci;
            lm->O = st->conv->Co;
            lm->k = st->conv->k;
            lm->r = opts->conv_rank > 0 ? opts->conv_rank : opts->rank;
        } else {
            lm->conv1x1 = st->lin->conv1x1;
            lm->I = st->lin->I;
            lm->O = st->lin->O;
            lm->k = 1;
            lm->r = opts->rank;
        }
        lm->alpha = opts->alpha > 0 ? opts->alpha : (float)lm->r;
        bytes += sl_align_up(sizeof(float) * (size_t)(lm->r * lm->I * lm->k * lm->k));
        bytes += sl_align_up(sizeof(float) * (size_t)(lm->O * lm->r));
        if (opts->dora) bytes += sl_align_up(sizeof(float) * (size_t)lm->O);
    }
    ad->n = n;
    SlStatus st = sl_arena_init(&ad->params, bytes, "adapter weights", ctx);
    if (st != SL_OK) {
        sl_adapter_free(ad);
        return st;
    }
    for (int k = 0; k < n; k++) {
        SlLoraMod *lm = &ad->mods[k];
        const int64_t fan_in = lm->I * lm->k * lm->k, na = lm->r * fan_in;
        lm->A = sl_arena_take_f32(&ad->params, na);
        lm->B = sl_arena_take_f32(&ad->params, lm->O * lm->r);   /* zero: the start is the base */
        if (opts->init == SL_LORA_INIT_GAUSSIAN) {
            sl_rng_normal(lm->A, na, opts->seed, (uint64_t)k, 0);
            for (int64_t i = 0; i < na; i++) lm->A[i] *= 1.0f / (float)lm->r;
        } else {
            const float bound = 1.0f / sqrtf((float)fan_in);
            sl_rng_uniform(lm->A, na, opts->seed, (uint64_t)k, 0);
            for (int64_t i = 0; i < na; i++) lm->A[i] = (2.0f * lm->A[i] - 1.0f) * bound;
        }
        if (opts->dora) {
            const SlSite *s = &sites->v[sl_sites_find(sites, lm->name)];
            if (!s->lin->w) { /* the message names the module before the adapter (and lm) is freed */
                sl_fail(ctx, SL_ERR_UNSUPPORTED, "adapter: DoRA on %s needs a dense base weight", lm->name);
                sl_adapter_free(ad);
                return SL_ERR_UNSUPPORTED;
            }
            lm->mag = sl_arena_take_f32(&ad->params, lm->O);
            for (int64_t o = 0; o < lm->O; o++) {
                double ss = 0;
                for (int64_t i = 0; i < lm->I; i++) ss += (double)s->lin->w[o * lm->I + i] * s->lin->w[o * lm->I + i];
                lm->mag[o] = (float)sqrt(ss);
            }
        }
    }
    return SL_OK;
}

void sl_adapter_free(SlAdapter *ad) {
    if (!ad) return;
    free(ad->mods);
    sl_arena_free(&ad->params);
    sl_arena_free(&ad->grads);
    for (int i = 0; i < ad->n_meta; i++) {
        free(ad->meta_keys[i]);
        free(ad->meta_vals[i]);
    }
    free(ad->meta_keys);
    free(ad->meta_vals);
    memset(ad, 0, sizeof *ad);
}

SlStatus sl_adapter_enable_grads(SlAdapter *ad, SlCtx *ctx) {
    if (ad->grads.base) return SL_OK;
    size_t bytes = 0;
    for (int i = 0; i < ad->n; i++) {
        const SlLoraMod *lm = &ad->mods[i];
        bytes += sl_align_up(sizeof(float) * (size_t)(lm->r * lm->I * lm->k * lm->k));
        bytes += sl_align_up(sizeof(float) * (size_t)(lm->O * lm->r));
        if (lm->mag) bytes += sl_align_up(sizeof(float) * (size_t)lm->O);
    }
    SL_TRY(sl_arena_init(&ad->grads, bytes, "adapter grads", ctx));
    for (int i = 0; i < ad->n; i++) {
        SlLoraMod *lm = &ad->mods[i];
        lm->dA = sl_arena_take_f32(&ad->grads, lm->r * lm->I * lm->k * lm->k);
        lm->dB = sl_arena_take_f32(&ad->grads, lm->O * lm->r);
        if (lm->mag) lm->dmag = sl_arena_take_f32(&ad->grads, lm->O);
    }
    return SL_OK;
}

void sl_adapter_zero_grads(SlAdapter *ad) {
    if (ad->grads.base) memset(ad->grads.base, 0, ad->grads.size);
}

SlStatus sl_adapter_set_meta(SlAdapter *ad, const char *key, const char *val, SlCtx *ctx) {
    for (int i = 0; i < ad->n_meta; i++)
        if (!strcmp(ad->meta_keys[i], key)) {
            char *v = strdup(val);
            if (!v) return sl_fail(ctx, SL_ERR_NOMEM, "adapter metadata: out of memory");
            free(ad->meta_vals[i]);
            ad->meta_vals[i] = v;
            return SL_OK;
        }
    char **k = realloc(ad->meta_keys, sizeof *k * (size_t)(ad->n_meta + 1));
    if (k) ad->meta_keys = k;
    char **v = realloc(ad->meta_vals, sizeof *v * (size_t)(ad->n_meta + 1));
    if (v) ad->meta_vals = v;
    if (!k || !v) return sl_fail(ctx, SL_ERR_NOMEM, "adapter metadata: out of memory");
    ad->meta_keys[ad->n_meta] = strdup(key);
    ad->meta_vals[ad->n_meta] = strdup(val);
    if (!ad->meta_keys[ad->n_meta] || !ad->meta_vals[ad->n_meta]) {
        free(ad->meta_keys[ad->n_meta]);
        free(ad->meta_vals[ad->n_meta]);
        return sl_fail(ctx, SL_ERR_NOMEM, "adapter metadata: out of memory");
    }
    ad->n_meta++;
    return SL_OK;
}

const char *sl_adapter_get_meta(const SlAdapter *ad, const char *key) {
    for (int i = 0; i < ad->n_meta; i++)
        if (!strcmp(ad->meta_keys[i], key)) return ad->meta_vals[i];
    return NULL;
}

/* 1 if lm fits site st; otherwise writes why into why. */
static int mod_fits(const SlLoraMod *lm, const SlSite *st, char *why, size_t n) {
    if (st->conv) {
        const SlConv2d *c = st->conv;
        /* a LoHa conv read without the model is a flat delta [Co, Ci*k*k]: the conv's own
         * layout, so merging fits (the hooks refuse it, sl_adapter_set_apply) */
        if (lm->lyco && !lm->conv && lm->k == 1 && lm->O == c->Co && lm->I == c->Ci * c->k * c->k) return 1;
        /* a 1x1 conv update read without the model looks like a conv1x1 linear: same layout */
        if (!(lm->conv || (lm->conv1x1 && c->k == 1)) || lm->I != c->Ci || lm->O != c->Co || lm->k != c->k) {
            snprintf(why, n, "%s: adapter [%s in %lld out %lld k %lld] vs conv [in %lld out %lld k %lld]", lm->name,
                     lm->conv ? "conv" : "linear", (long long)lm->I, (long long)lm->O, (long long)lm->k,
                     (long long)c->Ci, (long long)c->Co, (long long)c->k);
            return 0;
        }
        return 1;
    }
    const SlLinear *l = st->lin;
    if (lm->conv || lm->I != l->I || lm->O != l->O) {
        snprintf(why, n, "%s: adapter [%s in %lld out %lld k %lld] vs linear [in %lld out %lld]", lm->name,
                 lm->conv ? "conv" : "linear", (long long)lm->I, (long long)lm->O, (long long)lm->k, (long long)l->I,
                 (long long)l->O);
        return 0;
    }
    return 1;
}

SlStatus sl_adapter_check(const SlAdapter *ad, const SlSites *sites, int lenient, int *n_matched, SlCtx *ctx) {
    char list[SL_MSG_MAX / 2] = "", why[400];
    size_t used = 0;
    int bad = 0, ok = 0;
    for (int i = 0; i < ad->n; i++) {
        const SlLoraMod *lm = &ad->mods[i];
        int si = sl_sites_find(sites, lm->name);
        if (si < 0)
            snprintf(why, sizeof why, "%s: no such module", lm->name);
        else if (mod_fits(lm, &sites->v[si], why, sizeof why)) {
            ok++;
            continue;
        }
        bad++;
        if (lenient) sl_log(ctx, SL_LOG_WARN, "%s: skipped %s", ad->label, why);
        if (used + strlen(why) + 3 < sizeof list) used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? "; " : "", why);
    }
    if (n_matched) *n_matched = ok;
    if (bad && !lenient)
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: %d of %d adapter modules do not fit the model: %s", ad->label, bad, ad->n, list);
    return SL_OK;
}

/* ---- the active set ---- */

void sl_adapter_set_remove(SlAdapterSet *set) {
    if (!set) return;
    for (int i = set->n_hooks - 1; i >= 0; i--) {
        SlSiteHook *sh = &set->hooks[i];
        const SlSite *st = &set->sites->v[sh->site];
        if (st->lin) st->lin->hook = sh->prev;
        else st->conv->hook = sh->prev;
    }
    free(set->hooks);
    sl_arena_free(&set->cache);
    memset(set, 0, sizeof *set);
}

void sl_adapter_set_weight(SlAdapterSet *set, int i, float w) {
    if (i >= 0 && i < set->n_ad) set->w[i] = w;
}

int sl_adapter_set_training(SlAdapterSet *set, int on) {
    const int was = set->training;
    set->training = on != 0;
    return was;
}

void sl_adapter_set_step(SlAdapterSet *set, uint64_t step) { set->step = step; }

SlStatus sl_adapter_set_apply(SlAdapterSet *set, const SlSites *sites, SlAdapter *const *ad, const float *w, int n,
                              float dropout, uint64_t seed, SlCtx *ctx) {
    memset(set, 0, sizeof *set);
    if (n < 1 || n > SL_ADAPTER_MAX_ACTIVE)
        return sl_fail(ctx, SL_ERR_ARG, "adapter set: %d adapters (1..%d)", n, SL_ADAPTER_MAX_ACTIVE);
    if (!(dropout >= 0.0f && dropout < 1.0f)) return sl_fail(ctx, SL_ERR_ARG, "adapter set: dropout %g not in [0,1)", dropout);
    for (int a = 0; a < n; a++) SL_TRY(sl_adapter_check(ad[a], sites, 0, NULL, ctx));
    /* uses per site: idx[site*n + a] = module index in adapter a, or -1 */
    int *idx = malloc(sizeof(int) * (size_t)sites->n * (size_t)n);
    if (!idx) return sl_fail(ctx, SL_ERR_NOMEM, "adapter set: out of memory");
    for (int i = 0; i < sites->n * n; i++) idx[i] = -1;
    for (int a = 0; a < n; a++)
        for (int k = 0; k < ad[a]->n; k++) idx[sl_sites_find(sites, ad[a]->mods[k].name) * n + a] = k;
    int n_hooks = 0;
    size_t floats = 0;
    SlStatus st = SL_OK;
    for (int s = 0; s < sites->n && st == SL_OK; s++) {
        const SlLoraMod *lms[SL_ADAPTER_MAX_ACTIVE];
        int nu = 0, dora = 0;
        for (int a = 0; a < n; a++)
            if (idx[s * n + a] >= 0) {
                lms[nu] = &ad[a]->mods[idx[s * n + a]];
                dora |= lms[nu]->mag != NULL;
                nu++;
            }
        if (!nu) continue;
        const SlSite *site = &sites->v[s];
        for (int j = 0; j < nu && st == SL_OK; j++)
            if (site->conv && lms[j]->lyco && !lms[j]->conv && site->conv->k > 1)
                st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "adapter set: LyCORIS module %s was read without the model (its kernel "
                             "size unknown): load the file with the model's modules to apply it", site->name);
        if (st != SL_OK) break;
        SlHook *prev = site->lin ? site->lin->hook : site->conv->hook;
        if (prev && (prev->ops->lin_forward || prev->ops->lin_backward || prev->ops->conv_forward || prev->ops->conv_backward))
            st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "adapter set: module %s already carries an adapter hook", site->name);
        else if (dora && nu > 1)
            st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "adapter set: DoRA on %s cannot be combined with another adapter", site->name);
        else if (dora && (dropout > 0 || !site->lin || !site->lin->w))
            st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "adapter set: DoRA on %s needs a dense linear base and no dropout", site->name);
        else if (site->rows <= 0)
            st = sl_fail(ctx, SL_ERR_ARG, "adapter set: module %s has no planned rows", site->name);
        n_hooks++;
        floats += sl_site_hook_cache_floats(site, lms, nu, dora, dropout > 0);
    }
    if (st == SL_OK) st = sl_arena_init(&set->cache, floats * sizeof(float), "adapter caches", ctx);
    if (st == SL_OK && !(set->hooks = calloc((size_t)n_hooks, sizeof *set->hooks)))
        st = sl_fail(ctx, SL_ERR_NOMEM, "adapter set: out of memory");
    if (st != SL_OK) {
        free(idx);
        sl_arena_free(&set->cache);
        memset(set, 0, sizeof *set);
        return st;
    }
    set->sites = sites;
    set->n_ad = n;
    for (int a = 0; a < n; a++) {
        set->ad[a] = ad[a];
        set->w[a] = w ? w[a] : 1.0f;
    }
    set->dropout = dropout;
    set->seed = seed;
    int h = 0;
    for (int s = 0; s < sites->n; s++) {
        int nu = 0;
        for (int a = 0; a < n; a++) nu += idx[s * n + a] >= 0;
        if (!nu) continue;
        SlSiteHook *sh = &set->hooks[h];
        const SlSite *site = &sites->v[s];
        for (int a = 0; a < n; a++) {
            if (idx[s * n + a] < 0) continue;
            SlAdapterUse *u = &sh->use[sh->n_use++];
            u->lm = &ad[a]->mods[idx[s * n + a]];
            u->ad = ad[a];
            u->ai = a;
            u->ax = sl_arena_take_f32(&set->cache, site->rows * u->lm->r);
            u->dax = sl_arena_take_f32(&set->cache, site->rows * u->lm->r);
            sh->dora |= u->lm->mag != NULL;
        }
        sh->set = set;
        sh->site = s;
        sh->rows = site->rows;
        if (site->lin && dropout > 0) sh->xd = sl_arena_take_f32(&set->cache, site->rows * site->lin->I);
        if (sh->dora) {
            sh->ypre = sl_arena_take_f32(&set->cache, site->rows * site->lin->O);
            sh->g = sl_arena_take_f32(&set->cache, site->rows * site->lin->O);
            sh->c = sl_arena_take_f32(&set->cache, site->lin->O);
            sh->inv = sl_arena_take_f32(&set->cache, site->lin->O);
            sh->row = sl_arena_take_f32(&set->cache, site->lin->I);
        }
        SlHook **slot = site->lin ? &site->lin->hook : &site->conv->hook;
        sh->prev = *slot;
        int deleg = sh->prev && (site->lin ? sh->prev->ops->lin_base_forward != NULL : sh->prev->ops->conv_base_forward != NULL);
        sh->hook.ops = sl_site_hook_ops(deleg);
        sh->hook.self = sh;
        *slot = &sh->hook;
        h++;
    }
    set->n_hooks = h;
    free(idx);
    for (int a = 0; a < n; a++)
        sl_log(ctx, SL_LOG_INFO, "%s: touches %d modules (weight %g)", ad[a]->label, ad[a]->n, (double)set->w[a]);
    return SL_OK;
}

/* ---- merge / unmerge ---- */

static SlStatus merge_keep(SlMergeState *ms, float *w, size_t numel, SlCtx *ctx) {
    for (int i = 0; i < ms->n; i++)
        if (ms->w[i] == w) return SL_OK;
    float **nw = realloc(ms->w, sizeof *nw * (size_t)(ms->n + 1));
    if (nw) ms->w = nw;
    float **no = realloc(ms->orig, sizeof *no * (size_t)(ms->n + 1));
    if (no) ms->orig = no;
    size_t *nn = realloc(ms->numel, sizeof *nn * (size_t)(ms->n + 1));
    if (nn) ms->numel = nn;
    float *copy = malloc(sizeof(float) * numel);
    if (!nw || !no || !nn || !copy) {
        free(copy);
        return sl_fail(ctx, SL_ERR_NOMEM, "merge: out of memory");
    }
    memcpy(copy, w, sizeof(float) * numel);
    ms->w[ms->n] = w;
    ms->orig[ms->n] = copy;
    ms->numel[ms->n] = numel;
    ms->n++;
    return SL_OK;
}

SlStatus sl_adapter_merge(SlMergeState *ms, const SlSites *sites, SlAdapter *const *ad, const float *w, int n,
                          SlCtx *ctx) {
    for (int a = 0; a < n; a++) SL_TRY(sl_adapter_check(ad[a], sites, 0, NULL, ctx));
    for (int a = 0; a < n; a++) {
        const float wa = w ? w[a] : 1.0f;
        for (int k = 0; k < ad[a]->n; k++) {
            const SlLoraMod *lm = &ad[a]->mods[k];
            const SlSite *st = &sites->v[sl_sites_find(sites, lm->name)];
            float *W = st->lin ? st->lin->w : st->conv->w;
            if (!W) return sl_fail(ctx, SL_ERR_UNSUPPORTED, "merge: %s has no dense weight (NF4 or fp16 base: widen it first)", lm->name);
            const int64_t K = lm->I * lm->k * lm->k;
            const size_t numel = (size_t)(lm->O * K);
            SL_TRY(merge_keep(ms, W, numel, ctx));
            float *delta = malloc(sizeof(float) * numel);
            if (!delta) return sl_fail(ctx, SL_ERR_NOMEM, "merge: out of memory");
            sl_lora_delta(delta, lm, wa * sl_lora_scale(ad[a], lm), st->lin ? &st->lin->kern : &st->conv->kern);
            for (size_t i = 0; i < numel; i++) delta[i] += W[i];
            if (lm->mag) {   /* W <- m (W + sBA) / ||W + sBA||_row */
                for (int64_t o = 0; o < lm->O; o++) {
                    double ss = 0;
                    for (int64_t i = 0; i < K; i++) ss += (double)delta[o * K + i] * delta[o * K + i];
                    const float c = lm->mag[o] / (float)sqrt(ss);
                    for (int64_t i = 0; i < K; i++) delta[o * K + i] *= c;
                }
            }
            memcpy(W, delta, sizeof(float) * numel);
            free(delta);
        }
    }
    return SL_OK;
}

void sl_adapter_unmerge(SlMergeState *ms) {
    for (int i = ms->n - 1; i >= 0; i--) {
        memcpy(ms->w[i], ms->orig[i], sizeof(float) * ms->numel[i]);
        free(ms->orig[i]);
    }
    free(ms->w);
    free(ms->orig);
    free(ms->numel);
    memset(ms, 0, sizeof *ms);
}

void sl_adapter_merge_commit(SlMergeState *ms) {
    for (int i = 0; i < ms->n; i++) free(ms->orig[i]);
    free(ms->w);
    free(ms->orig);
    free(ms->numel);
    memset(ms, 0, sizeof *ms);
}
