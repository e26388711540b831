/* unet.c - U-Net construction, weights, activation planning and forward.
 *
 * Construction runs twice over the config (count, then fill): it creates the
 * modules, one named SlUNetParam per weight tensor (diffusers key), one
 * SlUNetModRef per Linear/Conv (for hooks), and the layer list in execution
 * order with the index of the layer(s) each one reads. Planning gives every
 * layer its output buffer and every module its caches, all in one arena.
 * Forward walks the layer list; backward (unet_backward.c) walks it in reverse.
 *
 * Dimension letters: B batch, C channels, H/W height/width, S = H*W,
 * N = B*S token rows, T text tokens, D cross-attention width.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "unet.h"
#include "unet_internal.h"

/* ---------------------------------------------------------------- build -- */

typedef struct Build {
    SlUNet *u;
    int fill;         /* 0: count only */
    SlUNetResnet dres;
    SlUNetTransformer dtr;
    SlUNetSampler dsmp;
    SlUNetConcat dcat;
    SlUNetTBlock dtb;
    SlLinear dlin;
} Build;

static void add_param(Build *b, const char *name, const char *suffix, int ndim, const int64_t *shape,
                      float **w, float **g) {
    SlUNet *u = b->u;
    if (b->fill) {
        SlUNetParam *p = &u->params[u->n_params];
        snprintf(p->name, sizeof p->name, "%s%s", name, suffix);
        p->ndim = ndim;
        for (int i = 0; i < ndim; i++) p->shape[i] = shape[i];
        p->w = w;
        p->g = g;
    }
    u->n_params++;
}

static void add_mod(Build *b, const char *name, SlLinear *lin, SlConv2d *conv) {
    SlUNet *u = b->u;
    if (b->fill) {
        SlUNetModRef *m = &u->mods[u->n_mods];
        snprintf(m->name, sizeof m->name, "%s", name);
        m->lin = lin;
        m->conv = conv;
    }
    u->n_mods++;
}

static void mk_linear(Build *b, SlLinear *m, const char *name, int64_t I, int64_t O, int bias, int conv1x1) {
    memset(m, 0, sizeof *m);
    m->I = I;
    m->O = O;
    m->conv1x1 = conv1x1;
    int64_t ws[4] = {O, I, 1, 1}, bs[1] = {O};
    add_param(b, name, ".weight", conv1x1 ? 4 : 2, ws, &m->w, &m->dw);
    if (bias) add_param(b, name, ".bias", 1, bs, &m->b, &m->db);
    add_mod(b, name, m, NULL);
}

static void mk_conv(Build *b, SlConv2d *m, const char *name, int64_t Ci, int64_t Co, int64_t k, int64_t stride,
                    int64_t pad) {
    memset(m, 0, sizeof *m);
    m->Ci = Ci;
    m->Co = Co;
    m->k = k;
    m->stride = stride;
    m->pad = pad;
    int64_t ws[4] = {Co, Ci, k, k}, bs[1] = {Co};
    add_param(b, name, ".weight", 4, ws, &m->w, &m->dw);
    add_param(b, name, ".bias", 1, bs, &m->b, &m->db);
    add_mod(b, name, NULL, m);
}

static void mk_norm(Build *b, SlUNetNorm *n, const char *name, int64_t C, int64_t G, float eps) {
    memset(n, 0, sizeof *n);
    n->C = C;
    n->G = G;
    n->eps = eps;
    int64_t s[1] = {C};
    add_param(b, name, ".weight", 1, s, &n->g, &n->dg);
    add_param(b, name, ".bias", 1, s, &n->b, &n->db);
}

static int add_layer(Build *b, SlUNetLayerKind kind, int index, int src, int src2, int64_t C, int64_t H,
                     int64_t W) {
    SlUNet *u = b->u;
    if (b->fill) {
        SlUNetLayer *l = &u->layers[u->n_layers];
        memset(l, 0, sizeof *l);
        l->kind = kind;
        l->index = index;
        l->src = src;
        l->src2 = src2;
        l->C = C;
        l->H = H;
        l->W = W;
    }
    return u->n_layers++;
}

static int mk_resnet(Build *b, const char *name, int src, int64_t Ci, int64_t Co, int64_t H, int64_t W) {
    SlUNet *u = b->u;
    const SlUNetConfig *c = &u->cfg;
    int idx = u->n_res++;
    SlUNetResnet *r = b->fill ? &u->res[idx] : &b->dres;
    memset(r, 0, sizeof *r);
    r->Ci = Ci;
    r->Co = Co;
    r->H = H;
    r->W = W;
    char nm[160];
    snprintf(nm, sizeof nm, "%s.norm1", name);
    mk_norm(b, &r->norm1, nm, Ci, c->groups, c->eps);
    snprintf(nm, sizeof nm, "%s.conv1", name);
    mk_conv(b, &r->conv1, nm, Ci, Co, 3, 1, 1);
    snprintf(nm, sizeof nm, "%s.time_emb_proj", name);
    mk_linear(b, &r->temb, nm, c->time_dim, Co, 1, 0);
    snprintf(nm, sizeof nm, "%s.norm2", name);
    mk_norm(b, &r->norm2, nm, Co, c->groups, c->eps);
    snprintf(nm, sizeof nm, "%s.conv2", name);
    mk_conv(b, &r->conv2, nm, Co, Co, 3, 1, 1);
    r->has_shortcut = Ci != Co;
    if (r->has_shortcut) {
        snprintf(nm, sizeof nm, "%s.conv_shortcut", name);
        mk_conv(b, &r->shortcut, nm, Ci, Co, 1, 1, 0);
    }
    return add_layer(b, SL_UL_RESNET, idx, src, -1, Co, H, W);
}

