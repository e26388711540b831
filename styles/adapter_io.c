/* adapter_io.c - LoRA / LoCon / DoRA files: kohya, diffusers/PEFT, older diffusers.
 *
 * Key forms read (a table, k_suffixes):
 *   kohya (sd-scripts networks/lora.py):  lora_unet_<name, '.' -> '_'>.lora_down.weight [r,I] / [r,Ci,k,k]
 *       .lora_up.weight [O,r] / [Co,r,1,1], .alpha (scalar), .dora_scale [O,1] (output-wise DoRA);
 *       lora_te_ (lora_te1_) = text_encoder, lora_te2_ = text_encoder_2.
 *   PEFT / diffusers:  unet.<dotted>.lora_A.weight, .lora_B.weight, .lora_magnitude_vector(.weight);
 *       "base_model.model.<dotted>" and un-namespaced keys get opts->default_ns.
 *   older diffusers:  <dotted>.lora.down.weight / .lora.up.weight (LoRACompatibleLinear),
 *       <attn>.processor.to_{q,k,v,out}_lora.down.weight (attention processors, to_out -> to_out.0),
 *       <dotted>.lora_linear_layer.down.weight (text encoder patches).
 * Alpha rules: see sl_adapter_load in adapter.h. sd-scripts' create_network_from_weights
 * sets a module's alpha to its dim when the file has no `.alpha`; we do the same for
 * kohya and old-diffusers files (logged), and refuse a PEFT file whose alpha is
 * neither given by the caller nor in the stylora metadata (diffusers would silently
 * assume alpha = r, which rescales the update).
 *
 * Not here: the arithmetic (lora.c), applying (adapter_set.c).
 */
#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "adapter_internal.h"
#include "core/safetensors.h"
#include "core/weights.h"

enum { ROLE_A = 0, ROLE_B, ROLE_ALPHA, ROLE_MAG };

static const struct {
    const char *suffix;
    int role;
    SlAdapterFormat fmt;
} k_suffixes[] = {
    {".lora_down.weight", ROLE_A, SL_ADAPTER_FMT_KOHYA},
    {".lora_up.weight", ROLE_B, SL_ADAPTER_FMT_KOHYA},
    {".dora_scale", ROLE_MAG, SL_ADAPTER_FMT_KOHYA},
    {".lora_A.weight", ROLE_A, SL_ADAPTER_FMT_PEFT},
    {".lora_B.weight", ROLE_B, SL_ADAPTER_FMT_PEFT},
    {".lora_magnitude_vector.weight", ROLE_MAG, SL_ADAPTER_FMT_PEFT},
    {".lora_magnitude_vector", ROLE_MAG, SL_ADAPTER_FMT_PEFT},
    {".lora_linear_layer.down.weight", ROLE_A, SL_ADAPTER_FMT_DIFFUSERS_OLD},
    {".lora_linear_layer.up.weight", ROLE_B, SL_ADAPTER_FMT_DIFFUSERS_OLD},
    {".lora.down.weight", ROLE_A, SL_ADAPTER_FMT_DIFFUSERS_OLD},
    {".lora.up.weight", ROLE_B, SL_ADAPTER_FMT_DIFFUSERS_OLD},
    {"_lora.down.weight", ROLE_A, SL_ADAPTER_FMT_DIFFUSERS_OLD},
    {"_lora.up.weight", ROLE_B, SL_ADAPTER_FMT_DIFFUSERS_OLD},
    {".alpha", ROLE_ALPHA, SL_ADAPTER_FMT_UNKNOWN},
};

/* kohya prefix <-> namespace */
static const struct { const char *kohya, *ns; } k_kohya_ns[] = {
    {"lora_unet_", "unet"},
    {"lora_te1_", "text_encoder"},
    {"lora_te2_", "text_encoder_2"},
    {"lora_te_", "text_encoder"},
};

