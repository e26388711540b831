/* test_styles_files.c - adapter file forms and bad files (small files written here).
 *
 * Good: older diffusers keys (lora.down / processor.to_out_lora) map to their
 * modules; kohya names expand with the built-in table (U-Net and text encoder);
 * a kohya file without `.alpha` loads with alpha = rank (sd-scripts' rule).
 * Alpha (issue 20): a PEFT file with no alpha anywhere loads with alpha = rank, and
 * the golden diffusers file so loaded gives the delta 1 * B A (1e-6 of max|ref|,
 * against a double-precision product here); a file laid out as diffusers writes it
 * (tests/reference/lora_metadata_ref.py: indent-2 JSON, rank/alpha patterns by full name
 * and by suffix, a LoCon conv) gives PEFT's deltas (1e-6 of max|ref|); precedence --lora-alpha >
 * lora_adapter_metadata (prefixed or bare, patterns by name or dotted suffix) >
 * `.alpha` > ss_network_alpha (conv_alpha for convs) > rank; a PEFT save of
 * alpha 8, rank 4 carries lora_adapter_metadata {"unet.lora_alpha": 8, "unet.r": 4}
 * (parsed here as JSON); mixed ranks and alphas survive PEFT -> kohya -> PEFT
 * bit-exactly with identical metadata, and no stale alpha metadata reaches kohya.
 * Bad, each with a message naming the file and the tensor: a wrong shape, an
 * unknown module (lenient mode turns it into a skipped warning), metadata whose
 * rank contradicts the tensors or is not JSON, NaN values, lora_down without
 * lora_up, an input-wise (LyCORIS) DoRA scale, a file that holds no adapter at all.
 */
#include <cJSON.h>
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
static float g_alpha = 5.0f;   /* the value of every scalar (`.alpha`) tensor written */

/* Writes a file whose tensors are all filled from g_buf (values 0.01*i; scalars g_alpha),
 * with an optional NaN in tensor nan_at, and metadata pairs meta[0..] (key, value, ...,
 * NULL) after the optional pair mk/mv. */
static void write_file_meta(const char *path, const Item *it, int n, int nan_at, const char *mk, const char *mv,
                            const char *const *meta) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStWriter w;
    sl_st_writer_init(&w);
    static float bufs[8][4096];
    for (int i = 0; i < n; i++) {
        int64_t numel = sl_shape_numel(it[i].ndim, it[i].shape);
        for (int64_t j = 0; j < numel; j++) bufs[i][j] = it[i].ndim ? g_buf[j] : g_alpha;
        if (i == nan_at) bufs[i][numel / 2] = NAN;
        if (sl_st_writer_add(&w, it[i].name, SL_F32, it[i].ndim, it[i].shape, bufs[i], &ctx) != SL_OK) abort();
    }
    if (mk) sl_st_writer_meta(&w, mk, mv, &ctx);
    for (int i = 0; meta && meta[i]; i += 2) sl_st_writer_meta(&w, meta[i], meta[i + 1], &ctx);
    if (sl_st_writer_save(&w, path, &ctx) != SL_OK) {
        fprintf(stderr, "%s\n", ctx.msg);
        abort();
    }
    sl_st_writer_free(&w);
}

static void write_file(const char *path, const Item *it, int n, int nan_at, const char *mk, const char *mv) {
    write_file_meta(path, it, n, nan_at, mk, mv, NULL);
}

/* Alphas of the modules named ...to_q and ...conv1 (-1 when absent). */
static void two_alphas(const SlAdapter *ad, float *aq, float *ac) {
    *aq = *ac = -1;
    for (int i = 0; i < ad->n; i++) {
        size_t l = strlen(ad->mods[i].name);
        if (l > 5 && !strcmp(ad->mods[i].name + l - 5, ".to_q")) *aq = ad->mods[i].alpha;
        if (l > 6 && !strcmp(ad->mods[i].name + l - 6, ".conv1")) *ac = ad->mods[i].alpha;
    }
}

