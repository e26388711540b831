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
 * Alpha, per module, highest first (issue 20; see sl_adapter_load in adapter.h):
 *   1. the caller's alpha (--lora-alpha), logged as an override;
 *   2. diffusers' `lora_adapter_metadata` (diffusers loaders/lora_base.py write_lora_layers,
 *      utils/peft_utils.py _load_sft_state_dict_metadata): a JSON object of PEFT LoraConfig fields,
 *      each key prefixed with its component by _pack_dict_with_prefix ("unet.lora_alpha",
 *      "unet.r", "unet.alpha_pattern", "text_encoder.rank_pattern", ...); a file saved by a bare
 *      model's save_lora_adapter (diffusers loaders/peft.py) has the fields unprefixed. Pattern keys
 *      are module names relative to the component, matched as PEFT's get_pattern_key does for plain
 *      names: equal, or a dotted suffix. stylora's older stylora.lora_alpha / stylora.alpha_pattern
 *      metadata is read at this level too;
 *   3. kohya's per-module `.alpha` scalar (sd-scripts networks/lora.py);
 *   4. kohya's ss_network_alpha metadata (conv modules: conv_alpha of ss_network_args);
 *   5. none of these: alpha = rank (scale 1), one info line, as diffusers' get_peft_kwargs and
 *      sd-scripts' create_network_from_weights do.
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

void sl_adapter_errs_add(SlAdapterErrs *e, SlCtx *ctx, int lenient, const char *file, const char *fmt, ...) {
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

/* The file-level alpha sources, parsed once per file (rules in the header comment). */
typedef struct AlphaMeta {
    cJSON *peft;          /* lora_adapter_metadata, or NULL */
    cJSON *legacy_pat;    /* stylora.alpha_pattern, or NULL */
    double legacy_alpha;  /* stylora.lora_alpha (0: absent) */
    double ss_alpha;      /* ss_network_alpha (0: absent) */
    double ss_conv_alpha; /* conv_alpha of ss_network_args (0: absent) */
    int rslora;           /* stylora.use_rslora or <ns>.use_rslora true */
} AlphaMeta;

static void alpha_meta_close(AlphaMeta *am) {
    cJSON_Delete(am->peft);
    cJSON_Delete(am->legacy_pat);
    memset(am, 0, sizeof *am);
}

/* A metadata string or JSON number/string as a number; 0 when absent or not a number. */
static double num_of(const char *s) {
    if (!s) return 0;
    char *end;
    double v = strtod(s, &end);
    return end != s ? v : 0;
}

static SlStatus alpha_meta_open(AlphaMeta *am, const SlStFile *f, SlCtx *ctx) {
    memset(am, 0, sizeof *am);
    const char *pm = sl_st_meta(f, SL_META_PEFT), *lp = sl_st_meta(f, SL_META_ALPHA_PATTERN);
    if (pm && !cJSON_IsObject(am->peft = cJSON_Parse(pm))) {
        alpha_meta_close(am);
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: metadata %s is not a JSON object", f->path, SL_META_PEFT);
    }
    if (lp && !cJSON_IsObject(am->legacy_pat = cJSON_Parse(lp))) {
        alpha_meta_close(am);
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: metadata %s is not a JSON object", f->path, SL_META_ALPHA_PATTERN);
    }
    am->legacy_alpha = num_of(sl_st_meta(f, SL_META_ALPHA));
    am->ss_alpha = num_of(sl_st_meta(f, "ss_network_alpha"));
    const char *na = sl_st_meta(f, "ss_network_args");
    cJSON *args = na ? cJSON_Parse(na) : NULL, *ca = cJSON_GetObjectItemCaseSensitive(args, "conv_alpha");
    am->ss_conv_alpha = cJSON_IsNumber(ca) ? ca->valuedouble : cJSON_IsString(ca) ? num_of(ca->valuestring) : 0;
    cJSON_Delete(args);
    const char *rs = sl_st_meta(f, SL_META_RSLORA);
    am->rslora = rs && !strcmp(rs, "true");
    const cJSON *it;
    cJSON_ArrayForEach(it, am->peft) {
        size_t l = strlen(it->string);
        if (l >= 10 && !strcmp(it->string + l - 10, "use_rslora") && cJSON_IsTrue(it)) am->rslora = 1;
    }
    return SL_OK;
}

/* PEFT's pattern keys name a module or a dotted suffix of it. */
static int pattern_key_match(const char *key, const char *rel) {
    size_t lk = strlen(key), lr = strlen(rel);
    return !strcmp(key, rel) || (lr > lk && rel[lr - lk - 1] == '.' && !strcmp(rel + lr - lk, key));
}

/* Looks up a LoraConfig field for module `name` ("unet.down_blocks...to_q") in
 * lora_adapter_metadata: <ns>.<pat_field> pattern, <ns>.<field>, then the unprefixed
 * forms. Returns 1 with *v set, 0 when absent, -1 when the value is not a number. */
static int peft_field(const cJSON *root, const char *name, const char *pat_field, const char *field, double *v) {
    const char *dot = strchr(name, '.');
    if (!root || !dot) return 0;
    const char *rel = dot + 1;   /* pattern keys are relative to the component either way */
    char key[96];
    for (int prefixed = 1; prefixed >= 0; prefixed--) {
        snprintf(key, sizeof key, "%.*s%s%s", prefixed ? (int)(dot - name) : 0, name, prefixed ? "." : "", pat_field);
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(root, key), *it;
        if (!cJSON_IsObject(pat)) pat = NULL;
        cJSON_ArrayForEach(it, pat)
            if (pattern_key_match(it->string, rel)) {
                if (!cJSON_IsNumber(it)) return -1;
                *v = it->valuedouble;
                return 1;
            }
        snprintf(key, sizeof key, "%.*s%s%s", prefixed ? (int)(dot - name) : 0, name, prefixed ? "." : "", field);
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, key);
        if (x) {
            if (!cJSON_IsNumber(x)) return -1;
            *v = x->valuedouble;
            return 1;
        }
    }
    return 0;
}

