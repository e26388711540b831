/* clip.c - CLIP text transformer: config, weight layouts, forward. See clip.h.
 *
 * Every weight tensor is one row of a key table (name in each layout, shape
 * class, where its pointer lives, how to initialize it at random). Planning
 * the weight arena, pointing the params into it, loading, building the key
 * maps of the other layouts and random initialization all walk that table,
 * so a tensor cannot be planned but not loaded, or loaded but not mapped.
 *
 * Dimension letters: B, T, D, F, L, NH, HD, V, P as in clip.h; N = B*T rows.
 */
#include "clip.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "nn/nn.h"

/* ---- config ---- */

SlStatus sl_clip_config_read(SlClipConfig *c, const SlConfig *j, SlCtx *ctx) {
    memset(c, 0, sizeof *c);
    /* Defaults are transformers' CLIPTextConfig defaults; bounds reject absurd sizes early. */
    SL_TRY(sl_config_int(j, "hidden_size", 512, 1, 16384, &c->D, ctx));
    SL_TRY(sl_config_int(j, "intermediate_size", 2048, 1, 262144, &c->F, ctx));
    SL_TRY(sl_config_int(j, "num_hidden_layers", 12, 1, 512, &c->L, ctx));
    SL_TRY(sl_config_int(j, "num_attention_heads", 8, 1, 1024, &c->NH, ctx));
    SL_TRY(sl_config_int(j, "max_position_embeddings", 77, 1, 65536, &c->P, ctx));
    SL_TRY(sl_config_int(j, "vocab_size", 49408, 1, 16777216, &c->V, ctx));
    SL_TRY(sl_config_int(j, "bos_token_id", 49406, 0, INT32_MAX, &c->bos_id, ctx));
    SL_TRY(sl_config_int(j, "eos_token_id", 49407, 0, INT32_MAX, &c->eos_id, ctx));
    SL_TRY(sl_config_int(j, "pad_token_id", 1, 0, INT32_MAX, &c->pad_id, ctx));
    double eps;
    SL_TRY(sl_config_num(j, "layer_norm_eps", 1e-5, &eps, ctx));
    if (!(eps > 0 && eps < 1))
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: key 'layer_norm_eps' is %g, expected a value in (0, 1)", j->path, eps);
    c->eps = (float)eps;
    const char *act;
    SL_TRY(sl_config_str(j, "hidden_act", "quick_gelu", &act, ctx));
    if (strcmp(act, "quick_gelu") == 0)
        c->act = SL_CLIP_ACT_QUICK_GELU;
    else if (strcmp(act, "gelu") == 0)
        c->act = SL_CLIP_ACT_GELU;
    else
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: key 'hidden_act' is '%s'; supported: quick_gelu, gelu", j->path,
                       act);
    if (c->D % c->NH != 0)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld",
                       j->path, (long long)c->D, (long long)c->NH);
    const int64_t limit = (int64_t)1 << 32; /* 16 GiB of F32 weights */
    if (sl_clip_param_count(c) > limit)
        return sl_fail(ctx, SL_ERR_NOMEM, "%s: %lld parameters, more than the %lld supported", j->path,
                       (long long)sl_clip_param_count(c), (long long)limit);
    return SL_OK;
}

SlStatus sl_clip_config_load(SlClipConfig *cfg, const char *config_json, SlCtx *ctx) {
    SlConfig j;
    SL_TRY(sl_config_load(&j, config_json, ctx));
    SlStatus st = sl_clip_config_read(cfg, &j, ctx);
    sl_config_free(&j);
    return st;
}

void sl_clip_config_preset(SlClipConfig *cfg, SlClipPreset preset) {
    static const SlClipConfig presets[] = {
        [SL_CLIP_PRESET_SD1] = {.D = 768, .F = 3072, .L = 12, .NH = 12, .P = 77, .V = 49408,
                                .act = SL_CLIP_ACT_QUICK_GELU, .eps = 1e-5f, .bos_id = 0, .eos_id = 2, .pad_id = 1},
        [SL_CLIP_PRESET_SD2] = {.D = 1024, .F = 4096, .L = 23, .NH = 16, .P = 77, .V = 49408,
                                .act = SL_CLIP_ACT_GELU, .eps = 1e-5f, .bos_id = 0, .eos_id = 2, .pad_id = 1},
    };
    *cfg = presets[preset];
}

