/* vae_load.c - AutoencoderKL config, parameter table, key map and loading.
 *
 * One table of tensor specs (diffusers name, LDM name, shape, destination
 * field) is built from the config; it drives the weight-arena plan, the
 * loading, and the diffusers -> LDM key map, so the three cannot drift apart.
 *
 * LDM (original Stable Diffusion, `first_stage_model.*`) naming, as in
 * diffusers' convert_ldm_vae_checkpoint: down_blocks.{i}.resnets.{j} ->
 * down.{i}.block.{j}; conv_shortcut -> nin_shortcut; downsamplers.0 ->
 * downsample; mid_block.resnets.{0,1} -> mid.block_{1,2};
 * mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0} ->
 * mid.attn_1.{norm,q,k,v,proj_out}; conv_norm_out -> norm_out;
 * decoder up_blocks.{k} -> up.{n-1-k} (LDM numbers up blocks from the
 * highest resolution); upsamplers.0 -> upsample.
 * Old diffusers files (before 0.14, e.g. many SD 1.x `vae/` folders on the Hub)
 * name the attention projections query/key/value/proj_attn; also mapped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "core/rng.h"

#include "vae_internal.h"

/* ---- config ---- */

int sl_vae_downscale(const SlVaeConfig *cfg) { return 1 << (cfg->n_blocks - 1); }

SlStatus sl_vae_config_validate(const SlVaeConfig *c, SlCtx *ctx) {
    if (c->n_blocks < 1 || c->n_blocks > SL_VAE_MAX_BLOCKS)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "vae config: %d blocks (supported 1..%d)", c->n_blocks,
                       SL_VAE_MAX_BLOCKS);
    if (c->layers_per_block < 1 || c->layers_per_block > SL_VAE_MAX_LAYERS)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "vae config: layers_per_block %d (supported 1..%d)",
                       c->layers_per_block, SL_VAE_MAX_LAYERS);
    if (c->in_channels < 1 || c->out_channels < 1 || c->latent_channels < 1)
        return sl_fail(ctx, SL_ERR_FORMAT, "vae config: channels in %d out %d latent %d must be >= 1",
                       c->in_channels, c->out_channels, c->latent_channels);
    if (c->norm_num_groups < 1)
        return sl_fail(ctx, SL_ERR_FORMAT, "vae config: norm_num_groups %d must be >= 1", c->norm_num_groups);
    for (int i = 0; i < c->n_blocks; i++) {
        if (c->block_out[i] < 1 || c->block_out[i] % c->norm_num_groups != 0)
            return sl_fail(ctx, SL_ERR_FORMAT,
                           "vae config: block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d",
                           i, c->block_out[i], c->norm_num_groups);
    }
    if (!(c->scaling_factor > 0.0))
        return sl_fail(ctx, SL_ERR_FORMAT, "vae config: scaling_factor %g must be > 0", c->scaling_factor);
    return SL_OK;
}

