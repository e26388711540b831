/* unet_config.c - reads a diffusers UNet2DConditionModel config.json into SlUNetConfig.
 *
 * Follows diffusers' resolution of the head count: `num_attention_heads`
 * must be null (diffusers itself refuses it) and `attention_head_dim`, despite
 * its name, is the NUMBER OF HEADS per block (int or per-block list); the head
 * width is then channels / heads. Every key that would change the network is
 * either understood or refused (SL_ERR_UNSUPPORTED naming key and value);
 * nothing is silently ignored. Keys that do not change the computation
 * (sample_size, dropout, upcast_attention in fp32) are read for type only.
 */
#include <cJSON.h>
#include <math.h>
#include <string.h>

#include "core/config.h"
#include "unet.h"

#define MAXC 16384

/* key must be absent/null or equal to the given string. */
static SlStatus need_str(const SlConfig *c, const char *key, const char *want, SlCtx *ctx) {
    const char *v = NULL;
    SL_TRY(sl_config_str(c, key, NULL, &v, ctx));
    if (v && strcmp(v, want) != 0)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s = \"%s\" is not supported (only \"%s\")", c->path,
                       key, v, want);
    return SL_OK;
}

/* key must be absent or null. */
static SlStatus need_null(const SlConfig *c, const char *key, SlCtx *ctx) {
    if (!sl_config_has(c, key)) return SL_OK;
    cJSON *it = cJSON_GetObjectItemCaseSensitive(c->root, key);
    char *txt = cJSON_PrintUnformatted(it);
    SlStatus st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s = %s is not supported (only null)", c->path, key,
                          txt ? txt : "?");
    cJSON_free(txt);
    return st;
}

static SlStatus need_bool(const SlConfig *c, const char *key, int want, SlCtx *ctx) {
    int v = want;
    SL_TRY(sl_config_bool(c, key, want, &v, ctx));
    if (v != want)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s = %s is not supported", c->path, key,
                       v ? "true" : "false");
    return SL_OK;
}

static SlStatus need_num(const SlConfig *c, const char *key, double want, SlCtx *ctx) {
    double v = want;
    SL_TRY(sl_config_num(c, key, want, &v, ctx));
    if (v != want)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: %s = %g is not supported (only %g)", c->path, key, v, want);
    return SL_OK;
}

/* An int or a per-block list of n ints, within [lo, hi]. */
static SlStatus per_block(const SlConfig *c, const char *key, int64_t def, int n, int64_t lo, int64_t hi,
                          int64_t *out, SlCtx *ctx) {
    if (!sl_config_has(c, key)) {
        for (int i = 0; i < n; i++) out[i] = def;
        return SL_OK;
    }
    int64_t tmp[SL_UNET_MAX_BLOCKS + 1];
    int k = 0;
    SL_TRY(sl_config_int_list(c, key, lo, hi, tmp, SL_UNET_MAX_BLOCKS + 1, &k, ctx));
    cJSON *it = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!cJSON_IsArray(it)) {
        for (int i = 0; i < n; i++) out[i] = tmp[0];
        return SL_OK;
    }
    if (k != n)
        return sl_fail(ctx, SL_ERR_SHAPE, "%s: %s has %d entries but there are %d blocks", c->path, key, k, n);
    for (int i = 0; i < n; i++) out[i] = tmp[i];
    return SL_OK;
}