static void mk_attn(Build *b, SlLinear *q, SlLinear *k, SlLinear *v, SlLinear *o, const char *name, int64_t C,
                    int64_t Dk) {
    char nm[200];
    snprintf(nm, sizeof nm, "%s.to_q", name);
    mk_linear(b, q, nm, C, C, 0, 0);
    snprintf(nm, sizeof nm, "%s.to_k", name);
    mk_linear(b, k, nm, Dk, C, 0, 0);
    snprintf(nm, sizeof nm, "%s.to_v", name);
    mk_linear(b, v, nm, Dk, C, 0, 0);
    snprintf(nm, sizeof nm, "%s.to_out.0", name);
    mk_linear(b, o, nm, C, C, 1, 0);
}

static int mk_transformer(Build *b, const char *name, int src, int64_t C, int64_t heads, int64_t nt, int64_t H,
                          int64_t W) {
    SlUNet *u = b->u;
    const SlUNetConfig *c = &u->cfg;
    int idx = u->n_tr++;
    SlUNetTransformer *t = b->fill ? &u->tr[idx] : &b->dtr;
    SlUNetTBlock *tbs = t->tb; /* allocated before the fill pass */
    memset(t, 0, sizeof *t);
    t->tb = tbs;
    t->C = C;
    t->H = H;
    t->W = W;
    t->heads = heads;
    t->n_tblocks = nt;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.norm", name);
    mk_norm(b, &t->norm, nm, C, c->groups, 1e-6f);
    snprintf(nm, sizeof nm, "%s.proj_in", name);
    mk_linear(b, &t->proj_in, nm, C, C, 1, !c->linear_proj);
    for (int64_t i = 0; i < nt; i++) {
        SlUNetTBlock *tb = b->fill ? &t->tb[i] : &b->dtb;
        memset(tb, 0, sizeof *tb);
        char base[160];
        snprintf(base, sizeof base, "%s.transformer_blocks.%lld", name, (long long)i);
        snprintf(nm, sizeof nm, "%s.norm1", base);
        mk_norm(b, &tb->ln1, nm, C, 0, 1e-5f);
        snprintf(nm, sizeof nm, "%s.attn1", base);
        mk_attn(b, &tb->q1, &tb->k1, &tb->v1, &tb->o1, nm, C, C);
        snprintf(nm, sizeof nm, "%s.norm2", base);
        mk_norm(b, &tb->ln2, nm, C, 0, 1e-5f);
        snprintf(nm, sizeof nm, "%s.attn2", base);
        mk_attn(b, &tb->q2, &tb->k2, &tb->v2, &tb->o2, nm, C, c->cross_dim);
        snprintf(nm, sizeof nm, "%s.norm3", base);
        mk_norm(b, &tb->ln3, nm, C, 0, 1e-5f);
        snprintf(nm, sizeof nm, "%s.ff.net.0.proj", base);
        mk_linear(b, &tb->ff1, nm, C, 8 * C, 1, 0);
        snprintf(nm, sizeof nm, "%s.ff.net.2", base);
        mk_linear(b, &tb->ff2, nm, 4 * C, C, 1, 0);
    }
    snprintf(nm, sizeof nm, "%s.proj_out", name);
    mk_linear(b, &t->proj_out, nm, C, C, 1, !c->linear_proj);
    return add_layer(b, SL_UL_TRANSFORMER, idx, src, -1, C, H, W);
}

static int mk_sampler(Build *b, const char *name, int src, int up, int64_t C, int64_t H, int64_t W) {
    SlUNet *u = b->u;
    int idx = u->n_smp++;
    SlUNetSampler *s = b->fill ? &u->smp[idx] : &b->dsmp;
    memset(s, 0, sizeof *s);
    s->up = up;
    s->C = C;
    s->H = H;
    s->W = W;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.conv", name);
    mk_conv(b, &s->conv, nm, C, C, 3, up ? 1 : 2, 1);
    return up ? add_layer(b, SL_UL_SAMPLER, idx, src, -1, C, 2 * H, 2 * W)
              : add_layer(b, SL_UL_SAMPLER, idx, src, -1, C, (H + 1) / 2, (W + 1) / 2);
}

static int mk_concat(Build *b, int src, int src2, int64_t Ca, int64_t Cb, int64_t H, int64_t W) {
    SlUNet *u = b->u;
    int idx = u->n_cat++;
    SlUNetConcat *k = b->fill ? &u->cat[idx] : &b->dcat;
    memset(k, 0, sizeof *k);
    k->Ca = Ca;
    k->Cb = Cb;
    k->S = H * W;
    return add_layer(b, SL_UL_CONCAT, idx, src, src2, Ca + Cb, H, W);
}

/* Builds the network for a nominal 1x1-per-level size; H/W of layers are in
 * units of the input size and are rescaled when planning (stored as
 * power-of-two divisors: H = -level). */