enum { ASRC_CALLER = 0, ASRC_PEFT, ASRC_LEGACY, ASRC_TENSOR, ASRC_SS, ASRC_RANK, ASRC_N };

/* Alpha of one loaded module (lm->r, lm->conv set) by the precedence in the header comment;
 * *src receives the ASRC_* that gave it. */
static SlStatus module_alpha(SlLoraMod *lm, const Group *q, const AlphaMeta *am, const SlStFile *f,
                             const SlAdapterLoadOpts *opts, int *src, SlCtx *ctx) {
    double v = 0;
    int got;
    if (opts && opts->alpha > 0) {
        lm->alpha = opts->alpha;
        *src = ASRC_CALLER;
        return SL_OK;
    }
    if ((got = peft_field(am->peft, lm->name, "rank_pattern", "r", &v)) != 0 && (got < 0 || v != (double)lm->r))
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: %s gives rank %g for %s, but its tensors have rank %lld", f->path,
                       SL_META_PEFT, got < 0 ? NAN : v, lm->name, (long long)lm->r);
    if ((got = peft_field(am->peft, lm->name, "alpha_pattern", "lora_alpha", &v)) != 0) {
        if (got < 0) return sl_fail(ctx, SL_ERR_FORMAT, "%s: %s: lora_alpha of %s is not a number", f->path, SL_META_PEFT, lm->name);
        lm->alpha = (float)v;
        *src = ASRC_PEFT;
        return SL_OK;
    }
    const cJSON *lv = NULL, *it;
    cJSON_ArrayForEach(it, am->legacy_pat)   /* full names as stylora wrote them; suffixes as PEFT reads */
        if (!lv && cJSON_IsNumber(it) && pattern_key_match(it->string, lm->name)) lv = it;
    if (lv || am->legacy_alpha > 0) {
        lm->alpha = (float)(lv ? lv->valuedouble : am->legacy_alpha);
        *src = ASRC_LEGACY;
        return SL_OK;
    }
    if (q->e[ROLE_ALPHA]) {
        *src = ASRC_TENSOR;
        return read_finite(f, q->e[ROLE_ALPHA], &lm->alpha, ctx);
    }
    double ss = lm->conv && am->ss_conv_alpha > 0 ? am->ss_conv_alpha : am->ss_alpha;
    if (ss > 0) {
        lm->alpha = (float)ss;
        *src = ASRC_SS;
        return SL_OK;
    }
    lm->alpha = (float)lm->r;
    *src = ASRC_RANK;
    return SL_OK;
}

