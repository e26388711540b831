/* test_lycoris.c - LyCORIS LoHa / LoKr files on the tiny-sd1 U-Net against tests/reference/lycoris_ref.py.
 *
 * For tests/data/lycoris_loha.safetensors and lycoris_lokr.safetensors (kohya naming; linears,
 * a 1x1 conv, 3x3 convs, Tucker cores, factorised / full LoKr factors, with and without alpha):
 * 1. Loaded with the model: format "lycoris", 5 modules of the right kind, the file's rank and
 *    scale per module (LoKr with both factors full: scale 1 despite its alpha 7).
 * 2. Merged: every touched weight equals <algo>.merged.<key> within 1e-6 of its max |ref|;
 *    the merged U-Net gives <algo>.out within 1e-4 of max |ref|; unmerge is bit-exact (the
 *    base output after all cases equals the one before, byte for byte).
 * 3. Unmerged (hooks): the U-Net output equals the merged one within 1e-5 and the golden within 1e-4.
 *    Saved as a kohya LoRA (the dense delta at full rank) and loaded back: the same hooked
 *    output bit for bit.
 * 4. Loaded without the model (as `lora merge` does): the merge gives the same weights (1e-6),
 *    while the hooks refuse the flat LoHa conv, naming it.
 * 5. Hostile files: a LoHa without hada_w2_a, a LoKr whose kron does not fit the module,
 *    a half Tucker pair, a LoHa with dora_scale, a NaN, an empty dimension, a kron into a 2^29-value delta (read
 *    without the model): errors naming the key / module;
 *    lenient loading skips the bad module and keeps the good one.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/weights.h"
#include "styles/adapter.h"
#include "test_util.h"
#include "unet/unet.h"

#define MERGED_W_TOL 1e-6 /* merged weight vs reference, of max |ref| per tensor */
#define FWD_TOL 1e-4      /* U-Net output vs golden, of max |ref| */
#define HOOK_TOL 1e-5     /* unmerged (hooks) vs merged, of max |out| */

static float *load_f32(const SlStFile *f, const char *name, int64_t *numel, SlCtx *ctx) {
    const SlStEntry *e = sl_st_find(f, name);
    if (!e) {
        fprintf(stderr, "missing %s in %s\n", name, f->path);
        return NULL;
    }
    int64_t n = sl_shape_numel(e->ndim, e->shape);
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (sl_st_read_f32(f, e, p, ctx) != SL_OK) {
        free(p);
        return NULL;
    }
    if (numel) *numel = n;
    return p;
}

static const SlLoraMod *find_mod(const SlAdapter *ad, const char *name) {
    for (int i = 0; i < ad->n; i++)
        if (!strcmp(ad->mods[i].name, name)) return &ad->mods[i];
    return NULL;
}

/* Compares every "<algo>.merged.<key>" of the golden file with the model's weight. */
static void check_merged_weights(const SlStFile *gold, const char *algo, const SlSites *sites, const char *what, SlCtx *ctx) {
    char pre[64], name[SL_ADAPTER_NAME_MAX + 16], label[400];
    snprintf(pre, sizeof pre, "%s.merged.", algo);
    int n = 0;
    for (int i = 0; i < gold->n; i++) {
        const char *k = gold->entries[i].name;
        if (strncmp(k, pre, strlen(pre))) continue;
        snprintf(name, sizeof name, "unet.%s", k + strlen(pre));
        name[strlen(name) - strlen(".weight")] = 0;
        int s = sl_sites_find(sites, name);
        CHECK(s >= 0, "%s: site %s", what, name);
        if (s < 0) continue;
        int64_t numel;
        float *ref = load_f32(gold, k, &numel, ctx);
        const float *W = sites->v[s].lin ? sites->v[s].lin->w : sites->v[s].conv->w;
        snprintf(label, sizeof label, "%s: %s", what, name);
        sl_test_close(label, W, ref, (size_t)numel, MERGED_W_TOL * sl_test_scale(ref, (size_t)numel), 0);
        free(ref);
        n++;
    }
    CHECK(n == 5, "%s: 5 merged weights compared (%d)", what, n);
}