static void build(Build *b) {
    SlUNet *u = b->u;
    const SlUNetConfig *c = &u->cfg;
    const int nb = c->n_blocks;
    u->n_params = u->n_mods = u->n_res = u->n_tr = u->n_smp = u->n_cat = u->n_layers = 0;
    const int64_t c0 = c->block_out[0];
    mk_linear(b, &u->time1, "time_embedding.linear_1", c0, c->time_dim, 1, 0);
    mk_linear(b, &u->time2, "time_embedding.linear_2", c->time_dim, c->time_dim, 1, 0);
    mk_conv(b, &u->conv_in, "conv_in", c->in_channels, c0, 3, 1, 1);
    /* sizes: level L has H = -L (resolved by plan) */
    int cur = add_layer(b, SL_UL_CONV_IN, 0, -1, -1, c0, 0, 0);
    int skips[SL_UNET_MAX_BLOCKS * (SL_UNET_MAX_LAYERS + 1) + 1], ns = 0;
    int64_t skipc[SL_UNET_MAX_BLOCKS * (SL_UNET_MAX_LAYERS + 1) + 1];
    skips[ns] = cur;
    skipc[ns++] = c0;
    int64_t ch = c0;
    char nm[160];
    for (int i = 0; i < nb; i++) {
        int64_t co = c->block_out[i];
        for (int64_t j = 0; j < c->layers[i]; j++) {
            snprintf(nm, sizeof nm, "down_blocks.%d.resnets.%lld", i, (long long)j);
            cur = mk_resnet(b, nm, cur, ch, co, -i, -i);
            ch = co;
            if (c->down_attn[i]) {
                snprintf(nm, sizeof nm, "down_blocks.%d.attentions.%lld", i, (long long)j);
                cur = mk_transformer(b, nm, cur, co, c->heads[i], c->tlayers[i], -i, -i);
            }
            skips[ns] = cur;
            skipc[ns++] = co;
        }
        if (i < nb - 1) {
            snprintf(nm, sizeof nm, "down_blocks.%d.downsamplers.0", i);
            cur = mk_sampler(b, nm, cur, 0, co, -i, -i);
            if (b->fill) u->layers[cur].H = u->layers[cur].W = -(i + 1);
            skips[ns] = cur;
            skipc[ns++] = co;
        }
    }
    const int64_t lo = -(nb - 1);
    if (c->has_mid) {
        cur = mk_resnet(b, "mid_block.resnets.0", cur, ch, ch, lo, lo);
        cur = mk_transformer(b, "mid_block.attentions.0", cur, ch, c->heads[nb - 1], c->tlayers[nb - 1], lo, lo);
        cur = mk_resnet(b, "mid_block.resnets.1", cur, ch, ch, lo, lo);
    }
    for (int i = 0; i < nb; i++) {
        const int64_t co = c->block_out[nb - 1 - i];
        const int64_t prev_ch = ch;
        const int64_t lvl = -(nb - 1 - i);
        const int64_t nl = c->layers[nb - 1 - i] + 1;
        for (int64_t j = 0; j < nl; j++) {
            int64_t rin = j == 0 ? prev_ch : co;
            int sk = skips[--ns];
            int64_t skc = skipc[ns];
            cur = mk_concat(b, cur, sk, rin, skc, lvl, lvl);
            snprintf(nm, sizeof nm, "up_blocks.%d.resnets.%lld", i, (long long)j);
            cur = mk_resnet(b, nm, cur, rin + skc, co, lvl, lvl);
            if (c->up_attn[i]) {
                snprintf(nm, sizeof nm, "up_blocks.%d.attentions.%lld", i, (long long)j);
                cur = mk_transformer(b, nm, cur, co, c->heads[nb - 1 - i], c->up_tlayers[i], lvl, lvl);
            }
        }
        ch = co;
        if (i < nb - 1) {
            snprintf(nm, sizeof nm, "up_blocks.%d.upsamplers.0", i);
            cur = mk_sampler(b, nm, cur, 1, co, lvl, lvl);
            if (b->fill) u->layers[cur].H = u->layers[cur].W = lvl + 1;
        }
    }
    mk_norm(b, &u->norm_out, "conv_norm_out", c0, c->groups, c->eps);
    mk_conv(b, &u->conv_out, "conv_out", c0, c->out_channels, 3, 1, 1);
    add_layer(b, SL_UL_OUT, 0, cur, -1, c->out_channels, 0, 0);
}

SlStatus sl_unet_init_shapes(SlUNet *u, const SlUNetConfig *cfg, SlCtx *ctx) {
    memset(u, 0, sizeof *u);
    /* a config that was never loaded (or whose load failed: zeroed) builds nothing */
    if (cfg->n_blocks < 1 || cfg->n_blocks > SL_UNET_MAX_BLOCKS || cfg->groups < 1 || cfg->in_channels < 1 ||
        cfg->out_channels < 1 || cfg->block_out[0] < 1)
        return sl_fail(ctx, SL_ERR_ARG, "unet: the config is not a loaded U-Net config (%d blocks)", cfg->n_blocks);
    u->cfg = *cfg;
    Build b;
    memset(&b, 0, sizeof b);
    b.u = u;
    build(&b); /* count */
    u->res = calloc((size_t)u->n_res + 1, sizeof *u->res);
    u->tr = calloc((size_t)u->n_tr + 1, sizeof *u->tr);
    u->smp = calloc((size_t)u->n_smp + 1, sizeof *u->smp);
    u->cat = calloc((size_t)u->n_cat + 1, sizeof *u->cat);
    u->layers = calloc((size_t)u->n_layers + 1, sizeof *u->layers);
    u->params = calloc((size_t)u->n_params + 1, sizeof *u->params);
    u->mods = calloc((size_t)u->n_mods + 1, sizeof *u->mods);
    int ok = u->res && u->tr && u->smp && u->cat && u->layers && u->params && u->mods;
    /* transformer blocks: count per transformer by replaying the config */
    if (ok) {
        const SlUNetConfig *c = cfg;
        int t = 0;
        const int nb = c->n_blocks;
        for (int i = 0; i < nb; i++)
            if (c->down_attn[i])
                for (int64_t j = 0; j < c->layers[i]; j++) u->tr[t++].n_tblocks = c->tlayers[i];
        if (c->has_mid) u->tr[t++].n_tblocks = c->tlayers[nb - 1];
        for (int i = 0; i < nb; i++)
            if (c->up_attn[i])
                for (int64_t j = 0; j <= c->layers[nb - 1 - i]; j++) u->tr[t++].n_tblocks = c->up_tlayers[i];
        assert(t == u->n_tr);
        for (int i = 0; i < u->n_tr && ok; i++) {
            u->tr[i].tb = calloc((size_t)u->tr[i].n_tblocks, sizeof(SlUNetTBlock));
            ok = u->tr[i].tb != NULL;
        }
    }
    if (!ok) {
        sl_unet_free(u);
        return sl_fail(ctx, SL_ERR_NOMEM, "unet: out of memory building modules");
    }
    b.fill = 1;
    build(&b);
    return SL_OK;
}