/* ---- the key table ---- */

typedef enum ClipShape { SHP_D, SHP_F, SHP_DD, SHP_FD, SHP_DF, SHP_VD, SHP_PD } ClipShape;
/* transformers' CLIPPreTrainedModel._init_weights (initializer_factor 1). */
typedef enum ClipInit { INIT_ZERO, INIT_ONE, INIT_EMB, INIT_ATTN_IN, INIT_ATTN_OUT, INIT_FC1, INIT_FC2 } ClipInit;

typedef struct ClipKey {
    const char *hf;        /* transformers name, below "text_model." (layer rows: below "...layers.{i}.") */
    const char *openclip;  /* OpenCLIP name (layer rows: below "transformer.resblocks.{i}.") */
    int part, nparts;      /* the OpenCLIP tensor stacks nparts blocks along dim 0; this is block `part` */
    ClipShape shape;
    size_t offset;         /* of the float* in SlClipParams (global rows) or SlClipLayer (layer rows) */
    ClipInit init;
} ClipKey;

static const ClipKey clip_global_keys[] = {
    {"embeddings.token_embedding.weight", "token_embedding.weight", 0, 1, SHP_VD, offsetof(SlClipParams, tok_emb), INIT_EMB},
    {"embeddings.position_embedding.weight", "positional_embedding", 0, 1, SHP_PD, offsetof(SlClipParams, pos_emb), INIT_EMB},
    {"final_layer_norm.weight", "ln_final.weight", 0, 1, SHP_D, offsetof(SlClipParams, lnf_w), INIT_ONE},
    {"final_layer_norm.bias", "ln_final.bias", 0, 1, SHP_D, offsetof(SlClipParams, lnf_b), INIT_ZERO},
};

static const ClipKey clip_layer_keys[] = {
    {"layer_norm1.weight", "ln_1.weight", 0, 1, SHP_D, offsetof(SlClipLayer, ln1_w), INIT_ONE},
    {"layer_norm1.bias", "ln_1.bias", 0, 1, SHP_D, offsetof(SlClipLayer, ln1_b), INIT_ZERO},
    {"self_attn.q_proj.weight", "attn.in_proj_weight", 0, 3, SHP_DD, offsetof(SlClipLayer, q.w), INIT_ATTN_IN},
    {"self_attn.q_proj.bias", "attn.in_proj_bias", 0, 3, SHP_D, offsetof(SlClipLayer, q.b), INIT_ZERO},
    {"self_attn.k_proj.weight", "attn.in_proj_weight", 1, 3, SHP_DD, offsetof(SlClipLayer, k.w), INIT_ATTN_IN},
    {"self_attn.k_proj.bias", "attn.in_proj_bias", 1, 3, SHP_D, offsetof(SlClipLayer, k.b), INIT_ZERO},
    {"self_attn.v_proj.weight", "attn.in_proj_weight", 2, 3, SHP_DD, offsetof(SlClipLayer, v.w), INIT_ATTN_IN},
    {"self_attn.v_proj.bias", "attn.in_proj_bias", 2, 3, SHP_D, offsetof(SlClipLayer, v.b), INIT_ZERO},
    {"self_attn.out_proj.weight", "attn.out_proj.weight", 0, 1, SHP_DD, offsetof(SlClipLayer, o.w), INIT_ATTN_OUT},
    {"self_attn.out_proj.bias", "attn.out_proj.bias", 0, 1, SHP_D, offsetof(SlClipLayer, o.b), INIT_ZERO},
    {"layer_norm2.weight", "ln_2.weight", 0, 1, SHP_D, offsetof(SlClipLayer, ln2_w), INIT_ONE},
    {"layer_norm2.bias", "ln_2.bias", 0, 1, SHP_D, offsetof(SlClipLayer, ln2_b), INIT_ZERO},
    {"mlp.fc1.weight", "mlp.c_fc.weight", 0, 1, SHP_FD, offsetof(SlClipLayer, fc1.w), INIT_FC1},
    {"mlp.fc1.bias", "mlp.c_fc.bias", 0, 1, SHP_F, offsetof(SlClipLayer, fc1.b), INIT_ZERO},
    {"mlp.fc2.weight", "mlp.c_proj.weight", 0, 1, SHP_DF, offsetof(SlClipLayer, fc2.w), INIT_FC2},
    {"mlp.fc2.bias", "mlp.c_proj.bias", 0, 1, SHP_D, offsetof(SlClipLayer, fc2.b), INIT_ZERO},
};