/* Name parts that contain '_' (SD U-Net, SDXL, CLIP), for expanding kohya names. */
static const char *const k_compounds[] = {
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out",
    "proj_in", "proj_out", "conv_shortcut", "time_emb_proj", "conv_in", "conv_out", "conv_norm_out",
    "time_embedding", "linear_1", "linear_2", "add_embedding", "text_model", "self_attn", "q_proj",
    "k_proj", "v_proj", "out_proj", "layer_norm1", "layer_norm2", "final_layer_norm", "token_embedding",
    "position_embedding", "text_projection",
};

const char *sl_adapter_format_name(SlAdapterFormat f) {
    switch (f) {
    case SL_ADAPTER_FMT_KOHYA: return "kohya";
    case SL_ADAPTER_FMT_PEFT: return "peft";
    case SL_ADAPTER_FMT_DIFFUSERS_OLD: return "diffusers-old";
    case SL_ADAPTER_FMT_LYCORIS: return "lycoris";
    default: return "unknown";
    }
}

static int starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* dst <- a + b, truncated to n-1 chars (names are checked against SL_ADAPTER_NAME_MAX first). */
static void cat2(char *dst, size_t n, const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > n - 1) la = n - 1;
    if (lb > n - 1 - la) lb = n - 1 - la;
    memcpy(dst, a, la);
    memcpy(dst + la, b, lb);
    dst[la + lb] = 0;
}

SlStatus sl_kohya_flatten(char *out, size_t n, const char *name, SlCtx *ctx) {
    const char *dot = strchr(name, '.');
    if (!dot) return sl_fail(ctx, SL_ERR_ARG, "module name %s has no namespace", name);
    const char *pre = NULL;
    for (size_t i = 0; i < sizeof k_kohya_ns / sizeof k_kohya_ns[0]; i++)
        if (strlen(k_kohya_ns[i].ns) == (size_t)(dot - name) && starts(name, k_kohya_ns[i].ns) &&
            strcmp(k_kohya_ns[i].kohya, "lora_te1_"))
            pre = k_kohya_ns[i].kohya;
    if (!pre) return sl_fail(ctx, SL_ERR_ARG, "module %s: namespace has no kohya prefix", name);
    if (strlen(pre) + strlen(dot + 1) + 1 > n) return sl_fail(ctx, SL_ERR_ARG, "module name too long: %s", name);
    snprintf(out, n, "%s%s", pre, dot + 1);
    for (char *p = out + strlen(pre); *p; p++)
        if (*p == '.') *p = '_';
    return SL_OK;
}

SlStatus sl_kohya_unflatten(char *out, size_t n, const char *flat, SlCtx *ctx) {
    const char *ns = NULL, *p = NULL;
    for (size_t i = 0; i < sizeof k_kohya_ns / sizeof k_kohya_ns[0] && !ns; i++)
        if (starts(flat, k_kohya_ns[i].kohya)) {
            ns = k_kohya_ns[i].ns;
            p = flat + strlen(k_kohya_ns[i].kohya);
        }
    if (!ns) return sl_fail(ctx, SL_ERR_FORMAT, "kohya name %s has no lora_unet_/lora_te_ prefix", flat);
    size_t o = (size_t)snprintf(out, n, "%s", ns);
    while (*p && o < n) {
        size_t len = strcspn(p, "_"), best = 0;
        for (size_t i = 0; i < sizeof k_compounds / sizeof k_compounds[0]; i++) {
            size_t lc = strlen(k_compounds[i]);
            if (lc > best && starts(p, k_compounds[i]) && (p[lc] == '_' || p[lc] == 0)) best = lc;
        }
        if (best) len = best;
        o += (size_t)snprintf(out + o, n - o, ".%.*s", (int)len, p);
        p += len;
        if (*p == '_') p++;
    }
    if (o >= n) return sl_fail(ctx, SL_ERR_ARG, "kohya name too long: %s", flat);
    return SL_OK;
}

/* ---- loading ---- */

typedef struct Group {
    char name[SL_ADAPTER_NAME_MAX];
    SlAdapterFormat fmt;
    const SlStEntry *e[4];   /* by role */
    int site;                /* -1 without sites */
    int skip;
} Group;