SlStatus sl_unet_init(SlUNet *u, const SlUNetConfig *cfg, SlCtx *ctx) {
    SL_TRY(sl_unet_init_shapes(u, cfg, ctx));
    return sl_unet_alloc_weights(u, ctx);
}

SlStatus sl_unet_alloc_weights(SlUNet *u, SlCtx *ctx) {
    size_t total = 0;
    for (int i = 0; i < u->n_params; i++)
        total += sl_align_up((size_t)sl_shape_numel(u->params[i].ndim, u->params[i].shape) * sizeof(float));
    SlStatus st = sl_arena_init(&u->weights, total, "unet weights", ctx);
    if (st != SL_OK) {
        sl_unet_free(u);
        return st;
    }
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        p->init_w = sl_arena_take_f32(&u->weights, sl_shape_numel(p->ndim, p->shape));
        *p->w = p->init_w;
    }
    return SL_OK;
}

void sl_unet_free(SlUNet *u) {
    if (u->tr)
        for (int i = 0; i < u->n_tr; i++) free(u->tr[i].tb);
    free(u->res);
    free(u->tr);
    free(u->smp);
    free(u->cat);
    free(u->layers);
    free(u->params);
    free(u->mods);
    sl_arena_free(&u->weights);
    sl_arena_free(&u->grads);
    sl_arena_free(&u->acts);
    memset(u, 0, sizeof *u);
}

SlStatus sl_unet_load(SlUNet *u, SlWeights *w, SlCtx *ctx) {
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        SlStatus st = sl_weights_load(w, p->name, p->ndim, p->shape, p->init_w, ctx);
        if (st != SL_OK) {
            sl_fail_prefix(ctx, "unet");
            return st;
        }
        SL_TRY(sl_weights_check_finite(w, "U-Net", p->name, p->init_w, (size_t)sl_shape_numel(p->ndim, p->shape), 0,
                                       ctx));
    }
    return SL_OK;
}

/* splitmix64: a cheap counter-based hash (random init of 860M floats must take seconds, not minutes) */
static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void sl_unet_init_random(SlUNet *u, uint64_t seed) {
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        int64_t n = sl_shape_numel(p->ndim, p->shape);
        const char *suf = strrchr(p->name, '.');
        int is_norm = p->ndim == 1 && (strstr(p->name, "norm") != NULL);
        if (is_norm) {
            float v = strcmp(suf, ".weight") == 0 ? 1.0f : 0.0f;
            for (int64_t k = 0; k < n; k++) p->init_w[k] = v;
            continue;
        }
        /* uniform with std 1/sqrt(fan_in) (0.02 for biases) */
        int64_t fan_in = p->ndim >= 2 ? n / p->shape[0] : 1;
        float s = (p->ndim >= 2 ? 1.0f / sqrtf((float)fan_in) : 0.02f) * 1.7320508f;
        uint64_t base = splitmix64(seed * 0x100000001B3ull + (uint64_t)i);
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < n; k++) {
            uint64_t r = splitmix64(base + (uint64_t)k);
            p->init_w[k] = s * ((float)(r >> 40) * (2.0f / 16777216.0f) - 1.0f);
        }
    }
}

SlStatus sl_unet_enable_grads(SlUNet *u, SlCtx *ctx) {
    if (u->grads.base) return SL_OK;
    for (int i = 0; i < u->n_params; i++) /* an NF4 (frozen, pipeline/quant.h) weight has no dense copy to train */
        if (!*u->params[i].w)
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "unet: %s is held in NF4 or fp16 (frozen): full fine-tuning needs an fp32 U-Net (--base fp32)", u->params[i].name);
    SL_TRY(sl_arena_init(&u->grads, u->weights.size, "unet weight grads", ctx));
    for (int i = 0; i < u->n_params; i++) {
        SlUNetParam *p = &u->params[i];
        *p->g = sl_arena_take_f32(&u->grads, sl_shape_numel(p->ndim, p->shape));
    }
    return SL_OK;
}

void sl_unet_zero_grads(SlUNet *u) {
    if (u->grads.base) memset(u->grads.base, 0, u->grads.size);
}

SlUNetModRef *sl_unet_module_of_param(SlUNet *u, const SlUNetParam *p) {
    for (int j = 0; j < u->n_mods; j++) {
        SlUNetModRef *m = &u->mods[j];
        if ((m->lin && p->w == &m->lin->w) || (m->conv && p->w == &m->conv->w)) return m;
    }
    return NULL;
}

SlLinear *sl_unet_find_linear(SlUNet *u, const char *name) {
    for (int i = 0; i < u->n_mods; i++)
        if (u->mods[i].lin && !strcmp(u->mods[i].name, name)) return u->mods[i].lin;
    return NULL;
}

SlConv2d *sl_unet_find_conv(SlUNet *u, const char *name) {
    for (int i = 0; i < u->n_mods; i++)
        if (u->mods[i].conv && !strcmp(u->mods[i].name, name)) return u->mods[i].conv;
    return NULL;
}

SlUNetParam *sl_unet_find_param(SlUNet *u, const char *name) {
    for (int i = 0; i < u->n_params; i++)
        if (!strcmp(u->params[i].name, name)) return &u->params[i];
    return NULL;
}

int64_t sl_unet_n_weights(const SlUNet *u) {
    int64_t n = 0;
    for (int i = 0; i < u->n_params; i++) n += sl_shape_numel(u->params[i].ndim, u->params[i].shape);
    return n;
}

double sl_unet_forward_flops(const SlUNet *u) { return u->flops; }

void sl_unet_set_checkpointing(SlUNet *u, int on) { u->checkpoint = on != 0; }