static void write_file(const char *path, int n, const char *const *keys, const int *ndim, const int64_t (*shape)[4],
                       SlCtx *ctx) {
    SlStWriter w;
    sl_st_writer_init(&w);
    float *bufs[8];
    for (int i = 0; i < n; i++) {
        int64_t numel = sl_shape_numel(ndim[i], shape[i]);
        bufs[i] = malloc(sizeof(float) * (size_t)(numel ? numel : 1));
        sl_test_fill(bufs[i], (size_t)numel, (uint32_t)i + 7, 0.2f);
        if (strstr(keys[i], "nan")) bufs[i][0] = NAN;
        char k[256];
        snprintf(k, sizeof k, "%s", keys[i]);
        char *tag = strstr(k, "#nan");
        if (tag) *tag = 0;
        CHECK_OK(sl_st_writer_add(&w, k, SL_F32, ndim[i], shape[i], bufs[i], ctx), ctx);
    }
    CHECK_OK(sl_st_writer_save(&w, path, ctx), ctx);
    sl_st_writer_free(&w);
    for (int i = 0; i < n; i++) free(bufs[i]);
}

/* A hostile file must fail to load with each of the words in `want` in the message. */
static void expect_refused(const char *what, const char *path, const SlSites *sites, const char *want1, const char *want2) {
    SlCtx c;
    sl_ctx_init(&c);
    SlAdapter ad;
    SlStatus st = sl_adapter_load(&ad, path, sites, NULL, NULL, &c);
    CHECK(st != SL_OK, "%s: refused", what);
    CHECK(strstr(c.msg, want1) && (!want2 || strstr(c.msg, want2)) && strstr(c.msg, path), "%s: message names %s%s%s and the file: %s",
          what, want1, want2 ? " / " : "", want2 ? want2 : "", c.msg);
    printf("ok?  %s -> %s\n", what, c.msg);
    if (st == SL_OK) sl_adapter_free(&ad);
}

#define TQ "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
#define TK "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k"
#define C1 "lora_unet_down_blocks_0_resnets_0_conv1"