static SlStatus load_groups(SlAdapter *ad, const SlStFile *f, Group *g, int ng, const SlSites *sites,
                            const SlAdapterLoadOpts *opts, const AlphaMeta *am, SlAdapterErrs *er, SlCtx *ctx) {
    const int lenient = opts && opts->lenient;
    char sb[64], sb2[64];
    /* shapes and kinds */
    int keep = 0;
    for (int i = 0; i < ng; i++) {
        Group *q = &g[i];
        const SlStEntry *A = q->e[ROLE_A], *B = q->e[ROLE_B], *M = q->e[ROLE_MAG];
        q->skip = 1;
        if (!A || !B) {
            sl_adapter_errs_add(er, ctx, lenient, f->path, "%s: %s without its %s", q->name, (A ? A : B ? B : q->e[ROLE_ALPHA] ? q->e[ROLE_ALPHA] : M)->name,
                     A ? "up/B tensor" : "down/A tensor");
            continue;
        }
        if (q->site < 0 && sites) {
            sl_adapter_errs_add(er, ctx, lenient, f->path, "%s: no module %s in the model", A->name, q->name);
            continue;
        }
        int okA = (A->ndim == 2 || (A->ndim == 4 && A->shape[2] == A->shape[3]));
        int okB = (B->ndim == 2 || (B->ndim == 4 && B->shape[2] == 1 && B->shape[3] == 1)) && okA && B->shape[1] == A->shape[0];
        if (!okA || !okB) {
            sl_adapter_errs_add(er, ctx, lenient, f->path, "%s %s and %s %s do not form a low-rank pair", A->name,
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
                sl_adapter_errs_add(er, ctx, lenient, f->path, "%s %s / %s %s do not fit %s [out %lld, in %lld, k %lld]", A->name,
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
                sl_adapter_errs_add(er, ctx, lenient, f->path, "%s %s: DoRA magnitude must be per output row ([%lld], [%lld,1] or [1,O,1,1]) on a linear "
                         "(input-wise LyCORIS DoRA and conv DoRA are not supported)", M->name,
                         sl_shape_str(M->ndim, M->shape, sb, sizeof sb), (long long)O, (long long)O);
                continue;
            }
        }
        if (q->e[ROLE_ALPHA] && sl_shape_numel(q->e[ROLE_ALPHA]->ndim, q->e[ROLE_ALPHA]->shape) != 1) {
            sl_adapter_errs_add(er, ctx, lenient, f->path, "%s: alpha must hold one value", q->e[ROLE_ALPHA]->name);
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
    int n_unet = 0, n_te = 0, n_dora = 0, n_src[ASRC_N] = {0};
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
        int src = ASRC_RANK;
        SL_TRY(module_alpha(lm, q, am, f, opts, &src, ctx));
        n_src[src]++;
        /* metadata "1e300" parses to +inf as a float: an infinite scale (found for issue 12) */
        if (!isfinite(lm->alpha))
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: alpha of %s is not a finite number (metadata %s, %s or ss_network_alpha)",
                           f->path, lm->name, SL_META_PEFT, SL_META_ALPHA);
        if (!(lm->alpha > 0) && !(lm->alpha < 0))  /* kohya: alpha 0 means "= dim" */
            lm->alpha = (float)lm->r;
        if (starts(lm->name, "unet.")) n_unet++;
        else n_te++;
    }
    ad->dora = n_dora == ad->n;
    ad->rslora = am->rslora;
    if (n_src[ASRC_CALLER])
        sl_log(ctx, SL_LOG_INFO, "%s: alpha %g from --lora-alpha for every module (it overrides the alpha the file stores)",
               f->path, (double)opts->alpha);
    if (n_src[ASRC_RANK])
        sl_log(ctx, SL_LOG_INFO, "%s: %d module(s) store no alpha (no %s, .alpha or ss_network_alpha): alpha = rank "
               "(scale 1), as diffusers and sd-scripts assume; --lora-alpha A sets another", f->path, n_src[ASRC_RANK],
               SL_META_PEFT);
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
    SlAdapterErrs er = {{0}, 0, 0};
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
            sl_adapter_errs_add(&er, ctx, lenient, path, "%s: not an adapter key", e->name);
            continue;
        }
        n_adapter_keys++;
        char stem[SL_ADAPTER_NAME_MAX + 64], name[SL_ADAPTER_NAME_MAX];
        size_t lstem = ln - strlen(k_suffixes[si].suffix);
        if (lstem >= sizeof stem) {
            sl_adapter_errs_add(&er, ctx, lenient, path, "%s: name too long", e->name);
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
            sl_adapter_errs_add(&er, ctx, lenient, path, "%s: %s duplicates %s", name, e->name, g[gi].e[role]->name);
            continue;
        }
        g[gi].e[role] = e;
    }
    if (st == SL_OK && !n_adapter_keys)
        st = sl_fail(ctx, SL_ERR_FORMAT, "%s: not an adapter file: no lora_down/lora_up, lora_A/lora_B or lora.down/lora.up "
                     "tensor (first key: %s)", path, f.n ? f.entries[0].name : "none");
    AlphaMeta am;
    memset(&am, 0, sizeof am);
    if (st == SL_OK) st = alpha_meta_open(&am, &f, ctx);
    if (st == SL_OK) st = load_groups(ad, &f, g, ng, sites, opts, &am, &er, ctx);
    alpha_meta_close(&am);
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