#define N_GLOBAL_KEYS ((int)(sizeof clip_global_keys / sizeof clip_global_keys[0]))
#define N_LAYER_KEYS ((int)(sizeof clip_layer_keys / sizeof clip_layer_keys[0]))

static int clip_shape(const SlClipConfig *c, ClipShape s, int64_t shape[2]) {
    switch (s) {
    case SHP_D: shape[0] = c->D; return 1;
    case SHP_F: shape[0] = c->F; return 1;
    case SHP_DD: shape[0] = c->D; shape[1] = c->D; return 2;
    case SHP_FD: shape[0] = c->F; shape[1] = c->D; return 2;
    case SHP_DF: shape[0] = c->D; shape[1] = c->F; return 2;
    case SHP_VD: shape[0] = c->V; shape[1] = c->D; return 2;
    case SHP_PD: shape[0] = c->P; shape[1] = c->D; return 2;
    }
    return 0;
}

static int64_t clip_numel(const SlClipConfig *c, ClipShape s) {
    int64_t shape[2] = {1, 1};
    clip_shape(c, s, shape);
    return shape[0] * shape[1];
}

/* One concrete tensor: row `key` of layer `layer` (-1 for global rows). */
typedef struct ClipSlot {
    const ClipKey *key;
    int layer;
    float **ptr;
} ClipSlot;

/* Calls fn on every tensor in table order; stops at the first failure. */
typedef SlStatus (*ClipSlotFn)(SlClip *m, const ClipSlot *s, int index, void *user, SlCtx *ctx);

static SlStatus clip_walk(SlClip *m, ClipSlotFn fn, void *user, SlCtx *ctx) {
    int index = 0;
    for (int g = 0; g < N_GLOBAL_KEYS; g++) {
        ClipSlot s = {&clip_global_keys[g], -1, (float **)((char *)&m->params + clip_global_keys[g].offset)};
        SL_TRY(fn(m, &s, index++, user, ctx));
    }
    for (int i = 0; i < m->cfg.L; i++)
        for (int r = 0; r < N_LAYER_KEYS; r++) {
            ClipSlot s = {&clip_layer_keys[r], i, (float **)((char *)&m->params.layers[i] + clip_layer_keys[r].offset)};
            SL_TRY(fn(m, &s, index++, user, ctx));
        }
    return SL_OK;
}

/* Full name of s in layout l (HF spelling for AUTO). */
static void clip_slot_name(const ClipSlot *s, SlClipLayout l, char *buf, size_t n) {
    const char *hf_root = l == SL_CLIP_LAYOUT_HF_BARE ? "" : "text_model.";
    if (l == SL_CLIP_LAYOUT_OPENCLIP) {
        if (s->layer < 0) snprintf(buf, n, "%s", s->key->openclip);
        else snprintf(buf, n, "transformer.resblocks.%d.%s", s->layer, s->key->openclip);
    } else {
        if (s->layer < 0) snprintf(buf, n, "%s%s", hf_root, s->key->hf);
        else snprintf(buf, n, "%sencoder.layers.%d.%s", hf_root, s->layer, s->key->hf);
    }
}

int64_t sl_clip_param_count(const SlClipConfig *c) {
    int64_t n = 0;
    for (int g = 0; g < N_GLOBAL_KEYS; g++) n += clip_numel(c, clip_global_keys[g].shape);
    for (int r = 0; r < N_LAYER_KEYS; r++) n += c->L * clip_numel(c, clip_layer_keys[r].shape);
    return n;
}

/* ---- building the model ---- */