static SlStatus parse(SlUNetConfig *u, const SlConfig *c, SlCtx *ctx) {
    memset(u, 0, sizeof *u);
    const char *cls = NULL;
    SL_TRY(sl_config_str(c, "_class_name", "UNet2DConditionModel", &cls, ctx));
    if (strcmp(cls, "UNet2DConditionModel") != 0)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: _class_name = \"%s\" is not supported (only UNet2DConditionModel)",
                       c->path, cls);
    int64_t v;
    SL_TRY(sl_config_int(c, "in_channels", 4, 1, 64, &u->in_channels, ctx));
    SL_TRY(sl_config_int(c, "out_channels", 4, 1, 64, &u->out_channels, ctx));

    const char *down[SL_UNET_MAX_BLOCKS + 1], *up[SL_UNET_MAX_BLOCKS + 1];
    int nd = 0, nu = 0, nb = 0;
    if (!sl_config_has(c, "down_block_types") || !sl_config_has(c, "up_block_types") ||
        !sl_config_has(c, "block_out_channels"))
        return sl_fail(ctx, SL_ERR_MISSING, "%s: down_block_types, up_block_types and block_out_channels are required",
                       c->path);
    SL_TRY(sl_config_str_list(c, "down_block_types", down, SL_UNET_MAX_BLOCKS + 1, &nd, ctx));
    SL_TRY(sl_config_str_list(c, "up_block_types", up, SL_UNET_MAX_BLOCKS + 1, &nu, ctx));
    SL_TRY(sl_config_int_list(c, "block_out_channels", 1, MAXC, u->block_out, SL_UNET_MAX_BLOCKS, &nb, ctx));
    if (nd < 1 || nd > SL_UNET_MAX_BLOCKS || nd != nu || nd != nb)
        return sl_fail(ctx, SL_ERR_SHAPE,
                       "%s: down_block_types (%d), up_block_types (%d) and block_out_channels (%d) must have the same length in 1..%d",
                       c->path, nd, nu, nb, SL_UNET_MAX_BLOCKS);
    u->n_blocks = nd;
    for (int i = 0; i < nd; i++) {
        if (!strcmp(down[i], "CrossAttnDownBlock2D")) u->down_attn[i] = 1;
        else if (strcmp(down[i], "DownBlock2D") != 0)
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: down_block_types[%d] = \"%s\" is not supported", c->path, i,
                           down[i]);
        if (!strcmp(up[i], "CrossAttnUpBlock2D")) u->up_attn[i] = 1;
        else if (strcmp(up[i], "UpBlock2D") != 0)
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: up_block_types[%d] = \"%s\" is not supported", c->path, i, up[i]);
    }
    const char *mid = "UNetMidBlock2DCrossAttn";
    if (sl_config_has(c, "mid_block_type")) SL_TRY(sl_config_str(c, "mid_block_type", mid, &mid, ctx));
    else if (cJSON_GetObjectItemCaseSensitive(c->root, "mid_block_type")) mid = NULL; /* explicit null */
    if (mid && strcmp(mid, "UNetMidBlock2DCrossAttn") != 0)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: mid_block_type = \"%s\" is not supported", c->path, mid);
    u->has_mid = mid != NULL;

    SL_TRY(per_block(c, "layers_per_block", 2, nd, 1, SL_UNET_MAX_LAYERS - 1, u->layers, ctx));
    SL_TRY(need_null(c, "num_attention_heads", ctx));
    SL_TRY(per_block(c, "attention_head_dim", 8, nd, 1, MAXC, u->heads, ctx));
    SL_TRY(per_block(c, "transformer_layers_per_block", 1, nd, 1, SL_UNET_MAX_TLAYERS, u->tlayers, ctx));
    SL_TRY(need_null(c, "reverse_transformer_layers_per_block", ctx));
    for (int i = 0; i < nd; i++) u->up_tlayers[i] = u->tlayers[nd - 1 - i];

    if (!sl_config_has(c, "norm_num_groups") && cJSON_GetObjectItemCaseSensitive(c->root, "norm_num_groups"))
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: norm_num_groups = null is not supported", c->path);
    SL_TRY(sl_config_int(c, "norm_num_groups", 32, 1, MAXC, &u->groups, ctx));
    double eps = 1e-5;
    SL_TRY(sl_config_num(c, "norm_eps", 1e-5, &eps, ctx));
    if (!(eps > 0 && eps < 1)) return sl_fail(ctx, SL_ERR_ARG, "%s: norm_eps = %g is out of range", c->path, eps);
    u->eps = (float)eps;
    SL_TRY(sl_config_int(c, "cross_attention_dim", 1280, 1, MAXC, &u->cross_dim, ctx));
    SL_TRY(sl_config_bool(c, "use_linear_projection", 0, &u->linear_proj, ctx));
    SL_TRY(sl_config_bool(c, "flip_sin_to_cos", 1, &u->flip_sin_to_cos, ctx));
    double fs = 0;
    SL_TRY(sl_config_num(c, "freq_shift", 0, &fs, ctx));
    if (!(fabs(fs) < 1e6)) return sl_fail(ctx, SL_ERR_ARG, "%s: freq_shift = %g is out of range", c->path, fs);
    u->freq_shift = (float)fs;

    /* keys that must keep their default */
    SL_TRY(need_str(c, "act_fn", "silu", ctx));
    SL_TRY(need_str(c, "resnet_time_scale_shift", "default", ctx));
    SL_TRY(need_str(c, "time_embedding_type", "positional", ctx));
    SL_TRY(need_str(c, "attention_type", "default", ctx));
    SL_TRY(need_bool(c, "only_cross_attention", 0, ctx));
    SL_TRY(need_bool(c, "dual_cross_attention", 0, ctx));
    SL_TRY(need_bool(c, "center_input_sample", 0, ctx));
    SL_TRY(need_bool(c, "resnet_skip_time_act", 0, ctx));
    SL_TRY(need_bool(c, "class_embeddings_concat", 0, ctx));
    SL_TRY(need_num(c, "resnet_out_scale_factor", 1.0, ctx));
    SL_TRY(need_num(c, "mid_block_scale_factor", 1.0, ctx));
    SL_TRY(need_num(c, "downsample_padding", 1.0, ctx));
    SL_TRY(need_num(c, "conv_in_kernel", 3.0, ctx));
    SL_TRY(need_num(c, "conv_out_kernel", 3.0, ctx));
    static const char *const nulls[] = {
        "class_embed_type", "addition_embed_type", "num_class_embeds", "time_cond_proj_dim",
        "encoder_hid_dim", "encoder_hid_dim_type", "time_embedding_dim", "time_embedding_act_fn",
        "timestep_post_act", "projection_class_embeddings_input_dim", "cross_attention_norm",
        "addition_time_embed_dim", "mid_block_only_cross_attention"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) SL_TRY(need_null(c, nulls[i], ctx));
    /* read for type only: fp32 attention makes upcast_attention a no-op, dropout is 0 at train time here */
    int dummy;
    SL_TRY(sl_config_bool(c, "upcast_attention", 0, &dummy, ctx));
    double dr = 0;
    SL_TRY(sl_config_num(c, "dropout", 0, &dr, ctx));
    if (dr != 0) return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: dropout = %g is not supported (only 0)", c->path, dr);
    SL_TRY(sl_config_int(c, "sample_size", 64, 1, 1 << 16, &v, ctx));

    /* sizes */
    for (int i = 0; i < nd; i++) {
        int64_t C = u->block_out[i];
        if (C % u->groups)
            return sl_fail(ctx, SL_ERR_SHAPE, "%s: block_out_channels[%d] = %lld is not divisible by norm_num_groups = %lld",
                           c->path, i, (long long)C, (long long)u->groups);
        int need_heads = u->down_attn[i] || u->up_attn[nd - 1 - i] || (i == nd - 1 && u->has_mid);
        if (need_heads && (u->heads[i] > C || C % u->heads[i]))
            return sl_fail(ctx, SL_ERR_SHAPE, "%s: block_out_channels[%d] = %lld is not divisible by %lld heads (attention_head_dim)",
                           c->path, i, (long long)C, (long long)u->heads[i]);
    }
    u->time_dim = u->block_out[0] * 4;
    return SL_OK;
}

SlStatus sl_unet_config_parse(SlUNetConfig *cfg, const char *json, const char *label, SlCtx *ctx) {
    memset(cfg, 0, sizeof *cfg);
    SlConfig c;
    SL_TRY(sl_config_parse(&c, json, label, ctx));
    SlStatus st = parse(cfg, &c, ctx);
    sl_config_free(&c);
    return st;
}

SlStatus sl_unet_config_load(SlUNetConfig *cfg, const char *path, SlCtx *ctx) {
    memset(cfg, 0, sizeof *cfg); /* a failed load leaves a config sl_unet_init_shapes refuses */
    SlConfig c;
    SL_TRY(sl_config_load(&c, path, ctx));
    SlStatus st = parse(cfg, &c, ctx);
    sl_config_free(&c);
    return st;
}