SlStatus sl_vae_config_from(SlVaeConfig *c, const SlConfig *j, SlCtx *ctx) {
    memset(c, 0, sizeof *c);
    int64_t v;
    SL_TRY(sl_config_int(j, "in_channels", 3, 1, 1 << 16, &v, ctx)); c->in_channels = (int)v;
    SL_TRY(sl_config_int(j, "out_channels", 3, 1, 1 << 16, &v, ctx)); c->out_channels = (int)v;
    SL_TRY(sl_config_int(j, "latent_channels", 4, 1, 1 << 16, &v, ctx)); c->latent_channels = (int)v;
    SL_TRY(sl_config_int(j, "layers_per_block", 1, 1, SL_VAE_MAX_LAYERS, &v, ctx)); c->layers_per_block = (int)v;
    SL_TRY(sl_config_int(j, "norm_num_groups", 32, 1, 1 << 16, &v, ctx)); c->norm_num_groups = (int)v;
    SL_TRY(sl_config_int(j, "sample_size", 32, 1, 1 << 20, &v, ctx)); c->sample_size = (int)v;
    SL_TRY(sl_config_num(j, "scaling_factor", 0.18215, &c->scaling_factor, ctx));
    c->has_shift = sl_config_has(j, "shift_factor");
    c->shift_factor = 0.0;
    if (c->has_shift) SL_TRY(sl_config_num(j, "shift_factor", 0.0, &c->shift_factor, ctx));
    SL_TRY(sl_config_bool(j, "use_quant_conv", 1, &c->use_quant_conv, ctx));
    SL_TRY(sl_config_bool(j, "use_post_quant_conv", 1, &c->use_post_quant_conv, ctx));
    SL_TRY(sl_config_bool(j, "mid_block_add_attention", 1, &c->mid_block_add_attention, ctx));

    const char *act;
    SL_TRY(sl_config_str(j, "act_fn", "silu", &act, ctx));
    if (strcmp(act, "silu") != 0)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: act_fn '%s' is not supported (only 'silu')", j->path, act);

    int64_t ch[SL_VAE_MAX_BLOCKS + 1];
    int n = 0;
    if (!sl_config_has(j, "block_out_channels")) {
        ch[0] = 64; n = 1;  /* diffusers' default */
    } else {
        SL_TRY(sl_config_int_list(j, "block_out_channels", 1, 1 << 16, ch, SL_VAE_MAX_BLOCKS + 1, &n, ctx));
    }
    if (n < 1 || n > SL_VAE_MAX_BLOCKS)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: block_out_channels has %d entries (supported 1..%d)",
                       j->path, n, SL_VAE_MAX_BLOCKS);
    c->n_blocks = n;
    for (int i = 0; i < n; i++) c->block_out[i] = (int)ch[i];

    static const char *const keys[2] = {"down_block_types", "up_block_types"};
    static const char *const want[2] = {"DownEncoderBlock2D", "UpDecoderBlock2D"};
    for (int t = 0; t < 2; t++) {
        const char *types[SL_VAE_MAX_BLOCKS + 1];
        int nt = 1;
        types[0] = want[t];  /* diffusers' default: one block */
        if (sl_config_has(j, keys[t]))
            SL_TRY(sl_config_str_list(j, keys[t], types, SL_VAE_MAX_BLOCKS + 1, &nt, ctx));
        if (nt != n)
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: %s has %d entries but block_out_channels has %d",
                           j->path, keys[t], nt, n);
        for (int i = 0; i < nt; i++)
            if (strcmp(types[i], want[t]) != 0)
                return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s[%d] = '%s' is not supported (only '%s')",
                               j->path, keys[t], i, types[i], want[t]);
    }
    SlStatus st = sl_vae_config_validate(c, ctx);
    if (st != SL_OK) sl_fail_prefix(ctx, "%s", j->path);
    return st;
}

SlStatus sl_vae_config_load(SlVaeConfig *cfg, const char *path, SlCtx *ctx) {
    memset(cfg, 0, sizeof *cfg); /* a failed load leaves a config every consumer refuses */
    SlConfig j;
    SL_TRY(sl_config_load(&j, path, ctx));
    SlStatus st = sl_vae_config_from(cfg, &j, ctx);
    sl_config_free(&j);
    return st;
}

/* ---- the tensor table ---- */

typedef struct VaeSpec {
    char name[112];      /* diffusers */
    char ldm[112];       /* original LDM, unprefixed */
    char old[112];       /* diffusers < 0.14 (attention query/key/value/proj_attn) */
    int ndim;
    int64_t shape[4];
    float **dst;         /* field in SlVaeParams */
    int proj;            /* attention projection: [C,C] or [C,C,1,1] accepted */
} VaeSpec;

typedef struct VaeSpecList {
    VaeSpec *v;
    int n, cap;
    int oom;
} VaeSpecList;