static SlStatus plan_slot(SlClip *m, const ClipSlot *s, int index, void *user, SlCtx *ctx) {
    (void)index; (void)ctx;
    *(size_t *)user += sl_align_up((size_t)clip_numel(&m->cfg, s->key->shape) * sizeof(float));
    return SL_OK;
}

static SlStatus take_slot(SlClip *m, const ClipSlot *s, int index, void *user, SlCtx *ctx) {
    (void)index; (void)user;
    *s->ptr = sl_arena_take_f32(&m->weights, clip_numel(&m->cfg, s->key->shape));
    if (!*s->ptr) return sl_fail(ctx, SL_ERR_NOMEM, "CLIP weight arena too small (planning bug)");
    return SL_OK;
}

/* Allocates the model and its weight arena, pointers set, weights zero. */
static SlStatus clip_alloc(SlClip **out, const SlClipConfig *cfg, SlCtx *ctx) {
    *out = NULL;
    SlClip *m = calloc(1, sizeof *m);
    if (!m) return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the CLIP model");
    m->cfg = *cfg;
    m->params.layers = calloc((size_t)cfg->L, sizeof(SlClipLayer));
    if (!m->params.layers) { free(m); return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the CLIP layers"); }
    size_t bytes = 0;
    SlStatus st = clip_walk(m, plan_slot, &bytes, ctx);
    if (!st) st = sl_arena_init(&m->weights, bytes, "CLIP text encoder weights", ctx);
    if (!st) st = clip_walk(m, take_slot, NULL, ctx);
    if (st) { sl_clip_free(m); return st; }
    const int64_t D = cfg->D, F = cfg->F;
    for (int i = 0; i < cfg->L; i++) {
        SlClipLayer *ly = &m->params.layers[i];
        ly->q.I = ly->k.I = ly->v.I = ly->o.I = D;
        ly->q.O = ly->k.O = ly->v.O = ly->o.O = D;
        ly->fc1.I = D; ly->fc1.O = F;
        ly->fc2.I = F; ly->fc2.O = D;
    }
    *out = m;
    return SL_OK;
}

void sl_clip_free(SlClip *m) {
    if (!m) return;
    sl_arena_free(&m->weights);
    sl_arena_free(&m->acts_arena);
    free(m->params.layers);
    free(m);
}

const char *sl_clip_layout_name(SlClipLayout l) {
    switch (l) {
    case SL_CLIP_LAYOUT_AUTO: return "auto";
    case SL_CLIP_LAYOUT_HF: return "transformers (text_model.*)";
    case SL_CLIP_LAYOUT_HF_BARE: return "transformers without text_model.";
    case SL_CLIP_LAYOUT_OPENCLIP: return "OpenCLIP";
    }
    return "?";
}

/* The layout whose token-embedding key w holds (w must have no map yet). */
static SlStatus clip_detect_layout(SlWeights *w, SlClipLayout *l, SlCtx *ctx) {
    static const struct { SlClipLayout layout; const char *probe; } probes[] = {
        {SL_CLIP_LAYOUT_HF, "text_model.embeddings.token_embedding.weight"},
        {SL_CLIP_LAYOUT_HF_BARE, "embeddings.token_embedding.weight"},
        {SL_CLIP_LAYOUT_OPENCLIP, "token_embedding.weight"},
    };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
        if (sl_weights_find(w, probes[i].probe, NULL)) { *l = probes[i].layout; return SL_OK; }
    return sl_fail(ctx, SL_ERR_MISSING,
                   "%s: no CLIP text encoder under prefix '%s' (looked for text_model.embeddings.token_embedding.weight, "
                   "embeddings.token_embedding.weight, token_embedding.weight)", w->label, w->prefix);
}

typedef struct MapBuild {
    SlClipLayout layout;
    SlKeyPair *pairs;
    char *names;      /* [n][2][CLIP_NAME_MAX] */
    int n;
} MapBuild;

#define CLIP_NAME_MAX 160

static SlStatus map_slot(SlClip *m, const ClipSlot *s, int index, void *user, SlCtx *ctx) {
    (void)m; (void)ctx;
    MapBuild *b = user;
    char *from = b->names + (size_t)index * 2 * CLIP_NAME_MAX, *to = from + CLIP_NAME_MAX;
    clip_slot_name(s, SL_CLIP_LAYOUT_HF, from, CLIP_NAME_MAX);
    clip_slot_name(s, b->layout, to, CLIP_NAME_MAX);
    b->pairs[index].from = from;
    b->pairs[index].to = to;
    b->n = index + 1;
    return SL_OK;
}

/* Installs on w the map transformers name -> name in `layout` (built from the table). */
static SlStatus clip_install_map(SlClip *m, SlWeights *w, SlClipLayout layout, SlCtx *ctx) {
    int n = N_GLOBAL_KEYS + (int)m->cfg.L * N_LAYER_KEYS;
    MapBuild b = {layout, calloc((size_t)n, sizeof(SlKeyPair)), calloc((size_t)n * 2, CLIP_NAME_MAX), 0};
    SlStatus st = SL_OK;
    if (!b.pairs || !b.names) st = sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the CLIP key map");
    if (!st) st = clip_walk(m, map_slot, &b, ctx);
    if (!st) st = sl_weights_set_map(w, b.pairs, b.n, ctx);
    free(b.pairs);
    free(b.names);
    return st;
}

typedef struct LoadCtx {
    SlWeights *w;
    SlClipLayout layout;
} LoadCtx;

/* Loads block `part` of `nparts` (rows along dim 0) of the tensor that `name` maps to. */
static SlStatus load_rows_part(SlWeights *w, const char *name, int part, int nparts, int ndim, const int64_t *shape,
                               float *dst, SlCtx *ctx) {
    const SlStFile *f = NULL;
    const SlStEntry *e = sl_weights_find(w, name, &f);
    char full[1024];
    const char *mapped = name;
    for (int i = 0; i < w->n_map; i++)
        if (strcmp(w->map[i].from, name) == 0) { mapped = w->map[i].to; break; }
    snprintf(full, sizeof full, "%s%s", w->prefix, mapped);
    if (!e) return sl_fail(ctx, SL_ERR_MISSING, "%s: missing weight '%s' (looked for '%s')", w->label, name, full);
    int same = e->ndim == ndim && e->shape[0] == nparts * shape[0];
    for (int i = 1; same && i < ndim; i++) same = e->shape[i] == shape[i];
    if (!same) {
        int64_t want[SL_MAX_DIMS];
        for (int i = 0; i < ndim; i++) want[i] = shape[i];
        want[0] *= nparts;
        char a[128], b[128];
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: tensor '%s' (for '%s', part %d of %d along dim 0) has shape %s, expected %s",
                       f->path, full, name, part, nparts, sl_shape_str(e->ndim, e->shape, a, sizeof a),
                       sl_shape_str(ndim, want, b, sizeof b));
    }
    /* A view of the rows [part*shape0, (part+1)*shape0): same dtype, shorter dim 0, later offset. */
    SlStEntry sub = *e;
    sub.shape[0] = shape[0];
    sub.nbytes = e->nbytes / (size_t)nparts;
    sub.offset = e->offset + (size_t)part * sub.nbytes;
    return sl_st_read_f32(f, &sub, dst, ctx);
}