/* The lora_adapter_metadata JSON of a file (NULL if absent); free with cJSON_Delete. */
static cJSON *file_peft_meta(const char *path, char *raw, size_t n_raw) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlStFile f;
    raw[0] = 0;
    if (sl_st_open(&f, path, &ctx) != SL_OK) return NULL;
    const char *m = sl_st_meta(&f, SL_META_PEFT);
    if (m) snprintf(raw, n_raw, "%s", m);
    sl_st_close(&f);
    return m ? cJSON_Parse(raw) : NULL;
}

static double jnum(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static int same_mods(const SlAdapter *a, const SlAdapter *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++) {
        const SlLoraMod *x = &a->mods[i], *y = NULL;
        for (int j = 0; j < b->n; j++)
            if (!strcmp(b->mods[j].name, x->name)) y = &b->mods[j];
        if (!y || x->r != y->r || x->alpha != y->alpha || x->conv != y->conv ||
            memcmp(x->A, y->A, sizeof(float) * (size_t)(x->r * x->I * x->k * x->k)) ||
            memcmp(x->B, y->B, sizeof(float) * (size_t)(x->O * x->r)))
            return 0;
    }
    return 1;
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

    /* ---- PEFT without alpha anywhere: alpha = rank (diffusers' assumption) ---- */
    Item pe[2] = {{"unet." ATTN ".to_q.lora_A.weight", 2, {4, 32}}, {"unet." ATTN ".to_q.lora_B.weight", 2, {32, 4}}};
    p = tmp_path("peft_noalpha");
    write_file(p, pe, 2, -1, NULL, NULL);
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, &fmt, &ctx), &ctx);
    CHECK(ad.n == 1 && fmt == SL_ADAPTER_FMT_PEFT && ad.mods[0].alpha == 4.0f && sl_lora_scale(&ad, &ad.mods[0]) == 1.0f,
          "PEFT without alpha: alpha %g = rank, scale 1", ad.n ? ad.mods[0].alpha : -1.0f);
    sl_adapter_free(&ad);
    SlAdapterLoadOpts lo = {.alpha = 16};
    CHECK_OK(sl_adapter_load(&ad, p, &sites, &lo, NULL, &ctx), &ctx);
    CHECK(ad.n == 1 && ad.mods[0].alpha == 16.0f, "PEFT with --lora-alpha 16");
    sl_adapter_free(&ad);
    write_file(p, pe, 2, -1, SL_META_ALPHA, "12");
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx), &ctx);
    CHECK(ad.n == 1 && ad.mods[0].alpha == 12.0f, "PEFT alpha from older stylora metadata");
    sl_adapter_free(&ad);

    /* the golden diffusers file (no alpha stored) at scale 1: delta == B A */
    char gpath[1200];
    snprintf(gpath, sizeof gpath, "%s/golden/tiny-sd1/lora/pytorch_lora_weights.safetensors", sl_test_shared());
    if (sl_adapter_load(&ad, gpath, NULL, NULL, &fmt, &ctx) == SL_OK) {
        int all1 = 1;
        for (int i = 0; i < ad.n; i++) all1 &= ad.mods[i].alpha == (float)ad.mods[i].r && sl_lora_scale(&ad, &ad.mods[i]) == 1.0f;
        CHECK(ad.n == 32 && fmt == SL_ADAPTER_FMT_PEFT && all1, "golden PEFT file: 32 modules, every scale 1 (%d)", ad.n);
        const SlLoraMod *lm = &ad.mods[0];
        const size_t nd = (size_t)(lm->O * lm->I);
        float *d = malloc(sizeof(float) * nd), *ref = malloc(sizeof(float) * nd);
        for (int64_t o = 0; o < lm->O; o++)
            for (int64_t i = 0; i < lm->I; i++) {
                double acc = 0;
                for (int64_t k = 0; k < lm->r; k++) acc += (double)lm->B[o * lm->r + k] * lm->A[k * lm->I + i];
                ref[o * lm->I + i] = (float)acc;
            }
        SlKernels kern = {0};
        sl_lora_delta(d, lm, sl_lora_scale(&ad, lm), &kern);
        sl_test_close("golden delta at scale 1 == B A", d, ref, nd, 1e-6 * sl_test_scale(ref, nd), 0);
        free(d);
        free(ref);
        sl_adapter_free(&ad);
    } else {
        CHECK(0, "golden lora file loads without an alpha: %s", ctx.msg);
    }

    /* ---- a diffusers-style file (tests/reference/lora_metadata_ref.py): deltas as PEFT applies them ---- */
    char rpath[1200];
    snprintf(rpath, sizeof rpath, "%s/tests/data/lora_metadata_peft.safetensors", sl_test_source());
    SlStFile ex;
    snprintf(gpath, sizeof gpath, "%s/tests/data/lora_metadata_expected.safetensors", sl_test_source());
    CHECK_OK(sl_st_open(&ex, gpath, &ctx), &ctx);
    CHECK_OK(sl_adapter_load(&ad, rpath, &sites, NULL, &fmt, &ctx), &ctx);
    if (ad.n == 3 && ex.n == 3) {
        float *d = malloc(sizeof(float) * 32 * 32 * 9), *ref = malloc(sizeof(float) * 32 * 32 * 9);
        SlKernels kern = {0};
        for (int i = 0; i < ad.n; i++) {
            const SlLoraMod *lm = &ad.mods[i];
            char key[300];
            snprintf(key, sizeof key, "delta.%s", lm->name);
            const SlStEntry *e = sl_st_find(&ex, key);
            const size_t nd = (size_t)(lm->O * lm->I * lm->k * lm->k);
            CHECK(e && (size_t)sl_shape_numel(e->ndim, e->shape) == nd, "%s present, %zu values", key, nd);
            if (!e || (size_t)sl_shape_numel(e->ndim, e->shape) != nd) continue;
            CHECK_OK(sl_st_read_f32(&ex, e, ref, &ctx), &ctx);
            sl_lora_delta(d, lm, sl_lora_scale(&ad, lm), &kern);
            snprintf(key, sizeof key, "reference delta of %s (r %lld, alpha %g)", lm->name, (long long)lm->r, lm->alpha);
            sl_test_close(key, d, ref, nd, 1e-6 * sl_test_scale(ref, nd), 0);
        }
        free(d);
        free(ref);
    } else {
        CHECK(0, "reference file: 3 modules and 3 deltas (%d, %d)", ad.n, ex.n);
    }
    sl_adapter_free(&ad);
    sl_st_close(&ex);

    /* ---- alpha precedence: --lora-alpha > lora_adapter_metadata > .alpha > ss_network_alpha > rank ---- */
    Item ka[6] = {{KATTN "_to_q.lora_down.weight", 2, {2, 32}}, {KATTN "_to_q.lora_up.weight", 2, {32, 2}},
                  {"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", 4, {3, 32, 3, 3}},
                  {"lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", 4, {32, 3, 1, 1}},
                  {KATTN "_to_q.alpha", 0, {0}}, {"lora_unet_down_blocks_0_resnets_0_conv1.alpha", 0, {0}}};
    const char *ss[] = {"ss_network_alpha", "7", "ss_network_args", "{\"conv_dim\": \"3\", \"conv_alpha\": \"1.5\"}", NULL};
    const char *pm[] = {"ss_network_alpha", "7", SL_META_PEFT,
                        "{\"unet.lora_alpha\": 6, \"unet.r\": 2, \"unet.alpha_pattern\": {\"down_blocks.0.resnets.0.conv1\": 9},"
                        " \"unet.rank_pattern\": {\"down_blocks.0.resnets.0.conv1\": 3}, \"unet.target_modules\": []}", NULL};
    const char *bare[] = {SL_META_PEFT, "{\"lora_alpha\": 3, \"r\": 2, \"rank_pattern\": {\"conv1\": 3}}", NULL};
    const char *badr[] = {SL_META_PEFT, "{\"unet.lora_alpha\": 6, \"unet.r\": 8}", NULL};
    const char *badj[] = {SL_META_PEFT, "{\"unet.lora_alpha\": 6,", NULL};
    float aq, ac;
    p = tmp_path("prec");
    write_file_meta(p, ka, 6, -1, NULL, NULL, ss);
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx), &ctx);
    two_alphas(&ad, &aq, &ac);
    CHECK(aq == 5 && ac == 5, ".alpha beats ss_network_alpha (%g, %g)", aq, ac);
    sl_adapter_free(&ad);
    write_file_meta(p, ka, 4, -1, NULL, NULL, ss);
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx), &ctx);
    two_alphas(&ad, &aq, &ac);
    CHECK(aq == 7 && ac == 1.5f, "ss_network_alpha, conv_alpha for the conv (%g, %g)", aq, ac);
    sl_adapter_free(&ad);
    write_file_meta(p, ka, 6, -1, NULL, NULL, pm);
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx), &ctx);
    two_alphas(&ad, &aq, &ac);
    CHECK(aq == 6 && ac == 9, "lora_adapter_metadata (lora_alpha, alpha_pattern) beats .alpha (%g, %g)", aq, ac);
    sl_adapter_free(&ad);
    lo.alpha = 11;
    CHECK_OK(sl_adapter_load(&ad, p, &sites, &lo, NULL, &ctx), &ctx);
    two_alphas(&ad, &aq, &ac);
    CHECK(aq == 11 && ac == 11, "--lora-alpha beats all (%g, %g)", aq, ac);
    sl_adapter_free(&ad);
    lo.alpha = 0;
    write_file_meta(p, ka, 6, -1, NULL, NULL, bare);
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx), &ctx);
    two_alphas(&ad, &aq, &ac);
    CHECK(aq == 3 && ac == 3, "unprefixed metadata (save_lora_adapter), rank pattern by suffix (%g, %g)", aq, ac);
    sl_adapter_free(&ad);
    write_file_meta(p, ka, 6, -1, NULL, NULL, badr);
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) == SL_ERR_FORMAT && msg_has(&ctx, "tmp_styles_prec", "rank 8"),
          "metadata rank contradicting the tensors refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);
    write_file_meta(p, ka, 6, -1, NULL, NULL, badj);
    CHECK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx) == SL_ERR_FORMAT && msg_has(&ctx, "tmp_styles_prec", SL_META_PEFT),
          "metadata that is not JSON refused: %s", ctx.msg);
    printf("     message: %s\n", ctx.msg);

    /* ---- writing lora_adapter_metadata: alpha 8, rank 4 ---- */
    SlAdapterOpts co = sl_adapter_opts_default();
    co.targets = "to_q,to_out.0";
    co.rank = 4;
    co.alpha = 8;
    CHECK_OK(sl_adapter_create(&ad, &sites, &co, &ctx), &ctx);
    SlAdapterSaveOpts so = {.format = SL_ADAPTER_FMT_PEFT};
    p = tmp_path("meta84");
    CHECK_OK(sl_adapter_save(&ad, p, &so, &ctx), &ctx);
    sl_adapter_free(&ad);
    static char raw[8192], raw2[8192];
    cJSON *j = file_peft_meta(p, raw, sizeof raw);
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "unet.target_modules");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(j, "unet.alpha_pattern");
    CHECK(j && jnum(j, "unet.lora_alpha") == 8 && jnum(j, "unet.r") == 4 && cJSON_GetArraySize(tm) == 2 &&
              cJSON_IsString(cJSON_GetArrayItem(tm, 0)) && !strcmp(cJSON_GetArrayItem(tm, 0)->valuestring, ATTN ".to_out.0") &&
              cJSON_IsObject(ap) && cJSON_GetArraySize(ap) == 0 &&
              cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "unet.use_rslora")),
          "PEFT save carries lora_adapter_metadata lora_alpha 8, r 4: %s", raw);
    cJSON_Delete(j);
    CHECK_OK(sl_adapter_load(&ad, p, &sites, NULL, NULL, &ctx), &ctx);
    CHECK(ad.n == 2 && ad.mods[0].alpha == 8 && ad.mods[1].alpha == 8, "alpha 8 read back from the metadata");
    sl_adapter_free(&ad);

    /* ---- per-module rank / alpha patterns: PEFT -> kohya -> PEFT ---- */
    co.targets = "to_q,to_out.0,unet.down_blocks.0.resnets.0.conv1";
    co.conv_rank = 2;
    co.seed = 3;
    SlAdapter mix, back;
    CHECK_OK(sl_adapter_create(&mix, &sites, &co, &ctx), &ctx);
    for (int i = 0; i < mix.n; i++) {
        for (int64_t e = 0; e < mix.mods[i].O * mix.mods[i].r; e++) mix.mods[i].B[e] = g_buf[e % 4096];
        if (strstr(mix.mods[i].name, "to_out")) mix.mods[i].alpha = 3;
    }
    char p1[1200], pk[1200], p2[1200];
    snprintf(p1, sizeof p1, "%s", tmp_path("mix_peft"));
    snprintf(pk, sizeof pk, "%s", tmp_path("mix_kohya"));
    snprintf(p2, sizeof p2, "%s", tmp_path("mix_peft2"));
    CHECK_OK(sl_adapter_save(&mix, p1, &so, &ctx), &ctx);
    j = file_peft_meta(p1, raw, sizeof raw);
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "unet.rank_pattern");
    ap = cJSON_GetObjectItemCaseSensitive(j, "unet.alpha_pattern");
    CHECK(j && jnum(j, "unet.r") == 4 && jnum(j, "unet.lora_alpha") == 8 && jnum(rp, "down_blocks.0.resnets.0.conv1") == 2 &&
              cJSON_GetArraySize(rp) == 1 && jnum(ap, ATTN ".to_out.0") == 3 && cJSON_GetArraySize(ap) == 1,
          "mixed ranks/alphas as rank_pattern / alpha_pattern: %s", raw);
    cJSON_Delete(j);
    CHECK_OK(sl_adapter_load(&back, p1, &sites, NULL, NULL, &ctx), &ctx);
    CHECK(same_mods(&mix, &back), "PEFT file with mixed ranks and alphas reads back bit-exactly");
    so.format = SL_ADAPTER_FMT_KOHYA;
    CHECK_OK(sl_adapter_save(&back, pk, &so, &ctx), &ctx);
    sl_adapter_free(&back);
    SlStFile kf;
    CHECK_OK(sl_st_open(&kf, pk, &ctx), &ctx);
    CHECK(!sl_st_meta(&kf, SL_META_PEFT), "no lora_adapter_metadata carried into the kohya file");
    sl_st_close(&kf);
    CHECK_OK(sl_adapter_load(&back, pk, &sites, NULL, NULL, &ctx), &ctx);
    CHECK(same_mods(&mix, &back), "kohya copy keeps every rank and alpha");
    so.format = SL_ADAPTER_FMT_PEFT;
    CHECK_OK(sl_adapter_save(&back, p2, &so, &ctx), &ctx);
    sl_adapter_free(&back);
    j = file_peft_meta(p2, raw2, sizeof raw2);
    CHECK(j && !strcmp(raw, raw2), "PEFT -> kohya -> PEFT: the same lora_adapter_metadata");
    cJSON_Delete(j);
    CHECK_OK(sl_adapter_load(&back, p2, &sites, NULL, NULL, &ctx), &ctx);
    CHECK(same_mods(&mix, &back), "PEFT -> kohya -> PEFT bit-exact");
    sl_adapter_free(&back);
    sl_adapter_free(&mix);

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