/* Index of the most common value among v[idx[0..n)], the first seen on ties (Python's
 * Counter.most_common, which diffusers' get_peft_kwargs uses for r and lora_alpha). */
static int most_common(const double *v, const int *idx, int n) {
    int best = 0, best_n = 0;
    for (int i = 0; i < n; i++) {
        int c = 0;
        for (int j = 0; j < n; j++) c += v[idx[j]] == v[idx[i]];
        if (c > best_n) { best = i; best_n = c; }
    }
    return best;
}

static const SlLoraMod *g_cmp_mods;
static int cmp_mod_name(const void *a, const void *b) {
    return strcmp(g_cmp_mods[*(const int *)a].name, g_cmp_mods[*(const int *)b].name);
}

/* lora_adapter_metadata as diffusers' save_lora_weights writes it: per component ("unet",
 * "text_encoder", "text_encoder_2") the LoraConfig fields r, lora_alpha (the most common
 * values), rank_pattern / alpha_pattern (the modules that differ), target_modules,
 * use_dora, use_rslora, each key prefixed "<component>." (_pack_dict_with_prefix), keys sorted
 * as json.dumps(sort_keys=True) sorts them (printed compact: json.loads reads both).
 * *out is malloc'd. */
static SlStatus peft_meta_build(const SlAdapter *ad, char **out, SlCtx *ctx) {
    static const char *const k_ns[] = {"text_encoder", "text_encoder_2", "unet"};   /* sorted */
    *out = NULL;
    int *idx = malloc(sizeof(int) * (size_t)ad->n);
    double *rv = malloc(sizeof(double) * (size_t)ad->n * 2), *av = rv ? rv + ad->n : NULL;
    cJSON *root = cJSON_CreateObject();
    SlStatus st = idx && rv && root ? SL_OK : sl_fail(ctx, SL_ERR_NOMEM, "save: out of memory");
    for (int i = 0; st == SL_OK && i < ad->n; i++) {
        rv[i] = (double)ad->mods[i].r;
        av[i] = (double)ad->mods[i].alpha;
    }
    for (size_t s = 0; st == SL_OK && s < sizeof k_ns / sizeof k_ns[0]; s++) {
        const size_t lns = strlen(k_ns[s]);
        int n = 0, all_dora = 1;
        for (int i = 0; i < ad->n; i++)
            if (!strncmp(ad->mods[i].name, k_ns[s], lns) && ad->mods[i].name[lns] == '.') {
                idx[n++] = i;
                all_dora &= ad->mods[i].mag != NULL;
            }
        if (!n) continue;
        g_cmp_mods = ad->mods;
        qsort(idx, (size_t)n, sizeof *idx, cmp_mod_name);
        const int mr = idx[most_common(rv, idx, n)], ma = idx[most_common(av, idx, n)];
        cJSON *ap = cJSON_CreateObject(), *rp = cJSON_CreateObject(), *tm = cJSON_CreateArray();
        for (int j = 0; ap && rp && tm && j < n; j++) {
            const char *rel = ad->mods[idx[j]].name + lns + 1;
            if (av[idx[j]] != av[ma]) cJSON_AddNumberToObject(ap, rel, av[idx[j]]);
            if (rv[idx[j]] != rv[mr]) cJSON_AddNumberToObject(rp, rel, rv[idx[j]]);
            cJSON_AddItemToArray(tm, cJSON_CreateString(rel));
        }
        char key[64];
#define SL_PUT(field, item) (snprintf(key, sizeof key, "%s.%s", k_ns[s], field), cJSON_AddItemToObject(root, key, item))
        SL_PUT("alpha_pattern", ap);
        SL_PUT("lora_alpha", cJSON_CreateNumber(av[ma]));
        SL_PUT("r", cJSON_CreateNumber(rv[mr]));
        SL_PUT("rank_pattern", rp);
        SL_PUT("target_modules", tm);
        SL_PUT("use_dora", cJSON_CreateBool(all_dora));
        SL_PUT("use_rslora", cJSON_CreateBool(ad->rslora));
#undef SL_PUT
    }
    if (st == SL_OK && !(*out = cJSON_PrintUnformatted(root))) st = sl_fail(ctx, SL_ERR_NOMEM, "save: out of memory");
    cJSON_Delete(root);
    free(idx);
    free(rv);
    return st;
}