static void hostile(const SlSites *sites, SlCtx *ctx) {
    char path[1200];
    snprintf(path, sizeof path, "%s/tmp_lycoris_hostile.safetensors", sl_test_binary());
    { /* LoHa without hada_w2_a */
        const char *k[] = {TQ ".hada_w1_a", TQ ".hada_w1_b", TQ ".hada_w2_b"};
        const int nd[] = {2, 2, 2};
        const int64_t sh[][4] = {{32, 4}, {4, 32}, {4, 32}};
        write_file(path, 3, k, nd, sh, ctx);
        expect_refused("LoHa without w2_a", path, sites, TQ ".hada_w2_a", NULL);
    }
    { /* LoKr kron [4*8, 4*9] on a [32, 32] linear */
        const char *k[] = {TQ ".lokr_w1", TQ ".lokr_w2"};
        const int nd[] = {2, 2};
        const int64_t sh[][4] = {{4, 4}, {8, 9}};
        write_file(path, 2, k, nd, sh, ctx);
        expect_refused("LoKr shape mismatch", path, sites, TQ, "does not fit");
    }
    { /* LoHa product shapes that do not chain */
        const char *k[] = {TQ ".hada_w1_a", TQ ".hada_w1_b", TQ ".hada_w2_a", TQ ".hada_w2_b"};
        const int nd[] = {2, 2, 2, 2};
        const int64_t sh[][4] = {{32, 4}, {3, 32}, {32, 4}, {4, 32}};
        write_file(path, 4, k, nd, sh, ctx);
        expect_refused("LoHa w1_a x w1_b mismatch", path, sites, TQ ".hada_w1_b", NULL);
    }
    { /* Tucker t1 without t2 */
        const char *k[] = {C1 ".hada_t1", C1 ".hada_w1_a", C1 ".hada_w1_b", C1 ".hada_w2_a", C1 ".hada_w2_b"};
        const int nd[] = {4, 2, 2, 2, 2};
        const int64_t sh[][4] = {{2, 2, 3, 3}, {2, 32}, {2, 32}, {2, 32}, {2, 32}};
        write_file(path, 5, k, nd, sh, ctx);
        expect_refused("half Tucker pair", path, sites, "hada_t2", C1);
    }
    { /* LyCORIS DoRA */
        const char *k[] = {TQ ".lokr_w1", TQ ".lokr_w2", TQ ".dora_scale"};
        const int nd[] = {2, 2, 2};
        const int64_t sh[][4] = {{4, 4}, {8, 8}, {1, 32}};
        write_file(path, 3, k, nd, sh, ctx);
        expect_refused("LoKr with dora_scale", path, sites, TQ ".dora_scale", "not supported");
    }
    { /* a kron of two small factors into a huge delta */
        const char *k[] = {TQ ".lokr_w1", TQ ".lokr_w2"};
        const int nd[] = {2, 2};
        const int64_t sh[][4] = {{4096, 1}, {4096, 32}};
        write_file(path, 2, k, nd, sh, ctx);
        expect_refused("LoKr delta too large", path, NULL, TQ, "too large");
    }
    { /* an empty dimension */
        const char *k[] = {TQ ".lokr_w1", TQ ".lokr_w2"};
        const int nd[] = {2, 2};
        const int64_t sh[][4] = {{4, 0}, {8, 8}};
        write_file(path, 2, k, nd, sh, ctx);
        expect_refused("LoKr empty dimension", path, NULL, TQ ".lokr_w1", "dimension 1 is 0");
    }
    { /* NaN */
        const char *k[] = {TQ ".lokr_w1", TQ ".lokr_w2#nan"};
        const int nd[] = {2, 2};
        const int64_t sh[][4] = {{4, 4}, {8, 8}};
        write_file(path, 2, k, nd, sh, ctx);
        expect_refused("LoKr with a NaN", path, sites, TQ ".lokr_w2", "NaN");
    }
    { /* lenient: the bad module (w2_a missing) is skipped, the good one kept */
        const char *k[] = {TQ ".hada_w1_a", TQ ".hada_w1_b", TQ ".hada_w2_b", TK ".lokr_w1", TK ".lokr_w2"};
        const int nd[] = {2, 2, 2, 2, 2};
        const int64_t sh[][4] = {{32, 4}, {4, 32}, {4, 32}, {4, 4}, {8, 8}};
        write_file(path, 5, k, nd, sh, ctx);
        SlAdapter ad;
        SlAdapterLoadOpts lo = {.lenient = 1};
        CHECK_OK(sl_adapter_load(&ad, path, sites, &lo, NULL, ctx), ctx);
        if (ctx->status == SL_OK) {
            CHECK(ad.n == 1 && ad.mods[0].lyco == SL_LYCO_LOKR && strstr(ad.mods[0].name, "attn1.to_k"),
                  "lenient: the LoKr to_k kept, the broken LoHa skipped (%d modules)", ad.n);
            sl_adapter_free(&ad);
        }
    }
    remove(path);
}