static void stamp_kernels(SlUNet *u) {
    for (int i = 0; i < u->n_mods; i++) {
        if (u->mods[i].lin) u->mods[i].lin->kern = u->kern;
        if (u->mods[i].conv) u->mods[i].conv->kern = u->kern;
    }
}

void sl_unet_set_kernels(SlUNet *u, const SlKernels *k) {
    const SlKernels none = {0};
    u->kern = k ? *k : none;
    stamp_kernels(u); /* now too: a merge before the plan (styles/) runs on them */
}

int sl_unet_set_inference(SlUNet *u, int on) {
    const int old = u->inference;
    u->inference = on != 0;
    return old;
}

/* ----------------------------------------------------------------- plan -- */

typedef struct Plan {
    SlUNet *u;
    int fill;
    size_t bytes;
    /* module-internal caches: with checkpointing (or for inference) every module reuses one region
     * (cache_off restarts at 0 per module; the region is cache_max bytes) */
    size_t cache_off, cache_max;
    uint8_t *cache_base;
} Plan;

static float *take(Plan *p, float **slot, int64_t n) {
    size_t nb = sl_align_up((size_t)n * sizeof(float));
    p->bytes += nb;
    float *r = NULL;
    if (p->fill) {
        r = sl_arena_take_f32(&p->u->acts, n);
        assert(r);
    }
    if (slot) *slot = r;
    return r;
}

/* A buffer only the module's own forward/backward use (recomputed when checkpointing,
 * not kept at all for inference). */
static float *take_cache(Plan *p, float **slot, int64_t n) {
    if (!p->u->checkpoint && !p->u->inference) return take(p, slot, n);
    size_t nb = sl_align_up((size_t)n * sizeof(float));
    float *r = p->fill ? (float *)(p->cache_base + p->cache_off) : NULL;
    p->cache_off += nb;
    if (p->cache_off > p->cache_max) p->cache_max = p->cache_off;
    if (slot) *slot = r;
    return r;
}

static void need_act(SlUNet *u, int64_t n) {
    if ((size_t)n > u->max_act) u->max_act = (size_t)n;
}
static void need_work(SlUNet *u, size_t n) {
    if (n > u->max_work) u->max_work = n;
}
static void conv_need(SlUNet *u, const SlConv2d *m, int64_t H, int64_t W) {
    need_work(u, sl_convmod_workspace(m, u->B, H, W));
    SlConvDims d = sl_convmod_dims(m, u->B, H, W);
    u->flops += 2.0 * (double)d.B * d.Co * d.Ho * d.Wo * d.Ci * d.kh * d.kw;
}
static void lin_flops(SlUNet *u, const SlLinear *m, int64_t N) { u->flops += 2.0 * (double)N * m->I * m->O; }

static void plan_resnet(Plan *p, SlUNetResnet *r) {
    SlUNet *u = p->u;
    const int64_t B = u->B, S = r->H * r->W, G = r->norm1.G;
    p->cache_off = 0;
    take_cache(p, &r->n1, B * r->Ci * S);
    take_cache(p, &r->mean1, B * G);
    take_cache(p, &r->rstd1, B * G);
    take_cache(p, &r->a1, B * r->Ci * S);
    take_cache(p, &r->h1, B * r->Co * S);
    take_cache(p, &r->n2, B * r->Co * S);
    take_cache(p, &r->mean2, B * G);
    take_cache(p, &r->rstd2, B * G);
    take_cache(p, &r->a2, B * r->Co * S);
    need_act(u, B * r->Ci * S);
    need_act(u, B * r->Co * S);
    conv_need(u, &r->conv1, r->H, r->W);
    conv_need(u, &r->conv2, r->H, r->W);
    if (r->has_shortcut) conv_need(u, &r->shortcut, r->H, r->W);
    lin_flops(u, &r->temb, B);
}

static void plan_transformer(Plan *p, SlUNetTransformer *t) {
    SlUNet *u = p->u;
    const int64_t B = u->B, S = t->H * t->W, C = t->C, N = B * S, NT = B * u->T, G = t->norm.G;
    const int64_t HD = C / t->heads;
    p->cache_off = 0;
    take_cache(p, &t->gn, N * C);
    take_cache(p, &t->mean, B * G);
    take_cache(p, &t->rstd, B * G);
    take_cache(p, &t->tok, N * C);
    for (int64_t i = 0; i < t->n_tblocks; i++) {
        SlUNetTBlock *b = &t->tb[i];
        take_cache(p, &b->x, N * C);
        take_cache(p, &b->n1, N * C);
        take_cache(p, &b->m1, N);
        take_cache(p, &b->r1, N);
        take_cache(p, &b->qq1, N * C);
        take_cache(p, &b->kk1, N * C);
        take_cache(p, &b->vv1, N * C);
        take_cache(p, &b->at1, N * C);
        take_cache(p, &b->lse1, B * t->heads * S);
        take_cache(p, &b->xa, N * C);
        take_cache(p, &b->n2, N * C);
        take_cache(p, &b->m2, N);
        take_cache(p, &b->r2, N);
        take_cache(p, &b->qq2, N * C);
        take_cache(p, &b->kk2, NT * C);
        take_cache(p, &b->vv2, NT * C);
        take_cache(p, &b->at2, N * C);
        take_cache(p, &b->lse2, B * t->heads * S);
        take_cache(p, &b->xb, N * C);
        take_cache(p, &b->n3, N * C);
        take_cache(p, &b->m3, N);
        take_cache(p, &b->r3, N);
        take_cache(p, &b->f1, N * 8 * C);
        take_cache(p, &b->gg, N * 4 * C);
        need_work(u, sl_attention_workspace(B, S, S, t->heads, HD));
        need_work(u, sl_attention_workspace(B, S, u->T, t->heads, HD));
        const SlLinear *ls[] = {&b->q1, &b->k1, &b->v1, &b->o1, &b->q2, &b->o2, &b->ff1, &b->ff2};
        for (size_t k = 0; k < sizeof ls / sizeof ls[0]; k++) lin_flops(u, ls[k], N);
        lin_flops(u, &b->k2, NT);
        lin_flops(u, &b->v2, NT);
        u->flops += 4.0 * (double)B * S * S * C + 4.0 * (double)B * S * u->T * C;
    }
    take_cache(p, &t->hout, N * C);
    take_cache(p, &t->po, N * C);
    need_act(u, N * 8 * C);
    need_act(u, NT * C);
    lin_flops(u, &t->proj_in, N);
    lin_flops(u, &t->proj_out, N);
}