/* Metadata that sl_adapter_save derives from the modules: a stale copy carried from the
 * loaded file would outrank the tensors' own alphas (see module_alpha) or, for kohya's
 * ss_network_alpha / ss_network_dim in a PEFT file, contradict lora_adapter_metadata. */
static int derived_meta(const char *key, SlAdapterFormat fmt) {
    return !strcmp(key, SL_META_PEFT) || !strcmp(key, SL_META_ALPHA) || !strcmp(key, SL_META_ALPHA_PATTERN) ||
           !strcmp(key, SL_META_RSLORA) ||
           (fmt == SL_ADAPTER_FMT_PEFT && (!strcmp(key, "ss_network_alpha") || !strcmp(key, "ss_network_dim")));
}

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
        }
    }
    char buf[128];
    for (int i = 0; i < ad->n_meta && st == SL_OK; i++)
        if (!derived_meta(ad->meta_keys[i], fmt)) st = sl_st_writer_meta(&w, ad->meta_keys[i], ad->meta_vals[i], ctx);
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
        char *js = NULL;
        st = peft_meta_build(ad, &js, ctx);
        if (st == SL_OK) st = sl_st_writer_meta(&w, SL_META_PEFT, js, ctx);
        if (st == SL_OK) st = sl_st_writer_meta(&w, "format", "pt", ctx);   /* as safetensors.torch.save_file callers set it */
        if (st == SL_OK) st = sl_st_writer_meta(&w, SL_META_FORMAT, "peft", ctx);
        free(js);
    }
    if (st == SL_OK) st = sl_st_writer_save(&w, path, ctx);
    sl_st_writer_free(&w);
    free(alphas);
    return st;
}
