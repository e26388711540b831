/* test_styles_files.c - adapter file forms and bad files (small files written here).
 *
 * Good: older diffusers keys (lora.down / processor.to_out_lora) map to their
 * modules; kohya names expand with the built-in table (U-Net and text encoder);
 * a kohya file without `.alpha` loads with alpha = rank (sd-scripts' rule).
 * Bad, each with a message naming the file and the tensor: a wrong shape, an
 * unknown module (lenient mode turns it into a skipped warning), a PEFT file
 * with no alpha anywhere, NaN values, lora_down without lora_up, an input-wise
 * (LyCORIS) DoRA scale, a safetensors file that holds no adapter at all.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "styles/adapter.h"
#include "test_util.h"

#define ATTN "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
#define KATTN "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1"

typedef struct Item { const char *name; int ndim; int64_t shape[4]; } Item;

static float g_buf[4096];

/* Writes a file whose tensors are all filled from g_buf (values 0.01*i), with an
 * optional NaN in tensor nan_at, and an optional metadata pair. */
static void write_file(const char *path, const Item *it, int n, int nan_at, const char *mk, const char *mv) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStWriter w;
    sl_st_writer_init(&w);
    static float bufs[8][4096];
    for (int i = 0; i < n; i++) {
        int64_t numel = sl_shape_numel(it[i].ndim, it[i].shape);
        for (int64_t j = 0; j < numel; j++) bufs[i][j] = g_buf[j];
        if (i == nan_at) bufs[i][numel / 2] = NAN;
        if (sl_st_writer_add(&w, it[i].name, SL_F32, it[i].ndim, it[i].shape, bufs[i], &ctx) != SL_OK) abort();
    }
    if (mk) sl_st_writer_meta(&w, mk, mv, &ctx);
    if (sl_st_writer_save(&w, path, &ctx) != SL_OK) {
        fprintf(stderr, "%s\n", ctx.msg);
        abort();
    }
    sl_st_writer_free(&w);
}

static char g_path[1200];
static const char *tmp_path(const char *tag) {
    snprintf(g_path, sizeof g_path, "%s/tmp_styles_%s.safetensors", sl_test_binary(), tag);
    return g_path;
}