static void set_rows(SlUNet *u, SlLinear *m, int64_t rows) {
    for (int i = 0; i < u->n_mods; i++)
        if (u->mods[i].lin == m) u->mods[i].rows = rows;
}

static int64_t scale_dim(int64_t full, int64_t code) {
    /* code <= 0: full >> -code (downsampling rounds up as the stride-2 conv does) */
    int64_t v = full;
    for (int64_t i = 0; i < -code; i++) v = (v + 1) / 2;
    return v;
}

/* size_only: pass 0 only, *size_only = the arena bytes sl_unet_plan would allocate (nothing
 * allocated, the current plan's arena kept). */
static SlStatus unet_plan(SlUNet *u, int64_t B, int64_t H, int64_t W, int64_t T, size_t *size_only, SlCtx *ctx) {
    const SlUNetConfig *c = &u->cfg;
    const int64_t f = (int64_t)1 << (c->n_blocks - 1);
    if (B < 1 || B > 4096 || H < 1 || W < 1 || H > 4096 || W > 4096 || T < 1 || T > 65536)
        return sl_fail(ctx, SL_ERR_ARG, "unet: bad planned size B=%lld H=%lld W=%lld T=%lld", (long long)B,
                       (long long)H, (long long)W, (long long)T);
    if (H % f || W % f)
        return sl_fail(ctx, SL_ERR_ARG, "unet: latent size %lldx%lld is not divisible by %lld", (long long)H,
                       (long long)W, (long long)f);
    if (!size_only) sl_arena_free(&u->acts);
    u->B = B;
    u->H = H;
    u->W = W;
    u->T = T;
    size_t cache_max = 0;
    for (int pass = 0; pass < 2; pass++) {
        Plan p = {u, pass, 0, 0, 0, NULL};
        if (pass == 1 && cache_max) {
            p.cache_base = sl_arena_take(&u->acts, cache_max);
            assert(p.cache_base);
        }
        u->max_act = 0;
        u->max_work = 0;
        u->flops = 0;
        const int64_t c0 = c->block_out[0], td = c->time_dim;
        take(&p, &u->tsin, B * c0);
        take(&p, &u->t1, B * td);
        take(&p, &u->t1a, B * td);
        take(&p, &u->emb, B * td);
        take(&p, &u->emb_act, B * td);
        take(&p, &u->demb_act, B * td);
        lin_flops(u, &u->time1, B);
        lin_flops(u, &u->time2, B);
        for (int i = 0; i < u->n_layers; i++) {
            SlUNetLayer *l = &u->layers[i];
            int64_t lh = sl_unet_layer_h(u, l), lw = sl_unet_layer_w(u, l);
            if (l->kind != SL_UL_OUT) {
                take(&p, &l->out, B * l->C * lh * lw);
                if (u->inference) l->dout = NULL;
                else take(&p, &l->dout, B * l->C * lh * lw);
                need_act(u, B * l->C * lh * lw);
            }
            switch (l->kind) {
            case SL_UL_CONV_IN:
                conv_need(u, &u->conv_in, H, W);
                break;
            case SL_UL_RESNET: {
                SlUNetResnet *r = &u->res[l->index];
                r->H = lh;
                r->W = lw;
                plan_resnet(&p, r);
                break;
            }
            case SL_UL_TRANSFORMER: {
                SlUNetTransformer *t = &u->tr[l->index];
                t->H = lh;
                t->W = lw;
                plan_transformer(&p, t);
                break;
            }
            case SL_UL_SAMPLER: {
                SlUNetSampler *s = &u->smp[l->index];
                const SlUNetLayer *src = &u->layers[l->src];
                s->H = sl_unet_layer_h(u, src);
                s->W = sl_unet_layer_w(u, src);
                if (s->up) {
                    p.cache_off = 0;
                    take_cache(&p, &s->u, B * s->C * lh * lw);
                    conv_need(u, &s->conv, lh, lw);
                } else {
                    conv_need(u, &s->conv, s->H, s->W);
                }
                break;
            }
            case SL_UL_CONCAT:
                u->cat[l->index].S = lh * lw;
                break;
            case SL_UL_OUT:
                take(&p, &u->no, B * c0 * H * W);
                take(&p, &u->no_mean, B * c->groups);
                take(&p, &u->no_rstd, B * c->groups);
                take(&p, &u->no_act, B * c0 * H * W);
                conv_need(u, &u->conv_out, H, W);
                break;
            }
        }
        need_act(u, B * td);
        for (int k = 0; k < 6; k++) { /* forward uses scratch[0] only */
            if (u->inference && k > 0) u->scratch[k] = NULL;
            else take(&p, &u->scratch[k], (int64_t)u->max_act);
        }
        take(&p, &u->work, (int64_t)u->max_work + 16);
        if (pass == 0) {
            cache_max = p.cache_max;
            if (size_only) {
                *size_only = p.bytes + cache_max;
                break;
            }
            SL_TRY(sl_arena_init(&u->acts, p.bytes + cache_max, "unet activations", ctx));
        }
    }
    if (!size_only) {
        u->planned_inference = u->inference;
        stamp_kernels(u); /* every product of this plan runs on its kernels */
        sl_unet_wire(u);
    }
    /* rows per linear module (for adapters sizing their caches) */
    set_rows(u, &u->time1, B);
    set_rows(u, &u->time2, B);
    for (int i = 0; i < u->n_res; i++) set_rows(u, &u->res[i].temb, B);
    for (int i = 0; i < u->n_tr; i++) {
        SlUNetTransformer *t = &u->tr[i];
        const int64_t N = B * t->H * t->W;
        set_rows(u, &t->proj_in, N);
        set_rows(u, &t->proj_out, N);
        for (int64_t j = 0; j < t->n_tblocks; j++) {
            SlUNetTBlock *b = &t->tb[j];
            SlLinear *ls[] = {&b->q1, &b->k1, &b->v1, &b->o1, &b->q2, &b->o2, &b->ff1, &b->ff2};
            for (size_t k = 0; k < sizeof ls / sizeof ls[0]; k++) set_rows(u, ls[k], N);
            set_rows(u, &b->k2, B * T);
            set_rows(u, &b->v2, B * T);
        }
    }
    return SL_OK;
}