static SlStatus load_slot(SlClip *m, const ClipSlot *s, int index, void *user, SlCtx *ctx) {
    (void)index;
    LoadCtx *lc = user;
    char name[CLIP_NAME_MAX];
    clip_slot_name(s, SL_CLIP_LAYOUT_HF, name, sizeof name);
    int64_t shape[2];
    int ndim = clip_shape(&m->cfg, s->key->shape, shape);
    if (lc->layout == SL_CLIP_LAYOUT_OPENCLIP && s->key->nparts > 1)
        SL_TRY(load_rows_part(lc->w, name, s->key->part, s->key->nparts, ndim, shape, *s->ptr, ctx));
    else
        SL_TRY(sl_weights_load(lc->w, name, ndim, shape, *s->ptr, ctx));
    return sl_weights_check_finite(lc->w, "text encoder", name, *s->ptr, (size_t)clip_numel(&m->cfg, s->key->shape), 0,
                                   ctx);
}

/* Tensors that checkpoints of a layout carry but a text encoder does not use: marked read
 * (not reported as unused) when present. */
static const struct { SlClipLayout layout; const char *name; } clip_ignored_keys[] = {
    {SL_CLIP_LAYOUT_HF, "text_model.embeddings.position_ids"}, /* a buffer older transformers saved */
    {SL_CLIP_LAYOUT_HF_BARE, "embeddings.position_ids"},
    {SL_CLIP_LAYOUT_OPENCLIP, "text_projection"},              /* used for CLIP's joint space only */
    {SL_CLIP_LAYOUT_OPENCLIP, "logit_scale"},
};