int main(void) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/golden/tiny-sd1", sl_test_shared());
    SlUNetConfig cfg;
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    CHECK_OK(sl_unet_config_load(&cfg, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_lycoris");
    SlUNet u;
    SlWeights w;
    CHECK_OK(sl_unet_init(&u, &cfg, &ctx), &ctx);
    snprintf(path, sizeof path, "%s/unet", dir);
    CHECK_OK(sl_weights_open_dir(&w, path, &ctx), &ctx);
    CHECK_OK(sl_unet_load(&u, &w, &ctx), &ctx);
    SlStFile ex, gold;
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    CHECK_OK(sl_st_open(&ex, path, &ctx), &ctx);
    snprintf(path, sizeof path, "%s/tests/data/lycoris_golden.safetensors", sl_test_source());
    CHECK_OK(sl_st_open(&gold, path, &ctx), &ctx);
    if (sl_test_failures) return sl_test_finish("test_lycoris");
    float *sample = load_f32(&ex, "unet.in.sample", NULL, &ctx);
    float *ehs = load_f32(&ex, "unet.in.encoder_hidden_states", NULL, &ctx);
    float *ts = load_f32(&ex, "unet.in.timesteps", NULL, &ctx);
    const SlStEntry *es = sl_st_find(&ex, "unet.in.sample"), *ee = sl_st_find(&ex, "unet.in.encoder_hidden_states");
    CHECK(sample && ehs && ts && es && ee, "golden inputs present");
    if (sl_test_failures) return sl_test_finish("test_lycoris");
    CHECK_OK(sl_unet_plan(&u, es->shape[0], es->shape[2], es->shape[3], ee->shape[1], &ctx), &ctx);
    SlSites sites;
    sl_sites_init(&sites);
    CHECK_OK(sl_sites_add_unet(&sites, &u, &ctx), &ctx);
    const size_t no = (size_t)sl_shape_numel(es->ndim, es->shape);
    float *merged = calloc(no, sizeof(float)), *hooked = calloc(no, sizeof(float)), *base0 = calloc(no, sizeof(float));
    float *other = calloc(no, sizeof(float));   /* the kohya copy's output */
    sl_unet_forward(&u, base0, sample, ts, ehs);

    static const struct {
        const char *algo, *file;
        int kind;
        struct { const char *mod; int64_t rank; float scale; int conv; } m[5];
    } cases[2] = {
        {"loha", "lycoris_loha", SL_LYCO_LOHA,
         {{"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 4, 0.5f, 0},
          {"unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2", 8, 1.0f, 0},
          {"unet.down_blocks.0.attentions.0.proj_in", 2, 1.0f, 0},
          {"unet.down_blocks.1.resnets.0.conv1", 4, 0.25f, 1},
          {"unet.up_blocks.0.resnets.1.conv1", 3, 2.0f, 1}}},
        {"lokr", "lycoris_lokr", SL_LYCO_LOKR,
         {{"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", 2, 0.5f, 0},
          {"unet.mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj", 0, 1.0f, 0},
          {"unet.mid_block.resnets.0.conv2", 3, 0.5f, 1},
          {"unet.up_blocks.1.resnets.1.conv1", 2, 1.0f, 1},
          {"unet.down_blocks.0.resnets.0.conv2", 0, 1.0f, 1}}},
    };
    char what[256], key[64];
    for (int c = 0; c < 2; c++) {
        const char *algo = cases[c].algo;
        snprintf(key, sizeof key, "%s.out", algo);
        float *ref = load_f32(&gold, key, NULL, &ctx);
        CHECK(ref != NULL, "%s present", key);
        if (!ref) continue;
        const double scale = sl_test_scale(ref, no);
        /* 1. load with the model */
        snprintf(path, sizeof path, "%s/tests/data/%s.safetensors", sl_test_source(), cases[c].file);
        SlAdapter ad;
        SlAdapterFormat fmt = SL_ADAPTER_FMT_UNKNOWN;
        CHECK_OK(sl_adapter_load(&ad, path, &sites, NULL, &fmt, &ctx), &ctx);
        if (ctx.status != SL_OK) { free(ref); continue; }
        CHECK(fmt == SL_ADAPTER_FMT_LYCORIS && ad.n == 5, "%s: format lycoris, 5 modules (%s, %d)", algo,
              sl_adapter_format_name(fmt), ad.n);
        for (int i = 0; i < 5; i++) {
            const SlLoraMod *lm = find_mod(&ad, cases[c].m[i].mod);
            CHECK(lm && lm->lyco == cases[c].kind && lm->lyco_rank == cases[c].m[i].rank &&
                      fabsf(lm->lyco_scale - cases[c].m[i].scale) <= 1e-7f && lm->conv == cases[c].m[i].conv,
                  "%s: %s kind %d rank %lld scale %g conv %d", algo, cases[c].m[i].mod, lm ? lm->lyco : -1,
                  (long long)(lm ? lm->lyco_rank : -1), lm ? lm->lyco_scale : -1.0f, lm ? lm->conv : -1);
        }
        /* 2. merged */
        SlAdapter *one[1] = {&ad};
        SlMergeState ms = {0};
        CHECK_OK(sl_adapter_merge(&ms, &sites, one, NULL, 1, &ctx), &ctx);
        snprintf(what, sizeof what, "%s merged (model sites)", algo);
        check_merged_weights(&gold, algo, &sites, what, &ctx);
        sl_unet_forward(&u, merged, sample, ts, ehs);
        snprintf(what, sizeof what, "%s: merged U-Net vs golden %s.out", algo, algo);
        sl_test_close(what, merged, ref, no, FWD_TOL * scale, 0);
        sl_adapter_unmerge(&ms);
        /* 3. hooks */
        SlAdapterSet set;
        CHECK_OK(sl_adapter_set_apply(&set, &sites, one, NULL, 1, 0.0f, 0, &ctx), &ctx);
        sl_unet_forward(&u, hooked, sample, ts, ehs);
        sl_adapter_set_remove(&set);
        snprintf(what, sizeof what, "%s: unmerged (hooks) vs merged", algo);
        sl_test_close(what, hooked, merged, no, HOOK_TOL * sl_test_scale(merged, no), 0);
        snprintf(what, sizeof what, "%s: unmerged (hooks) vs golden %s.out", algo, algo);
        sl_test_close(what, hooked, ref, no, FWD_TOL * scale, 0);
        /* written as a kohya LoRA: the dense delta at full rank, the same output bit for bit */
        char tmp[1200];
        snprintf(tmp, sizeof tmp, "%s/tmp_lycoris_%s_as_kohya.safetensors", sl_test_binary(), algo);
        SlAdapterSaveOpts so = {.format = SL_ADAPTER_FMT_KOHYA};
        SlAdapter conv;
        CHECK_OK(sl_adapter_save(&ad, tmp, &so, &ctx), &ctx);
        CHECK_OK(sl_adapter_load(&conv, tmp, &sites, NULL, &fmt, &ctx), &ctx);
        if (ctx.status == SL_OK) {
            SlAdapter *co[1] = {&conv};
            CHECK_OK(sl_adapter_set_apply(&set, &sites, co, NULL, 1, 0.0f, 0, &ctx), &ctx);
            sl_unet_forward(&u, other, sample, ts, ehs);
            sl_adapter_set_remove(&set);
            CHECK(fmt == SL_ADAPTER_FMT_KOHYA && conv.n == 5 && !memcmp(other, hooked, sizeof(float) * no),
                  "%s saved as a full-rank kohya LoRA: same output bit for bit", algo);
            sl_adapter_free(&conv);
        }
        remove(tmp);
        sl_adapter_free(&ad);
        /* 4. without the model (lora merge) */
        SlAdapter flat;
        CHECK_OK(sl_adapter_load(&flat, path, NULL, NULL, NULL, &ctx), &ctx);
        if (ctx.status == SL_OK) {
            SlAdapter *fo[1] = {&flat};
            SlMergeState fs = {0};
            CHECK_OK(sl_adapter_merge(&fs, &sites, fo, NULL, 1, &ctx), &ctx);
            snprintf(what, sizeof what, "%s merged (read without the model)", algo);
            check_merged_weights(&gold, algo, &sites, what, &ctx);
            sl_unet_forward(&u, hooked, sample, ts, ehs);
            snprintf(what, sizeof what, "%s: merged without the model vs merged with it", algo);
            sl_test_close(what, hooked, merged, no, HOOK_TOL * sl_test_scale(merged, no), 0);
            sl_adapter_unmerge(&fs);
            if (c == 0) {   /* the flat LoHa conv cannot be hooked */
                SlCtx c2;
                sl_ctx_init(&c2);
                SlAdapterSet s2;
                SlStatus st = sl_adapter_set_apply(&s2, &sites, fo, NULL, 1, 0.0f, 0, &c2);
                CHECK(st == SL_ERR_UNSUPPORTED && strstr(c2.msg, "down_blocks.1.resnets.0.conv1"),
                      "loha read without the model: hooks refuse the flat conv, naming it (%s)", c2.msg);
                if (st == SL_OK) sl_adapter_set_remove(&s2);
            }
            sl_adapter_free(&flat);
        }
        free(ref);
    }
    /* every unmerge and hook removal restored the base bit-exactly */
    sl_unet_forward(&u, merged, sample, ts, ehs);
    CHECK(!memcmp(merged, base0, sizeof(float) * no), "base output bit-exact after unmerges and hook removals");
    hostile(&sites, &ctx);
    free(base0);
    free(other);
    free(merged);
    free(hooked);
    free(sample);
    free(ehs);
    free(ts);
    sl_sites_free(&sites);
    sl_st_close(&gold);
    sl_st_close(&ex);
    sl_weights_close(&w);
    sl_unet_free(&u);
    return sl_test_finish("test_lycoris");
}