typedef struct Errs {
    char list[700];
    size_t used;
    int n;
} Errs;

static void errs_add(Errs *e, SlCtx *ctx, int lenient, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void errs_add(Errs *e, SlCtx *ctx, int lenient, const char *file, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    e->n++;
    if (lenient) sl_log(ctx, SL_LOG_WARN, "%s: skipped %s", file, buf);
    if (e->used + strlen(buf) + 3 < sizeof e->list)
        e->used += (size_t)snprintf(e->list + e->used, sizeof e->list - e->used, "%s%s", e->used ? "; " : "", buf);
}

/* Module name of a key stem; 0 if it cannot be resolved (kohya name without sites match). */
int sl_adapter_stem_name(char *out, size_t n, const char *stem, const SlSites *sites, const char *dns, SlCtx *ctx) {
    for (size_t i = 0; i < sizeof k_kohya_ns / sizeof k_kohya_ns[0]; i++) {
        if (!starts(stem, k_kohya_ns[i].kohya)) continue;
        if (sites) {
            char flat[SL_ADAPTER_NAME_MAX + 16];
            SlCtx quiet;
            sl_ctx_init(&quiet);
            for (int s = 0; s < sites->n; s++)
                if (sl_kohya_flatten(flat, sizeof flat, sites->v[s].name, &quiet) == SL_OK) {
                    /* lora_te1_ and lora_te_ both mean text_encoder */
                    const char *a = flat, *b = stem;
                    if (starts(b, "lora_te1_") && starts(a, "lora_te_")) { a += 8; b += 9; }
                    if (!strcmp(a, b)) {
                        cat2(out, n, sites->v[s].name, "");
                        return 1;
                    }
                }
            cat2(out, n, stem, "");
            return 0;
        }
        return sl_kohya_unflatten(out, n, stem, ctx) == SL_OK;
    }
    const char *s = stem;
    if (starts(s, "base_model.model.")) s += strlen("base_model.model.");
    char tmp[SL_ADAPTER_NAME_MAX + 80], ns[64];
    if (starts(s, "unet.") || starts(s, "text_encoder.") || starts(s, "text_encoder_2."))
        cat2(tmp, sizeof tmp, s, "");
    else {
        cat2(ns, sizeof ns, dns, ".");
        cat2(tmp, sizeof tmp, ns, s);
    }
    /* old attention processors: <attn>.processor.to_q -> <attn>.to_q, to_out -> to_out.0 */
    char *pr = strstr(tmp, ".processor.");
    if (pr) {
        memmove(pr, pr + strlen(".processor"), strlen(pr + strlen(".processor")) + 1);
        size_t l = strlen(tmp);
        if (l > 7 && !strcmp(tmp + l - 7, ".to_out") && l + 3 < sizeof tmp) strcat(tmp, ".0");
    }
    cat2(out, n, tmp, "");
    return 1;
}

static int find_group(Group *g, int n, const char *name) {
    for (int i = n - 1; i >= 0; i--)
        if (!strcmp(g[i].name, name)) return i;
    return -1;
}

/* Reads a whole tensor as f32 into dst, refusing NaN / Inf. */
static SlStatus read_finite(const SlStFile *f, const SlStEntry *e, float *dst, SlCtx *ctx) {
    SL_TRY(sl_st_read_f32(f, e, dst, ctx));
    size_t n = (size_t)sl_shape_numel(e->ndim, e->shape);
    size_t bad = sl_count_nonfinite(dst, n);
    if (bad) return sl_fail(ctx, SL_ERR_NUMERIC, "%s: tensor %s has %zu NaN/Inf values", f->path, e->name, bad);
    return SL_OK;
}

static float meta_alpha(const SlStFile *f, const char *name, int *found) {
    *found = 0;
    const char *pat = sl_st_meta(f, SL_META_ALPHA_PATTERN);
    if (pat) {
        cJSON *j = cJSON_Parse(pat);
        cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, name) : NULL;
        float a = 0;
        if (cJSON_IsNumber(v)) { a = (float)v->valuedouble; *found = 1; }
        cJSON_Delete(j);
        if (*found) return a;
    }
    const char *g = sl_st_meta(f, SL_META_ALPHA);
    if (g) {
        char *end;
        double a = strtod(g, &end);
        if (end != g && a > 0) { *found = 1; return (float)a; }
    }
    return 0;
}