static void spec_add(VaeSpecList *l, const char *name, const char *ldm, float **dst, int ndim, int64_t a,
                     int64_t b, int64_t c, int64_t d, int proj) {
    if (l->oom) return;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 256;
        VaeSpec *nv = realloc(l->v, (size_t)cap * sizeof *nv);
        if (!nv) { l->oom = 1; return; }
        l->v = nv;
        l->cap = cap;
    }
    VaeSpec *s = &l->v[l->n++];
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->ldm, sizeof s->ldm, "%s", ldm);
    s->ndim = ndim;
    s->shape[0] = a; s->shape[1] = b; s->shape[2] = c; s->shape[3] = d;
    s->dst = dst;
    s->proj = proj;
}

/* Adds "<pre>.weight"/"<pre>.bias" for a conv (k > 0), a norm (k == 0) or an
 * attention projection (k < 0). */
static void spec_layer(VaeSpecList *l, const char *pre, const char *ldm_pre, float **w, float **b,
                       int64_t co, int64_t ci, int k) {
    char n1[112], n2[112];
    snprintf(n1, sizeof n1, "%s.weight", pre);
    snprintf(n2, sizeof n2, "%s.weight", ldm_pre);
    if (k > 0) spec_add(l, n1, n2, w, 4, co, ci, k, k, 0);
    else if (k == 0) spec_add(l, n1, n2, w, 1, co, 0, 0, 0, 0);
    else spec_add(l, n1, n2, w, 2, co, ci, 0, 0, 1);
    snprintf(n1, sizeof n1, "%s.bias", pre);
    snprintf(n2, sizeof n2, "%s.bias", ldm_pre);
    spec_add(l, n1, n2, b, 1, co, 0, 0, 0, 0);
}