SlStatus sl_unet_plan(SlUNet *u, int64_t B, int64_t H, int64_t W, int64_t T, SlCtx *ctx) {
    return unet_plan(u, B, H, W, T, NULL, ctx);
}

SlStatus sl_unet_plan_bytes(SlUNet *u, int64_t B, int64_t H, int64_t W, int64_t T, size_t *bytes, SlCtx *ctx) {
    *bytes = 0;
    return unet_plan(u, B, H, W, T, bytes, ctx);
}

/* Points every module's in/din/out/dout at its layer's (and its sources') buffers. */
void sl_unet_wire(SlUNet *u) {
    for (int i = 0; i < u->n_layers; i++) {
        SlUNetLayer *l = &u->layers[i];
        SlUNetLayer *s = l->src >= 0 ? &u->layers[l->src] : NULL;
        const float *in = s ? s->out : NULL;
        float *din = s ? s->dout : NULL;
        switch (l->kind) {
        case SL_UL_RESNET: {
            SlUNetResnet *r = &u->res[l->index];
            r->in = in;
            r->din = din;
            r->out = l->out;
            r->dout = l->dout;
            break;
        }
        case SL_UL_TRANSFORMER: {
            SlUNetTransformer *t = &u->tr[l->index];
            t->in = in;
            t->din = din;
            t->out = l->out;
            t->dout = l->dout;
            break;
        }
        case SL_UL_SAMPLER: {
            SlUNetSampler *m = &u->smp[l->index];
            m->in = in;
            m->din = din;
            m->out = l->out;
            m->dout = l->dout;
            break;
        }
        case SL_UL_CONCAT: {
            SlUNetConcat *k = &u->cat[l->index];
            k->a = in;
            k->da = din;
            k->b = u->layers[l->src2].out;
            k->db = u->layers[l->src2].dout;
            k->out = l->out;
            k->dout = l->dout;
            break;
        }
        default:
            break;
        }
    }
}

int64_t sl_unet_layer_h(const SlUNet *u, const SlUNetLayer *l) {
    return l->kind == SL_UL_OUT || l->kind == SL_UL_CONV_IN ? u->H : scale_dim(u->H, l->H);
}
int64_t sl_unet_layer_w(const SlUNet *u, const SlUNetLayer *l) {
    return l->kind == SL_UL_OUT || l->kind == SL_UL_CONV_IN ? u->W : scale_dim(u->W, l->W);
}

/* -------------------------------------------------------------- forward -- */

static void norm_fwd(const SlUNetNorm *n, float *out, float *mean, float *rstd, const float *in, int64_t B,
                     int64_t S) {
    sl_groupnorm_forward(out, mean, rstd, in, n->g, n->b, B, n->C, S, n->G, n->eps);
}

void sl_unet_resnet_forward(SlUNet *u, SlUNetResnet *r) {
    const int64_t B = u->B, S = r->H * r->W;
    norm_fwd(&r->norm1, r->n1, r->mean1, r->rstd1, r->in, B, S);
    sl_silu_forward(r->a1, r->n1, B * r->Ci * S);
    sl_convmod_forward(&r->conv1, r->h1, r->a1, B, r->H, r->W, u->work);
    float *te = u->scratch[0]; /* [B,Co] */
    sl_linmod_forward(&r->temb, te, u->emb_act, B);
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < r->Co; c++) {
            float *h = r->h1 + (b * r->Co + c) * S, v = te[b * r->Co + c];
            for (int64_t s = 0; s < S; s++) h[s] += v;
        }
    norm_fwd(&r->norm2, r->n2, r->mean2, r->rstd2, r->h1, B, S);
    sl_silu_forward(r->a2, r->n2, B * r->Co * S);
    sl_convmod_forward(&r->conv2, r->out, r->a2, B, r->H, r->W, u->work);
    if (r->has_shortcut) {
        float *sc = u->scratch[0];
        sl_convmod_forward(&r->shortcut, sc, r->in, B, r->H, r->W, u->work);
        sl_axpy(r->out, 1.0f, sc, B * r->Co * S);
    } else {
        sl_axpy(r->out, 1.0f, r->in, B * r->Co * S);
    }
}