static SlStatus load_groups(SlAdapter *ad, const SlStFile *f, Group *g, int ng, const SlSites *sites,
                            const SlAdapterLoadOpts *opts, Errs *er, SlCtx *ctx) {
    const int lenient = opts && opts->lenient;
    char sb[64], sb2[64];
    /* shapes and kinds */
    int keep = 0;
    for (int i = 0; i < ng; i++) {
        Group *q = &g[i];
        const SlStEntry *A = q->e[ROLE_A], *B = q->e[ROLE_B], *M = q->e[ROLE_MAG];
        q->skip = 1;
        if (!A || !B) {
            errs_add(er, ctx, lenient, f->path, "%s: %s without its %s", q->name, (A ? A : B ? B : q->e[ROLE_ALPHA] ? q->e[ROLE_ALPHA] : M)->name,
                     A ? "up/B tensor" : "down/A tensor");
            continue;
        }
        if (q->site < 0 && sites) {
            errs_add(er, ctx, lenient, f->path, "%s: no module %s in the model", A->name, q->name);
            continue;
        }
        int okA = (A->ndim == 2 || (A->ndim == 4 && A->shape[2] == A->shape[3]));
        int okB = (B->ndim == 2 || (B->ndim == 4 && B->shape[2] == 1 && B->shape[3] == 1)) && okA && B->shape[1] == A->shape[0];
        if (!okA || !okB) {
            errs_add(er, ctx, lenient, f->path, "%s %s and %s %s do not form a low-rank pair", A->name,
                     sl_shape_str(A->ndim, A->shape, sb, sizeof sb), B->name, sl_shape_str(B->ndim, B->shape, sb2, sizeof sb2));
            continue;
        }
        const int64_t I = A->shape[1], k = A->ndim == 4 ? A->shape[2] : 1, O = B->shape[0];
        int conv = A->ndim == 4 && k > 1;
        if (sites) {
            const SlSite *st = &sites->v[q->site];
            conv = st->conv != NULL;
            int64_t si = conv ? st->conv->Ci : st->lin->I, so = conv ? st->conv->Co : st->lin->O;
            int64_t sk = conv ? st->conv->k : 1;
            if (si != I || so != O || sk != k) {
                errs_add(er, ctx, lenient, f->path, "%s %s / %s %s do not fit %s [out %lld, in %lld, k %lld]", A->name,
                         sl_shape_str(A->ndim, A->shape, sb, sizeof sb), B->name, sl_shape_str(B->ndim, B->shape, sb2, sizeof sb2),
                         q->name, (long long)so, (long long)si, (long long)sk);
                continue;
            }
        }
        if (M) {
            /* [O] (PEFT Linear), [O,1] (kohya dora_scale), [1,O,1,1] (PEFT Conv2d 1x1) */
            int okM = conv ? 0 : (M->ndim == 1 && M->shape[0] == O) || (M->ndim == 2 && M->shape[0] == O && M->shape[1] == 1) ||
                                     (M->ndim == 4 && M->shape[0] == 1 && M->shape[1] == O && M->shape[2] == 1 && M->shape[3] == 1);
            if (!okM) {
                errs_add(er, ctx, lenient, f->path, "%s %s: DoRA magnitude must be per output row ([%lld], [%lld,1] or [1,O,1,1]) on a linear "
                         "(input-wise LyCORIS DoRA and conv DoRA are not supported)", M->name,
                         sl_shape_str(M->ndim, M->shape, sb, sizeof sb), (long long)O, (long long)O);
                continue;
            }
        }
        if (q->e[ROLE_ALPHA] && sl_shape_numel(q->e[ROLE_ALPHA]->ndim, q->e[ROLE_ALPHA]->shape) != 1) {
            errs_add(er, ctx, lenient, f->path, "%s: alpha must hold one value", q->e[ROLE_ALPHA]->name);
            continue;
        }
        q->skip = 0;
        keep++;
    }
    if (er->n && !lenient)
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: %d adapter key problem(s): %s", f->path, er->n, er->list);
    if (!keep) return sl_fail(ctx, SL_ERR_FORMAT, "%s: no usable adapter module", f->path);
    ad->mods = calloc((size_t)keep, sizeof *ad->mods);
    if (!ad->mods) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", f->path);
    size_t bytes = 0;
    for (int i = 0; i < ng; i++) {
        if (g[i].skip) continue;
        for (int r = 0; r < 4; r++)
            if (g[i].e[r] && r != ROLE_ALPHA) bytes += sl_align_up(sizeof(float) * (size_t)sl_shape_numel(g[i].e[r]->ndim, g[i].e[r]->shape));
    }
    SL_TRY(sl_arena_init(&ad->params, bytes, "adapter weights", ctx));
    int n_unet = 0, n_te = 0, n_dora = 0, n_default_alpha = 0;
    for (int i = 0; i < ng; i++) {
        Group *q = &g[i];
        if (q->skip) continue;
        SlLoraMod *lm = &ad->mods[ad->n++];
        const SlStEntry *A = q->e[ROLE_A], *B = q->e[ROLE_B], *M = q->e[ROLE_MAG];
        snprintf(lm->name, sizeof lm->name, "%s", q->name);
        lm->r = A->shape[0];
        lm->I = A->shape[1];
        lm->k = A->ndim == 4 ? A->shape[2] : 1;
        lm->O = B->shape[0];
        lm->conv = sites ? sites->v[q->site].conv != NULL : (A->ndim == 4 && lm->k > 1);
        lm->conv1x1 = !lm->conv && A->ndim == 4;
        lm->A = sl_arena_take_f32(&ad->params, sl_shape_numel(A->ndim, A->shape));
        lm->B = sl_arena_take_f32(&ad->params, sl_shape_numel(B->ndim, B->shape));
        SL_TRY(read_finite(f, A, lm->A, ctx));
        SL_TRY(read_finite(f, B, lm->B, ctx));
        if (M) {
            lm->mag = sl_arena_take_f32(&ad->params, lm->O);
            SL_TRY(read_finite(f, M, lm->mag, ctx));
            n_dora++;
        }
        int found = 0;
        if (q->e[ROLE_ALPHA]) {
            SL_TRY(read_finite(f, q->e[ROLE_ALPHA], &lm->alpha, ctx));
            found = 1;
        } else if (opts && opts->alpha > 0) {
            lm->alpha = opts->alpha;
            found = 1;
        } else {
            lm->alpha = meta_alpha(f, lm->name, &found);
        }
        if (!found) {
            if (q->fmt == SL_ADAPTER_FMT_PEFT)
                return sl_fail(ctx, SL_ERR_MISSING, "%s: alpha of %s cannot be determined: PEFT files store none; pass it "
                               "(--lora-alpha) or write it as metadata \"%s\"", f->path, lm->name, SL_META_ALPHA);
            lm->alpha = (float)lm->r;  /* sd-scripts / diffusers default for a file without alpha */
            n_default_alpha++;
        }
        /* metadata "1e300" parses to +inf as a float: an infinite scale (found for issue 12) */
        if (!isfinite(lm->alpha))
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: alpha of %s is not a finite number (metadata %s / %s)", f->path,
                           lm->name, SL_META_ALPHA, SL_META_ALPHA_PATTERN);
        if (!(lm->alpha > 0) && !(lm->alpha < 0))  /* kohya: alpha 0 means "= dim" */
            lm->alpha = (float)lm->r;
        if (starts(lm->name, "unet.")) n_unet++;
        else n_te++;
    }
    ad->dora = n_dora == ad->n;
    const char *rs = sl_st_meta(f, SL_META_RSLORA);
    ad->rslora = rs && !strcmp(rs, "true");
    if (n_default_alpha)
        sl_log(ctx, SL_LOG_WARN, "%s: %d module(s) without alpha: alpha = rank (scale 1), as sd-scripts does", f->path,
               n_default_alpha);
    sl_log(ctx, SL_LOG_INFO, "%s: %d modules (%d unet, %d text encoder)%s", f->path, ad->n, n_unet, n_te,
           n_dora ? ", DoRA" : "");
    return SL_OK;
}