static void spec_resnet(VaeSpecList *l, const char *pre, const char *ldm_pre, SlVaeResnet *r, int ci, int co) {
    char a[112], b[112];
    r->Ci = ci;
    r->Co = co;
#define RES_LAYER(dn, ln, field, oc, ic, k)                              \
    snprintf(a, sizeof a, "%s.%s", pre, dn);                             \
    snprintf(b, sizeof b, "%s.%s", ldm_pre, ln);                         \
    spec_layer(l, a, b, &r->field##_w, &r->field##_b, oc, ic, k)
    RES_LAYER("norm1", "norm1", norm1, ci, 0, 0);
    RES_LAYER("conv1", "conv1", conv1, co, ci, 3);
    RES_LAYER("norm2", "norm2", norm2, co, 0, 0);
    RES_LAYER("conv2", "conv2", conv2, co, co, 3);
    if (ci != co) { RES_LAYER("conv_shortcut", "nin_shortcut", short, co, ci, 1); }
#undef RES_LAYER
}

static void spec_mid(VaeSpecList *l, const char *part, SlVaeMid *m, int c, int attn) {
    char a[112], b[112];
    snprintf(a, sizeof a, "%s.mid_block.resnets.0", part);
    snprintf(b, sizeof b, "%s.mid.block_1", part);
    spec_resnet(l, a, b, &m->res[0], c, c);
    m->has_attn = attn;
    if (attn) {
        SlVaeAttn *t = &m->attn;
        t->C = c;
#define ATT_LAYER(dn, ln, field, k)                                          \
    snprintf(a, sizeof a, "%s.mid_block.attentions.0.%s", part, dn);         \
    snprintf(b, sizeof b, "%s.mid.attn_1.%s", part, ln);                     \
    spec_layer(l, a, b, &t->field##_w, &t->field##_b, c, c, k)
        ATT_LAYER("group_norm", "norm", norm, 0);
        ATT_LAYER("to_q", "q", q, -1);
        ATT_LAYER("to_k", "k", k, -1);
        ATT_LAYER("to_v", "v", v, -1);
        ATT_LAYER("to_out.0", "proj_out", o, -1);
#undef ATT_LAYER
    }
    snprintf(a, sizeof a, "%s.mid_block.resnets.1", part);
    snprintf(b, sizeof b, "%s.mid.block_2", part);
    spec_resnet(l, a, b, &m->res[1], c, c);
}

/* Builds the table for cfg with destinations in p. */
static SlStatus vae_specs(VaeSpecList *l, const SlVaeConfig *c, SlVaeParams *p, SlCtx *ctx) {
    memset(l, 0, sizeof *l);
    SL_TRY(sl_vae_config_validate(c, ctx)); /* block_out[n - 1] below needs n >= 1 */
    const int n = c->n_blocks, lpb = c->layers_per_block, lc = c->latent_channels;
    const int clast = c->block_out[n - 1];
    char a[112], b[112];

    spec_layer(l, "encoder.conv_in", "encoder.conv_in", &p->enc_conv_in_w, &p->enc_conv_in_b, c->block_out[0],
               c->in_channels, 3);
    int ch = c->block_out[0];
    for (int i = 0; i < n; i++) {
        const int co = c->block_out[i];
        for (int jj = 0; jj < lpb; jj++) {
            snprintf(a, sizeof a, "encoder.down_blocks.%d.resnets.%d", i, jj);
            snprintf(b, sizeof b, "encoder.down.%d.block.%d", i, jj);
            spec_resnet(l, a, b, &p->enc_res[i][jj], jj == 0 ? ch : co, co);
        }
        ch = co;
        if (i < n - 1) {
            snprintf(a, sizeof a, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            snprintf(b, sizeof b, "encoder.down.%d.downsample.conv", i);
            spec_layer(l, a, b, &p->enc_down_w[i], &p->enc_down_b[i], co, co, 3);
        }
    }
    spec_mid(l, "encoder", &p->enc_mid, clast, c->mid_block_add_attention);
    spec_layer(l, "encoder.conv_norm_out", "encoder.norm_out", &p->enc_norm_out_w, &p->enc_norm_out_b, clast, 0, 0);
    spec_layer(l, "encoder.conv_out", "encoder.conv_out", &p->enc_conv_out_w, &p->enc_conv_out_b, 2 * lc, clast, 3);
    if (c->use_quant_conv)
        spec_layer(l, "quant_conv", "quant_conv", &p->quant_w, &p->quant_b, 2 * lc, 2 * lc, 1);
    if (c->use_post_quant_conv)
        spec_layer(l, "post_quant_conv", "post_quant_conv", &p->post_quant_w, &p->post_quant_b, lc, lc, 1);

    spec_layer(l, "decoder.conv_in", "decoder.conv_in", &p->dec_conv_in_w, &p->dec_conv_in_b, clast, lc, 3);
    spec_mid(l, "decoder", &p->dec_mid, clast, c->mid_block_add_attention);
    ch = clast;
    for (int k = 0; k < n; k++) {
        const int co = c->block_out[n - 1 - k];
        const int ldm_i = n - 1 - k;
        for (int jj = 0; jj < lpb + 1; jj++) {
            snprintf(a, sizeof a, "decoder.up_blocks.%d.resnets.%d", k, jj);
            snprintf(b, sizeof b, "decoder.up.%d.block.%d", ldm_i, jj);
            spec_resnet(l, a, b, &p->dec_res[k][jj], jj == 0 ? ch : co, co);
        }
        ch = co;
        if (k < n - 1) {
            snprintf(a, sizeof a, "decoder.up_blocks.%d.upsamplers.0.conv", k);
            snprintf(b, sizeof b, "decoder.up.%d.upsample.conv", ldm_i);
            spec_layer(l, a, b, &p->dec_up_w[k], &p->dec_up_b[k], co, co, 3);
        }
    }
    spec_layer(l, "decoder.conv_norm_out", "decoder.norm_out", &p->dec_norm_out_w, &p->dec_norm_out_b,
               c->block_out[0], 0, 0);
    spec_layer(l, "decoder.conv_out", "decoder.conv_out", &p->dec_conv_out_w, &p->dec_conv_out_b, c->out_channels,
               c->block_out[0], 3);
    if (l->oom) {
        free(l->v);
        return sl_fail(ctx, SL_ERR_NOMEM, "vae: out of memory building the tensor table");
    }
    /* deprecated diffusers attention names (modeling_utils' _convert_deprecated_attention_blocks) */
    static const char *const dep[4][2] = {
        {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
    for (int i = 0; i < l->n; i++) {
        VaeSpec *sp = &l->v[i];
        snprintf(sp->old, sizeof sp->old, "%s", sp->name);
        const char *at = strstr(sp->name, ".attentions.0.");
        for (int k = 0; at && k < 4; k++) {
            const char *hit = strstr(at, dep[k][0]);
            if (!hit) continue;
            snprintf(sp->old, sizeof sp->old, "%.*s%s%s", (int)(hit - sp->name), sp->name, dep[k][1],
                     hit + strlen(dep[k][0]));
        }
    }
    return SL_OK;
}

/* Installs the map name -> ldm (which = 0) or name -> old (which = 1) on w. */
static SlStatus vae_install_map(SlWeights *w, const VaeSpecList *l, int which, SlCtx *ctx) {
    SlKeyPair *kp = calloc((size_t)l->n, sizeof *kp);
    if (!kp) return sl_fail(ctx, SL_ERR_NOMEM, "vae: out of memory");
    for (int i = 0; i < l->n; i++) {
        kp[i].from = l->v[i].name;   /* borrowed: set_map copies */
        kp[i].to = which == 0 ? l->v[i].ldm : l->v[i].old;
    }
    SlStatus st = sl_weights_set_map(w, kp, l->n, ctx);
    free(kp);
    return st;
}

static int64_t spec_numel(const VaeSpec *s) { return sl_shape_numel(s->ndim, s->shape); }

int64_t sl_vae_param_count(const SlVaeConfig *cfg) {
    SlVaeParams *p = calloc(1, sizeof *p);
    VaeSpecList l;
    if (!p || vae_specs(&l, cfg, p, NULL) != SL_OK) { free(p); return -1; }
    int64_t total = 0;
    for (int i = 0; i < l.n; i++) total += spec_numel(&l.v[i]);
    free(l.v);
    free(p);
    return total;
}

SlStatus sl_vae_ldm_key_map(const SlVaeConfig *cfg, SlKeyPair **pairs, int *n, SlCtx *ctx) {
    *pairs = NULL;
    *n = 0;
    SL_TRY(sl_vae_config_validate(cfg, ctx));
    SlVaeParams *p = calloc(1, sizeof *p);
    if (!p) return sl_fail(ctx, SL_ERR_NOMEM, "vae: out of memory");
    VaeSpecList l;
    SlStatus st = vae_specs(&l, cfg, p, ctx);
    free(p);
    if (st != SL_OK) return st;
    SlKeyPair *kp = calloc((size_t)l.n, sizeof *kp);
    if (!kp) { free(l.v); return sl_fail(ctx, SL_ERR_NOMEM, "vae: out of memory"); }
    for (int i = 0; i < l.n; i++) {
        kp[i].from = strdup(l.v[i].name);
        kp[i].to = strdup(l.v[i].ldm);
        if (!kp[i].from || !kp[i].to) {
            sl_vae_key_map_free(kp, i + 1);
            free(l.v);
            return sl_fail(ctx, SL_ERR_NOMEM, "vae: out of memory");
        }
    }
    *pairs = kp;
    *n = l.n;
    free(l.v);
    return SL_OK;
}

void sl_vae_key_map_free(SlKeyPair *pairs, int n) {
    if (!pairs) return;
    for (int i = 0; i < n; i++) { free(pairs[i].from); free(pairs[i].to); }
    free(pairs);
}

/* ---- create / load ---- */

static SlStatus vae_alloc(SlVae **out, const SlVaeConfig *cfg, VaeSpecList *l, SlCtx *ctx) {
    *out = NULL;
    SL_TRY(sl_vae_config_validate(cfg, ctx));
    SlVae *v = calloc(1, sizeof *v);
    if (!v) return sl_fail(ctx, SL_ERR_NOMEM, "vae: out of memory");
    v->cfg = *cfg;
    v->work_budget = (size_t)1 << 24;
    SlStatus st = vae_specs(l, cfg, &v->p, ctx);
    if (st != SL_OK) { free(v); return st; }
    size_t bytes = 0;
    for (int i = 0; i < l->n; i++) bytes += sl_align_up((size_t)spec_numel(&l->v[i]) * sizeof(float));
    st = sl_arena_init(&v->weights, bytes, "VAE weights", ctx);
    if (st != SL_OK) { free(l->v); free(v); return st; }
    for (int i = 0; i < l->n; i++) {
        *l->v[i].dst = sl_arena_take_f32(&v->weights, spec_numel(&l->v[i]));
        if (!*l->v[i].dst) {  /* planning bug */
            free(l->v);
            sl_vae_free(v);
            return sl_fail(ctx, SL_ERR_NOMEM, "vae: weight arena too small at %s", l->v[i].name);
        }
    }
    *out = v;
    return SL_OK;
}

SlStatus sl_vae_create(SlVae **out, const SlVaeConfig *cfg, SlCtx *ctx) {
    VaeSpecList l;
    SL_TRY(vae_alloc(out, cfg, &l, ctx));
    free(l.v);
    return SL_OK;
}

/* Loads an attention projection stored as [C,C] (diffusers Linear) or
 * [C,C,1,1] (LDM 1x1 conv): the same C*C numbers either way. */
static SlStatus vae_load_proj(SlWeights *w, const VaeSpec *s, SlCtx *ctx) {
    const SlStFile *f = NULL;
    const SlStEntry *e = sl_weights_find(w, s->name, &f);
    if (!e) return sl_weights_load(w, s->name, s->ndim, s->shape, *s->dst, ctx); /* names the miss */
    const int ok = (e->ndim == 2 || (e->ndim == 4 && e->shape[2] == 1 && e->shape[3] == 1)) &&
                   e->shape[0] == s->shape[0] && e->shape[1] == s->shape[1];
    if (!ok) {
        char got[96];
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: tensor %s (file name %s) has shape %s, want [%lld,%lld] or [%lld,%lld,1,1]",
                       w->label, s->name, e->name, sl_shape_str(e->ndim, e->shape, got, sizeof got),
                       (long long)s->shape[0], (long long)s->shape[1], (long long)s->shape[0],
                       (long long)s->shape[1]);
    }
    return sl_st_read_f32(f, e, *s->dst, ctx);
}

SlStatus sl_vae_load(SlVae **out, const SlVaeConfig *cfg, SlWeights *w, SlCtx *ctx) {
    VaeSpecList l;
    SL_TRY(vae_alloc(out, cfg, &l, ctx));
    SlVae *v = *out;
    SlStatus st = SL_OK;
    /* Layout probe, only when the caller installed no map: diffusers names,
     * original LDM names (single-file), or diffusers' pre-0.14 attention names. */
    const SlStFile *pf = NULL;
    if (w->n_map == 0 && !sl_weights_find(w, "encoder.mid_block.resnets.0.norm1.weight", &pf)) {
        if (sl_weights_find(w, "encoder.mid.block_1.norm1.weight", &pf)) {
            st = vae_install_map(w, &l, 0, ctx);
            sl_log(ctx, SL_LOG_DEBUG, "vae: %s uses LDM (single-file) names", w->label);
        }
    } else if (w->n_map == 0 && cfg->mid_block_add_attention &&
               !sl_weights_find(w, "encoder.mid_block.attentions.0.to_q.weight", &pf) &&
               sl_weights_find(w, "encoder.mid_block.attentions.0.query.weight", &pf)) {
        st = vae_install_map(w, &l, 1, ctx);
        sl_log(ctx, SL_LOG_DEBUG, "vae: %s uses deprecated attention names (query/key/value/proj_attn)", w->label);
    }
    for (int i = 0; st == SL_OK && i < l.n; i++) {
        const VaeSpec *s = &l.v[i];
        st = s->proj ? vae_load_proj(w, s, ctx) : sl_weights_load(w, s->name, s->ndim, s->shape, *s->dst, ctx);
        if (st == SL_OK) { /* a NaN here came out later as a wrong image, or as "the U-Net output went bad" */
            const int dec = strncmp(s->name, "decoder.", 8) == 0 || strncmp(s->name, "post_quant_conv.", 16) == 0;
            int64_t n = 1;
            for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
            st = sl_weights_check_finite(w, dec ? "VAE decoder" : "VAE encoder", s->name, *s->dst, (size_t)n, 0, ctx);
            if (st) { free(l.v); sl_vae_free(v); *out = NULL; return st; } /* already names the VAE part */
        }
    }
    free(l.v);
    if (st != SL_OK) {
        sl_fail_prefix(ctx, "vae");
        sl_vae_free(v);
        *out = NULL;
        return st;
    }
    sl_weights_report_unused(w, 8, ctx);
    return SL_OK;
}

void sl_vae_init_random(SlVae *vae, uint64_t seed) {
    VaeSpecList l;
    SlVaeParams scratch;  /* destinations of a second table: only the shapes are used */
    if (vae_specs(&l, &vae->cfg, &scratch, NULL) != SL_OK) return;
    /* The tables list tensors in the same order as the arena was carved. */
    float *base = (float *)vae->weights.base;
    size_t off = 0;
    for (int i = 0; i < l.n; i++) {
        const VaeSpec *s = &l.v[i];
        const int64_t n = spec_numel(s);
        float *t = base + off / sizeof(float);
        const int is_bias = strstr(s->name, ".bias") != NULL;
        if (s->ndim == 1 && !is_bias) {           /* norm gamma */
            for (int64_t k = 0; k < n; k++) t[k] = 1.0f;
        } else if (s->ndim == 1 && strstr(s->name, "norm")) {  /* norm beta */
            for (int64_t k = 0; k < n; k++) t[k] = 0.0f;
        } else {
            /* fan_in of this layer: weight numel / Co (PyTorch's default bound 1/sqrt(fan_in)) */
            const int64_t fan_in = is_bias ? spec_numel(&l.v[i - 1]) / n : n / s->shape[0];
            const float bound = 1.0f / sqrtf((float)fan_in);
            sl_rng_uniform(t, n, seed, (uint64_t)i, 0);
            for (int64_t k = 0; k < n; k++) t[k] = (2.0f * t[k] - 1.0f) * bound;
        }
        off += sl_align_up((size_t)n * sizeof(float));
    }
    free(l.v);
}

void sl_vae_free(SlVae *vae) {
    if (!vae) return;
    sl_arena_free(&vae->weights);
    sl_arena_free(&vae->enc.arena);
    sl_arena_free(&vae->dec.arena);
    free(vae);
}

const SlVaeConfig *sl_vae_config(const SlVae *vae) { return &vae->cfg; }
SlVaeParams *sl_vae_params(SlVae *vae) { return &vae->p; }
float *sl_vae_weight_data(SlVae *vae, int64_t *n_floats) {
    if (n_floats) *n_floats = (int64_t)(vae->weights.used / sizeof(float));
    return (float *)vae->weights.base;
}
void sl_vae_set_work_budget(SlVae *vae, size_t floats) {
    vae->work_budget = floats;
    vae->enc.valid = vae->dec.valid = 0;
}
void sl_vae_set_kernels(SlVae *vae, const SlKernels *k) {
    const SlKernels none = {0};
    vae->kern = k ? *k : none;
    vae->enc.valid = vae->dec.valid = 0;
}
void sl_vae_release_activations(SlVae *vae) {
    sl_arena_free(&vae->enc.arena);
    sl_arena_free(&vae->dec.arena);
    memset(&vae->enc, 0, sizeof vae->enc);
    memset(&vae->dec, 0, sizeof vae->dec);
}
size_t sl_vae_activation_bytes(const SlVae *vae) { return vae->enc.arena.size + vae->dec.arena.size; }
