/* unet_map.c - the single-file (original LDM) key table for a U-Net config.
 *
 * The table is data: module prefix pairs computed from the config (block ->
 * input_blocks/middle_block/output_blocks index, following diffusers'
 * convert_ldm_unet_checkpoint) and a fixed table of resnet sub-module renames.
 * Names are without the "model.diffusion_model." prefix (SlWeights' view adds it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unet.h"

typedef struct PrefixPair {
    char from[96], to[96];
    int resnet;    /* apply the resnet sub-module renames */
} PrefixPair;

/* diffusers ResnetBlock2D sub-module -> LDM ResBlock sub-module */
static const char *const k_resnet_renames[][2] = {
    {"norm1.", "in_layers.0."},        {"conv1.", "in_layers.2."},  {"time_emb_proj.", "emb_layers.1."},
    {"norm2.", "out_layers.0."},       {"conv2.", "out_layers.3."}, {"conv_shortcut.", "skip_connection."},
};

/* top-level modules */
static const char *const k_top[][2] = {
    {"time_embedding.linear_1", "time_embed.0"}, {"time_embedding.linear_2", "time_embed.2"},
    {"conv_in", "input_blocks.0.0"},              {"conv_norm_out", "out.0"},
    {"conv_out", "out.2"},
};

static int add(PrefixPair *pp, int n, int cap, int resnet, const char *from, const char *to) {
    if (n >= cap) return n;
    snprintf(pp[n].from, sizeof pp[n].from, "%s", from);
    snprintf(pp[n].to, sizeof pp[n].to, "%s", to);
    pp[n].resnet = resnet;
    return n + 1;
}

static int build_prefixes(const SlUNetConfig *c, PrefixPair *pp, int cap) {
    int n = 0, ib = 1, ob = 0;
    char f[96], t[96];
    for (size_t i = 0; i < sizeof k_top / sizeof k_top[0]; i++) n = add(pp, n, cap, 0, k_top[i][0], k_top[i][1]);
    for (int i = 0; i < c->n_blocks; i++) {
        for (int64_t j = 0; j < c->layers[i]; j++, ib++) {
            snprintf(f, sizeof f, "down_blocks.%d.resnets.%lld", i, (long long)j);
            snprintf(t, sizeof t, "input_blocks.%d.0", ib);
            n = add(pp, n, cap, 1, f, t);
            snprintf(f, sizeof f, "down_blocks.%d.attentions.%lld", i, (long long)j);
            snprintf(t, sizeof t, "input_blocks.%d.1", ib);
            n = add(pp, n, cap, 0, f, t);
        }
        if (i < c->n_blocks - 1) {
            snprintf(f, sizeof f, "down_blocks.%d.downsamplers.0.conv", i);
            snprintf(t, sizeof t, "input_blocks.%d.0.op", ib++);
            n = add(pp, n, cap, 0, f, t);
        }
    }
    n = add(pp, n, cap, 1, "mid_block.resnets.0", "middle_block.0");
    n = add(pp, n, cap, 0, "mid_block.attentions.0", "middle_block.1");
    n = add(pp, n, cap, 1, "mid_block.resnets.1", "middle_block.2");
    for (int i = 0; i < c->n_blocks; i++) {
        const int64_t nl = c->layers[c->n_blocks - 1 - i] + 1;
        for (int64_t j = 0; j < nl; j++, ob++) {
            snprintf(f, sizeof f, "up_blocks.%d.resnets.%lld", i, (long long)j);
            snprintf(t, sizeof t, "output_blocks.%d.0", ob);
            n = add(pp, n, cap, 1, f, t);
            snprintf(f, sizeof f, "up_blocks.%d.attentions.%lld", i, (long long)j);
            snprintf(t, sizeof t, "output_blocks.%d.1", ob);
            n = add(pp, n, cap, 0, f, t);
        }
        if (i < c->n_blocks - 1) {
            snprintf(f, sizeof f, "up_blocks.%d.upsamplers.0.conv", i);
            snprintf(t, sizeof t, "output_blocks.%d.%d.conv", ob - 1, c->up_attn[i] ? 2 : 1);
            n = add(pp, n, cap, 0, f, t);
        }
    }
    return n;
}

SlStatus sl_unet_ldm_map(const SlUNet *u, SlKeyPair **pairs, int *n_out, SlCtx *ctx) {
    const int cap = 16 + SL_UNET_MAX_BLOCKS * (2 * SL_UNET_MAX_LAYERS + 4) * 2;
    PrefixPair *pp = calloc((size_t)cap, sizeof *pp);
    SlKeyPair *out = calloc((size_t)u->n_params + 1, sizeof *out);
    if (!pp || !out) {
        free(pp);
        free(out);
        return sl_fail(ctx, SL_ERR_NOMEM, "unet: out of memory building the single-file key map");
    }
    const int np = build_prefixes(&u->cfg, pp, cap);
    int n = 0;
    for (int i = 0; i < u->n_params; i++) {
        const char *name = u->params[i].name;
        int best = -1;
        size_t blen = 0;
        for (int k = 0; k < np; k++) {
            size_t l = strlen(pp[k].from);
            if (l > blen && !strncmp(name, pp[k].from, l) && name[l] == '.') {
                best = k;
                blen = l;
            }
        }
        if (best < 0) {
            sl_unet_free_map(out, n);
            free(pp);
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "unet: no single-file name for %s", name);
        }
        const char *rest = name + blen + 1, *rename_from = "", *rename_to = "";
        if (pp[best].resnet)
            for (size_t r = 0; r < sizeof k_resnet_renames / sizeof k_resnet_renames[0]; r++)
                if (!strncmp(rest, k_resnet_renames[r][0], strlen(k_resnet_renames[r][0]))) {
                    rename_from = k_resnet_renames[r][0];
                    rename_to = k_resnet_renames[r][1];
                    break;
                }
        char buf[256];
        snprintf(buf, sizeof buf, "%s.%s%s", pp[best].to, rename_to, rest + strlen(rename_from));
        out[n].from = strdup(name);
        out[n].to = strdup(buf);
        if (!out[n].from || !out[n].to) {
            free(out[n].from);
            free(out[n].to);
            sl_unet_free_map(out, n);
            free(pp);
            return sl_fail(ctx, SL_ERR_NOMEM, "unet: out of memory building the single-file key map");
        }
        n++;
    }
    free(pp);
    *pairs = out;
    *n_out = n;
    return SL_OK;
}

void sl_unet_free_map(SlKeyPair *pairs, int n) {
    if (!pairs) return;
    for (int i = 0; i < n; i++) {
        free(pairs[i].from);
        free(pairs[i].to);
    }
    free(pairs);
}