SlStatus sl_adapter_load(SlAdapter *ad, const char *path, const SlSites *sites, const SlAdapterLoadOpts *opts,
                         SlAdapterFormat *fmt, SlCtx *ctx) {
    memset(ad, 0, sizeof *ad);
    snprintf(ad->label, sizeof ad->label, "%s", path);
    SlStFile f;
    SlStatus ost = sl_st_open(&f, path, ctx);
    if (ost) {
        /* A pickle adapter (.bin/.pt/.ckpt) gets weights.c's refusal, which says how to
         * convert, instead of "header length ... exceeds the limit" (issue 12). */
        SlWeights pw;
        SlCtx pc = *ctx;
        SlStatus pst = sl_weights_open_file(&pw, path, &pc);
        if (pst == SL_ERR_UNSUPPORTED) {
            *ctx = pc;
            return pst;
        }
        if (pst == SL_OK) sl_weights_close(&pw);
        return ost;
    }
    if (sl_lycoris_detect(&f)) {   /* LoHa / LoKr: dense deltas, lycoris.c */
        SlStatus lst = sl_lycoris_load(ad, &f, sites, opts, ctx);
        for (int i = 0; lst == SL_OK && i < f.n_meta; i++) lst = sl_adapter_set_meta(ad, f.meta_keys[i], f.meta_vals[i], ctx);
        if (fmt) *fmt = SL_ADAPTER_FMT_LYCORIS;
        sl_st_close(&f);
        if (lst != SL_OK) {
            sl_adapter_free(ad);
            snprintf(ad->label, sizeof ad->label, "%s", path);
        }
        return lst;
    }
    const char *dns = opts && opts->default_ns ? opts->default_ns : "unet";
    const int lenient = opts && opts->lenient;
    Group *g = calloc((size_t)(f.n ? f.n : 1), sizeof *g);
    SlStatus st = g ? SL_OK : sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path);
    Errs er = {{0}, 0, 0};
    int ng = 0, n_adapter_keys = 0;
    SlAdapterFormat detected = SL_ADAPTER_FMT_UNKNOWN;
    for (int i = 0; i < f.n && st == SL_OK; i++) {
        const SlStEntry *e = &f.entries[i];
        size_t ln = strlen(e->name);
        int si = -1;
        for (size_t s = 0; s < sizeof k_suffixes / sizeof k_suffixes[0] && si < 0; s++) {
            size_t ls = strlen(k_suffixes[s].suffix);
            if (ln > ls && !strcmp(e->name + ln - ls, k_suffixes[s].suffix)) si = (int)s;
        }
        if (si < 0) {
            errs_add(&er, ctx, lenient, path, "%s: not an adapter key", e->name);
            continue;
        }
        n_adapter_keys++;
        char stem[SL_ADAPTER_NAME_MAX + 64], name[SL_ADAPTER_NAME_MAX];
        size_t lstem = ln - strlen(k_suffixes[si].suffix);
        if (lstem >= sizeof stem) {
            errs_add(&er, ctx, lenient, path, "%s: name too long", e->name);
            continue;
        }
        memcpy(stem, e->name, lstem);
        stem[lstem] = 0;
        SlAdapterFormat kf = k_suffixes[si].fmt;
        if (starts(stem, "lora_unet_") || starts(stem, "lora_te")) kf = SL_ADAPTER_FMT_KOHYA;
        else if (kf == SL_ADAPTER_FMT_KOHYA) kf = SL_ADAPTER_FMT_DIFFUSERS_OLD;  /* dotted name + lora_down */
        if (detected == SL_ADAPTER_FMT_UNKNOWN) detected = kf;
        int resolved = sl_adapter_stem_name(name, sizeof name, stem, sites, dns, ctx);
        int gi = find_group(g, ng, name);
        if (gi < 0) {
            gi = ng++;
            snprintf(g[gi].name, sizeof g[gi].name, "%s", name);
            g[gi].fmt = kf;
            g[gi].site = sites && resolved ? sl_sites_find(sites, name) : -1;
        }
        if (g[gi].fmt == SL_ADAPTER_FMT_UNKNOWN) g[gi].fmt = kf;
        int role = k_suffixes[si].role;
        if (g[gi].e[role]) {
            errs_add(&er, ctx, lenient, path, "%s: %s duplicates %s", name, e->name, g[gi].e[role]->name);
            continue;
        }
        g[gi].e[role] = e;
    }
    if (st == SL_OK && !n_adapter_keys)
        st = sl_fail(ctx, SL_ERR_FORMAT, "%s: not an adapter file: no lora_down/lora_up, lora_A/lora_B or lora.down/lora.up "
                     "tensor (first key: %s)", path, f.n ? f.entries[0].name : "none");
    if (st == SL_OK) st = load_groups(ad, &f, g, ng, sites, opts, &er, ctx);
    for (int i = 0; st == SL_OK && i < f.n_meta; i++) st = sl_adapter_set_meta(ad, f.meta_keys[i], f.meta_vals[i], ctx);
    if (fmt) *fmt = detected;
    free(g);
    sl_st_close(&f);
    if (st != SL_OK) {
        sl_adapter_free(ad);
        snprintf(ad->label, sizeof ad->label, "%s", path);
    }
    return st;
}