SlStatus sl_clip_load(SlClip **out, const SlClipConfig *cfg, SlWeights *w, SlClipLayout layout, SlCtx *ctx) {
    *out = NULL;
    if (layout == SL_CLIP_LAYOUT_AUTO) SL_TRY(clip_detect_layout(w, &layout, ctx));
    SlClip *m;
    SL_TRY(clip_alloc(&m, cfg, ctx));
    SlStatus st = SL_OK;
    if (layout != SL_CLIP_LAYOUT_HF) st = clip_install_map(m, w, layout, ctx);
    LoadCtx lc = {w, layout};
    if (!st) st = clip_walk(m, load_slot, &lc, ctx);
    if (st) {
        sl_fail_prefix(ctx, "CLIP text encoder (%s layout)", sl_clip_layout_name(layout));
        sl_clip_free(m);
        return st;
    }
    for (size_t i = 0; i < sizeof clip_ignored_keys / sizeof clip_ignored_keys[0]; i++)
        if (clip_ignored_keys[i].layout == layout) (void)sl_weights_find(w, clip_ignored_keys[i].name, NULL);
    m->n_unused = sl_weights_report_unused(w, 8, ctx);
    *out = m;
    return SL_OK;
}

static SlStatus init_slot(SlClip *m, const ClipSlot *s, int index, void *user, SlCtx *ctx) {
    (void)ctx;
    const SlClipConfig *c = &m->cfg;
    const uint64_t seed = *(const uint64_t *)user;
    const int64_t n = clip_numel(c, s->key->shape);
    float *p = *s->ptr;
    double std = 0;
    switch (s->key->init) {
    case INIT_ZERO: for (int64_t i = 0; i < n; i++) p[i] = 0.f; return SL_OK;
    case INIT_ONE: for (int64_t i = 0; i < n; i++) p[i] = 1.f; return SL_OK;
    case INIT_EMB: std = 0.02; break;
    case INIT_ATTN_IN: case INIT_FC2: std = pow((double)c->D, -0.5) * pow(2.0 * (double)c->L, -0.5); break;
    case INIT_ATTN_OUT: std = pow((double)c->D, -0.5); break;
    case INIT_FC1: std = pow(2.0 * (double)c->D, -0.5); break;
    }
    /* uniform in [-a, a) with a = std*sqrt(3): that std, at a fraction of Box-Muller's cost */
    sl_rng_uniform(p, n, seed, (uint64_t)index, 0);
    const float a = (float)(std * sqrt(3.0));
    for (int64_t i = 0; i < n; i++) p[i] = a * (2.f * p[i] - 1.f);
    return SL_OK;
}

SlStatus sl_clip_init_random(SlClip **out, const SlClipConfig *cfg, uint64_t seed, SlCtx *ctx) {
    SL_TRY(clip_alloc(out, cfg, ctx));
    return clip_walk(*out, init_slot, &seed, ctx);
}

/* ---- activations ---- */

typedef struct ActsPlan {
    size_t x, ln, mean, q, att, proj, lse, h, work; /* floats */
} ActsPlan;

static ActsPlan acts_plan(const SlClipConfig *c, int64_t B, int64_t T) {
    const int64_t N = B * T;
    ActsPlan p = {0};
    p.x = p.ln = p.q = p.att = p.proj = (size_t)(N * c->D);
    p.mean = (size_t)N;
    p.lse = (size_t)(B * c->NH * T);
    p.h = (size_t)(N * c->F);
    p.work = sl_attention_workspace(B, T, T, c->NH, c->D / c->NH);
    return p;
}