static void tblock_forward(SlUNet *u, SlUNetTransformer *t, SlUNetTBlock *b, float *y) {
    const int64_t B = u->B, S = t->H * t->W, C = t->C, N = B * S, NH = t->heads, HD = C / NH, T = u->T;
    const float scale = 1.0f / sqrtf((float)HD);
    float *tmp = u->scratch[0];
    /* self attention */
    sl_layernorm_forward(b->n1, b->m1, b->r1, b->x, b->ln1.g, b->ln1.b, N, C, b->ln1.eps);
    sl_linmod_forward(&b->q1, b->qq1, b->n1, N);
    sl_linmod_forward(&b->k1, b->kk1, b->n1, N);
    sl_linmod_forward(&b->v1, b->vv1, b->n1, N);
    sl_attention_forward(b->at1, b->lse1, b->qq1, b->kk1, b->vv1, B, S, S, NH, HD, scale, 0, u->work, &u->kern);
    sl_linmod_forward(&b->o1, tmp, b->at1, N);
    for (int64_t i = 0; i < N * C; i++) b->xa[i] = b->x[i] + tmp[i];
    /* cross attention */
    sl_layernorm_forward(b->n2, b->m2, b->r2, b->xa, b->ln2.g, b->ln2.b, N, C, b->ln2.eps);
    sl_linmod_forward(&b->q2, b->qq2, b->n2, N);
    sl_linmod_forward(&b->k2, b->kk2, u->ehs, B * T);
    sl_linmod_forward(&b->v2, b->vv2, u->ehs, B * T);
    sl_attention_forward(b->at2, b->lse2, b->qq2, b->kk2, b->vv2, B, S, T, NH, HD, scale, 0, u->work, &u->kern);
    sl_linmod_forward(&b->o2, tmp, b->at2, N);
    for (int64_t i = 0; i < N * C; i++) b->xb[i] = b->xa[i] + tmp[i];
    /* feed-forward */
    sl_layernorm_forward(b->n3, b->m3, b->r3, b->xb, b->ln3.g, b->ln3.b, N, C, b->ln3.eps);
    sl_linmod_forward(&b->ff1, b->f1, b->n3, N);
    sl_geglu_forward(b->gg, b->f1, N, 4 * C);
    sl_linmod_forward(&b->ff2, tmp, b->gg, N);
    for (int64_t i = 0; i < N * C; i++) y[i] = b->xb[i] + tmp[i];
}

void sl_unet_transformer_forward(SlUNet *u, SlUNetTransformer *t) {
    const int64_t B = u->B, S = t->H * t->W, C = t->C, N = B * S;
    norm_fwd(&t->norm, t->gn, t->mean, t->rstd, t->in, B, S);
    sl_transpose_cs_sc(t->tok, t->gn, B, C, S);
    sl_linmod_forward(&t->proj_in, t->tb[0].x, t->tok, N);
    for (int64_t i = 0; i < t->n_tblocks; i++)
        tblock_forward(u, t, &t->tb[i], i + 1 < t->n_tblocks ? t->tb[i + 1].x : t->hout);
    sl_linmod_forward(&t->proj_out, t->po, t->hout, N);
    sl_transpose_sc_cs(t->out, t->po, B, C, S);
    sl_axpy(t->out, 1.0f, t->in, N * C);
}

void sl_unet_sampler_forward(SlUNet *u, SlUNetSampler *s) {
    if (s->up) {
        sl_upsample_nearest2x_forward(s->u, s->in, u->B, s->C, s->H, s->W);
        sl_convmod_forward(&s->conv, s->out, s->u, u->B, 2 * s->H, 2 * s->W, u->work);
    } else {
        sl_convmod_forward(&s->conv, s->out, s->in, u->B, s->H, s->W, u->work);
    }
}

static void concat_forward(SlUNet *u, SlUNetConcat *k) {
    for (int64_t b = 0; b < u->B; b++) {
        memcpy(k->out + b * (k->Ca + k->Cb) * k->S, k->a + b * k->Ca * k->S, sizeof(float) * (size_t)(k->Ca * k->S));
        memcpy(k->out + (b * (k->Ca + k->Cb) + k->Ca) * k->S, k->b + b * k->Cb * k->S,
               sizeof(float) * (size_t)(k->Cb * k->S));
    }
}

void sl_unet_forward(SlUNet *u, float *out, const float *sample, const float *timesteps, const float *ehs) {
    const SlUNetConfig *c = &u->cfg;
    const int64_t B = u->B, c0 = c->block_out[0], td = c->time_dim, H = u->H, W = u->W;
    u->sample = sample;
    u->ehs = ehs;
    /* time embedding; every resnet uses silu(emb) */
    sl_timestep_embedding(u->tsin, timesteps, B, c0, c->flip_sin_to_cos, c->freq_shift, 10000.0f);
    sl_linmod_forward(&u->time1, u->t1, u->tsin, B);
    sl_silu_forward(u->t1a, u->t1, B * td);
    sl_linmod_forward(&u->time2, u->emb, u->t1a, B);
    sl_silu_forward(u->emb_act, u->emb, B * td);
    for (int i = 0; i < u->n_layers; i++) {
        SlUNetLayer *l = &u->layers[i];
        switch (l->kind) {
        case SL_UL_CONV_IN:
            sl_convmod_forward(&u->conv_in, l->out, sample, B, H, W, u->work);
            break;
        case SL_UL_RESNET:
            sl_unet_resnet_forward(u, &u->res[l->index]);
            break;
        case SL_UL_TRANSFORMER:
            sl_unet_transformer_forward(u, &u->tr[l->index]);
            break;
        case SL_UL_SAMPLER:
            sl_unet_sampler_forward(u, &u->smp[l->index]);
            break;
        case SL_UL_CONCAT:
            concat_forward(u, &u->cat[l->index]);
            break;
        case SL_UL_OUT: {
            const float *x = u->layers[l->src].out;
            sl_groupnorm_forward(u->no, u->no_mean, u->no_rstd, x, u->norm_out.g, u->norm_out.b, B, c0, H * W,
                                 u->norm_out.G, u->norm_out.eps);
            sl_silu_forward(u->no_act, u->no, B * c0 * H * W);
            sl_convmod_forward(&u->conv_out, out, u->no_act, B, H, W, u->work);
            break;
        }
        }
    }
}