/* ---- saving ---- */

SlStatus sl_adapter_save(const SlAdapter *ad, const char *path, const SlAdapterSaveOpts *opts, SlCtx *ctx) {
    const SlAdapterFormat fmt = opts ? opts->format : SL_ADAPTER_FMT_PEFT;
    const SlDType dt = opts ? opts->dtype : SL_F32;
    if (fmt != SL_ADAPTER_FMT_KOHYA && fmt != SL_ADAPTER_FMT_PEFT)
        return sl_fail(ctx, SL_ERR_ARG, "save %s: format must be kohya or peft", path);
    if (ad->n < 1) return sl_fail(ctx, SL_ERR_ARG, "save %s: empty adapter", path);
    SlStWriter w;
    sl_st_writer_init(&w);
    float *alphas = malloc(sizeof(float) * (size_t)ad->n);   /* [n] kohya .alpha values (live until save) */
    SlStatus st = alphas ? SL_OK : sl_fail(ctx, SL_ERR_NOMEM, "save %s: out of memory", path);
    char key[SL_ADAPTER_NAME_MAX + 64], stem[SL_ADAPTER_NAME_MAX + 16];
    cJSON *pattern = cJSON_CreateObject();
    int n_pattern = 0;
    const SlLoraMod *first_lin = NULL, *first_conv = NULL;
    for (int i = 0; i < ad->n; i++) {
        if (!ad->mods[i].conv && !first_lin) first_lin = &ad->mods[i];
        if (ad->mods[i].conv && !first_conv) first_conv = &ad->mods[i];
    }
    const SlLoraMod *ref = first_lin ? first_lin : first_conv;
    for (int i = 0; i < ad->n && st == SL_OK; i++) {
        const SlLoraMod *lm = &ad->mods[i];
        const int four = lm->conv || lm->conv1x1;
        int64_t sa[4] = {lm->r, lm->I, lm->k, lm->k}, sbs[4] = {lm->O, lm->r, 1, 1}, sm[2] = {lm->O, 1}, sm4[4] = {1, lm->O, 1, 1};
        const char *sA, *sB, *sM;
        if (fmt == SL_ADAPTER_FMT_KOHYA) {
            st = sl_kohya_flatten(stem, sizeof stem, lm->name, ctx);
            sA = ".lora_down.weight"; sB = ".lora_up.weight"; sM = ".dora_scale";
        } else {
            snprintf(stem, sizeof stem, "%s", lm->name);
            sA = ".lora_A.weight"; sB = ".lora_B.weight"; sM = ".lora_magnitude_vector";
        }
        if (st != SL_OK) break;
        snprintf(key, sizeof key, "%s%s", stem, sA);
        st = sl_st_writer_add_f32_as(&w, key, dt, four ? 4 : 2, sa, lm->A, ctx);
        snprintf(key, sizeof key, "%s%s", stem, sB);
        if (st == SL_OK) st = sl_st_writer_add_f32_as(&w, key, dt, four ? 4 : 2, sbs, lm->B, ctx);
        if (st == SL_OK && lm->mag) {
            snprintf(key, sizeof key, "%s%s", stem, sM);
            if (fmt == SL_ADAPTER_FMT_KOHYA) st = sl_st_writer_add_f32_as(&w, key, dt, 2, sm, lm->mag, ctx);
            else if (lm->conv1x1) st = sl_st_writer_add_f32_as(&w, key, dt, 4, sm4, lm->mag, ctx);
            else st = sl_st_writer_add_f32_as(&w, key, dt, 1, sm, lm->mag, ctx);
        }
        if (st != SL_OK) break;
        if (fmt == SL_ADAPTER_FMT_KOHYA) {
            /* kohya's scale is alpha/r: keep an rsLoRA scale alpha/sqrt(r) */
            alphas[i] = ad->rslora ? lm->alpha * sqrtf((float)lm->r) : lm->alpha;
            snprintf(key, sizeof key, "%s.alpha", stem);
            st = sl_st_writer_add(&w, key, SL_F32, 0, NULL, &alphas[i], ctx);
        } else if (lm->alpha != ref->alpha) {
            cJSON_AddNumberToObject(pattern, lm->name, (double)lm->alpha);
            n_pattern++;
        }
    }
    char buf[128];
    for (int i = 0; i < ad->n_meta && st == SL_OK; i++) st = sl_st_writer_meta(&w, ad->meta_keys[i], ad->meta_vals[i], ctx);
    if (st == SL_OK && fmt == SL_ADAPTER_FMT_KOHYA) {
        st = sl_st_writer_meta(&w, "ss_network_module", "networks.lora", ctx);
        snprintf(buf, sizeof buf, "%lld", (long long)ref->r);
        if (st == SL_OK) st = sl_st_writer_meta(&w, "ss_network_dim", buf, ctx);
        snprintf(buf, sizeof buf, "%.9g", (double)(ad->rslora ? ref->alpha * sqrtf((float)ref->r) : ref->alpha));
        if (st == SL_OK) st = sl_st_writer_meta(&w, "ss_network_alpha", buf, ctx);
        if (st == SL_OK && first_conv) {
            snprintf(buf, sizeof buf, "{\"conv_dim\": \"%lld\", \"conv_alpha\": \"%.9g\"}", (long long)first_conv->r,
                     (double)(ad->rslora ? first_conv->alpha * sqrtf((float)first_conv->r) : first_conv->alpha));
            st = sl_st_writer_meta(&w, "ss_network_args", buf, ctx);
        }
    } else if (st == SL_OK) {
        snprintf(buf, sizeof buf, "%.9g", (double)ref->alpha);
        st = sl_st_writer_meta(&w, SL_META_ALPHA, buf, ctx);
        if (st == SL_OK) st = sl_st_writer_meta(&w, SL_META_RSLORA, ad->rslora ? "true" : "false", ctx);
        if (st == SL_OK) st = sl_st_writer_meta(&w, SL_META_FORMAT, "peft", ctx);
        if (st == SL_OK && n_pattern) {
            char *js = cJSON_PrintUnformatted(pattern);
            st = js ? sl_st_writer_meta(&w, SL_META_ALPHA_PATTERN, js, ctx) : sl_fail(ctx, SL_ERR_NOMEM, "save: out of memory");
            free(js);
        }
    }
    if (st == SL_OK) st = sl_st_writer_save(&w, path, ctx);
    cJSON_Delete(pattern);
    sl_st_writer_free(&w);
    free(alphas);
    return st;
}