void sl_clip_set_kernels(SlClip *m, const SlKernels *k) {
    const SlKernels none = {0};
    m->kern = k ? *k : none;
    for (int64_t i = 0; i < m->cfg.L; i++) {
        SlClipLayer *ly = &m->params.layers[i];
        SlLinear *mods[] = {&ly->q, &ly->k, &ly->v, &ly->o, &ly->fc1, &ly->fc2};
        for (size_t j = 0; j < sizeof mods / sizeof mods[0]; j++) mods[j]->kern = m->kern;
    }
}

size_t sl_clip_acts_bytes(const SlClipConfig *c, int64_t B, int64_t T) {
    ActsPlan p = acts_plan(c, B, T);
    size_t f = sizeof(float);
    return 5 * sl_align_up(p.x * f) + 2 * sl_align_up(p.q * f) /* k, v */ + 2 * sl_align_up(p.mean * f) +
           sl_align_up(p.lse * f) + sl_align_up(p.h * f) + sl_align_up((p.work ? p.work : 1) * f);
}

SlStatus sl_clip_reserve(SlClip *m, int B, int T, SlCtx *ctx) {
    if (B < 1 || T < 1) return sl_fail(ctx, SL_ERR_ARG, "CLIP: batch %d x %d tokens is empty", B, T);
    if (B <= m->cap_B && T <= m->cap_T) return SL_OK;
    if (B < m->cap_B) B = m->cap_B;
    if (T < m->cap_T) T = m->cap_T;
    const size_t bytes = sl_clip_acts_bytes(&m->cfg, B, T);
    ActsPlan p = acts_plan(&m->cfg, B, T);
    sl_arena_free(&m->acts_arena);
    m->cap_B = m->cap_T = 0;
    SL_TRY(sl_arena_init(&m->acts_arena, bytes, "CLIP text encoder activations", ctx));
    SlArena *a = &m->acts_arena;
    SlClipActs *s = &m->acts;
    s->x = sl_arena_take_f32(a, (int64_t)p.x);
    s->ln = sl_arena_take_f32(a, (int64_t)p.ln);
    s->q = sl_arena_take_f32(a, (int64_t)p.q);
    s->k = sl_arena_take_f32(a, (int64_t)p.q);
    s->v = sl_arena_take_f32(a, (int64_t)p.q);
    s->att = sl_arena_take_f32(a, (int64_t)p.att);
    s->proj = sl_arena_take_f32(a, (int64_t)p.proj);
    s->mean = sl_arena_take_f32(a, (int64_t)p.mean);
    s->rstd = sl_arena_take_f32(a, (int64_t)p.mean);
    s->lse = sl_arena_take_f32(a, (int64_t)p.lse);
    s->h = sl_arena_take_f32(a, (int64_t)p.h);
    s->work = sl_arena_take_f32(a, (int64_t)(p.work ? p.work : 1));
    if (!s->work) return sl_fail(ctx, SL_ERR_NOMEM, "CLIP activation arena too small (planning bug)");
    m->cap_B = B;
    m->cap_T = T;
    return SL_OK;
}

/* ---- forward ---- */

int sl_clip_pool_index(const int32_t *ids, int T, int64_t eos_id) {
    int best = 0;
    if (eos_id == 2) { /* legacy configs: the end-of-text token is the largest id (first one on ties) */
        for (int t = 1; t < T; t++)
            if (ids[t] > ids[best]) best = t;
        return best;
    }
    for (int t = 0; t < T; t++)
        if (ids[t] == eos_id) return t;
    return 0;
}