static int msg_has(const SlCtx *ctx, const char *a, const char *b) {
    return strstr(ctx->msg, a) && (!b || strstr(ctx->msg, b));
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    for (int i = 0; i < 4096; i++) g_buf[i] = 0.01f * (float)(i % 97) - 0.3f;
    float wq[32 * 32], wo[32 * 32], wc[32 * 32 * 9];
    SlLinear q = {.I = 32, .O = 32, .w = wq}, o = {.I = 32, .O = 32, .w = wo};
    SlConv2d c = {.Ci = 32, .Co = 32, .k = 3, .stride = 1, .pad = 1, .w = wc};
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add(&sites, "unet." ATTN ".to_q", &q, NULL, 64, &ctx), &ctx);
    CHECK_OK(sl_sites_add(&sites, "unet." ATTN ".to_out.0", &o, NULL, 64, &ctx), &ctx);
    CHECK_OK(sl_sites_add(&sites, "unet.down_blocks.0.resnets.0.conv1", NULL, &c, 64, &ctx), &ctx);
    SlAdapter ad;
    SlAdapterFormat fmt;
    const char *p;

    /* ---- kohya name table ---- */
    char out[256];
    const char *pairs[][2] = {
        {"lora_te_text_model_encoder_layers_11_self_attn_out_proj", "text_encoder.text_model.encoder.layers.11.self_attn.out_proj"},
        {"lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_ff_net_0_proj", "unet.up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj"},
        {"lora_unet_mid_block_attentions_0_proj_in", "unet.mid_block.attentions.0.proj_in"},
        {"lora_unet_down_blocks_1_resnets_0_conv_shortcut", "unet.down_blocks.1.resnets.0.conv_shortcut"},
        {"lora_te2_text_model_encoder_layers_0_mlp_fc2", "text_encoder_2.text_model.encoder.layers.0.mlp.fc2"},
        {KATTN "_to_out_0", "unet." ATTN ".to_out.0"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        CHECK_OK(sl_kohya_unflatten(out, sizeof out, pairs[i][0], &ctx), &ctx);
        CHECK(!strcmp(out, pairs[i][1]), "unflatten %s -> %s (want %s)", pairs[i][0], out, pairs[i][1]);
        char back[256];
        CHECK_OK(sl_kohya_flatten(back, sizeof back, pairs[i][1], &ctx), &ctx);
        CHECK(!strcmp(back, pairs[i][0]), "flatten %s -> %s", pairs[i][1], back);
    }

    /* ---- older diffusers forms ---- */
    Item old[4] = {
        {ATTN ".processor.to_out_lora.down.weight", 2, {4, 32}}, {ATTN ".processor.to_out_lora.up.weight", 2, {32, 4}},
        {"unet." ATTN ".to_q.lora.down.weight", 2, {4, 32}}, {"unet." ATTN ".to_q.lora.up.weight", 2, {32, 4}}};
    p = tmp_path("old");
    write_file(p, old, 4, -1, NULL, NULL);
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, &fmt, &ctx), &ctx);
    CHECK(ad.n == 2 && fmt == SL_ADAPTER_FMT_DIFFUSERS_OLD && sl_sites_find(&sites, ad.mods[0].name) >= 0 &&
              sl_sites_find(&sites, ad.mods[1].name) >= 0 && ad.mods[0].alpha == 4.0f,
          "old diffusers keys: %d modules (%s), alpha = rank", ad.n, ad.n ? ad.mods[0].name : "-");
    sl_adapter_free(&ad);

    /* ---- kohya without alpha: alpha = rank; LoCon conv keys ---- */
    Item k1[4] = {{KATTN "_to_q.lora_down.weight", 2, {2, 32}}, {KATTN "_to_q.lora_up.weight", 2, {32, 2}},
                  {"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", 4, {3, 32, 3, 3}},
                  {"lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", 4, {32, 3, 1, 1}}};
    p = tmp_path("noalpha");
    write_file(p, k1, 4, -1, "ss_network_dim", "2");
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, &fmt, &ctx), &ctx);
    CHECK(ad.n == 2 && fmt == SL_ADAPTER_FMT_KOHYA, "kohya without alpha loads (%d)", ad.n);
    for (int i = 0; i < ad.n; i++)
        CHECK(ad.mods[i].alpha == (float)ad.mods[i].r && (ad.mods[i].conv == (ad.mods[i].k == 3)),
              "%s: alpha %g == rank %lld", ad.mods[i].name, ad.mods[i].alpha, (long long)ad.mods[i].r);
    sl_adapter_free(&ad);

    /* ---- PEFT without alpha anywhere ---- */
    Item pe[2] = {{"unet." ATTN ".to_q.lora_A.weight", 2, {4, 32}}, {"unet." ATTN ".to_q.lora_B.weight", 2, {32, 4}}};
    p = tmp_path("peft_noalpha");
    write_file(p, pe, 2, -1, NULL, NULL);
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) == SL_ERR_MISSING && msg_has(&ctx, "alpha", "peft_noalpha"),
          "PEFT without alpha refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);
    SlAdapterLoadOpts lo = {.alpha = 16};
    CHECK_OK(sl_adapter_load(&ad, p, &sites, &lo, NULL, &ctx), &ctx);
    CHECK(ad.n == 1 && ad.mods[0].alpha == 16.0f, "PEFT with --alpha 16");
    sl_adapter_free(&ad);
    write_file(p, pe, 2, -1, SL_META_ALPHA, "12");
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx), &ctx);
    CHECK(ad.n == 1 && ad.mods[0].alpha == 12.0f, "PEFT alpha from metadata");
    sl_adapter_free(&ad);

    /* ---- wrong shape ---- */
    Item ws[2] = {{"unet." ATTN ".to_q.lora_A.weight", 2, {4, 40}}, {"unet." ATTN ".to_q.lora_B.weight", 2, {32, 4}}};
    p = tmp_path("shape");
    write_file(p, ws, 2, -1, SL_META_ALPHA, "4");
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) == SL_ERR_SHAPE && msg_has(&ctx, "to_q.lora_A.weight", "tmp_styles_shape") &&
              msg_has(&ctx, "[4,40]", NULL),
          "wrong shape refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);
    Item rk[2] = {{"unet." ATTN ".to_q.lora_A.weight", 2, {4, 32}}, {"unet." ATTN ".to_q.lora_B.weight", 2, {32, 3}}};
    write_file(p, rk, 2, -1, SL_META_ALPHA, "4");
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) == SL_ERR_SHAPE && msg_has(&ctx, "low-rank", NULL),
          "rank mismatch refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);

    /* ---- unknown module; lenient ---- */
    Item uk[4] = {{"unet." ATTN ".to_q.lora_A.weight", 2, {4, 32}}, {"unet." ATTN ".to_q.lora_B.weight", 2, {32, 4}},
                  {"unet.down_blocks.0.nothing.lora_A.weight", 2, {4, 32}}, {"unet.down_blocks.0.nothing.lora_B.weight", 2, {32, 4}}};
    p = tmp_path("unknown");
    write_file(p, uk, 4, -1, SL_META_ALPHA, "4");
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) == SL_ERR_SHAPE && msg_has(&ctx, "down_blocks.0.nothing", "tmp_styles_unknown"),
          "unknown module refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);
    lo.alpha = 0;
    lo.lenient = 1;
    CHECK_OK(sl_adapter_load(&ad, p, &sites, &lo, NULL, &ctx), &ctx);
    CHECK(ad.n == 1, "lenient: unknown module skipped (%d loaded)", ad.n);
    sl_adapter_free(&ad);
    /* kohya name that resolves to nothing */
    Item uk2[2] = {{"lora_unet_foo_bar.lora_down.weight", 2, {4, 32}}, {"lora_unet_foo_bar.lora_up.weight", 2, {32, 4}}};
    write_file(p, uk2, 2, -1, NULL, NULL);
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) == SL_ERR_SHAPE && msg_has(&ctx, "lora_unet_foo_bar", NULL),
          "unknown kohya module refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);

    /* ---- NaN ---- */
    p = tmp_path("nan");
    write_file(p, pe, 2, 1, SL_META_ALPHA, "4");
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) == SL_ERR_NUMERIC && msg_has(&ctx, "to_q.lora_B.weight", "tmp_styles_nan"),
          "NaN refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);

    /* ---- down without up ---- */
    p = tmp_path("half");
    write_file(p, k1, 1, -1, NULL, NULL);
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) != SL_OK && msg_has(&ctx, "lora_down.weight", "without"),
          "lora_down alone refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);

    /* ---- input-wise DoRA scale ---- */
    Item dz[3] = {{KATTN "_to_q.lora_down.weight", 2, {2, 32}}, {KATTN "_to_q.lora_up.weight", 2, {32, 2}},
                  {KATTN "_to_q.dora_scale", 2, {1, 32}}};
    p = tmp_path("dora_in");
    write_file(p, dz, 3, -1, NULL, NULL);
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) != SL_OK && msg_has(&ctx, "dora_scale", "per output row"),
          "input-wise DoRA refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);

    /* ---- not an adapter ---- */
    Item na[2] = {{"conv_in.weight", 4, {32, 4, 3, 3}}, {"conv_in.bias", 1, {32}}};
    p = tmp_path("notlora");
    write_file(p, na, 2, -1, NULL, NULL);
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) == SL_ERR_FORMAT && msg_has(&ctx, "not an adapter", "tmp_styles_notlora"),
          "non-adapter file refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);
    CHECK(sl_adapter_load(&ad, "/nonexistent/x.safetensors", &sites, NULL, NULL, &ctx) != SL_OK, "missing file refused");

    sl_sites_free(&sites);
    return sl_test_finish("test_styles_files");
}