/* out [B,T,D] = in + attn(ln1(in)); out += mlp(ln2(out)). out may alias in. */
static void clip_block_forward(SlClip *m, const SlClipLayer *ly, float *out, const float *in, int64_t B, int64_t T) {
    const SlClipConfig *c = &m->cfg;
    SlClipActs *a = &m->acts;
    const int64_t N = B * T, D = c->D, HD = c->D / c->NH;
    sl_layernorm_forward(a->ln, a->mean, a->rstd, in, ly->ln1_w, ly->ln1_b, N, D, c->eps);
    sl_linmod_forward(&ly->q, a->q, a->ln, N);
    sl_linmod_forward(&ly->k, a->k, a->ln, N);
    sl_linmod_forward(&ly->v, a->v, a->ln, N);
    sl_attention_forward(a->att, a->lse, a->q, a->k, a->v, B, T, T, c->NH, HD, (float)(1.0 / sqrt((double)HD)), 1,
                         a->work, &m->kern);
    sl_linmod_forward(&ly->o, a->proj, a->att, N);
    for (int64_t i = 0; i < N * D; i++) out[i] = in[i] + a->proj[i];
    sl_layernorm_forward(a->ln, a->mean, a->rstd, out, ly->ln2_w, ly->ln2_b, N, D, c->eps);
    sl_linmod_forward(&ly->fc1, a->h, a->ln, N);
    if (c->act == SL_CLIP_ACT_GELU) sl_gelu_forward(a->h, a->h, N * c->F);
    else sl_quick_gelu_forward(a->h, a->h, N * c->F);
    sl_linmod_forward(&ly->fc2, a->proj, a->h, N);
    for (int64_t i = 0; i < N * D; i++) out[i] += a->proj[i];
}

SlStatus sl_clip_final_norm(SlClip *m, float *out, const float *in, int64_t N, SlCtx *ctx) {
    if (N < 1 || N > (int64_t)m->cap_B * m->cap_T)
        return sl_fail(ctx, SL_ERR_ARG, "CLIP final norm: %lld rows, activations reserved for %d", (long long)N,
                       m->cap_B * m->cap_T);
    sl_layernorm_forward(out, m->acts.mean, m->acts.rstd, in, m->params.lnf_w, m->params.lnf_b, N, m->cfg.D,
                         m->cfg.eps);
    return SL_OK;
}

SlStatus sl_clip_forward(SlClip *m, const int32_t *ids, int B, int T, float *last_hidden, float *hidden_states,
                         float *pooled, SlCtx *ctx) {
    const SlClipConfig *c = &m->cfg;
    if (B < 1 || T < 1) return sl_fail(ctx, SL_ERR_ARG, "CLIP: batch %d x %d tokens is empty", B, T);
    if (T > c->P)
        return sl_fail(ctx, SL_ERR_ARG, "CLIP: %d tokens, more than the %lld positions of the model", T,
                       (long long)c->P);
    for (int64_t i = 0; i < (int64_t)B * T; i++)
        if (ids[i] < 0 || ids[i] >= c->V)
            return sl_fail(ctx, SL_ERR_ARG, "CLIP: token id %d at [%lld,%lld] is outside the vocabulary [0,%lld)",
                           (int)ids[i], (long long)(i / T), (long long)(i % T), (long long)c->V);
    SL_TRY(sl_clip_reserve(m, B, T, ctx));
    const int64_t D = c->D, N = (int64_t)B * T;
    const size_t NBD = (size_t)(N * D);

    float *x = hidden_states ? hidden_states : m->acts.x; /* [B,T,D] hidden state 0 */
    for (int64_t n = 0; n < N; n++) {
        const float *te = m->params.tok_emb + (int64_t)ids[n] * D, *pe = m->params.pos_emb + (n % T) * D;
        float *row = x + n * D;
        for (int64_t d = 0; d < D; d++) row[d] = te[d] + pe[d];
    }
    for (int i = 0; i < c->L; i++) {
        float *in = hidden_states ? hidden_states + (size_t)i * NBD : m->acts.x;
        float *out = hidden_states ? hidden_states + (size_t)(i + 1) * NBD : m->acts.x;
        clip_block_forward(m, &m->params.layers[i], out, in, B, T);
    }
    const float *top = hidden_states ? hidden_states + (size_t)c->L * NBD : m->acts.x;
    sl_layernorm_forward(last_hidden, m->acts.mean, m->acts.rstd, top, m->params.lnf_w, m->params.lnf_b, N, D, c->eps);
    if (pooled)
        for (int b = 0; b < B; b++) {
            int t = sl_clip_pool_index(ids + (size_t)b * T, T, c->eos_id);
            memcpy(pooled + (size_t)b * D, last_hidden + ((size_t)b * T + t) * D, (size_t)D * sizeof(float));
        }
    return SL_OK;
}
